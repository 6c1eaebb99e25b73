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
enum Reflection {
    V1,
    V1Alpha,
}

impl Reflection {
    /// The services this version lists on `channel`.
    async fn list(self, channel: &Channel) -> Vec<String> {
        match self {
            Reflection::V1 => v1::list(channel).await,
            Reflection::V1Alpha => v1alpha::list(channel).await,
        }
    }

    /// Whether this version on `channel` answers the file that defines `symbol`.
    async fn resolves(self, channel: &Channel, symbol: &str) -> bool {
        match self {
            Reflection::V1 => v1::resolves(channel, symbol).await,
            Reflection::V1Alpha => v1alpha::resolves(channel, symbol).await,
        }
    }
}

/// A client of one version of reflection: the two versions' generated APIs have the same
/// shape under different modules, so one body serves both.
macro_rules! reflection_client {
    ($version:ident) => {
        mod $version {
            use tonic::transport::Channel;
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

            pub async fn list(channel: &Channel) -> Vec<String> {
                let response = ask(channel, MessageRequest::ListServices(String::new())).await;
                let Some(MessageResponse::ListServicesResponse(list)) = response else {
                    panic!(
                        "no service list from {}: {response:?}",
                        stringify!($version)
                    )
                };
                list.service.into_iter().map(|s| s.name).collect()
            }

            pub async fn resolves(channel: &Channel, symbol: &str) -> bool {
                let request = MessageRequest::FileContainingSymbol(symbol.into());
                let response = ask(channel, request).await;
                matches!(response, Some(MessageResponse::FileDescriptorResponse(_)))
            }

            /// Sends one request on `channel`: its answer, or `None` if it ended in an error.
            async fn ask(channel: &Channel, request: MessageRequest) -> Option<MessageResponse> {
                let request = ServerReflectionRequest {
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
    };
}

reflection_client!(v1);
reflection_client!(v1alpha);
