//! What every gRPC listener must serve besides its own services: health for each of them,
//! and both versions of reflection listing exactly those services, health and reflection,
//! each of them resolvable, with the rich error details grpcurl needs to print refusals.

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Asserts that the listener behind `channel` reports each of `services` serving, and
/// that both reflection versions list `services`, health and reflection, and nothing
/// else, each name resolving, with `google.rpc.ErrorInfo` too.
pub async fn assert_serves_health_and_reflection(channel: &Channel, services: &[&str]) {
    for service in services {
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: (*service).into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32, "{service}");
    }

    // The list is spelled out here rather than taken from the code it checks.
    let mut expected: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    expected.extend([
        "grpc.health.v1.Health".into(),
        "grpc.reflection.v1.ServerReflection".into(),
        "grpc.reflection.v1alpha.ServerReflection".into(),
    ]);
    expected.sort_unstable();
    for version in [Reflection::V1, Reflection::V1Alpha] {
        let mut listed = version.list(channel).await;
        listed.sort_unstable();
        assert_eq!(listed, expected, "{version:?} on {services:?}'s listener");
        // The rich error details are described too, so that grpcurl prints a refusal's
        // `ErrorInfo` and `BadRequest` as fields rather than as base64.
        for symbol in listed
            .iter()
            .map(String::as_str)
            .chain(["google.rpc.ErrorInfo"])
        {
            assert!(
                version.resolves(channel, symbol).await,
                "{symbol} unresolved by {version:?} on {services:?}'s listener"
            );
        }
    }
}

/// The two versions of reflection every listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Reflection {
    V1,
    V1Alpha,
}

impl Reflection {
    /// The services this version lists on `channel`.
    pub async fn list(self, channel: &Channel) -> Vec<String> {
        match self {
            Reflection::V1 => {
                use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
                use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
                let response =
                    Self::ask_v1(channel, MessageRequest::ListServices(String::new())).await;
                let Some(MessageResponse::ListServicesResponse(list)) = response else {
                    panic!("no service list from v1 reflection: {response:?}")
                };
                list.service.into_iter().map(|s| s.name).collect()
            }
            Reflection::V1Alpha => {
                use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
                use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
                let response =
                    Self::ask_v1alpha(channel, MessageRequest::ListServices(String::new())).await;
                let Some(MessageResponse::ListServicesResponse(list)) = response else {
                    panic!("no service list from v1alpha reflection: {response:?}")
                };
                list.service.into_iter().map(|s| s.name).collect()
            }
        }
    }

    /// Whether this version on `channel` answers the file that defines `symbol`.
    pub async fn resolves(self, channel: &Channel, symbol: &str) -> bool {
        match self {
            Reflection::V1 => {
                use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
                use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
                let response =
                    Self::ask_v1(channel, MessageRequest::FileContainingSymbol(symbol.into()))
                        .await;
                matches!(response, Some(MessageResponse::FileDescriptorResponse(_)))
            }
            Reflection::V1Alpha => {
                use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
                use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
                let response =
                    Self::ask_v1alpha(channel, MessageRequest::FileContainingSymbol(symbol.into()))
                        .await;
                matches!(response, Some(MessageResponse::FileDescriptorResponse(_)))
            }
        }
    }

    /// Sends one v1 reflection request on `channel`: its answer, or `None` if it ended
    /// in an error.
    async fn ask_v1(
        channel: &Channel,
        request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
    ) -> Option<tonic_reflection::pb::v1::server_reflection_response::MessageResponse> {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.ok().flatten()?.message_response
    }

    /// Sends one v1alpha reflection request on `channel`: its answer, or `None` if it ended
    /// in an error.
    async fn ask_v1alpha(
        channel: &Channel,
        request: tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest,
    ) -> Option<tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse> {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.ok().flatten()?.message_response
    }
}
