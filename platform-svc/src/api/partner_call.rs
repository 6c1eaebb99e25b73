//! One audited partner call, on one rule: **decide → act → append the audit record →
//! commit → reply**. No decision, allowed or refused, is answered before its record is
//! durable; a call the store fails is answered `INTERNAL` with nothing of it committed.
//!
//! The partner on the connection must be registered and not suspended or blocked (either
//! may still wind down: [`PartnerCall::winding_down`]); a grant token, when
//! the RPC needs one, must resolve to an active grant bound to that partner and pass every
//! rule of [`consent_core::rules`]. Whatever the outcome, the call's audit record (allowed
//! or denied, with the reason) is appended in the same transaction as the call's effects.
//!
//! There are two ways through, one per kind of call:
//!
//! - A call that changes data ([`PartnerCall::run`]) runs whole on the store's writer, in
//!   one transaction: decide, act, record.
//! - A call that only reads ([`PartnerCall::read`]) decides and reads on a snapshot of
//!   committed data beside the writer, so reads do not queue behind writes. The reader
//!   then hands the outcome straight to the writer, which records the grant's use and the
//!   audit record in one transaction; the call replies only once that commits. Before it
//!   records an allowed read, the writer checks that the grant and partner are still
//!   active and that the grant's time has not run out by the writer's clock: if a
//!   revocation committed while the read was in flight, or the grant expired or lapsed
//!   meanwhile, the writer decides the call again in that transaction (and refuses it), so
//!   the audit chain never shows an allowed use after the grant ended.
//!
//! Operations check everything before they write: the only writes a refused call leaves
//! are its audit record and, where a rule says the grant ends now, that ending.

use super::{Limits, Platform, end_grant};
use crate::error::{ApiError, ApiResult};
use consent_core::denial::Reason;
use consent_core::model::{AuditEntry, Grant, GrantState, Partner, ReadByOthersApp, Scope};
use consent_core::ownership;
use consent_core::partner_view::PartnerView;
use consent_core::rules::{self, GrantContext};
use consent_core::secret::{GRANT_TOKEN_PREFIX, SecretKey, hash_token, is_well_formed};
use consent_store::{IdempotentResponse, Repo, StoreError, StoreResult};
use consent_tls::principal::PartnerId;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Status};

/// Who is calling which method, with which token: read from the request at the edge.
#[derive(Debug, Clone)]
pub struct PartnerCall {
    partner_id: String,
    method: &'static str,
    token: Option<String>,
    /// Whether the partner may make this call at all.
    admits: fn(&str, Option<Partner>) -> Result<Partner, consent_core::denial::Refusal>,
}

/// What a call leaves for the writer besides its own effects.
#[derive(Debug, Default)]
struct Effects {
    audit: AuditEntry,
    /// The grant used and for which scope, once authorized.
    used: Option<GrantUse>,
    /// A grant a rule says has ended, and how.
    ending: Option<(String, GrantState)>,
    /// Messages of people other than the granting user that the reply carries, counted
    /// per person and thread; each person is told in their access log.
    reads_of_others: BTreeMap<(String, String), u32>,
}

/// A use of a grant for a scope.
#[derive(Debug)]
struct GrantUse {
    grant_id: String,
    scope: Scope,
    /// False when the grant already shows this scope used and a last use within
    /// [`USE_RESOLUTION_MS`]: writing the use again would change nothing anyone reads.
    record: bool,
}

/// How long a write's idempotency key holds: a retry within it returns the first result.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// A grant's last use is kept to this resolution; its expiry by inactivity is counted in days.
const USE_RESOLUTION_MS: i64 = 1000;

/// One attempt at a call: its result and what the writer must record for it.
struct Attempt<R> {
    result: ApiResult<R>,
    effects: Effects,
}

impl PartnerCall {
    /// Reads the partner (put there by the edge interceptor) and any bearer token.
    pub fn new<T>(request: &Request<T>, method: &'static str) -> Self {
        PartnerCall {
            partner_id: request
                .extensions()
                .get::<PartnerId>()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            method,
            token: consent_tls::https::bearer_token(request),
            admits: rules::partner_may_call,
        }
    }

    /// A call a suspended or blocked partner may still make, to wind down
    /// (`rules::partner_may_wind_down`): its event stream and its deletion attestations.
    pub fn winding_down<T>(request: &Request<T>, method: &'static str) -> Self {
        PartnerCall {
            admits: rules::partner_may_wind_down,
            ..PartnerCall::new(request, method)
        }
    }

    /// Runs `op` as this partner on the writer and audits the outcome.
    pub async fn run<R: Send + 'static>(
        self,
        platform: &Platform,
        op: impl FnOnce(&mut PartnerTx<'_>) -> ApiResult<R> + Send + 'static,
    ) -> Result<R, Status> {
        let limits = platform.limits;
        let pseudonym_key = Arc::clone(&platform.pseudonym_key);
        let outcome = platform
            .run(move |repo, now_ms| {
                let attempt = self.attempt(repo, now_ms, limits, &pseudonym_key, op);
                Ok(settle(repo, now_ms, attempt)?)
            })
            .await;
        match outcome {
            Ok(result) => result.map_err(Into::into),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `op`, which must only read, as this partner on a snapshot beside the writer,
    /// then has the writer record the grant's use and the audit record, and replies once
    /// they are committed. If the grant or partner ended while `op` ran, or the grant is
    /// due to end by the time the writer records it, the writer decides the call again,
    /// in the transaction that records it.
    pub async fn read<R: Send + 'static>(
        self,
        platform: &Platform,
        op: impl Fn(&mut PartnerTx<'_>) -> ApiResult<R> + Send + Sync + 'static,
    ) -> Result<R, Status> {
        let limits = platform.limits;
        let key = Arc::clone(&platform.pseudonym_key);
        let caller = self.partner_id.clone();
        let decide = Arc::new(move |repo: &mut dyn Repo, now_ms: i64| {
            self.attempt(repo, now_ms, limits, &key, &op)
        });
        let decide_again = Arc::clone(&decide);
        let settled = platform
            .read_then_run(
                move |repo, now_ms| Ok(decide(repo, now_ms)),
                move |repo, now_ms, attempt| {
                    let ended = !still_holds(repo, &caller, now_ms, &limits, &attempt)?;
                    let attempt = if ended {
                        decide_again(repo, now_ms)
                    } else {
                        attempt
                    };
                    Ok(settle(repo, now_ms, attempt)?)
                },
            )
            .await;
        match settled {
            Ok(result) => result.map_err(Into::into),
            Err(e) => Err(e.into()),
        }
    }

    fn attempt<R>(
        &self,
        repo: &mut dyn Repo,
        now_ms: i64,
        limits: Limits,
        pseudonym_key: &SecretKey,
        op: impl FnOnce(&mut PartnerTx<'_>) -> ApiResult<R>,
    ) -> Attempt<R> {
        let mut effects = Effects {
            audit: AuditEntry {
                partner_id: self.partner_id.clone(),
                method: self.method.to_string(),
                ..AuditEntry::default()
            },
            ..Effects::default()
        };
        let admitted = repo
            .partner(&self.partner_id)
            .map_err(ApiError::from)
            .and_then(|partner| Ok((self.admits)(&self.partner_id, partner)?));
        let result = admitted.and_then(|partner| {
            op(&mut PartnerTx {
                repo,
                now_ms,
                partner,
                token: self.token.as_deref(),
                effects: &mut effects,
                limits,
                pseudonym_key,
                view: std::cell::OnceCell::new(),
            })
        });
        Attempt { result, effects }
    }
}

/// Whether what allowed a read `caller` made on a snapshot still holds on the writer at
/// `now_ms`: the partner may still call, and the grant it used is still active and not due
/// to end by time. A refusal holds as it is. When this is false the read is decided again,
/// in the transaction that records it, so the audit chain never shows an allowed use after
/// the change (or the instant) that ended it.
fn still_holds<R>(
    repo: &mut dyn Repo,
    caller: &str,
    now_ms: i64,
    limits: &Limits,
    attempt: &Attempt<R>,
) -> StoreResult<bool> {
    if attempt.result.is_err() {
        return Ok(true);
    }
    if rules::partner_may_call(caller, repo.partner(caller)?).is_err() {
        return Ok(false);
    }
    Ok(match &attempt.effects.used {
        Some(used) => repo.grant(&used.grant_id)?.is_some_and(|g| {
            g.state == GrantState::Active
                && rules::ending_due(&g, now_ms, &limits.lifetime).is_none()
        }),
        None => true,
    })
}

impl Effects {
    /// Fills in the audit record's decision; a refused call leaves no use of its grant.
    fn decide(&mut self, outcome: Result<(), &ApiError>) {
        match outcome {
            Ok(()) => self.audit.decision = "allow".into(),
            Err(e) => {
                self.audit.decision = "deny".into();
                self.audit.reason = e.audit_reason().into();
                self.used = None;
            }
        }
    }
}

/// Decides an attempt's audit record and writes what it leaves besides its own effects.
/// A call the store failed takes back everything it wrote: its transaction's job fails,
/// and its caller hears `INTERNAL` (or `UNAVAILABLE`, when the store could not be reached)
/// with nothing of the call committed.
fn settle<R>(repo: &mut dyn Repo, now_ms: i64, attempt: Attempt<R>) -> StoreResult<ApiResult<R>> {
    let Attempt {
        result,
        mut effects,
    } = attempt;
    match result {
        Err(ApiError::Storage(detail)) => return Err(StoreError::Failed(detail)),
        Err(ApiError::Unavailable(detail)) => return Err(StoreError::Unavailable(detail)),
        _ => {}
    }
    effects.decide(result.as_ref().map(drop));
    record(repo, now_ms, &effects)?;
    Ok(result)
}

/// Writes a decided call's grant ending, its grant's use and its audit record.
fn record(repo: &mut dyn Repo, now_ms: i64, effects: &Effects) -> StoreResult<()> {
    if let Some((grant_id, state)) = &effects.ending
        && let Some(grant) = repo.grant(grant_id)?
    {
        end_grant(repo, &grant, *state, now_ms)?;
    }
    if let Some(used) = effects.used.as_ref().filter(|u| u.record) {
        repo.touch_grant(&used.grant_id, used.scope, now_ms)?;
    }
    if effects.audit.decision == "allow" {
        for ((user_id, thread_id), messages) in &effects.reads_of_others {
            repo.record_read_by_others_app(&ReadByOthersApp {
                user_id: user_id.clone(),
                partner_id: effects.audit.partner_id.clone(),
                thread_id: thread_id.clone(),
                messages: *messages,
                at_ms: now_ms,
            })?;
        }
    }
    repo.append_audit(&effects.audit, now_ms)?;
    log_decided(&effects.audit);
    Ok(())
}

/// Logs a partner call's recorded decision (at debug level).
pub(super) fn log_decided(audit: &AuditEntry) {
    tracing::debug!(method = %audit.method, partner = %audit.partner_id, decision = %audit.decision, reason = %audit.reason, "partner call");
}

/// The inside of a partner call's transaction.
pub struct PartnerTx<'a> {
    /// The store.
    pub repo: &'a mut dyn Repo,
    /// The time of the call.
    pub now_ms: i64,
    /// The calling partner, registered and admitted to this call (active, or winding down
    /// while suspended or blocked).
    pub partner: Partner,
    token: Option<&'a str>,
    effects: &'a mut Effects,
    limits: Limits,
    pseudonym_key: &'a SecretKey,
    /// The calling partner's view, made the first time it is asked for.
    view: std::cell::OnceCell<PartnerView<'a>>,
}

impl<'a> PartnerTx<'a> {
    /// Resolves the bearer token to a grant that permits `scope` now. Records the grant
    /// and user in the audit entry, and the grant's ending if a rule says it ended.
    pub fn authorize(&mut self, scope: Scope) -> Result<Grant, ApiError> {
        let token = self.token.ok_or_else(|| {
            ApiError::Unauthenticated(
                Reason::TokenMissing,
                "send 'authorization: Bearer <grant token>'".into(),
            )
        })?;
        if !is_well_formed(token, GRANT_TOKEN_PREFIX) {
            return Err(ApiError::Unauthenticated(
                Reason::TokenInvalid,
                "grant token is malformed".into(),
            ));
        }
        let grant = self
            .repo
            .grant_by_token(&hash_token(token))?
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    Reason::TokenInvalid,
                    "grant token is unknown or ended".into(),
                )
            })?;
        self.effects.audit.grant_id.clone_from(&grant.id);
        self.effects.audit.user_id.clone_from(&grant.user_id);
        // Usually the caller owns the grant and is already loaded.
        let owner = if grant.partner_id == self.partner.id {
            self.partner.clone()
        } else {
            match self.repo.partner(&grant.partner_id)? {
                Some(owner) => owner,
                None => return Err(ApiError::Storage("grant of an unknown partner".into())),
            }
        };
        let feature = self
            .repo
            .feature(&grant.partner_id, &grant.feature)?
            .ok_or_else(|| ApiError::Storage("grant of an unknown feature".into()))?;
        let ctx = GrantContext {
            caller_partner_id: &self.partner.id,
            grant: &grant,
            partner: &owner,
            feature: &feature,
        };
        if let Err(denial) = rules::authorize(&ctx, scope, self.now_ms, &self.limits.lifetime) {
            if denial.denied.reason == Reason::TokenPartnerMismatch {
                tracing::warn!(caller = %self.partner.id, owner = %grant.partner_id, grant = %grant.id, "grant token presented by another partner");
            }
            if let Some(state) = denial.ends_grant {
                self.effects.ending = Some((grant.id.clone(), state));
            }
            return Err(denial.denied.into());
        }
        let recent = grant
            .last_used_ms
            .is_some_and(|last| self.now_ms - last < USE_RESOLUTION_MS);
        self.effects.used = Some(GrantUse {
            grant_id: grant.id.clone(),
            scope,
            record: !recent || !self.repo.used_scopes(&grant.id)?.contains(scope),
        });
        Ok(grant)
    }

    /// Adds a resource id to the audit record.
    pub fn touches(&mut self, resource: &str) {
        if !self.effects.audit.resource.is_empty() {
            self.effects.audit.resource.push(',');
        }
        self.effects.audit.resource.push_str(resource);
    }

    /// Notes that the reply carries a message of `sender_id` in `thread_id`: when that is
    /// another person's unredacted message, they will see the read in their access log.
    pub fn hands_over(&mut self, grant: &Grant, sender_id: &str, thread_id: &str, redacted: bool) {
        if rules::reads_another_person(grant, sender_id, redacted) {
            let key = (sender_id.to_string(), thread_id.to_string());
            *self.effects.reads_of_others.entry(key).or_default() += 1;
        }
    }

    /// Notes that a refusal ends `grant_id` in `state` (with the refusal, in its
    /// transaction).
    pub fn ends_grant(&mut self, grant_id: &str, state: GrantState) {
        self.effects.ending = Some((grant_id.to_string(), state));
    }

    /// Names the user concerned when no grant does (consent calls).
    pub fn concerns_user(&mut self, user_id: &str) {
        self.effects.audit.user_id = user_id.to_string();
    }

    /// Names the grant concerned when no token does (consent calls).
    pub fn concerns_grant(&mut self, grant: &Grant) {
        self.effects.audit.grant_id.clone_from(&grant.id);
        self.effects.audit.user_id.clone_from(&grant.user_id);
    }

    /// What the calling partner sees of people, threads and messages: its keys are
    /// derived once a call, and each caller gets a copy.
    pub fn view(&self) -> PartnerView<'a> {
        self.view
            .get_or_init(|| PartnerView::new(self.pseudonym_key, &self.partner.id))
            .clone()
    }

    /// The largest reply the transport sends.
    pub fn reply_bytes(&self) -> usize {
        self.limits.reply_bytes
    }

    /// Runs `make` once per idempotency key of the call's grant within
    /// [`IDEMPOTENCY_WINDOW_MS`]: a retry of the same request returns the stored response;
    /// the same key with a different request is refused. Under another grant (another
    /// user's token), or once the window has passed, the key starts a new request.
    pub fn idempotent<M: prost::Message + Default>(
        &mut self,
        key: &str,
        request: &impl prost::Message,
        make: impl FnOnce(&mut Self) -> Result<M, ApiError>,
    ) -> Result<M, ApiError> {
        let request_hash = hex::encode(
            Sha256::new()
                .chain_update(self.effects.audit.method.as_bytes())
                .chain_update(request.encode_to_vec())
                .finalize(),
        );
        let grant_id = self.effects.audit.grant_id.clone();
        let since_ms = self.now_ms - IDEMPOTENCY_WINDOW_MS;
        if let Some(stored) = self.repo.idempotent_response(&grant_id, key, since_ms)? {
            if stored.request_hash != request_hash {
                return Err(ApiError::AlreadyExists(
                    Reason::IdempotencyKeyReused,
                    "idempotency key was used with a different request".into(),
                ));
            }
            return M::decode(stored.response.as_slice())
                .map_err(|e| ApiError::Storage(format!("stored response: {e}")));
        }
        let response = make(self)?;
        let stored = IdempotentResponse {
            request_hash,
            response: response.encode_to_vec(),
        };
        self.repo
            .save_idempotent_response(&grant_id, key, &stored, self.now_ms)?;
        Ok(response)
    }
}

/// Reads a partner-owned grant by id; another partner's grant is reported as not found.
pub fn own_grant(tx: &mut PartnerTx<'_>, grant_id: &str) -> ApiResult<Grant> {
    let grant = tx.repo.grant(grant_id)?;
    let grant = ownership::partners_grant(&tx.partner.id, grant_id, grant)?;
    tx.concerns_grant(&grant);
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use consent_store::{StoreError, hold_writer, read_blocking, transact};
    use std::time::Duration;
    use tonic_types::StatusExt;

    async fn platform_with_grant(dir: &std::path::Path) -> (Platform, String) {
        let (platform, token, _) =
            crate::api::testing::platform_with_grant(dir, |store| Arc::new(store)).await;
        (platform, token)
    }

    fn call(token: &str) -> PartnerCall {
        PartnerCall {
            partner_id: "music".into(),
            method: "/test/Read",
            token: Some(token.into()),
            admits: rules::partner_may_call,
        }
    }

    fn audit_decisions(platform: &Platform) -> Vec<(String, String)> {
        read_blocking(platform.store.as_ref(), |repo| {
            Ok::<_, StoreError>(
                repo.audit_records(0, 100)?
                    .into_iter()
                    .map(|r| (r.entry.decision, r.entry.reason))
                    .collect(),
            )
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_revocation_committed_during_a_read_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, token) = platform_with_grant(dir.path()).await;
        // The revocation commits a second after the read began, while the read is on its
        // snapshot, after it authorized.
        let (store, clock) = (Arc::clone(&platform.store), Arc::clone(&platform.clock));
        let revoke = std::sync::Once::new();
        let began_ms = platform.clock.now_ms();
        let refused = call(&token)
            .read(&platform, move |tx| {
                let grant = tx.authorize(Scope::ThreadsRead)?;
                revoke.call_once(|| {
                    clock.advance_ms(1_000);
                    let revoked_ms = clock.now_ms();
                    transact(store.as_ref(), move |repo| {
                        repo.end_grant("grt_1", GrantState::Revoked, revoked_ms)
                    })
                    .unwrap();
                });
                Ok(grant.id)
            })
            .await
            .unwrap_err();

        assert_refused(&refused, "GRANT_REVOKED");
        assert_eq!(
            audit_decisions(&platform),
            [("deny".to_string(), "GRANT_REVOKED".to_string())],
            "one record, the refusal"
        );
        let refusal = read_blocking(platform.store.as_ref(), |repo| repo.audit_records(0, 1))
            .unwrap()
            .remove(0);
        assert!(
            refusal.at_ms >= began_ms + 1_000,
            "the refusal is dated when it was decided again, after the revocation, not when \
             the read began"
        );
    }

    #[tokio::test]
    async fn a_grant_whose_time_runs_out_during_a_read_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, token) = platform_with_grant(dir.path()).await;
        // The read authorizes on its snapshot; by the time the writer records it, the grant
        // has gone unused past the inactivity limit.
        let clock = Arc::clone(&platform.clock);
        let idle_ms = platform.limits.lifetime.inactivity_lapse_ms;
        let time_passes = std::sync::Once::new();
        let refused = call(&token)
            .read(&platform, move |tx| {
                let grant = tx.authorize(Scope::ThreadsRead)?;
                time_passes.call_once(|| clock.advance_ms(idle_ms));
                Ok(grant.id)
            })
            .await
            .unwrap_err();

        assert_refused(&refused, "GRANT_LAPSED");
        assert_eq!(
            audit_decisions(&platform),
            [("deny".to_string(), "GRANT_LAPSED".to_string())],
            "one record, the refusal, and no allowed use after the grant's time ran out"
        );
        let grant = read_blocking(platform.store.as_ref(), |repo| repo.grant("grt_1"))
            .unwrap()
            .unwrap();
        assert_eq!(grant.state, GrantState::Lapsed);
    }

    #[tokio::test]
    async fn an_unchanged_snapshot_is_settled_once() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, token) = platform_with_grant(dir.path()).await;
        let read = call(&token)
            .read(&platform, |tx| {
                tx.authorize(Scope::ThreadsRead).map(|g| g.id)
            })
            .await
            .unwrap();
        assert_eq!(read, "grt_1");
        assert_eq!(
            audit_decisions(&platform),
            [("allow".to_string(), String::new())]
        );
        let used =
            read_blocking(platform.store.as_ref(), |repo| repo.used_scopes("grt_1")).unwrap();
        assert!(used.contains(Scope::ThreadsRead), "the use is recorded");
    }

    #[tokio::test]
    async fn uses_are_kept_to_the_second_and_every_scope_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, token) = platform_with_grant(dir.path()).await;
        let use_grant =
            |scope| call(&token).read(&platform, move |tx| tx.authorize(scope).map(drop));
        let last_used = || {
            read_blocking(platform.store.as_ref(), |repo| {
                Ok::<_, StoreError>(repo.grant("grt_1")?.and_then(|g| g.last_used_ms))
            })
            .unwrap()
        };

        use_grant(Scope::ThreadsRead).await.unwrap();
        let first = last_used().expect("the first use is recorded");
        use_grant(Scope::ThreadsRead).await.unwrap();
        assert_eq!(
            last_used(),
            Some(first),
            "a repeat within the second is not written"
        );
        use_grant(Scope::MessagesRead).await.unwrap();
        let used =
            read_blocking(platform.store.as_ref(), |repo| repo.used_scopes("grt_1")).unwrap();
        assert!(
            used.contains(Scope::MessagesRead),
            "a new scope is recorded at once"
        );
        platform.clock.advance_ms(2 * USE_RESOLUTION_MS);
        use_grant(Scope::ThreadsRead).await.unwrap();
        assert!(
            last_used().unwrap() >= first + 2 * USE_RESOLUTION_MS,
            "a use after the resolution is written"
        );
    }

    fn assert_refused(status: &Status, reason: &str) {
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let info = status.get_error_details().error_info().cloned();
        assert_eq!(
            info.map(|i| i.reason).as_deref(),
            Some(reason),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_answered_only_once_its_record_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, token) = platform_with_grant(dir.path()).await;
        let release = hold_writer(platform.store.as_ref());

        let caller = platform.clone();
        let mut answer = tokio::spawn(async move {
            call(&token)
                .read(&caller, |tx| tx.authorize(Scope::FriendsRead).map(drop))
                .await
        });
        let early = tokio::time::timeout(Duration::from_millis(300), &mut answer).await;
        assert!(early.is_err(), "no answer while its record cannot commit");
        assert!(audit_decisions(&platform).is_empty(), "not committed yet");

        drop(release);
        let refused = answer.await.unwrap().unwrap_err();
        assert_refused(&refused, "SCOPE_MISSING");
        assert_eq!(
            audit_decisions(&platform),
            [("deny".to_string(), "SCOPE_MISSING".to_string())],
            "the record was committed before the answer"
        );
    }

    #[tokio::test]
    async fn a_refusal_that_ends_its_grant_waits_for_the_ending_to_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, token) = platform_with_grant(dir.path()).await;
        platform
            .clock
            .advance_ms(10 * 365 * consent_core::clock::DAY_MS);
        let release = hold_writer(platform.store.as_ref());

        let caller = platform.clone();
        let mut answer = tokio::spawn(async move {
            call(&token)
                .read(&caller, |tx| tx.authorize(Scope::ThreadsRead).map(drop))
                .await
        });
        let early = tokio::time::timeout(Duration::from_millis(300), &mut answer).await;
        assert!(early.is_err(), "no answer before the grant's end commits");

        drop(release);
        let refused = answer.await.unwrap().unwrap_err();
        assert_refused(&refused, "GRANT_LAPSED");
        assert_eq!(
            audit_decisions(&platform),
            [("deny".to_string(), "GRANT_LAPSED".to_string())]
        );
        let state = read_blocking(platform.store.as_ref(), |repo| {
            Ok::<_, StoreError>(repo.grant("grt_1")?.map(|g| g.state))
        });
        assert_eq!(state.unwrap(), Some(GrantState::Lapsed));
    }
}
