//! The messaging surface for partners: every call needs a grant token of the calling
//! partner and exactly one scope. Listing and getting only read, so they run beside the
//! store's writer; sending, starting threads and deleting run on it.

use super::Platform;
use super::convert;
use super::partner_call::{PartnerCall, PartnerTx};
use crate::error::ApiError;
use crate::validate::{self, AllFields};
use consent_core::model::{Grant, Message, Scope, Thread};
use consent_core::rules::{
    self, covered_threads, covers_thread, history_starts_ms, may_delete, may_read,
};
use consent_core::secret::{new_id, new_ordered_id};
use consent_proto::platform::v1 as pb;
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

fn covered_thread(
    tx: &mut PartnerTx<'_>,
    grant: &Grant,
    thread_id: &str,
) -> Result<Thread, ApiError> {
    tx.touches(thread_id);
    let thread = tx
        .repo
        .thread(thread_id)?
        .ok_or_else(|| ApiError::not_found("thread", thread_id))?;
    covers_thread(grant, &thread)?;
    Ok(thread)
}

fn new_message(tx: &PartnerTx<'_>, grant: &Grant, thread_id: &str, body: &str) -> Message {
    Message {
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
            let page = validate::page(r.page_size, &r.page_token)?;
            let rows = tx
                .repo
                .threads_of(&grant.user_id, &covered_threads(&grant), page)?;
            let key = tx.pseudonym_key();
            let (threads, next_page_token) =
                validate::fit_page(rows, page, tx.reply_bytes(), |t| {
                    convert::thread_for_partner(&t, &grant, key)
                });
            for thread in &threads {
                tx.touches(&thread.thread_id);
            }
            Ok(pb::ListThreadsResponse {
                threads,
                next_page_token,
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
                validate::page(r.page_size, &r.page_token),
            )
                .all()?;
            covered_thread(tx, &grant, thread_id)?;
            let rows = tx
                .repo
                .messages(thread_id, history_starts_ms(&grant), page)?;
            let senders: Vec<String> = rows
                .iter()
                .map(|(_, row)| row.message.sender_id.clone())
                .collect();
            let key = tx.pseudonym_key();
            let (messages, next_page_token) =
                validate::fit_page(rows, page, tx.reply_bytes(), |row| {
                    convert::message_for_partner(row, &grant, key)
                });
            for (sender, message) in senders.iter().zip(&messages) {
                tx.hands_over(&grant, sender, &message.thread_id, message.redacted);
            }
            Ok(pb::ListMessagesResponse {
                messages,
                next_page_token,
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
            tx.touches(message_id);
            let row = tx
                .repo
                .message(message_id)?
                .ok_or_else(|| ApiError::not_found("message", message_id))?;
            covered_thread(tx, &grant, &row.message.thread_id)?;
            may_read(&grant, &row.message)?;
            let sender = row.message.sender_id.clone();
            let message = convert::message_for_partner(row, &grant, tx.pseudonym_key());
            tx.hands_over(&grant, &sender, &message.thread_id, message.redacted);
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
            let (thread_id, body, key) = (
                validate::id("thread_id", &r.thread_id),
                validate::body("body", &r.body),
                validate::idempotency_key("idempotency_key", &r.idempotency_key),
            )
                .all()?;
            covered_thread(tx, &grant, thread_id)?;
            tx.idempotent(key, &r, |tx| {
                let message = new_message(tx, &grant, thread_id, body);
                tx.repo.insert_message(&message)?;
                tx.touches(&message.id);
                Ok(convert::message(&message))
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
            let (participants, title, body, key) = (
                validate::ids("participant_ids", &r.participant_ids, 1, 16),
                validate::text("title", &r.title, 128),
                validate::body("body", &r.body),
                validate::idempotency_key("idempotency_key", &r.idempotency_key),
            )
                .all()?;
            let friend_ids = tx.repo.friend_ids(&grant.user_id)?;
            let participants =
                rules::resolve_people(&grant, tx.pseudonym_key(), &participants, &friend_ids);
            super::friends_only(tx.repo, &grant.user_id, &participants)?;
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
                let message = new_message(tx, &grant, &thread.id, body);
                tx.repo.insert_message(&message)?;
                tx.touches(&thread.id);
                tx.touches(&message.id);
                let stored = tx
                    .repo
                    .thread(&thread.id)?
                    .ok_or_else(|| ApiError::Storage("thread vanished".into()))?;
                Ok(pb::StartThreadResponse {
                    thread: Some(convert::thread_for_partner(
                        &stored,
                        &grant,
                        tx.pseudonym_key(),
                    )),
                    message: Some(convert::message(&message)),
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
            tx.touches(message_id);
            tx.idempotent(key, &r, |tx| {
                let row = tx
                    .repo
                    .message(message_id)?
                    .ok_or_else(|| ApiError::not_found("message", message_id))?;
                covered_thread(tx, &grant, &row.message.thread_id)?;
                may_read(&grant, &row.message)?;
                may_delete(&grant, &row.message)?;
                tx.repo.delete_message(message_id)?;
                Ok(pb::DeleteMessageResponse {
                    message_id: message_id.to_string(),
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
            let page = validate::page(r.page_size, &r.page_token)?;
            let rows = tx.repo.friends(&grant.user_id, page)?;
            let key = tx.pseudonym_key();
            let (friends, next_page_token) =
                validate::fit_page(rows, page, tx.reply_bytes(), |friend| {
                    let (handle, name) = rules::friend_for_partner(&grant, &friend, key);
                    pb::Friend {
                        user_id: handle,
                        display_name: name.unwrap_or_default(),
                    }
                });
            Ok(pb::ListFriendsResponse {
                friends,
                next_page_token,
            })
        })
        .await
        .map(Response::new)
    }
}
