//! The browser's session: `__Host-session` holds the session token of a signed-in user
//! (the same sessions as the gRPC account surface); every form carries the CSRF token of
//! [`consent_tls::https::cookies`].
//!
//! The pages' edge: a handler takes the signed-in user as an argument ([`SignedIn`], or
//! `Option<SignedIn>` where signing in is optional), found once before it runs, or the
//! session token ([`SessionToken`]) where it acts through the account surface, which
//! checks the token itself. A browser without a session is sent to sign in, and back to
//! the page it asked for.

use super::{WebState, failure, sign_in_then};
use crate::api::account::session_user;
use crate::error::{ApiError, ApiResult};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use axum_extra::extract::CookieJar;
use consent_core::denial::Reason;
use consent_core::model::User;
use consent_core::secret::hash_token;
use consent_tls::https::cookies;

const SESSION_COOKIE: &str = "__Host-session";

/// The user signed in on the browser that sent the request.
#[derive(Debug, Clone)]
pub struct SignedIn(pub User);

impl FromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        match <Self as OptionalFromRequestParts<WebState>>::from_request_parts(parts, state).await?
        {
            Some(signed_in) => Ok(signed_in),
            None => Err(sign_in_then_back(parts)),
        }
    }
}

impl OptionalFromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Option<Self>, Response> {
        let jar = CookieJar::from_headers(&parts.headers);
        match user(state, &jar).await {
            Ok(user) => Ok(user.map(SignedIn)),
            Err(error) => Err(failure(&error)),
        }
    }
}

/// The session token of the browser that sent the request, unchecked: for pages that pass
/// it to the account surface.
#[derive(Debug, Clone)]
pub struct SessionToken(pub String);

impl FromRequestParts<WebState> for SessionToken {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &WebState) -> Result<Self, Response> {
        token(&CookieJar::from_headers(&parts.headers))
            .map(SessionToken)
            .ok_or_else(|| sign_in_then_back(parts))
    }
}

/// The redirect to the sign-in page, which returns to the path (and query) asked for.
fn sign_in_then_back(parts: &Parts) -> Response {
    let here = parts.uri.path_and_query().map_or("/", |here| here.as_str());
    sign_in_then(here)
}

/// The session token this browser holds, if any (unchecked).
fn token(jar: &CookieJar) -> Option<String> {
    jar.get(SESSION_COOKIE).map(|c| c.value().to_string())
}

/// The user signed in on this browser, if any.
async fn user(state: &WebState, jar: &CookieJar) -> ApiResult<Option<User>> {
    let Some(token) = token(jar) else {
        return Ok(None);
    };
    let signed_in = state
        .platform
        .read(move |repo, now_ms| session_user(repo, Some(&token), now_ms))
        .await;
    match signed_in {
        Ok(user) => Ok(Some(user)),
        Err(ApiError::Unauthenticated(..)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// Remembers a new session on this browser.
pub fn start(jar: CookieJar, session_token: String) -> CookieJar {
    jar.add(cookies::secure(SESSION_COOKIE, session_token))
}

/// Ends the session of this browser, on the platform and in the browser.
pub async fn end(state: &WebState, jar: CookieJar) -> ApiResult<CookieJar> {
    if let Some(token) = token(&jar) {
        state
            .platform
            .run(move |repo, _| Ok(repo.delete_session(&hash_token(&token))?))
            .await?;
    }
    Ok(cookies::removed(jar, SESSION_COOKIE))
}

/// Refuses a form whose `csrf` field is not the browser's CSRF cookie.
pub fn check_csrf(jar: &CookieJar, field: &str) -> ApiResult<()> {
    if cookies::csrf_matches(jar, field) {
        Ok(())
    } else {
        tracing::warn!(reason = "CSRF_INVALID", "a form came without its token");
        Err(ApiError::PermissionDenied(
            Reason::CsrfInvalid,
            "the form did not come from this page: reload it and try again".into(),
        ))
    }
}
