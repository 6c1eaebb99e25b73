//! What an operator sees, end to end over real processes: a real Prometheus scrapes the
//! platform's and a partner's `/metrics` and evaluates the shipped alert rules; a share
//! from the partner's front end makes one trace that crosses from the partner to the
//! platform and reaches an OTLP receiver; the platform's JSON log lines name that trace.
//!
//! Without Prometheus it fails, naming the package to install.

use consent_proto::platform::v1 as pb;
use end_to_end::bearer;
use end_to_end::outside::{require, runs};
use end_to_end::processes::{free_port, start_partner_flagged};
use end_to_end::telemetry::{OtlpReceiver, Prometheus};
use end_to_end::world::{connect_alice, eventually, share_with_bob, world_with};
use pb::messaging_client::MessagingClient;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Code;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn flags(ops: SocketAddr, ops_flag: &str, otlp: &OtlpReceiver) -> Vec<String> {
    [
        ops_flag,
        &ops.to_string(),
        "--log-format",
        "json",
        "--otlp-endpoint",
        &otlp.endpoint,
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_calls_and_one_trace_crosses_partner_and_platform() {
    require(
        runs("prometheus", "--version"),
        "Prometheus",
        "apt-get install prometheus",
    );
    let otlp = OtlpReceiver::start().await;
    let (platform_ops, partner_ops) = (loopback(), loopback());
    let (mut w, _platform) = world_with(
        "info,consent_telemetry=debug",
        &flags(platform_ops, "--listen-ops", &otlp),
    )
    .await;
    let music = start_partner_flagged(
        &w.work,
        "music",
        w.ports,
        loopback(),
        &flags(partner_ops, "--ops-listen", &otlp),
    )
    .await;
    let prometheus = Prometheus::start(
        &w.work.path,
        &[("platform", platform_ops), ("partner", partner_ops)],
    )
    .await;
    for job in ["platform", "partner"] {
        prometheus
            .value_when(&format!("up{{job=\"{job}\"}}"), |up| up == 1.0)
            .await;
    }
    let served_before = prometheus
        .query("sum(consent_rpc_calls_total{job=\"platform\",surface=\"partner\",code=\"OK\"})")
        .await
        .first()
        .map_or(0.0, |(_, value)| *value);

    // The scenario: alice connects the music app and shares a track with bob through it;
    // the music app also presents a token it does not hold, and a client comes without a
    // certificate.
    let mut music_app = connect_alice(&mut w, &music).await;
    let shared = share_with_bob(&mut music_app, &w, "a track", "k1").await;
    assert_eq!(shared.status, "DELIVERED");
    let mut forged = MessagingClient::new(
        w.work
            .channel(w.ports.partner, Some("partner-music"))
            .await
            .unwrap(),
    );
    let refused = forged
        .list_threads(bearer(pb::ListThreadsRequest::default(), "not-a-token"))
        .await
        .unwrap_err();
    end_to_end::assert_refused(&refused, Code::Unauthenticated, "TOKEN_INVALID");
    let anonymous = w.work.channel(w.ports.partner, None).await;
    if let Ok(channel) = anonymous {
        let call = MessagingClient::new(channel)
            .list_threads(pb::ListThreadsRequest::default())
            .await;
        assert!(call.is_err(), "a client without a certificate is refused");
    }

    // Prometheus finds the series moved.
    prometheus
        .value_when(
            "sum(consent_rpc_calls_total{job=\"platform\",surface=\"partner\",code=\"OK\"})",
            |served| served > served_before,
        )
        .await;
    prometheus
        .value_when(
            "sum(consent_rpc_calls_total{job=\"platform\",partner=\"music\",code=\"UNAUTHENTICATED\",reason=\"TOKEN_INVALID\"})",
            |refused| refused == 1.0,
        )
        .await;
    prometheus
        .value_when(
            "sum(consent_rpc_calls_total{job=\"partner\",surface=\"app\",method=\"Share\",code=\"OK\"})",
            |shares| shares == 1.0,
        )
        .await;
    prometheus
        .value_when(
            "sum(consent_tls_handshakes_refused_total{job=\"platform\",cause=\"no_certificate\"})",
            |refused| refused >= 1.0,
        )
        .await;
    prometheus
        .value_when("consent_grants{job=\"platform\",state=\"active\"}", |n| {
            n == 1.0
        })
        .await;
    prometheus
        .value_when(
            "consent_audit_chain_intact{job=\"platform\",check=\"running\"}",
            |intact| intact == 1.0,
        )
        .await;
    prometheus
        .value_when(
            "consent_audit_records_appended_total{job=\"platform\"}",
            |n| n >= 2.0,
        )
        .await;
    prometheus
        .value_when("consent_ready{job=\"platform\"}", |ready| ready == 1.0)
        .await;
    prometheus
        .value_when(
            "sum(consent_store_commit_seconds_count{job=\"platform\",backend=\"sqlite\"})",
            |commits| commits > 0.0,
        )
        .await;
    prometheus
        .value_when(
            "sum(consent_rpc_duration_seconds_bucket{job=\"platform\",method=\"StartThread\",le=\"+Inf\"})",
            |sends| sends >= 1.0,
        )
        .await;
    prometheus
        .value_when(
            "sum(consent_grant_event_lag_seconds_count{job=\"platform\",partner=\"music\"})",
            |sent| sent >= 1.0,
        )
        .await;
    let verified = w.work.verify_audit(w.ports.operator).await;
    assert!(verified.ok, "{verified:?}");
    prometheus
        .value_when(
            "consent_audit_chain_intact{job=\"platform\",check=\"full\"}",
            |intact| intact == 1.0,
        )
        .await;
    let rules = prometheus.rules().await;
    let groups = rules["data"]["groups"].as_array().expect("rule groups");
    let alerts: Vec<_> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let mut names: Vec<_> = alerts.iter().filter_map(|a| a["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "AuditChainBroken",
            "DeletionAttestationsOverdue",
            "PartnerRateLimited",
            "PartnerRefusalsSpiking",
            "PlatformGaugesStale",
            "ReplicaNotServing"
        ],
        "the shipped alert rules are loaded"
    );
    for alert in &alerts {
        assert_eq!(alert["health"], "ok", "every rule evaluates: {alert}");
        assert_eq!(alert["state"], "inactive", "nothing is wrong yet: {alert}");
    }
    // No series names a person, a token, a thread or a message, by label or by value.
    let private = [
        w.alice.id.as_str(),
        w.bob.id.as_str(),
        "alice",
        "bob",
        "not-a-token",
        "a track",
        shared.thread_id.as_str(),
        shared.message_id.as_str(),
    ];
    let series = prometheus.query("{__name__=~\"consent_.*\"}").await;
    assert!(series.len() > 20, "both services' series: {}", series.len());
    for (labels, _) in &series {
        for (name, value) in labels {
            assert!(
                ![
                    "user",
                    "user_id",
                    "token",
                    "message",
                    "message_id",
                    "thread"
                ]
                .contains(&name.as_str()),
                "a label names a {name}: {labels:?}"
            );
            assert!(
                !private.contains(&value.as_str()),
                "a label carries {value:?}: {labels:?}"
            );
        }
    }

    // One trace holds the share on the partner and the send it made on the platform.
    let mut crossing = None;
    eventually(
        "a trace crossing both services",
        Duration::from_secs(30),
        async || {
            let spans = otlp.spans();
            crossing = spans
                .iter()
                .filter(|s| {
                    s.service == "platform-svc"
                        && s.attributes.get("rpc.method").map(String::as_str) == Some("StartThread")
                })
                .find_map(|platform| {
                    let partner = spans.iter().find(|s| {
                        s.service == "partner-svc"
                            && s.trace_id == platform.trace_id
                            && s.attributes.get("rpc.method").map(String::as_str) == Some("Share")
                    })?;
                    Some((partner.clone(), platform.clone()))
                });
            crossing.is_some()
        },
    )
    .await;
    let (partner_span, platform_span) = crossing.unwrap();
    assert_eq!(
        platform_span.parent_span_id, partner_span.span_id,
        "the platform's span is a child of the partner's"
    );
    assert_eq!(
        platform_span.attributes.get("partner").map(String::as_str),
        Some("music")
    );
    assert_eq!(
        platform_span.attributes.get("decision").map(String::as_str),
        Some("OK")
    );
    for span in [&partner_span, &platform_span] {
        for value in span.attributes.values() {
            assert!(
                !value.contains("a track"),
                "a span carries a message body: {span:?}"
            );
        }
    }

    // The platform's JSON log lines written during that call name its trace.
    let log = std::fs::read_to_string(w.work.path.join("platform.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(!lines.is_empty(), "the platform writes JSON lines");
    let trace_id = platform_span.trace_id.as_str();
    let of_trace = lines.iter().filter(|line| {
        line["span"]["trace_id"] == trace_id
            || line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == trace_id))
    });
    assert!(
        of_trace.count() >= 1,
        "a log line names the trace {}; the last lines: {:?}",
        platform_span.trace_id,
        &lines[lines.len().saturating_sub(3)..]
    );

    // A record written into the chain behind the platform's back (without its key, not
    // linked to the chain) breaks the running check: the alert fires, and stays.
    let db = rusqlite::Connection::open(w.work.path.join("platform.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO audit (seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash, mac) \
         SELECT MAX(seq) + 1, 0, 'music', '', '', 'Forged', '', 'allow', '', 'forged', 'forged', 'forged' FROM audit",
        [],
    )
    .unwrap();
    prometheus
        .value_when(
            "ALERTS{alertname=\"AuditChainBroken\",alertstate=\"firing\",check=\"running\"}",
            |firing| firing == 1.0,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    prometheus
        .value_when(
            "max_over_time(consent_audit_chain_intact{job=\"platform\",check=\"running\"}[10s])",
            |intact| intact == 0.0,
        )
        .await;
}
