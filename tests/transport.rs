//! The edge: mutual TLS refuses bad certificates before any RPC, and every listener serves
//! health and both reflection versions.

use consent_proto::platform::v1 as pb;
use consent_tls::pki::{CertificateAuthority, LeafSpec};
use consent_tls::principal::partner_spiffe_id;
use end_to_end::reflection::assert_serves_health_and_reflection;
use end_to_end::{TRUST_DOMAIN, TestPlatform, register_partners};
use time::{Duration, OffsetDateTime};
use tonic::Code;

/// Calls the partner surface with `identity`; the call must not succeed.
async fn assert_partner_refuses(
    platform: &TestPlatform,
    identity: Option<&consent_tls::pki::IssuedCertificate>,
) {
    let outcome = match platform.channel(platform.addrs.partner, identity).await {
        Err(_) => return,
        Ok(channel) => {
            pb::consent_client::ConsentClient::new(channel)
                .introspect_grants(pb::IntrospectGrantsRequest::default())
                .await
        }
    };
    let status = outcome.expect_err("the handshake must be refused");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "expected a transport failure, got {status:?}"
    );
}

fn music_leaf(serial: u64) -> LeafSpec {
    let mut spec = LeafSpec::new("music", serial, 30);
    spec.uri = Some(partner_spiffe_id(TRUST_DOMAIN, "music"));
    spec
}

#[tokio::test]
async fn bad_client_certificates_never_reach_a_handler() {
    let platform = TestPlatform::start().await;
    register_partners(&platform).await;
    // Each refusal is counted by its cause (other tests of this binary may add to the
    // counts, never take from them).
    let refused = |cause: &str| {
        let series = format!(r#"consent_tls_handshakes_refused_total{{cause="{cause}"}} "#);
        consent_telemetry::ops::recorder()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str())?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The server counts a refusal as its handshake task ends, which may be just after the
    // client has seen it.
    let counted = async |cause: &str, before: f64| {
        for _ in 0..50 {
            if refused(cause) > before {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };

    let before = refused("no_certificate");
    assert_partner_refuses(&platform, None).await;
    assert!(
        counted("no_certificate", before).await,
        "a no_certificate refusal is counted"
    );

    let foreign = CertificateAuthority::new("someone else").unwrap();
    let before = refused("untrusted");
    assert_partner_refuses(&platform, Some(&foreign.issue(&music_leaf(900)).unwrap())).await;
    assert!(
        counted("untrusted", before).await,
        "a untrusted refusal is counted"
    );

    let mut expired = music_leaf(901);
    expired.not_before = OffsetDateTime::now_utc() - Duration::days(10);
    expired.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    let before = refused("expired");
    assert_partner_refuses(&platform, Some(&platform.pki.ca.issue(&expired).unwrap())).await;
    assert!(
        counted("expired", before).await,
        "a expired refusal is counted"
    );

    let mut not_yet = music_leaf(902);
    not_yet.not_before = OffsetDateTime::now_utc() + Duration::days(1);
    let before = refused("not_yet_valid");
    assert_partner_refuses(&platform, Some(&platform.pki.ca.issue(&not_yet).unwrap())).await;
    assert!(
        counted("not_yet_valid", before).await,
        "a not_yet_valid refusal is counted"
    );

    // A valid certificate of the same CA is served, so the refusals above are the certificates'.
    let good = platform.pki.ca.issue(&music_leaf(903)).unwrap();
    let channel = platform
        .channel(platform.addrs.partner, Some(&good))
        .await
        .unwrap();
    pb::consent_client::ConsentClient::new(channel)
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .expect("a valid certificate is served");

    // Nothing refused at the handshake left an audit record: no RPC reached a handler.
    let records = platform.audit_records().await;
    let partner_calls = records.iter().filter(|r| r.partner_id == "music").count();
    assert_eq!(partner_calls, 1);

    platform.shutdown().await;
}

#[tokio::test]
async fn every_listener_serves_health_and_reflection() {
    let platform = TestPlatform::start().await;
    let music = platform.partner_cert("music");
    let listeners = [
        (
            platform.addrs.partner,
            Some(music),
            &[
                "consent.platform.v1.Consent",
                "consent.platform.v1.Messaging",
            ][..],
        ),
        (
            platform.addrs.operator,
            Some(&platform.pki.operator),
            &["consent.platform.v1.PartnerAdmin"],
        ),
        (platform.addrs.user, None, &["consent.platform.v1.Account"]),
    ];
    for (addr, identity, services) in listeners {
        let channel = platform.channel(addr, identity).await.unwrap();
        assert_serves_health_and_reflection(&channel, services).await;
    }
    platform.shutdown().await;
}

/// Writes the platform's revocation list: `serials` revoked, next update at `next_update`.
fn write_crl(platform: &TestPlatform, serials: &[u64], next_update: OffsetDateTime) {
    let crl = platform.pki.ca.crl(serials, next_update).unwrap();
    std::fs::write(platform.dir.path().join("crl.pem"), crl).unwrap();
}

async fn introspect(
    platform: &TestPlatform,
    cert: &consent_tls::pki::IssuedCertificate,
) -> Result<(), tonic::Status> {
    let channel = platform
        .channel(platform.addrs.partner, Some(cert))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    pb::consent_client::ConsentClient::new(channel)
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn revocation_lists_apply_on_reload_and_a_stale_list_fails_closed() {
    let platform = TestPlatform::start().await;
    register_partners(&platform).await;
    let revoked = platform.pki.ca.issue(&music_leaf(950)).unwrap();
    let kept = platform.pki.ca.issue(&music_leaf(951)).unwrap();
    introspect(&platform, &revoked)
        .await
        .expect("not yet revoked");

    // Revoke serial 950 and reload without a restart.
    write_crl(
        &platform,
        &[950],
        OffsetDateTime::now_utc() + Duration::days(7),
    );
    (platform.reload_tls)().expect("reload");
    assert_partner_refuses(&platform, Some(&revoked)).await;
    introspect(&platform, &kept)
        .await
        .expect("other certificates still work");

    // A broken file is refused by the reload; the configuration in force stays.
    std::fs::write(platform.dir.path().join("crl.pem"), "not a crl").unwrap();
    assert!((platform.reload_tls)().is_err());
    introspect(&platform, &kept)
        .await
        .expect("previous configuration stays in force");
    assert_partner_refuses(&platform, Some(&revoked)).await;

    // A CRL past its next update fails closed: nobody is let in on stale revocation data.
    write_crl(
        &platform,
        &[],
        OffsetDateTime::now_utc() - Duration::minutes(30),
    );
    (platform.reload_tls)().expect("reload");
    assert_partner_refuses(&platform, Some(&kept)).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_fails_for_one_listener_changes_none() {
    // The operator listener trusts a CA file of its own, so that it alone can break.
    let platform = TestPlatform::start_with(|config| {
        let own = config.tls.partner_ca.with_file_name("operator-ca.pem");
        std::fs::copy(&config.tls.partner_ca, &own).unwrap();
        config.tls.operator_ca = own;
    })
    .await;
    register_partners(&platform).await;
    let revoked = platform.pki.ca.issue(&music_leaf(960)).unwrap();

    // A CRL that would revoke the partner's certificate, and an operator CA that does not
    // load: the reload fails on the operator's file, and the partner listener, which is
    // reloaded first, keeps its previous configuration.
    write_crl(
        &platform,
        &[960],
        OffsetDateTime::now_utc() + Duration::days(7),
    );
    let operator_ca = platform.dir.path().join("operator-ca.pem");
    let good_ca = std::fs::read(&operator_ca).unwrap();
    std::fs::write(&operator_ca, "not a CA").unwrap();
    let error = (platform.reload_tls)().expect_err("a CA file that does not load");
    assert!(error.to_string().contains("operator-ca.pem"), "{error}");
    introspect(&platform, &revoked)
        .await
        .expect("no listener takes the new revocation list from a failed reload");

    // With the operator's CA mended, the same reload takes the revocation list.
    std::fs::write(&operator_ca, good_ca).unwrap();
    (platform.reload_tls)().expect("reload");
    assert_partner_refuses(&platform, Some(&revoked)).await;
    platform.shutdown().await;
}

#[tokio::test]
async fn a_connection_open_when_its_certificate_is_revoked_ends_within_its_maximum_age() {
    let platform = TestPlatform::start_with(|config| {
        config.limits.max_connection_age_secs = 1;
        config.limits.max_connection_age_grace_secs = 1;
    })
    .await;
    register_partners(&platform).await;
    let revoked = platform.pki.ca.issue(&music_leaf(970)).unwrap();
    let channel = platform
        .channel(platform.addrs.partner, Some(&revoked))
        .await
        .unwrap();
    let mut consent = pb::consent_client::ConsentClient::new(channel);
    let introspect = || pb::IntrospectGrantsRequest::default();
    consent
        .introspect_grants(introspect())
        .await
        .expect("not yet revoked");

    write_crl(
        &platform,
        &[970],
        OffsetDateTime::now_utc() + Duration::days(7),
    );
    (platform.reload_tls)().expect("reload");
    // The open connection outlives the reload only until its age and grace are up; the
    // client's reconnection is then refused at the handshake.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let status = consent
        .introspect_grants(introspect())
        .await
        .expect_err("the revoked certificate's connection must be gone");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_aged_connection_is_cut_off_at_its_age_and_grace_with_its_stream_still_open() {
    use end_to_end::raw_h2::{END_HEADERS, HEADERS, RawH2, grpc_request};
    use std::time::Duration as Elapsed;
    let platform = TestPlatform::start_with(|config| {
        config.limits.max_connection_age_secs = 1;
        config.limits.max_connection_age_grace_secs = 2;
    })
    .await;
    register_partners(&platform).await;
    let music = platform.partner_cert("music");
    let opened = std::time::Instant::now();
    let mut raw = RawH2::connect(
        platform.addrs.partner,
        platform.pki.platform_ca.cert_pem(),
        &music.cert_pem,
        &music.key_pem,
    )
    .await
    .unwrap();
    // A call whose request never ends keeps a stream open, as an event stream does.
    let watch = grpc_request("/consent.platform.v1.Consent/WatchGrantEvents");
    raw.frame(HEADERS, END_HEADERS, 1, &watch).await.unwrap();

    let mut outcome = raw.observe(Elapsed::from_secs(8)).await;
    while !outcome.closed && opened.elapsed() < Elapsed::from_secs(8) {
        outcome = raw.observe(Elapsed::from_secs(8)).await;
    }
    let lived = opened.elapsed();
    assert!(outcome.closed, "{outcome:?}");
    assert!(
        lived >= Elapsed::from_millis(2_900) && lived < Elapsed::from_secs(6),
        "cut off after {lived:?}, not at its age and grace (3 s)"
    );
    platform.shutdown().await;
}

#[tokio::test]
async fn a_client_offering_only_tls_1_2_is_refused() {
    let platform = TestPlatform::start().await;
    let music = platform.partner_cert("music");
    for addr in [
        platform.addrs.partner,
        platform.addrs.operator,
        platform.addrs.user,
    ] {
        let accepted = end_to_end::tls12_handshake(
            addr,
            platform.pki.platform_ca.cert_pem(),
            Some((&music.cert_pem, &music.key_pem)),
        )
        .await;
        assert!(!accepted, "a TLS 1.2 handshake with {addr} must fail");
    }
    platform.shutdown().await;
}

#[tokio::test]
async fn a_partner_over_its_rate_is_refused_and_the_others_are_not() {
    let platform = TestPlatform::start_with(|config| {
        config.limits.partner_requests_per_second = 1;
        config.limits.partner_burst = 5;
    })
    .await;
    register_partners(&platform).await;
    let mut music = platform.partner("music").await;
    let mut video = platform.partner("video").await;
    let mut limited = 0;
    for _ in 0..20 {
        if let Err(status) = music
            .consent
            .introspect_grants(pb::IntrospectGrantsRequest::default())
            .await
        {
            end_to_end::assert_refused(&status, Code::ResourceExhausted, "RATE_LIMITED");
            limited += 1;
        }
    }
    assert!(
        limited >= 14,
        "music made 20 calls with a burst of 5: {limited} were limited"
    );
    // Refused at the edge, they are not audited: the metric is their trace.
    let metrics = consent_telemetry::ops::recorder().render();
    let counted = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"consent_partner_calls_rate_limited_total{partner="music"} "#)
        })
        .and_then(|value| value.parse::<f64>().ok());
    assert!(
        counted.is_some_and(|n| n >= f64::from(limited)),
        "music's limited calls are counted: {counted:?}"
    );
    assert!(
        !metrics.contains(r#"consent_partner_calls_rate_limited_total{partner="video"}"#),
        "video was never limited"
    );
    for _ in 0..5 {
        video
            .consent
            .introspect_grants(pb::IntrospectGrantsRequest::default())
            .await
            .expect("another partner is unaffected");
    }
    platform.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_server_authentication_only_is_refused_as_a_client() {
    let platform = TestPlatform::start().await;
    register_partners(&platform).await;
    let mut server_only = music_leaf(960);
    server_only.usage = consent_tls::pki::Usage::Server;
    let server_only = platform.pki.ca.issue(&server_only).unwrap();
    assert_partner_refuses(&platform, Some(&server_only)).await;
}

/// Serves health on a free port with the certificate and key in `cert` and `key`.
async fn impostor(cert: &std::path::Path, key: &std::path::Path) -> std::net::SocketAddr {
    use consent_tls::termination::{ReloadableTls, TlsFiles, incoming};
    let files = TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: None,
        crls: Vec::new(),
        http1: false,
        client_certificate_optional: false,
    };
    let tls = std::sync::Arc::new(ReloadableTls::load(files).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = incoming(
        listener,
        tls,
        std::time::Duration::from_secs(5),
        None,
        std::future::pending(),
    );
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(connections),
    );
    addr
}

#[tokio::test]
async fn a_partner_trusts_only_the_platform_certificate_for_the_platform() {
    // video's certificate may authenticate a server (video's own API) and names
    // localhost, as the platform's does; the music app must still not take it for the
    // platform's.
    let platform = TestPlatform::start().await;
    register_partners(&platform).await;
    let pki = platform.dir.path();
    let music = |address: std::net::SocketAddr| {
        let toml = format!(
            "partner_id = \"music\"\ndisplay_name = \"Music\"\nlisten = \"127.0.0.1:0\"\n\
             database = \"unused.db\"\n\
             [feature]\nname = \"share-tracks\"\npurpose = \"p\"\nscopes = []\ncoverage = \"ALL_THREADS\"\n\
             [platform]\naddress = \"https://{address}\"\nca = \"{}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.join("platform-ca.pem").display(),
            pki.join("partner-music.pem").display(),
            pki.join("partner-music-key.pem").display(),
        );
        let config = partner_svc::config::PartnerConfig::from_toml(&toml).unwrap();
        partner_svc::platform::PlatformClient::connect_lazy(&config).unwrap()
    };
    let introspect = || pb::IntrospectGrantsRequest::default();

    let fake = impostor(
        &pki.join("partner-video.pem"),
        &pki.join("partner-video-key.pem"),
    )
    .await;
    let status = music(fake)
        .consent
        .introspect_grants(introspect())
        .await
        .expect_err("the impostor must not be trusted");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The same client reaches the real platform, so the refusal above is the certificate's.
    let answer = music(platform.addrs.partner)
        .consent
        .introspect_grants(introspect())
        .await;
    assert!(answer.is_ok(), "{answer:?}");
}
