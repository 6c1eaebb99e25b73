//! The platform's web pages, for people in a browser: sign-in, the consent page of the
//! authorization code flow (`authorize`), and the user's own pages: grants and pending
//! requests (`grants`), the access log, who can read each conversation, privacy
//! settings and consent receipts (`my_data`).
//!
//! They are served over HTTPS with the platform's certificate on a listener of their own,
//! rendered on the server (`pages`, with maud) and need no script. The browser holds a
//! session cookie (`__Host-session`: `Secure`, `HttpOnly`, `SameSite=Lax`) and a CSRF
//! cookie whose value every form must carry back (`session`). Every response forbids
//! framing and scripts with a strict Content-Security-Policy. The pages act through the
//! same operations as the gRPC surfaces: sign-in is the account service's (throttled the
//! same way), approval is `api::account::approve`.

mod authorize;
mod grants;
mod my_data;
mod pages;
mod parsed;
mod session;
mod sign_in;

use crate::api::account::AccountService;
use crate::api::{Platform, audit_refusal};
use crate::error::{ApiError, ApiResult};
use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use consent_store::Repo;
use std::sync::Arc;

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

/// Every page and form.
pub fn router(state: WebState) -> Result<Router, axum::http::header::InvalidHeaderValue> {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/grants") }))
        .route("/sign-in", get(sign_in::page).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/authorize", get(authorize::open))
        .route(
            "/consent/{request_id}",
            get(authorize::page).post(authorize::decide),
        )
        .route("/grants", get(grants::list))
        .route("/grants/{grant_id}", get(my_data::receipt))
        .route("/grants/{grant_id}/revoke", post(grants::revoke))
        .route("/access-log", get(my_data::access_log))
        .route("/threads", get(my_data::threads))
        .route("/threads/{thread_id}", get(my_data::conversation))
        .route("/privacy", get(my_data::privacy).post(my_data::set_privacy))
        .with_state(state);
    consent_tls::https::secured(pages, "")
}

/// Answers a form refused for `error` (its CSRF token), recording the refusal against the
/// partner that `partner_of` finds for the user (the partner of the request or grant the
/// form named, when it is the user's).
async fn refuse_form(
    state: &WebState,
    error: ApiError,
    user_id: String,
    method: &'static str,
    partner_of: impl FnOnce(&mut dyn Repo, &str) -> ApiResult<Option<String>> + Send + 'static,
) -> Response {
    let audited = state
        .platform
        .run(move |repo, now_ms| {
            if let Some(partner_id) = partner_of(repo, &user_id)? {
                audit_refusal(repo, now_ms, &partner_id, &user_id, method, &error)?;
            }
            Ok(error)
        })
        .await;
    match audited {
        Ok(error) | Err(error) => failure(&error),
    }
}

/// The redirect to the sign-in page, which returns to `here` afterwards.
fn sign_in_then(here: &str) -> Response {
    let next = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", here)
        .finish();
    Redirect::to(&format!("/sign-in?{next}")).into_response()
}

/// A failure shown as a page with its HTTP status and reason.
fn failure(error: &ApiError) -> Response {
    (error.http_status(), pages::failure(error)).into_response()
}
