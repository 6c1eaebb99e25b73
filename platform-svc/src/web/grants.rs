//! The user's grants page: every grant with its partner, feature, permissions in plain
//! words, coverage, history, dates and state; pending requests with a link to their
//! consent page; and a revoke button whose revocation has committed before the page
//! that follows it is drawn.

use super::parsed::{PageForm, PageQuery};
use super::session::{self, SignedIn};
use super::{WebState, failure, pages, refuse_form, sign_in_then};
use crate::api::account;
use crate::error::ApiResult;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::WithRejection;
use axum_extra::extract::{CookieJar, Form};
use consent_core::approval;
use consent_core::model::{AccessRequest, Grant};
use consent_core::ownership;
use consent_store::Page;
use consent_store::Repo;
use consent_tls::https::cookies;
use serde::Deserialize;

/// A grant as the page lists it, with its partner's name.
#[derive(Debug)]
pub struct GrantRow {
    /// The grant.
    pub grant: Grant,
    /// Its partner's name.
    pub partner_name: String,
}

/// Grants shown per page.
const GRANTS_PER_PAGE: usize = 50;

/// Where a page of grants starts.
#[derive(Debug, Deserialize)]
pub struct GrantsQuery {
    #[serde(default)]
    after: i64,
}

/// The grants page's content.
#[derive(Debug)]
pub struct GrantsView {
    /// The signed-in user's name.
    pub name: String,
    /// This page of grants.
    pub rows: Vec<GrantRow>,
    /// The cursor of the next page, if there is one.
    pub next_after: Option<i64>,
    /// Requests waiting for the user, each with its partner's name.
    pub pending: Vec<(AccessRequest, String)>,
}

fn partner_name(repo: &mut dyn Repo, partner_id: &str) -> ApiResult<String> {
    Ok(repo
        .partner(partner_id)?
        .map(|p| p.display_name)
        .unwrap_or_else(|| partner_id.to_string()))
}

/// `GET /grants`: the first page of grants (newest first), then `?after=` for the next.
pub async fn list(
    State(state): State<WebState>,
    SignedIn { user, .. }: SignedIn,
    jar: CookieJar,
    WithRejection(Query(query), _): PageQuery<GrantsQuery>,
) -> Response {
    let listed = state
        .platform
        .read(move |repo, now_ms| {
            let page = Page {
                after: query.after,
                limit: GRANTS_PER_PAGE,
            };
            let found = repo.grants_of_user(&user.id, page)?;
            let next_after = (found.len() == GRANTS_PER_PAGE)
                .then(|| found.last().map(|(cursor, _)| *cursor))
                .flatten();
            let mut rows = Vec::new();
            for (_, grant) in found {
                let partner_name = partner_name(repo, &grant.partner_id)?;
                rows.push(GrantRow {
                    grant,
                    partner_name,
                });
            }
            let mut pending = Vec::new();
            // At most 3 decoupled requests wait per partner and they expire in a day; the
            // page shows the oldest pages' worth, the platform's app pages through all.
            let oldest = Page {
                after: 0,
                limit: GRANTS_PER_PAGE,
            };
            let cutoff = approval::request_cutoff_ms(now_ms);
            for (_, request) in repo.pending_requests(&user.id, cutoff, oldest)? {
                let name = partner_name(repo, &request.partner_id)?;
                pending.push((request, name));
            }
            Ok(GrantsView {
                name: user.display_name,
                rows,
                next_after,
                pending,
            })
        })
        .await;
    match listed {
        Ok(view) => {
            let (jar, csrf) = cookies::csrf_token(jar);
            (jar, pages::grants(&view, &csrf)).into_response()
        }
        Err(error) => failure(&error),
    }
}

/// The revoke button's form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /grants/{grant_id}/revoke`: the grant's token stops working before the answer.
pub async fn revoke(
    State(state): State<WebState>,
    user: Option<SignedIn>,
    jar: CookieJar,
    Path(grant_id): Path<String>,
    WithRejection(Form(form), _): PageForm<RevokeForm>,
) -> Response {
    // The form's own path is no page to come back to: the grants page, where it is, is.
    let Some(SignedIn { user, .. }) = user else {
        return sign_in_then("/grants");
    };
    if let Err(error) = session::check_csrf(&jar, &form.csrf) {
        // A forged revocation is recorded against the grant it named, if it is the user's.
        let partner_of = move |repo: &mut dyn Repo, user_id: &str| {
            let grant = ownership::users_grant(user_id, &grant_id, repo.grant(&grant_id)?);
            Ok(grant.ok().map(|g| g.partner_id))
        };
        return refuse_form(&state, error, user.id, "POST /grants/revoke", partner_of).await;
    }
    let revoked = state
        .platform
        .run(move |repo, now_ms| account::revoke(repo, &user, &grant_id, now_ms))
        .await;
    match revoked {
        Ok(_) => Redirect::to("/grants").into_response(),
        Err(error) => failure(&error),
    }
}
