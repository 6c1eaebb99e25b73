//! Readiness, as the health service reports it: `SERVING` while the store answers and the
//! platform is not shutting down; `NOT_SERVING` once the store has failed to answer
//! [`FAILURES_BEFORE_NOT_SERVING`] probes in a row (a replica cut off from its database)
//! or a shutdown began and the listeners drain. A balancer or a partner that checks health
//! then sends its calls elsewhere. One answered probe makes it `SERVING` again. The gauge
//! `consent_ready` follows the same state (1 serving, 0 not).

use consent_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the store is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Unanswered probes in a row before the platform reports `NOT_SERVING`: one slow moment
/// (a backlog of long reads) does not send partners away.
pub const FAILURES_BEFORE_NOT_SERVING: u32 = 3;

/// Probes the store every second until `stopping` turns true (or its sender goes); the
/// receiver holds whether the platform is ready, and changes only when that does.
pub fn follow(store: Arc<dyn Store>, mut stopping: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (ready, readiness) = watch::channel(true);
    tokio::spawn(async move {
        let mut failures = 0;
        while !*stopping.borrow() {
            if store_answers(&store).await {
                failures = 0;
            } else {
                failures += 1;
            }
            let answering = failures < FAILURES_BEFORE_NOT_SERVING;
            metrics::gauge!("consent_ready").set(if answering { 1.0 } else { 0.0 });
            let changed =
                ready.send_if_modified(|ready| std::mem::replace(ready, answering) != answering);
            if changed {
                tracing::warn!(
                    ready = answering,
                    "readiness changed: the store {}",
                    if answering {
                        "answers again"
                    } else {
                        "does not answer"
                    }
                );
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                stopped = stopping.changed() => if stopped.is_err() { break },
            }
        }
        metrics::gauge!("consent_ready").set(0.0);
        ready.send_replace(false);
    });
    readiness
}

/// Whether the store answers, in time and without error, both a read (of the newest audit
/// record, on a snapshot) and a write transaction that changes nothing (on the writer,
/// through its lock and commit): a replica that can read but not write is not serving.
async fn store_answers(store: &Arc<dyn Store>) -> bool {
    let read = consent_store::read(store, |repo| repo.audit_head().map(drop));
    let write = consent_store::execute(store.as_ref(), |_| Ok::<(), StoreError>(()));
    let probes = async { read.await.is_ok() && write.await.is_ok() };
    tokio::time::timeout(PROBE_TIMEOUT, probes)
        .await
        .unwrap_or(false)
}
