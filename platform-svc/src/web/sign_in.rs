//! Signing in and out in the browser. The password is checked by the account service,
//! throttled per account name and client address as on the gRPC surface; after signing in
//! the browser returns to `next`, which must be a path on the platform itself.

use super::parsed::{PageForm, PageQuery};
use super::{WebState, failure, pages, session};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::WithRejection;
use axum_extra::extract::{CookieJar, Form};
use consent_core::authorization::is_local_path;
use consent_proto::platform::v1 as pb;
use consent_tls::https::Peer;
use consent_tls::https::cookies;
use serde::Deserialize;

/// Where to go after signing in.
#[derive(Debug, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

/// `next` when it stays on the platform, the grants page otherwise (an attempt to leave is
/// logged).
fn local_or_home(next: &str) -> &str {
    if next.is_empty() || is_local_path(next) {
        if next.is_empty() { "/grants" } else { next }
    } else {
        tracing::warn!(
            reason = "OPEN_REDIRECT",
            "sign-in asked to return outside the platform"
        );
        "/grants"
    }
}

/// The sign-in form.
pub async fn page(
    jar: CookieJar,
    WithRejection(Query(next), _): PageQuery<Next>,
) -> impl IntoResponse {
    let (jar, csrf) = cookies::csrf_token(jar);
    (jar, pages::sign_in(&csrf, local_or_home(&next.next), None))
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// Checks the password and starts a session, or shows the form again with the reason.
pub async fn submit(
    State(state): State<WebState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<SignInForm>,
) -> Response {
    if let Err(error) = session::check_csrf(&jar, &form.csrf) {
        return failure(&error);
    }
    let next = local_or_home(&form.next).to_string();
    let request = pb::SignInRequest {
        user_name: form.user_name,
        password: form.password,
    };
    match state.account.start_session(request, Some(peer.ip())).await {
        Ok(signed_in) => {
            // A session this browser already held ends: one browser, one session. If that
            // fails, the new session still stands, and the old one runs out at its expiry.
            let jar = match session::end(&state, jar.clone()).await {
                Ok(jar) => jar,
                Err(error) => {
                    tracing::warn!(%error, "the browser's previous session could not be ended");
                    jar
                }
            };
            let jar = session::start(jar, signed_in.session_token);
            (jar, Redirect::to(&next)).into_response()
        }
        Err(error) => {
            let (jar, csrf) = cookies::csrf_token(jar);
            error.log_detail();
            let page = pages::sign_in(&csrf, &next, Some(&error));
            (error.http_status(), jar, page).into_response()
        }
    }
}

/// The sign-out form's fields.
#[derive(Debug, Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session: on the platform (its token stops working) and in the browser.
pub async fn sign_out(
    State(state): State<WebState>,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<SignOutForm>,
) -> Response {
    if let Err(error) = session::check_csrf(&jar, &form.csrf) {
        return failure(&error);
    }
    match session::end(&state, jar).await {
        Ok(jar) => (jar, Redirect::to("/sign-in")).into_response(),
        Err(error) => failure(&error),
    }
}
