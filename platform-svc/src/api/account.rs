//! The account surface: the platform's own client. Users sign in with a password (stored
//! as an Argon2id hash), keep their messages, and decide about partner access: approve
//! (possibly narrower), deny, list, revoke, read the access log, see which apps can read a
//! thread, and opt out of being shown to apps that others use.

use super::{Platform, convert, end_grant};
use crate::config::SignInLimits;
use crate::error::{ApiError, ApiResult};
use crate::password::{PasswordHasher, QueueLimits};
use crate::sign_in_throttle::SignInThrottle;
use crate::validate::{self, AllFields};
use consent_core::approval::{self, Choice};
use consent_core::clock::timestamp;
use consent_core::denial::Reason;
use consent_core::model::{
    AccessRequest, AuditEntry, Coverage, Grant, GrantState, PrivacyChange, RequestStatus, Thread,
    User,
};
use consent_core::ownership;
use consent_core::rules::{self, Befriending, LifetimePolicy};
use consent_core::secret::{
    SESSION_TOKEN_PREFIX, hash_token, is_well_formed, new_id, new_ordered_id, new_token,
};
use consent_core::session;
use consent_proto::platform::v1 as pb;
use consent_store::{Repo, StoreError};
use consent_tls::principal::ConnectionInfo;
use pb::GrantEventKind;
use pb::account_server::Account;
use std::sync::Arc;
use tonic::{Request, Response, Status};

macro_rules! method {
    ($name:literal) => {
        concat!("/consent.platform.v1.Account/", $name)
    };
}

/// The account service.
#[derive(Debug, Clone)]
pub struct AccountService {
    platform: Platform,
    passwords: PasswordHasher,
    throttle: Arc<SignInThrottle>,
}

impl AccountService {
    /// Serves `platform`, starting its password-hashing thread and sign-in throttle with
    /// `limits`.
    pub fn start(platform: Platform, limits: SignInLimits) -> std::io::Result<Self> {
        let queues = QueueLimits {
            sign_ins: limits.pending_sign_ins,
            sign_ups: limits.pending_sign_ups,
        };
        Ok(AccountService {
            platform,
            passwords: PasswordHasher::start(queues)?,
            throttle: Arc::new(SignInThrottle::new(limits)),
        })
    }

    /// Runs `work` on the store's writer for the signed-in user of `request`'s session
    /// token.
    async fn as_user<T, R: Send + 'static>(
        &self,
        request: &Request<T>,
        work: impl FnOnce(&mut dyn Repo, &User, i64) -> ApiResult<R> + Send + 'static,
    ) -> Result<Response<R>, Status> {
        let work = signed_in(consent_tls::https::bearer_token(request), work);
        Ok(Response::new(self.platform.run(work).await?))
    }

    /// Runs read-only `work` for the signed-in user on a snapshot beside the writer, so
    /// that a user's reads never queue behind partners' writes.
    async fn as_reader<T, R: Send + 'static>(
        &self,
        request: &Request<T>,
        work: impl FnOnce(&mut dyn Repo, &User, i64) -> ApiResult<R> + Send + 'static,
    ) -> Result<Response<R>, Status> {
        let work = signed_in(consent_tls::https::bearer_token(request), work);
        Ok(Response::new(self.platform.read(work).await?))
    }

    /// Checks a user name and password (throttled per account and address, hashed on the
    /// bounded queue) and starts a session: the one sign-in of the gRPC and web surfaces.
    pub async fn start_session(
        &self,
        r: pb::SignInRequest,
        address: Option<std::net::IpAddr>,
    ) -> ApiResult<pb::SignInResponse> {
        (
            validate::user_name("user_name", &r.user_name),
            validate::password("password", &r.password),
        )
            .all()?;
        let now_ms = self.platform.clock.now_ms();
        let attempt = self
            .throttle
            .begin(&r.user_name, address, now_ms)
            .map_err(|until_ms| throttled(until_ms - now_ms))?;
        let name = r.user_name.clone();
        let user = match self
            .platform
            .read(move |repo, _| Ok(repo.user_by_name(&name)?))
            .await
        {
            Ok(user) => user,
            Err(error) => {
                self.throttle.abandoned(attempt);
                return Err(error);
            }
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matches = match self.passwords.verify(r.password, stored).await {
            Ok(matches) => matches,
            Err(error) => {
                self.throttle.abandoned(attempt);
                return Err(error);
            }
        };
        let Some(user) = user.filter(|_| matches) else {
            return Err(ApiError::Unauthenticated(
                Reason::BadCredentials,
                "wrong user name or password".into(),
            ));
        };
        self.throttle.succeeded(attempt);
        let session_ms = self.platform.limits.session_ms;
        self.platform
            .run(move |repo, now_ms| {
                let token = new_token(SESSION_TOKEN_PREFIX);
                let expires_ms = session::ends_ms(now_ms, session_ms);
                repo.insert_session(&hash_token(&token), &user.id, expires_ms)?;
                Ok(pb::SignInResponse {
                    session_token: token,
                    user_id: user.id,
                    expires_at: Some(timestamp(expires_ms)),
                })
            })
            .await
    }
}

/// Approves `user`'s access request `access` as they chose: the grant is made, its
/// partner told, its audit record appended. A request made to someone else is not found.
/// The one approval of the gRPC and web surfaces.
pub fn approve(
    repo: &mut dyn Repo,
    user: &User,
    access: AccessRequest,
    mut choice: Choice,
    now_ms: i64,
    policy: &LifetimePolicy,
) -> ApiResult<(Grant, pb::ConsentReceipt)> {
    let access = ownership::users_request(&user.id, &access.id.clone(), Some(access))?;
    let partner = repo.partner(&access.partner_id)?;
    let feature = repo.feature(&access.partner_id, &access.feature)?;
    if let Some(feature) = &feature
        && access.coverage == Coverage::Listed
    {
        // Whatever is chosen must be the user's.
        if choice.thread_ids.is_empty() {
            let yours = member_threads(repo, user, &access.thread_ids)?;
            choice.thread_ids = approval::threads_as_asked(yours)?;
        }
        let picked = choice
            .thread_ids
            .iter()
            .map(|id| Ok((id.as_str(), repo.thread(id)?)))
            .collect::<ApiResult<Vec<_>>>()?;
        approval::may_request(&user.id, feature, &picked)?;
    }
    let approved = approval::approve(
        &access,
        partner.as_ref(),
        feature.as_ref(),
        choice,
        now_ms,
        policy,
    )?;
    let grant = Grant {
        id: new_id("grt"),
        user_id: user.id.clone(),
        partner_id: access.partner_id.clone(),
        feature: access.feature.clone(),
        scopes: approved.scopes,
        coverage: access.coverage,
        thread_ids: approved.thread_ids,
        include_history: approved.include_history,
        created_ms: now_ms,
        not_after_ms: approved.not_after_ms,
        last_used_ms: None,
        state: GrantState::Active,
        ended_ms: None,
        attested_ms: None,
    };
    repo.insert_grant(&grant)?;
    repo.set_request_status(&access.id, RequestStatus::Approved, Some(&grant.id))?;
    let kind = if approved.narrowed {
        GrantEventKind::GrantNarrowed
    } else {
        GrantEventKind::GrantApproved
    };
    repo.push_event(&grant, kind, now_ms)?;
    record(
        repo,
        now_ms,
        method!("ApproveRequest"),
        concerning(&grant, &access.id),
    )?;
    let partner_name = partner.map(|p| p.display_name).unwrap_or_default();
    let receipt = pb::ConsentReceipt {
        receipt_id: new_id("rcp"),
        summary: receipt_summary(&partner_name, &grant),
        grant: Some(convert::grant(&grant)),
        partner_name,
        scopes_refused: approved.refused.to_proto(),
    };
    Ok((grant, receipt))
}

/// Revokes `user`'s grant `grant_id` if it is active (its token stops working once this
/// commits; its partner is told) and returns it as it now stands: the one revocation of
/// the gRPC and web surfaces.
pub fn revoke(repo: &mut dyn Repo, user: &User, grant_id: &str, now_ms: i64) -> ApiResult<Grant> {
    let grant = own_grant(repo, user, grant_id)?;
    if grant.state == GrantState::Active {
        end_grant(repo, &grant, GrantState::Revoked, now_ms)?;
        record(
            repo,
            now_ms,
            method!("RevokeGrant"),
            concerning(&grant, &grant.id),
        )?;
    }
    own_grant(repo, user, grant_id)
}

/// Denies `user`'s access request `access`, while it may still be decided, and records the
/// denial as an approval is recorded. A request made to someone else is not found. The one
/// denial of the gRPC and web surfaces.
pub fn deny(
    repo: &mut dyn Repo,
    user: &User,
    access: AccessRequest,
    now_ms: i64,
) -> ApiResult<AccessRequest> {
    let mut access = ownership::users_request(&user.id, &access.id.clone(), Some(access))?;
    approval::may_decide(&access, now_ms)?;
    repo.set_request_status(&access.id, RequestStatus::Denied, None)?;
    let denied = Concerns {
        partner_id: &access.partner_id,
        user_id: &user.id,
        grant_id: "",
        resource: &access.id,
    };
    record(repo, now_ms, method!("DenyRequest"), denied)?;
    access.status = RequestStatus::Denied;
    Ok(access)
}

/// `user`'s access request `request_id`, to decide in the app: refused if only the consent
/// page may decide it; another's is not found.
fn decidable_in_app(
    repo: &mut dyn Repo,
    user: &User,
    request_id: &str,
) -> ApiResult<AccessRequest> {
    let access = ownership::users_request(&user.id, request_id, repo.request(request_id)?)?;
    let pushed = repo.pushed_request_of(request_id)?.is_some();
    approval::may_decide_in_app(pushed)?;
    Ok(access)
}

/// `work` for the user whose session `token` names.
fn signed_in<R>(
    token: Option<String>,
    work: impl FnOnce(&mut dyn Repo, &User, i64) -> ApiResult<R>,
) -> impl FnOnce(&mut dyn Repo, i64) -> ApiResult<R> {
    move |repo, now_ms| {
        let user = session_user(repo, token.as_deref(), now_ms)?;
        work(repo, &user, now_ms)
    }
}

/// The user of an unexpired session `token`.
pub fn session_user(repo: &mut dyn Repo, token: Option<&str>, now_ms: i64) -> ApiResult<User> {
    let token = token
        .filter(|t| is_well_formed(t, SESSION_TOKEN_PREFIX))
        .ok_or_else(session::invalid)?;
    let user_id = session::user_of(repo.session(&hash_token(token))?, now_ms)?;
    Ok(repo.user_by_id(&user_id)?.ok_or_else(session::invalid)?)
}

/// Those of `thread_ids` that `user` is in.
pub fn member_threads(
    repo: &mut dyn Repo,
    user: &User,
    thread_ids: &[String],
) -> ApiResult<Vec<String>> {
    let mut members = Vec::new();
    for id in thread_ids {
        if repo
            .thread(id)?
            .is_some_and(|t| ownership::is_member(&user.id, &t))
        {
            members.push(id.clone());
        }
    }
    Ok(members)
}

fn member_thread(repo: &mut dyn Repo, user: &User, thread_id: &str) -> ApiResult<Thread> {
    Ok(ownership::members_thread(
        &user.id,
        thread_id,
        repo.thread(thread_id)?,
    )?)
}

fn own_grant(repo: &mut dyn Repo, user: &User, grant_id: &str) -> ApiResult<Grant> {
    Ok(ownership::users_grant(
        &user.id,
        grant_id,
        repo.grant(grant_id)?,
    )?)
}

/// What a user's decision on their consent concerns, for its audit record.
pub(crate) struct Concerns<'a> {
    /// The partner decided on.
    pub partner_id: &'a str,
    /// The user deciding.
    pub user_id: &'a str,
    /// Empty for a denial, which makes no grant.
    pub grant_id: &'a str,
    /// The request or grant decided.
    pub resource: &'a str,
}

/// Appends the record of a user's decision that took effect (`method`).
pub(crate) fn record(
    repo: &mut dyn Repo,
    now_ms: i64,
    method: &str,
    on: Concerns<'_>,
) -> ApiResult<()> {
    let entry = AuditEntry {
        partner_id: on.partner_id.to_string(),
        user_id: on.user_id.to_string(),
        grant_id: on.grant_id.to_string(),
        method: method.to_string(),
        resource: on.resource.to_string(),
        decision: "allow".into(),
        reason: String::new(),
    };
    Ok(repo.append_audit(&entry, now_ms)?)
}

/// What a decision on `grant` concerns, named by `resource`.
fn concerning<'a>(grant: &'a Grant, resource: &'a str) -> Concerns<'a> {
    Concerns {
        partner_id: &grant.partner_id,
        user_id: &grant.user_id,
        grant_id: &grant.id,
        resource,
    }
}

fn throttled(wait_ms: i64) -> ApiError {
    ApiError::ResourceExhausted(
        Reason::SignInThrottled,
        format!(
            "too many failed sign-ins for this account name or address: retry in {} s",
            (wait_ms + 999) / 1000
        ),
    )
}

/// A grant in one sentence of the consent receipt.
pub fn receipt_summary(partner_name: &str, grant: &Grant) -> String {
    let scopes = grant.scopes.names();
    if grant
        .scopes
        .iter()
        .all(|s| s == consent_core::model::Scope::FriendsRead)
    {
        return format!(
            "{partner_name} may use {scopes}: your friends list, each friend by name only if they allow it, until you revoke it or it ends."
        );
    }
    let threads = match grant.coverage {
        Coverage::All => "all your threads".to_string(),
        Coverage::Listed => format!("{} listed thread(s)", grant.thread_ids.len()),
        Coverage::PartnerStarted => format!("threads started from {partner_name}"),
    };
    let history = if grant.include_history {
        "including older messages"
    } else {
        "only messages from now on"
    };
    format!(
        "{partner_name} may use {scopes} on {threads}, {history}, until you revoke it or it ends."
    )
}

#[tonic::async_trait]
impl Account for AccountService {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let r = request.into_inner();
        (
            validate::user_name("user_name", &r.user_name),
            validate::text("display_name", &r.display_name, 64),
            validate::password("password", &r.password),
        )
            .all()?;
        let name = r.user_name.clone();
        let taken = self
            .platform
            .read(move |repo, _| Ok(repo.user_by_name(&name)?.is_some()))
            .await?;
        if taken {
            let taken = StoreError::AlreadyExists(format!("user name {} is taken", r.user_name));
            return Err(ApiError::from(taken).into());
        }
        let password_hash = self.passwords.hash(r.password).await?;
        let user = User {
            id: new_id("usr"),
            name: r.user_name,
            display_name: r.display_name,
            password_hash,
            hide_from_others_apps: false,
            name_to_friends_apps: false,
        };
        self.platform
            .run(move |repo, now_ms| {
                repo.insert_user(&user, now_ms)?;
                Ok(pb::SignUpResponse { user_id: user.id })
            })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn sign_in(
        &self,
        request: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::SignInResponse>, Status> {
        let address = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|c| c.remote_addr)
            .map(|a| a.ip());
        let r = request.into_inner();
        Ok(Response::new(self.start_session(r, address).await?))
    }

    async fn add_friend(
        &self,
        request: Request<pb::AddFriendRequest>,
    ) -> Result<Response<pb::AddFriendResponse>, Status> {
        let name = request.get_ref().user_name.clone();
        validate::user_name("user_name", &name)?;
        self.as_user(&request, move |repo, user, now_ms| {
            let other = repo
                .user_by_name(&name)?
                .ok_or_else(|| ApiError::not_found("user", &name))?;
            rules::may_befriend(&user.id, &other.id)?;
            let step = rules::befriending(
                repo.are_friends(&user.id, &other.id)?,
                repo.friend_request_exists(&other.id, &user.id)?,
                repo.friend_request_exists(&user.id, &other.id)?,
            );
            match step {
                Befriending::Friends => repo.add_friendship(&user.id, &other.id)?,
                Befriending::Ask => {
                    let since_ms = rules::friend_request_window_ms(now_ms);
                    rules::may_ask_friend(repo.friend_requests_from(&user.id, since_ms)?)?;
                    repo.add_friend_request(&user.id, &other.id, now_ms)?;
                }
                Befriending::AlreadyAsked => {}
            }
            Ok(pb::AddFriendResponse {
                user_id: other.id,
                friends: step == Befriending::Friends,
            })
        })
        .await
    }

    async fn list_friend_requests(
        &self,
        request: Request<pb::ListFriendRequestsRequest>,
    ) -> Result<Response<pb::ListFriendRequestsResponse>, Status> {
        let page = validate::page(request.get_ref().page_size, &request.get_ref().page_token)?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            let rows = repo.friend_requests_to(&user.id, page)?;
            let (requests, next_page_token) =
                validate::fit_page(rows, page, reply_bytes, |from| pb::FriendRequest {
                    user_name: from.name,
                    display_name: from.display_name,
                });
            Ok(pb::ListFriendRequestsResponse {
                requests,
                next_page_token,
            })
        })
        .await
    }

    async fn create_thread(
        &self,
        request: Request<pb::CreateThreadRequest>,
    ) -> Result<Response<pb::Thread>, Status> {
        let r = request.get_ref().clone();
        let (participants, title) = (
            validate::ids("participant_ids", &r.participant_ids, 1, 16),
            validate::text("title", &r.title, 128),
        )
            .all()?;
        let title = title.to_string();
        self.as_user(&request, move |repo, user, now_ms| {
            super::friends_only(repo, &user.id, &participants)?;
            let mut members = vec![user.id.clone()];
            members.extend(participants);
            let thread = Thread {
                id: new_id("thr"),
                title,
                started_by_partner: None,
                created_ms: now_ms,
                participants: members,
            };
            repo.insert_thread(&thread)?;
            let stored = member_thread(repo, user, &thread.id)?;
            Ok(convert::thread(&stored))
        })
        .await
    }

    async fn send_message(
        &self,
        request: Request<pb::AccountSendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let r = request.get_ref().clone();
        (
            validate::id("thread_id", &r.thread_id),
            validate::body("body", &r.body),
        )
            .all()?;
        self.as_user(&request, move |repo, user, now_ms| {
            member_thread(repo, user, &r.thread_id)?;
            let message = consent_core::model::Message {
                id: new_ordered_id("msg", now_ms),
                thread_id: r.thread_id,
                sender_id: user.id.clone(),
                body: r.body,
                created_ms: now_ms,
                sent_by_partner: None,
                card: None,
            };
            repo.insert_message(&message)?;
            Ok(convert::message(&message))
        })
        .await
    }

    async fn list_threads(
        &self,
        request: Request<pb::ListThreadsRequest>,
    ) -> Result<Response<pb::ListThreadsResponse>, Status> {
        let page = validate::page(request.get_ref().page_size, &request.get_ref().page_token)?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            let rows = repo.threads_of(&user.id, &consent_core::model::ThreadFilter::All, page)?;
            let (threads, next_page_token) =
                validate::fit_page(rows, page, reply_bytes, |t| convert::thread(&t));
            Ok(pb::ListThreadsResponse {
                threads,
                next_page_token,
            })
        })
        .await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let r = request.get_ref().clone();
        let (_, page) = (
            validate::id("thread_id", &r.thread_id),
            validate::page(r.page_size, &r.page_token),
        )
            .all()?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            member_thread(repo, user, &r.thread_id)?;
            let rows = repo.messages(&r.thread_id, i64::MIN, page)?;
            let (messages, next_page_token) = validate::fit_page(rows, page, reply_bytes, |row| {
                convert::message(&row.message)
            });
            Ok(pb::ListMessagesResponse {
                messages,
                next_page_token,
            })
        })
        .await
    }

    async fn list_pending_requests(
        &self,
        request: Request<pb::ListPendingRequestsRequest>,
    ) -> Result<Response<pb::ListPendingRequestsResponse>, Status> {
        let r = request.get_ref();
        let page = validate::page(r.page_size, &r.page_token)?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, now_ms| {
            let cutoff = approval::request_cutoff_ms(now_ms);
            let mut rows = Vec::new();
            for (cursor, mut access) in repo.pending_requests(&user.id, cutoff, page)? {
                // The user sees, of the threads asked for, only their own.
                access.thread_ids = member_threads(repo, user, &access.thread_ids)?;
                let partner = repo.partner(&access.partner_id)?;
                let feature = repo.feature(&access.partner_id, &access.feature)?;
                let shown = partner
                    .zip(feature)
                    .map(|(partner, feature)| convert::access_request(&access, &partner, &feature));
                rows.push((cursor, shown));
            }
            let (requests, next_page_token) =
                validate::fit_page_where(rows, page, reply_bytes, |shown| shown);
            Ok(pb::ListPendingRequestsResponse {
                requests,
                next_page_token,
            })
        })
        .await
    }

    async fn approve_request(
        &self,
        request: Request<pb::ApproveRequestRequest>,
    ) -> Result<Response<pb::ConsentReceipt>, Status> {
        let r = request.get_ref().clone();
        let (_, chosen_scopes, chosen_threads) = (
            validate::id("request_id", &r.request_id),
            validate::scopes("scopes", &r.scopes),
            validate::ids("thread_ids", &r.thread_ids, 0, 100),
        )
            .all()?;
        let policy = self.platform.limits.lifetime;
        self.as_user(&request, move |repo, user, now_ms| {
            let access = decidable_in_app(repo, user, &r.request_id)?;
            let choice = Choice {
                scopes: chosen_scopes,
                thread_ids: chosen_threads,
                lifetime_days: r.lifetime_days,
                include_history: r.include_history,
            };
            let (_, receipt) = approve(repo, user, access, choice, now_ms, &policy)?;
            Ok(receipt)
        })
        .await
    }

    async fn deny_request(
        &self,
        request: Request<pb::DenyRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let request_id = request.get_ref().request_id.clone();
        validate::id("request_id", &request_id)?;
        self.as_user(&request, move |repo, user, now_ms| {
            let access = decidable_in_app(repo, user, &request_id)?;
            let mut access = deny(repo, user, access, now_ms)?;
            let partner = repo
                .partner(&access.partner_id)?
                .ok_or_else(|| ApiError::not_found("partner", &access.partner_id))?;
            let feature = repo
                .feature(&access.partner_id, &access.feature)?
                .ok_or_else(|| ApiError::not_found("feature", &access.feature))?;
            access.thread_ids = member_threads(repo, user, &access.thread_ids)?;
            Ok(convert::access_request(&access, &partner, &feature))
        })
        .await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let page = validate::page(request.get_ref().page_size, &request.get_ref().page_token)?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            let rows = repo.grants_of_user(&user.id, page)?;
            let (grants, next_page_token) =
                validate::fit_page(rows, page, reply_bytes, |grant| convert::grant(&grant));
            Ok(pb::ListGrantsResponse {
                grants,
                next_page_token,
            })
        })
        .await
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let grant_id = request.get_ref().grant_id.clone();
        validate::id("grant_id", &grant_id)?;
        self.as_user(&request, move |repo, user, now_ms| {
            Ok(convert::grant(&revoke(repo, user, &grant_id, now_ms)?))
        })
        .await
    }

    async fn read_access_log(
        &self,
        request: Request<pb::ReadAccessLogRequest>,
    ) -> Result<Response<pb::ReadAccessLogResponse>, Status> {
        let page = validate::page(request.get_ref().page_size, &request.get_ref().page_token)?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            let records = repo.audit_records_of_user(&user.id, page.after, page.limit)?;
            let rows = records.into_iter().map(|r| (r.seq, r)).collect();
            let (records, next_page_token) =
                validate::fit_page(rows, page, reply_bytes, |r| convert::audit_record(&r));
            Ok(pb::ReadAccessLogResponse {
                records,
                next_page_token,
            })
        })
        .await
    }

    async fn list_reads_by_others_apps(
        &self,
        request: Request<pb::ListReadsByOthersAppsRequest>,
    ) -> Result<Response<pb::ListReadsByOthersAppsResponse>, Status> {
        let page = validate::page(request.get_ref().page_size, &request.get_ref().page_token)?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            let mut rows = Vec::new();
            for (cursor, read) in repo.reads_by_others_apps(&user.id, page)? {
                let partner_name = repo
                    .partner(&read.partner_id)?
                    .map(|p| p.display_name)
                    .unwrap_or_default();
                let read = pb::ReadByOthersApp {
                    partner_id: read.partner_id,
                    partner_name,
                    thread_id: read.thread_id,
                    messages: read.messages,
                    at: Some(timestamp(read.at_ms)),
                };
                rows.push((cursor, read));
            }
            let (reads, next_page_token) = validate::fit_page(rows, page, reply_bytes, |read| read);
            Ok(pb::ListReadsByOthersAppsResponse {
                reads,
                next_page_token,
            })
        })
        .await
    }

    async fn list_thread_apps(
        &self,
        request: Request<pb::ListThreadAppsRequest>,
    ) -> Result<Response<pb::ListThreadAppsResponse>, Status> {
        let r = request.get_ref();
        let (thread_id, page) = (
            validate::id("thread_id", &r.thread_id).map(str::to_string),
            validate::page(r.page_size, &r.page_token),
        )
            .all()?;
        let reply_bytes = self.platform.limits.reply_bytes;
        self.as_reader(&request, move |repo, user, _| {
            let thread = member_thread(repo, user, &thread_id)?;
            let mut rows = Vec::new();
            for (cursor, grant) in repo.active_grants_on_thread(&thread.id, page)? {
                let app = if rules::can_read_thread(&grant, &thread) {
                    let partner_name = repo
                        .partner(&grant.partner_id)?
                        .map(|p| p.display_name)
                        .unwrap_or_default();
                    Some(pb::ThreadApp {
                        partner_id: grant.partner_id.clone(),
                        partner_name,
                        feature: grant.feature.clone(),
                        granted_by_me: grant.user_id == user.id,
                        my_messages_redacted: rules::must_redact(
                            &grant,
                            &user.id,
                            Some(user.hide_from_others_apps),
                        ),
                    })
                } else {
                    None
                };
                rows.push((cursor, app));
            }
            let (apps, next_page_token) =
                validate::fit_page_where(rows, page, reply_bytes, |app| app);
            Ok(pb::ListThreadAppsResponse {
                apps,
                next_page_token,
            })
        })
        .await
    }

    async fn set_privacy(
        &self,
        request: Request<pb::SetPrivacyRequest>,
    ) -> Result<Response<pb::SetPrivacyResponse>, Status> {
        let change = PrivacyChange {
            hide_from_others_apps: request.get_ref().hide_from_others_apps,
            name_to_friends_apps: request.get_ref().show_name_to_friends_apps,
        };
        self.as_user(&request, move |repo, user, _| {
            repo.set_privacy(&user.id, change)?;
            let user = repo
                .user_by_id(&user.id)?
                .ok_or_else(|| ApiError::Storage("user vanished".into()))?;
            Ok(pb::SetPrivacyResponse {
                hide_from_others_apps: user.hide_from_others_apps,
                show_name_to_friends_apps: user.name_to_friends_apps,
            })
        })
        .await
    }
}
