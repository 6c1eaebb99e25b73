//! Several platform replicas on one PostgreSQL database keep the guarantees of one:
//!
//! - a grant ended through one replica (revoked, released, its feature retired, its
//!   partner suspended) is refused on the very next call through another, and reads
//!   racing a revocation through another replica leave no allowed use after it in the
//!   audit chain;
//! - a replica that cannot reach the database refuses calls (`UNAVAILABLE`) and reports
//!   `NOT_SERVING`, and recovers without a restart;
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
use end_to_end::{Partner, Scenario, TestPlatform, assert_refused, bearer, revoke};
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use tonic::Code;
use tonic_health::ServingStatus;

/// Revocations tried, each followed by a call through the other replica.
const REVOCATIONS: usize = 1000;

/// A seeded platform and a second replica of it.
async fn two_replicas() -> (Scenario, TestPlatform) {
    end_to_end::postgres::require_installed();
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
        revoke(&mut account_a, &s.alice, &grant.grant_id).await;
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
async fn reads_through_one_replica_racing_a_revocation_through_another_leave_no_allowed_use_after_it()
 {
    let (s, b) = two_replicas().await;
    end_to_end::races::reads_racing_a_revocation(&s, &b).await;
}

/// Grants of music's `feature` for alice on the family thread, asked for through
/// `platform` and revoked through it, `rounds` times; returns the grants revoked.
async fn churn(s: &Scenario, platform: &TestPlatform, feature: &str, rounds: usize) -> Vec<String> {
    let mut music = platform.partner("music").await;
    let mut account = platform.account().await;
    let mut revoked = Vec::new();
    for _ in 0..rounds {
        let (_, grant) = s.family_grant(&mut music, &s.alice, feature).await;
        revoke(&mut account, &s.alice, &grant.grant_id).await;
        revoked.push(grant.grant_id);
    }
    revoked
}

/// The next event of `stream`, within 10 s.
async fn next_event(stream: &mut tonic::Streaming<pb::GrantEvent>) -> pb::GrantEvent {
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_events_reach_a_watcher_on_another_replica_in_order_and_resume() {
    let (s, b) = two_replicas().await;
    let mut music_b = b.partner("music").await;
    let mut live = music_b.grant_events().await.unwrap();

    // Grants approved and revoked through both replicas at once, while B's watcher reads.
    // (One feature each: a request like a pending one is that request, not a new one.)
    let (through_a, through_b) = tokio::join!(
        churn(&s, &s.platform, "share-tracks", 8),
        churn(&s, &b, "listening-party", 8)
    );
    let mut expected: HashSet<String> = through_a.into_iter().chain(through_b).collect();
    let mut seen = Vec::new();
    while !expected.is_empty() {
        let event = next_event(&mut live).await;
        if event.kind == pb::GrantEventKind::GrantRevoked as i32 {
            assert!(
                expected.remove(&event.grant_id),
                "one revocation event per grant"
            );
        }
        seen.push(event);
    }
    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "in order, none repeated: {sequences:?}"
    );

    // A watcher on A reading from the start gets exactly what B's live watcher got: no
    // event committed late was skipped.
    let mut music_a = s.platform.partner("music").await;
    let mut replay = music_a.grant_events().await.unwrap();
    let mut replayed = Vec::new();
    for _ in 0..seen.len() {
        replayed.push(next_event(&mut replay).await.sequence);
    }
    assert_eq!(replayed, sequences);

    // And one resuming from a cursor halfway gets the rest.
    let half = seen.len() / 2;
    let mut resumed = music_a
        .consent
        .watch_grant_events(pb::WatchGrantEventsRequest {
            after_sequence: sequences[half],
        })
        .await
        .unwrap()
        .into_inner();
    for expected in &sequences[half + 1..] {
        assert_eq!(next_event(&mut resumed).await.sequence, *expected);
    }
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
        let verified = verify_audit(platform).await;
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
    end_to_end::postgres::require_installed();
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

/// The whole audit chain, verified through `platform`'s operator surface.
async fn verify_audit(platform: &TestPlatform) -> pb::VerifyAuditResponse {
    platform
        .operator()
        .await
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// The health of `platform`'s server as a whole, as its operator listener reports it.
async fn health(platform: &TestPlatform) -> i32 {
    let channel = platform
        .channel(platform.addrs.operator, Some(&platform.pki.operator))
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map_or(-1, |reply| reply.into_inner().status)
}

/// Waits up to 15 s for `platform`'s health to be `status`.
async fn wait_for_health(platform: &TestPlatform, status: ServingStatus) {
    for _ in 0..150 {
        if health(platform).await == status as i32 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("health did not become {status:?} within 15 s");
}

/// Lets the database take connections again, or refuses them and ends the open ones.
async fn database_reachable(platform: &TestPlatform, reachable: bool) {
    let Database::Postgres(url) = platform.database() else {
        panic!("a PostgreSQL platform")
    };
    let name = url.rsplit('/').next().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        let mut admin = end_to_end::postgres::server().admin();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}"
            ))
            .unwrap();
        if !reachable {
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    &[&name],
                )
                .unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_cut_off_from_the_database_refuse_report_not_serving_and_recover() {
    let (s, b) = two_replicas().await;
    let mut music_a = s.platform.partner("music").await;
    let mut music_b = b.partner("music").await;
    let (token, _) = s.music_grant(&mut music_a).await;
    music_b.list_threads(&token).await.unwrap();
    wait_for_health(&b, ServingStatus::Serving).await;

    database_reachable(&s.platform, false).await;
    wait_for_health(&b, ServingStatus::NotServing).await;
    wait_for_health(&s.platform, ServingStatus::NotServing).await;
    for music in [&mut music_a, &mut music_b] {
        let refused = music.list_threads(&token).await.unwrap_err();
        assert_refused(&refused, Code::Unavailable, "STORE_UNAVAILABLE");
    }

    // Back without a restart: serving, answering, and one chain that verifies.
    database_reachable(&s.platform, true).await;
    wait_for_health(&b, ServingStatus::Serving).await;
    music_b.list_threads(&token).await.unwrap();
    music_a.list_threads(&token).await.unwrap();
    let verified = verify_audit(&b).await;
    assert!(verified.ok, "{verified:?}");
}
