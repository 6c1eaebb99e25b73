//! Follows the partner's grant events. When a grant ends, the user's token and cached data
//! are deleted and the deletion is attested to the platform before the event counts as
//! applied; the cursor is stored after that, so a reconnect resumes after the last applied
//! event and replays the rest (deleting twice finds nothing; attesting twice is accepted).
//! An attestation the platform refuses (a partner no longer registered, a grant not its
//! own) is logged, and the deletion stands; one the platform fails to answer is tried again
//! with the event.

use crate::platform::PlatformClient;
use crate::store::{self, PartnerStore};
use consent_proto::platform::v1 as pb;
use std::time::Duration;

async fn apply(
    store: &PartnerStore,
    client: &PlatformClient,
    event: &pb::GrantEvent,
) -> Result<(), String> {
    let seq = i64::try_from(event.sequence).map_err(|e| e.to_string())?;
    if event.deletion_required {
        let grant_id = event.grant_id.clone();
        let purged = store
            .run(move |tx| store::purge_grant(tx, &grant_id))
            .await
            .map_err(|e| e.to_string())?;
        let attested = client
            .consent
            .clone()
            .attest_deletion(pb::AttestDeletionRequest {
                grant_id: event.grant_id.clone(),
            })
            .await;
        match attested {
            Ok(_) => {
                tracing::info!(grant = %event.grant_id, messages = purged, kind = event.kind, "grant ended: its data deleted and attested");
            }
            // Refused, as every call of a partner no longer registered is: the data is
            // deleted all the same, and the next events are applied too.
            Err(status) if refused_for_good(&status) => {
                tracing::warn!(grant = %event.grant_id, messages = purged, kind = event.kind, %status, "grant ended: its data deleted; the platform refused the attestation");
            }
            // Unreachable or failing: the event is applied again once the platform answers.
            Err(status) => return Err(status.to_string()),
        }
    }
    store
        .run(move |tx| store::set_event_cursor(tx, seq))
        .await
        .map_err(|e| e.to_string())
}

/// Whether the platform refused an attestation rather than failed to answer it: a partner
/// no longer registered may call nothing, and a grant that is not this partner's stays so.
fn refused_for_good(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::InvalidArgument
    )
}

/// Watches grant events until the process ends, reconnecting with backoff. The backoff
/// starts again from its least only once an event is applied: a stream that opens and
/// ends with nothing new (a suspended partner's, after its backlog) is tried again no
/// more often than every few seconds.
pub async fn run_watcher(store: PartnerStore, client: PlatformClient) {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);
    let mut backoff = MIN;
    loop {
        let after = store.run(store::event_cursor).await.unwrap_or(0);
        let request = pb::WatchGrantEventsRequest {
            after_sequence: u64::try_from(after).unwrap_or(0),
        };
        match client.consent.clone().watch_grant_events(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            if let Err(error) = apply(&store, &client, &event).await {
                                tracing::warn!(%error, seq = event.sequence, "could not apply grant event; will retry");
                                break;
                            }
                            backoff = MIN;
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::info!(%status, "grant event stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::info!(code = ?status.code(), "grant event stream unavailable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX);
    }
}
