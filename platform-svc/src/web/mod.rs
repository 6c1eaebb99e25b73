//! The platform's web pages, for people in a browser: sign-in, the consent page of the
//! authorization code flow ([`authorize`]), and the user's own pages ([`grants`]).
//!
//! They are served over HTTPS with the platform's certificate on a listener of their own,
//! rendered on the server ([`pages`], with maud) and need no script. The browser holds a
//! session cookie (`__Host-session`: `Secure`, `HttpOnly`, `SameSite=Lax`) and a CSRF
//! cookie whose value every form must carry back ([`session`]). Every response forbids
//! framing and scripts with a strict Content-Security-Policy. The pages act through the
//! same operations as the gRPC surfaces: sign-in is the account service's (throttled the
//! same way), approval is `api::account::approve`.

mod authorize;
mod grants;
mod pages;
mod session;
mod sign_in;

use crate::api::Platform;
use crate::api::account::AccountService;
use crate::error::ApiError;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use consent_tls::termination::TlsConnection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// What every page handler shares.
#[derive(Debug, Clone)]
pub struct WebState {
    platform: Platform,
    account: AccountService,
    origin: Arc<str>,
}

impl WebState {
    /// The pages of `platform`, signing in through `account`, reached at `origin`.
    pub fn new(platform: Platform, account: AccountService, origin: &str) -> Self {
        WebState {
            platform,
            account,
            origin: origin.into(),
        }
    }
}

/// The policy of every page: nothing but its own stylesheet, no scripts, no framing, forms
/// only to the platform itself (the consent form adds its redirect URI's origin).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every page and form.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/grants") }))
        .route("/style.css", get(stylesheet))
        .route("/sign-in", get(sign_in::page).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/authorize", get(authorize::open))
        .route(
            "/consent/{request_id}",
            get(authorize::page).post(authorize::decide),
        )
        .route("/grants", get(grants::list))
        .route("/grants/{grant_id}/revoke", post(grants::revoke))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css")],
        include_str!("style.css"),
    )
}

/// Adds the headers every response carries; a handler may have set a wider
/// Content-Security-Policy already.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A failure shown as a page with its HTTP status and reason.
fn failure(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, pages::failure(error)).into_response()
}

/// How long a browser has to send a request's headers once it started them.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take before it is answered `408`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;
/// How long open connections may finish their requests after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on the TLS connections of `incoming` until `shutdown` resolves, then
/// lets open requests finish (for at most [`DRAIN_TIMEOUT`]). A connection must send its
/// headers within [`HEADER_READ_TIMEOUT`] and each request is answered within
/// [`REQUEST_TIMEOUT`], so slow clients cannot hold the listener.
pub async fn serve(
    mut incoming: ReceiverStream<io::Result<TlsConnection>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let connection = tokio::select! {
            () = &mut shutdown => break,
            next = incoming.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let peer = connection
            .connect_info()
            .remote_addr
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let service = router.clone().layer(Extension(ConnectInfo(Peer(peer))));
        let serving = builder
            .serve_connection(TokioIo::new(connection), TowerToHyperService::new(service))
            .into_owned();
        let serving = graceful.watch(serving);
        tokio::spawn(async move {
            let _ = serving.await;
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}

/// The client address of a request's connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);
