//! One reader of grant events for every `WatchGrantEvents` stream.
//!
//! After each commit that added events, one task reads the new events once, for all
//! partners, and hands them to every open stream, which keeps those of its own partner.
//! A stream reads the store itself only to catch up: from the cursor it was opened with,
//! after falling behind the feed, when its partner's events arrived (to learn whether the
//! partner may still call, as after a suspension), or every [`EVENT_POLL`] as a safety net.
//! However many streams are open, a commit costs one read. A stream that ends because its
//! partner may no longer call has that refusal recorded on the writer, and sends it once
//! the record has committed.

use super::convert;
use super::partner_call::log_decided;
use super::{Platform, audit_refusal};
use crate::error::ApiError;
use consent_core::model::GrantEvent;
use consent_core::rules;
use consent_proto::platform::v1 as pb;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

/// Events read at once, by the feed or by a stream catching up.
pub const EVENT_BATCH: usize = 100;
/// How often a quiet stream re-reads the store anyway (a safety net, not the trigger).
const EVENT_POLL: Duration = Duration::from_secs(5);
/// Batches the feed keeps for streams that are slow to take them; one that falls further
/// behind catches up from the store.
const FEED_BATCHES: usize = 64;

/// The events of one read, in commit order.
type Batch = Arc<[GrantEvent]>;

/// The shared reader, started by the first stream.
#[derive(Debug)]
pub struct EventFeed {
    batches: broadcast::Sender<Batch>,
    started: Once,
}

impl Default for EventFeed {
    fn default() -> Self {
        EventFeed {
            batches: broadcast::Sender::new(FEED_BATCHES),
            started: Once::new(),
        }
    }
}

impl EventFeed {
    /// Sends `partner_id`'s events after `after` on `sender`, then every new one, until the
    /// client goes away, the platform stops, or the partner may no longer call (suspended,
    /// blocked, or its registration gone): then the events committed so far (those of
    /// the suspension itself, which ask it to delete what it holds) are sent, and the
    /// stream ends with that refusal, recorded as a refusal of `method` before it is sent.
    /// Once the platform begins to stop, it ends wherever it is, catching up or waiting on
    /// a slow reader included, so that no stream holds up a shutdown.
    pub async fn stream(
        &self,
        platform: Platform,
        partner_id: String,
        method: &'static str,
        after: i64,
        sender: mpsc::Sender<Result<pb::GrantEvent, Status>>,
    ) {
        let mut stopping = platform.stopping.clone();
        tokio::select! {
            () = self.follow(platform, partner_id, method, after, sender) => {}
            _ = stopping.wait_for(|stopped| *stopped) => {}
        }
    }

    /// What [`EventFeed::stream`] does until the platform stops.
    async fn follow(
        &self,
        platform: Platform,
        partner_id: String,
        method: &'static str,
        mut after: i64,
        sender: mpsc::Sender<Result<pb::GrantEvent, Status>>,
    ) {
        self.started.call_once(|| {
            // The feed's starting point is taken before this stream catches up, so that
            // every event after it is either in the catching up or in the feed.
            let mut changes = platform.store.event_watch();
            let after = *changes.borrow_and_update();
            let feed = read_new_events(platform.clone(), changes, after, self.batches.clone());
            tokio::spawn(feed);
        });
        // Subscribed before catching up, so that nothing committed in between is missed.
        let mut live = self.batches.subscribe();
        loop {
            let status = match catch_up(&platform, &partner_id, &mut after, &sender).await {
                Ok(CaughtUp::Open) => None,
                Ok(CaughtUp::Closed) => return,
                Ok(CaughtUp::Refused(refusal)) => {
                    Some(recorded(&platform, &partner_id, method, refusal).await)
                }
                Err(status) => Some(status),
            };
            if let Some(status) = status {
                let _ = sender.send(Err(status)).await;
                return;
            }
            let poll_at = tokio::time::Instant::now() + EVENT_POLL;
            loop {
                let batch = tokio::select! {
                    batch = live.recv() => batch,
                    () = tokio::time::sleep_until(poll_at) => break,
                    () = sender.closed() => return,
                };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let from = after;
                let own = batch
                    .iter()
                    .filter(|e| e.partner_id == partner_id && e.seq > from);
                let mut any = false;
                for event in own {
                    if !deliver(&platform, &sender, event).await {
                        return;
                    }
                    after = event.seq;
                    any = true;
                }
                if any {
                    break;
                }
            }
        }
    }
}

/// Sends `event` on its partner's stream, counting in
/// `consent_grant_event_lag_seconds{partner}` how long after it happened it left. Whether
/// the stream is still open.
async fn deliver(
    platform: &Platform,
    sender: &mpsc::Sender<Result<pb::GrantEvent, Status>>,
    event: &GrantEvent,
) -> bool {
    let lag_ms = (platform.clock.now_ms() - event.at_ms).max(0);
    metrics::histogram!("consent_grant_event_lag_seconds", "partner" => event.partner_id.clone())
        .record(lag_ms as f64 / 1000.0);
    sender.send(Ok(convert::grant_event(event))).await.is_ok()
}

/// Where a stream stands once it has caught up.
enum CaughtUp {
    /// It goes on.
    Open,
    /// Its client went away.
    Closed,
    /// Its partner may no longer call: it ends with this refusal.
    Refused(ApiError),
}

/// Sends the partner's events after `after` from the store, then says whether the stream
/// goes on.
async fn catch_up(
    platform: &Platform,
    partner_id: &str,
    after: &mut i64,
    sender: &mpsc::Sender<Result<pb::GrantEvent, Status>>,
) -> Result<CaughtUp, Status> {
    loop {
        let (partner, from) = (partner_id.to_string(), *after);
        let (events, may_call) = platform
            .read(move |repo, _| {
                let events = repo.events_after(&partner, from, EVENT_BATCH)?;
                let may_call = rules::partner_may_call(&partner, repo.partner(&partner)?);
                Ok((events, may_call))
            })
            .await?;
        for event in &events {
            if !deliver(platform, sender, event).await {
                return Ok(CaughtUp::Closed);
            }
            *after = event.seq;
        }
        // A refusal comes only once every event before it is sent: those of a
        // suspension ask the partner to delete what it holds.
        if events.len() == EVENT_BATCH {
            continue;
        }
        return Ok(match may_call {
            Ok(_) => CaughtUp::Open,
            Err(refusal) => CaughtUp::Refused(refusal.into()),
        });
    }
}

/// The status that ends `partner_id`'s stream with `refusal`, once the refusal's record
/// (of `method`) has committed; if it cannot be written, the store's failure instead.
async fn recorded(
    platform: &Platform,
    partner_id: &str,
    method: &'static str,
    refusal: ApiError,
) -> Status {
    let partner_id = partner_id.to_string();
    let recorded = platform
        .run(move |repo, now_ms| {
            let entry = audit_refusal(repo, now_ms, &partner_id, "", method, &refusal)?;
            log_decided(&entry);
            Ok(refusal)
        })
        .await;
    match recorded {
        Ok(error) | Err(error) => error.into(),
    }
}

/// The feed's reader: after each commit that added events, reads them once and sends them
/// to every stream. Ends when the platform stops.
async fn read_new_events(
    platform: Platform,
    mut changes: tokio::sync::watch::Receiver<i64>,
    mut after: i64,
    batches: broadcast::Sender<Batch>,
) {
    let mut stopping = platform.stopping.clone();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = stopping.wait_for(|stopped| *stopped) => return,
        }
        loop {
            let from = after;
            let read = platform
                .read(move |repo, _| Ok(repo.events_since(from, EVENT_BATCH)?))
                .await;
            let events = match read {
                Ok(events) => events,
                Err(error) => {
                    // Streams fall back on their own reads at their next poll.
                    tracing::warn!(%error, "the grant-event feed could not read");
                    break;
                }
            };
            let Some(last) = events.last() else { break };
            after = last.seq;
            let full = events.len() == EVENT_BATCH;
            // No stream open is no error: the next one catches up from the store.
            let _ = batches.send(events.into());
            if !full {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::platform_with_grant;
    use consent_proto::platform::v1::GrantEventKind;
    use consent_store::{Job, ReadJob, SqliteStore, Store, StoreError, execute};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WATCH: &str = "/consent.platform.v1.Consent/WatchGrantEvents";

    /// A store that counts the reads it is given.
    struct CountingReads {
        inner: SqliteStore,
        reads: Arc<AtomicUsize>,
    }

    impl Store for CountingReads {
        fn submit(&self, job: Box<dyn Job>) {
            self.inner.submit(job);
        }
        fn submit_read(&self, job: Box<dyn ReadJob>) {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.submit_read(job);
        }
        fn event_watch(&self) -> tokio::sync::watch::Receiver<i64> {
            self.inner.event_watch()
        }
        fn close(&self, within: std::time::Duration) -> bool {
            self.inner.close(within)
        }
    }

    /// Commits one event of `grt_1` (music's) or of a grant of another partner.
    async fn commit_event(platform: &Platform, of_music: bool) {
        execute(platform.store.as_ref(), move |repo| {
            let mut grant = repo.grant("grt_1")?.expect("grant");
            if !of_music {
                grant.partner_id = "video".into();
            }
            repo.push_event(&grant, GrantEventKind::GrantRevoked, 0)?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_stream_stuck_on_a_reader_that_does_not_read_ends_when_the_platform_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, _, stop) = platform_with_grant(dir.path(), |s| Arc::new(s)).await;
        // More events than the stream's buffer holds, and a reader that never reads.
        for _ in 0..=EVENT_BATCH {
            commit_event(&platform, true).await;
        }
        let (sender, _unread) = mpsc::channel(1);
        let feed = EventFeed::default();
        let streaming = feed.stream(platform, "music".into(), WATCH, 0, sender);
        tokio::pin!(streaming);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut streaming)
                .await
                .is_err(),
            "the stream waits on its reader"
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), streaming)
            .await
            .expect("a stopping platform ends the stream wherever it is");
    }

    #[tokio::test]
    async fn one_read_per_commit_however_many_streams_are_open() {
        const STREAMS: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&reads);
        let (platform, _, _stop) = platform_with_grant(dir.path(), |inner| {
            Arc::new(CountingReads {
                inner,
                reads: counter,
            })
        })
        .await;
        commit_event(&platform, true).await;
        let feed = Arc::new(EventFeed::default());
        let mut receivers = Vec::new();
        for _ in 0..STREAMS {
            let (sender, receiver) = mpsc::channel(EVENT_BATCH);
            let (feed, platform) = (Arc::clone(&feed), platform.clone());
            tokio::spawn(async move {
                feed.stream(platform, "music".into(), WATCH, 0, sender)
                    .await
            });
            receivers.push(receiver);
        }
        for receiver in &mut receivers {
            let first = receiver.recv().await.unwrap().unwrap();
            assert_eq!(first.sequence, 1, "each stream catches up from its cursor");
        }

        // Ten commits of another partner's events: the feed reads each once; no music
        // stream reads at all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = reads.load(Ordering::SeqCst);
        for _ in 0..10 {
            commit_event(&platform, false).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let spent = reads.load(Ordering::SeqCst) - before;
        assert!(
            spent <= 10,
            "{spent} reads for 10 commits and {STREAMS} streams"
        );

        // One of music's: every stream gets it from the feed, well before its own poll
        // would have found it, in order after the first.
        commit_event(&platform, true).await;
        for receiver in &mut receivers {
            let next = tokio::time::timeout(EVENT_POLL / 5, receiver.recv())
                .await
                .expect("from the feed, not the poll")
                .unwrap()
                .unwrap();
            assert_eq!(next.sequence, 12);
        }
    }

    /// A platform whose music partner has an event stream open and caught up, and is then
    /// blocked; the stream's receiving end.
    async fn a_stream_then_a_block(
        dir: &std::path::Path,
    ) -> (
        Platform,
        mpsc::Receiver<Result<pb::GrantEvent, Status>>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (platform, _, stop) = platform_with_grant(dir, |inner| Arc::new(inner)).await;
        let feed = Arc::new(EventFeed::default());
        let (sender, mut receiver) = mpsc::channel(EVENT_BATCH);
        let (streamed, on) = (Arc::clone(&feed), platform.clone());
        commit_event(&platform, true).await;
        tokio::spawn(async move { streamed.stream(on, "music".into(), WATCH, 0, sender).await });
        let caught_up = receiver.recv().await.unwrap().unwrap();
        assert_eq!(caught_up.sequence, 1, "the stream is open and caught up");
        execute(platform.store.as_ref(), |repo| {
            repo.set_partner_blocked("music", true)
        })
        .await
        .unwrap();
        (platform, receiver, stop)
    }

    #[tokio::test]
    async fn a_streams_end_is_sent_only_once_its_record_has_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, mut receiver, _stop) = a_stream_then_a_block(dir.path()).await;
        let release = consent_store::hold_writer(platform.store.as_ref());
        // The stream finds the block at its next poll; its refusal waits for its record.
        let early = tokio::time::timeout(EVENT_POLL * 2, receiver.recv()).await;
        assert!(
            early.is_err(),
            "sent before its record committed: {early:?}"
        );
        release.send(()).unwrap();
        let refusal = receiver.recv().await.unwrap().unwrap_err();
        let reason = tonic_types::StatusExt::get_details_error_info(&refusal).map(|i| i.reason);
        assert_eq!(reason.as_deref(), Some("PARTNER_BLOCKED"), "{refusal:?}");
    }

    #[tokio::test]
    async fn a_blocked_partners_stream_ends_while_others_keep_committing() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, mut receiver, _stop) = a_stream_then_a_block(dir.path()).await;
        // Another partner's events keep coming, faster than the poll.
        let busy = platform.clone();
        let traffic = tokio::spawn(async move {
            loop {
                commit_event(&busy, false).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let ended = tokio::time::timeout(EVENT_POLL * 2, receiver.recv())
            .await
            .expect("the stream ends within its poll");
        traffic.abort();
        let refusal = ended.unwrap().unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{refusal:?}");
        let reason = tonic_types::StatusExt::get_details_error_info(&refusal).map(|i| i.reason);
        assert_eq!(reason.as_deref(), Some("PARTNER_BLOCKED"), "{refusal:?}");
        // The end was recorded before it was sent.
        let head = execute(platform.store.as_ref(), |repo| repo.audit_head())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.entry.partner_id.as_str(), head.entry.method.as_str()),
            ("music", WATCH)
        );
        assert_eq!(
            (head.entry.decision.as_str(), head.entry.reason.as_str()),
            ("deny", "PARTNER_BLOCKED")
        );
    }
}
