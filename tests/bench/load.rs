//! The load generator: a fixed set of connections, `concurrency` tasks spread over them,
//! each calling back to back for a fixed time and recording every latency in an HDR
//! histogram; and the server's CPU time and peak RSS read from `/proc` around the run.

use hdrhistogram::Histogram;
use std::future::Future;
use std::time::{Duration, Instant};

/// A measured point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// Calls that ended as expected, per second.
    pub requests_per_second: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile, microseconds.
    pub p999_us: u64,
    /// Server CPU used, in cores (CPU seconds per wall second).
    pub server_cpu_cores: f64,
    /// The load generator's own CPU time per call, microseconds.
    pub client_cpu_us_per_call: f64,
    /// Server peak resident memory so far, MiB.
    pub server_peak_rss_mib: f64,
    /// Calls that did not end as expected.
    pub errors: u64,
}

impl Figures {
    /// Server CPU time per call that ended as expected, microseconds.
    pub fn cpu_us_per_call(&self) -> f64 {
        self.server_cpu_cores * 1e6 / self.requests_per_second.max(1.0)
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; counting from the state field (3), 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Restarts a process's peak-RSS mark, so that later readings cover only what follows.
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Peak resident set size of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `concurrency` tasks, task `i` using client `clients[i % clients.len()]`, each
/// calling `call(client, task, n)` back to back for `duration`; `call` returns whether the
/// call ended as expected.
pub async fn run<C, F, Fut>(
    clients: &[C],
    concurrency: usize,
    duration: Duration,
    server_pid: u32,
    call: F,
) -> Figures
where
    C: Clone + Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let cpu_before = cpu_seconds(server_pid);
    let own_cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let client = clients[task % clients.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0;
            let mut n = 0;
            while Instant::now() < deadline {
                let begun = Instant::now();
                if !call(client.clone(), task, n).await {
                    errors += 1;
                }
                let micros = u64::try_from(begun.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let _ = histogram.record(micros.min(60_000_000));
                n += 1;
            }
            (histogram, errors)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.expect("load task");
        histogram.add(h).expect("merge histograms");
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = histogram.len() as f64;
    Figures {
        requests_per_second: (calls - errors as f64) / elapsed,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        server_cpu_cores: (cpu_seconds(server_pid) - cpu_before) / elapsed,
        client_cpu_us_per_call: (cpu_seconds(std::process::id()) - own_cpu_before) * 1e6
            / calls.max(1.0),
        server_peak_rss_mib: peak_rss_mib(server_pid),
        errors,
    }
}
