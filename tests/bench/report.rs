//! The benchmark's other measurements (the consent decision alone, the disk's single-commit
//! fsync rate and what the store's group commit makes of it, new mTLS connections per
//! second, the large dataset), the goals, and the Markdown and JSON output.

#[path = "../../crates/consent-core/benches/decision_inputs/mod.rs"]
mod decision_inputs;

use crate::load::Figures;
use crate::{CONNECTIONS, ROUNDS, Target, UNLIMITED, partner_channels};
use consent_core::audit::AuditKey;
use consent_core::clock::Clock;
use consent_core::model::AuditEntry;
use consent_core::model::{Feature, Grant, Message, Scope, ScopeSet, Thread, User};
use consent_core::rules::{GrantContext, authorize};
use consent_core::secret::{GRANT_TOKEN_PREFIX, hash_token, new_token};
use consent_proto::platform::v1 as pb;
use consent_store::{SqliteStore, execute};
use decision_inputs::decision_inputs;
use end_to_end::processes::{PlatformPorts, WorkDir, start_platform_with};
use hdrhistogram::Histogram;
use pb::account_client::AccountClient;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One measured call at one concurrency, with its baseline: the round with the median
/// ratio to the baseline, and every round's ratio.
#[derive(Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub measure: String,
    /// Calls in flight.
    pub concurrency: usize,
    /// The platform's figures.
    pub figures: Figures,
    /// The baseline's figures, at the same concurrency: the echo's, answering the same calls
    /// with the same replies (for the large dataset's read, the small dataset's).
    pub baseline: Figures,
    /// Each round's req/s over its baseline's, lowest first.
    pub round_ratios: Vec<f64>,
}

impl Row {
    /// The row of `rounds`, each the platform's figures and then the baseline's.
    pub fn new(measure: &str, concurrency: usize, mut rounds: Vec<(Figures, Figures)>) -> Self {
        rounds.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let round_ratios = rounds.iter().map(ratio).collect();
        let (figures, baseline) = rounds.swap_remove(rounds.len() / 2);
        Row {
            measure: measure.into(),
            concurrency,
            figures,
            baseline,
            round_ratios,
        }
    }
    fn ratio(&self) -> f64 {
        self.round_ratios[self.round_ratios.len() / 2]
    }

    /// The median round's ratio, with the lowest and the highest.
    fn ratio_with_spread(&self) -> String {
        let (lowest, highest) = self.ratio_range();
        format!("{:.2}× (rounds {lowest:.2}–{highest:.2}×)", self.ratio())
    }

    /// The lowest and the highest round's ratio.
    fn ratio_range(&self) -> (f64, f64) {
        let lowest = self.round_ratios.first().copied().unwrap_or_default();
        let highest = self.round_ratios.last().copied().unwrap_or_default();
        (lowest, highest)
    }
}

fn ratio((figures, baseline): &(Figures, Figures)) -> f64 {
    figures.requests_per_second / baseline.requests_per_second.max(f64::MIN_POSITIVE)
}

/// The consent decision alone.
#[derive(Debug, Serialize)]
pub struct Decision {
    /// Decisions timed.
    pub samples: u64,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
}

/// New mTLS connections per second.
#[derive(Debug, Serialize)]
pub struct Handshakes {
    /// Full handshakes per second.
    pub full_per_second: f64,
    /// Handshakes per second with session resumption offered.
    pub resumed_per_second: f64,
    /// Of those, the fraction actually resumed.
    pub resumed_fraction: f64,
}

/// The authorized read on a large dataset.
#[derive(Debug, Serialize)]
pub struct Scale {
    /// Users preloaded.
    pub users: u64,
    /// Messages preloaded.
    pub messages: u64,
    /// Grants preloaded.
    pub grants: u64,
    /// The read at 32 in flight, each round right after the same read on the small dataset.
    pub read: Row,
}

/// A goal and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Goal {
    /// The goal.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Whether it holds.
    pub met: bool,
}

/// Everything measured in one run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// A short run (CI) rather than a full one.
    pub quick: bool,
    /// Built with optimisations (as the services it starts are, from the same profile).
    pub optimized: bool,
    /// CPUs of this machine.
    pub cpus: usize,
    /// Per-call rows.
    pub rows: Vec<Row>,
    /// The consent decision alone.
    pub decision: Option<Decision>,
    /// Single-commit fsync rate of this disk.
    pub fsync_commits_per_second: Option<f64>,
    /// Durable audit appends per second through the store's group commit.
    pub group_commit: Option<GroupCommit>,
    /// New connections per second.
    pub handshakes: Option<Handshakes>,
    /// A sign-in during a flood of sign-ups.
    pub sign_in: Option<SignInUnderFlood>,
    /// The large dataset.
    pub scale: Option<Scale>,
    /// One replica on PostgreSQL, each point against the same point on SQLite.
    pub postgres: Vec<Row>,
    /// Two replicas on PostgreSQL, each point against one replica.
    pub two_replicas: Vec<Row>,
    /// Platform peak RSS over the run, MiB.
    pub platform_peak_rss_mib: f64,
    /// The goals.
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn new(quick: bool) -> Self {
        Report {
            quick,
            optimized: !cfg!(debug_assertions),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rows: Vec::new(),
            decision: None,
            fsync_commits_per_second: None,
            group_commit: None,
            handshakes: None,
            sign_in: None,
            scale: None,
            postgres: Vec::new(),
            two_replicas: Vec::new(),
            platform_peak_rss_mib: 0.0,
            goals: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) {
        println!(
            "{:<32} {:>4} in flight: {:>9.0} req/s (baseline {:>9.0}), p99 {:>7} µs (baseline {:>7} µs)",
            row.measure,
            row.concurrency,
            row.figures.requests_per_second,
            row.baseline.requests_per_second,
            row.figures.p99_us,
            row.baseline.p99_us
        );
        self.rows.push(row);
    }

    fn find(&self, prefix: &str, concurrency: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.measure.starts_with(prefix) && r.concurrency == concurrency)
    }

    /// Decides every goal from the figures.
    pub fn evaluate(&mut self) {
        let mut goals = Vec::new();
        if let Some(read) = self.find("authorized read", 32) {
            let p99_ratio = read.figures.p99_us as f64 / read.baseline.p99_us.max(1) as f64;
            goals.push(Goal {
                goal: "authorized read ≥ 0.5× echo req/s at 32 in flight, p99 ≤ 2× echo p99".into(),
                measured: format!("{}, p99 {p99_ratio:.2}×", read.ratio_with_spread()),
                met: read.ratio() >= 0.5 && p99_ratio <= 2.0,
            });
        }
        if let Some(denied) = self.find("denied", 32) {
            goals.push(Goal {
                goal: "denied call ≥ 0.7× echo req/s at 32 in flight (each refusal waits for its record)".into(),
                measured: denied.ratio_with_spread(),
                met: denied.ratio() >= 0.7,
            });
        }
        for in_flight in [32, 128] {
            if let Some(send) = self.find("authorized durable send", in_flight) {
                goals.push(Goal {
                    goal: format!("durable send ≥ 0.5× echo req/s at {in_flight} in flight"),
                    measured: send.ratio_with_spread(),
                    met: send.ratio() >= 0.5,
                });
            }
        }
        if let Some(decision) = &self.decision {
            goals.push(Goal {
                goal: "consent decision p99 ≤ 50 µs".into(),
                measured: format!("{:.2} µs", decision.p99_ns as f64 / 1000.0),
                met: decision.p99_ns <= 50_000,
            });
        }
        if let Some(scale) = &self.scale {
            let (lowest, highest) = scale.read.ratio_range();
            goals.push(Goal {
                goal: format!(
                    "read at {} messages / {} grants ≥ 0.8× the small dataset",
                    scale.messages, scale.grants
                ),
                measured: format!(
                    "{:.2}× (rounds {lowest:.2}–{highest:.2})",
                    scale.read.ratio()
                ),
                met: scale.read.ratio() >= 0.8,
            });
        }
        goals.push(Goal {
            goal: "platform peak RSS under load ≤ 64 MiB".into(),
            measured: format!("{:.1} MiB", self.platform_peak_rss_mib),
            met: self.platform_peak_rss_mib <= 64.0,
        });
        self.goals = goals;
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn markdown(&self) -> String {
        let (build, caveat) = if self.optimized {
            ("release", "")
        } else {
            (
                "debug",
                "A debug build's figures only show that each measurement runs: the goals are for a release build. ",
            )
        };
        let mut md = format!(
            "Benchmark ({} run, {build} build, {} CPUs, {} connections per measurement). {caveat}Baseline: a bare echo service behind the same mTLS stack answering each call with the platform's own reply to it, recorded before the run. Each point is measured in {} rounds, each right after its baseline; shown is the round with the median ratio, with the lowest and highest ratio in brackets.\n\n",
            if self.quick { "quick" } else { "full" },
            self.cpus,
            CONNECTIONS,
            ROUNDS
        );
        md.push_str("| call | in flight | req/s | p50 µs | p99 µs | p99.9 µs | errors | server CPU (cores) | server CPU µs per call | load generator CPU µs per call | server peak RSS MiB | echo req/s | echo p99 µs | echo CPU µs per call | echo's load generator CPU µs per call | req/s vs echo (rounds) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let f = &r.figures;
            let (lowest, highest) = r.ratio_range();
            md.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {:.0} | {:.0} | {:.2}× ({:.2}–{:.2}) |\n",
                r.measure,
                r.concurrency,
                f.requests_per_second,
                f.p50_us,
                f.p99_us,
                f.p999_us,
                f.errors,
                f.server_cpu_cores,
                f.cpu_us_per_call(),
                f.client_cpu_us_per_call,
                f.server_peak_rss_mib,
                r.baseline.requests_per_second,
                r.baseline.p99_us,
                r.baseline.cpu_us_per_call(),
                r.baseline.client_cpu_us_per_call,
                r.ratio(),
                lowest,
                highest
            ));
        }
        md.push('\n');
        if let Some(d) = &self.decision {
            md.push_str(&format!(
                "- consent decision alone: p50 {} ns, p99 {} ns over {} decisions\n",
                d.p50_ns, d.p99_ns, d.samples
            ));
        }
        if let Some(fsync) = self.fsync_commits_per_second {
            md.push_str(&format!("- single-commit fsync rate of this disk (SQLite WAL, synchronous=FULL, one row per commit): {fsync:.0} commits/s\n"));
        }
        if let Some(g) = &self.group_commit {
            let multiple = self.fsync_commits_per_second.map_or(String::new(), |f| {
                format!(
                    " = {:.1}× the single-commit rate",
                    g.appends_per_second / f.max(1.0)
                )
            });
            md.push_str(&format!("- the store's group commit, {} callers each waiting for its own durable audit append: {:.0} appends/s{multiple}\n", g.writers, g.appends_per_second));
        }
        if let Some(h) = &self.handshakes {
            md.push_str(&format!(
                "- new mTLS connections: {:.0}/s full handshakes, {:.0}/s with resumption ({:.0}% resumed)\n",
                h.full_per_second, h.resumed_per_second, h.resumed_fraction * 100.0
            ));
        }
        if let Some(f) = &self.sign_in {
            md.push_str(&format!(
                "- a sign-in while {} sign-ups arrive at once: median {:.0} ms, against {:.0} ms alone ({} of the {} sign-ups refused at once with `RESOURCE_EXHAUSTED`)\n",
                f.sign_ups, f.flooded_ms, f.idle_ms, f.refused_per_flood, f.sign_ups
            ));
        }
        if let Some(s) = &self.scale {
            let (large, small) = (&s.read.figures, &s.read.baseline);
            md.push_str(&format!(
                "- authorized read at 32 in flight with {} users, {} messages, {} grants preloaded: {:.0} req/s, p99 {} µs, against {:.0} req/s, p99 {} µs on the small dataset in the round before it ({} rounds, the median shown)\n",
                s.users, s.messages, s.grants, large.requests_per_second, large.p99_us, small.requests_per_second, small.p99_us, s.read.round_ratios.len()
            ));
        }
        md.push_str(&comparison(
            "On PostgreSQL (one replica; its CPU per call, not the database's), against the same call on SQLite",
            "SQLite",
            &self.postgres,
            true,
        ));
        md.push_str(&comparison(
            "On two replicas of one PostgreSQL database (half the connections to each), against one replica",
            "one replica",
            &self.two_replicas,
            false,
        ));
        md.push_str(&format!(
            "- platform peak RSS over the run: {:.1} MiB\n\n| goal | measured | |\n|---|---|---|\n",
            self.platform_peak_rss_mib
        ));
        for g in &self.goals {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                g.goal,
                g.measured,
                if g.met { "met" } else { "not met" }
            ));
        }
        md
    }
}

/// A table of `rows` measured against `baseline` (named so in its columns), under `title`;
/// with the server's CPU per call where `cpu` (one server process measured).
fn comparison(title: &str, baseline: &str, rows: &[Row], cpu: bool) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let cpu_column = if cpu {
        " server CPU µs per call |"
    } else {
        ""
    };
    let mut md = format!(
        "\n{title}:\n\n| call | in flight | req/s | p99 µs | errors |{cpu_column} {baseline} req/s | {baseline} p99 µs | req/s vs {baseline} (rounds) |\n|---|---|---|---|---|{}---|---|---|\n",
        if cpu { "---|" } else { "" }
    );
    for r in rows {
        let cpu = if cpu {
            format!(" {:.0} |", r.figures.cpu_us_per_call())
        } else {
            String::new()
        };
        md.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} |{cpu} {:.0} | {} | {} |\n",
            r.measure,
            r.concurrency,
            r.figures.requests_per_second,
            r.figures.p99_us,
            r.figures.errors,
            r.baseline.requests_per_second,
            r.baseline.p99_us,
            r.ratio_with_spread()
        ));
    }
    md.push('\n');
    md
}

/// Times the consent decision alone, `samples` times.
pub fn decision_latency(samples: u64) -> Decision {
    let (grant, partner, feature, policy) = decision_inputs();
    let clock = Clock::default();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("histogram");
    for n in 0..samples {
        let ctx = GrantContext {
            caller_partner_id: "music",
            grant: &grant,
            partner: &partner,
            feature: &feature,
        };
        let scope = if n % 2 == 0 {
            Scope::MessagesRead
        } else {
            Scope::FriendsRead
        };
        let started = Instant::now();
        let outcome = authorize(&ctx, scope, clock.now_ms(), &policy);
        let nanos = u64::try_from(started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        std::hint::black_box(outcome.is_ok());
        let _ = histogram.record(nanos.min(1_000_000_000));
    }
    Decision {
        samples,
        p50_ns: histogram.value_at_quantile(0.5),
        p99_ns: histogram.value_at_quantile(0.99),
    }
}

/// Commits per second of one row per transaction, WAL and `synchronous=FULL`, in `dir`.
pub fn fsync_rate(dir: &Path, duration: Duration) -> f64 {
    let db = rusqlite::Connection::open(dir.join("fsync.db")).expect("fsync db");
    db.pragma_update(None, "journal_mode", "WAL").expect("wal");
    db.pragma_update(None, "synchronous", "FULL").expect("full");
    db.execute_batch("CREATE TABLE t (x INTEGER)")
        .expect("table");
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed() < duration {
        db.execute("INSERT INTO t (x) VALUES (?1)", [commits])
            .expect("commit");
        commits += 1;
    }
    commits as f64 / started.elapsed().as_secs_f64()
}

/// What the store's group commit makes of the disk.
#[derive(Debug, Serialize)]
pub struct GroupCommit {
    /// Concurrent callers.
    pub writers: usize,
    /// Durable appends per second.
    pub appends_per_second: f64,
}

/// Audit records made durable per second through the platform's own store by `writers`
/// concurrent callers, each waiting for its commit before the next: the group commit
/// without the gRPC and TLS work of a call around it.
pub async fn group_commit_rate(dir: &Path, writers: usize, duration: Duration) -> GroupCommit {
    let store = SqliteStore::open(&dir.join("group-commit.db"), AuditKey::generate());
    let store = Arc::new(store.expect("store"));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let store = store.clone();
        callers.spawn(async move {
            let mut appended = 0u64;
            while started.elapsed() < duration {
                execute(store.as_ref(), |repo| {
                    repo.append_audit(&AuditEntry::default(), 0)
                })
                .await
                .expect("durable append");
                appended += 1;
            }
            appended
        });
    }
    let mut appended = 0;
    while let Some(count) = callers.join_next().await {
        appended += count.expect("caller");
    }
    GroupCommit {
        writers,
        appends_per_second: appended as f64 / started.elapsed().as_secs_f64(),
    }
}

/// A sign-in's latency alone and while a flood of sign-ups arrives at once.
#[derive(Debug, Serialize)]
pub struct SignInUnderFlood {
    /// Sign-ups sent at once around each timed sign-in.
    pub sign_ups: usize,
    /// Median sign-in latency with nothing else going on, milliseconds.
    pub idle_ms: f64,
    /// Median sign-in latency during the flood, milliseconds.
    pub flooded_ms: f64,
    /// Sign-ups refused with `RESOURCE_EXHAUSTED`, per flood (median).
    pub refused_per_flood: usize,
}

/// Times alice's sign-in on `account`, `samples` times alone and `samples` times while
/// `sign_ups` sign-ups of new names arrive at once.
pub async fn sign_in_under_flood(
    account: &AccountClient<Channel>,
    sign_ups: usize,
    samples: usize,
) -> SignInUnderFlood {
    async fn timed_sign_in(account: &AccountClient<Channel>) -> f64 {
        let started = Instant::now();
        account
            .clone()
            .sign_in(pb::SignInRequest {
                user_name: "alice".into(),
                password: "correct horse".into(),
            })
            .await
            .expect("sign in");
        started.elapsed().as_secs_f64() * 1000.0
    }
    fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
        values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
        values[values.len() / 2]
    }
    let mut idle = Vec::new();
    for _ in 0..samples {
        idle.push(timed_sign_in(account).await);
    }
    let (mut flooded, mut refused) = (Vec::new(), Vec::new());
    for sample in 0..samples {
        let flood: Vec<_> = (0..sign_ups)
            .map(|n| {
                let mut account = account.clone();
                tokio::spawn(async move {
                    account
                        .sign_up(pb::SignUpRequest {
                            user_name: format!("flood{sample}-{n}"),
                            display_name: "Flood".into(),
                            password: "correct horse".into(),
                        })
                        .await
                        .is_err_and(|s| s.code() == tonic::Code::ResourceExhausted)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        flooded.push(timed_sign_in(account).await);
        let mut refusals = 0;
        for task in flood {
            refusals += usize::from(task.await.expect("sign-up task"));
        }
        refused.push(refusals);
    }
    SignInUnderFlood {
        sign_ups,
        idle_ms: median(idle),
        flooded_ms: median(flooded),
        refused_per_flood: median(refused),
    }
}

/// New mTLS connections per second to `addr`, without and with session resumption.
pub async fn handshakes(work: &WorkDir, addr: SocketAddr, duration: Duration) -> Handshakes {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    let read = |name: &str| std::fs::read(work.pki(name)).expect("pki file");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&read("platform-ca.pem")).expect("ca"))
        .expect("root");
    let config = |resume: bool| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(&read("partner-music.pem")).expect("cert")],
            PrivateKeyDer::from_pem_slice(&read("partner-music-key.pem")).expect("key"),
        )
        .expect("client auth");
        config.alpn_protocols = vec![b"h2".to_vec()];
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let mut rates = Vec::new();
    let mut resumed_fraction = 0.0;
    for resume in [false, true] {
        let connector = config(resume);
        let started = Instant::now();
        let (mut done, mut resumed) = (0u64, 0u64);
        while started.elapsed() < duration {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut tls = connector
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("handshake");
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                resumed += 1;
            }
            // Read the server's first bytes so that its session tickets are taken in.
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_millis(50), tls.read(&mut byte)).await;
            done += 1;
        }
        rates.push(done as f64 / started.elapsed().as_secs_f64());
        if resume {
            resumed_fraction = resumed as f64 / done.max(1) as f64;
        }
    }
    Handshakes {
        full_per_second: rates[0],
        resumed_per_second: rates[1],
        resumed_fraction,
    }
}

/// A platform on a preloaded large dataset.
pub struct ScaleTarget {
    pub target: Target,
    pub users: u64,
    pub messages: u64,
    pub grants: u64,
}

/// Preloads users, threads, messages and grants straight into a new database, then starts
/// the platform on it with a grant for alice's 40-message thread.
pub async fn scale_target(dir: &Path, quick: bool) -> ScaleTarget {
    let (users, messages, grants): (u64, u64, u64) = if quick {
        (10_000, 100_000, 10_000)
    } else {
        (100_000, 1_000_000, 100_000)
    };
    let work = WorkDir::new(dir);
    let token = new_token(GRANT_TOKEN_PREFIX);
    let now = Clock::default().now_ms();
    let started = Instant::now();
    {
        let key = std::fs::read_to_string(work.pki("audit.key")).expect("audit key");
        let key = AuditKey::from_hex(&key).expect("audit key");
        let store = SqliteStore::open(&dir.join("platform.db"), key).expect("scale store");
        let (_, partner, feature, _) = decision_inputs();
        let feature = Feature {
            scopes: ScopeSet::of(&[
                Scope::ThreadsRead,
                Scope::MessagesRead,
                Scope::MessagesWrite,
            ]),
            ..feature
        };
        execute(&store, move |repo| {
            repo.insert_partner(&partner, now)?;
            repo.insert_feature(&feature)
        })
        .await
        .expect("partner");
        const CHUNK: u64 = 20_000;
        let user = |i: u64| format!("usr_{i:08}");
        for start in (0..users).step_by(CHUNK as usize) {
            execute(&store, move |repo| {
                for i in start..(start + CHUNK).min(users) {
                    let id = user(i);
                    repo.insert_user(
                        &User {
                            id: id.clone(),
                            name: format!("user{i}"),
                            display_name: id,
                            password_hash: "x".into(),
                            hide_from_others_apps: false,
                            name_to_friends_apps: false,
                        },
                        now,
                    )?;
                }
                Ok::<_, consent_store::StoreError>(())
            })
            .await
            .expect("users");
        }
        // Threads once every user exists: each joins a user and the next one.
        for start in (0..users).step_by(CHUNK as usize) {
            execute(&store, move |repo| {
                for i in start..(start + CHUNK).min(users) {
                    repo.insert_thread(&Thread {
                        id: format!("thr_{i:08}"),
                        title: "t".into(),
                        started_by_partner: None,
                        created_ms: now,
                        participants: vec![user(i), user((i + 1) % users)],
                    })?;
                }
                Ok::<_, consent_store::StoreError>(())
            })
            .await
            .expect("threads");
        }
        for start in (0..messages).step_by(CHUNK as usize) {
            execute(&store, move |repo| {
                for m in start..(start + CHUNK).min(messages) {
                    // alice (user 0) has 40 messages in her thread; the rest spread over all threads.
                    let thread = if m < 40 { 0 } else { m % users };
                    repo.insert_message(&Message {
                        id: format!("msg_{m:010}"),
                        thread_id: format!("thr_{thread:08}"),
                        sender_id: user(thread),
                        body: format!(
                            "{m:010} {}",
                            "a reasonably long message about dinner plans ".repeat(4)
                        ),
                        created_ms: now - 1,
                        sent_by_partner: None,
                        card: None,
                    })?;
                }
                Ok::<_, consent_store::StoreError>(())
            })
            .await
            .expect("messages");
        }
        let token_hash = hash_token(&token);
        for start in (0..grants).step_by(CHUNK as usize) {
            let token_hash = token_hash.clone();
            execute(&store, move |repo| {
                for g in start..(start + CHUNK).min(grants) {
                    let (grant, _, _, _) = decision_inputs();
                    let grant = Grant {
                        id: format!("grt_{g:08}"),
                        user_id: user(g % users),
                        include_history: true,
                        created_ms: now,
                        not_after_ms: now + 86_400_000,
                        ..grant
                    };
                    repo.insert_grant(&grant)?;
                    if g == 0 {
                        repo.set_grant_token(&grant.id, &token_hash)?;
                    }
                }
                Ok::<_, consent_store::StoreError>(())
            })
            .await
            .expect("grants");
        }
    }
    println!(
        "preloaded {users} users, {messages} messages, {grants} grants in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ports = PlatformPorts::free();
    let platform = start_platform_with(&work, ports, UNLIMITED, crate::PLATFORM_LOG).await;
    crate::load::reset_peak_rss(platform.id());
    let partner_channels = partner_channels(&work, ports.partner).await;
    ScaleTarget {
        target: Target {
            platform,
            partner: ports.partner,
            partner_channels,
            token,
            thread_id: work.shown_to("music").thread("thr_00000000"),
        },
        users,
        messages,
        grants,
    }
}
