//! The consent surface for partners: request access, collect the token once, introspect,
//! release, watch grant events, attest deletion.

use super::Platform;
use super::convert;
use super::end_grant;
use super::event_feed::{EVENT_BATCH, EventFeed};
use super::partner_call::{PartnerCall, own_grant};
use crate::error::ApiError;
use crate::rate_limit::EventStreamSlots;
use crate::validate::{self, AllFields};
use consent_core::approval::{self, Placement};
use consent_core::authorization::{self, PushedRequest};
use consent_core::denial::Reason;
use consent_core::model::{AccessRequest, GrantState, RequestStatus};
use consent_core::ownership;
use consent_core::rules;
use consent_core::secret::{
    CODE_PREFIX, GRANT_TOKEN_PREFIX, REQUEST_URI_TOKEN_PREFIX, hash_token, is_well_formed, new_id,
    new_token,
};
use consent_proto::platform::v1 as pb;
use pb::consent_server::Consent;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

macro_rules! method {
    ($name:literal) => {
        concat!("/consent.platform.v1.Consent/", $name)
    };
}

/// The consent service.
#[derive(Debug, Clone)]
pub struct ConsentService {
    platform: Platform,
    streams: Arc<EventStreamSlots>,
    feed: Arc<EventFeed>,
    web_origin: Arc<str>,
}

impl ConsentService {
    /// Serves `platform`, with at most `streams_per_partner` event streams open per partner
    /// and the consent page at `web_origin` (`https://host:port`).
    pub fn new(platform: Platform, streams_per_partner: usize, web_origin: &str) -> Self {
        ConsentService {
            platform,
            streams: EventStreamSlots::new(streams_per_partner),
            feed: Arc::default(),
            web_origin: web_origin.into(),
        }
    }
}

#[tonic::async_trait]
impl Consent for ConsentService {
    async fn request_access(
        &self,
        request: Request<pb::RequestAccessRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let call = PartnerCall::new(&request, method!("RequestAccess"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let coverage = validate::coverage("coverage", r.coverage);
            let thread_ids =
                validate::partner_threads("thread_ids", &coverage, &r.thread_ids, &tx.view());
            let bound = (
                validate::label("binding_message", &r.binding_message, 32),
                validate::label("account_label", &r.account_label, 64),
            )
                .all();
            let (user_name, feature_name, (coverage, thread_ids), purpose, (binding, label)) = (
                validate::user_name("user_name", &r.user_name),
                validate::name("feature", &r.feature),
                (coverage, thread_ids).all(),
                validate::text("purpose", &r.purpose, 512),
                bound,
            )
                .all()?;
            let feature = tx
                .repo
                .feature(&tx.partner.id, feature_name)?
                .ok_or_else(|| ApiError::not_found("feature", feature_name))?;
            approval::may_ask_for(&feature)?;
            // A name no user has is asked all the same: the request is kept, answered and
            // expires like any other, and no one can approve it. The listed threads are
            // kept as asked; only those the user is in are ever offered.
            let user_id = tx
                .repo
                .user_by_name(user_name)?
                .map(|u| u.id)
                .unwrap_or_default();
            if !user_id.is_empty() {
                tx.concerns_user(&user_id);
            }
            let access = AccessRequest {
                id: new_id("req"),
                partner_id: tx.partner.id.clone(),
                feature: feature.name.clone(),
                user_id,
                user_name: user_name.to_string(),
                binding_message: binding.to_string(),
                account_label: label.to_string(),
                coverage,
                thread_ids,
                include_history: r.include_history,
                purpose: purpose.to_string(),
                status: RequestStatus::Pending,
                grant_id: None,
                created_ms: tx.now_ms,
            };
            let pending = tx.repo.pending_requests_from(
                &tx.partner.id,
                user_name,
                approval::request_cutoff_ms(tx.now_ms),
            )?;
            let access = match approval::place_request(&pending, &access)? {
                Placement::Existing(existing) => existing.clone(),
                Placement::New => {
                    tx.repo.insert_request(&access)?;
                    access
                }
            };
            tx.touches(&access.id);
            let view = tx.view();
            Ok(pb::AccessRequest {
                thread_ids: access.thread_ids.iter().map(|t| view.thread(t)).collect(),
                ..convert::access_request(&access, &tx.partner, &feature)
            })
        })
        .await
        .map(Response::new)
    }

    async fn exchange_request(
        &self,
        request: Request<pb::ExchangeRequestRequest>,
    ) -> Result<Response<pb::ExchangeRequestResponse>, Status> {
        let call = PartnerCall::new(&request, method!("ExchangeRequest"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let request_id = validate::id("request_id", &r.request_id)?;
            tx.touches(request_id);
            let access = ownership::partners_request(
                &tx.partner.id,
                request_id,
                tx.repo.request(request_id)?,
            )?;
            tx.concerns_user(&access.user_id);
            let grant = match &access.grant_id {
                Some(id) => tx.repo.grant(id)?,
                None => None,
            };
            let mut response = pb::ExchangeRequestResponse {
                status: approval::status_at(&access, tx.now_ms) as i32,
                grant_token: String::new(),
                grant: grant
                    .as_ref()
                    .map(|g| convert::grant_for_partner(g, &tx.view())),
            };
            if let (RequestStatus::Approved, Some(grant)) = (access.status, &grant) {
                tx.concerns_grant(grant);
                if approval::may_issue_token(&access, Some(grant)) {
                    let token = new_token(GRANT_TOKEN_PREFIX);
                    tx.repo.set_grant_token(&grant.id, &hash_token(&token))?;
                    response.grant_token = token;
                }
                tx.repo
                    .set_request_status(&access.id, RequestStatus::Exchanged, None)?;
            }
            Ok(response)
        })
        .await
        .map(Response::new)
    }

    async fn push_authorization(
        &self,
        request: Request<pb::PushAuthorizationRequest>,
    ) -> Result<Response<pb::PushAuthorizationResponse>, Status> {
        let call = PartnerCall::new(&request, method!("PushAuthorization"));
        let r = request.into_inner();
        let web_origin = Arc::clone(&self.web_origin);
        call.run(&self.platform, move |tx| {
            let coverage = validate::coverage("coverage", r.coverage);
            let thread_ids =
                validate::partner_threads("thread_ids", &coverage, &r.thread_ids, &tx.view());
            let (feature_name, (coverage, thread_ids), purpose, redirect_uri, state, challenge) = (
                validate::name("feature", &r.feature),
                (coverage, thread_ids).all(),
                validate::text("purpose", &r.purpose, 512),
                validate::checked(
                    "redirect_uri",
                    &r.redirect_uri,
                    authorization::redirect_uri_problem,
                ),
                validate::checked("state", &r.state, authorization::state_problem),
                validate::checked("code_challenge", &r.code_challenge, |c| {
                    authorization::challenge_problem(&r.code_challenge_method, c)
                }),
            )
                .all()?;
            authorization::redirect_registered(&tx.partner.redirect_uris, redirect_uri)?;
            let feature = tx
                .repo
                .feature(&tx.partner.id, feature_name)?
                .ok_or_else(|| ApiError::not_found("feature", feature_name))?;
            approval::may_ask_for(&feature)?;
            let request_uri = format!(
                "{}{}",
                authorization::REQUEST_URI_PREFIX,
                new_token(REQUEST_URI_TOKEN_PREFIX)
            );
            let pushed = PushedRequest {
                partner_id: tx.partner.id.clone(),
                feature: feature.name,
                coverage,
                thread_ids,
                include_history: r.include_history,
                purpose: purpose.to_string(),
                redirect_uri: redirect_uri.to_string(),
                state: state.to_string(),
                code_challenge: challenge.to_string(),
                expires_ms: tx.now_ms + authorization::REQUEST_URI_TTL_MS,
                access_request_id: None,
            };
            tx.repo
                .insert_pushed_request(&hash_token(&request_uri), &pushed)?;
            tx.touches(&pushed.feature);
            Ok(pb::PushAuthorizationResponse {
                authorize_url: format!(
                    "{web_origin}/authorize?client_id={}&request_uri={request_uri}",
                    tx.partner.id
                ),
                request_uri,
                expires_in: authorization::REQUEST_URI_TTL_MS / 1000,
            })
        })
        .await
        .map(Response::new)
    }

    async fn exchange_code(
        &self,
        request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::ExchangeRequestResponse>, Status> {
        let call = PartnerCall::new(&request, method!("ExchangeCode"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            // Only the code's form is checked before it is looked up: a code exchanged before
            // revokes its grant whatever verifier and redirect URI come with it, and those
            // are judged against the code's own (`may_redeem`).
            let code = validate::checked("code", &r.code, |c| {
                (!is_well_formed(c, CODE_PREFIX)).then_some("is not a code the platform issued")
            })?;
            let (verifier, redirect_uri) = (r.code_verifier.as_str(), r.redirect_uri.as_str());
            let code_hash = hash_token(code);
            let stored = tx.repo.code(&code_hash)?;
            // The record names the code's grant and user even when another partner presents
            // the code, so that the user sees the attempt in their access log (the caller is
            // told only that the code is unknown).
            let grant = match &stored {
                Some(code) => tx.repo.grant(&code.grant_id)?,
                None => None,
            };
            if let Some(grant) = &grant {
                tx.concerns_grant(grant);
            }
            let grant = grant.filter(|g| g.partner_id == tx.partner.id);
            let redeemed = authorization::may_redeem(
                stored.as_ref(),
                &tx.partner.id,
                verifier,
                redirect_uri,
                tx.now_ms,
            );
            if let Err(refusal) = redeemed {
                if let Some((grant_id, state)) = &refusal.ends_grant {
                    tx.ends_grant(grant_id, *state);
                }
                return Err(refusal.denied.into());
            }
            let grant =
                grant.ok_or_else(|| ApiError::Storage("code of an unknown grant".into()))?;
            rules::still_active(&grant)?;
            tx.repo.redeem_code(&code_hash, tx.now_ms)?;
            let token = new_token(GRANT_TOKEN_PREFIX);
            tx.repo.set_grant_token(&grant.id, &hash_token(&token))?;
            Ok(pb::ExchangeRequestResponse {
                status: RequestStatus::Approved as i32,
                grant_token: token,
                grant: Some(convert::grant_for_partner(&grant, &tx.view())),
            })
        })
        .await
        .map(Response::new)
    }

    async fn introspect_grants(
        &self,
        request: Request<pb::IntrospectGrantsRequest>,
    ) -> Result<Response<pb::IntrospectGrantsResponse>, Status> {
        let call = PartnerCall::new(&request, method!("IntrospectGrants"));
        let r = request.into_inner();
        call.read(&self.platform, move |tx| {
            let (ids, page) = (
                validate::ids("grant_ids", &r.grant_ids, 0, 20),
                validate::partner_page(r.page_size, &r.page_token, &tx.view()),
            )
                .all()?;
            let rows = if ids.is_empty() {
                tx.repo
                    .grants_of_partner(&tx.partner.id, r.active_only, page)?
            } else {
                let mut named = Vec::new();
                for id in &ids {
                    let grant = ownership::partners_grant(&tx.partner.id, id, tx.repo.grant(id)?);
                    if let Ok(grant) = grant
                        && (!r.active_only || grant.state == GrantState::Active)
                    {
                        named.push((0, grant));
                    }
                }
                named
            };
            let (grants, mut next_page_token) = {
                let view = tx.view();
                validate::fit_page(rows, page, tx.reply_bytes(), |grant| {
                    convert::grant_for_partner(&grant, &view)
                })
            };
            if !ids.is_empty() {
                next_page_token.clear();
            }
            Ok(pb::IntrospectGrantsResponse {
                grants,
                next_page_token: tx.view().page_token(&next_page_token),
            })
        })
        .await
        .map(Response::new)
    }

    async fn release_grant(
        &self,
        request: Request<pb::ReleaseGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let call = PartnerCall::new(&request, method!("ReleaseGrant"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let grant_id = validate::id("grant_id", &r.grant_id)?;
            let grant = own_grant(tx, grant_id)?;
            end_grant(tx.repo, &grant, GrantState::Released, tx.now_ms)?;
            let grant = own_grant(tx, grant_id)?;
            Ok(convert::grant_for_partner(&grant, &tx.view()))
        })
        .await
        .map(Response::new)
    }

    type WatchGrantEventsStream = ReceiverStream<Result<pb::GrantEvent, Status>>;

    async fn watch_grant_events(
        &self,
        request: Request<pb::WatchGrantEventsRequest>,
    ) -> Result<Response<Self::WatchGrantEventsStream>, Status> {
        let method = method!("WatchGrantEvents");
        let call = PartnerCall::winding_down(&request, method);
        let after_sequence = request.get_ref().after_sequence;
        let streams = Arc::clone(&self.streams);
        let (partner_id, after, slot) = call
            .run(&self.platform, move |tx| {
                let after = i64::try_from(after_sequence)
                    .map_err(|_| ApiError::invalid("after_sequence", "is out of range"))?;
                let slot = streams.acquire(&tx.partner.id).ok_or_else(|| {
                    ApiError::ResourceExhausted(
                        Reason::TooManyStreams,
                        "this partner holds as many event streams open as it may".into(),
                    )
                })?;
                Ok((tx.partner.id.clone(), after, slot))
            })
            .await?;
        let (sender, receiver) = mpsc::channel(EVENT_BATCH);
        let (platform, feed) = (self.platform.clone(), Arc::clone(&self.feed));
        tokio::spawn(async move {
            feed.stream(platform, partner_id, method, after, sender)
                .await;
            drop(slot);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn attest_deletion(
        &self,
        request: Request<pb::AttestDeletionRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let call = PartnerCall::winding_down(&request, method!("AttestDeletion"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let grant_id = validate::id("grant_id", &r.grant_id)?;
            let grant = own_grant(tx, grant_id)?;
            rules::may_attest(&grant)?;
            tx.repo.attest_deletion(grant_id, tx.now_ms)?;
            let grant = own_grant(tx, grant_id)?;
            Ok(convert::grant_for_partner(&grant, &tx.view()))
        })
        .await
        .map(Response::new)
    }
}
