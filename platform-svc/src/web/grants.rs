//! The user's grants page: every grant with its partner, feature, permissions in plain
//! words, coverage, history, dates and state; pending requests with a link to their
//! consent page; and a revoke button whose revocation has committed before the page
//! that follows it is drawn.

use super::{WebState, failure, pages, session};
use crate::api::account;
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::{CookieJar, Form};
use consent_core::approval;
use consent_core::model::{AccessRequest, Grant};
use consent_store::Page;
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

/// `GET /grants`.
pub async fn list(State(state): State<WebState>, jar: CookieJar) -> Response {
    let user = match session::user(&state, &jar).await {
        Ok(Some(user)) => user,
        Ok(None) => return Redirect::to("/sign-in?next=%2Fgrants").into_response(),
        Err(error) => return failure(&error),
    };
    let name = user.display_name.clone();
    let listed = state
        .platform
        .read(move |repo, now_ms| {
            let mut rows = Vec::new();
            for (_, grant) in repo.grants_of_user(
                &user.id,
                Page {
                    after: 0,
                    limit: 100,
                },
            )? {
                let partner_name = repo
                    .partner(&grant.partner_id)?
                    .map(|p| p.display_name)
                    .unwrap_or_else(|| grant.partner_id.clone());
                rows.push(GrantRow {
                    grant,
                    partner_name,
                });
            }
            let pending: Vec<AccessRequest> =
                repo.pending_requests(&user.id, approval::request_cutoff_ms(now_ms))?;
            Ok((rows, pending))
        })
        .await;
    match listed {
        Ok((rows, pending)) => {
            let (jar, csrf) = cookies::csrf_token(jar);
            (jar, pages::grants(&name, &rows, &pending, &csrf)).into_response()
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
    jar: CookieJar,
    Path(grant_id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Err(error) = session::check_csrf(&jar, &form.csrf) {
        return failure(&error);
    }
    let user = match session::user(&state, &jar).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return failure(&ApiError::Unauthenticated(
                consent_core::denial::Reason::SessionInvalid,
                "sign in again".into(),
            ));
        }
        Err(error) => return failure(&error),
    };
    let revoked = state
        .platform
        .run(move |repo, now_ms| account::revoke(repo, &user, &grant_id, now_ms))
        .await;
    match revoked {
        Ok(_) => Redirect::to("/grants").into_response(),
        Err(error) => failure(&error),
    }
}
