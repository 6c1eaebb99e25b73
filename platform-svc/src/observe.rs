//! What the platform reports about its store, every few seconds, as gauges for
//! Prometheus: grants by state (`consent_grants{state}`), ended grants whose deletion
//! attestation is overdue (`consent_deletion_attestations_overdue`), the audit records
//! appended (`consent_audit_records_appended_total`, the chain's length), and whether the
//! chain verifies (`consent_audit_chain_intact{check="running"}`: each record is checked
//! once, as it appears, and a break stays reported; `VerifyAudit` runs the `full` check,
//! which re-reads every record). Grants are counted as stored: one past its end counts in
//! its old state until the sweep ends it, though no call may use it. With several
//! replicas, each reports the same shared figures.

use crate::api::Platform;
use crate::error::ApiResult;
use consent_core::audit::{AuditKey, ChainVerifier};
use consent_core::model::{AuditRecord, GrantState};
use consent_core::rules;
use std::time::Duration;

/// How often the gauges are refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Audit records read per store call by the running check.
const AUDIT_BATCH: usize = 1_000;

/// Every grant state, so that a state no grant is in reads 0 rather than vanishing.
const STATES: [GrantState; 7] = [
    GrantState::Active,
    GrantState::Revoked,
    GrantState::Expired,
    GrantState::Lapsed,
    GrantState::Retired,
    GrantState::Suspended,
    GrantState::Released,
];

/// Refreshes the gauges until the task is dropped. Each refresh that read the store sets
/// `consent_observed_at_seconds` to the clock's time, so stale gauges show.
pub async fn observe_forever(platform: Platform, audit_key: AuditKey) {
    let mut chain = ChainVerifier::new(&audit_key);
    let mut verified_to = 0;
    let mut ticker = tokio::time::interval(REFRESH_EVERY);
    loop {
        ticker.tick().await;
        let counted = count_grants(&platform).await;
        if let Err(error) = &counted {
            tracing::warn!(%error, "could not count grants");
        }
        let checked = check_new_records(&platform, &mut chain, &mut verified_to).await;
        if let Err(error) = &checked {
            tracing::warn!(%error, "could not read the audit chain");
        }
        // Set even after a partial read: a break found stays reported.
        metrics::gauge!("consent_audit_chain_intact", "check" => "running")
            .set(f64::from(u8::from(chain.is_intact())));
        metrics::counter!("consent_audit_records_appended_total")
            .absolute(u64::try_from(verified_to).unwrap_or(0));
        if counted.is_ok() && checked.is_ok() {
            metrics::gauge!("consent_observed_at_seconds")
                .set(platform.clock.now_ms() as f64 / 1000.0);
        }
    }
}

async fn count_grants(platform: &Platform) -> ApiResult<()> {
    let due_ms = platform.limits.attestation_due_ms;
    let (by_state, overdue) = platform
        .read(move |repo, now_ms| {
            let by_state = repo.grants_by_state()?;
            let ended_by = rules::overdue_if_ended_by(now_ms, due_ms);
            Ok((by_state, repo.unattested_grants_ended_by(ended_by)?))
        })
        .await?;
    for state in STATES {
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

/// Feeds the records after `verified_to` to `chain`.
async fn check_new_records(
    platform: &Platform,
    chain: &mut ChainVerifier<'_>,
    verified_to: &mut i64,
) -> ApiResult<()> {
    loop {
        let after = *verified_to;
        let records: Vec<AuditRecord> = platform
            .read(move |repo, _| Ok(repo.audit_records(after, AUDIT_BATCH)?))
            .await?;
        for record in &records {
            chain.push(record);
            *verified_to = record.seq;
        }
        if records.len() < AUDIT_BATCH {
            return Ok(());
        }
    }
}
