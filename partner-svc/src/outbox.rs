//! Exactly-once sends. A share is written to the outbox before anything is sent; its id is
//! the platform idempotency key, so delivering it again after a crash or a lost reply
//! returns the first result instead of a second message. While the platform is down a
//! share stays queued and the worker retries with backoff.

use crate::error::{PartnerError, is_transient};
use crate::platform::{PlatformClient, with_token};
use crate::store::{self, PartnerStore, Share};
use consent_proto::platform::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Delivery {
    /// Delivered (now or earlier).
    Delivered(Share),
    /// The platform is unreachable; the share stays queued.
    Queued(Share),
}

/// Attempts to deliver one share. A permanent refusal marks it failed and is returned.
pub async fn deliver(
    store: &PartnerStore,
    client: &PlatformClient,
    title: &str,
    share_id: &str,
) -> Result<Delivery, PartnerError> {
    let id = share_id.to_string();
    let (share, connection) = store
        .run(move |tx| {
            let share = store::share(tx, &id)?;
            let connection = match &share {
                Some(s) => store::connection(tx, &s.user_name)?,
                None => None,
            };
            Ok((share, connection))
        })
        .await?;
    // Only the end of its connection deletes a share.
    let share = share.ok_or_else(|| {
        PartnerError::ShareFailed("its connection ended before it was sent".into())
    })?;
    match share.status.as_str() {
        "QUEUED" => {}
        "FAILED" => return Err(PartnerError::ShareFailed(share.error)),
        _ => return Ok(Delivery::Delivered(share)),
    }
    let token = match connection.and_then(|c| c.token) {
        Some(token) => token,
        None => {
            let id = share.share_id.clone();
            store
                .run(move |tx| store::mark_failed(tx, &id, "not connected"))
                .await?;
            return Err(PartnerError::NotConnected(share.user_name));
        }
    };
    let card = match card_of(&share) {
        Ok(card) => card,
        Err(reason) => {
            let id = share.share_id.clone();
            let failed = reason.clone();
            store
                .run(move |tx| store::mark_failed(tx, &id, &failed))
                .await?;
            return Err(PartnerError::UnreadableShare(share.share_id, reason));
        }
    };
    let sent = if share.thread_id.is_empty() {
        client
            .messaging
            .clone()
            .start_thread(with_token(
                pb::StartThreadRequest {
                    participant_ids: vec![share.friend_id.clone()],
                    title: title.to_string(),
                    body: share.body.clone(),
                    idempotency_key: share.share_id.clone(),
                    card: card.clone(),
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner().message.unwrap_or_default())
    } else {
        client
            .messaging
            .clone()
            .send_message(with_token(
                pb::SendMessageRequest {
                    thread_id: share.thread_id.clone(),
                    body: share.body.clone(),
                    idempotency_key: share.share_id.clone(),
                    card,
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner())
    };
    match sent {
        Ok(message) => {
            let id = share.share_id.clone();
            let delivered = store
                .run(move |tx| {
                    store::mark_delivered(tx, &id, &message.message_id, &message.thread_id)?;
                    store::share(tx, &id)
                })
                .await?
                .unwrap_or(share);
            Ok(Delivery::Delivered(delivered))
        }
        Err(status) if is_transient(&status) => Ok(Delivery::Queued(share)),
        Err(status) => {
            let id = share.share_id.clone();
            let reason = status.message().to_string();
            store
                .run(move |tx| store::mark_failed(tx, &id, &reason))
                .await?;
            Err(PartnerError::Platform(status))
        }
    }
}

/// The card a share carries, decoded as it was stored; one that no longer decodes fails
/// the share rather than going out without its card.
fn card_of(share: &Share) -> Result<Option<pb::Card>, String> {
    if share.card.is_empty() {
        return Ok(None);
    }
    prost::Message::decode(share.card.as_slice())
        .map(Some)
        .map_err(|e| format!("its stored card does not decode: {e}"))
}

/// Delivers queued shares until the process ends: woken by `wake`, or every backoff step.
pub async fn run_worker(
    store: PartnerStore,
    client: PlatformClient,
    title: String,
    wake: Arc<Notify>,
) {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(3);
    let mut backoff = MIN;
    loop {
        let queued = store.run(store::queued_shares).await.unwrap_or_default();
        let mut stalled = false;
        for share in queued {
            // A span of its own, so that the platform's work for a retried share joins
            // a trace as a front end's share does.
            let attempt = tracing::info_span!(
                "outbox delivery",
                otel.kind = "internal",
                trace_id = tracing::field::Empty
            );
            consent_telemetry::trace_context::continue_from(&attempt, None);
            match deliver(&store, &client, &title, &share.share_id)
                .instrument(attempt)
                .await
            {
                Ok(Delivery::Delivered(s)) => {
                    tracing::info!(share = %s.share_id, message = %s.message_id, "share delivered")
                }
                Ok(Delivery::Queued(_)) => {
                    stalled = true;
                    break;
                }
                Err(error) => tracing::warn!(share = %share.share_id, %error, "share refused"),
            }
        }
        backoff = if stalled { (backoff * 2).min(MAX) } else { MIN };
        let wait = if stalled { backoff } else { MAX };
        tokio::select! {
            () = wake.notified() => {},
            () = tokio::time::sleep(wait) => {},
        }
    }
}
