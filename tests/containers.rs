//! Containerised end-to-end tests: the images built from this checkout, the compose stack
//! (platform and five partners on a private network), the walkthrough's story against
//! it, and the faults a deployment meets: the platform stopped while partners send, the
//! platform restarted, a partner cut off from the network, a partner killed. Then the
//! replicated stack (PostgreSQL, two replicas, the partners knowing both) and its faults:
//! a replica killed while partners send, a replica cut off from the database, the
//! database restarted under load.
//!
//! Without Docker (and, for the replicated stack, the machine's PostgreSQL) they fail,
//! naming what to install.

use consent_proto::partner::v1 as app;
use consent_proto::platform::v1 as pb;
use end_to_end::compose::{ComposeStack, require_docker};
use end_to_end::postgres;
use end_to_end::story::{PartnerData, Stack, StackPartner, Story, register_profiles, tell};
use end_to_end::world::{
    connect_user, eventually, share_in_thread, share_with_friend, wait_for_deletion_attestation,
};
use end_to_end::{User, bearer, sign_up};
use pb::account_client::AccountClient;
use pb::partner_admin_client::PartnerAdminClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

/// Containers restart and reconnect more slowly than processes.
const WAIT: Duration = Duration::from_secs(90);
/// Shares each partner sends while a replica is killed.
const SHARES: usize = 30;

/// A stack with every profile registered and alice (friends with bob) signed up.
struct Seeded {
    stack: ComposeStack,
    account: AccountClient<Channel>,
    operator: PartnerAdminClient<Channel>,
    alice: User,
    bob: User,
}

async fn seeded(name: &str) -> Seeded {
    seed(ComposeStack::up(name).await).await
}

async fn seed(stack: ComposeStack) -> Seeded {
    let mut operator = PartnerAdminClient::new(
        stack
            .work
            .channel(stack.operator, Some("operator"))
            .await
            .unwrap(),
    );
    let mut story = Story::default();
    register_profiles(&mut story, &mut operator, &stack.redirect_uris()).await;
    assert_eq!(story.failures, 0);
    let mut account = AccountClient::new(stack.work.channel(stack.user, None).await.unwrap());
    let alice = sign_up(&mut account, "alice").await;
    let bob = sign_up(&mut account, "bob").await;
    end_to_end::befriend(&mut account, &alice, &bob).await;
    Seeded {
        stack,
        account,
        operator,
        alice,
        bob,
    }
}

impl Seeded {
    async fn partner(&self, service: &str) -> app::partner_app_client::PartnerAppClient<Channel> {
        app::partner_app_client::PartnerAppClient::new(
            self.stack
                .work
                .channel(
                    self.stack.partner_addr(service),
                    Some(&format!("partner-{service}")),
                )
                .await
                .unwrap(),
        )
    }

    /// alice connects `service`, approving everything it asks (with listed coverage,
    /// picking `thread_ids`). Returns the partner's client and its ids for those threads.
    async fn connect_alice(
        &mut self,
        service: &str,
        thread_ids: Vec<String>,
    ) -> (
        app::partner_app_client::PartnerAppClient<Channel>,
        Vec<String>,
    ) {
        let mut partner = self.partner(service).await;
        let shown = connect_user(&mut partner, &mut self.account, &self.alice, thread_ids).await;
        (partner, shown)
    }

    /// bob's handle for `service`.
    fn bob_for(&self, service: &str) -> String {
        self.stack.work.shown_to(service).handle(&self.bob.id)
    }

    async fn messages(&mut self, thread_id: &str) -> Vec<pb::Message> {
        self.account
            .list_messages(bearer(
                pb::ListMessagesRequest {
                    thread_id: thread_id.into(),
                    page_size: 100,
                    page_token: String::new(),
                },
                &self.alice.session,
            ))
            .await
            .map(|r| r.into_inner().messages)
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn the_walkthrough_story_runs_against_the_containers() {
    require_docker();
    let stack = ComposeStack::up("story").await;
    let mut operator = PartnerAdminClient::new(
        stack
            .work
            .channel(stack.operator, Some("operator"))
            .await
            .unwrap(),
    );
    let mut story = Story::default();
    register_profiles(&mut story, &mut operator, &stack.redirect_uris()).await;
    let partners = end_to_end::processes::PROFILES
        .iter()
        .map(|&service| StackPartner {
            id: service,
            api: stack.partner_addr(service),
            web_origin: stack.partner_web_origin(service),
            data: Box::new(stack.partner_store(service)) as Box<dyn PartnerData>,
        })
        .collect();
    let view = Stack {
        work: &stack.work,
        partner: stack.partner,
        operator: stack.operator,
        user: stack.user,
        web_origin: format!("https://localhost:{}", stack.web.port()),
        partners,
    };
    tell(&mut story, &view).await;
    assert_eq!(
        story.failures, 0,
        "{} of {} steps did not behave as told",
        story.failures, story.steps
    );
    assert!(story.steps > 40);

    // The published /metrics endpoints count what the story did.
    let platform = end_to_end::telemetry::scrape(stack.ops).await;
    assert!(
        platform
            .lines()
            .any(|l| l.starts_with("consent_rpc_calls_total{")
                && l.contains("surface=\"partner\"")
                && l.contains("code=\"PERMISSION_DENIED\"")),
        "the platform counts refused partner calls:\n{platform}"
    );
    let music = end_to_end::telemetry::scrape(stack.music_ops).await;
    assert!(
        music
            .lines()
            .any(|l| l.starts_with("consent_rpc_calls_total{") && l.contains("surface=\"app\"")),
        "the music app counts its own calls:\n{music}"
    );
}

#[tokio::test]
async fn stopping_the_platform_while_partners_send_delivers_every_accepted_share_once() {
    require_docker();
    let mut s = seeded("stop").await;
    let (mut music, _) = s.connect_alice("music", vec![]).await;
    let first = music
        .share(share_with_friend(
            "alice",
            &s.bob_for("music"),
            "share 0",
            "k0",
        ))
        .await
        .unwrap()
        .into_inner();
    let thread = first.thread_id.clone();
    let alices_view = s
        .stack
        .work
        .shown_to("music")
        .thread_named(&thread)
        .unwrap();

    // Send continuously from another task while the platform container is stopped.
    let sender = {
        let mut music = music.clone();
        let thread = thread.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 1..=40 {
                let share =
                    share_in_thread("alice", &thread, &format!("share {n}"), &format!("k{n}"));
                if let Ok(response) = music.share(share).await {
                    accepted.push((n, response.into_inner().status));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.stack.compose(&["stop", "-t", "0", "platform"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.stack.compose(&["start", "platform"]);
    let accepted = sender.await.unwrap();
    assert!(
        accepted.iter().any(|(_, status)| status == "QUEUED"),
        "some shares must have waited for the platform: {accepted:?}"
    );

    let expected = accepted.len() + 1;
    eventually("delivery of every accepted share", WAIT, async || {
        s.messages(&alices_view).await.len() >= expected
    })
    .await;
    let messages = s.messages(&alices_view).await;
    for (n, _) in &accepted {
        let body = format!("share {n}");
        assert_eq!(
            messages.iter().filter(|m| m.body == body).count(),
            1,
            "{body} must arrive exactly once"
        );
    }
    assert_eq!(
        messages.len(),
        expected,
        "nothing beyond the accepted shares"
    );
    music
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn restarting_the_platform_keeps_its_data_and_audit_chain() {
    require_docker();
    let mut s = seeded("restart").await;
    let thread = end_to_end::create_thread(&mut s.account, &s.alice, &[&s.bob], "t").await;
    let (mut bank, banks) = s.connect_alice("bank", vec![thread.clone()]).await;
    let receipt = bank
        .share(share_in_thread("alice", &banks[0], "receipt", "r1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.status, "DELIVERED");
    let before = s
        .operator
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();

    s.stack.compose(&["restart", "-t", "5", "platform"]);
    s.stack
        .work
        .wait_healthy(
            s.stack.operator,
            Some("operator"),
            "consent.platform.v1.PartnerAdmin",
            "docker logs",
        )
        .await;

    let mut operator = PartnerAdminClient::new(
        s.stack
            .work
            .channel(s.stack.operator, Some("operator"))
            .await
            .unwrap(),
    );
    let verified = operator
        .verify_audit(pb::VerifyAuditRequest {
            checkpoint_seq: before.head_seq,
            checkpoint_hash: before.head_hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert!(verified.records_checked >= before.head_seq);
    s.account = AccountClient::new(s.stack.work.channel(s.stack.user, None).await.unwrap());
    let signed_in = s
        .account
        .sign_in(pb::SignInRequest {
            user_name: "alice".into(),
            password: "correct horse".into(),
        })
        .await;
    assert!(signed_in.is_ok(), "users survive the restart");
    assert!(
        s.messages(&thread)
            .await
            .iter()
            .any(|m| m.body == "receipt"),
        "messages survive the restart"
    );
}

#[tokio::test]
async fn a_partner_cut_off_from_the_network_applies_a_revocation_when_it_is_back() {
    require_docker();
    let mut s = seeded("netcut").await;
    let (mut music, _) = s.connect_alice("music", vec![]).await;
    let shared = music
        .share(share_with_friend(
            "alice",
            &s.bob_for("music"),
            "track",
            "k",
        ))
        .await
        .unwrap()
        .into_inner();
    music
        .inbox(app::InboxRequest {
            user_name: "alice".into(),
            thread_id: shared.thread_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let store = s.stack.partner_store("music");
    assert!(matches!(store.token("alice"), Ok(Some(_))));

    let (network, container) = (s.stack.network(), s.stack.container("music"));
    s.stack
        .docker(&["network", "disconnect", &network, &container]);
    let grants = s
        .account
        .list_grants(bearer(pb::ListGrantsRequest::default(), &s.alice.session))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let grant_id = grants[0].grant_id.clone();
    s.account
        .revoke_grant(bearer(
            pb::RevokeGrantRequest { grant_id },
            &s.alice.session,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        matches!(store.token("alice"), Ok(Some(_))),
        "cut off, the partner cannot have heard of the revocation yet"
    );

    s.stack.docker(&[
        "network", "connect", "--alias", "music", &network, &container,
    ]);
    eventually("the partner's purge after reconnecting", WAIT, async || {
        store.token("alice") == Ok(None) && store.cached_messages("alice") == Ok(0)
    })
    .await;
    wait_for_deletion_attestation(&s.account, &s.alice, WAIT).await;
}

#[tokio::test]
async fn killing_one_partner_leaves_the_others_serving() {
    require_docker();
    let mut s = seeded("kill").await;
    let (mut video, _) = s.connect_alice("video", vec![]).await;
    s.stack.compose(&["kill", "music"]);
    let friends = video
        .list_friends(app::ListFriendsRequest {
            user_name: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(friends.friends.len(), 1);
    let sent = video
        .share(share_with_friend(
            "alice",
            &s.bob_for("video"),
            "watch this",
            "v1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.status, "DELIVERED");
    let mut bank = s.partner("bank").await;
    let health = bank
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, "NOT_CONNECTED");
    assert!(
        s.stack
            .work
            .channel(s.stack.partner_addr("music"), None)
            .await
            .is_err(),
        "the killed partner is gone"
    );
}

/// Sends `count` shares from `partner` into its thread `thread`, 30 ms apart, bodies
/// `<prefix> <n>`; returns the numbers the partner accepted.
fn send_continuously(
    mut partner: app::partner_app_client::PartnerAppClient<Channel>,
    thread: String,
    prefix: &'static str,
    count: usize,
) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        for n in 1..=count {
            let body = format!("{prefix} {n}");
            let key = format!("{prefix}-{n}");
            if partner
                .share(share_in_thread("alice", &thread, &body, &key))
                .await
                .is_ok()
            {
                accepted.push(n);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        accepted
    })
}

impl Seeded {
    /// Waits until each accepted share of `prefix` is in alice's thread `thread` (by the
    /// platform's id), then checks each arrived exactly once.
    async fn delivered_once(&mut self, thread: &str, prefix: &str, accepted: &[usize]) {
        assert!(!accepted.is_empty(), "{prefix} had no share accepted");
        let mine = |m: &pb::Message| m.body.starts_with(&format!("{prefix} "));
        eventually(
            &format!("delivery of every accepted {prefix} share"),
            WAIT,
            async || {
                self.messages(thread)
                    .await
                    .iter()
                    .filter(|m| mine(m))
                    .count()
                    >= accepted.len()
            },
        )
        .await;
        let messages = self.messages(thread).await;
        for n in accepted {
            let body = format!("{prefix} {n}");
            let copies = messages.iter().filter(|m| m.body == body).count();
            assert_eq!(copies, 1, "{body} must arrive exactly once");
        }
        let delivered = messages.iter().filter(|m| mine(m)).count();
        assert_eq!(
            delivered,
            accepted.len(),
            "nothing beyond the accepted {prefix} shares"
        );
    }

    /// A thread alice starts with bob on the platform.
    async fn family_thread(&mut self) -> String {
        end_to_end::create_thread(&mut self.account, &self.alice, &[&self.bob], "family").await
    }

    /// alice's client of replica B's user surface.
    async fn account_on_b(&self) -> AccountClient<Channel> {
        let b = self.stack.replica_b.expect("the replicated stack");
        AccountClient::new(self.stack.work.channel(b.user, None).await.unwrap())
    }
}

/// Fails the test unless the replicated stack can run here: besides Docker, its database
/// image is made from the machine's PostgreSQL.
fn require_replicated_stack() {
    require_docker();
    postgres::require_installed();
}

/// The health of the platform whose user listener is `user`, or -1 when unreachable.
async fn platform_health(stack: &ComposeStack, user: std::net::SocketAddr) -> i32 {
    let Ok(channel) = stack.work.channel(user, None).await else {
        return -1;
    };
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map_or(-1, |reply| reply.into_inner().status)
}

#[tokio::test]
async fn killing_a_replica_while_partners_send_delivers_every_accepted_share_once() {
    require_replicated_stack();
    let mut s = seed(ComposeStack::up_replicated("replica-kill").await).await;
    let family = s.family_thread().await;
    let (mut music, _) = s.connect_alice("music", vec![]).await;
    let (files, files_threads) = s.connect_alice("files", vec![family.clone()]).await;
    let (bank, bank_threads) = s.connect_alice("bank", vec![family.clone()]).await;
    let first = music
        .share(share_with_friend(
            "alice",
            &s.bob_for("music"),
            "music 0",
            "music-0",
        ))
        .await
        .unwrap()
        .into_inner();
    let music_thread = s
        .stack
        .work
        .shown_to("music")
        .thread_named(&first.thread_id)
        .unwrap();

    // Three partners send while replica A is killed: those it served move to B.
    let senders = [
        send_continuously(music, first.thread_id.clone(), "music", SHARES),
        send_continuously(files, files_threads[0].clone(), "files", SHARES),
        send_continuously(bank, bank_threads[0].clone(), "bank", SHARES),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.stack.compose(&["kill", "platform-a"]);
    let mut accepted = Vec::new();
    for sender in senders {
        accepted.push(sender.await.unwrap());
    }
    for (prefix, shares) in ["music", "files", "bank"].iter().zip(&accepted) {
        // A share the platform could not take stays queued, and is accepted all the same.
        assert_eq!(shares.len(), SHARES, "{prefix}: every share accepted");
    }

    // Read through replica B: every accepted share, once.
    s.account = s.account_on_b().await;
    let mut music_accepted = accepted[0].clone();
    music_accepted.insert(0, 0);
    s.delivered_once(&music_thread, "music", &music_accepted)
        .await;
    s.delivered_once(&family, "files", &accepted[1]).await;
    s.delivered_once(&family, "bank", &accepted[2]).await;
}

#[tokio::test]
async fn a_replica_cut_off_from_the_database_stops_serving_and_recovers_without_a_restart() {
    require_replicated_stack();
    let mut s = seed(ComposeStack::up_replicated("replica-cut").await).await;
    let family = s.family_thread().await;
    let (files, files_threads) = s.connect_alice("files", vec![family.clone()]).await;
    let (bank, bank_threads) = s.connect_alice("bank", vec![family.clone()]).await;
    let mut account_a = s.account.clone();
    let list = |session: &str| bearer(pb::ListThreadsRequest::default(), session);
    account_a
        .list_threads(list(&s.alice.session))
        .await
        .unwrap();

    // Replica A loses the database: it says so, and refuses rather than answering.
    let (network, container) = (s.stack.database_network(), s.stack.container("platform-a"));
    s.stack
        .docker(&["network", "disconnect", &network, &container]);
    eventually("replica A reporting NOT_SERVING", WAIT, async || {
        platform_health(&s.stack, s.stack.user).await == ServingStatus::NotServing as i32
    })
    .await;
    let refused = account_a
        .list_threads(list(&s.alice.session))
        .await
        .unwrap_err();
    end_to_end::assert_refused(&refused, tonic::Code::Unavailable, "STORE_UNAVAILABLE");

    // The partners that were on A move to B: every share they accept arrives.
    let senders = [
        send_continuously(files, files_threads[0].clone(), "files", 10),
        send_continuously(bank, bank_threads[0].clone(), "bank", 10),
    ];
    let mut accepted = Vec::new();
    for sender in senders {
        accepted.push(sender.await.unwrap());
    }
    s.account = s.account_on_b().await;
    s.delivered_once(&family, "files", &accepted[0]).await;
    s.delivered_once(&family, "bank", &accepted[1]).await;

    // Back on the network, A serves again without a restart.
    s.stack
        .docker(&["network", "connect", &network, &container]);
    eventually("replica A serving again", WAIT, async || {
        platform_health(&s.stack, s.stack.user).await == ServingStatus::Serving as i32
    })
    .await;
    let threads = account_a
        .list_threads(list(&s.alice.session))
        .await
        .unwrap()
        .into_inner()
        .threads;
    assert_eq!(threads.len(), 1, "A reads the database again: {threads:?}");
}

#[tokio::test]
async fn restarting_the_database_under_load_loses_no_accepted_share_and_the_chain_verifies() {
    require_replicated_stack();
    let mut s = seed(ComposeStack::up_replicated("db-restart").await).await;
    let family = s.family_thread().await;
    let (files, files_threads) = s.connect_alice("files", vec![family.clone()]).await;
    let (bank, bank_threads) = s.connect_alice("bank", vec![family.clone()]).await;
    let senders = [
        send_continuously(files, files_threads[0].clone(), "files", 40),
        send_continuously(bank, bank_threads[0].clone(), "bank", 40),
    ];
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.stack.compose(&["restart", "-t", "5", "postgres"]);
    let mut accepted = Vec::new();
    for sender in senders {
        let shares = sender.await.unwrap();
        assert_eq!(
            shares.len(),
            40,
            "every share accepted, queued while the database was down"
        );
        accepted.push(shares);
    }
    s.delivered_once(&family, "files", &accepted[0]).await;
    s.delivered_once(&family, "bank", &accepted[1]).await;

    // Both replicas came back: each serves, answers, and verifies one chain.
    let b = s.stack.replica_b.expect("the replicated stack");
    for (user, operator) in [(s.stack.user, s.stack.operator), (b.user, b.operator)] {
        eventually("the replica serving", WAIT, async || {
            platform_health(&s.stack, user).await == ServingStatus::Serving as i32
        })
        .await;
        let verified = s.stack.work.verify_audit(operator).await;
        assert!(verified.ok, "{verified:?}");
    }
}
