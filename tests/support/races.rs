//! Races that tests run against one platform and against replicas of it.

use crate::{Scenario, TestPlatform, assert_refused, bearer};
use consent_proto::platform::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tonic::Code;

/// Sixteen readers list music's threads through `readers_on` (the scenario's platform, or
/// another replica of it) while alice revokes the grant through the scenario's platform;
/// then the audit chain must show every allowed read before the revocation, refusals
/// after it, and no allowed use after it.
pub async fn reads_racing_a_revocation(s: &Scenario, readers_on: &TestPlatform) {
    let mut music = readers_on.partner("music").await;
    let (token, grant) = s.music_grant(&mut music).await;
    let stop = Arc::new(AtomicBool::new(false));
    let allowed = Arc::new(AtomicUsize::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (mut messaging, token) = (music.messaging.clone(), token.clone());
        let (stop, allowed) = (stop.clone(), allowed.clone());
        readers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let listed = messaging
                    .list_threads(bearer(pb::ListThreadsRequest::default(), &token))
                    .await;
                if listed.is_ok() {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut account = s.platform.account().await;
    crate::revoke(&mut account, &s.alice, &grant.grant_id).await;
    let after = music.list_threads(&token).await.unwrap_err();
    assert_refused(&after, Code::PermissionDenied, "GRANT_REVOKED");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    while readers.join_next().await.is_some() {}
    assert!(
        allowed.load(Ordering::Relaxed) > 0,
        "reads ran before the revocation"
    );

    assert!(
        grant
            .grant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    );
    let records: Vec<(String, String, String)> = s
        .platform
        .database()
        .query(&format!(
            "SELECT method, decision, reason FROM audit WHERE grant_id = '{}' ORDER BY seq",
            grant.grant_id
        ))
        .into_iter()
        .map(|r| (r[0].text(), r[1].text(), r[2].text()))
        .collect();
    let revocation = records
        .iter()
        .position(|(method, _, _)| method.ends_with("/RevokeGrant"))
        .expect("the revocation is audited");
    let reads = |range: &[(String, String, String)], decision: &str| {
        range
            .iter()
            .filter(|(method, d, _)| method.ends_with("/ListThreads") && d == decision)
            .count()
    };
    assert_eq!(
        reads(&records[..revocation], "allow"),
        allowed.load(Ordering::Relaxed),
        "every allowed read is audited before the revocation"
    );
    let later = &records[revocation + 1..];
    assert!(
        reads(later, "deny") > 0,
        "reads continued after the revocation"
    );
    assert_eq!(
        reads(later, "allow"),
        0,
        "no allowed use after the revocation"
    );
    assert!(
        later.iter().all(|(_, _, reason)| reason == "GRANT_REVOKED"),
        "every later record is a refusal for the revocation"
    );
}
