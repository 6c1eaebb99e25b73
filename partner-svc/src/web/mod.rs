//! The partner's own web app, for its users in a browser, as a music app has: its own
//! accounts and sessions (`account`); "Connect with the platform", which sends the
//! browser to the platform's consent page and completes the connection at `/callback`
//! (`connect`); and the connection's status, inbox, share, unsend and disconnect
//! (`home`). The pages call the partner API in-process as the signed-in account, so
//! they can do no more than any signed-in front end.

mod account;
mod connect;
mod home;
mod pages;

use crate::api::PartnerApp;
use crate::config::{PartnerConfig, Web};
use crate::platform::PlatformClient;
use crate::store::PartnerStore;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use consent_telemetry::rpc::decision;
use consent_tls::https::cookies;
use consent_tls::https::parsed::{self, MalformedPage};
use std::sync::Arc;

/// What every page handler shares.
#[derive(Debug, Clone)]
pub struct WebState {
    app: PartnerApp,
    store: PartnerStore,
    client: PlatformClient,
    config: Arc<PartnerConfig>,
    web: Arc<Web>,
    hashing: Arc<tokio::sync::Semaphore>,
}

impl WebState {
    /// The web app of the partner `config` describes, over `app`, `store` and `client`.
    pub fn new(
        app: PartnerApp,
        store: PartnerStore,
        client: PlatformClient,
        config: Arc<PartnerConfig>,
        web: &Web,
    ) -> Self {
        WebState {
            app,
            store,
            client,
            config,
            web: Arc::new(web.clone()),
            hashing: Arc::new(tokio::sync::Semaphore::new(account::HASHING_SLOTS)),
        }
    }
}

/// Every page and form. Forms may lead to the platform's consent page.
pub fn router(state: WebState) -> Result<Router, axum::http::header::InvalidHeaderValue> {
    let platform = state.web.platform_origin().to_string();
    let pages = Router::new()
        .route("/", get(home::page))
        .route("/sign-up", post(account::sign_up))
        .route("/sign-in", post(account::sign_in))
        .route("/sign-out", post(account::sign_out))
        .route("/connect", post(connect::start))
        .route("/callback", get(connect::finish))
        .route("/share", post(home::share))
        .route("/unsend", post(home::unsend))
        .route("/disconnect", post(home::disconnect))
        .with_state(state);
    consent_tls::https::secured(pages, &platform)
}

/// The partner's web app, as the site that refuses a query string or form that did not
/// parse: on a page, `400` with `INVALID_ARGUMENT`.
#[derive(Debug)]
struct Site;

impl MalformedPage for Site {
    fn malformed(part: &'static str, detail: String) -> Response {
        failure(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("the {part} did not parse: {detail}"),
        )
    }
}

/// A page's query string, `T`.
type PageQuery<T> = parsed::PageQuery<T, Site>;

/// A page's form, `T`.
type PageForm<T> = parsed::PageForm<T, Site>;

/// A refused or failed action, as a page with its status and reason.
fn failure(status: StatusCode, reason: &str, message: &str) -> Response {
    (status, pages::failure(reason, message)).into_response()
}

/// A refusal of the partner API (or of the platform, passed through), shown with the HTTP
/// status of its code and its reason.
fn refused(status: &tonic::Status) -> Response {
    failure(
        consent_tls::https::http_status(status.code()),
        &decision(status),
        status.message(),
    )
}

/// A refusal of a call this app made to the platform itself: the platform failed it (`502`),
/// for the platform's reason.
fn platform_refused(status: &tonic::Status) -> Response {
    failure(StatusCode::BAD_GATEWAY, &decision(status), status.message())
}

/// A failure of the partner's own store: logged, and shown without its detail.
fn internal(error: &crate::store::StoreError) -> Response {
    tracing::error!(%error, "partner store failure");
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "internal storage failure",
    )
}

/// The refusal of a form without the browser's CSRF token, if it has none.
fn csrf_refusal(jar: &CookieJar, field: &str) -> Option<Response> {
    (!cookies::csrf_matches(jar, field)).then(|| {
        failure(
            StatusCode::FORBIDDEN,
            "CSRF_INVALID",
            "the form did not come from this page: reload it and try again",
        )
    })
}
