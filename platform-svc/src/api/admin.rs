//! The partner-admin surface for operators: registration, retirement, suspension, access
//! review, audit export and verification. Retirement and suspension end grants in the same
//! transaction, so they are in force before the RPC returns.

use super::{Platform, convert, end_grants_of};
use crate::error::ApiError;
use crate::error::ApiResult;
use crate::validate::{self, AllFields};
use consent_core::audit::{AuditKey, ChainVerifier};
use consent_core::card::CardKind;
use consent_core::clock::timestamp;
use consent_core::denial::Reason;
use consent_core::model::{AuditEntry, Feature, GrantState, Partner, Scope, ScopeSet};
use consent_core::rules;
use consent_proto::platform::v1 as pb;
use consent_store::Repo;
use consent_tls::principal::{OperatorName, partner_spiffe_id};
use pb::partner_admin_server::PartnerAdmin;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

/// Audit records read per store call while verifying or exporting.
const AUDIT_BATCH: usize = 1000;

/// The operator named by the request's certificate (put there by the edge).
fn operator_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<OperatorName>()
        .map(|o| o.0.clone())
        .unwrap_or_default()
}

/// Appends the audit record of an operator's call that produced `response` and touched
/// `resource`, and passes the response on.
fn record_operator<R>(
    repo: &mut dyn Repo,
    now_ms: i64,
    method: &str,
    operator: &str,
    (response, resource): (R, String),
) -> ApiResult<R> {
    let entry = AuditEntry {
        method: method.to_string(),
        resource: format!("operator:{operator},{resource}"),
        decision: "allow".into(),
        ..AuditEntry::default()
    };
    repo.append_audit(&entry, now_ms)?;
    Ok(response)
}

/// The partner-admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    platform: Platform,
    trust_domain: String,
    audit_key: Arc<AuditKey>,
}

impl AdminService {
    /// Serves `platform` for partners of `trust_domain`, verifying audit MACs with
    /// `audit_key`.
    pub fn new(platform: Platform, trust_domain: String, audit_key: AuditKey) -> Self {
        AdminService {
            platform,
            trust_domain,
            audit_key: Arc::new(audit_key),
        }
    }

    /// Runs `work` on the writer and appends the operator's audit record with it.
    async fn run<T, R: Send + 'static>(
        &self,
        request: &Request<T>,
        method: &'static str,
        work: impl FnOnce(&mut dyn Repo, i64) -> ApiResult<(R, String)> + Send + 'static,
    ) -> Result<Response<R>, Status> {
        let operator = operator_of(request);
        self.platform
            .run(move |repo, now_ms| {
                let done = work(repo, now_ms)?;
                record_operator(repo, now_ms, method, &operator, done)
            })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    /// Runs read-only `work` on a snapshot beside the writer (a long read, such as
    /// verifying the whole chain, holds up no partner call), then appends the operator's
    /// audit record and replies once it is committed.
    async fn read<T, R: Send + 'static>(
        &self,
        request: &Request<T>,
        method: &'static str,
        work: impl FnOnce(&mut dyn Repo, i64) -> ApiResult<(R, String)> + Send + 'static,
    ) -> Result<Response<R>, Status> {
        let operator = operator_of(request);
        self.platform
            .read_then_run(work, move |repo, now_ms, done| {
                record_operator(repo, now_ms, method, &operator, done)
            })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    fn partner_view(&self, repo: &mut dyn Repo, id: &str) -> ApiResult<pb::Partner> {
        let partner = repo
            .partner(id)?
            .ok_or_else(|| ApiError::not_found("partner", id))?;
        let features = repo.features_of(id)?;
        Ok(convert::partner(
            &partner,
            &features,
            partner_spiffe_id(&self.trust_domain, id),
        ))
    }
}

/// Most features one registration may hold; more are added with `RegisterFeature`.
const MAX_FEATURES: usize = 32;

/// Every scope: what a feature's fields are checked against before its partner's allowed
/// scopes are known.
fn any_scope() -> ScopeSet {
    ScopeSet::of(&Scope::ALL)
}

fn feature_from(
    field: &str,
    partner_id: &str,
    allowed: ScopeSet,
    f: &pb::Feature,
) -> Result<Feature, ApiError> {
    let scopes = validate::scopes(&format!("{field}.scopes"), &f.scopes);
    let card_kinds = validate::card_kinds(&format!("{field}.card_kinds"), &f.card_kinds);
    let together = match (&scopes, &card_kinds) {
        (Ok(scopes), Ok(card_kinds)) => checked_together(field, *scopes, card_kinds, allowed),
        _ => Ok(()),
    };
    let (_, _, scopes, card_kinds, ()) = (
        validate::name(&format!("{field}.name"), &f.name),
        validate::text(&format!("{field}.description"), &f.description, 512),
        scopes,
        card_kinds,
        together,
    )
        .all()?;
    Ok(Feature {
        partner_id: partner_id.to_string(),
        name: f.name.clone(),
        description: f.description.clone(),
        scopes,
        retired: false,
        card_kinds,
    })
}

/// What a feature's scopes and card kinds mean together, each bad one named: at least one
/// scope, each one its partner is `allowed`, and cards only from a feature that sends
/// messages.
fn checked_together(
    field: &str,
    scopes: ScopeSet,
    card_kinds: &[CardKind],
    allowed: ScopeSet,
) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    if let Some(problem) = consent_core::card::declare_problem(scopes, card_kinds) {
        violations.push(FieldViolation::new(format!("{field}.card_kinds"), problem));
    }
    if scopes.is_empty() {
        violations.push(FieldViolation::new(
            format!("{field}.scopes"),
            "must name at least one scope",
        ));
    }
    let beyond = rules::scopes_not_allowed(scopes, allowed);
    if !beyond.is_empty() {
        violations.push(FieldViolation {
            field: format!("{field}.scopes"),
            description: format!("{} not allowed for this partner", beyond.names()),
            reason: Reason::ScopeNotAllowed.as_str().into(),
            localized_message: None,
        });
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

macro_rules! method {
    ($name:literal) => {
        concat!("/consent.platform.v1.PartnerAdmin/", $name)
    };
}

#[tonic::async_trait]
impl PartnerAdmin for AdminService {
    async fn register_partner(
        &self,
        request: Request<pb::RegisterPartnerRequest>,
    ) -> Result<Response<pb::Partner>, Status> {
        let r = request.get_ref().clone();
        let allowed = validate::scopes("allowed_scopes", &r.allowed_scopes).and_then(|allowed| {
            if allowed.is_empty() {
                Err(ApiError::invalid(
                    "allowed_scopes",
                    "must name at least one scope",
                ))
            } else {
                Ok(allowed)
            }
        });
        // With the allowed scopes themselves bad, the features' fields are still checked.
        let features_may_ask = allowed.as_ref().map_or(any_scope(), |allowed| *allowed);
        let features = validate::at_most("features", &r.features, MAX_FEATURES, "features")
            .and_then(|()| {
                let names: Vec<&str> = r.features.iter().map(|f| f.name.as_str()).collect();
                validate::each(r.features.iter().enumerate().map(|(i, f)| {
                    let field = format!("features[{i}]");
                    let once = match validate::name("", &f.name) {
                        Ok(_) => validate::not_before(&names, i, &format!("{field}.name")),
                        // A name that is none is refused as such (feature_from), not as a
                        // repeat.
                        Err(_) => Ok(()),
                    };
                    Ok((
                        feature_from(&field, &r.partner_id, features_may_ask, f),
                        once,
                    )
                        .all()?
                        .0)
                }))
            });
        let (_, _, allowed, redirect_uris, features) = (
            validate::name("partner_id", &r.partner_id),
            validate::text("display_name", &r.display_name, 64),
            allowed,
            validate::redirect_uris("redirect_uris", &r.redirect_uris),
            features,
        )
            .all()?;
        let this = self.clone();
        self.run(&request, method!("RegisterPartner"), move |repo, now_ms| {
            let partner = Partner {
                id: r.partner_id.clone(),
                display_name: r.display_name,
                allowed_scopes: allowed,
                suspended: false,
                blocked: false,
                redirect_uris,
            };
            repo.insert_partner(&partner, now_ms)?;
            for feature in &features {
                repo.insert_feature(feature)?;
            }
            Ok((this.partner_view(repo, &partner.id)?, partner.id))
        })
        .await
    }

    async fn register_feature(
        &self,
        request: Request<pb::RegisterFeatureRequest>,
    ) -> Result<Response<pb::Partner>, Status> {
        let r = request.get_ref().clone();
        let partner_id = validate::name("partner_id", &r.partner_id);
        let feature = r
            .feature
            .ok_or_else(|| ApiError::invalid("feature", "is required"));
        // The feature is checked against what its partner is allowed once the partner is
        // found; with no partner to look up, its fields are checked alone, and named with
        // the partner's id.
        let feature = if partner_id.is_ok() {
            feature
        } else {
            let checked_alone = feature.and_then(|f| {
                feature_from("feature", &r.partner_id, any_scope(), &f)?;
                Ok(f)
            });
            Ok((partner_id, checked_alone).all()?.1)
        };
        let this = self.clone();
        self.run(&request, method!("RegisterFeature"), move |repo, _| {
            let partner = repo
                .partner(&r.partner_id)?
                .ok_or_else(|| ApiError::not_found("partner", &r.partner_id))?;
            let feature = feature_from("feature", &partner.id, partner.allowed_scopes, &feature?)?;
            repo.insert_feature(&feature)?;
            Ok((
                this.partner_view(repo, &partner.id)?,
                format!("{}/{}", partner.id, feature.name),
            ))
        })
        .await
    }

    async fn retire_feature(
        &self,
        request: Request<pb::RetireFeatureRequest>,
    ) -> Result<Response<pb::RetireFeatureResponse>, Status> {
        let r = request.get_ref().clone();
        (
            validate::name("partner_id", &r.partner_id),
            validate::name("feature", &r.feature),
        )
            .all()?;
        self.run(&request, method!("RetireFeature"), move |repo, now_ms| {
            repo.feature(&r.partner_id, &r.feature)?.ok_or_else(|| {
                ApiError::not_found("feature", format!("{}/{}", r.partner_id, r.feature))
            })?;
            repo.retire_feature(&r.partner_id, &r.feature)?;
            let grants_ended = end_grants_of(
                repo,
                &r.partner_id,
                Some(&r.feature),
                GrantState::Retired,
                now_ms,
            )?;
            Ok((
                pb::RetireFeatureResponse { grants_ended },
                format!("{}/{}", r.partner_id, r.feature),
            ))
        })
        .await
    }

    async fn suspend_partner(
        &self,
        request: Request<pb::SuspendPartnerRequest>,
    ) -> Result<Response<pb::SuspendPartnerResponse>, Status> {
        let partner_id = request.get_ref().partner_id.clone();
        validate::name("partner_id", &partner_id)?;
        self.run(&request, method!("SuspendPartner"), move |repo, now_ms| {
            repo.partner(&partner_id)?
                .ok_or_else(|| ApiError::not_found("partner", &partner_id))?;
            repo.suspend_partner(&partner_id)?;
            let grants_ended =
                end_grants_of(repo, &partner_id, None, GrantState::Suspended, now_ms)?;
            Ok((pb::SuspendPartnerResponse { grants_ended }, partner_id))
        })
        .await
    }

    async fn block_partner(
        &self,
        request: Request<pb::BlockPartnerRequest>,
    ) -> Result<Response<pb::Partner>, Status> {
        let pb::BlockPartnerRequest {
            partner_id,
            blocked,
        } = request.get_ref().clone();
        validate::name("partner_id", &partner_id)?;
        let this = self.clone();
        self.run(&request, method!("BlockPartner"), move |repo, _| {
            repo.partner(&partner_id)?
                .ok_or_else(|| ApiError::not_found("partner", &partner_id))?;
            repo.set_partner_blocked(&partner_id, blocked)?;
            Ok((this.partner_view(repo, &partner_id)?, partner_id))
        })
        .await
    }

    async fn get_partner(
        &self,
        request: Request<pb::GetPartnerRequest>,
    ) -> Result<Response<pb::Partner>, Status> {
        let partner_id = request.get_ref().partner_id.clone();
        validate::name("partner_id", &partner_id)?;
        let this = self.clone();
        self.read(&request, method!("GetPartner"), move |repo, _| {
            Ok((this.partner_view(repo, &partner_id)?, partner_id))
        })
        .await
    }

    async fn access_review(
        &self,
        request: Request<pb::AccessReviewRequest>,
    ) -> Result<Response<pb::AccessReviewResponse>, Status> {
        let r = request.get_ref();
        let page = validate::page(r.page_size, &r.page_token)?;
        let dormant_days = match r.dormant_after_days {
            0 => 30,
            days => i64::from(days),
        };
        let attestation_due_ms = self.platform.limits.attestation_due_ms;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.read(&request, method!("AccessReview"), move |repo, now_ms| {
            let dormant_ms = dormant_days * consent_core::clock::DAY_MS;
            let mut rows = Vec::new();
            for (cursor, grant) in repo.all_grants(page)? {
                let mut findings = Vec::new();
                let finding = |kind: &str, scope: pb::Scope, detail: String| pb::ReviewFinding {
                    kind: kind.into(),
                    grant_id: grant.id.clone(),
                    partner_id: grant.partner_id.clone(),
                    user_id: grant.user_id.clone(),
                    scope: scope as i32,
                    detail,
                };
                if rules::is_dormant(&grant, now_ms, dormant_ms) {
                    findings.push(finding(
                        "DORMANT_GRANT",
                        pb::Scope::Unspecified,
                        format!("unused for {dormant_days} days or more"),
                    ));
                }
                if grant.state == GrantState::Active {
                    let used = repo.used_scopes(&grant.id)?;
                    for scope in rules::unused_scopes(&grant, used).iter() {
                        findings.push(finding(
                            "UNUSED_SCOPE",
                            scope.to_proto(),
                            format!("{} granted but never used", scope.name()),
                        ));
                    }
                }
                if rules::attestation_overdue(&grant, now_ms, attestation_due_ms) {
                    findings.push(finding(
                        "DELETION_ATTESTATION_OVERDUE",
                        pb::Scope::Unspecified,
                        "grant ended; partner has not attested deletion".into(),
                    ));
                }
                // A grant's findings are measured together, as a reply of their own, so
                // that a page never splits them.
                let group = (!findings.is_empty()).then(|| pb::AccessReviewResponse {
                    findings,
                    ..Default::default()
                });
                rows.push((cursor, group));
            }
            let (groups, next_page_token) =
                validate::fit_page_where(rows, page, reply_bytes, |group| group);
            Ok((
                pb::AccessReviewResponse {
                    findings: groups.into_iter().flat_map(|g| g.findings).collect(),
                    reviewed_at: Some(timestamp(now_ms)),
                    next_page_token,
                },
                String::new(),
            ))
        })
        .await
    }

    async fn export_audit(
        &self,
        request: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<pb::ExportAuditResponse>, Status> {
        let r = *request.get_ref();
        let (after, limit) = (
            i64::try_from(r.after_seq)
                .map_err(|_| ApiError::invalid("after_seq", "is out of range")),
            match r.limit {
                0 => Ok(AUDIT_BATCH),
                n if n as usize <= AUDIT_BATCH => Ok(n as usize),
                _ => Err(ApiError::invalid(
                    "limit",
                    format!("must be 0 to {AUDIT_BATCH}"),
                )),
            },
        )
            .all()?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.read(&request, method!("ExportAudit"), move |repo, _| {
            let records = repo.audit_records(after, limit)?;
            let head = repo.audit_head()?;
            // Cut to fit the reply limit; the caller goes on after the last record it got.
            let rows = records.into_iter().map(|r| (r.seq, r)).collect();
            let page = consent_store::Page { after, limit };
            let (records, _) =
                validate::fit_page(rows, page, reply_bytes, |r| convert::audit_record(&r));
            Ok((
                pb::ExportAuditResponse {
                    records,
                    head_seq: head
                        .as_ref()
                        .map_or(0, |h| u64::try_from(h.seq).unwrap_or(0)),
                    head_hash: head.map(|h| h.hash).unwrap_or_default(),
                },
                format!("after:{after}"),
            ))
        })
        .await
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let r = request.get_ref().clone();
        let checkpoint = i64::try_from(r.checkpoint_seq)
            .map_err(|_| Status::from(ApiError::invalid("checkpoint_seq", "is out of range")))?;
        let key = Arc::clone(&self.audit_key);
        self.read(&request, method!("VerifyAudit"), move |repo, _| {
            let mut verifier = ChainVerifier::new(&key);
            let mut after = 0;
            loop {
                let batch = repo.audit_records(after, AUDIT_BATCH)?;
                let Some(last) = batch.last() else { break };
                after = last.seq;
                if !batch.iter().all(|record| verifier.push(record)) {
                    break;
                }
            }
            if checkpoint > 0 {
                let found = repo.audit_record(checkpoint)?;
                verifier.check_checkpoint(checkpoint, &r.checkpoint_hash, found.as_ref());
            }
            let result = verifier.finish();
            let (first_bad_seq, problem) =
                result.first_bad.map_or((0, String::new()), |(seq, why)| {
                    (u64::try_from(seq).unwrap_or(0), why)
                });
            metrics::gauge!("consent_audit_chain_intact", "check" => "full")
                .set(f64::from(u8::from(first_bad_seq == 0)));
            Ok((
                pb::VerifyAuditResponse {
                    ok: first_bad_seq == 0,
                    records_checked: result.checked,
                    first_bad_seq,
                    problem,
                },
                String::new(),
            ))
        })
        .await
    }
}
