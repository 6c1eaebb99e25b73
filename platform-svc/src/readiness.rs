//! Readiness, as the health service reports it: `SERVING` while the store answers and the
//! platform is not shutting down; `NOT_SERVING` while the store cannot be read (a replica
//! cut off from its database) or once a shutdown began and the listeners drain. A
//! balancer or a partner that checks health then sends its calls elsewhere.

use consent_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the store is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take before the store counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes the store every second until `stopping` turns true; the receiver holds
/// whether the platform is ready.
pub fn follow(store: Arc<dyn Store>, mut stopping: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (ready, readiness) = watch::channel(true);
    tokio::spawn(async move {
        loop {
            if *stopping.borrow() {
                ready.send_replace(false);
                return;
            }
            let answered = store_answers(&store).await;
            if *ready.borrow() != answered {
                tracing::warn!(
                    ready = answered,
                    "readiness changed: the store {}",
                    if answered {
                        "answers again"
                    } else {
                        "does not answer"
                    }
                );
            }
            ready.send_replace(answered);
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                _ = stopping.changed() => {}
            }
        }
    });
    readiness
}

/// Whether a read of the store's newest audit record finishes, without error, in time.
async fn store_answers(store: &Arc<dyn Store>) -> bool {
    let probe = consent_store::read(store, |repo| repo.audit_head().map(drop));
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Ok::<(), StoreError>(()))
    )
}
