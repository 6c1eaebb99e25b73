//! Durability under `kill -9`: the platform, and then a partner, are killed 50 times in the
//! middle of concurrent writes. After every kill, everything acknowledged is on disk
//! (messages with their audit records; the partner's outbox entries), SQLite's
//! `integrity_check` is ok, and at the end the audit chain verifies and every acknowledged
//! share has been delivered exactly once.

use consent_proto::platform::v1 as pb;
use end_to_end::bearer;
use end_to_end::processes::{start_partner, start_platform};
use end_to_end::world::{World, connect_alice, eventually, share_in_thread, share_with_bob, world};
use std::time::Duration;
use tokio::task::JoinSet;

/// Kills per test.
const ROUNDS: u64 = 50;
/// Concurrent writers per round.
const WRITERS: u64 = 4;

/// How long writers run before the kill, varied from round to round.
fn time_before_kill(round: u64) -> Duration {
    Duration::from_millis(40 + (round * 37) % 160)
}

fn integrity_ok(path: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    db
}

async fn all_messages(w: &mut World, thread_id: &str) -> Vec<pb::Message> {
    let mut messages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListMessagesRequest {
            thread_id: thread_id.into(),
            page_size: 100,
            page_token,
        };
        let page = w
            .account
            .list_messages(bearer(request, &w.alice.session))
            .await
            .unwrap()
            .into_inner();
        messages.extend(page.messages);
        if page.next_page_token.is_empty() {
            return messages;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn acknowledged_sends_survive_fifty_kills_of_the_platform() {
    let (mut w, mut platform) = world().await;
    let thread = end_to_end::create_thread(&mut w.account, &w.alice, &[&w.bob], "t").await;
    let partner_channel = w
        .work
        .channel(w.ports.partner, Some("partner-music"))
        .await
        .unwrap();
    let mut consent = pb::consent_client::ConsentClient::new(partner_channel);
    let asked = consent
        .request_access(pb::RequestAccessRequest {
            binding_message: "1234-5678".into(),
            account_label: "the test account".into(),
            user_name: "alice".into(),
            feature: "share-tracks".into(),
            coverage: pb::ThreadCoverage::AllThreads as i32,
            purpose: "durability".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    w.account
        .approve_request(bearer(
            pb::ApproveRequestRequest {
                request_id: asked.request_id.clone(),
                ..Default::default()
            },
            &w.alice.session,
        ))
        .await
        .unwrap();
    let token = consent
        .exchange_request(pb::ExchangeRequestRequest {
            request_id: asked.request_id,
        })
        .await
        .unwrap()
        .into_inner()
        .grant_token;

    let shown = w.work.shown_to("music");
    let thread = shown.thread(&thread);
    let database = w.work.path.join("platform.db");
    let mut acknowledged = 0;
    for round in 0..ROUNDS {
        let channel = w
            .work
            .channel(w.ports.partner, Some("partner-music"))
            .await
            .unwrap();
        let mut writers = JoinSet::new();
        for writer in 0..WRITERS {
            let mut messaging = pb::messaging_client::MessagingClient::new(channel.clone());
            let (thread, token) = (thread.clone(), token.clone());
            writers.spawn(async move {
                let mut acked = Vec::new();
                for n in 0.. {
                    let key = format!("r{round}-w{writer}-{n}");
                    let request = pb::SendMessageRequest {
                        thread_id: thread.clone(),
                        body: key.clone(),
                        idempotency_key: key,
                        card: None,
                    };
                    match messaging.send_message(bearer(request, &token)).await {
                        Ok(response) => acked.push(response.into_inner().message_id),
                        Err(_) => return acked,
                    }
                }
                acked
            });
        }
        tokio::time::sleep(time_before_kill(round)).await;
        platform.kill();
        let acked: Vec<String> = writers.join_all().await.into_iter().flatten().collect();

        let db = integrity_ok(&database);
        for shown_id in &acked {
            let id = shown
                .message_named(shown_id)
                .expect("an id the platform gave");
            let stored: i64 = db
                .query_row("SELECT COUNT(*) FROM messages WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(
                stored, 1,
                "round {round}: acknowledged message {id} was lost"
            );
            let audited: i64 = db
                .query_row("SELECT COUNT(*) FROM audit WHERE decision = 'allow' AND instr(resource, ?1) > 0", [&id], |r| r.get(0))
                .unwrap();
            assert_eq!(
                audited, 1,
                "round {round}: the audit record of {id} was lost"
            );
        }
        acknowledged += acked.len();
        drop(db);
        platform = start_platform(&w.work, w.ports).await;
    }
    let verified = w.work.verify_audit(w.ports.operator).await;
    assert!(verified.ok, "{verified:?}");
    assert!(acknowledged > 0);
    println!(
        "platform durability: {ROUNDS} kills, {acknowledged} acknowledged sends, 0 lost, audit chain of {} records verifies",
        verified.records_checked
    );
}

#[tokio::test]
async fn acknowledged_shares_survive_fifty_kills_of_the_partner() {
    let (mut w, _platform) = world().await;
    let mut music = start_partner(&w.work, "music", w.ports).await;
    let mut client = connect_alice(&mut w, &music).await;
    let first = share_with_bob(&mut client, &w, "first", "first").await;
    let thread = first.thread_id;
    let real_thread = w.work.shown_to("music").thread_named(&thread).unwrap();

    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut writers = JoinSet::new();
        for writer in 0..WRITERS {
            let mut client = music.client(&w.work, "music").await;
            let thread = thread.clone();
            writers.spawn(async move {
                let mut acked = Vec::new();
                for n in 0.. {
                    let key = format!("r{round}-w{writer}-{n}");
                    let share = share_in_thread("alice", &thread, &key, &key);
                    match client.share(share).await {
                        Ok(response) => acked.push((key, response.into_inner().share_id)),
                        Err(_) => return acked,
                    }
                }
                acked
            });
        }
        tokio::time::sleep(time_before_kill(round)).await;
        music.process.kill();
        let acked: Vec<(String, String)> = writers.join_all().await.into_iter().flatten().collect();

        let db = integrity_ok(&music.database);
        for (body, share_id) in &acked {
            let stored: i64 = db
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE share_id = ?1 AND body = ?2",
                    [share_id, body],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                stored, 1,
                "round {round}: acknowledged share {share_id} was lost from the outbox"
            );
        }
        acknowledged.extend(acked.into_iter().map(|(body, _)| body));
        drop(db);
        music = start_partner(&w.work, "music", w.ports).await;
    }

    let delivered_all = async |w: &mut World| {
        let messages = all_messages(w, &real_thread).await;
        let bodies: std::collections::HashSet<&str> =
            messages.iter().map(|m| m.body.as_str()).collect();
        acknowledged
            .iter()
            .all(|body| bodies.contains(body.as_str()))
    };
    eventually(
        "delivery of every acknowledged share",
        Duration::from_secs(60),
        async || delivered_all(&mut w).await,
    )
    .await;
    let messages = all_messages(&mut w, &real_thread).await;
    let mut seen = std::collections::HashMap::new();
    for m in &messages {
        *seen.entry(m.body.as_str()).or_insert(0) += 1;
    }
    // Nothing is ever delivered twice, acknowledged or not.
    assert!(
        seen.values().all(|n| *n == 1),
        "a share was delivered twice"
    );
    drop(client);
    println!(
        "partner durability: {ROUNDS} kills, {} acknowledged shares, 0 lost, 0 duplicated",
        acknowledged.len()
    );
}
