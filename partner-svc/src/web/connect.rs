//! "Connect with the platform": the client side of the authorization code flow. `POST
//! /connect` pushes the request (RFC 9126) with a fresh `state` and PKCE verifier, kept
//! with the browser session that asked, and sends the browser to the platform's consent
//! page. `GET /callback` takes the answer: only the browser session that started the
//! flow, with its `state`, once, and only from the platform (`iss`, RFC 9207); then the
//! code is exchanged over mutual TLS with the verifier for the grant token. A refused
//! answer is logged with its reason (never the code).

use super::account::SignedIn;
use super::{PageForm, PageQuery};
use super::{WebState, csrf_refusal, failure, internal, platform_refused, refused};
use crate::store::{self, Flow};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::{CookieJar, Form, WithRejection};
use consent_core::authorization::s256;
use consent_core::clock::Clock;
use consent_core::secret::{hash_token, new_token};
use consent_proto::platform::v1 as pb;
use serde::Deserialize;

/// How long a started flow waits for its answer.
const FLOW_MS: i64 = 10 * 60 * 1000;

/// The connect form.
#[derive(Debug, Deserialize)]
pub struct ConnectForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /connect`.
pub async fn start(
    State(state): State<WebState>,
    SignedIn { name, session }: SignedIn,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<ConnectForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    if let Err(error) = state.app.release_connection(&name).await {
        return refused(&error.into());
    }
    let feature = &state.config.feature;
    let flow_state = new_token("st_");
    let verifier = new_token("pkv_");
    let pushed = state
        .client
        .consent
        .clone()
        .push_authorization(pb::PushAuthorizationRequest {
            feature: feature.name.clone(),
            coverage: feature.coverage as i32,
            thread_ids: Vec::new(),
            include_history: feature.include_history,
            purpose: feature.purpose.clone(),
            redirect_uri: state.web.redirect_uri(),
            state: flow_state.clone(),
            code_challenge: s256(&verifier),
            code_challenge_method: "S256".into(),
        })
        .await;
    let pushed = match pushed {
        Ok(pushed) => pushed.into_inner(),
        Err(status) => return platform_refused(&status),
    };
    let flow = Flow {
        name,
        session_hash: hash_token(&session),
        verifier,
        expires_ms: Clock::default().now_ms() + FLOW_MS,
    };
    let kept = state
        .store
        .run(move |tx| store::insert_flow(tx, &flow_state, &flow))
        .await;
    match kept {
        Ok(()) => Redirect::to(&pushed.authorize_url).into_response(),
        Err(error) => internal(&error),
    }
}

/// The platform's answer.
#[derive(Debug, Deserialize)]
pub struct Answer {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    error: String,
}

/// `GET /callback`.
pub async fn finish(
    State(state): State<WebState>,
    signed_in: Option<SignedIn>,
    WithRejection(Query(answer), _): PageQuery<Answer>,
) -> Response {
    // An answer reaching a browser whose session has ended belongs to no flow it can finish;
    // unlike a page, it is told so rather than sent home.
    let Some(SignedIn { name, session }) = signed_in else {
        tracing::warn!(reason = "SIGN_IN_FIRST", "authorization answer refused");
        return failure(
            StatusCode::UNAUTHORIZED,
            "SIGN_IN_FIRST",
            "your session here ended before the platform answered: sign in and connect again",
        );
    };
    let now_ms = Clock::default().now_ms();
    let flow_state = answer.state.clone();
    let session_hash = hash_token(&session);
    let flow = state
        .store
        .run(move |tx| store::take_flow(tx, &flow_state, &session_hash, now_ms))
        .await;
    let flow = match flow {
        Ok(flow) => flow.filter(|f| !answer.state.is_empty() && f.name == name),
        Err(error) => return internal(&error),
    };
    let Some(flow) = flow else {
        tracing::warn!(account = %name, reason = "STATE_MISMATCH", "authorization answer refused");
        return failure(
            StatusCode::BAD_REQUEST,
            "STATE_MISMATCH",
            "this answer does not belong to a connection this browser started",
        );
    };
    if answer.iss != state.web.platform_origin() {
        tracing::warn!(account = %name, reason = "ISSUER_MISMATCH", "authorization answer refused");
        return failure(
            StatusCode::BAD_REQUEST,
            "ISSUER_MISMATCH",
            "this answer does not come from the platform",
        );
    }
    if !answer.error.is_empty() {
        return failure(
            StatusCode::OK,
            "ACCESS_DENIED",
            "you did not allow the connection; nothing was shared",
        );
    }
    let exchanged = state
        .client
        .consent
        .clone()
        .exchange_code(pb::ExchangeCodeRequest {
            code: answer.code,
            code_verifier: flow.verifier,
            redirect_uri: state.web.redirect_uri(),
        })
        .await;
    let exchanged = match exchanged {
        Ok(exchanged) => exchanged.into_inner(),
        Err(status) => return platform_refused(&status),
    };
    let (Some(grant), false) = (exchanged.grant, exchanged.grant_token.is_empty()) else {
        return failure(
            StatusCode::BAD_GATEWAY,
            "PLATFORM_REFUSED",
            "the platform answered the exchange without a grant",
        );
    };
    // A connection made meanwhile (another tab) gives way: its grant is released first.
    if let Err(error) = state.app.release_connection(&name).await {
        return refused(&error.into());
    }
    let token = exchanged.grant_token;
    let kept = state
        .store
        .run(move |tx| store::put_connected(tx, &name, &grant.grant_id, &token))
        .await;
    match kept {
        Ok(()) => Redirect::to("/").into_response(),
        Err(error) => internal(&error),
    }
}
