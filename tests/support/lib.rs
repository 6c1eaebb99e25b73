//! Shared test support: a platform started in-process on 127.0.0.1 port 0 with real TLS,
//! certificates made with rcgen at test time, authenticated clients for each surface, and
//! a seeded scenario (partners, users, friendships, a thread) that tests build on.

use consent_core::clock::Clock;
use consent_proto::platform::v1 as pb;
use consent_store::Store;
use consent_tls::pki::{DevPki, IssuedCertificate};
use database::Database;
use pb::account_client::AccountClient;
use pb::consent_client::ConsentClient;
use pb::messaging_client::MessagingClient;
use pb::partner_admin_client::PartnerAdminClient;
use platform_svc::config::PlatformConfig;
use platform_svc::server::{BoundAddrs, BoundPlatform};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

pub mod browser;
pub mod compose;
pub mod database;
pub mod outside;
pub mod postgres;
pub mod processes;
pub mod races;
pub mod raw_h2;
pub mod reflection;
pub mod story;
pub mod telemetry;
pub mod world;

/// Trust domain of test certificates.
pub const TRUST_DOMAIN: &str = "consent.test";
/// Partners in the dev PKI; "rogue" has a certificate but is never registered.
pub const PARTNERS: &[&str] = &["music", "video", "files", "bank", "search", "rogue"];

/// A running platform and everything needed to talk to it.
pub struct TestPlatform {
    /// Where the database and certificates live (shared with its replicas).
    pub dir: Arc<tempfile::TempDir>,
    /// The PKI the platform trusts.
    pub pki: Arc<DevPki>,
    /// Bound addresses.
    pub addrs: BoundAddrs,
    /// The platform's clock (advance it to reach deadlines).
    pub clock: Arc<Clock>,
    /// Re-reads certificates and CRLs, as SIGHUP does for the binary.
    pub reload_tls: Box<dyn Fn() -> Result<(), consent_tls::termination::TlsError> + Send + Sync>,
    /// The platform's store, for tests that must hold up its writer.
    pub store: Arc<dyn Store>,
    /// Where the store keeps its data.
    database: Database,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestPlatform {
    /// Makes a PKI and starts the platform with the default policy.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestPlatform::start`], letting the test adjust the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut PlatformConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let partners: Vec<String> = PARTNERS.iter().map(|p| p.to_string()).collect();
        let pki = DevPki::generate(TRUST_DOMAIN, "ops", &partners).expect("dev pki");
        pki.write_to(dir.path(), None).expect("write pki");
        write_keys(dir.path(), None);
        let database = if postgres::in_use() {
            let url = tokio::task::spawn_blocking(postgres::database)
                .await
                .expect("a PostgreSQL database");
            Database::Postgres(url)
        } else {
            Database::Sqlite(dir.path().join("platform.db"))
        };
        Self::launch(Arc::new(dir), Arc::new(pki), database, adjust).await
    }

    /// Another replica of this platform: the same database, certificates and keys, with
    /// listeners of its own.
    pub async fn replica(&self) -> Self {
        let (dir, pki) = (Arc::clone(&self.dir), Arc::clone(&self.pki));
        Self::launch(dir, pki, self.database.clone(), |_| {}).await
    }

    async fn launch(
        dir: Arc<tempfile::TempDir>,
        pki: Arc<DevPki>,
        database: Database,
        adjust: impl FnOnce(&mut PlatformConfig),
    ) -> Self {
        let mut config =
            PlatformConfig::from_toml(&config_toml(dir.path(), &database)).expect("config");
        adjust(&mut config);
        let clock = Arc::new(Clock::default());
        let bound = BoundPlatform::bind(config, clock.clone())
            .await
            .expect("bind");
        let addrs = bound.addrs().expect("addrs");
        let reload_tls = Box::new(bound.tls_reloader());
        let store = Arc::clone(&bound.platform().store);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            bound
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        TestPlatform {
            dir,
            pki,
            addrs,
            clock,
            reload_tls,
            store,
            database,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The platform's database, to open beside it.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Stops the servers and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }

    /// The certificate of partner `id` in the test PKI.
    pub fn partner_cert(&self, id: &str) -> &IssuedCertificate {
        self.pki.partner(id).expect("partner in pki")
    }

    /// A channel to the platform at `addr` presenting `identity` (or none), trusting the
    /// platform CA.
    pub async fn channel(
        &self,
        addr: SocketAddr,
        identity: Option<&IssuedCertificate>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pki.platform_ca.cert_pem()))
            .domain_name("localhost");
        if let Some(cert) = identity {
            tls = tls.identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem));
        }
        Channel::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(tls)?
            .connect()
            .await
    }

    /// The operator's admin client.
    pub async fn operator(&self) -> PartnerAdminClient<Channel> {
        PartnerAdminClient::new(
            self.channel(self.addrs.operator, Some(&self.pki.operator))
                .await
                .expect("operator channel"),
        )
    }

    /// The audit records from the first on, as the operator exports them (at most 1,000).
    pub async fn audit_records(&self) -> Vec<pb::AuditRecord> {
        self.operator()
            .await
            .export_audit(pb::ExportAuditRequest::default())
            .await
            .expect("audit export")
            .into_inner()
            .records
    }

    /// A partner's messaging and consent clients over one mTLS channel.
    pub async fn partner(&self, id: &str) -> Partner {
        let channel = self
            .channel(self.addrs.partner, Some(self.partner_cert(id)))
            .await
            .expect("partner channel");
        Partner {
            messaging: MessagingClient::new(channel.clone()),
            consent: ConsentClient::new(channel),
            shown: self.shown_to(id),
        }
    }

    /// The platform's own client, server-authenticated TLS only.
    pub async fn account(&self) -> AccountClient<Channel> {
        AccountClient::new(
            self.channel(self.addrs.user, None)
                .await
                .expect("user channel"),
        )
    }
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn config_toml(dir: &Path, database: &Database) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"
trust_domain = "{TRUST_DOMAIN}"
database = "{db}"
audit_key = "{audit_key}"
pseudonym_key = "{pseudonym_key}"
[listen]
partner = "127.0.0.1:0"
operator = "127.0.0.1:0"
user = "127.0.0.1:0"
web = "127.0.0.1:0"
[tls]
cert = "{cert}"
key = "{key}"
partner_ca = "{ca}"
operator_ca = "{ca}"
crls = ["{crl}"]
[policy]
sweep_interval_secs = 3600
"#,
        db = database.setting(),
        audit_key = p("audit.key"),
        pseudonym_key = p("pseudonym.key"),
        cert = p("platform.pem"),
        key = p("platform-key.pem"),
        ca = p("ca.pem"),
        crl = p("crl.pem"),
    )
}

/// A partner's clients.
pub struct Partner {
    /// Messaging surface.
    pub messaging: MessagingClient<Channel>,
    /// Consent surface.
    pub consent: ConsentClient<Channel>,
    /// What the platform shows this partner: its ids for threads and people.
    pub shown: ShownTo,
}

impl Partner {
    /// Its grant events from the first on, then live: the stream, once opened.
    pub async fn grant_events(&mut self) -> Result<tonic::Streaming<pb::GrantEvent>, Status> {
        self.consent
            .watch_grant_events(pb::WatchGrantEventsRequest { after_sequence: 0 })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Attests that it deleted what it held through the ended grant `grant_id`.
    pub async fn attest_deletion(&mut self, grant_id: &str) -> Result<pb::Grant, Status> {
        let request = pb::AttestDeletionRequest {
            grant_id: grant_id.into(),
        };
        self.consent
            .attest_deletion(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Lists the threads the grant behind `token` covers, first page.
    pub async fn list_threads(&mut self, token: &str) -> Result<pb::ListThreadsResponse, Status> {
        self.messaging
            .list_threads(bearer(pb::ListThreadsRequest::default(), token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Lists the first page of a thread's messages with the grant behind `token`.
    pub async fn list_messages(
        &mut self,
        thread_id: &str,
        token: &str,
    ) -> Result<pb::ListMessagesResponse, Status> {
        let request = pb::ListMessagesRequest {
            thread_id: thread_id.into(),
            ..Default::default()
        };
        self.messaging
            .list_messages(bearer(request, token))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A request carrying `Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Asserts a status has `code`; returns its rich details.
#[track_caller]
fn details_of(status: &Status, code: Code) -> tonic_types::ErrorDetails {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    status.get_error_details()
}

/// Asserts a status has `code` and, in its `ErrorInfo`, `reason` in `domain`.
#[track_caller]
fn assert_refused_in(status: &Status, code: Code, reason: &str, domain: &str) {
    let details = details_of(status, code);
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "unexpected reason in {status:?}");
    assert_eq!(info.domain, domain, "{status:?}");
}

/// Asserts a refusal of the platform: `code` and, in its `ErrorInfo`, `reason`.
#[track_caller]
pub fn assert_refused(status: &Status, code: Code, reason: &str) {
    assert_refused_in(status, code, reason, "consent.platform");
}

/// Asserts a refusal of a partner service itself: `code` and, in its `ErrorInfo`,
/// `reason`.
#[track_caller]
pub fn assert_partner_refused(status: &Status, code: Code, reason: &str) {
    assert_refused_in(status, code, reason, "consent.partner");
}

/// Asserts `NOT_FOUND` whose `ResourceInfo` names a `resource_type` (`thread`, `partner`…).
#[track_caller]
pub fn assert_not_found(status: &Status, resource_type: &str) {
    let details = details_of(status, Code::NotFound);
    let info = details
        .resource_info()
        .unwrap_or_else(|| panic!("no ResourceInfo in {status:?}"));
    assert_eq!(info.resource_type, resource_type, "{status:?}");
}

/// The fields an `INVALID_ARGUMENT` status's `BadRequest` names, in order.
#[track_caller]
fn invalid_fields(status: &Status) -> Vec<String> {
    details_of(status, Code::InvalidArgument)
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"))
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// Asserts `INVALID_ARGUMENT` whose `BadRequest` names exactly `fields`, in order.
#[track_caller]
pub fn assert_invalid_fields(status: &Status, fields: &[&str]) {
    assert_eq!(invalid_fields(status), fields, "{status:?}");
}

/// Asserts `INVALID_ARGUMENT` with a field violation naming `field`.
#[track_caller]
pub fn assert_invalid_field(status: &Status, field: &str) {
    assert!(
        invalid_fields(status).iter().any(|named| named == field),
        "no violation for {field} in {status:?}"
    );
}

fn scopes(list: &[pb::Scope]) -> Vec<i32> {
    list.iter().map(|s| *s as i32).collect()
}

/// A signed-in user.
#[derive(Clone, Debug)]
pub struct User {
    /// Account name.
    pub name: String,
    /// User id.
    pub id: String,
    /// Session token.
    pub session: String,
}

/// The seeded world most tests start from.
pub struct Scenario {
    /// The platform.
    pub platform: TestPlatform,
    /// alice: the user who connects apps.
    pub alice: User,
    /// bob: alice's friend.
    pub bob: User,
    /// carol: alice's friend who opts out of others' apps.
    pub carol: User,
    /// A thread alice started on the platform with bob and carol, with one message from
    /// before any grant.
    pub family_thread: String,
    /// The message alice wrote there before any grant.
    pub old_message: String,
}

/// The redirect URI registered for partner `id`.
pub fn redirect_uri(id: &str) -> String {
    format!("https://{id}.example/callback")
}

/// music: read, write, delete on threads it starts, tracks; video: write + friends.read,
/// videos; files: write, folders; bank: write, receipts; search: friends.read only.
pub async fn register_partners(platform: &TestPlatform) {
    use pb::Scope::*;
    let mut operator = platform.operator().await;
    let feature = |name: &str, list: &[pb::Scope]| pb::Feature {
        name: name.into(),
        description: format!("the {name} feature"),
        scopes: scopes(list),
        retired: false,
        card_kinds: match name {
            "share-tracks" => vec![pb::CardKind::Track as i32],
            "recommend" => vec![pb::CardKind::Video as i32],
            "receipts" => vec![pb::CardKind::Receipt as i32],
            "share-folders" => vec![pb::CardKind::Folder as i32],
            _ => Vec::new(),
        },
    };
    for (id, name, allowed, features) in [
        (
            "music",
            "Music App",
            vec![ThreadsRead, MessagesRead, MessagesWrite, MessagesDelete],
            vec![
                feature(
                    "share-tracks",
                    &[ThreadsRead, MessagesRead, MessagesWrite, MessagesDelete],
                ),
                feature("listening-party", &[MessagesRead]),
            ],
        ),
        (
            "video",
            "Video App",
            vec![MessagesWrite, FriendsRead],
            vec![feature("recommend", &[MessagesWrite, FriendsRead])],
        ),
        (
            "files",
            "Files",
            vec![MessagesWrite],
            vec![feature("share-folders", &[MessagesWrite])],
        ),
        (
            "bank",
            "Bank",
            vec![MessagesWrite],
            vec![feature("receipts", &[MessagesWrite])],
        ),
        (
            "search",
            "People Search",
            vec![FriendsRead],
            vec![feature("people-search", &[FriendsRead])],
        ),
    ] {
        operator
            .register_partner(pb::RegisterPartnerRequest {
                partner_id: id.into(),
                display_name: name.into(),
                allowed_scopes: scopes(&allowed),
                features,
                redirect_uris: vec![redirect_uri(id)],
            })
            .await
            .expect("register partner");
    }
}

impl Scenario {
    /// Starts a platform, registers the partners and seeds users and a thread.
    pub async fn new() -> Self {
        Self::with_platform(TestPlatform::start().await).await
    }

    /// Seeds `platform`.
    pub async fn with_platform(platform: TestPlatform) -> Self {
        register_partners(&platform).await;
        let mut account = platform.account().await;
        let family = seed_family(&mut account).await;
        Scenario {
            platform,
            alice: family.alice,
            bob: family.bob,
            carol: family.carol,
            family_thread: family.thread_id,
            old_message: family.first_message,
        }
    }

    /// `partner` asks `user` for `feature` (and for `thread_ids`, by the partner's ids for
    /// them); the user approves with `approve`; the partner exchanges the request. Returns
    /// the grant token and grant.
    pub async fn grant(
        &self,
        partner: &mut Partner,
        user: &User,
        feature: &str,
        coverage: pb::ThreadCoverage,
        thread_ids: Vec<String>,
        approve: pb::ApproveRequestRequest,
    ) -> (String, pb::Grant) {
        let request = partner
            .consent
            .request_access(pb::RequestAccessRequest {
                binding_message: "1234-5678".into(),
                account_label: "the test account".into(),
                user_name: user.name.clone(),
                feature: feature.into(),
                coverage: coverage as i32,
                thread_ids: thread_ids.iter().map(|t| partner.shown.thread(t)).collect(),
                include_history: true,
                purpose: "to test".into(),
            })
            .await
            .expect("request access")
            .into_inner();
        let mut account = self.platform.account().await;
        account
            .approve_request(bearer(
                pb::ApproveRequestRequest {
                    request_id: request.request_id.clone(),
                    ..approve
                },
                &user.session,
            ))
            .await
            .expect("approve");
        let exchanged = partner
            .consent
            .exchange_request(pb::ExchangeRequestRequest {
                request_id: request.request_id,
            })
            .await
            .expect("exchange")
            .into_inner();
        assert!(exchanged.grant_token.starts_with("pgt_"));
        (exchanged.grant_token, exchanged.grant.expect("grant"))
    }

    /// A grant of `partner`'s `feature` to `user` on the family thread alone, approved as
    /// asked.
    pub async fn family_grant(
        &self,
        partner: &mut Partner,
        user: &User,
        feature: &str,
    ) -> (String, pb::Grant) {
        let family = vec![self.family_thread.clone()];
        let listed = pb::ThreadCoverage::ListedThreads;
        self.grant(partner, user, feature, listed, family, Default::default())
            .await
    }

    /// A grant of music's share-tracks on threads music starts, for alice.
    pub async fn music_grant(&self, music: &mut Partner) -> (String, pb::Grant) {
        self.grant(
            music,
            &self.alice,
            "share-tracks",
            pb::ThreadCoverage::PartnerStartedThreads,
            vec![],
            Default::default(),
        )
        .await
    }
}

/// Signs up `name` (password "correct horse") and signs in.
pub async fn sign_up(account: &mut AccountClient<Channel>, name: &str) -> User {
    let password = "correct horse".to_string();
    account
        .sign_up(pb::SignUpRequest {
            user_name: name.into(),
            display_name: name.to_uppercase(),
            password: password.clone(),
        })
        .await
        .expect("sign up");
    let session = account
        .sign_in(pb::SignInRequest {
            user_name: name.into(),
            password,
        })
        .await
        .expect("sign in")
        .into_inner();
    User {
        name: name.into(),
        id: session.user_id,
        session: session.session_token,
    }
}

/// Writes new keys to `dir/audit.key` and `dir/pseudonym.key`, owned by `owner` if given.
pub fn write_keys(dir: &Path, owner: Option<(u32, u32)>) {
    for name in ["audit.key", "pseudonym.key"] {
        let key = consent_core::secret::SecretKey::generate().to_hex();
        consent_tls::pki::write_private(&dir.join(name), &key, owner).expect("key file");
    }
}

/// What a platform shows one partner of people, threads and messages, computed with the
/// platform's pseudonym key: how a test names things as that partner would, and checks
/// what the partner was given.
pub struct ShownTo {
    key: consent_core::secret::SecretKey,
    partner: String,
}

impl ShownTo {
    /// For `partner`, under the pseudonym key in `key_dir/pseudonym.key`.
    pub fn new(key_dir: &Path, partner: &str) -> Self {
        let text = std::fs::read_to_string(key_dir.join("pseudonym.key")).expect("pseudonym key");
        ShownTo {
            key: consent_core::secret::SecretKey::from_hex(&text).expect("pseudonym key"),
            partner: partner.to_string(),
        }
    }

    fn view(&self) -> consent_core::partner_view::PartnerView<'_> {
        consent_core::partner_view::PartnerView::new(&self.key, &self.partner)
    }

    /// The partner's handle for the user `user_id`.
    pub fn handle(&self, user_id: &str) -> String {
        self.view().handle(user_id)
    }

    /// The partner's id for the thread `thread_id`.
    pub fn thread(&self, thread_id: &str) -> String {
        self.view().thread(thread_id)
    }

    /// The partner's id for the message `message_id`.
    pub fn message(&self, message_id: &str) -> String {
        self.view().message(message_id)
    }

    /// The thread the partner's id `shown` stands for.
    pub fn thread_named(&self, shown: &str) -> Option<String> {
        self.view().thread_named(shown)
    }

    /// The message the partner's id `shown` stands for.
    pub fn message_named(&self, shown: &str) -> Option<String> {
        self.view().message_named(shown)
    }
}

impl TestPlatform {
    /// What this platform shows partner `id`.
    pub fn shown_to(&self, id: &str) -> ShownTo {
        ShownTo::new(self.dir.path(), id)
    }
}

/// Makes `a` and `b` friends: `a` asks, `b` adds `a` back.
pub async fn befriend(account: &mut AccountClient<Channel>, a: &User, b: &User) {
    for (from, to, friends_after) in [(a, b, false), (b, a, true)] {
        let added = account
            .add_friend(bearer(
                pb::AddFriendRequest {
                    user_name: to.name.clone(),
                },
                &from.session,
            ))
            .await
            .expect("add friend")
            .into_inner();
        assert_eq!(
            added.friends, friends_after,
            "{} adds {}",
            from.name, to.name
        );
    }
}

/// Three users and their thread, as most scenarios start.
pub struct Family {
    /// alice, friends with bob and carol.
    pub alice: User,
    /// bob.
    pub bob: User,
    /// carol.
    pub carol: User,
    /// A "family" thread of the three that alice started.
    pub thread_id: String,
    /// alice's first message there, sent before any grant.
    pub first_message: String,
}

/// `owner` starts a thread titled `title` with `others` on the platform; returns its id.
pub async fn create_thread(
    account: &mut AccountClient<Channel>,
    owner: &User,
    others: &[&User],
    title: &str,
) -> String {
    account
        .create_thread(bearer(
            pb::CreateThreadRequest {
                participant_ids: others.iter().map(|u| u.id.clone()).collect(),
                title: title.into(),
            },
            &owner.session,
        ))
        .await
        .expect("create thread")
        .into_inner()
        .thread_id
}

/// `user` revokes their grant `grant_id`.
pub async fn revoke(account: &mut AccountClient<Channel>, user: &User, grant_id: &str) {
    account
        .revoke_grant(bearer(
            pb::RevokeGrantRequest {
                grant_id: grant_id.into(),
            },
            &user.session,
        ))
        .await
        .expect("revoke");
}

/// Signs up alice, bob and carol, befriends them with alice, and starts the family thread
/// with alice's "dinner at 7?".
pub async fn seed_family(account: &mut AccountClient<Channel>) -> Family {
    let alice = sign_up(account, "alice").await;
    let bob = sign_up(account, "bob").await;
    let carol = sign_up(account, "carol").await;
    befriend(account, &alice, &bob).await;
    befriend(account, &alice, &carol).await;
    let thread_id = create_thread(account, &alice, &[&bob, &carol], "family").await;
    let first_message = account
        .send_message(bearer(
            pb::AccountSendMessageRequest {
                thread_id: thread_id.clone(),
                body: "dinner at 7?".into(),
            },
            &alice.session,
        ))
        .await
        .expect("send")
        .into_inner()
        .message_id;
    Family {
        alice,
        bob,
        carol,
        thread_id,
        first_message,
    }
}

/// Whether a client offering only TLS 1.2 (with `identity` as its certificate, if given)
/// completes a handshake with `addr`.
pub async fn tls12_handshake(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("tls 1.2")
    .with_root_certificates(roots_of(ca_pem));
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(localhost(), tcp).await.is_ok()
}

/// The certificate (DER) the server at `addr` presents to a client that offers none,
/// checked against `ca_pem` for the name `localhost`.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls")
    .with_root_certificates(roots_of(ca_pem))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(localhost(), tcp)
        .await
        .expect("handshake");
    let (_, session) = tls.get_ref();
    let chain = session.peer_certificates().expect("a server certificate");
    chain[0].to_vec()
}

/// Trust roots holding the one CA certificate in `ca_pem`.
fn roots_of(ca_pem: &str) -> rustls::RootCertStore {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    roots
}

/// The name every test server's certificate carries.
fn localhost() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("localhost").expect("name")
}
