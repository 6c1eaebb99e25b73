//! The partner's client of the platform: one lazily connected mTLS channel per platform
//! replica (each reconnects by itself when its replica comes back, and HTTP/2 keepalives
//! notice a cut network), behind [`Replicas`], which sends each call to one replica and
//! moves to another when a call cannot reach it or its health says it is not serving.
//! Every call carries the current span's trace context (`traceparent`), so the platform's
//! work for it joins the partner's trace. A reload of the partner's certificate replaces
//! the channels: calls already sent finish on the old ones, later calls dial again.

use crate::config::PartnerConfig;
use consent_proto::platform::v1::consent_client::ConsentClient;
use consent_proto::platform::v1::messaging_client::MessagingClient;
use consent_tls::termination;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Request;
use tonic::body::Body;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Service, ServiceExt};

/// How often the current replica's health is checked, when there are several.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Clients of the platform's partner surface.
#[derive(Debug, Clone)]
pub struct PlatformClient {
    /// Messaging (needs a grant token per call).
    pub messaging: MessagingClient<Replicas>,
    /// Consent.
    pub consent: ConsentClient<Replicas>,
    replicas: Replicas,
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
    /// A CA, certificate or key file that does not load.
    #[error(transparent)]
    Tls(#[from] consent_tls::termination::TlsError),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Read(path.display().to_string(), e))
}

impl PlatformClient {
    /// Prepares a channel to each replica named in `platform.address` (comma-separated);
    /// nothing is dialled until the first call. With several replicas, it starts checking
    /// their health, so it must be called inside the async runtime.
    pub fn connect_lazy(config: &PartnerConfig) -> Result<Self, ClientError> {
        let channels = Self::lazy_channels(config)?;
        // Partners start on replicas spread at random, so that each replica serves some.
        let start = std::hash::BuildHasher::hash_one(&RandomState::new(), channels.len());
        let start = usize::try_from(start % channels.len() as u64).unwrap_or(0);
        let replicas = Replicas {
            shared: Arc::new(Shared {
                channels: RwLock::new(channels),
                current: AtomicUsize::new(start),
            }),
        };
        if replicas.count() > 1 {
            tokio::spawn(follow_health(Arc::downgrade(&replicas.shared)));
        }
        Ok(PlatformClient {
            messaging: MessagingClient::new(replicas.clone()),
            consent: ConsentClient::new(replicas.clone()),
            replicas,
        })
    }

    /// A lazily connected channel to each replica, presenting the partner's certificate as
    /// its files hold it now, and trusting the platform's CA as its file holds it now.
    pub fn lazy_channels(config: &PartnerConfig) -> Result<Arc<[Channel]>, ClientError> {
        // Read through consent-tls, as the listeners read theirs: a file that does not load
        // is refused by name (tonic's error does not say which), and a CA certificate that
        // does not parse refuses the whole CA (tonic alone would drop it, and could end up
        // trusting nothing).
        let roots = termination::read_roots(&config.platform.ca)?;
        termination::read_certificates(&config.tls.cert)?;
        termination::read_private_key(&config.tls.key)?;
        let tls = ClientTlsConfig::new()
            .trust_anchors(roots.roots)
            .identity(Identity::from_pem(
                read(&config.tls.cert)?,
                read(&config.tls.key)?,
            ))
            .domain_name(config.platform.server_name.clone());
        config
            .platform
            .address
            .split(',')
            .map(|address| {
                Ok(Endpoint::from_shared(address.trim().to_string())?
                    .tls_config(tls.clone())?
                    .connect_timeout(Duration::from_secs(2))
                    // Keepalives notice a silently cut network, so the event stream reconnects.
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true)
                    .connect_lazy())
            })
            .collect()
    }

    /// The channels calls go over now.
    #[cfg(test)]
    pub(crate) fn channels_in_use(&self) -> Arc<[Channel]> {
        self.replicas.shared.snapshot()
    }

    /// Sends later calls over `channels` (made by [`PlatformClient::lazy_channels`] from the
    /// same configuration, so one per replica, in the same order).
    pub fn use_channels(&self, channels: Arc<[Channel]>) {
        *self
            .replicas
            .shared
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner) = channels;
    }
}

/// The platform's replicas. Every call goes to the current one (a partner starts on one
/// picked at random); a call that cannot reach it moves the current one on to the next,
/// and so does a health check that finds it not serving (then to the next one that is).
/// The call that failed is not sent again: the outbox and the event watcher retry, as they
/// do when the only platform is down.
#[derive(Debug, Clone)]
pub struct Replicas {
    shared: Arc<Shared>,
}

/// What every clone of [`Replicas`] shares.
#[derive(Debug)]
struct Shared {
    /// One channel per replica; replaced whole when certificates reload.
    channels: RwLock<Arc<[Channel]>>,
    /// The replica calls go to.
    current: AtomicUsize,
}

impl Shared {
    /// The channels as they are now.
    fn snapshot(&self) -> Arc<[Channel]> {
        Arc::clone(&self.channels.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Replicas {
    /// How many replicas there are.
    fn count(&self) -> usize {
        self.shared.snapshot().len()
    }

    /// Moves on from replica `failed`, unless another call already did.
    fn move_past(&self, failed: usize) {
        let next = (failed + 1) % self.count();
        let _ = self.shared.current.compare_exchange(
            failed,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// Whether `channel`'s replica says it is serving, within [`HEALTH_EVERY`].
async fn serving(channel: &Channel) -> bool {
    let mut health = HealthClient::new(channel.clone());
    let mut check = Request::new(HealthCheckRequest::default());
    check.set_timeout(HEALTH_EVERY);
    health
        .check(check)
        .await
        .is_ok_and(|reply| reply.into_inner().status == ServingStatus::Serving as i32)
}

/// Every [`HEALTH_EVERY`], checks the current replica; when it is not serving, moves to the
/// first after it that is. Ends once the clients are dropped.
async fn follow_health(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(HEALTH_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let channels = shared.snapshot();
        let count = channels.len();
        let current = &shared.current;
        let now = current.load(Ordering::Relaxed) % count;
        if serving(&channels[now]).await {
            continue;
        }
        for step in 1..count {
            let candidate = (now + step) % count;
            if serving(&channels[candidate]).await {
                tracing::warn!(
                    from = now,
                    to = candidate,
                    "moving to another platform replica"
                );
                current.store(candidate, Ordering::Relaxed);
                break;
            }
        }
    }
}

impl Service<http::Request<Body>> for Replicas {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        consent_telemetry::trace_context::write_current(request.headers_mut());
        let channels = self.shared.snapshot();
        let index = self.shared.current.load(Ordering::Relaxed) % channels.len();
        let mut channel = channels[index].clone();
        let replicas = self.clone();
        Box::pin(async move {
            let reply = match channel.ready().await {
                Ok(channel) => channel.call(request).await,
                Err(unready) => Err(unready),
            };
            if reply.is_err() {
                replicas.move_past(index);
            }
            reply
        })
    }
}

/// A request carrying the grant token as `Bearer`, with a deadline.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = consent_tls::https::with_bearer(message, token);
    request.set_timeout(Duration::from_secs(10));
    request
}
