//! The browser's session: `__Host-session` holds the session token of a signed-in user
//! (the same sessions as the gRPC account surface); every form carries the CSRF token of
//! [`consent_tls::https::cookies`].

use super::WebState;
use crate::api::account::session_user;
use crate::error::{ApiError, ApiResult};
use axum_extra::extract::CookieJar;
use consent_core::denial::Reason;
use consent_core::model::User;
use consent_core::secret::hash_token;
use consent_tls::https::cookies;

const SESSION_COOKIE: &str = "__Host-session";

/// The session token this browser holds, if any (unchecked).
pub fn token(jar: &CookieJar) -> Option<String> {
    jar.get(SESSION_COOKIE).map(|c| c.value().to_string())
}

/// The user signed in on this browser, if any.
pub async fn user(state: &WebState, jar: &CookieJar) -> ApiResult<Option<User>> {
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
