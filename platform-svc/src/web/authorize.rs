//! The authorization endpoint and the consent page (RFC 6749 section 4.1 with RFC 9126
//! and RFC 9207). The browser arrives at `/authorize?client_id=…&request_uri=…` from a
//! partner; once the user is signed in, the pushed request becomes an access request of
//! theirs, opened once, and the browser moves to its consent page. Approving there makes
//! the grant and sends the browser back to the registered redirect URI with a single-use
//! `code`, the partner's `state` and the platform's `iss`; denying sends
//! `error=access_denied` instead. A request made with `RequestAccess` (no browser on the
//! partner's side) has the same consent page, reached from the grants page.

use super::parsed::{PageForm, PageQuery};
use super::session::{self, SignedIn, sign_in_then_back};
use super::{WebState, failure, pages, refuse_form};
use crate::api::account::{self, Concerns};
use crate::api::audit_refusal;
use crate::error::{ApiError, ApiResult};
use crate::validate::{self, AllFields};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::WithRejection;
use axum_extra::extract::{CookieJar, Form};
use consent_core::approval::{self, Choice};
use consent_core::authorization::{self, AuthorizationCode, PushedRequest};
use consent_core::clock::DAY_MS;
use consent_core::model::{AccessRequest, Coverage, RequestStatus, Scope, ScopeSet, ThreadFilter};
use consent_core::ownership;
use consent_core::secret::{CODE_PREFIX, hash_token, new_id, new_token};
use consent_store::{Page, Repo};
use consent_tls::https::cookies;
use serde::Deserialize;

/// The authorization request's query.
#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    request_uri: String,
}

/// `GET /authorize`: sends a browser without a session to sign in first, and opens the
/// pushed request for a signed-in user. A request_uri that is unknown for the client,
/// expired or already used is refused (and audited when its partner is known).
pub async fn open(
    State(state): State<WebState>,
    user: Option<SignedIn>,
    this_page: Uri,
    WithRejection(Query(query), _): PageQuery<AuthorizeQuery>,
) -> Response {
    let user = user.map(|signed_in| signed_in.user);
    let signed_in = user.is_some();
    let uri_hash = hash_token(&query.request_uri);
    let client_id = query.client_id.clone();
    let opened = state
        .platform
        .run(move |repo, now_ms| {
            let pushed = repo.pushed_request(&uri_hash)?;
            if let Err(denied) = authorization::may_open(pushed.as_ref(), &client_id, now_ms) {
                let error = ApiError::from(denied);
                if let Some(pushed) = &pushed {
                    let user_id = user.as_ref().map(|u| u.id.as_str()).unwrap_or_default();
                    audit_refusal(
                        repo,
                        now_ms,
                        &pushed.partner_id,
                        user_id,
                        "GET /authorize",
                        &error,
                    )?;
                }
                return Ok(Err(error));
            }
            let (Some(pushed), Some(user)) = (pushed, user) else {
                return Ok(Ok(None));
            };
            // Offered threads the user is not in are left out, unseen: approving never
            // reaches them, and the partner does not learn which they were.
            let thread_ids = account::member_threads(repo, &user, &pushed.thread_ids)?;
            let access = AccessRequest {
                id: new_id("req"),
                partner_id: pushed.partner_id,
                feature: pushed.feature,
                user_id: user.id,
                user_name: user.name,
                binding_message: String::new(),
                account_label: String::new(),
                coverage: pushed.coverage,
                thread_ids,
                include_history: pushed.include_history,
                purpose: pushed.purpose,
                status: RequestStatus::Pending,
                grant_id: None,
                created_ms: now_ms,
            };
            repo.insert_request(&access)?;
            repo.open_pushed_request(&uri_hash, &access.id)?;
            Ok(Ok(Some(access.id)))
        })
        .await;
    match opened {
        Ok(Ok(Some(request_id))) => Redirect::to(&format!("/consent/{request_id}")).into_response(),
        Ok(Ok(None)) if !signed_in => sign_in_then_back(&this_page),
        Ok(Ok(None)) => failure(&ApiError::Storage(
            "an open request without its user".into(),
        )),
        Ok(Err(error)) | Err(error) => failure(&error),
    }
}

/// The most threads the consent page offers, and a decision may tick.
const MAX_PICKED_THREADS: usize = 100;

/// What the consent page shows.
#[derive(Debug)]
pub struct ConsentView {
    /// The name of the user deciding.
    pub signed_in_as: String,
    /// The request.
    pub access: AccessRequest,
    /// The partner's name.
    pub partner_name: String,
    /// What the feature does, in the partner's registration.
    pub feature_description: String,
    /// The kinds of card its messages may carry.
    pub card_kinds: Vec<consent_core::card::CardKind>,
    /// The scopes asked for.
    pub scopes: ScopeSet,
    /// Threads to pick from (listed coverage): id, title, ticked.
    pub threads: Vec<(String, String, bool)>,
    /// The longest lifetime policy allows, in days.
    pub max_days: i64,
    /// With the code flow: the origin of the redirect URI the answer goes to.
    pub redirect_origin: Option<String>,
}

/// The origin (`https://host[:port]`) of a registered redirect URI.
fn origin_of(uri: &str) -> String {
    let rest = uri.strip_prefix("https://").unwrap_or(uri);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    format!("https://{}", &rest[..end])
}

/// `GET /consent/{request_id}`: the consent page of one of the user's pending requests.
pub async fn page(
    State(state): State<WebState>,
    SignedIn { user, .. }: SignedIn,
    jar: CookieJar,
    Path(request_id): Path<String>,
) -> Response {
    let max_days = state.platform.limits.lifetime.max_lifetime_ms / DAY_MS;
    let view = state
        .platform
        .read(move |repo, now_ms| {
            let access =
                ownership::users_request(&user.id, &request_id, repo.request(&request_id)?)?;
            approval::may_decide(&access, now_ms)?;
            let partner = repo
                .partner(&access.partner_id)?
                .ok_or_else(|| ApiError::not_found("partner", &access.partner_id))?;
            let feature = repo
                .feature(&access.partner_id, &access.feature)?
                .ok_or_else(|| ApiError::not_found("feature", &access.feature))?;
            let mut threads = Vec::new();
            if access.coverage == Coverage::Listed {
                // The user's own threads to pick from: first those asked for, ticked, then
                // others up to the most a form may tick.
                let page = Page {
                    after: 0,
                    limit: MAX_PICKED_THREADS,
                };
                let asked = ThreadFilter::Ids(access.thread_ids.clone());
                for (_, thread) in repo.threads_of(&user.id, &asked, page)? {
                    threads.push((thread.id, thread.title, true));
                }
                for (_, thread) in repo.threads_of(&user.id, &ThreadFilter::All, page)? {
                    if threads.len() >= MAX_PICKED_THREADS {
                        break;
                    }
                    if !access.thread_ids.contains(&thread.id) {
                        threads.push((thread.id, thread.title, false));
                    }
                }
            }
            let redirect_origin = repo
                .pushed_request_of(&access.id)?
                .map(|p| origin_of(&p.redirect_uri));
            Ok(ConsentView {
                signed_in_as: user.name,
                scopes: approval::asked_scopes(&feature, &partner),
                partner_name: partner.display_name,
                feature_description: feature.description,
                card_kinds: feature.card_kinds,
                threads,
                max_days,
                redirect_origin,
                access,
            })
        })
        .await;
    let view = match view {
        Ok(view) => view,
        Err(error) => return failure(&error),
    };
    let (jar, csrf) = cookies::csrf_token(jar);
    let mut response = (jar, pages::consent(&view, &csrf)).into_response();
    if let Some(origin) = &view.redirect_origin {
        // The approval's redirect leaves for the partner: browsers hold redirects after a
        // form to the form's `form-action`.
        if let Ok(value) = HeaderValue::from_str(&consent_tls::https::page_policy(origin)) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    response
}

/// The consent form's fields.
#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    thread: Vec<String>,
    #[serde(default)]
    include_history: Option<String>,
    #[serde(default)]
    lifetime_days: u32,
}

/// Where the browser goes after a decision.
enum Decided {
    /// Back to the partner's redirect URI (the code flow).
    Partner(String),
    /// To the user's grants (a request approved in the platform's own pages).
    Grants,
}

/// The scopes ticked on the form, by name; none ticked is refused (approving "nothing"
/// would otherwise mean "as asked").
fn ticked_scopes(names: &[String]) -> ApiResult<ScopeSet> {
    validate::at_most("scope", names, Scope::ALL.len(), "permissions")?;
    let scopes = validate::each(names.iter().enumerate().map(|(index, name)| {
        let field = format!("scope[{index}]");
        validate::not_before(names, index, &field)?;
        Scope::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| ApiError::invalid(field, format!("{name} is not a scope")))
    }))?;
    if scopes.is_empty() {
        return Err(ApiError::invalid(
            "scope",
            "tick at least one permission, or deny",
        ));
    }
    Ok(ScopeSet::of(&scopes))
}

/// `redirect_uri` with the answer's parameters added to its query.
fn answer_url(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    format!("{redirect_uri}{separator}{}", query.finish())
}

/// The answer to a denial: `access_denied` at the partner's redirect URI.
fn denied_answer(pushed: &PushedRequest, issuer: &str) -> Decided {
    Decided::Partner(answer_url(
        &pushed.redirect_uri,
        &[
            ("error", "access_denied"),
            ("state", &pushed.state),
            ("iss", issuer),
        ],
    ))
}

/// The answer to an approval: `code` at the partner's redirect URI.
fn code_answer(pushed: &PushedRequest, code: &str, issuer: &str) -> Decided {
    Decided::Partner(answer_url(
        &pushed.redirect_uri,
        &[("code", code), ("state", &pushed.state), ("iss", issuer)],
    ))
}

/// The answer to a decision sent again (see [`approval::decides_again`]): the first one's,
/// except that the code an approval issued, while still unused, is replaced by a new one
/// that expires with it (recorded as the code's issue), since only the second answer
/// reaches the partner.
fn answer_again(
    repo: &mut dyn Repo,
    access: &AccessRequest,
    pushed: Option<&PushedRequest>,
    issuer: &str,
    now_ms: i64,
) -> ApiResult<Decided> {
    let Some(pushed) = pushed else {
        return Ok(Decided::Grants);
    };
    // A denial made no grant.
    let Some(grant_id) = access.grant_id.as_deref() else {
        return Ok(denied_answer(pushed, issuer));
    };
    authorization::may_issue_again(repo.code_of_grant(grant_id)?.as_ref(), now_ms)?;
    let code = new_token(CODE_PREFIX);
    repo.rehash_code_of_grant(grant_id, &hash_token(&code))?;
    let issued = Concerns {
        partner_id: &access.partner_id,
        user_id: &access.user_id,
        grant_id,
        resource: &access.id,
    };
    account::record(repo, now_ms, "POST /consent", issued)?;
    Ok(code_answer(pushed, &code, issuer))
}

/// `POST /consent/{request_id}`: approve (with what the user left ticked) or deny.
pub async fn decide(
    State(state): State<WebState>,
    SignedIn { user, .. }: SignedIn,
    jar: CookieJar,
    Path(request_id): Path<String>,
    WithRejection(Form(form), _): PageForm<DecisionForm>,
) -> Response {
    if let Err(error) = session::check_csrf(&jar, &form.csrf) {
        let partner_of = move |repo: &mut dyn Repo, user_id: &str| {
            let access = ownership::users_request(user_id, &request_id, repo.request(&request_id)?);
            Ok(access.ok().map(|a| a.partner_id))
        };
        return refuse_form(&state, error, user.id, "POST /consent", partner_of).await;
    }
    let issuer = state.origin.to_string();
    let policy = state.platform.limits.lifetime;
    let approve = match form.decision.as_str() {
        "approve" => Ok(true),
        "deny" => Ok(false),
        _ => Err(ApiError::invalid("decision", "must be approve or deny")),
    };
    let scopes = match approve {
        Ok(true) => ticked_scopes(&form.scope),
        _ => Ok(ScopeSet::default()),
    };
    let threads = validate::ids("thread", &form.thread, 0, MAX_PICKED_THREADS);
    let (approve, scopes, threads) = match (approve, scopes, threads).all() {
        Ok(checked) => checked,
        Err(error) => return failure(&error),
    };
    let decided = state
        .platform
        .run(move |repo, now_ms| {
            let pushed = repo.pushed_request_of(&request_id)?;
            let access =
                ownership::users_request(&user.id, &request_id, repo.request(&request_id)?)?;
            let granted = match &access.grant_id {
                Some(grant_id) => repo.grant(grant_id)?,
                None => None,
            };
            let choice = approve.then_some(Choice {
                scopes,
                thread_ids: threads,
                lifetime_days: form.lifetime_days,
                include_history: form.include_history.is_some(),
            });
            if approval::decides_again(&access, granted.as_ref(), choice.as_ref(), &policy) {
                return answer_again(repo, &access, pushed.as_ref(), &issuer, now_ms);
            }
            let Some(choice) = choice else {
                account::deny(repo, &user, access, now_ms)?;
                return Ok(pushed.map_or(Decided::Grants, |p| denied_answer(&p, &issuer)));
            };
            approval::may_approve_ticked(access.coverage, &choice.thread_ids)?;
            let (grant, _) = account::approve(repo, &user, access, choice, now_ms, &policy)?;
            let Some(pushed) = pushed else {
                return Ok(Decided::Grants);
            };
            // The token comes only through the code: the request is marked collected.
            repo.set_request_status(&request_id, RequestStatus::Exchanged, Some(&grant.id))?;
            let code = new_token(CODE_PREFIX);
            repo.insert_code(
                &hash_token(&code),
                &AuthorizationCode {
                    partner_id: grant.partner_id.clone(),
                    grant_id: grant.id.clone(),
                    redirect_uri: pushed.redirect_uri.clone(),
                    code_challenge: pushed.code_challenge.clone(),
                    expires_ms: now_ms + authorization::CODE_TTL_MS,
                    redeemed_ms: None,
                },
            )?;
            Ok(code_answer(&pushed, &code, &issuer))
        })
        .await;
    match decided {
        Ok(Decided::Partner(url)) => Redirect::to(&url).into_response(),
        Ok(Decided::Grants) => Redirect::to("/grants").into_response(),
        Err(error) => failure(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_fields(names: &[&str]) -> Vec<String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        match ticked_scopes(&names) {
            Err(ApiError::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_ticked_scope_is_named() {
        assert_eq!(
            refused_fields(&["messages.read", "nope", "messages.read", "x"]),
            ["scope[1]", "scope[2]", "scope[3]"]
        );
        assert_eq!(refused_fields(&[]), ["scope"]);
        let ticked = ticked_scopes(&["messages.read".into(), "threads.read".into()]).unwrap();
        assert_eq!(ticked.names(), "threads.read, messages.read");
    }
}
