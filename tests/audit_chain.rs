//! The audit chain verifies, and tampering with the stored records is detected at the
//! first bad record; truncation is caught against an exported checkpoint. Reads that race a
//! revocation never leave an allowed use after it in the chain. A refusal is answered only
//! once its record commits, and the platform does not stop before it has: a shutdown
//! refuses new calls but finishes those in flight, their records committed.

use consent_core::model::{AuditEntry, AuditRecord};
use consent_proto::platform::v1 as pb;
use consent_store::{StoreError, hold_writer, read};
use end_to_end::database::Database;
use end_to_end::{Scenario, assert_refused, bearer};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

async fn busy_scenario() -> Scenario {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    for _ in 0..3 {
        music.list_threads(&token).await.unwrap();
    }
    music
        .messaging
        .list_friends(bearer(pb::ListFriendsRequest::default(), &token))
        .await
        .unwrap_err();
    s
}

fn tamper(s: &Scenario, sql: &str) {
    let changed = s.platform.database().execute(sql);
    assert!(changed > 0, "tampering changed nothing: {sql}");
}

async fn verify(s: &Scenario, checkpoint: Option<(u64, String)>) -> pb::VerifyAuditResponse {
    let (checkpoint_seq, checkpoint_hash) = checkpoint.unwrap_or_default();
    s.platform
        .operator()
        .await
        .verify_audit(pb::VerifyAuditRequest {
            checkpoint_seq,
            checkpoint_hash,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn an_untouched_chain_verifies_and_an_edited_record_is_named() {
    let s = busy_scenario().await;
    let clean = verify(&s, None).await;
    assert!(clean.ok, "{clean:?}");
    assert!(clean.records_checked >= 6);

    tamper(
        &s,
        "UPDATE audit SET decision = 'allow' WHERE reason = 'SCOPE_MISSING'",
    );
    let seq = s
        .platform
        .database()
        .query("SELECT seq FROM audit WHERE reason = 'SCOPE_MISSING'")[0][0]
        .int();
    let seq = u64::try_from(seq).unwrap();
    let tampered = verify(&s, None).await;
    assert!(!tampered.ok);
    assert_eq!(tampered.first_bad_seq, seq);
}

/// Every audit record in `db`, in order, read as a tamperer would.
fn stored_records(db: &Database) -> Vec<AuditRecord> {
    let rows = db.query(
        "SELECT seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, \
         reason, prev_hash, hash, mac FROM audit ORDER BY seq",
    );
    rows.iter()
        .map(|r| AuditRecord {
            seq: r[0].int(),
            at_ms: r[1].int(),
            entry: AuditEntry {
                partner_id: r[2].text(),
                user_id: r[3].text(),
                grant_id: r[4].text(),
                method: r[5].text(),
                resource: r[6].text(),
                decision: r[7].text(),
                reason: r[8].text(),
            },
            prev_hash: r[9].text(),
            hash: r[10].text(),
            mac: r[11].text(),
        })
        .collect()
}

#[tokio::test]
async fn a_chain_rewritten_and_rehashed_without_the_audit_key_is_named() {
    let s = busy_scenario().await;
    // Someone who can write the database, but has not the key file, turns a refusal into
    // an allowed call and recomputes every hash after it, so that the chain links again.
    let db = s.platform.database();
    db.execute("UPDATE audit SET decision = 'allow', reason = '' WHERE reason = 'SCOPE_MISSING'");
    let first = db.query("SELECT seq FROM audit WHERE method LIKE '%ListFriends'")[0][0].int();
    let mut records = stored_records(db);
    let mut prev = records
        .iter()
        .find(|r| r.seq == first - 1)
        .map(|r| r.hash.clone())
        .unwrap_or_default();
    for r in records.iter_mut().filter(|r| r.seq >= first) {
        r.prev_hash = prev.clone();
        r.hash = consent_core::audit::record_hash(r.seq, r.at_ms, &r.entry, &r.prev_hash);
        // Both hashes are hex: written into the statement as they are.
        db.execute(&format!(
            "UPDATE audit SET prev_hash = '{}', hash = '{}' WHERE seq = {}",
            r.prev_hash, r.hash, r.seq
        ));
        prev = r.hash.clone();
    }
    let tampered = verify(&s, None).await;
    assert!(!tampered.ok, "{tampered:?}");
    assert_eq!(tampered.first_bad_seq, u64::try_from(first).unwrap());
    assert!(tampered.problem.contains("MAC"), "{}", tampered.problem);
}

#[tokio::test]
async fn deleted_and_truncated_records_are_caught() {
    let s = busy_scenario().await;
    let export = s
        .platform
        .operator()
        .await
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(export.records.last().unwrap().seq, export.head_seq);

    tamper(&s, "DELETE FROM audit WHERE seq = 3");
    let deleted = verify(&s, None).await;
    assert_eq!(deleted.first_bad_seq, 3);

    let s = busy_scenario().await;
    let export = s
        .platform
        .operator()
        .await
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let checkpoint = (export.head_seq, export.head_hash.clone());
    tamper(
        &s,
        &format!("DELETE FROM audit WHERE seq >= {}", export.head_seq - 1),
    );
    let truncated = verify(&s, Some(checkpoint)).await;
    assert!(
        !truncated.ok,
        "truncation must be caught against the checkpoint"
    );
    assert_eq!(truncated.first_bad_seq, export.head_seq);
}

#[tokio::test]
async fn a_flipped_byte_and_swapped_records_are_named() {
    let s = busy_scenario().await;
    // One byte of one record changes: "/consent…" becomes "/Consent…".
    tamper(
        &s,
        "UPDATE audit SET method = '/C' || substr(method, 3) WHERE seq = 5",
    );
    let flipped = verify(&s, None).await;
    assert!(!flipped.ok);
    assert_eq!(flipped.first_bad_seq, 5);

    let s = busy_scenario().await;
    // Records 3 and 4 trade places (their sequence numbers are swapped).
    tamper(&s, "UPDATE audit SET seq = -3 WHERE seq = 3");
    tamper(&s, "UPDATE audit SET seq = 3 WHERE seq = 4");
    tamper(&s, "UPDATE audit SET seq = 4 WHERE seq = -3");
    let swapped = verify(&s, None).await;
    assert!(!swapped.ok);
    assert_eq!(swapped.first_bad_seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_a_revocation_leave_no_allowed_use_after_it() {
    let s = Scenario::new().await;
    end_to_end::races::reads_racing_a_revocation(&s, &s.platform).await;
}

#[tokio::test]
async fn a_refusal_is_answered_only_once_its_record_is_durable() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    let platform_store = Arc::clone(&s.platform.store);
    let release = hold_writer(platform_store.as_ref());

    let mut answer = tokio::spawn(async move {
        music
            .messaging
            .list_friends(bearer(pb::ListFriendsRequest::default(), &token))
            .await
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut answer).await;
    assert!(
        early.is_err(),
        "the refusal was answered before its record could commit"
    );

    drop(release);
    let refused = answer.await.unwrap().unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "SCOPE_MISSING");
    let recorded = read(&platform_store, |repo| {
        Ok::<_, StoreError>(
            repo.audit_records(0, 1000)?
                .into_iter()
                .filter(|r| r.entry.reason == "SCOPE_MISSING")
                .count(),
        )
    })
    .await
    .unwrap();
    assert_eq!(recorded, 1, "the refusal is in the chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_the_calls_in_flight_and_their_records() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    let Scenario { platform, .. } = s;
    let platform_store = Arc::clone(&platform.store);
    let partner_listener = platform.addrs.partner;
    let database = platform.database().clone();
    let _database_files = Arc::clone(&platform.dir);
    let release = hold_writer(platform_store.as_ref());

    let mut in_flight = {
        let mut music = music.messaging.clone();
        let token = token.clone();
        tokio::spawn(async move {
            music
                .list_threads(bearer(pb::ListThreadsRequest::default(), &token))
                .await
        })
    };
    // Long enough on a loaded machine for the call to reach the held writer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut stopping = tokio::spawn(platform.shutdown());
    let early = tokio::time::timeout(Duration::from_millis(500), &mut stopping).await;
    assert!(early.is_err(), "the platform stopped with a call in flight");
    let dialled = tokio::net::TcpStream::connect(partner_listener).await;
    assert!(
        dialled.is_err(),
        "the listener is closed while the platform drains"
    );
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        music
            .messaging
            .list_threads(bearer(pb::ListThreadsRequest::default(), &token)),
    )
    .await
    .expect("a call after the shutdown began is refused at once, not queued");
    let late = late.expect_err("a call after the shutdown began is not served");
    // Refused by the transport: the connection is closing (or already closed).
    assert!(
        matches!(late.code(), Code::Cancelled | Code::Unavailable),
        "{late:?}"
    );

    drop(release);
    let answered = tokio::time::timeout(Duration::from_secs(10), &mut in_flight)
        .await
        .expect("the call in flight is answered")
        .unwrap();
    assert!(
        answered.is_ok(),
        "the call in flight is served: {answered:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the platform stops once its calls are done")
        .unwrap();
    let after = read(&platform_store, |repo| repo.audit_head()).await;
    assert!(
        matches!(&after, Err(StoreError::Unavailable(m)) if m == "the store stopped"),
        "the platform closed its store before it stopped: {after:?}"
    );
    let recorded = database.query(
        "SELECT COUNT(*) FROM audit WHERE method LIKE '%ListThreads' AND decision = 'allow'",
    )[0][0]
        .int();
    assert_eq!(
        recorded, 1,
        "the call in flight is in the chain, and only it"
    );
}
