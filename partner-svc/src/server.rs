//! Starts a partner: store, platform client, outbox worker, event watcher, and the API
//! (with health and reflection) over TLS 1.3 with the partner's certificate, terminated by
//! the same code as the platform's listeners.

use crate::api::PartnerApp;
use crate::config::PartnerConfig;
use crate::platform::PlatformClient;
use crate::store::PartnerStore;
use consent_proto::partner::v1::partner_app_server::PartnerAppServer;
use consent_tls::termination::{ReloadableTls, TlsFiles, incoming};
use consent_tls::transport::TransportLimits;
use consent_tls::transport::transport;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic_health::ServingStatus;

/// Largest message the partner API accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Runs the partner on `listener` until `shutdown` resolves.
pub async fn run(
    config: PartnerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = Arc::new(config);
    let store = PartnerStore::open(&config.database)?;
    let client = PlatformClient::connect_lazy(&config)?;
    let wake = Arc::new(Notify::new());
    let title = format!("{} share", config.display_name);
    let outbox = tokio::spawn(crate::outbox::run_worker(
        store.clone(),
        client.clone(),
        title,
        wake.clone(),
    ));
    let watcher = tokio::spawn(crate::events::run_watcher(store.clone(), client.clone()));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("consent.partner.v1.PartnerApp", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(consent_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
    let reflection_v1alpha =
        reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
    let app = PartnerAppServer::new(PartnerApp::new(config.clone(), store, client, wake))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // The platform's own TLS termination: TLS 1.3 only, handshakes under a timeout, the same
    // HTTP/2 limits. Front ends authenticate to the partner by its own means, not certificates.
    let limits = TransportLimits::default();
    let tls = Arc::new(ReloadableTls::load(TlsFiles {
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
        client_ca: None,
        crls: Vec::new(),
        http1: false,
    })?);
    let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);
    let connections = incoming(listener, tls, handshake_timeout, None);
    let result = transport(&limits)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(app)
        .serve_with_incoming_shutdown(connections, shutdown)
        .await;
    outbox.abort();
    watcher.abort();
    Ok(result?)
}
