//! Serving HTTPS pages (axum) on the TLS connections of [`crate::termination::incoming`],
//! with the limits a listener facing browsers needs: HTTP/1.1 headers within
//! [`HEADER_READ_TIMEOUT`], each request answered within [`REQUEST_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] connections, and a bounded drain at shutdown. HTTP/1.1 and HTTP/2
//! are both served; each request carries the client's address as
//! `ConnectInfo<`[`Peer`]`>`. A site's pages refuse a query string or form that does not
//! parse on a page of their own ([`parsed`]).

pub mod parsed;

use crate::termination::TlsConnection;
use axum::extract::{ConnectInfo, OptionalFromRequestParts};
use axum::http::header::InvalidHeaderValue;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// The stylesheet of every page, served at `/style.css` (a page's policy allows no inline
/// style).
pub const STYLESHEET: &str = include_str!("style.css");

/// The Content-Security-Policy of a page: nothing but the site's own stylesheet, no
/// script, no framing, and forms posted only to the site itself and to `form_targets`
/// (origins a form's redirect may lead to, space-separated: browsers hold such redirects
/// to the policy).
pub fn page_policy(form_targets: &str) -> String {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {form_targets}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// `router` with `/style.css` and what every answer carries: [`page_policy`] with
/// `form_targets` (unless a handler set a wider one); no framing, no sniffing, no referrer,
/// no caching, HSTS; and `408` for a request not answered within [`REQUEST_TIMEOUT`]. Fails
/// when `form_targets` cannot be a header value.
pub fn secured(router: Router, form_targets: &str) -> Result<Router, InvalidHeaderValue> {
    let policy = HeaderValue::from_str(page_policy(form_targets).trim())?;
    Ok(router
        .route(
            "/style.css",
            axum::routing::get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLESHEET) }),
        )
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
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
        )))
}

/// `message` as a gRPC request carrying `authorization: Bearer <token>`: how a page calls
/// a service in-process as its signed-in user.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The token of a request's `authorization: Bearer <token>`, if it carries a readable one:
/// what [`with_bearer`] puts there.
pub fn bearer_token<T>(request: &tonic::Request<T>) -> Option<String> {
    bearer_token_in(request.metadata().as_ref())
}

/// [`bearer_token`], read from a request's headers, for a layer before the gRPC request is
/// decoded.
pub fn bearer_token_in(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_string)
}

/// What a page that needs the optional extractor `T` (a signed-in user, say) gets: `T`'s
/// value, or, when there is none, the rejection `absent` makes from the request, such as a
/// redirect to sign in. The pages' `FromRequestParts` for such a `T`.
pub async fn required<S: Sync, T>(
    parts: &mut Parts,
    state: &S,
    absent: impl FnOnce(&Parts) -> Response,
) -> Result<T, Response>
where
    T: OptionalFromRequestParts<S, Rejection = Response>,
{
    match T::from_request_parts(parts, state).await? {
        Some(found) => Ok(found),
        None => Err(absent(parts)),
    }
}

/// How long a browser has to send a request's headers once it started them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take before it is answered `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; further ones wait to be accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a connection lives: then it is closed once its requests are answered (a
/// client that says nothing, or keeps an idle HTTP/2 connection, holds a slot no longer).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long open connections may finish their requests once asked to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP status of a web page whose work failed with the gRPC `code`.
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Serves `router` on the TLS connections of `incoming` until `shutdown` resolves, then
/// lets open requests finish (for at most [`DRAIN_TIMEOUT`]). An HTTP/1.1 connection must
/// send its headers within [`HEADER_READ_TIMEOUT`]; any is closed after [`MAX_CONNECTION_AGE`];
/// at most [`MAX_CONNECTIONS`] are served at once.
pub async fn serve(
    mut incoming: ReceiverStream<io::Result<TlsConnection>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
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
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
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
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let peer = connection
            .connect_info()
            .remote_addr
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let service = router.clone().layer(Extension(ConnectInfo(Peer(peer))));
        let serving = builder
            .serve_connection(TokioIo::new(connection), TowerToHyperService::new(service))
            .into_owned();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(serving);
            tokio::select! {
                _ = serving.as_mut() => return drop(slot),
                () = tokio::time::sleep(MAX_CONNECTION_AGE) => {},
                _ = stopping.wait_for(|stopped| *stopped) => {},
            }
            serving.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, serving).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, connections.join_all()).await;
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

    /// The browser's CSRF token, made (256 random bits, set as a cookie) if it has none
    /// yet.
    pub fn csrf_token(jar: CookieJar) -> (CookieJar, String) {
        use base64::Engine;
        if let Some(token) = jar.get(CSRF_COOKIE) {
            let token = token.value().to_string();
            return (jar, token);
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("the operating system's random source is unavailable");
        let token = format!(
            "csrf_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
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
