//! A platform process with the music partner registered and alice (friends with bob)
//! signed up: the starting point of the process-level tests.

use crate::processes::{PartnerProcess, PlatformPorts, Process, WorkDir, ensure_built};
use crate::{User, bearer, sign_up};
use consent_proto::partner::v1 as app;
use consent_proto::platform::v1 as pb;
use pb::account_client::AccountClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The seeded world.
pub struct World {
    /// PKI and files.
    pub work: WorkDir,
    /// The platform's listeners.
    pub ports: PlatformPorts,
    /// The platform's own client.
    pub account: AccountClient<Channel>,
    /// The user who connects apps.
    pub alice: User,
    /// Her friend.
    pub bob: User,
    /// Where the music app's web app listens once started with `start_partner_at` (its
    /// redirect URI is registered).
    pub music_web: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts the platform, registers music, signs up alice and bob.
pub async fn world() -> (World, Process) {
    world_with(crate::processes::TEST_LOG, &[]).await
}

/// Like [`world`], the platform logging at `log_filter` and started with more `flags`.
pub async fn world_with(log_filter: &str, flags: &[String]) -> (World, Process) {
    ensure_built();
    let dir = tempfile::tempdir().unwrap();
    let work = WorkDir::new(dir.path());
    let ports = PlatformPorts::free();
    let database = work.path.join("platform.db").display().to_string();
    let platform = crate::processes::start_platform_named(
        &work, "platform", ports, &database, "", log_filter, flags,
    )
    .await;
    let music_web = std::net::SocketAddr::from(([127, 0, 0, 1], crate::processes::free_port()));
    let mut operator = pb::partner_admin_client::PartnerAdminClient::new(
        work.channel(ports.operator, Some("operator"))
            .await
            .unwrap(),
    );
    let scopes = [
        pb::Scope::ThreadsRead,
        pb::Scope::MessagesRead,
        pb::Scope::MessagesWrite,
        pb::Scope::MessagesDelete,
    ]
    .map(|s| s as i32)
    .to_vec();
    operator
        .register_partner(pb::RegisterPartnerRequest {
            partner_id: "music".into(),
            display_name: "Music App".into(),
            allowed_scopes: scopes.clone(),
            features: vec![pb::Feature {
                name: "share-tracks".into(),
                description: "share".into(),
                scopes,
                retired: false,
                card_kinds: vec![pb::CardKind::Track as i32],
            }],
            redirect_uris: vec![crate::processes::redirect_uri_at(music_web)],
        })
        .await
        .unwrap();
    let mut account = AccountClient::new(work.channel(ports.user, None).await.unwrap());
    let alice = sign_up(&mut account, "alice").await;
    let bob = sign_up(&mut account, "bob").await;
    crate::befriend(&mut account, &alice, &bob).await;
    (
        World {
            work,
            ports,
            account,
            alice,
            bob,
            music_web,
            _dir: dir,
        },
        platform,
    )
}

/// alice connects the music partner, approving everything it asks.
pub async fn connect_alice(
    w: &mut World,
    music: &PartnerProcess,
) -> app::partner_app_client::PartnerAppClient<Channel> {
    let mut client = music.client(&w.work, "music").await;
    connect_user(&mut client, &mut w.account, &w.alice, vec![]).await;
    client
}

/// `user` connects the partner behind `partner` and approves, in the platform's app,
/// everything pending (with listed coverage, picking `thread_ids`, the user's own ids);
/// the partner then reports the user connected. Returns the picked threads by the
/// partner's ids for them.
pub async fn connect_user(
    partner: &mut app::partner_app_client::PartnerAppClient<Channel>,
    account: &mut AccountClient<Channel>,
    user: &User,
    thread_ids: Vec<String>,
) -> Vec<String> {
    let name = user.name.clone();
    partner
        .connect_user(app::ConnectUserRequest {
            user_name: name.clone(),
            thread_ids: Vec::new(),
        })
        .await
        .unwrap();
    let pending = account
        .list_pending_requests(bearer(
            pb::ListPendingRequestsRequest::default(),
            &user.session,
        ))
        .await
        .unwrap()
        .into_inner();
    for request in pending.requests {
        account
            .approve_request(bearer(
                pb::ApproveRequestRequest {
                    request_id: request.request_id,
                    thread_ids: thread_ids.clone(),
                    ..Default::default()
                },
                &user.session,
            ))
            .await
            .unwrap();
    }
    let status = partner
        .connection_status(app::ConnectionStatusRequest { user_name: name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, "CONNECTED");
    status.thread_ids
}

/// Waits until `check` holds, at most `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to a partner's store.
pub fn partner_db(music: &PartnerProcess) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(&music.database).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

/// Waits until `user`'s first grant shows the partner's deletion attestation.
pub async fn wait_for_deletion_attestation(
    account: &AccountClient<Channel>,
    user: &User,
    within: Duration,
) {
    let mut account = account.clone();
    eventually("the deletion attestation", within, async || {
        let grants = account
            .list_grants(bearer(pb::ListGrantsRequest::default(), &user.session))
            .await
            .unwrap()
            .into_inner()
            .grants;
        grants[0].deletion_attested_at.is_some()
    })
    .await;
}

/// A share from `user` that starts a thread with `friend_id`.
pub fn share_with_friend(
    user: &str,
    friend_id: &str,
    body: &str,
    client_key: &str,
) -> app::ShareRequest {
    app::ShareRequest {
        user_name: user.into(),
        friend_id: friend_id.into(),
        body: body.into(),
        client_key: client_key.into(),
        ..Default::default()
    }
}

/// `share` with `card`.
pub fn with_card(share: app::ShareRequest, card: pb::card::Kind) -> app::ShareRequest {
    app::ShareRequest {
        card: Some(pb::Card { kind: Some(card) }),
        ..share
    }
}

/// alice's share of `body` with bob, under the front end's `client_key`, through the
/// music app's API; the platform's answer as the app reports it.
pub async fn share_with_bob(
    client: &mut app::partner_app_client::PartnerAppClient<Channel>,
    w: &World,
    body: &str,
    client_key: &str,
) -> app::ShareResponse {
    let bob = w.work.shown_to("music").handle(&w.bob.id);
    client
        .share(share_with_friend("alice", &bob, body, client_key))
        .await
        .expect("share")
        .into_inner()
}

/// A share from `user` into an existing thread.
pub fn share_in_thread(
    user: &str,
    thread_id: &str,
    body: &str,
    client_key: &str,
) -> app::ShareRequest {
    app::ShareRequest {
        user_name: user.into(),
        thread_id: thread_id.into(),
        body: body.into(),
        client_key: client_key.into(),
        ..Default::default()
    }
}
