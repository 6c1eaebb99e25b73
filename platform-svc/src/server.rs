//! Assembles the three listeners. Each one terminates its own TLS ([`consent_tls::termination`]), admits
//! one kind of principal at its edge ([`crate::edge`]), and serves health (following
//! [`crate::readiness`]) and both reflection versions beside its own services, with HTTP/2
//! and message limits set.

use crate::api::account::AccountService;
use crate::api::admin::AdminService;
use crate::api::consent::ConsentService;
use crate::api::messaging::MessagingService;
use crate::api::{Limits, Platform};
use crate::config::PlatformConfig;
use crate::edge::{OperatorEdge, PartnerEdge, UserEdge};
use crate::rate_limit::PartnerRateLimiter;
use crate::readiness;
use crate::web::WebState;
use consent_core::audit::AuditKey;
use consent_core::clock::Clock;
use consent_core::secret::SecretKey;
use consent_proto::platform::v1::account_server::AccountServer;
use consent_proto::platform::v1::consent_server::ConsentServer;
use consent_proto::platform::v1::messaging_server::MessagingServer;
use consent_proto::platform::v1::partner_admin_server::PartnerAdminServer;
use consent_telemetry::rpc::{Methods, RpcLayer};
use consent_tls::termination::{self, ReloadableTls, TlsFiles};
use consent_tls::transport::transport;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] termination::TlsError),
    /// The store.
    #[error("store: {0}")]
    Store(#[from] consent_store::StoreError),
    /// Binding or serving.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Reflection.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A key file.
    #[error("{0} {1}: {2}")]
    Key(&'static str, String, String),
}

/// Reads the `what` key file at `path`.
fn read_key(what: &'static str, path: &std::path::Path) -> Result<SecretKey, StartError> {
    let failed = |why: String| StartError::Key(what, path.display().to_string(), why);
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    SecretKey::from_hex(&text).map_err(failed)
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct BoundPlatform {
    config: PlatformConfig,
    platform: Platform,
    audit_key: AuditKey,
    stop: watch::Sender<bool>,
    partner: (TcpListener, Arc<ReloadableTls>),
    operator: (TcpListener, Arc<ReloadableTls>),
    user: (TcpListener, Arc<ReloadableTls>),
    web: (TcpListener, Arc<ReloadableTls>),
    ops: Option<TcpListener>,
}

/// Addresses actually bound (ports chosen by the OS when configured as 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// Partner surface.
    pub partner: SocketAddr,
    /// Operator surface.
    pub operator: SocketAddr,
    /// User surface.
    pub user: SocketAddr,
    /// Web pages.
    pub web: SocketAddr,
    /// Operations (`/metrics`), when configured.
    pub ops: Option<SocketAddr>,
}

impl BoundPlatform {
    /// Opens the store, loads certificates and binds every listener.
    pub async fn bind(config: PlatformConfig, clock: Arc<Clock>) -> Result<Self, StartError> {
        consent_telemetry::ops::recorder();
        let audit_key = read_key("audit key", &config.audit_key)?;
        let pseudonym_key = read_key("pseudonym key", &config.pseudonym_key)?;
        let database = config.database.clone();
        let store_key = audit_key.clone();
        let store = tokio::task::spawn_blocking(move || consent_store::open(&database, store_key))
            .await
            .map_err(std::io::Error::other)??;
        let (stop, stopping) = watch::channel(false);
        let platform = Platform::new(
            store,
            clock,
            Limits::new(&config.policy, &config.limits),
            pseudonym_key,
            stopping,
        );
        let t = &config.tls;
        let files = |client_ca: Option<&std::path::Path>| TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            client_ca: client_ca.map(|p| p.to_path_buf()),
            crls: if client_ca.is_some() {
                t.crls.clone()
            } else {
                Vec::new()
            },
            http1: false,
            client_certificate_optional: false,
        };
        let partner_tls = Arc::new(ReloadableTls::load(files(Some(&t.partner_ca)))?);
        let operator_tls = Arc::new(ReloadableTls::load(files(Some(&t.operator_ca)))?);
        let user_tls = Arc::new(ReloadableTls::load(files(None))?);
        let web_tls = Arc::new(ReloadableTls::load(TlsFiles {
            http1: true,
            ..files(None)
        })?);
        Ok(BoundPlatform {
            partner: (TcpListener::bind(config.listen.partner).await?, partner_tls),
            operator: (
                TcpListener::bind(config.listen.operator).await?,
                operator_tls,
            ),
            user: (TcpListener::bind(config.listen.user).await?, user_tls),
            web: (TcpListener::bind(config.listen.web).await?, web_tls),
            ops: match config.listen.ops {
                Some(address) => Some(TcpListener::bind(address).await?),
                None => None,
            },
            platform,
            audit_key,
            stop,
            config,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> Result<BoundAddrs, std::io::Error> {
        Ok(BoundAddrs {
            partner: self.partner.0.local_addr()?,
            operator: self.operator.0.local_addr()?,
            user: self.user.0.local_addr()?,
            web: self.web.0.local_addr()?,
            ops: self.ops.as_ref().map(TcpListener::local_addr).transpose()?,
        })
    }

    /// The shared platform state (tests use it to reach the clock).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Re-reads certificates and CRLs of every listener, all or none.
    pub fn tls_reloader(
        &self,
    ) -> impl Fn() -> Result<(), termination::TlsError> + Send + Sync + 'static {
        let all = [
            self.partner.1.clone(),
            self.operator.1.clone(),
            self.user.1.clone(),
            self.web.1.clone(),
        ];
        move || ReloadableTls::reload_all(&all)
    }

    /// Serves until `shutdown` resolves, then drains connections.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let BoundPlatform {
            config,
            platform,
            audit_key,
            stop,
            partner,
            operator,
            user,
            web,
            ops,
        } = self;
        let web_origin = match &config.web_origin {
            Some(origin) => origin.trim_end_matches('/').to_string(),
            None => format!("https://localhost:{}", web.0.local_addr()?.port()),
        };
        let limits = &config.limits;
        let max = limits.max_message_bytes;
        let header_limit = usize::try_from(limits.max_header_list_bytes).unwrap_or(usize::MAX);
        let stop_rx = stop.subscribe();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let ready = readiness::follow(Arc::clone(&platform.store), stop_rx.clone());

        let partner_routes = {
            let messaging = MessagingServer::new(MessagingService::new(platform.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            let consent =
                ConsentService::new(platform.clone(), limits.partner_event_streams, &web_origin);
            let consent = ConsentServer::new(consent)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            let rates =
                PartnerRateLimiter::new(limits.partner_requests_per_second, limits.partner_burst);
            let edge = PartnerEdge::new(Arc::new(rates), header_limit);
            let mut routes = Routes::builder();
            routes
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    messaging,
                    edge.clone(),
                ))
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    consent, edge,
                ));
            with_probes(
                routes,
                &[
                    "consent.platform.v1.Messaging",
                    "consent.platform.v1.Consent",
                ],
                ready.clone(),
            )
            .await?
        };
        let operator_routes = {
            let admin = PartnerAdminServer::new(AdminService::new(
                platform.clone(),
                config.trust_domain.clone(),
                audit_key.clone(),
            ))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
            let mut routes = Routes::builder();
            routes.add_service(tonic::service::interceptor::InterceptedService::new(
                admin,
                OperatorEdge::new(header_limit),
            ));
            with_probes(routes, &["consent.platform.v1.PartnerAdmin"], ready.clone()).await?
        };
        let account = AccountService::start(platform.clone(), config.sign_in)?;
        let web_pages = crate::web::router(WebState::new(
            platform.clone(),
            account.clone(),
            &web_origin,
        ))
        .map_err(std::io::Error::other)?;
        let user_routes = {
            let account = AccountServer::new(account)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            let mut routes = Routes::builder();
            routes.add_service(tonic::service::interceptor::InterceptedService::new(
                account,
                UserEdge::new(header_limit),
            ));
            with_probes(routes, &["consent.platform.v1.Account"], ready.clone()).await?
        };

        let observer = tokio::spawn(crate::observe::observe_forever(platform.clone(), audit_key));
        let sweeper = tokio::spawn(sweep_forever(
            platform.clone(),
            Duration::from_secs(config.policy.sweep_interval_secs.max(1)),
        ));
        let listeners = [
            ("partner", partner, partner_routes),
            ("operator", operator, operator_routes),
            ("user", user, user_routes),
        ];
        let methods = Methods::served(&[consent_proto::FILE_DESCRIPTOR_SET])
            .map_err(std::io::Error::other)?;
        let mut tasks = Vec::new();
        for (surface, (listener, tls), routes) in listeners {
            let incoming = termination::incoming(
                listener,
                tls,
                Duration::from_millis(limits.handshake_timeout_ms),
                Some(config.trust_domain.clone()),
                stopped(&stop_rx),
            );
            let server = transport(limits)
                .layer(RpcLayer::new(surface, methods.clone()))
                .add_routes(routes);
            let stop = stopped(&stop_rx);
            tasks.push(tokio::spawn(async move {
                server
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(StartError::from)
            }));
        }
        let web_task = {
            let (listener, tls) = web;
            let incoming = termination::incoming(
                listener,
                tls,
                Duration::from_millis(limits.handshake_timeout_ms),
                None,
                stopped(&stop_rx),
            );
            tokio::spawn(consent_tls::https::serve(
                incoming,
                web_pages,
                stopped(&stop_rx),
            ))
        };
        // `/metrics` outlives the drain, so that a scrape can see it (`consent_ready` 0).
        let (ops_stop, ops_stopping) = tokio::sync::oneshot::channel::<()>();
        let ops_task = ops.map(|listener| {
            tokio::spawn(consent_telemetry::ops::serve(listener, async move {
                let _ = ops_stopping.await;
            }))
        });
        let mut result = match web_task.await {
            Ok(served) => served.map_err(StartError::from),
            Err(e) => Err(std::io::Error::other(e).into()),
        };
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(std::io::Error::other(e).into()),
            }
        }
        for (name, task) in [("sweeper", sweeper), ("observer", observer)] {
            task.abort();
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(task = name, %error, "a background task panicked");
            }
        }
        close_store(Arc::clone(&platform.store)).await;
        let _ = ops_stop.send(());
        if let Some(task) = ops_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e.into()),
                Err(e) => result = Err(std::io::Error::other(e).into()),
            }
        }
        result
    }
}

/// How long a shutdown waits for the store to finish what it was handed.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lets the store finish the work it holds, that of calls whose caller went away during
/// the drain too (a cut-off read's record), before the process may exit; gives up after
/// [`STORE_CLOSE_TIMEOUT`] (a database that does not answer), saying so.
async fn close_store(store: Arc<dyn consent_store::Store>) {
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || store.close(STORE_CLOSE_TIMEOUT)).await {
        Ok(true) => tracing::info!(took_ms = started.elapsed().as_millis(), "store closed"),
        Ok(false) => tracing::error!(
            "the store did not finish cleanly within {STORE_CLOSE_TIMEOUT:?}: what it still held may be lost"
        ),
        Err(error) => tracing::error!(%error, "closing the store failed"),
    }
}

/// Resolves once `stop` turns true (or its sender goes).
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }
}

/// Adds `grpc.health.v1` (each service, and the server as a whole, serving while `ready`
/// holds) and reflection v1 and v1alpha, listing `services`.
async fn with_probes(
    mut routes: tonic::service::RoutesBuilder,
    services: &'static [&'static str],
    mut ready: watch::Receiver<bool>,
) -> Result<Routes, StartError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let now = *ready.borrow_and_update();
    report(&reporter, services, now).await;
    tokio::spawn(async move {
        while ready.changed().await.is_ok() {
            let now = *ready.borrow_and_update();
            report(&reporter, services, now).await;
        }
    });
    let reflection_v1 = consent_proto::reflection(services).build_v1()?;
    let reflection_v1alpha = consent_proto::reflection(services).build_v1alpha()?;
    routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(routes.routes())
}

/// Sets `services` and the server as a whole (`""`) serving or not.
async fn report(reporter: &HealthReporter, services: &[&str], ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in services.iter().chain(&[""]) {
        reporter.set_service_status(*service, status).await;
    }
}

async fn sweep_forever(platform: Platform, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match platform.sweep_grants().await {
            Ok(0) => {}
            Ok(ended) => tracing::info!(ended, "ended expired or lapsed grants"),
            Err(error) => tracing::warn!(%error, "grant sweep failed"),
        }
    }
}
