//! Serving HTTPS pages (axum) on the TLS connections of [`crate::termination::incoming`],
//! with the limits a listener facing browsers needs: headers within
//! [`HEADER_READ_TIMEOUT`], each request answered within [`REQUEST_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] connections, and a bounded drain at shutdown. HTTP/1.1 and HTTP/2
//! are both served; each request carries the client's address as
//! `ConnectInfo<`[`Peer`]`>`.

use crate::termination::TlsConnection;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::{Extension, Router};
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

/// The stylesheet of every page, served at `/style.css` (a page's policy allows no inline
/// style).
pub const STYLESHEET: &str = include_str!("style.css");

/// `router` with `/style.css` and the headers every page carries: a Content-Security-
/// Policy allowing nothing but the site's own stylesheet and forms posted to the site
/// itself and to `form_targets` (origins a form's redirect may lead to, space-separated;
/// browsers hold such redirects to the policy), unless a handler set a wider one; no
/// framing, no sniffing, no referrer, no caching, HSTS.
pub fn secured(router: Router, form_targets: &str) -> Router {
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {form_targets}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let policy = HeaderValue::from_str(policy.trim()).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    ));
    router
        .route(
            "/style.css",
            axum::routing::get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLESHEET) }),
        )
        .layer(axum::middleware::map_response(
            move |mut response: Response| {
                let policy = policy.clone();
                async move {
                    let headers = response.headers_mut();
                    headers
                        .entry(header::CONTENT_SECURITY_POLICY)
                        .or_insert(policy);
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
            },
        ))
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

/// Cookies and CSRF tokens of pages served to browsers: every cookie is `__Host-`
/// prefixed, `Secure`, `HttpOnly`, `SameSite=Lax`, for the whole site. Forms carry the
/// value of the `__Host-csrf` cookie back in a hidden field (a double-submit token): a page
/// of another site can make the browser post, but cannot read the cookie to fill in the
/// field, and the prefix keeps any other host from setting it.
pub mod cookies {
    use axum_extra::extract::CookieJar;
    use axum_extra::extract::cookie::{Cookie, SameSite};
    use sha2::{Digest, Sha256};

    const CSRF_COOKIE: &str = "__Host-csrf";

    /// A cookie with the attributes every cookie of these pages has.
    pub fn secure(name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .secure(true)
            .http_only(true)
            .same_site(SameSite::Lax)
            .build()
    }

    /// `jar` with the cookie `name` removed in the browser (a `__Host-` cookie is replaced
    /// only by one with its attributes).
    pub fn removed(jar: CookieJar, name: &'static str) -> CookieJar {
        let mut removal = secure(name, String::new());
        removal.make_removal();
        jar.add(removal)
    }

    /// The browser's CSRF token, made (and set as a cookie) if it has none yet; `random`
    /// makes a new one.
    pub fn csrf_token(jar: CookieJar, random: impl FnOnce() -> String) -> (CookieJar, String) {
        if let Some(token) = jar.get(CSRF_COOKIE) {
            let token = token.value().to_string();
            return (jar, token);
        }
        let token = random();
        (jar.add(secure(CSRF_COOKIE, token.clone())), token)
    }

    /// Whether a form's `field` is the browser's CSRF cookie (compared as hashes, so the
    /// comparison's time says nothing about the cookie).
    pub fn csrf_matches(jar: &CookieJar, field: &str) -> bool {
        jar.get(CSRF_COOKIE).is_some_and(|c| {
            !field.is_empty() && Sha256::digest(c.value()) == Sha256::digest(field)
        })
    }
}
