//! The partner's own accounts: sign up, sign in and out. Passwords are kept as Argon2id
//! hashes, computed off the async runtime; the session is a `__Host-partner-session`
//! cookie whose token the store keeps only as a hash.

use super::{WebState, csrf_refusal, failure};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::{CookieJar, Form};
use consent_core::clock::Clock;
use consent_core::secret::{hash_token, new_token};
use consent_tls::https::cookies;
use serde::Deserialize;

const SESSION_COOKIE: &str = "__Host-partner-session";
const SESSION_MS: i64 = 12 * 60 * 60 * 1000;

/// The account signed in on this browser and its session token, if any.
pub async fn signed_in(state: &WebState, jar: &CookieJar) -> Option<(String, String)> {
    let token = jar.get(SESSION_COOKIE)?.value().to_string();
    let name = state.store.session_account(&token).await.ok()??;
    Some((name, token))
}

/// The account form's fields.
#[derive(Debug, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

fn well_formed(form: &AccountForm) -> bool {
    (3..=32).contains(&form.name.len())
        && form
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && (8..=256).contains(&form.password.len())
}

async fn hash(password: String) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(&consent_core::secret::random_bytes::<16>()).ok()?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .ok()
            .map(|h| h.to_string())
    })
    .await
    .ok()
    .flatten()
}

async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        stored.is_some_and(|stored| {
            PasswordHash::new(&stored).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
    })
    .await
    .unwrap_or(false)
}

/// Starts a session for `name` and sends the browser home.
async fn start_session(state: &WebState, jar: CookieJar, name: String) -> Response {
    let token = new_token("pss_");
    let token_hash = hash_token(&token);
    let expires_ms = Clock::default().now_ms() + SESSION_MS;
    let started = state
        .store
        .run(move |tx| crate::store::insert_session(tx, &token_hash, &name, expires_ms))
        .await;
    match started {
        Ok(()) => (
            jar.add(cookies::secure(SESSION_COOKIE, token)),
            Redirect::to("/"),
        )
            .into_response(),
        Err(error) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            &error.to_string(),
        ),
    }
}

/// `POST /sign-up`.
pub async fn sign_up(
    State(state): State<WebState>,
    jar: CookieJar,
    Form(form): Form<AccountForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    if !well_formed(&form) {
        return failure(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "a name is 3 to 32 of a-z, 0-9, '-'; a password 8 to 256 bytes",
        );
    }
    let Some(password_hash) = hash(form.password).await else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "hashing failed",
        );
    };
    let name = form.name.clone();
    let added = state
        .store
        .run(move |tx| crate::store::insert_account(tx, &name, &password_hash))
        .await;
    match added {
        Ok(true) => start_session(&state, jar, form.name).await,
        Ok(false) => failure(StatusCode::CONFLICT, "ALREADY_EXISTS", "that name is taken"),
        Err(error) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            &error.to_string(),
        ),
    }
}

/// `POST /sign-in`.
pub async fn sign_in(
    State(state): State<WebState>,
    jar: CookieJar,
    Form(form): Form<AccountForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    let name = form.name.clone();
    let stored = state
        .store
        .run(move |tx| crate::store::password_hash(tx, &name))
        .await
        .ok()
        .flatten();
    if verify(form.password, stored).await {
        start_session(&state, jar, form.name).await
    } else {
        failure(
            StatusCode::UNAUTHORIZED,
            "BAD_CREDENTIALS",
            "wrong name or password",
        )
    }
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-out`: the session ends here and in the browser.
pub async fn sign_out(
    State(state): State<WebState>,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    if let Some(token) = jar.get(SESSION_COOKIE).map(|c| hash_token(c.value())) {
        let _ = state
            .store
            .run(move |tx| crate::store::delete_session(tx, &token))
            .await;
    }
    (cookies::removed(jar, SESSION_COOKIE), Redirect::to("/")).into_response()
}
