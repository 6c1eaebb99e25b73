//! The partner's own accounts: sign up, sign in and out. Passwords are kept as Argon2id
//! hashes, computed off the async runtime, at most `HASHING_SLOTS` at once; an unknown
//! name costs the same work as a known one. The session is a `__Host-partner-session`
//! cookie whose token the store keeps only as a hash; signing in ends the browser's
//! previous session.

use super::PageForm;
use super::{WebState, csrf_refusal, failure, internal};
use axum::extract::{FromRequestParts, OptionalFromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::{CookieJar, Form, WithRejection};
use consent_core::clock::Clock;
use consent_core::secret::{hash_token, new_token};
use consent_core::session;
use consent_tls::https::{self, cookies};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SESSION_COOKIE: &str = "__Host-partner-session";
const SESSION_MS: i64 = 12 * 60 * 60 * 1000;

/// The account signed in on the browser that sent a request, found once before the page's
/// handler runs; a handler that takes it is for signed-in users, and a browser without a
/// session is sent to the home page, which offers sign-in and sign-up.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The account's name.
    pub name: String,
    /// The session's token.
    pub session: String,
}

impl FromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        https::required(parts, state, |_| Redirect::to("/").into_response()).await
    }
}

impl OptionalFromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Option<Self>, Response> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(session) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
            return Ok(None);
        };
        match state.store.session_account(&session).await {
            Ok(name) => Ok(name.map(|name| SignedIn { name, session })),
            Err(error) => Err(internal(&error)),
        }
    }
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

/// The app's accounts are named as the platform's are: a front end acts for the platform
/// account of the same name.
fn well_formed(form: &AccountForm) -> bool {
    consent_core::model::is_user_name(&form.name) && (8..=256).contains(&form.password.len())
}

/// Argon2id computations running at once; a request that finds them all busy for
/// [`HASHING_WAIT`] is refused rather than queued without bound.
pub const HASHING_SLOTS: usize = 4;
const HASHING_WAIT: Duration = Duration::from_secs(2);

fn busy() -> Response {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "BUSY",
        "too many sign-ins at once: try again in a moment",
    )
}

/// Runs `work` (password hashing) on the blocking pool within a hashing slot.
async fn hashing<R: Send + 'static>(
    state: &WebState,
    work: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let slot = tokio::time::timeout(HASHING_WAIT, Arc::clone(&state.hashing).acquire_owned())
        .await
        .ok()?
        .ok()?;
    let done = tokio::task::spawn_blocking(work).await.ok();
    drop(slot);
    done
}

fn hash(password: &str) -> Option<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&consent_core::secret::random_bytes::<16>()).ok()?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .ok()
        .map(|h| h.to_string())
}

/// A hash to verify against when the name is unknown, so that an unknown name costs the
/// same work as a known one.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash("no account has this password").unwrap_or_default())
}

fn verify(password: &str, stored: Option<&str>) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let matches = |phc: &str| {
        PasswordHash::new(phc).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    };
    match stored {
        Some(stored) => matches(stored),
        None => {
            matches(dummy_hash());
            false
        }
    }
}

/// Starts a session for `name` (ending the one this browser had) and sends the browser
/// home.
async fn start_session(state: &WebState, jar: CookieJar, name: String) -> Response {
    let token = new_token("pss_");
    let token_hash = hash_token(&token);
    let previous = jar.get(SESSION_COOKIE).map(|c| hash_token(c.value()));
    let now_ms = Clock::default().now_ms();
    let started = state
        .store
        .run(move |tx| {
            if let Some(previous) = previous {
                crate::store::delete_session(tx, &previous)?;
            }
            crate::store::insert_session(
                tx,
                &token_hash,
                &name,
                session::ends_ms(now_ms, SESSION_MS),
                now_ms,
            )
        })
        .await;
    match started {
        Ok(()) => (
            jar.add(cookies::secure(SESSION_COOKIE, token)),
            Redirect::to("/"),
        )
            .into_response(),
        Err(error) => internal(&error),
    }
}

/// `POST /sign-up`.
pub async fn sign_up(
    State(state): State<WebState>,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<AccountForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    if !well_formed(&form) {
        let rule = consent_core::model::USER_NAME_RULE;
        return failure(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("a name is {rule}; a password 8 to 256 bytes"),
        );
    }
    let password = form.password;
    let Some(Some(password_hash)) = hashing(&state, move || hash(&password)).await else {
        return busy();
    };
    let name = form.name.clone();
    let added = state
        .store
        .run(move |tx| crate::store::insert_account(tx, &name, &password_hash))
        .await;
    match added {
        Ok(true) => start_session(&state, jar, form.name).await,
        Ok(false) => failure(StatusCode::CONFLICT, "ALREADY_EXISTS", "that name is taken"),
        Err(error) => internal(&error),
    }
}

/// `POST /sign-in`.
pub async fn sign_in(
    State(state): State<WebState>,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<AccountForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    let name = form.name.clone();
    let stored = match state
        .store
        .run(move |tx| crate::store::password_hash(tx, &name))
        .await
    {
        Ok(stored) => stored,
        Err(error) => return internal(&error),
    };
    let password = form.password;
    let Some(matches) = hashing(&state, move || verify(&password, stored.as_deref())).await else {
        return busy();
    };
    if matches {
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
    WithRejection(Form(form), _): PageForm<CsrfForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    if let Some(token) = jar.get(SESSION_COOKIE).map(|c| hash_token(c.value()))
        && let Err(error) = state
            .store
            .run(move |tx| crate::store::delete_session(tx, &token))
            .await
    {
        return internal(&error);
    }
    (cookies::removed(jar, SESSION_COOKIE), Redirect::to("/")).into_response()
}
