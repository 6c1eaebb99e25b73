//! What the platform reports about its store, every few seconds, as gauges for
//! Prometheus: grants by state (`consent_grants{state}`), ended grants whose deletion
//! attestation is overdue (`consent_deletion_attestations_overdue`), the audit records
//! appended (`consent_audit_records_appended_total`, the chain's length), and whether the
//! chain verifies (`consent_audit_chain_intact{check="running"}`: each record is checked
//! once, in order, up to 2,000 per refresh, and a break stays reported;
//! `consent_audit_records_verified_total` counts the records checked; `VerifyAudit` runs
//! the `full` check, which re-reads every record). Grants are counted as stored: one past
//! its end counts in its old state until the sweep ends it, though no call may use it. With
//! several replicas, each reports the same shared figures.

use crate::api::Platform;
use crate::error::ApiResult;
use consent_core::audit::{AuditKey, ChainVerifier};
use consent_core::model::GrantState;
use consent_core::rules;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often the gauges are refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Most audit records the running check reads per refresh: it keeps up with 400 audited
/// calls a second, costs a bounded share of one reader's time, and catches up once a
/// busier stretch is over (`consent_audit_records_verified_total` against
/// `consent_audit_records_appended_total` shows how far behind it is).
const AUDIT_RECORDS_PER_REFRESH: usize = 2_000;

/// The running check of the audit chain: the records verified so far.
struct RunningCheck {
    chain: ChainVerifier,
    verified_to: i64,
}

/// Refreshes the gauges until the task is dropped. Each refresh that read the store sets
/// `consent_observed_at_seconds` to the clock's time, so stale gauges show.
pub async fn observe_forever(platform: Platform, audit_key: AuditKey) {
    let running = Arc::new(Mutex::new(RunningCheck {
        chain: ChainVerifier::new(&audit_key),
        verified_to: 0,
    }));
    let mut ticker = tokio::time::interval(REFRESH_EVERY);
    loop {
        ticker.tick().await;
        let counted = count_grants_and_records(&platform).await;
        if let Err(error) = &counted {
            tracing::warn!(%error, "could not count grants and audit records");
        }
        let checked = check_new_records(&platform, &running).await;
        if let Err(error) = &checked {
            tracing::warn!(%error, "could not read the audit chain");
        }
        {
            // Set even after a partial read: a break found stays reported.
            let check = running.lock().unwrap_or_else(PoisonError::into_inner);
            metrics::gauge!("consent_audit_chain_intact", "check" => "running")
                .set(f64::from(u8::from(check.chain.is_intact())));
            metrics::counter!("consent_audit_records_verified_total")
                .absolute(u64::try_from(check.verified_to).unwrap_or(0));
        }
        if counted.is_ok() && checked.is_ok() {
            metrics::gauge!("consent_observed_at_seconds")
                .set(platform.clock.now_ms() as f64 / 1000.0);
        }
    }
}

/// Sets the gauges of grants by state and overdue attestations, and the count of audit
/// records appended, from one read.
async fn count_grants_and_records(platform: &Platform) -> ApiResult<()> {
    let due_ms = platform.limits.attestation_due_ms;
    let (by_state, overdue, head) = platform
        .read(move |repo, now_ms| {
            let by_state = repo.grants_by_state()?;
            let ended_by = rules::overdue_if_ended_by(now_ms, due_ms);
            let overdue = repo.unattested_grants_ended_by(ended_by)?;
            Ok((by_state, overdue, repo.audit_head()?.map_or(0, |r| r.seq)))
        })
        .await?;
    metrics::counter!("consent_audit_records_appended_total")
        .absolute(u64::try_from(head).unwrap_or(0));
    // Every state is set, so that a state no grant is in reads 0 rather than vanishing.
    for state in GrantState::ALL {
        let count: usize = by_state
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum();
        metrics::gauge!("consent_grants", "state" => state.name()).set(count as f64);
    }
    metrics::gauge!("consent_deletion_attestations_overdue").set(overdue as f64);
    Ok(())
}

/// Feeds up to [`AUDIT_RECORDS_PER_REFRESH`] records after the last one checked to the
/// running check, on a reader thread (the records are made and dropped there).
async fn check_new_records(
    platform: &Platform,
    running: &Arc<Mutex<RunningCheck>>,
) -> ApiResult<()> {
    let running = Arc::clone(running);
    platform
        .read(move |repo, _| {
            let mut check = running.lock().unwrap_or_else(PoisonError::into_inner);
            for record in repo.audit_records(check.verified_to, AUDIT_RECORDS_PER_REFRESH)? {
                check.chain.push(&record);
                check.verified_to = record.seq;
            }
            Ok(())
        })
        .await
}
