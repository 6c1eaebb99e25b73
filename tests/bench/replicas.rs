//! The platform on PostgreSQL: the read, send and denied points on one replica against the
//! same points on SQLite, and on two replicas against one, each pair measured in rounds
//! in the same run. Both replicas and PostgreSQL share the machine's cores with the load
//! generator, so two replicas here show what the shared database and writer lock cost,
//! not what two machines would serve (docs/benchmarks.md works that out on paper).

use crate::report::Row;
use crate::{
    CONNECTIONS, Call, Credentials, Endpoint, PLATFORM_LOG, UNLIMITED, measure, rounds,
    small_target,
};
use end_to_end::processes::{PlatformPorts, Process, WorkDir, start_platform_named};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Calls in flight at every point measured here.
const IN_FLIGHT: usize = 32;

/// The rows measured, and the processes to keep until the run ends.
pub struct Measured {
    /// One replica on PostgreSQL, against SQLite.
    pub postgres: Vec<Row>,
    /// Two replicas on PostgreSQL, against one.
    pub two_replicas: Vec<Row>,
    _processes: Vec<Process>,
}

/// Measures every call on PostgreSQL against `sqlite` (credentials `with`), and then on
/// two replicas; sends carry keys numbered on from `rounds_begun`.
pub async fn measure_postgres(
    work: &WorkDir,
    sqlite: &Endpoint,
    with: &Credentials,
    point: Duration,
    rounds_begun: &AtomicUsize,
) -> Measured {
    let url = tokio::task::spawn_blocking(end_to_end::postgres::database)
        .await
        .expect("a PostgreSQL database");
    let (one, _) = small_target(work, "platform-pg", &url).await;
    let (replica, pg_with) = (one.endpoint(), one.credentials());
    let mut postgres = Vec::new();
    for call in [Call::Read, Call::Send, Call::Denied] {
        let measured = rounds(
            || measure(sqlite, call, with, 0, IN_FLIGHT, point),
            || {
                let round = rounds_begun.fetch_add(1, Ordering::Relaxed);
                measure(&replica, call, &pg_with, round, IN_FLIGHT, point)
            },
        )
        .await;
        postgres.push(Row::new(
            &format!("{} on PostgreSQL", call.label()),
            IN_FLIGHT,
            measured,
        ));
    }

    // Replica B on the same database: half the connections go to each replica.
    let ports = PlatformPorts::free();
    let b = start_platform_named(
        work,
        "platform-pg-b",
        ports,
        &url,
        UNLIMITED,
        PLATFORM_LOG,
        &[],
    )
    .await;
    let mut channels = one.partner_channels[..CONNECTIONS / 2].to_vec();
    let to_b = crate::partner_channels(work, ports.partner).await;
    channels.extend(to_b.into_iter().take(CONNECTIONS / 2));
    let both = Endpoint::new(channels, one.platform.id());
    let mut two_replicas = Vec::new();
    for call in [Call::Read, Call::Send, Call::Denied] {
        let measured = rounds(
            || {
                let round = rounds_begun.fetch_add(1, Ordering::Relaxed);
                measure(&replica, call, &pg_with, round, IN_FLIGHT, point)
            },
            || {
                let round = rounds_begun.fetch_add(1, Ordering::Relaxed);
                measure(&both, call, &pg_with, round, IN_FLIGHT, point)
            },
        )
        .await;
        two_replicas.push(Row::new(
            &format!("{} on two replicas", call.label()),
            IN_FLIGHT,
            measured,
        ));
    }
    Measured {
        postgres,
        two_replicas,
        _processes: vec![one.platform, b],
    }
}
