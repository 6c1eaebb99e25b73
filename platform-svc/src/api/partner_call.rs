//! One audited partner call. The partner on the connection must be registered and not
//! suspended; a grant token, when the RPC needs one, must resolve to an active grant bound
//! to that partner and pass every consent rule. Whatever the outcome, an audit record
//! (allowed or denied, with the reason) is appended in the same transaction as the call's
//! effects, so nothing is returned before its record is durable.
//!
//! Operations check everything before they write: the only writes a refused call leaves
//! are the audit record and, where a rule says the grant ends now, that ending.

use super::{Platform, end_grant};
use crate::consent::{self, GrantContext};
use crate::error::{ApiError, Reason};
use crate::identity::PartnerId;
use crate::model::{AuditEntry, Grant, Partner, Scope};
use crate::secret::{GRANT_TOKEN_PREFIX, hash_token, is_well_formed};
use crate::store::{IdempotentResponse, Repo, StoreResult};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// Who is calling which method, with which token: read from the request at the edge.
#[derive(Debug)]
pub struct PartnerCall {
    partner_id: String,
    method: &'static str,
    token: Option<String>,
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
            token: super::bearer_token(request),
        }
    }

    /// Runs `op` as this partner and audits the outcome.
    pub async fn run<R: Send + 'static>(
        self,
        platform: &Platform,
        op: impl FnOnce(&mut PartnerTx<'_>) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, Status> {
        let limits = platform.limits;
        let pseudonym_key = platform.store.pseudonym_key().to_string();
        let outcome = platform
            .run(move |repo, now_ms| {
                let mut audit = AuditEntry {
                    partner_id: self.partner_id.clone(),
                    method: self.method.to_string(),
                    ..AuditEntry::default()
                };
                let mut used = None;
                let result = match active_partner(repo, &self.partner_id) {
                    Ok(partner) => {
                        let mut tx = PartnerTx {
                            repo: &mut *repo,
                            now_ms,
                            partner,
                            token: self.token.as_deref(),
                            audit: &mut audit,
                            used: &mut used,
                            limits,
                            pseudonym_key: &pseudonym_key,
                        };
                        op(&mut tx)
                    }
                    Err(e) => Err(e),
                };
                if let (Ok(_), Some((grant_id, scope))) = (&result, &used) {
                    repo.touch_grant(grant_id, *scope, now_ms)?;
                }
                match &result {
                    Ok(_) => audit.decision = "allow".into(),
                    Err(e) => {
                        audit.decision = "deny".into();
                        audit.reason = e.audit_reason().into();
                    }
                }
                repo.append_audit(&audit, now_ms)?;
                tracing::debug!(method = self.method, partner = %audit.partner_id, decision = %audit.decision, reason = %audit.reason, "partner call");
                Ok(result)
            })
            .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) | Err(e) => Err(e.into()),
        }
    }
}

fn active_partner(repo: &mut dyn Repo, partner_id: &str) -> Result<Partner, ApiError> {
    match repo.partner(partner_id)? {
        None => Err(ApiError::Unauthenticated(
            Reason::PartnerUnknown,
            format!("partner {partner_id} is not registered"),
        )),
        Some(p) if p.suspended => Err(ApiError::Unauthenticated(
            Reason::PartnerSuspended,
            format!("partner {partner_id} is suspended"),
        )),
        Some(p) => Ok(p),
    }
}

/// The inside of a partner call's transaction.
pub struct PartnerTx<'a> {
    /// The store.
    pub repo: &'a mut dyn Repo,
    /// The time of the call.
    pub now_ms: i64,
    /// The calling partner, registered and active.
    pub partner: Partner,
    token: Option<&'a str>,
    audit: &'a mut AuditEntry,
    used: &'a mut Option<(String, Scope)>,
    limits: super::Limits,
    pseudonym_key: &'a str,
}

impl PartnerTx<'_> {
    /// Resolves the bearer token to a grant that permits `scope` now. Records the grant
    /// and user in the audit entry; ends the grant if a rule says it ended.
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
        self.audit.grant_id.clone_from(&grant.id);
        self.audit.user_id.clone_from(&grant.user_id);
        let owner = match self.repo.partner(&grant.partner_id)? {
            Some(owner) => owner,
            None => return Err(ApiError::Storage("grant of an unknown partner".into())),
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
        if let Err(denial) = consent::authorize(&ctx, scope, self.now_ms, &self.limits.lifetime) {
            if denial.error.audit_reason() == Reason::TokenPartnerMismatch.as_str() {
                tracing::warn!(caller = %self.partner.id, owner = %grant.partner_id, grant = %grant.id, "grant token presented by another partner");
            }
            if let Some(state) = denial.ends_grant {
                end_grant(self.repo, &grant, state, self.now_ms)?;
            }
            return Err(denial.error);
        }
        *self.used = Some((grant.id.clone(), scope));
        Ok(grant)
    }

    /// Adds a resource id to the audit record.
    pub fn touches(&mut self, resource: &str) {
        if !self.audit.resource.is_empty() {
            self.audit.resource.push(',');
        }
        self.audit.resource.push_str(resource);
    }

    /// Names the user concerned when no grant does (consent calls).
    pub fn concerns_user(&mut self, user_id: &str) {
        self.audit.user_id = user_id.to_string();
    }

    /// Names the grant concerned when no token does (consent calls).
    pub fn concerns_grant(&mut self, grant: &Grant) {
        self.audit.grant_id.clone_from(&grant.id);
        self.audit.user_id.clone_from(&grant.user_id);
    }

    /// The key for per-partner pseudonyms.
    pub fn pseudonym_key(&self) -> &str {
        self.pseudonym_key
    }

    /// Runs `make` once per idempotency key: a retry of the same request returns the stored
    /// response; the same key with a different request is refused.
    pub fn idempotent<M: prost::Message + Default>(
        &mut self,
        key: &str,
        request: &impl prost::Message,
        make: impl FnOnce(&mut Self) -> Result<M, ApiError>,
    ) -> Result<M, ApiError> {
        let request_hash = hex::encode(
            Sha256::new()
                .chain_update(self.audit.method.as_bytes())
                .chain_update(request.encode_to_vec())
                .finalize(),
        );
        if let Some(stored) = self.repo.idempotent_response(&self.partner.id, key)? {
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
            .save_idempotent_response(&self.partner.id, key, &stored)?;
        Ok(response)
    }
}

/// Reads a partner-owned grant by id; another partner's grant is reported as not found.
pub fn own_grant(tx: &mut PartnerTx<'_>, grant_id: &str) -> StoreResult<Grant> {
    match tx.repo.grant(grant_id)? {
        Some(grant) if grant.partner_id == tx.partner.id => {
            tx.concerns_grant(&grant);
            Ok(grant)
        }
        _ => Err(ApiError::not_found("grant", grant_id)),
    }
}
