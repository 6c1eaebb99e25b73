//! The browser's session: `__Host-session` holds the session token of a signed-in user
//! (the same sessions as the gRPC account surface); every form carries the CSRF token of
//! [`consent_tls::https::cookies`].
//!
//! The pages' edge: a handler takes the signed-in user as an argument ([`SignedIn`], or
//! `Option<SignedIn>` where signing in is optional), found once before it runs. A browser
//! without a session, or whose session has ended, is sent to sign in, and back to the page
//! it asked for.

use super::{WebState, failure, sign_in_then};
use crate::api::account::session_user;
use crate::error::{ApiError, ApiResult};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::Uri;
use axum::http::request::Parts;
use axum::response::Response;
use axum_extra::extract::CookieJar;
use consent_core::denial::Reason;
use consent_core::model::User;
use consent_core::secret::hash_token;
use consent_tls::https::{self, cookies};

const SESSION_COOKIE: &str = "__Host-session";

/// The user signed in on the browser that sent the request, and the session's token, for
/// the pages that act through the account surface.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// The session's token.
    pub token: String,
}

impl FromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        https::required(parts, state, |parts| sign_in_then_back(&parts.uri)).await
    }
}

impl OptionalFromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Option<Self>, Response> {
        let Some(token) = token(&CookieJar::from_headers(&parts.headers)) else {
            return Ok(None);
        };
        let session = token.clone();
        let signed_in = state
            .platform
            .read(move |repo, now_ms| session_user(repo, Some(&session), now_ms))
            .await;
        match signed_in {
            Ok(user) => Ok(Some(SignedIn { user, token })),
            Err(ApiError::Unauthenticated(..)) => Ok(None),
            Err(other) => Err(failure(&other)),
        }
    }
}

/// The redirect to the sign-in page, which returns to the path (and query) of `asked`:
/// where a browser without a session, or whose session has ended, goes.
pub fn sign_in_then_back(asked: &Uri) -> Response {
    sign_in_then(asked.path_and_query().map_or("/", |here| here.as_str()))
}

/// The session token this browser holds, if any (unchecked).
fn token(jar: &CookieJar) -> Option<String> {
    jar.get(SESSION_COOKIE).map(|c| c.value().to_string())
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
