//! Starts a partner: store, platform client, outbox worker, event watcher, and the API
//! (with health and reflection) over TLS 1.3 with the partner's certificate, terminated by
//! the same code as the platform's listeners.

use crate::api::PartnerApp;
use crate::config::PartnerConfig;
use crate::platform::PlatformClient;
use crate::store::PartnerStore;
use consent_proto::partner::v1::partner_app_server::PartnerAppServer;
use consent_telemetry::rpc::{Methods, RpcLayer};
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

/// Where the partner serves.
#[derive(Debug)]
pub struct Listeners {
    /// The partner's API.
    pub api: TcpListener,
    /// Its web app (when `web` is configured).
    pub web: Option<TcpListener>,
    /// `/metrics` (when `ops_listen` is configured).
    pub ops: Option<TcpListener>,
}

/// Runs the partner's API, and its web app and `/metrics` when configured, until
/// `shutdown` resolves.
pub async fn run(
    config: PartnerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    consent_telemetry::ops::recorder();
    let Listeners {
        api: listener,
        web,
        ops,
    } = listeners;
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

    let served = <PartnerAppServer<PartnerApp> as tonic::server::NamedService>::NAME;
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in [served, ""] {
        reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = consent_proto::reflection(&[served]).build_v1()?;
    let reflection_v1alpha = consent_proto::reflection(&[served]).build_v1alpha()?;
    let partner_app = PartnerApp::new(config.clone(), store.clone(), client.clone(), wake);
    let app = PartnerAppServer::new(partner_app.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // The platform's own TLS termination: TLS 1.3 only, handshakes under a timeout, the same
    // HTTP/2 limits. A front end may present a client certificate (it must then chain to
    // `tls.client_ca`); the API refuses calls with neither that nor a user's session.
    let limits = TransportLimits::default();
    let files = TlsFiles {
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
        client_ca: config.tls.client_ca.clone(),
        crls: Vec::new(),
        http1: false,
        client_certificate_optional: true,
    };
    let tls = Arc::new(ReloadableTls::load(files.clone())?);
    let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stopped| *stopped).await;
        }
    };
    let connections = incoming(
        listener,
        tls,
        handshake_timeout,
        Some(config.trust_domain.clone()),
        stopped(),
    );
    let web_task = match (web, &config.web) {
        (Some(web_listener), Some(web)) => {
            let web_tls = Arc::new(ReloadableTls::load(TlsFiles {
                client_ca: None,
                http1: true,
                client_certificate_optional: false,
                ..files
            })?);
            let pages = crate::web::router(crate::web::WebState::new(
                partner_app,
                store,
                client,
                config.clone(),
                web,
            ))?;
            let web_connections =
                incoming(web_listener, web_tls, handshake_timeout, None, stopped());
            Some(tokio::spawn(consent_tls::https::serve(
                web_connections,
                pages,
                stopped(),
            )))
        }
        _ => None,
    };
    let ops_task =
        ops.map(|listener| tokio::spawn(consent_telemetry::ops::serve(listener, stopped())));
    let methods = Methods::served(&[consent_proto::FILE_DESCRIPTOR_SET])?;
    let result = transport(&limits)
        .layer(RpcLayer::new("app", methods))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(app)
        .serve_with_incoming_shutdown(connections, async move {
            shutdown.await;
            // Draining: a front end checking health goes elsewhere.
            for service in ["consent.partner.v1.PartnerApp", ""] {
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            let _ = stop.send(true);
        })
        .await;
    if let Some(web_task) = web_task {
        web_task.await??;
    }
    if let Some(ops_task) = ops_task {
        ops_task.await??;
    }
    outbox.abort();
    watcher.abort();
    Ok(result?)
}
