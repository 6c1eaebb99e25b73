//! HTTP/2 and TLS abuse against the partner listener: too many streams, a rapid-reset
//! storm, a storm of frames that force local error resets, a CONTINUATION flood, stalled
//! TLS handshakes and an oversized message. Each is answered (refusal, reset, GOAWAY, drop
//! at the handshake timeout, OUT_OF_RANGE for a message over the limit) while a healthy partner in parallel keeps
//! being served, and the service stays up.

use consent_proto::platform::v1 as pb;
use end_to_end::raw_h2::{
    CONTINUATION, END_HEADERS, HEADERS, RST_STREAM, RawH2, WINDOW_UPDATE, grpc_request,
    junk_headers,
};
use end_to_end::{TestPlatform, register_partners};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tonic::Code;

const PATH: &str = "/consent.platform.v1.Consent/IntrospectGrants";
/// ENHANCE_YOUR_CALM, the GOAWAY code for a peer that misbehaves.
const ENHANCE_YOUR_CALM: u32 = 0xb;

async fn platform() -> TestPlatform {
    let platform = TestPlatform::start_with(|config| {
        config.limits.max_concurrent_streams = 8;
        config.limits.max_local_error_reset_streams = 16;
        config.limits.max_pending_accept_reset_streams = 16;
        config.limits.handshake_timeout_ms = 300;
        config.limits.max_message_bytes = 64 * 1024;
    })
    .await;
    register_partners(&platform).await;
    platform
}

/// A well-behaved partner calling in a loop until stopped; counts successes and failures.
struct Healthy {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Healthy {
    async fn start(platform: &TestPlatform) -> Self {
        let mut partner = platform.partner("video").await;
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicU32::new(0)),
        );
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match partner
                    .consent
                    .introspect_grants(pb::IntrospectGrantsRequest::default())
                    .await
                {
                    Ok(_) => o.fetch_add(1, Ordering::Relaxed),
                    Err(_) => f.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Healthy {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Stops and asserts every call of the healthy partner succeeded.
    async fn assert_served(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let (ok, failed) = (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        assert_eq!(
            failed, 0,
            "the healthy partner saw {failed} failures ({ok} successes)"
        );
        assert!(ok > 0, "the healthy partner was never served");
    }
}

async fn attacker(platform: &TestPlatform) -> RawH2 {
    let music = platform.partner_cert("music");
    RawH2::connect(
        platform.addrs.partner,
        platform.pki.platform_ca.cert_pem(),
        &music.cert_pem,
        &music.key_pem,
    )
    .await
    .unwrap()
}

async fn assert_still_serving(platform: &TestPlatform) {
    let mut partner = platform.partner("bank").await;
    partner
        .consent
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .expect("the service is still up");
}

#[tokio::test]
async fn more_streams_than_advertised_are_refused() {
    let platform = platform().await;
    let healthy = Healthy::start(&platform).await;
    let mut raw = attacker(&platform).await;
    let block = grpc_request(PATH);
    for n in 0..64u32 {
        // Open streams and never finish them.
        raw.frame(HEADERS, END_HEADERS, 2 * n + 1, &block)
            .await
            .unwrap();
    }
    let outcome = raw.observe(Duration::from_secs(3)).await;
    println!("outcome: {outcome:?}");
    assert!(
        outcome.resets > 0 || outcome.goaway.is_some(),
        "excess streams must be refused: {outcome:?}"
    );
    healthy.assert_served().await;
    assert_still_serving(&platform).await;
}

#[tokio::test]
async fn a_rapid_reset_storm_ends_the_connection() {
    let platform = platform().await;
    let healthy = Healthy::start(&platform).await;
    let mut raw = attacker(&platform).await;
    let block = grpc_request(PATH);
    let cancel = 0x8u32.to_be_bytes();
    for n in 0..5_000u32 {
        let id = 2 * n + 1;
        if raw.frame(HEADERS, END_HEADERS, id, &block).await.is_err()
            || raw.frame(RST_STREAM, 0, id, &cancel).await.is_err()
        {
            break;
        }
    }
    let outcome = raw.observe(Duration::from_secs(5)).await;
    println!("outcome: {outcome:?}");
    assert!(
        outcome.goaway.is_some() || outcome.closed,
        "a rapid-reset storm must end the connection: {outcome:?}"
    );
    healthy.assert_served().await;
    assert_still_serving(&platform).await;
}

#[tokio::test]
async fn a_storm_of_frames_forcing_local_resets_ends_the_connection() {
    let platform = platform().await;
    let healthy = Healthy::start(&platform).await;
    let mut raw = attacker(&platform).await;
    let block = grpc_request(PATH);
    for n in 0..1_000u32 {
        let id = 2 * n + 1;
        // A zero WINDOW_UPDATE on an open stream is a stream error: the server must reset it.
        if raw.frame(HEADERS, END_HEADERS, id, &block).await.is_err()
            || raw
                .frame(WINDOW_UPDATE, 0, id, &0u32.to_be_bytes())
                .await
                .is_err()
        {
            break;
        }
    }
    let outcome = raw.observe(Duration::from_secs(5)).await;
    println!("outcome: {outcome:?}");
    assert!(
        outcome.goaway.is_some() || outcome.closed,
        "the storm must end the connection: {outcome:?}"
    );
    if let Some(code) = outcome.goaway {
        assert!(
            code == ENHANCE_YOUR_CALM || code == 0x1,
            "unexpected GOAWAY code {code:#x}"
        );
    }
    healthy.assert_served().await;
    assert_still_serving(&platform).await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let platform = platform().await;
    let healthy = Healthy::start(&platform).await;
    let mut raw = attacker(&platform).await;
    raw.frame(HEADERS, 0, 1, &grpc_request(PATH)).await.unwrap();
    let junk = junk_headers(16 * 1024 - 200);
    let mut sent = 0usize;
    for _ in 0..2_000 {
        if raw.frame(CONTINUATION, 0, 1, &junk).await.is_err() {
            break;
        }
        sent += junk.len();
    }
    let outcome = raw.observe(Duration::from_secs(5)).await;
    println!("outcome: {outcome:?}");
    assert!(
        outcome.answered(),
        "a CONTINUATION flood must be cut off: {outcome:?}"
    );
    assert!(
        sent < 2_000 * junk.len(),
        "the server must not swallow an endless header block: {sent} bytes went in"
    );
    healthy.assert_served().await;
    assert_still_serving(&platform).await;
}

#[tokio::test]
async fn stalled_tls_handshakes_are_dropped_at_the_timeout() {
    let platform = platform().await;
    let healthy = Healthy::start(&platform).await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(
            tokio::net::TcpStream::connect(platform.addrs.partner)
                .await
                .unwrap(),
        );
    }
    use tokio::io::AsyncReadExt;
    for mut socket in stalled {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a stalled handshake must be dropped, got {read:?}"
        );
    }
    healthy.assert_served().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused() {
    let platform = platform().await;
    let healthy = Healthy::start(&platform).await;
    let mut music = platform.partner("music").await;
    let huge = pb::SendMessageRequest {
        thread_id: "thr_x".into(),
        body: "x".repeat(128 * 1024),
        idempotency_key: "k".into(),
        card: None,
    };
    let status = music.messaging.send_message(huge).await.unwrap_err();
    // tonic's code for a message over the configured limit.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    healthy.assert_served().await;
    assert_still_serving(&platform).await;
}
