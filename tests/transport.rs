//! The edge: mutual TLS refuses bad certificates before any RPC, and every listener serves
//! health and both reflection versions.

use consent_proto::platform::v1 as pb;
use end_to_end::{TRUST_DOMAIN, TestPlatform, register_partners};
use platform_svc::identity::partner_spiffe_id;
use platform_svc::pki::{CertificateAuthority, LeafSpec};
use time::{Duration, OffsetDateTime};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Calls the partner surface with `identity`; the call must not succeed.
async fn assert_partner_refuses(
    platform: &TestPlatform,
    identity: Option<&platform_svc::pki::IssuedCertificate>,
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

    assert_partner_refuses(&platform, None).await;

    let foreign = CertificateAuthority::new("someone else").unwrap();
    assert_partner_refuses(&platform, Some(&foreign.issue(&music_leaf(900)).unwrap())).await;

    let mut expired = music_leaf(901);
    expired.not_before = OffsetDateTime::now_utc() - Duration::days(10);
    expired.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    assert_partner_refuses(&platform, Some(&platform.pki.ca.issue(&expired).unwrap())).await;

    let mut not_yet = music_leaf(902);
    not_yet.not_before = OffsetDateTime::now_utc() + Duration::days(1);
    assert_partner_refuses(&platform, Some(&platform.pki.ca.issue(&not_yet).unwrap())).await;

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
    let exported = platform
        .operator()
        .await
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let partner_calls = exported
        .records
        .iter()
        .filter(|r| r.partner_id == "music")
        .count();
    assert_eq!(partner_calls, 1);
    platform.shutdown().await;
}

#[tokio::test]
async fn every_listener_serves_health_and_reflection() {
    let platform = TestPlatform::start().await;
    let music = &platform
        .pki
        .partners
        .iter()
        .find(|(p, _)| p == "music")
        .unwrap()
        .1;
    let listeners = [
        (
            platform.addrs.partner,
            Some(music),
            "consent.platform.v1.Messaging",
        ),
        (
            platform.addrs.operator,
            Some(&platform.pki.operator),
            "consent.platform.v1.PartnerAdmin",
        ),
        (platform.addrs.user, None, "consent.platform.v1.Account"),
    ];
    for (addr, identity, service) in listeners {
        let channel = platform.channel(addr, identity).await.unwrap();
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32, "{service}");

        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1Alpha;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        };
        let mut stream = V1Alpha::new(channel.clone())
            .server_reflection_info(tokio_stream_once(request))
            .await
            .unwrap()
            .into_inner();
        let Some(AlphaResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list from v1alpha reflection")
        };
        assert!(
            list.service.iter().any(|s| s.name == service),
            "{service} missing from v1alpha reflection"
        );

        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = V1::new(channel)
            .server_reflection_info(tokio_stream_once(request))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list from v1 reflection")
        };
        assert!(
            list.service.iter().any(|s| s.name == service),
            "{service} missing from v1 reflection"
        );
    }
    platform.shutdown().await;
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::IntoStreamingRequest<Message = T> {
    tokio_stream::once(item)
}
