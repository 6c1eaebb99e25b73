//! Every RPC of the platform on arbitrary requests, through the real handlers and a real
//! SQLite store, as an authenticated partner (with a live grant), user or operator: bad
//! input must end in a status, never a panic. The first byte picks the RPC; the rest is
//! decoded as its request message.
#![no_main]

use consent_proto::platform::v1 as pb;
use libfuzzer_sys::fuzz_target;
use pb::account_server::Account;
use pb::consent_server::Consent;
use pb::messaging_server::Messaging;
use pb::partner_admin_server::PartnerAdmin;
use platform_svc::api::account::AccountService;
use platform_svc::api::admin::AdminService;
use platform_svc::api::consent::ConsentService;
use platform_svc::api::messaging::MessagingService;
use platform_svc::api::{Limits, Platform};
use consent_core::audit::AuditKey;
use consent_core::secret::SecretKey;
use consent_core::clock::Clock;
use platform_svc::config::{Policy, SignInLimits};
use consent_tls::principal::{OperatorName, PartnerId};
use consent_core::model::{
    Coverage, Feature, Grant, GrantState, Partner, Scope, ScopeSet, Thread, User,
};
use consent_core::secret::{GRANT_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, hash_token, new_token};
use consent_store::{SqliteStore, transact};
use prost::Message;
use std::sync::{Arc, OnceLock};
use tonic::Request;

struct World {
    runtime: tokio::runtime::Runtime,
    messaging: MessagingService,
    consent: ConsentService,
    account: AccountService,
    admin: AdminService,
    grant_token: String,
    session_token: String,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let audit_key = AuditKey::generate();
        let store =
            SqliteStore::open(&dir.path().join("fuzz.db"), audit_key.clone()).expect("store");
        let (grant_token, session_token) = (
            new_token(GRANT_TOKEN_PREFIX),
            new_token(SESSION_TOKEN_PREFIX),
        );
        let (grant_hash, session_hash) = (hash_token(&grant_token), hash_token(&session_token));
        transact(&store, move |repo| {
            let all = ScopeSet::of(&Scope::ALL);
            repo.insert_partner(
                &Partner {
                    id: "music".into(),
                    display_name: "Music".into(),
                    allowed_scopes: all,
                    suspended: false,
                    blocked: false,
                    redirect_uris: Vec::new(),
                },
                0,
            )?;
            repo.insert_feature(&Feature {
                partner_id: "music".into(),
                name: "share".into(),
                description: "d".into(),
                scopes: all,
                retired: false,
                card_kinds: vec![consent_core::card::CardKind::Track],
            })?;
            for (id, name) in [("usr_a", "alice"), ("usr_b", "bob")] {
                repo.insert_user(
                    &User {
                        id: id.into(),
                        name: name.into(),
                        display_name: name.into(),
                        password_hash: "x".into(),
                        hide_from_others_apps: false,
                        name_to_friends_apps: false,
                    },
                    0,
                )?;
            }
            repo.add_friendship("usr_a", "usr_b")?;
            repo.insert_thread(&Thread {
                id: "thr_1".into(),
                title: "t".into(),
                started_by_partner: None,
                created_ms: 0,
                participants: vec!["usr_a".into(), "usr_b".into()],
            })?;
            repo.insert_session(&session_hash, "usr_a", i64::MAX)?;
            let grant = Grant {
                id: "grt_1".into(),
                user_id: "usr_a".into(),
                partner_id: "music".into(),
                feature: "share".into(),
                scopes: all,
                coverage: Coverage::All,
                thread_ids: vec![],
                include_history: true,
                created_ms: 0,
                not_after_ms: i64::MAX,
                last_used_ms: Some(i64::MAX / 2),
                state: GrantState::Active,
                ended_ms: None,
                attested_ms: None,
            };
            repo.insert_grant(&grant)?;
            repo.set_grant_token(&grant.id, &grant_hash)
        })
        .expect("seed");
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let platform = Platform::new(
            Arc::new(store),
            Arc::new(Clock::default()),
            Limits::new(&Policy::default(), &Default::default()),
            SecretKey::generate(),
            stopping,
        );
        World {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            messaging: MessagingService::new(platform.clone()),
            consent: ConsentService::new(platform.clone(), 8, "https://localhost:7446"),
            account: AccountService::start(platform.clone(), SignInLimits::default())
                .expect("hasher"),
            admin: AdminService::new(platform, "consent.local".into(), audit_key),
            grant_token,
            session_token,
            _stop: stop,
            _dir: dir,
        }
    })
}

fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn as_partner<T>(message: T, w: &World) -> Request<T> {
    let mut request = with_bearer(message, &w.grant_token);
    request.extensions_mut().insert(PartnerId("music".into()));
    request
}

fn as_operator<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(OperatorName("ops".into()));
    request
}

macro_rules! call {
    ($bytes:expr, $ty:ty, |$m:ident| $call:expr) => {
        if let Ok($m) = <$ty>::decode($bytes) {
            let _ = $call;
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let w = world();
    w.runtime.block_on(async {
        let s = w.session_token.as_str();
        match selector % 33 {
            0 => call!(bytes, pb::ListThreadsRequest, |m| w
                .messaging
                .list_threads(as_partner(m, w))
                .await),
            1 => call!(bytes, pb::ListMessagesRequest, |m| w
                .messaging
                .list_messages(as_partner(m, w))
                .await),
            2 => call!(bytes, pb::GetMessageRequest, |m| w
                .messaging
                .get_message(as_partner(m, w))
                .await),
            3 => call!(bytes, pb::SendMessageRequest, |m| w
                .messaging
                .send_message(as_partner(m, w))
                .await),
            4 => call!(bytes, pb::StartThreadRequest, |m| w
                .messaging
                .start_thread(as_partner(m, w))
                .await),
            5 => call!(bytes, pb::DeleteMessageRequest, |m| w
                .messaging
                .delete_message(as_partner(m, w))
                .await),
            6 => call!(bytes, pb::ListFriendsRequest, |m| w
                .messaging
                .list_friends(as_partner(m, w))
                .await),
            7 => call!(bytes, pb::RequestAccessRequest, |m| w
                .consent
                .request_access(as_partner(m, w))
                .await),
            8 => call!(bytes, pb::ExchangeRequestRequest, |m| w
                .consent
                .exchange_request(as_partner(m, w))
                .await),
            9 => call!(bytes, pb::IntrospectGrantsRequest, |m| w
                .consent
                .introspect_grants(as_partner(m, w))
                .await),
            10 => call!(bytes, pb::ReleaseGrantRequest, |m| w
                .consent
                .release_grant(as_partner(m, w))
                .await),
            11 => call!(bytes, pb::AttestDeletionRequest, |m| w
                .consent
                .attest_deletion(as_partner(m, w))
                .await),
            12 => call!(bytes, pb::AddFriendRequest, |m| w
                .account
                .add_friend(with_bearer(m, s))
                .await),
            13 => call!(bytes, pb::CreateThreadRequest, |m| w
                .account
                .create_thread(with_bearer(m, s))
                .await),
            14 => call!(bytes, pb::AccountSendMessageRequest, |m| w
                .account
                .send_message(with_bearer(m, s))
                .await),
            15 => call!(bytes, pb::ListThreadsRequest, |m| w
                .account
                .list_threads(with_bearer(m, s))
                .await),
            16 => call!(bytes, pb::ListMessagesRequest, |m| w
                .account
                .list_messages(with_bearer(m, s))
                .await),
            17 => call!(bytes, pb::ListPendingRequestsRequest, |m| w
                .account
                .list_pending_requests(with_bearer(m, s))
                .await),
            18 => call!(bytes, pb::ApproveRequestRequest, |m| w
                .account
                .approve_request(with_bearer(m, s))
                .await),
            19 => call!(bytes, pb::DenyRequestRequest, |m| w
                .account
                .deny_request(with_bearer(m, s))
                .await),
            20 => call!(bytes, pb::ListGrantsRequest, |m| w
                .account
                .list_grants(with_bearer(m, s))
                .await),
            21 => call!(bytes, pb::ReadAccessLogRequest, |m| w
                .account
                .read_access_log(with_bearer(m, s))
                .await),
            22 => call!(bytes, pb::ListThreadAppsRequest, |m| w
                .account
                .list_thread_apps(with_bearer(m, s))
                .await),
            23 => call!(bytes, pb::SetPrivacyRequest, |m| w
                .account
                .set_privacy(with_bearer(m, s))
                .await),
            24 => call!(bytes, pb::RegisterPartnerRequest, |m| w
                .admin
                .register_partner(as_operator(m))
                .await),
            25 => call!(bytes, pb::RegisterFeatureRequest, |m| w
                .admin
                .register_feature(as_operator(m))
                .await),
            26 => call!(bytes, pb::GetPartnerRequest, |m| w
                .admin
                .get_partner(as_operator(m))
                .await),
            27 => call!(bytes, pb::AccessReviewRequest, |m| w
                .admin
                .access_review(as_operator(m))
                .await),
            28 => call!(bytes, pb::ExportAuditRequest, |m| w
                .admin
                .export_audit(as_operator(m))
                .await),
            29 => call!(bytes, pb::VerifyAuditRequest, |m| w
                .admin
                .verify_audit(as_operator(m))
                .await),
            30 => call!(bytes, pb::RetireFeatureRequest, |m| w
                .admin
                .retire_feature(as_operator(m))
                .await),
            31 => call!(bytes, pb::RevokeGrantRequest, |m| w
                .account
                .revoke_grant(with_bearer(m, s))
                .await),
            _ => call!(bytes, pb::SuspendPartnerRequest, |m| w
                .admin
                .suspend_partner(as_operator(m))
                .await),
        }
    });
});
