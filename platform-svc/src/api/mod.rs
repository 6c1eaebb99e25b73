//! The gRPC surfaces. Each handler validates its request, then runs one store transaction
//! through [`Platform`]; partner calls go through `partner_call::PartnerCall`, which
//! resolves the grant, applies the rules of [`consent_core::rules`], and appends the audit
//! record in the transaction that records the call, so that no reply, allowed or refused,
//! leaves before its record is durable. The one reply that comes later, the refusal that
//! ends an open event stream, is recorded the same way before it is sent (`event_feed`).

pub mod account;
pub mod admin;
pub mod consent;
mod convert;
mod event_feed;
pub mod messaging;
mod partner_call;

use crate::config::Policy;
use crate::error::{ApiError, ApiResult};
use consent_core::approval;
use consent_core::clock::{Clock, DAY_MS};
use consent_core::model::{AuditEntry, Grant, GrantState};
use consent_core::rules::{self, LifetimePolicy};
use consent_core::secret::SecretKey;
use consent_store::{Repo, Store, StoreResult, execute};
use consent_tls::transport::TransportLimits;
use std::sync::Arc;
use tokio::sync::watch;

/// Lifetimes and windows in milliseconds, derived once from [`Policy`], and the largest
/// reply the transport sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Grant lifetime cap and inactivity lapse.
    pub lifetime: LifetimePolicy,
    /// How long after a grant ends its partner has to attest deletion.
    pub attestation_due_ms: i64,
    /// Session lifetime.
    pub session_ms: i64,
    /// The largest encoded reply: list pages shrink to fit it.
    pub reply_bytes: usize,
}

impl Limits {
    /// The limits of `policy`, with replies up to the transport's message limit.
    pub fn new(policy: &Policy, transport: &TransportLimits) -> Self {
        const HOUR_MS: i64 = 60 * 60 * 1000;
        Limits {
            lifetime: LifetimePolicy {
                max_lifetime_ms: i64::from(policy.max_grant_days) * DAY_MS,
                inactivity_lapse_ms: i64::from(policy.inactivity_lapse_days) * DAY_MS,
            },
            attestation_due_ms: i64::from(policy.attestation_due_hours) * HOUR_MS,
            session_ms: i64::from(policy.session_hours) * HOUR_MS,
            reply_bytes: transport.max_message_bytes,
        }
    }
}

/// State shared by every surface.
#[derive(Clone)]
pub struct Platform {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<Clock>,
    /// Policy in milliseconds.
    pub limits: Limits,
    /// The key of per-partner pseudonyms, read from a file outside the database.
    pub pseudonym_key: Arc<SecretKey>,
    /// Becomes true when the server starts shutting down; long-lived streams end then.
    pub stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// The platform over `store`, with time from `clock` and pseudonyms keyed by
    /// `pseudonym_key`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<Clock>,
        limits: Limits,
        pseudonym_key: SecretKey,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Platform {
            store,
            clock,
            limits,
            pseudonym_key: Arc::new(pseudonym_key),
            stopping,
        }
    }

    /// Runs `work` in a store transaction with the time the writer runs it (not the time it
    /// was queued: a job that waited on a lock decides at the time it acts); returns once
    /// committed.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut dyn Repo, i64) -> ApiResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let clock = Arc::clone(&self.clock);
        execute(self.store.as_ref(), move |repo| work(repo, clock.now_ms())).await
    }

    /// Runs read-only `work` on a snapshot of committed data, beside the store's writer,
    /// with the time the reader runs it.
    pub async fn read<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut dyn Repo, i64) -> ApiResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let clock = Arc::clone(&self.clock);
        consent_store::read(&self.store, move |repo| work(repo, clock.now_ms())).await
    }

    /// Runs read-only `look` on a snapshot, then `then` with its value in a store
    /// transaction, each given the time it runs; returns once committed. The reader hands
    /// `then` straight to the writer.
    pub async fn read_then_run<S: Send + 'static, R: Send + 'static>(
        &self,
        look: impl FnOnce(&mut dyn Repo, i64) -> ApiResult<S> + Send + 'static,
        then: impl FnOnce(&mut dyn Repo, i64, S) -> ApiResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let (looking, then_clock) = (Arc::clone(&self.clock), Arc::clone(&self.clock));
        consent_store::read_then_execute(
            &self.store,
            move |repo| look(repo, looking.now_ms()),
            move |repo, looked| then(repo, then_clock.now_ms(), looked),
        )
        .await
    }

    /// Ends every grant that is past `not_after` or idle past the inactivity limit, with an
    /// event for each, forgets idempotency records past their window, and authorization
    /// flows and sessions a day past their expiry, and marks access requests undecided past
    /// their lifetime expired; returns how many grants ended.
    pub async fn sweep_grants(&self) -> ApiResult<usize> {
        let policy = self.limits.lifetime;
        self.run(move |repo, now_ms| {
            let candidates =
                repo.grants_due_to_end(now_ms, rules::lapse_cutoff_ms(now_ms, &policy))?;
            let mut ended = 0;
            for grant in &candidates {
                if let Some(state) = rules::ending_due(grant, now_ms, &policy) {
                    end_grant(repo, grant, state, now_ms)?;
                    ended += 1;
                }
            }
            repo.forget_idempotent_responses(now_ms - partner_call::IDEMPOTENCY_WINDOW_MS)?;
            repo.expire_requests(approval::request_cutoff_ms(now_ms))?;
            repo.forget_authorization_flows(now_ms - DAY_MS)?;
            repo.forget_sessions(now_ms - DAY_MS)?;
            Ok(ended)
        })
        .await
    }
}

/// Ends an active grant in `state` (its token stops working) and tells its partner.
pub fn end_grant(
    repo: &mut dyn Repo,
    grant: &Grant,
    state: GrantState,
    now_ms: i64,
) -> StoreResult<()> {
    if grant.state == GrantState::Active {
        repo.end_grant(&grant.id, state, now_ms)?;
        repo.push_event(grant, state.event(), now_ms)?;
    }
    Ok(())
}

/// Appends the audit record of a refusal made outside a partner call's own transaction:
/// of a form on the web pages, or of the end of a partner's event stream; returns it.
pub(crate) fn audit_refusal(
    repo: &mut dyn Repo,
    now_ms: i64,
    partner_id: &str,
    user_id: &str,
    method: &str,
    error: &ApiError,
) -> ApiResult<AuditEntry> {
    let entry = AuditEntry {
        partner_id: partner_id.to_string(),
        user_id: user_id.to_string(),
        method: method.to_string(),
        decision: "deny".into(),
        reason: error.audit_reason().into(),
        ..AuditEntry::default()
    };
    repo.append_audit(&entry, now_ms)?;
    Ok(entry)
}

/// Ends every active grant of a partner (or of one of its features) in `state`.
pub fn end_grants_of(
    repo: &mut dyn Repo,
    partner_id: &str,
    feature: Option<&str>,
    state: GrantState,
    now_ms: i64,
) -> StoreResult<u32> {
    let grants = repo.active_grants_of(partner_id, feature)?;
    for grant in &grants {
        end_grant(repo, grant, state, now_ms)?;
    }
    Ok(u32::try_from(grants.len()).unwrap_or(u32::MAX))
}

/// Refuses a new thread of `user_id` with anyone among `participants` who is not their
/// friend (the core's rule, over the friendships the store holds).
pub fn friends_only(repo: &mut dyn Repo, user_id: &str, participants: &[String]) -> ApiResult<()> {
    let is_friend = participants
        .iter()
        .map(|p| repo.are_friends(user_id, p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rules::may_start_thread_with(&is_friend)?)
}

/// What the handlers' unit tests start from.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Limits, Platform};
    use crate::config::Policy;
    use consent_core::clock::Clock;
    use consent_core::model::{
        Coverage, Feature, Grant, GrantState, Partner, Scope, ScopeSet, User,
    };
    use consent_core::secret::{GRANT_TOKEN_PREFIX, SecretKey, hash_token, new_token};
    use consent_store::{SqliteStore, Store, execute};
    use std::sync::Arc;

    /// A platform with one partner ("music"), one user and one active grant (`grt_1`), its
    /// store wrapped by `wrap`; returns the grant's token and what stops the platform.
    pub async fn platform_with_grant(
        dir: &std::path::Path,
        wrap: impl FnOnce(SqliteStore) -> Arc<dyn Store>,
    ) -> (Platform, String, tokio::sync::watch::Sender<bool>) {
        let key = consent_core::audit::AuditKey::generate();
        let store = SqliteStore::open(&dir.join("platform.db"), key).unwrap();
        let token = new_token(GRANT_TOKEN_PREFIX);
        let token_hash = hash_token(&token);
        let clock = Arc::new(Clock::default());
        let now_ms = clock.now_ms();
        execute(&store, move |repo| {
            let scopes = ScopeSet::of(&[Scope::ThreadsRead, Scope::MessagesRead]);
            repo.insert_partner(
                &Partner {
                    id: "music".into(),
                    display_name: "Music".into(),
                    allowed_scopes: scopes,
                    suspended: false,
                    blocked: false,
                    redirect_uris: Vec::new(),
                },
                0,
            )?;
            repo.insert_feature(&Feature {
                partner_id: "music".into(),
                name: "share".into(),
                description: "share".into(),
                scopes,
                retired: false,
                card_kinds: Vec::new(),
            })?;
            repo.insert_user(
                &User {
                    id: "usr_a".into(),
                    name: "alice".into(),
                    display_name: "Alice".into(),
                    password_hash: "x".into(),
                    hide_from_others_apps: false,
                    name_to_friends_apps: false,
                },
                0,
            )?;
            repo.insert_grant(&Grant {
                id: "grt_1".into(),
                user_id: "usr_a".into(),
                partner_id: "music".into(),
                feature: "share".into(),
                scopes,
                coverage: Coverage::All,
                thread_ids: vec![],
                include_history: true,
                created_ms: now_ms,
                not_after_ms: i64::MAX,
                last_used_ms: None,
                state: GrantState::Active,
                ended_ms: None,
                attested_ms: None,
            })?;
            repo.set_grant_token("grt_1", &token_hash)
        })
        .await
        .unwrap();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let platform = Platform::new(
            wrap(store),
            clock,
            Limits::new(&Policy::default(), &Default::default()),
            SecretKey::generate(),
            stopping,
        );
        (platform, token, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::platform_with_grant;
    use consent_core::clock::DAY_MS;
    use consent_core::session;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_job_takes_the_time_when_the_writer_runs_it_not_when_it_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, _, _stop) = platform_with_grant(dir.path(), |s| Arc::new(s)).await;
        let queued_ms = platform.clock.now_ms();
        let release = consent_store::hold_writer(platform.store.as_ref());
        let waiting = platform.clone();
        let job = tokio::spawn(async move { waiting.run(|_, now_ms| Ok(now_ms)).await });
        // The job is queued behind the held writer while a minute passes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        platform.clock.advance_ms(60_000);
        release.send(()).unwrap();

        let ran_ms = job.await.unwrap().unwrap();
        assert!(ran_ms >= queued_ms + 60_000, "{ran_ms} vs {queued_ms}");
    }

    #[tokio::test]
    async fn a_sweep_forgets_sessions_a_day_past_their_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, _, _stop) = platform_with_grant(dir.path(), |s| Arc::new(s)).await;
        platform
            .run(|repo, now_ms| {
                repo.insert_session("long_gone", "usr_a", now_ms - 2 * DAY_MS)?;
                repo.insert_session("just_ended", "usr_a", now_ms - 60_000)?;
                Ok(repo.insert_session("live", "usr_a", now_ms + DAY_MS)?)
            })
            .await
            .unwrap();

        // Ended, a session is still stored, and the core refuses it.
        let (just_ended, now_ms) = platform
            .run(|repo, now_ms| Ok((repo.session("just_ended")?, now_ms)))
            .await
            .unwrap();
        assert!(just_ended.is_some());
        assert!(session::user_of(just_ended, now_ms).is_err());

        platform.sweep_grants().await.unwrap();

        let left = platform
            .run(|repo, now_ms| {
                let older_than_a_day = repo.forget_sessions(now_ms - DAY_MS)?;
                let ended = repo.forget_sessions(now_ms)?;
                let live = repo.session("live")?.map(|s| s.user_id);
                Ok((older_than_a_day, ended, live))
            })
            .await
            .unwrap();
        assert_eq!(left, (0, 1, Some("usr_a".to_string())));
    }
}
