//! Containerised end-to-end tests: the images built from this checkout, the compose stack
//! (platform and five partners on a private network), the walkthrough's story against
//! it, and the faults a deployment meets: the platform stopped while partners send, the
//! platform restarted, a partner cut off from the network, a partner killed.
//!
//! Without Docker they have nothing to run against and say so; with `CI` set they fail.

use consent_proto::partner::v1 as app;
use consent_proto::platform::v1 as pb;
use end_to_end::compose::{ComposeStack, docker_available};
use end_to_end::story::{PartnerData, Stack, StackPartner, Story, register_profiles, tell};
use end_to_end::world::{
    connect_user, eventually, share_in_thread, share_with_friend, wait_for_deletion_attestation,
};
use end_to_end::{User, bearer, sign_up};
use pb::account_client::AccountClient;
use pb::partner_admin_client::PartnerAdminClient;
use std::time::Duration;
use tonic::transport::Channel;

/// Containers restart and reconnect more slowly than processes.
const WAIT: Duration = Duration::from_secs(90);

/// A stack with every profile registered and alice (friends with bob) signed up.
struct Seeded {
    stack: ComposeStack,
    account: AccountClient<Channel>,
    operator: PartnerAdminClient<Channel>,
    alice: User,
    bob: User,
}

async fn seeded(name: &str) -> Seeded {
    let stack = ComposeStack::up(name).await;
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
    if !docker_available() {
        return;
    }
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
}

#[tokio::test]
async fn stopping_the_platform_while_partners_send_delivers_every_accepted_share_once() {
    if !docker_available() {
        return;
    }
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
    if !docker_available() {
        return;
    }
    let mut s = seeded("restart").await;
    let thread = s
        .account
        .create_thread(bearer(
            pb::CreateThreadRequest {
                participant_ids: vec![s.bob.id.clone()],
                title: "t".into(),
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner()
        .thread_id;
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
    if !docker_available() {
        return;
    }
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
    assert!(store.token("alice").is_some());

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
        store.token("alice").is_some(),
        "cut off, the partner cannot have heard of the revocation yet"
    );

    s.stack.docker(&[
        "network", "connect", "--alias", "music", &network, &container,
    ]);
    eventually("the partner's purge after reconnecting", WAIT, async || {
        store.token("alice").is_none() && store.cached_messages("alice") == 0
    })
    .await;
    wait_for_deletion_attestation(&s.account, &s.alice, WAIT).await;
}

#[tokio::test]
async fn killing_one_partner_leaves_the_others_serving() {
    if !docker_available() {
        return;
    }
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
