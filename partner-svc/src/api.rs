//! `consent.partner.v1.PartnerApp`: what the partner's front ends call. Grant tokens stay
//! here. A caller is one of this partner's own front ends (its client certificate carries
//! this partner's identity), which names the account it acts for in `user_name`, or a
//! user signed in to the partner's web app (`authorization: Bearer <session>`), which acts
//! for its own account only. Anyone else is refused with `UNAUTHENTICATED`. The edge
//! finds which before a handler runs ([`crate::caller`]).

use crate::caller::Caller;
use crate::config::PartnerConfig;
use crate::error::PartnerError;
use crate::outbox::{self, Delivery};
use crate::platform::{PlatformClient, with_token};
use crate::store::{self, CachedMessage, PartnerStore, Share};
use consent_core::denial::FieldViolation;
use consent_core::model::MAX_BODY_BYTES;
use consent_proto::partner::v1 as api;
use consent_proto::platform::v1 as pb;
use std::sync::Arc;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// The partner API.
#[derive(Debug, Clone)]
pub struct PartnerApp {
    config: Arc<PartnerConfig>,
    store: PartnerStore,
    client: PlatformClient,
    outbox_wake: Arc<Notify>,
}

impl PartnerApp {
    /// Serves with `store` and `client`; `outbox_wake` nudges the outbox worker.
    pub fn new(
        config: Arc<PartnerConfig>,
        store: PartnerStore,
        client: PlatformClient,
        outbox_wake: Arc<Notify>,
    ) -> Self {
        PartnerApp {
            config,
            store,
            client,
            outbox_wake,
        }
    }

    fn share_title(&self) -> String {
        format!("{} share", self.config.display_name)
    }

    /// The user's connection as this partner's store holds it.
    async fn connection(
        &self,
        user_name: &str,
    ) -> Result<Option<store::UserConnection>, PartnerError> {
        let name = user_name.to_string();
        Ok(self
            .store
            .run(move |tx| store::connection(tx, &name))
            .await?)
    }

    /// The user's token, if connected.
    async fn token(&self, user_name: &str) -> Result<String, PartnerError> {
        Ok(self.connected(user_name).await?.0)
    }

    /// The user's token and grant, if connected.
    async fn connected(&self, user_name: &str) -> Result<(String, String), PartnerError> {
        self.connection(user_name)
            .await?
            .and_then(|c| c.token.zip(c.grant_id))
            .ok_or_else(|| PartnerError::NotConnected(user_name.to_string()))
    }

    /// Releases `grant_id` on the platform, deletes everything held under it, and attests
    /// the deletion, in that order: the attestation states only a deletion made.
    async fn release(&self, grant_id: String) -> Result<(), PartnerError> {
        let mut consent = self.client.consent.clone();
        consent
            .release_grant(pb::ReleaseGrantRequest {
                grant_id: grant_id.clone(),
            })
            .await?;
        let purge_id = grant_id.clone();
        self.store
            .run(move |tx| store::purge_grant(tx, &purge_id))
            .await?;
        consent
            .attest_deletion(pb::AttestDeletionRequest { grant_id })
            .await?;
        Ok(())
    }
}

impl PartnerApp {
    /// Gives up the grant `name` holds, if any: a user connecting again gives up the grant
    /// they had (released, and its data deleted) before a new one is asked for, so no
    /// grant outlives its use. Answers whether there was one: a connection that has ended
    /// holds no token, and its grant was already given up.
    pub async fn release_connection(&self, name: &str) -> Result<bool, PartnerError> {
        if let Some(old) = self.connection(name).await?
            && let (Some(grant_id), Some(_)) = (old.grant_id, old.token)
        {
            self.release(grant_id).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A short code the platform shows with a request and the partner shows its user
/// (`1234-5678`), so that the user approves the request they started.
fn binding_message() -> String {
    let [a, b, c, d] = consent_core::secret::random_bytes::<4>();
    let number = u32::from_be_bytes([a, b, c, d]) % 100_000_000;
    format!("{:04}-{:04}", number / 10_000, number % 10_000)
}

/// A new share id, which is also the idempotency key of the share's send. It begins with
/// the time, such as `shr_0193…`, so that the platform's index of idempotency keys grows at
/// one end: a commit of many sends writes one page of it rather than a page at random for
/// each.
fn new_share_id() -> String {
    let now_ms = consent_core::clock::Clock::default().now_ms();
    consent_core::secret::new_ordered_id("shr", now_ms)
}

fn share_response(share: &Share, status: &str) -> api::ShareResponse {
    api::ShareResponse {
        share_id: share.share_id.clone(),
        status: status.to_string(),
        message_id: share.message_id.clone(),
        thread_id: share.delivered_thread_id.clone(),
    }
}

#[tonic::async_trait]
impl api::partner_app_server::PartnerApp for PartnerApp {
    async fn connect_user(
        &self,
        request: Request<api::ConnectUserRequest>,
    ) -> Result<Response<api::ConnectUserResponse>, Status> {
        let caller = Caller::of(&request)?;
        let name = caller.account(&request.get_ref().user_name)?;
        // The decoupled flow asks the platform user with the account's name: only the
        // partner's own front ends, which vouch for that name, may start it. A user signed
        // in here connects through the platform's consent page instead.
        if *caller != Caller::FrontEnd {
            return Err(PartnerError::ConnectInBrowser.into());
        }
        let r = request.into_inner();
        self.release_connection(&name).await?;
        let feature = &self.config.feature;
        let coverage = feature.coverage;
        // Asking again while the user has not answered repeats the same request.
        let pending_name = name.clone();
        let binding_message = self
            .store
            .run(move |tx| store::pending_binding(tx, &pending_name))
            .await
            .map_err(PartnerError::from)?
            .unwrap_or_else(binding_message);
        let asked = self
            .client
            .consent
            .clone()
            .request_access(pb::RequestAccessRequest {
                user_name: name.clone(),
                feature: feature.name.clone(),
                coverage: coverage as i32,
                thread_ids: r.thread_ids,
                include_history: feature.include_history,
                purpose: feature.purpose.clone(),
                binding_message: binding_message.clone(),
                account_label: name.clone(),
            })
            .await
            .map_err(PartnerError::from)?
            .into_inner();
        let request_id = asked.request_id.clone();
        let stored_name = name.clone();
        self.store
            .run({
                let binding_message = binding_message.clone();
                move |tx| store::put_pending(tx, &stored_name, &request_id, &binding_message)
            })
            .await
            .map_err(PartnerError::from)?;
        Ok(Response::new(api::ConnectUserResponse {
            instructions: format!(
                "{name}: open the platform's app and approve {} for '{}' ({}) only if it shows the code {binding_message}",
                self.config.display_name, feature.name, feature.purpose
            ),
            request_id: asked.request_id,
            binding_message,
        }))
    }

    async fn connection_status(
        &self,
        request: Request<api::ConnectionStatusRequest>,
    ) -> Result<Response<api::ConnectionStatusResponse>, Status> {
        let name = Caller::of(&request)?.account(&request.get_ref().user_name)?;
        let connection = self.connection(&name).await?;
        let Some(connection) = connection else {
            return Ok(Response::new(api::ConnectionStatusResponse {
                status: "NOT_CONNECTED".into(),
                ..Default::default()
            }));
        };
        let mut status = connection.status.clone();
        let mut grant = None;
        if status == "PENDING" {
            let exchanged = self
                .client
                .consent
                .clone()
                .exchange_request(pb::ExchangeRequestRequest {
                    request_id: connection.request_id.clone(),
                })
                .await
                .map_err(PartnerError::from)?
                .into_inner();
            grant = exchanged.grant.clone();
            let (new_status, token) = match pb::RequestStatus::try_from(exchanged.status) {
                // No token with an approval: the grant ended before this exchange.
                Ok(pb::RequestStatus::Approved) if exchanged.grant_token.is_empty() => {
                    ("ENDED", None)
                }
                Ok(pb::RequestStatus::Approved) => ("CONNECTED", Some(exchanged.grant_token)),
                Ok(pb::RequestStatus::Denied) => ("DENIED", None),
                Ok(pb::RequestStatus::Exchanged) => ("ENDED", None),
                Ok(pb::RequestStatus::RequestExpired) => ("EXPIRED", None),
                _ => ("PENDING", None),
            };
            let grant_id = grant.as_ref().map(|g| g.grant_id.clone());
            // The status stored, which another exchange of the same request may have set.
            status = self
                .store
                .run(move |tx| {
                    store::set_connection(
                        tx,
                        &name,
                        new_status,
                        grant_id.as_deref(),
                        token.as_deref(),
                    )?;
                    Ok(store::connection(tx, &name)?.map(|c| c.status))
                })
                .await
                .map_err(PartnerError::from)?
                .unwrap_or_else(|| new_status.to_string());
        } else if status == "CONNECTED"
            && let Some(grant_id) = connection.grant_id.clone()
        {
            let grants = self
                .client
                .consent
                .clone()
                .introspect_grants(pb::IntrospectGrantsRequest {
                    grant_ids: vec![grant_id],
                    ..Default::default()
                })
                .await
                .map_err(PartnerError::from)?
                .into_inner();
            grant = grants.grants.into_iter().next();
        }
        let scopes = grant
            .as_ref()
            .map(|g| {
                g.scopes
                    .iter()
                    .filter_map(|s| pb::Scope::try_from(*s).ok())
                    .map(|s| s.as_str_name().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let (not_after, thread_ids) = grant
            .map(|g| (g.not_after, g.thread_ids))
            .unwrap_or_default();
        Ok(Response::new(api::ConnectionStatusResponse {
            status,
            scopes,
            not_after,
            thread_ids,
        }))
    }

    async fn list_friends(
        &self,
        request: Request<api::ListFriendsRequest>,
    ) -> Result<Response<api::ListFriendsResponse>, Status> {
        let name = Caller::of(&request)?.account(&request.get_ref().user_name)?;
        let token = self.token(&name).await?;
        let page_token = request.into_inner().page_token;
        let friends = self
            .client
            .messaging
            .clone()
            .list_friends(with_token(
                pb::ListFriendsRequest {
                    page_size: 100,
                    page_token,
                },
                &token,
            ))
            .await
            .map_err(PartnerError::from)?
            .into_inner();
        Ok(Response::new(api::ListFriendsResponse {
            friends: friends
                .friends
                .into_iter()
                .map(|f| api::Friend {
                    user_id: f.user_id,
                    display_name: f.display_name,
                })
                .collect(),
            next_page_token: friends.next_page_token,
        }))
    }

    async fn share(
        &self,
        request: Request<api::ShareRequest>,
    ) -> Result<Response<api::ShareResponse>, Status> {
        let name = Caller::of(&request)?.account(&request.get_ref().user_name)?;
        let r = request.into_inner();
        let mut bad = Vec::new();
        if r.body.is_empty() || r.body.len() > MAX_BODY_BYTES {
            let problem = format!("must be 1 to {MAX_BODY_BYTES} bytes");
            bad.push(FieldViolation::new("body", problem));
        }
        if r.client_key.is_empty() || r.client_key.len() > 64 {
            bad.push(FieldViolation::new("client_key", "must be 1 to 64 bytes"));
        }
        if r.thread_id.is_empty() == r.friend_id.is_empty() {
            let problem = "give either thread_id or friend_id";
            bad.push(FieldViolation::new("thread_id", problem));
        }
        let kind = match r
            .card
            .as_ref()
            .map(|card| consent_core::card::check("card", card))
        {
            Some(Err(card_violations)) => {
                bad.extend(card_violations);
                None
            }
            Some(Ok(kind)) => Some(kind),
            None => None,
        };
        if !bad.is_empty() {
            return Err(PartnerError::Invalid(bad).into());
        }
        if let Some(kind) = kind {
            consent_core::card::may_send(&self.config.feature.cards, kind)
                .map_err(|denied| PartnerError::CardNotDeclared(denied.message))?;
        }
        let share = Share {
            share_id: new_share_id(),
            user_name: name.clone(),
            thread_id: r.thread_id,
            friend_id: r.friend_id,
            body: r.body,
            card: r
                .card
                .map(|c| prost::Message::encode_to_vec(&c))
                .unwrap_or_default(),
            status: "QUEUED".into(),
            message_id: String::new(),
            delivered_thread_id: String::new(),
            error: String::new(),
        };
        let client_key = r.client_key;
        let asked = share.clone();
        // Queued only while connected, in one transaction: a grant ending afterwards deletes
        // the share with the rest of what it held (and its delivery is refused
        // SHARE_FAILED); one ending before leaves it refused NOT_CONNECTED.
        let share = self
            .store
            .run(move |tx| {
                let connected = store::connection(tx, &share.user_name)?
                    .and_then(|c| c.token)
                    .is_some();
                if !connected {
                    return Ok(None);
                }
                store::enqueue_share(tx, &share, &client_key).map(Some)
            })
            .await
            .map_err(PartnerError::from)?
            .ok_or(PartnerError::NotConnected(name))?;
        // A retry names the same share; the same key for something else is refused.
        let what = |s: &Share| {
            (
                s.thread_id.clone(),
                s.friend_id.clone(),
                s.body.clone(),
                s.card.clone(),
            )
        };
        if what(&share) != what(&asked) {
            return Err(PartnerError::ClientKeyReused.into());
        }
        match outbox::deliver(
            &self.store,
            &self.client,
            &self.share_title(),
            &share.share_id,
        )
        .await?
        {
            Delivery::Delivered(share) => Ok(Response::new(share_response(&share, "DELIVERED"))),
            Delivery::Queued(share) => {
                self.outbox_wake.notify_one();
                Ok(Response::new(share_response(&share, "QUEUED")))
            }
        }
    }

    async fn inbox(
        &self,
        request: Request<api::InboxRequest>,
    ) -> Result<Response<api::InboxResponse>, Status> {
        let name = Caller::of(&request)?.account(&request.get_ref().user_name)?;
        let r = request.into_inner();
        let (token, grant_id) = self.connected(&name).await?;
        let listed = self
            .client
            .messaging
            .clone()
            .list_messages(with_token(
                pb::ListMessagesRequest {
                    thread_id: r.thread_id,
                    page_size: 100,
                    page_token: r.page_token,
                },
                &token,
            ))
            .await
            .map_err(PartnerError::from)?
            .into_inner();
        let cached: Vec<CachedMessage> = listed
            .messages
            .iter()
            .map(|m| CachedMessage {
                message_id: m.message_id.clone(),
                thread_id: m.thread_id.clone(),
                sender: m.sender.clone(),
                body: m.body.clone(),
                redacted: m.redacted,
            })
            .collect();
        let messages = listed
            .messages
            .into_iter()
            .map(|m| api::InboxMessage {
                message_id: m.message_id,
                sender: m.sender,
                body: m.body,
                redacted: m.redacted,
                card: m.card,
            })
            .collect();
        self.store
            .run(move |tx| store::cache_messages(tx, &name, &grant_id, &cached))
            .await
            .map_err(PartnerError::from)?;
        Ok(Response::new(api::InboxResponse {
            messages,
            next_page_token: listed.next_page_token,
        }))
    }

    async fn unsend(
        &self,
        request: Request<api::UnsendRequest>,
    ) -> Result<Response<api::UnsendResponse>, Status> {
        let name = Caller::of(&request)?.account(&request.get_ref().user_name)?;
        let r = request.into_inner();
        let token = self.token(&name).await?;
        let deleted = self
            .client
            .messaging
            .clone()
            .delete_message(with_token(
                pb::DeleteMessageRequest {
                    idempotency_key: format!("unsend-{}", r.message_id),
                    message_id: r.message_id,
                },
                &token,
            ))
            .await
            .map_err(PartnerError::from)?
            .into_inner();
        Ok(Response::new(api::UnsendResponse {
            message_id: deleted.message_id,
        }))
    }

    async fn disconnect(
        &self,
        request: Request<api::DisconnectRequest>,
    ) -> Result<Response<api::DisconnectResponse>, Status> {
        let name = Caller::of(&request)?.account(&request.get_ref().user_name)?;
        let released = self.release_connection(&name).await?;
        Ok(Response::new(api::DisconnectResponse { released }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_ids_sort_by_the_time_they_were_made() {
        let earlier = new_share_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_share_id();
        assert!(earlier < later, "{earlier} sorts before {later}");
        assert!(earlier.starts_with("shr_"), "{earlier}");
    }
}
