//! The partner's client of the platform: one lazily connected mTLS channel (it reconnects
//! by itself when the platform comes back, and HTTP/2 keepalives notice a cut network)
//! carrying the messaging and consent clients.

use crate::config::PartnerConfig;
use consent_proto::platform::v1::consent_client::ConsentClient;
use consent_proto::platform::v1::messaging_client::MessagingClient;
use std::time::Duration;
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Clients of the platform's partner surface.
#[derive(Debug, Clone)]
pub struct PlatformClient {
    /// Messaging (needs a grant token per call).
    pub messaging: MessagingClient<Channel>,
    /// Consent.
    pub consent: ConsentClient<Channel>,
}

/// A client setup failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate file.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// The endpoint.
    #[error("platform endpoint: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Read(path.display().to_string(), e))
}

impl PlatformClient {
    /// Prepares the channel; nothing is dialled until the first call.
    pub fn connect_lazy(config: &PartnerConfig) -> Result<Self, ClientError> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&config.platform.ca)?))
            .identity(Identity::from_pem(
                read(&config.tls.cert)?,
                read(&config.tls.key)?,
            ))
            .domain_name(config.platform.server_name.clone());
        let channel = Endpoint::from_shared(config.platform.address.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(2))
            // Keepalives notice a silently cut network, so the event stream reconnects.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(PlatformClient {
            messaging: MessagingClient::new(channel.clone()),
            consent: ConsentClient::new(channel),
        })
    }
}

/// A request carrying the grant token as `Bearer`, with a deadline.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request.set_timeout(Duration::from_secs(10));
    request
}
