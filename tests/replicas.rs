//! Several platform replicas on one PostgreSQL database keep the guarantees of one:
//!
//! - a grant ended through one replica (revoked, released, its feature retired, its
//!   partner suspended) is refused on the very next call through another;
//! - grant events reach a partner watching another replica, in commit order, none lost or
//!   repeated, and resume from a cursor;
//! - the audit log stays one chain that verifies under calls through every replica;
//! - an idempotency key retried through another replica gets the first result, and the
//!   same key with another body is refused;
//! - replicas that start together on a new database migrate it once.
//!
//! The binary's name ends in `_on_postgres`, so its platforms run on the test process's
//! own PostgreSQL server (see `tests/support/postgres.rs`).

use consent_core::audit::AuditKey;
use consent_proto::platform::v1 as pb;
use consent_store::PostgresStore;
use end_to_end::database::Database;
use end_to_end::{Partner, Scenario, TestPlatform, assert_refused, bearer};
use std::sync::{Arc, Barrier};
use tonic::Code;

/// Revocations tried, each followed by a call through the other replica.
const REVOCATIONS: usize = 1000;

async fn two_replicas() -> (Scenario, TestPlatform) {
    let s = Scenario::new().await;
    let b = s.platform.replica().await;
    (s, b)
}

/// alice's grant of music's share-tracks, asked for and approved through replica A.
async fn grant_through_a(s: &Scenario, music_a: &mut Partner) -> (String, pb::Grant) {
    s.music_grant(music_a).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_ended_through_one_replica_is_refused_on_the_next_call_through_another() {
    let (s, b) = two_replicas().await;
    let mut music_a = s.platform.partner("music").await;
    let mut music_b = b.partner("music").await;
    let mut account_a = s.platform.account().await;

    let mut stale = 0;
    for _ in 0..REVOCATIONS {
        let (token, grant) = grant_through_a(&s, &mut music_a).await;
        music_b
            .list_threads(&token)
            .await
            .expect("allowed through B");
        account_a
            .revoke_grant(bearer(
                pb::RevokeGrantRequest {
                    grant_id: grant.grant_id,
                },
                &s.alice.session,
            ))
            .await
            .expect("revoked through A");
        match music_b.list_threads(&token).await {
            Ok(_) => stale += 1,
            Err(refused) => assert_refused(&refused, Code::PermissionDenied, "GRANT_REVOKED"),
        }
    }
    assert_eq!(
        stale, 0,
        "calls through B allowed after a revocation through A"
    );

    // Released by the partner through A.
    let (token, grant) = grant_through_a(&s, &mut music_a).await;
    music_a
        .consent
        .release_grant(pb::ReleaseGrantRequest {
            grant_id: grant.grant_id,
        })
        .await
        .expect("released through A");
    let refused = music_b.list_threads(&token).await.unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "GRANT_RELEASED");

    // The feature retired through A.
    let (token, _) = grant_through_a(&s, &mut music_a).await;
    s.platform
        .operator()
        .await
        .retire_feature(pb::RetireFeatureRequest {
            partner_id: "music".into(),
            feature: "share-tracks".into(),
        })
        .await
        .expect("retired through A");
    let refused = music_b.list_threads(&token).await.unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "FEATURE_RETIRED");

    // The partner suspended through A.
    let mut video_a = s.platform.partner("video").await;
    let (token, _) = s.family_grant(&mut video_a, &s.alice, "recommend").await;
    let mut video_b = b.partner("video").await;
    s.platform
        .operator()
        .await
        .suspend_partner(pb::SuspendPartnerRequest {
            partner_id: "video".into(),
        })
        .await
        .expect("suspended through A");
    let refused = video_b
        .messaging
        .list_friends(bearer(pb::ListFriendsRequest::default(), &token))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::Unauthenticated, "PARTNER_SUSPENDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_events_reach_a_watcher_on_another_replica_in_order_and_resume() {
    let (s, b) = two_replicas().await;
    let mut music_a = s.platform.partner("music").await;
    let mut music_b = b.partner("music").await;
    let mut events = music_b
        .consent
        .watch_grant_events(pb::WatchGrantEventsRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();

    // Grants approved and revoked alternately through A and B.
    let mut expected = Vec::new();
    for round in 0..10 {
        let (platform, partner) = if round % 2 == 0 {
            (&s.platform, &mut music_a)
        } else {
            (&b, &mut music_b)
        };
        let (_, grant) = s.music_grant(partner).await;
        platform
            .account()
            .await
            .revoke_grant(bearer(
                pb::RevokeGrantRequest {
                    grant_id: grant.grant_id.clone(),
                },
                &s.alice.session,
            ))
            .await
            .unwrap();
        expected.push(grant.grant_id);
    }

    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < expected.len() {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        assert!(
            event.sequence > last,
            "events in commit order, none repeated"
        );
        last = event.sequence;
        if event.kind == pb::GrantEventKind::GrantRevoked as i32 {
            seen.push(event.grant_id);
        }
    }
    assert_eq!(
        seen, expected,
        "every revocation, in the order it committed"
    );

    // A watcher on A resuming from the fifth revocation's predecessor gets the rest.
    let mut replay = music_a
        .consent
        .watch_grant_events(pb::WatchGrantEventsRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    while replayed.len() < expected.len() {
        let event = replay.message().await.unwrap().unwrap();
        if event.kind == pb::GrantEventKind::GrantRevoked as i32 {
            replayed.push(event.grant_id);
        }
    }
    assert_eq!(replayed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_stays_one_chain_under_calls_through_every_replica() {
    let (s, b) = two_replicas().await;
    let mut music_a = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music_a).await;
    let records = || s.platform.database().query("SELECT COUNT(*) FROM audit")[0][0].int();
    let before = records();

    const CALLS: u64 = 100;
    let mut calls = tokio::task::JoinSet::new();
    for platform in [&s.platform, &b] {
        for _ in 0..2 {
            let mut music = platform.partner("music").await;
            let token = token.clone();
            calls.spawn(async move {
                for n in 0..CALLS / 4 {
                    if n % 2 == 0 {
                        music.list_threads(&token).await.unwrap();
                    } else {
                        // A refusal is recorded too.
                        let refused = music
                            .messaging
                            .list_friends(bearer(pb::ListFriendsRequest::default(), &token))
                            .await
                            .unwrap_err();
                        assert_refused(&refused, Code::PermissionDenied, "SCOPE_MISSING");
                    }
                }
            });
        }
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }

    assert_eq!(records() - before, 100, "every call recorded once");
    for platform in [&s.platform, &b] {
        let verified = platform
            .operator()
            .await
            .verify_audit(pb::VerifyAuditRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(verified.ok, "{verified:?}");
        assert!(verified.records_checked >= u64::try_from(before).unwrap() + CALLS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_retried_through_another_replica_gets_the_first_result() {
    let (s, b) = two_replicas().await;
    let mut music_a = s.platform.partner("music").await;
    let mut music_b = b.partner("music").await;
    let (token, _) = s.music_grant(&mut music_a).await;
    let start = |body: &str| pb::StartThreadRequest {
        participant_ids: vec![music_a.shown.handle(&s.bob.id)],
        title: "a track".into(),
        body: body.into(),
        idempotency_key: "share-1".into(),
        card: None,
    };
    let (first, same, other) = (start("listen"), start("listen"), start("something else"));
    let first = music_a
        .messaging
        .start_thread(bearer(first, &token))
        .await
        .unwrap()
        .into_inner();
    let retried = music_b
        .messaging
        .start_thread(bearer(same, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first, "the retry through B gets the first result");
    let refused = music_b
        .messaging
        .start_thread(bearer(other, &token))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    let threads = music_b.list_threads(&token).await.unwrap().threads;
    assert_eq!(threads.len(), 1, "one thread, however many tries");
}

#[test]
fn replicas_starting_together_migrate_a_new_database_once() {
    let url = end_to_end::postgres::database();
    let together = Arc::new(Barrier::new(3));
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let (url, together) = (url.clone(), Arc::clone(&together));
            std::thread::spawn(move || {
                together.wait();
                PostgresStore::open(&url, AuditKey::generate()).map(drop)
            })
        })
        .collect();
    for replica in starting {
        replica.join().unwrap().expect("every replica starts");
    }
    let versions =
        Database::Postgres(url).query("SELECT version FROM schema_version ORDER BY version");
    let versions: Vec<i64> = versions.iter().map(|row| row[0].int()).collect();
    let expected: Vec<i64> = (1..=i64::try_from(versions.len()).unwrap()).collect();
    assert!(!versions.is_empty());
    assert_eq!(versions, expected, "each migration applied once, in order");
}
