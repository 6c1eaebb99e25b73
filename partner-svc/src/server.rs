//! Starts a partner: store, platform client, outbox worker, event watcher, and the API
//! (with health and reflection) over TLS 1.3 with the partner's certificate, terminated by
//! the same code as the platform's listeners. `SIGHUP` reads every certificate, key, CA
//! and CRL again, the API's, the web app's and the platform client's, and installs them
//! only once all have loaded.

use crate::api::PartnerApp;
use crate::caller::CallerLayer;
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
use tokio_util::task::AbortOnDropHandle;
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
/// `shutdown` resolves, reloading certificates and CRLs on `SIGHUP`.
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
    if !config.tls.crls.is_empty() && config.tls.client_ca.is_none() {
        return Err("tls.crls needs tls.client_ca: the CRLs are checked for front ends' certificates, which only a client_ca asks for".into());
    }
    let config = Arc::new(config);
    let store = PartnerStore::open(&config.database)?;
    let client = PlatformClient::connect_lazy(&config)?;
    let wake = Arc::new(Notify::new());
    let title = format!("{} share", config.display_name);
    // Every task spawned here is a handle that aborts it when dropped, so that none outlives
    // this function, whichever way it returns.
    let _outbox = AbortOnDropHandle::new(tokio::spawn(crate::outbox::run_worker(
        store.clone(),
        client.clone(),
        title,
        wake.clone(),
    )));
    let _watcher = AbortOnDropHandle::new(tokio::spawn(crate::events::run_watcher(
        store.clone(),
        client.clone(),
    )));

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
    let caller_layer = CallerLayer::new(served, &config.partner_id, store.clone());
    let app = PartnerAppServer::new(partner_app.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // The platform's own TLS termination: TLS 1.3 only, handshakes under a timeout, the same
    // HTTP/2 limits.
    let limits = TransportLimits::default();
    let files = api_tls_files(&config);
    let tls = Arc::new(ReloadableTls::load(files.clone())?);
    let web_tls = match &config.web {
        Some(_) => Some(Arc::new(ReloadableTls::load(TlsFiles {
            client_ca: None,
            crls: Vec::new(),
            http1: true,
            client_certificate_optional: false,
            ..files
        })?)),
        None => None,
    };
    let servers: Vec<_> = std::iter::once(Arc::clone(&tls))
        .chain(web_tls.clone())
        .collect();
    let _reloads = consent_tls::termination::reload_on_hangup({
        let (config, client) = (config.clone(), client.clone());
        move || reload(&config, &client, &servers)
    });
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
    let web_task = match (web, &config.web, web_tls) {
        (Some(web_listener), Some(web), Some(web_tls)) => {
            let pages = crate::web::router(crate::web::WebState::new(
                partner_app,
                store,
                client,
                config.clone(),
                web,
            ))?;
            let web_connections =
                incoming(web_listener, web_tls, handshake_timeout, None, stopped());
            Some(AbortOnDropHandle::new(tokio::spawn(
                consent_tls::https::serve(web_connections, pages, stopped()),
            )))
        }
        _ => None,
    };
    let ops_task = ops.map(|listener| {
        AbortOnDropHandle::new(tokio::spawn(consent_telemetry::ops::serve(
            listener,
            stopped(),
        )))
    });
    let methods = Methods::served(&[consent_proto::FILE_DESCRIPTOR_SET])?;
    let result = transport(&limits)
        .layer(RpcLayer::new("app", methods))
        .layer(caller_layer)
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
    let web_result = match web_task {
        Some(web_task) => web_task.await,
        None => Ok(Ok(())),
    };
    let ops_result = match ops_task {
        Some(ops_task) => ops_task.await,
        None => Ok(Ok(())),
    };
    web_result??;
    ops_result??;
    Ok(result?)
}

/// The API's TLS. A front end may present a client certificate (it must then chain to
/// `tls.client_ca` and be on none of `tls.crls`); the API refuses calls with neither that
/// nor a user's session.
fn api_tls_files(config: &PartnerConfig) -> TlsFiles {
    TlsFiles {
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
        client_ca: config.tls.client_ca.clone(),
        crls: config.tls.crls.clone(),
        http1: false,
        client_certificate_optional: true,
    }
}

/// Reads the files of the API's and the web app's TLS, and of the platform client, again;
/// installs them only once all have loaded, so a file that does not load changes nothing.
fn reload(
    config: &PartnerConfig,
    client: &PlatformClient,
    servers: &[Arc<ReloadableTls>],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channels = PlatformClient::lazy_channels(config)?;
    ReloadableTls::reload_all(servers)?;
    client.use_channels(channels);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use consent_tls::pki::DevPki;

    #[tokio::test]
    async fn a_reload_refused_by_a_listener_file_keeps_the_platform_clients_channels() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate("consent.test", "ops", &["music".into()]).unwrap();
        pki.write_to(dir.path(), None).unwrap();
        let profile = include_str!("../profiles/music.toml")
            .replace("dev-pki/", &format!("{}/", dir.path().display()));
        let mut config = PartnerConfig::from_toml(&profile).unwrap();
        let crl = dir.path().join("crl.pem");
        config.tls.crls = vec![crl.clone()];
        let client = PlatformClient::connect_lazy(&config).unwrap();
        let servers = [Arc::new(
            ReloadableTls::load(api_tls_files(&config)).unwrap(),
        )];
        let before = client.channels_in_use();

        std::fs::write(&crl, "not a revocation list").unwrap();
        let refused = reload(&config, &client, &servers).unwrap_err();
        assert!(refused.to_string().contains("crl.pem"), "{refused}");
        assert!(
            Arc::ptr_eq(&before, &client.channels_in_use()),
            "a reload that fails must leave the platform client's channels"
        );

        std::fs::write(&crl, &pki.crl_pem).unwrap();
        reload(&config, &client, &servers).unwrap();
        assert!(!Arc::ptr_eq(&before, &client.channels_in_use()));
    }

    #[tokio::test]
    async fn revocation_lists_without_a_front_ends_ca_are_refused_at_start() {
        let profile = include_str!("../profiles/music.toml");
        let client_ca = profile
            .lines()
            .find(|line| line.starts_with("client_ca"))
            .unwrap();
        let config =
            PartnerConfig::from_toml(&profile.replace(client_ca, "crls = [\"crl.pem\"]")).unwrap();
        let listeners = Listeners {
            api: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            web: None,
            ops: None,
        };
        let refused = run(config, listeners, std::future::pending())
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("tls.crls needs tls.client_ca"),
            "{refused}"
        );
    }
}
