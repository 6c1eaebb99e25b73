//! The user's pages about their data, each a view of the account service's answer for the
//! signed-in session: the access log of every partner call on their data (allowed or
//! refused) and of reads through other people's grants, which apps can read each of their
//! conversations, their privacy settings, and the consent receipt of each grant.

use super::parsed::{PageForm, PageQuery};
use super::session::{self, SignedIn, sign_in_then_back};
use super::{WebState, failure, pages};
use crate::api::account::receipt_summary;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::WithRejection;
use axum_extra::extract::{CookieJar, Form};
use consent_core::ownership;
use consent_proto::platform::v1 as pb;
use consent_telemetry::rpc::decision;
use consent_tls::https::cookies;
use consent_tls::https::http_status;
use consent_tls::https::with_bearer;
use pb::account_server::Account as _;
use serde::Deserialize;

/// A refusal of the account service for the page `this_page`, shown as every page shows a
/// failure: the HTTP status of its code, its message and its reason. A session that ended
/// after the page's edge found it signs in again and comes back.
fn refused(status: &tonic::Status, this_page: &Uri) -> Response {
    if status.code() == tonic::Code::Unauthenticated {
        return sign_in_then_back(this_page);
    }
    let reason = decision(status);
    (
        http_status(status.code()),
        pages::refused(status.message(), &reason),
    )
        .into_response()
}

/// Page tokens: `page` for the main list, `others` for the reads through others' grants.
#[derive(Debug, Deserialize)]
pub struct PageTokens {
    #[serde(default)]
    page: String,
    #[serde(default)]
    others: String,
}

/// `GET /access-log`: every partner call on my data, oldest first, fifty a page; and the
/// reads of my messages by apps that other people in my conversations use.
pub async fn access_log(
    State(state): State<WebState>,
    SignedIn { token, .. }: SignedIn,
    this_page: Uri,
    WithRejection(Query(query), _): PageQuery<PageTokens>,
) -> Response {
    let asked = pb::ReadAccessLogRequest {
        page_size: 50,
        page_token: query.page,
    };
    let log = match state
        .account
        .read_access_log(with_bearer(asked, &token))
        .await
    {
        Ok(log) => log.into_inner(),
        Err(status) => return refused(&status, &this_page),
    };
    let others = pb::ListReadsByOthersAppsRequest {
        page_size: 50,
        page_token: query.others,
    };
    let reads = match state
        .account
        .list_reads_by_others_apps(with_bearer(others, &token))
        .await
    {
        Ok(reads) => reads.into_inner(),
        Err(status) => return refused(&status, &this_page),
    };
    pages::access_log(&log, &reads).into_response()
}

/// `GET /threads`: which apps can read each of my conversations, twenty a page.
pub async fn threads(
    State(state): State<WebState>,
    SignedIn { token, .. }: SignedIn,
    this_page: Uri,
    WithRejection(Query(query), _): PageQuery<PageTokens>,
) -> Response {
    let listed = state
        .account
        .list_threads(with_bearer(
            pb::ListThreadsRequest {
                page_size: 20,
                page_token: query.page,
            },
            &token,
        ))
        .await;
    let (threads, next_page) = match listed {
        Ok(listed) => {
            let listed = listed.into_inner();
            (listed.threads, listed.next_page_token)
        }
        Err(status) => return refused(&status, &this_page),
    };
    let mut rows = Vec::new();
    for thread in threads {
        // One page of the largest size: the apps of a conversation are those of its
        // participants' grants, which a page of 100 holds in all but contrived cases.
        let asked = pb::ListThreadAppsRequest {
            thread_id: thread.thread_id.clone(),
            page_size: 100,
            ..Default::default()
        };
        match state
            .account
            .list_thread_apps(with_bearer(asked, &token))
            .await
        {
            Ok(apps) => rows.push((thread, apps.into_inner().apps)),
            Err(status) => return refused(&status, &this_page),
        }
    }
    pages::threads(&rows, &next_page).into_response()
}

/// `GET /threads/{thread}`: a conversation's messages, each card shown as what it is.
pub async fn conversation(
    State(state): State<WebState>,
    SignedIn { token, .. }: SignedIn,
    this_page: Uri,
    Path(thread_id): Path<String>,
    WithRejection(Query(query), _): PageQuery<PageTokens>,
) -> Response {
    let listed = state
        .account
        .list_messages(with_bearer(
            pb::ListMessagesRequest {
                thread_id: thread_id.clone(),
                page_size: 50,
                page_token: query.page,
            },
            &token,
        ))
        .await;
    match listed {
        Ok(listed) => {
            let listed = listed.into_inner();
            pages::conversation(&thread_id, &listed.messages, &listed.next_page_token)
                .into_response()
        }
        Err(status) => refused(&status, &this_page),
    }
}

/// `GET /privacy`: my settings, as a form.
pub async fn privacy(SignedIn { user, .. }: SignedIn, jar: CookieJar) -> Response {
    let (jar, csrf) = cookies::csrf_token(jar);
    (jar, pages::privacy(&user, &csrf)).into_response()
}

/// The privacy form: a box left unticked is sent as absent.
#[derive(Debug, Deserialize)]
pub struct PrivacyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    hide_from_others_apps: Option<String>,
    #[serde(default)]
    show_name_to_friends_apps: Option<String>,
}

/// `POST /privacy`.
pub async fn set_privacy(
    State(state): State<WebState>,
    SignedIn { token, .. }: SignedIn,
    this_page: Uri,
    jar: CookieJar,
    WithRejection(Form(form), _): PageForm<PrivacyForm>,
) -> Response {
    if let Err(error) = session::check_csrf(&jar, &form.csrf) {
        return failure(&error);
    }
    let change = pb::SetPrivacyRequest {
        hide_from_others_apps: Some(form.hide_from_others_apps.is_some()),
        show_name_to_friends_apps: Some(form.show_name_to_friends_apps.is_some()),
    };
    match state.account.set_privacy(with_bearer(change, &token)).await {
        Ok(_) => Redirect::to("/privacy").into_response(),
        Err(status) => refused(&status, &this_page),
    }
}

/// `GET /grants/{grant_id}`: the consent receipt of one of my grants.
pub async fn receipt(
    State(state): State<WebState>,
    SignedIn { user, .. }: SignedIn,
    Path(grant_id): Path<String>,
) -> Response {
    let found = state
        .platform
        .read(move |repo, _| {
            let grant = ownership::users_grant(&user.id, &grant_id, repo.grant(&grant_id)?)?;
            let partner_name = repo
                .partner(&grant.partner_id)?
                .map(|p| p.display_name)
                .unwrap_or_else(|| grant.partner_id.clone());
            let used = repo.used_scopes(&grant.id)?;
            Ok((grant, partner_name, used))
        })
        .await;
    match found {
        Ok((grant, partner_name, used)) => {
            let summary = receipt_summary(&partner_name, &grant);
            pages::receipt(&grant, &partner_name, &summary, used).into_response()
        }
        Err(error) => failure(&error),
    }
}
