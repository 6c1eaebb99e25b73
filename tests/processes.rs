//! End-to-end over real processes: the `platform-svc` and `partner-svc` binaries, talking
//! mutual TLS on loopback. A platform restart in the middle of sending loses and
//! duplicates nothing; a shutdown commits the record of a call cut off before it; a
//! revocation reaches the partner, even one that was down when it happened, and the user's
//! data there is gone. On `SIGHUP` a partner takes its front ends' new revocation list, or
//! nothing when a file does not load, and presents its renewed certificate to the platform.

use consent_proto::partner::v1 as app;
use consent_proto::platform::v1 as pb;
use consent_tls::pki::{IssuedCertificate, LeafSpec, Usage, partner_leaf};
use consent_tls::principal::partner_spiffe_id;
use end_to_end::processes::{
    PartnerProcess, TRUST_DOMAIN, WorkDir, ensure_built, free_port, start_partner,
    start_partner_flagged, start_platform,
};
use end_to_end::reflection::assert_serves_health_and_reflection;
use end_to_end::story::{ProcessStack, Story, tell};
use end_to_end::telemetry::scrape;
use end_to_end::world::{
    connect_alice, eventually, partner_db, share_in_thread, share_with_bob,
    wait_for_deletion_attestation, with_card, world,
};
use end_to_end::{assert_invalid_field, assert_partner_refused, bearer, served_certificate};
use pb::account_client::AccountClient;
use pb::messaging_client::MessagingClient;
use rustix::process::Signal;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_types::StatusExt;

const WAIT: Duration = Duration::from_secs(20);

/// How many of the partner's shares its outbox holds as delivered.
fn delivered_shares(music: &PartnerProcess) -> i64 {
    partner_db(music)
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE status = 'DELIVERED'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn a_platform_restart_in_the_middle_of_sending_delivers_each_share_exactly_once() {
    let (mut w, mut platform) = world().await;
    let music = start_partner(&w.work, "music", w.ports).await;
    let mut client = connect_alice(&mut w, &music).await;
    let first = share_with_bob(&mut client, &w, "track 1", "k1").await;
    assert_eq!(first.status, "DELIVERED");

    platform.kill();
    let mut queued = Vec::new();
    for n in 0..5 {
        let share = share_in_thread(
            "alice",
            &first.thread_id,
            &format!("while down {n}"),
            &format!("down-{n}"),
        );
        let accepted = client.share(share.clone()).await.unwrap().into_inner();
        assert_eq!(
            accepted.status, "QUEUED",
            "the platform is down: the share must wait in the outbox"
        );
        let retried = client.share(share).await.unwrap().into_inner();
        assert_eq!(
            retried.share_id, accepted.share_id,
            "a front-end retry names the same share"
        );
        queued.push(accepted.share_id);
    }

    let _platform = start_platform(&w.work, w.ports).await;
    // alice's own id for the thread the music app knows by its own.
    let thread = w
        .work
        .shown_to("music")
        .thread_named(&first.thread_id)
        .unwrap();
    let session = w.alice.session.clone();
    let mut account = w.account.clone();
    let listing = async |account: &mut AccountClient<Channel>| {
        account
            .list_messages(bearer(
                pb::ListMessagesRequest {
                    thread_id: thread.clone(),
                    page_size: 100,
                    page_token: String::new(),
                },
                &session,
            ))
            .await
            .map(|r| r.into_inner().messages)
            .unwrap_or_default()
    };
    eventually("delivery of the queued shares", WAIT, async || {
        listing(&mut account).await.len() == 6
    })
    .await;
    let messages = listing(&mut account).await;
    for n in 0..5 {
        let body = format!("while down {n}");
        assert_eq!(
            messages.iter().filter(|m| m.body == body).count(),
            1,
            "{body} must be delivered exactly once"
        );
    }
    assert_eq!(delivered_shares(&music), 6);
}

#[tokio::test]
async fn a_shutdown_commits_the_record_of_a_call_cut_off_before_it() {
    let (w, mut platform) = world().await;
    // Another connection holds SQLite's write lock, so the platform's writer waits.
    let holder = rusqlite::Connection::open(w.work.path.join("platform.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked = Instant::now();
    let mut messaging = MessagingClient::new(
        w.work
            .channel(w.ports.partner, Some("partner-music"))
            .await
            .unwrap(),
    );
    let cut_off = tokio::time::timeout(
        Duration::from_millis(500),
        messaging.list_threads(bearer(pb::ListThreadsRequest::default(), "stolen-token")),
    )
    .await;
    assert!(
        cut_off.is_err(),
        "the refusal waits for its record, which waits for the lock: {cut_off:?}"
    );

    platform.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        platform.exited().is_none(),
        "the platform exited before its writer committed"
    );
    // The writer gives a batch up after waiting 5 s for the lock (its busy timeout).
    assert!(
        locked.elapsed() < Duration::from_secs(4),
        "the lock was held too long for this test to tell anything"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    let mut status = None;
    eventually("the platform's exit", WAIT, async || {
        status = platform.exited();
        status.is_some()
    })
    .await;
    assert!(status.unwrap().success(), "{status:?}");

    let refusals: i64 = holder
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE method LIKE '%ListThreads' AND reason = 'TOKEN_INVALID'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refusals, 1, "the cut-off refusal is in the chain");
}

#[tokio::test]
async fn a_revocation_reaches_the_partner_even_after_it_was_down() {
    let (mut w, _platform) = world().await;
    let mut music = start_partner(&w.work, "music", w.ports).await;
    let mut client = connect_alice(&mut w, &music).await;
    let shared = share_with_bob(&mut client, &w, "track", "k").await;
    let inbox = client
        .inbox(app::InboxRequest {
            user_name: "alice".into(),
            thread_id: shared.thread_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.messages.len(), 1);
    assert!(inbox.next_page_token.is_empty(), "one page holds it all");
    // The page token goes through to the platform, which refuses one it did not issue.
    let forged = client
        .inbox(app::InboxRequest {
            user_name: "alice".into(),
            thread_id: shared.thread_id.clone(),
            page_token: "c-7".into(),
        })
        .await
        .unwrap_err();
    assert_invalid_field(&forged, "page_token");
    // The app refuses, before queueing, a card its feature does not send and a front-end
    // key already used for another share.
    let reason = |status: &tonic::Status| {
        let reason = status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default();
        (status.code(), reason)
    };
    let folder = with_card(
        share_in_thread("alice", &shared.thread_id, "photos", "k-folder"),
        pb::card::Kind::Folder(pb::SharedFolder {
            name: "Photos".into(),
            item_count: 3,
            link: "https://files.example/f".into(),
        }),
    );
    let refused = client.share(folder).await.unwrap_err();
    assert_eq!(
        reason(&refused),
        (Code::PermissionDenied, "CARD_KIND_NOT_DECLARED".to_string())
    );
    let reused = client
        .share(share_in_thread("alice", &shared.thread_id, "another", "k"))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&reused),
        (Code::AlreadyExists, "CLIENT_KEY_REUSED".to_string())
    );
    let held = |music: &PartnerProcess| {
        let db = partner_db(music);
        let token: Option<String> = db
            .query_row(
                "SELECT token FROM connections WHERE user_name = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let cached: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM cached_messages WHERE user_name = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (token.is_some(), cached)
    };
    assert_eq!(held(&music), (true, 1));

    // The partner is down when alice revokes; it catches up when it comes back.
    music.process.kill();
    let grants = w
        .account
        .list_grants(bearer(pb::ListGrantsRequest::default(), &w.alice.session))
        .await
        .unwrap()
        .into_inner()
        .grants;
    w.account
        .revoke_grant(bearer(
            pb::RevokeGrantRequest {
                grant_id: grants[0].grant_id.clone(),
            },
            &w.alice.session,
        ))
        .await
        .unwrap();
    let music = PartnerProcess {
        database: music.database.clone(),
        ..start_partner(&w.work, "music", w.ports).await
    };
    eventually("the partner's purge", WAIT, async || {
        held(&music) == (false, 0)
    })
    .await;
    wait_for_deletion_attestation(&w.account, &w.alice, WAIT).await;
    let mut client = music.client(&w.work, "music").await;
    let refused = client
        .inbox(app::InboxRequest {
            user_name: "alice".into(),
            thread_id: shared.thread_id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    // The partner holds nothing for alice any more.
    assert_partner_refused(&refused, Code::FailedPrecondition, "NOT_CONNECTED");
}

#[tokio::test]
async fn a_reconnection_releases_the_old_grant_and_a_revocation_after_it_leaves_nothing() {
    let (mut w, _platform) = world().await;
    let music = start_partner(&w.work, "music", w.ports).await;
    let mut client = connect_alice(&mut w, &music).await;
    let shared = share_with_bob(&mut client, &w, "track", "k").await;
    let inbox = |client: &mut app::partner_app_client::PartnerAppClient<Channel>| {
        let request = app::InboxRequest {
            user_name: "alice".into(),
            thread_id: shared.thread_id.clone(),
            ..Default::default()
        };
        let mut client = client.clone();
        async move { client.inbox(request).await }
    };
    inbox(&mut client).await.unwrap();
    let cached = |music: &PartnerProcess| -> Vec<(String, i64)> {
        let db = partner_db(music);
        let mut stmt = db
            .prepare("SELECT grant_id, COUNT(*) FROM cached_messages GROUP BY grant_id")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let grants = async |w: &mut end_to_end::world::World| {
        let request = bearer(pb::ListGrantsRequest::default(), &w.alice.session);
        w.account
            .list_grants(request)
            .await
            .unwrap()
            .into_inner()
            .grants
    };
    let first = grants(&mut w).await;
    assert_eq!(first.len(), 1);
    let first_id = first[0].grant_id.clone();
    assert_eq!(cached(&music), [(first_id.clone(), 1)]);

    // alice connects the app again: her first grant is released, its data deleted and the
    // deletion attested before the new request is made.
    end_to_end::world::connect_user(&mut client, &mut w.account, &w.alice.clone(), vec![]).await;
    let after = grants(&mut w).await;
    let old = after.iter().find(|g| g.grant_id == first_id).unwrap();
    assert_eq!(old.state, pb::GrantState::Released as i32);
    assert!(old.deletion_attested_at.is_some());
    assert!(
        cached(&music).is_empty(),
        "nothing read under the old grant is kept"
    );
    let new = after.iter().find(|g| g.grant_id != first_id).unwrap();
    assert_eq!(new.state, pb::GrantState::Active as i32);
    // The new grant reads from its own start on: a second track, then the inbox.
    client
        .share(share_in_thread("alice", &shared.thread_id, "track 2", "k2"))
        .await
        .unwrap();
    inbox(&mut client).await.unwrap();
    assert_eq!(cached(&music), [(new.grant_id.clone(), 1)]);

    w.account
        .revoke_grant(bearer(
            pb::RevokeGrantRequest {
                grant_id: new.grant_id.clone(),
            },
            &w.alice.session,
        ))
        .await
        .unwrap();
    eventually("the partner's purge", WAIT, async || {
        cached(&music).is_empty()
    })
    .await;
    let token: Option<String> = partner_db(&music)
        .query_row(
            "SELECT token FROM connections WHERE user_name = 'alice'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(token.is_none());
    // A read that races the purge finds no live grant to cache under.
    let late = inbox(&mut client).await.unwrap_err();
    assert_partner_refused(&late, Code::FailedPrecondition, "NOT_CONNECTED");
    assert!(cached(&music).is_empty());
}

#[tokio::test]
async fn no_token_ever_appears_in_the_logs_of_a_full_scenario() {
    ensure_built();
    let dir = tempfile::tempdir().unwrap();
    let mut story = Story::default();
    let stack = ProcessStack::start(&mut story, dir.path()).await;
    tell(&mut story, &stack.view()).await;
    assert_eq!(story.failures, 0);
    let logs = stack.stop();
    let mut partner_calls_logged = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        partner_calls_logged += text.lines().filter(|l| l.contains("partner call")).count();
        for prefix in ["pgt_", "pst_", "pss_", "pac_", "pkv_", "par_"] {
            assert!(
                !text.contains(prefix),
                "{} contains a token ({prefix}…)",
                log.display()
            );
        }
    }
    assert!(
        partner_calls_logged >= 20,
        "every partner call is logged at debug: {partner_calls_logged} found"
    );
}

#[tokio::test]
async fn the_partner_api_refuses_tls_1_2_and_serves_health_and_reflection() {
    let (w, _platform) = world().await;
    let music = start_partner(&w.work, "music", w.ports).await;
    let ca = std::fs::read_to_string(w.work.pki("ca.pem")).unwrap();
    assert!(
        !end_to_end::tls12_handshake(music.addr, &ca, None).await,
        "TLS 1.2 must be refused"
    );
    // The same listener completes TLS 1.3 and serves: its one service, health and
    // reflection, as the README's grpcurl session shows them.
    let channel = music.channel(&w.work, "music").await;
    assert_serves_health_and_reflection(&channel, &["consent.partner.v1.PartnerApp"]).await;
    let status = app::partner_app_client::PartnerAppClient::new(channel)
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await;
    assert_eq!(status.unwrap().into_inner().status, "NOT_CONNECTED");
}

/// What partner `music` tells a front end presenting `cert` about alice's connection, or
/// why the call failed.
async fn front_end_status(
    work: &WorkDir,
    music: &PartnerProcess,
    cert: &IssuedCertificate,
) -> Result<String, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(work.pki("ca.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", music.addr))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    app::partner_app_client::PartnerAppClient::new(channel)
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await
        .map(|reply| reply.into_inner().status)
        .map_err(|status| status.to_string())
}

/// Waits until `log` holds `text`.
async fn wait_for_log(log: &Path, text: &str) {
    eventually(
        &format!("{text:?} in {}", log.display()),
        WAIT,
        async || std::fs::read_to_string(log).is_ok_and(|logged| logged.contains(text)),
    )
    .await;
}

#[tokio::test]
async fn a_partner_takes_its_front_ends_revocations_on_sighup_and_nothing_from_a_bad_file() {
    let (w, _platform) = world().await;
    let ca = &w.work.dev_pki.ca;
    let front_end = |serial| {
        let mut spec = LeafSpec::new("music front end", serial, 30);
        spec.uri = Some(partner_spiffe_id(TRUST_DOMAIN, "music"));
        spec.usage = Usage::Client;
        ca.issue(&spec).unwrap()
    };
    let (revoked, kept) = (front_end(900), front_end(901));
    let next_update = OffsetDateTime::now_utc() + time::Duration::days(1);
    let crl = w.work.path.join("front-ends-crl.pem");
    std::fs::write(&crl, ca.crl(&[], next_update).unwrap()).unwrap();
    let ops = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let music = start_partner_flagged(
        &w.work,
        "music",
        w.ports,
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        &[
            "--tls-crls".into(),
            crl.display().to_string(),
            "--ops-listen".into(),
            ops.to_string(),
        ],
    )
    .await;
    for cert in [&revoked, &kept] {
        assert_eq!(
            front_end_status(&w.work, &music, cert).await.as_deref(),
            Ok("NOT_CONNECTED")
        );
    }

    // The revocation arrives while the platform's CA, which the partner's client of the
    // platform reads, does not load: the reload changes nothing.
    std::fs::write(&crl, ca.crl(&[revoked.serial], next_update).unwrap()).unwrap();
    let platform_ca = w.work.pki("platform-ca.pem");
    let good_platform_ca = std::fs::read(&platform_ca).unwrap();
    // A PEM block that holds no certificate, which tonic alone would take as trusting
    // nothing.
    std::fs::write(
        &platform_ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    music.process.signal(Signal::HUP);
    wait_for_log(&music.process.log, "platform-ca.pem: ").await;
    assert_eq!(
        front_end_status(&w.work, &music, &revoked).await.as_deref(),
        Ok("NOT_CONNECTED"),
        "a reload with a file that does not load must leave the old revocation list"
    );

    std::fs::write(&platform_ca, good_platform_ca).unwrap();
    music.process.signal(Signal::HUP);
    wait_for_log(&music.process.log, "certificates and CRLs reloaded").await;
    let refused = front_end_status(&w.work, &music, &revoked).await;
    assert!(
        refused.is_err(),
        "a revoked front end was served: {refused:?}"
    );
    // The client may hear the refusal before the partner has counted it, and may try the
    // handshake more than once.
    eventually("the refusal counted as a revocation", WAIT, async || {
        scrape(ops).await.lines().any(|line| {
            line.strip_prefix("consent_tls_handshakes_refused_total{cause=\"revoked\"} ")
                .is_some_and(|count| count.parse::<f64>().is_ok_and(|count| count >= 1.0))
        })
    })
    .await;
    assert_eq!(
        front_end_status(&w.work, &music, &kept).await.as_deref(),
        Ok("NOT_CONNECTED")
    );
}

#[tokio::test]
async fn a_partner_presents_its_renewed_certificate_to_the_platform_after_sighup() {
    let (mut w, mut platform) = world().await;
    let music = start_partner(&w.work, "music", w.ports).await;
    let mut client = connect_alice(&mut w, &music).await;
    let before = share_with_bob(&mut client, &w, "before renewal", "r1").await;
    assert_eq!(before.status, "DELIVERED");

    // Music's certificate is renewed, and the platform takes a CRL revoking the old one.
    let pki = &w.work.dev_pki;
    let old = pki.partner("music").unwrap();
    let renewed = pki
        .ca
        .issue(&partner_leaf(TRUST_DOMAIN, "music", 990))
        .unwrap();
    std::fs::write(w.work.pki("partner-music-old.pem"), &old.cert_pem).unwrap();
    std::fs::write(w.work.pki("partner-music-old-key.pem"), &old.key_pem).unwrap();
    std::fs::write(w.work.pki("partner-music.pem"), &renewed.cert_pem).unwrap();
    std::fs::write(w.work.pki("partner-music-key.pem"), &renewed.key_pem).unwrap();
    let next_update = OffsetDateTime::now_utc() + time::Duration::days(1);
    std::fs::write(
        w.work.pki("crl.pem"),
        pki.ca.crl(&[old.serial], next_update).unwrap(),
    )
    .unwrap();
    platform.signal(Signal::HUP);
    wait_for_log(&platform.log, "certificates and CRLs reloaded").await;
    // The old certificate is refused and the renewed one let in, by the same call.
    let introspect = async |stem: &str| match w.work.channel(w.ports.partner, Some(stem)).await {
        Ok(channel) => pb::consent_client::ConsentClient::new(channel)
            .introspect_grants(pb::IntrospectGrantsRequest::default())
            .await
            .map(drop)
            .map_err(|status| status.to_string()),
        Err(error) => Err(error.to_string()),
    };
    let with_old = introspect("partner-music-old").await;
    assert!(
        with_old.is_err(),
        "the platform must refuse the old certificate"
    );
    assert_eq!(introspect("partner-music").await, Ok(()));

    // The partner takes its renewed certificate; the platform restarts, so that no
    // connection opened with the old one survives.
    music.process.signal(Signal::HUP);
    wait_for_log(&music.process.log, "certificates and CRLs reloaded").await;
    let ca = std::fs::read_to_string(w.work.pki("ca.pem")).unwrap();
    let renewed_der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    for (listener, addr) in [("API", music.addr), ("web app", music.web)] {
        assert!(
            served_certificate(addr, &ca).await == renewed_der.as_ref(),
            "the partner's {listener} must serve its renewed certificate"
        );
    }
    platform.kill();
    let _platform = start_platform(&w.work, w.ports).await;
    share_with_bob(&mut client, &w, "after renewal", "r2").await;
    eventually("the share after renewal delivered", WAIT, async || {
        delivered_shares(&music) == 2
    })
    .await;
}

/// Asserts that the app holds no connection for alice: a read for her is refused.
async fn assert_alice_not_connected(
    client: &mut app::partner_app_client::PartnerAppClient<Channel>,
) {
    let refused = client
        .list_friends(app::ListFriendsRequest {
            user_name: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_partner_refused(&refused, Code::FailedPrecondition, "NOT_CONNECTED");
}

/// An operator suspends the music app.
async fn suspend_music(w: &end_to_end::world::World) {
    let operator = w.work.channel(w.ports.operator, Some("operator")).await;
    pb::partner_admin_client::PartnerAdminClient::new(operator.unwrap())
        .suspend_partner(pb::SuspendPartnerRequest {
            partner_id: "music".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_suspension_deletes_what_the_partner_holds_for_every_user() {
    let (mut w, _platform) = world().await;
    let music = start_partner(&w.work, "music", w.ports).await;
    let mut client = connect_alice(&mut w, &music).await;
    let bob = w.bob.clone();
    end_to_end::world::connect_user(&mut client, &mut w.account, &bob, vec![]).await;
    share_with_bob(&mut client, &w, "track", "k").await;
    let tokens_held = |music: &PartnerProcess| -> i64 {
        partner_db(music)
            .query_row(
                "SELECT COUNT(*) FROM connections WHERE token IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(tokens_held(&music), 2, "alice and bob are connected");

    // A suspended partner may call nothing but what winding down needs; it deletes what it
    // holds for each grant the suspension ended, not only the first, and attests it.
    suspend_music(&w).await;
    eventually("every user's data deleted", WAIT, async || {
        let outbox: i64 = partner_db(&music)
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        tokens_held(&music) == 0 && outbox == 0
    })
    .await;
    // A suspended partner may still attest what it deleted.
    wait_for_deletion_attestation(&w.account, &w.alice, WAIT).await;
    wait_for_deletion_attestation(&w.account, &w.bob, WAIT).await;
}

#[tokio::test]
async fn a_partner_down_when_it_was_suspended_deletes_and_attests_once_it_is_back() {
    let (mut w, _platform) = world().await;
    let mut music = start_partner(&w.work, "music", w.ports).await;
    connect_alice(&mut w, &music).await;
    let token_held = |music: &PartnerProcess| -> bool {
        partner_db(music)
            .query_row(
                "SELECT token IS NOT NULL FROM connections WHERE user_name = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(token_held(&music));

    // The partner is down when it is suspended: its stream is not there to hear of it.
    music.process.kill();
    suspend_music(&w).await;

    // Back, it may call nothing but what winding down needs: it hears of the suspension's
    // endings, deletes and attests.
    let music = PartnerProcess {
        database: music.database.clone(),
        ..start_partner(&w.work, "music", w.ports).await
    };
    eventually("alice's token deleted", WAIT, async || !token_held(&music)).await;
    wait_for_deletion_attestation(&w.account, &w.alice, WAIT).await;
    assert_alice_not_connected(&mut music.client(&w.work, "music").await).await;
}

#[tokio::test]
async fn an_approval_revoked_before_the_partner_collects_it_reads_ended() {
    let (mut w, _platform) = world().await;
    let music = start_partner(&w.work, "music", w.ports).await;
    let mut client = music.client(&w.work, "music").await;
    client
        .connect_user(app::ConnectUserRequest {
            user_name: "alice".into(),
            thread_ids: Vec::new(),
        })
        .await
        .unwrap();
    let session = w.alice.session.clone();
    let pending = w
        .account
        .list_pending_requests(bearer(pb::ListPendingRequestsRequest::default(), &session))
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(pending.len(), 1);
    let approved = w
        .account
        .approve_request(bearer(
            pb::ApproveRequestRequest {
                request_id: pending[0].request_id.clone(),
                ..Default::default()
            },
            &session,
        ))
        .await
        .unwrap()
        .into_inner();
    let grant_id = approved.grant.unwrap().grant_id;
    // alice changes her mind before the app asks how she answered.
    w.account
        .revoke_grant(bearer(
            pb::RevokeGrantRequest {
                grant_id: grant_id.clone(),
            },
            &session,
        ))
        .await
        .unwrap();

    let status = client
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status, "ENDED",
        "an approval without a token connects nothing"
    );
    let (status, token): (String, Option<String>) = partner_db(&music)
        .query_row(
            "SELECT status, token FROM connections WHERE user_name = 'alice'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), token), ("ENDED", None));
    assert_alice_not_connected(&mut client).await;
}
