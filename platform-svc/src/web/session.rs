//! The browser's two cookies. `__Host-session` holds the session token of a signed-in user
//! (the same sessions as the gRPC account surface). `__Host-csrf` holds a random value that
//! every form carries back in a hidden field: a page of another site can make the browser
//! post, but cannot read the cookie to fill in the field (a double-submit token; the
//! `__Host-` prefix keeps any other host from setting it).

use super::WebState;
use crate::api::account::session_user;
use crate::error::{ApiError, ApiResult};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use consent_core::denial::Reason;
use consent_core::model::User;
use consent_core::secret::{hash_token, new_token};

const SESSION_COOKIE: &str = "__Host-session";
const CSRF_COOKIE: &str = "__Host-csrf";

fn secure_cookie(name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .build()
}

/// The user signed in on this browser, if any.
pub async fn user(state: &WebState, jar: &CookieJar) -> ApiResult<Option<User>> {
    let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
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
    jar.add(secure_cookie(SESSION_COOKIE, session_token))
}

/// Ends the session of this browser, on the platform and in the browser.
pub async fn end(state: &WebState, jar: CookieJar) -> ApiResult<CookieJar> {
    if let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) {
        state
            .platform
            .run(move |repo, _| Ok(repo.delete_session(&hash_token(&token))?))
            .await?;
    }
    // A `__Host-` cookie is replaced only by one with its attributes (`Secure` above all).
    let mut removal = secure_cookie(SESSION_COOKIE, String::new());
    removal.make_removal();
    Ok(jar.add(removal))
}

/// The browser's CSRF token, made (and set as a cookie) if it has none yet.
pub fn csrf_token(jar: CookieJar) -> (CookieJar, String) {
    if let Some(token) = jar.get(CSRF_COOKIE) {
        let token = token.value().to_string();
        return (jar, token);
    }
    let token = new_token("csrf_");
    (jar.add(secure_cookie(CSRF_COOKIE, token.clone())), token)
}

/// Refuses a form whose `csrf` field is not the browser's CSRF cookie.
pub fn check_csrf(jar: &CookieJar, field: &str) -> ApiResult<()> {
    let matches = jar
        .get(CSRF_COOKIE)
        .is_some_and(|c| !field.is_empty() && hash_token(c.value()) == hash_token(field));
    if matches {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            Reason::CsrfInvalid,
            "the form did not come from this page: reload it and try again".into(),
        ))
    }
}
