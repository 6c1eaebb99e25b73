//! The messaging surface for partners: every call needs a grant token of the calling
//! partner and exactly one scope. Listing and getting only read, so they run beside the
//! store's writer; sending, starting threads and deleting run on it.

use super::Platform;
use super::convert;
use super::partner_call::{PartnerCall, PartnerTx};
use crate::error::ApiError;
use crate::validate::{self, AllFields};
use consent_core::card::{self, CardKind};
use consent_core::model::{Grant, Message, Scope, Thread};
use consent_core::rules::{
    self, covered_threads, covers_thread, history_starts_ms, may_delete, may_read,
};
use consent_core::secret::{new_id, new_ordered_id};
use consent_proto::platform::v1 as pb;
use consent_store::MessageRow;
use pb::messaging_server::Messaging;
use tonic::{Request, Response, Status};

/// The messaging service.
#[derive(Debug, Clone)]
pub struct MessagingService {
    platform: Platform,
}

impl MessagingService {
    /// Serves `platform`.
    pub fn new(platform: Platform) -> Self {
        MessagingService { platform }
    }
}

macro_rules! method {
    ($name:literal) => {
        concat!("/consent.platform.v1.Messaging/", $name)
    };
}

/// The thread the partner names `shown`, if the grant covers it.
fn covered_thread(tx: &mut PartnerTx<'_>, grant: &Grant, shown: &str) -> Result<Thread, ApiError> {
    let thread = tx
        .view()
        .thread_named(shown)
        .map(|id| tx.repo.thread(&id))
        .transpose()?
        .flatten()
        .ok_or_else(|| ApiError::not_found("thread", shown))?;
    tx.touches(&thread.id);
    covers_thread(grant, &thread)?;
    Ok(thread)
}

/// The id of the message the partner names `shown`, noted in the audit record.
fn message_named(tx: &mut PartnerTx<'_>, shown: &str) -> Result<String, ApiError> {
    let id = tx
        .view()
        .message_named(shown)
        .ok_or_else(|| ApiError::not_found("message", shown))?;
    tx.touches(&id);
    Ok(id)
}

/// The message `message_id` (which the partner names `shown`), if the grant covers its
/// thread and its time.
fn covered_message(
    tx: &mut PartnerTx<'_>,
    grant: &Grant,
    message_id: &str,
    shown: &str,
) -> Result<MessageRow, ApiError> {
    let row = tx
        .repo
        .message(message_id)?
        .ok_or_else(|| ApiError::not_found("message", shown))?;
    let thread = tx
        .repo
        .thread(&row.message.thread_id)?
        .ok_or_else(|| ApiError::Storage("message of an unknown thread".into()))?;
    covers_thread(grant, &thread)?;
    may_read(grant, &row.message)?;
    Ok(row)
}

/// Refuses a card (already checked, of `kind`) that the grant's feature does not declare.
fn may_send_card(
    tx: &mut PartnerTx<'_>,
    grant: &Grant,
    kind: Option<CardKind>,
) -> Result<(), ApiError> {
    let Some(kind) = kind else { return Ok(()) };
    let feature = tx
        .repo
        .feature(&grant.partner_id, &grant.feature)?
        .ok_or_else(|| ApiError::Storage("grant of an unknown feature".into()))?;
    Ok(card::may_send(&feature.card_kinds, kind)?)
}

fn new_message(
    tx: &PartnerTx<'_>,
    grant: &Grant,
    thread_id: &str,
    body: &str,
    card: Option<pb::Card>,
) -> Message {
    Message {
        card,
        id: new_ordered_id("msg", tx.now_ms),
        thread_id: thread_id.to_string(),
        sender_id: grant.user_id.clone(),
        body: body.to_string(),
        created_ms: tx.now_ms,
        sent_by_partner: Some(tx.partner.id.clone()),
    }
}

#[tonic::async_trait]
impl Messaging for MessagingService {
    async fn list_threads(
        &self,
        request: Request<pb::ListThreadsRequest>,
    ) -> Result<Response<pb::ListThreadsResponse>, Status> {
        let call = PartnerCall::new(&request, method!("ListThreads"));
        let r = request.into_inner();
        call.read(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::ThreadsRead)?;
            let page = validate::partner_page(r.page_size, &r.page_token, &tx.view())?;
            let rows = tx
                .repo
                .threads_of(&grant.user_id, &covered_threads(&grant), page)?;
            let view = tx.view();
            let ids: Vec<String> = rows.iter().map(|(_, t)| t.id.clone()).collect();
            let (threads, next_page_token) =
                validate::fit_page(rows, page, tx.reply_bytes(), |t| {
                    convert::thread_for_partner(&t, &grant, &view)
                });
            for id in ids.iter().take(threads.len()) {
                tx.touches(id);
            }
            Ok(pb::ListThreadsResponse {
                threads,
                next_page_token: tx.view().page_token(&next_page_token),
            })
        })
        .await
        .map(Response::new)
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let call = PartnerCall::new(&request, method!("ListMessages"));
        let r = request.into_inner();
        call.read(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::MessagesRead)?;
            let (thread_id, page) = (
                validate::id("thread_id", &r.thread_id),
                validate::partner_page(r.page_size, &r.page_token, &tx.view()),
            )
                .all()?;
            let thread = covered_thread(tx, &grant, thread_id)?;
            let rows = tx
                .repo
                .messages(&thread.id, history_starts_ms(&grant), page)?;
            let senders: Vec<String> = rows
                .iter()
                .map(|(_, row)| row.message.sender_id.clone())
                .collect();
            let view = tx.view();
            let (messages, next_page_token) =
                validate::fit_page(rows, page, tx.reply_bytes(), |row| {
                    convert::message_for_partner(row, &grant, &view)
                });
            for (sender, message) in senders.iter().zip(&messages) {
                tx.hands_over(&grant, sender, &thread.id, message.redacted);
            }
            Ok(pb::ListMessagesResponse {
                messages,
                next_page_token: tx.view().page_token(&next_page_token),
            })
        })
        .await
        .map(Response::new)
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let call = PartnerCall::new(&request, method!("GetMessage"));
        let r = request.into_inner();
        call.read(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::MessagesRead)?;
            let message_id = validate::id("message_id", &r.message_id)?;
            let shown = message_id;
            let message_id = message_named(tx, shown)?;
            let row = covered_message(tx, &grant, &message_id, shown)?;
            let (sender, thread_id) =
                (row.message.sender_id.clone(), row.message.thread_id.clone());
            let message = convert::message_for_partner(row, &grant, &tx.view());
            tx.hands_over(&grant, &sender, &thread_id, message.redacted);
            Ok(message)
        })
        .await
        .map(Response::new)
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let call = PartnerCall::new(&request, method!("SendMessage"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::MessagesWrite)?;
            let (thread_id, body, key, kind) = (
                validate::id("thread_id", &r.thread_id),
                validate::body("body", &r.body),
                validate::idempotency_key("idempotency_key", &r.idempotency_key),
                r.card
                    .as_ref()
                    .map(|c| validate::card("card", c))
                    .transpose(),
            )
                .all()?;
            may_send_card(tx, &grant, kind)?;
            let thread = covered_thread(tx, &grant, thread_id)?;
            tx.idempotent(key, &r, |tx| {
                let message = new_message(tx, &grant, &thread.id, body, r.card.clone());
                tx.repo.insert_message(&message)?;
                tx.touches(&message.id);
                Ok(convert::sent_message(&message, &tx.view()))
            })
        })
        .await
        .map(Response::new)
    }

    async fn start_thread(
        &self,
        request: Request<pb::StartThreadRequest>,
    ) -> Result<Response<pb::StartThreadResponse>, Status> {
        let call = PartnerCall::new(&request, method!("StartThread"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::MessagesWrite)?;
            let (participants, title, body, key, kind) = (
                validate::ids("participant_ids", &r.participant_ids, 1, 16),
                validate::text("title", &r.title, 128),
                validate::body("body", &r.body),
                validate::idempotency_key("idempotency_key", &r.idempotency_key),
                r.card
                    .as_ref()
                    .map(|c| validate::card("card", c))
                    .transpose(),
            )
                .all()?;
            may_send_card(tx, &grant, kind)?;
            let friend_ids = tx.repo.friend_ids(&grant.user_id)?;
            let participants = rules::friends_named(&tx.view(), &participants, &friend_ids)?;
            tx.idempotent(key, &r, |tx| {
                let mut members = vec![grant.user_id.clone()];
                members.extend(participants.iter().cloned());
                let thread = Thread {
                    id: new_id("thr"),
                    title: title.to_string(),
                    started_by_partner: Some(tx.partner.id.clone()),
                    created_ms: tx.now_ms,
                    participants: members,
                };
                tx.repo.insert_thread(&thread)?;
                let message = new_message(tx, &grant, &thread.id, body, r.card.clone());
                tx.repo.insert_message(&message)?;
                tx.touches(&thread.id);
                tx.touches(&message.id);
                let stored = tx
                    .repo
                    .thread(&thread.id)?
                    .ok_or_else(|| ApiError::Storage("thread vanished".into()))?;
                let view = tx.view();
                Ok(pb::StartThreadResponse {
                    thread: Some(convert::thread_for_partner(&stored, &grant, &view)),
                    message: Some(convert::sent_message(&message, &view)),
                })
            })
        })
        .await
        .map(Response::new)
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let call = PartnerCall::new(&request, method!("DeleteMessage"));
        let r = request.into_inner();
        call.run(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::MessagesDelete)?;
            let (message_id, key) = (
                validate::id("message_id", &r.message_id),
                validate::idempotency_key("idempotency_key", &r.idempotency_key),
            )
                .all()?;
            let shown = message_id;
            let message_id = message_named(tx, shown)?;
            tx.idempotent(key, &r, |tx| {
                let row = covered_message(tx, &grant, &message_id, shown)?;
                may_delete(&grant, &row.message)?;
                tx.repo.delete_message(&row.message.id)?;
                Ok(pb::DeleteMessageResponse {
                    message_id: shown.to_string(),
                })
            })
        })
        .await
        .map(Response::new)
    }

    async fn list_friends(
        &self,
        request: Request<pb::ListFriendsRequest>,
    ) -> Result<Response<pb::ListFriendsResponse>, Status> {
        let call = PartnerCall::new(&request, method!("ListFriends"));
        let r = request.into_inner();
        call.read(&self.platform, move |tx| {
            let grant = tx.authorize(Scope::FriendsRead)?;
            let page = validate::partner_page(r.page_size, &r.page_token, &tx.view())?;
            let rows = tx.repo.friends(&grant.user_id, page)?;
            let view = tx.view();
            let (friends, next_page_token) =
                validate::fit_page(rows, page, tx.reply_bytes(), |friend| {
                    let (handle, name) = rules::friend_for_partner(&view, &friend);
                    pb::Friend {
                        user_id: handle,
                        display_name: name.unwrap_or_default(),
                    }
                });
            Ok(pb::ListFriendsResponse {
                friends,
                next_page_token: tx.view().page_token(&next_page_token),
            })
        })
        .await
        .map(Response::new)
    }
}
