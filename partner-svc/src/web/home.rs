//! The signed-in account's page: its connection to the platform and what the app may do
//! with it (inbox, share, unsend, disconnect), each through the partner API as that
//! account. Signed out, the page offers sign-in and sign-up.

use super::account::SignedIn;
use super::{PageForm, PageQuery};
use super::{WebState, csrf_refusal, pages, refused};
use crate::caller::as_signed_in;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::{CookieJar, Form, WithRejection};
use consent_proto::partner::v1 as api;
use consent_proto::partner::v1::partner_app_server::PartnerApp as _;
use consent_tls::https::cookies;
use serde::Deserialize;

/// Which thread's messages the page shows, and from which page of them.
#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    #[serde(default)]
    thread_id: String,
    #[serde(default)]
    page: String,
}

/// Whether a request comes from this site's own pages (or from no page at all, as a link
/// typed or a program's request): only such a request reads a thread, so that a link on
/// another site cannot make the app read and keep a user's messages.
fn from_own_pages(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| site == "same-origin" || site == "none")
}

/// `GET /`.
pub async fn page(
    State(state): State<WebState>,
    user: Option<SignedIn>,
    jar: CookieJar,
    headers: HeaderMap,
    WithRejection(Query(mut query), _): PageQuery<InboxQuery>,
) -> Response {
    if !from_own_pages(&headers) {
        query.thread_id.clear();
    }
    let (jar, csrf) = cookies::csrf_token(jar);
    let Some(SignedIn { name, .. }) = user else {
        let page = pages::signed_out(&state.config.display_name, &csrf);
        return (jar, page).into_response();
    };
    let status = state
        .app
        .connection_status(as_signed_in(api::ConnectionStatusRequest::default(), &name))
        .await
        .map(tonic::Response::into_inner);
    let status = match status {
        Ok(status) => status,
        Err(error) => return refused(&error),
    };
    let reads = status.scopes.iter().any(|s| s == "MESSAGES_READ");
    let inbox = if status.status == "CONNECTED" && reads && !query.thread_id.is_empty() {
        let listed = state
            .app
            .inbox(as_signed_in(
                api::InboxRequest {
                    user_name: String::new(),
                    thread_id: query.thread_id.clone(),
                    page_token: query.page.clone(),
                },
                &name,
            ))
            .await;
        match listed {
            Ok(listed) => Some(listed.into_inner()),
            Err(error) => return refused(&error),
        }
    } else {
        None
    };
    let view = pages::Home {
        app_name: &state.config.display_name,
        name: &name,
        status: &status,
        thread_id: &query.thread_id,
        inbox: inbox.as_ref(),
    };
    (jar, pages::home(&view, &csrf)).into_response()
}

/// The share form.
#[derive(Debug, Deserialize)]
pub struct ShareForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    thread_id: String,
    #[serde(default)]
    friend_id: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    client_key: String,
}

/// `POST /share`.
pub async fn share(
    State(state): State<WebState>,
    SignedIn { name, .. }: SignedIn,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<ShareForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    let shared = state
        .app
        .share(as_signed_in(
            api::ShareRequest {
                user_name: String::new(),
                thread_id: form.thread_id,
                friend_id: form.friend_id,
                body: form.body,
                client_key: form.client_key,
                card: None,
            },
            &name,
        ))
        .await;
    match shared {
        Ok(shared) => {
            let shared = shared.into_inner();
            Redirect::to(&format!("/?thread_id={}", shared.thread_id)).into_response()
        }
        Err(error) => refused(&error),
    }
}

/// The unsend form.
#[derive(Debug, Deserialize)]
pub struct UnsendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    thread_id: String,
}

/// `POST /unsend`.
pub async fn unsend(
    State(state): State<WebState>,
    SignedIn { name, .. }: SignedIn,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<UnsendForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    let request = api::UnsendRequest {
        user_name: String::new(),
        message_id: form.message_id,
    };
    match state.app.unsend(as_signed_in(request, &name)).await {
        Ok(_) => Redirect::to(&format!("/?thread_id={}", form.thread_id)).into_response(),
        Err(error) => refused(&error),
    }
}

/// The disconnect form.
#[derive(Debug, Deserialize)]
pub struct DisconnectForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /disconnect`: the grant is released on the platform and its data deleted here.
pub async fn disconnect(
    State(state): State<WebState>,
    SignedIn { name, .. }: SignedIn,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<DisconnectForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&jar, &form.csrf) {
        return refused;
    }
    let request = api::DisconnectRequest::default();
    match state.app.disconnect(as_signed_in(request, &name)).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(error) => refused(&error),
    }
}
