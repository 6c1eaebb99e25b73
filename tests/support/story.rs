//! The story the walkthrough tells, against any running stack: processes on loopback or
//! the compose stack in containers. Every step says what each side did and whether it was
//! allowed or refused, and counts what did not behave as told.

use crate::browser::{Browser, Page};
use crate::{User, bearer};
use consent_core::model::Scope;
use consent_proto::partner::v1 as app;
use consent_proto::platform::v1 as pb;
use partner_svc::config::PartnerConfig;
use pb::account_client::AccountClient;
use pb::partner_admin_client::PartnerAdminClient;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::processes::{PROFILES, WorkDir, profile};
use crate::world::{share_in_thread, share_with_friend, with_card};
use pb::card::Kind;

/// What a partner holds for a user, read from its own store; `Err` when the store could not
/// be read, which tells nothing about what it holds.
pub trait PartnerData {
    /// The user's grant token, if the partner still holds one.
    fn token(&self, user: &str) -> Result<Option<String>, String>;
    /// How many of the user's messages the partner caches.
    fn cached_messages(&self, user: &str) -> Result<i64, String>;
}

/// A partner store file on this machine.
pub struct LocalStore(pub std::path::PathBuf);

impl PartnerData for LocalStore {
    fn token(&self, user: &str) -> Result<Option<String>, String> {
        let db = rusqlite::Connection::open(&self.0).map_err(|e| e.to_string())?;
        token_of(&db, user).map_err(|e| e.to_string())
    }
    fn cached_messages(&self, user: &str) -> Result<i64, String> {
        let db = rusqlite::Connection::open(&self.0).map_err(|e| e.to_string())?;
        cached_messages_of(&db, user).map_err(|e| e.to_string())
    }
}

/// `user`'s grant token in a partner's store, if it holds one (a user it never connected
/// has no row).
pub fn token_of(db: &rusqlite::Connection, user: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    let token = db
        .query_row(
            "SELECT token FROM connections WHERE user_name = ?1",
            [user],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?;
    Ok(token.flatten())
}

/// How many of `user`'s messages a partner's store caches.
pub fn cached_messages_of(db: &rusqlite::Connection, user: &str) -> rusqlite::Result<i64> {
    db.query_row(
        "SELECT COUNT(*) FROM cached_messages WHERE user_name = ?1",
        [user],
        |r| r.get(0),
    )
}

/// Where the running stack is.
pub struct Stack<'a> {
    /// The PKI, for channels.
    pub work: &'a WorkDir,
    /// The platform's partner listener.
    pub partner: SocketAddr,
    /// The platform's operator listener.
    pub operator: SocketAddr,
    /// The platform's user listener.
    pub user: SocketAddr,
    /// The origin of the platform's web pages.
    pub web_origin: String,
    /// Each partner.
    pub partners: Vec<StackPartner<'a>>,
}

/// A partner of the running stack.
pub struct StackPartner<'a> {
    /// Its profile id.
    pub id: &'static str,
    /// Its API address.
    pub api: SocketAddr,
    /// The origin of its web app.
    pub web_origin: String,
    /// Its store.
    pub data: Box<dyn PartnerData + 'a>,
}

impl Stack<'_> {
    fn partner(&self, id: &str) -> &StackPartner<'_> {
        self.partners
            .iter()
            .find(|p| p.id == id)
            .expect("partner in stack")
    }
}

/// Registers every shipped profile with the platform, as the operator, each with its
/// redirect URI from `redirect_uris` (profile id, URI).
pub async fn register_profiles(
    story: &mut Story,
    operator: &mut PartnerAdminClient<Channel>,
    redirect_uris: &[(&str, String)],
) {
    register(story, operator, redirect_uris).await
}

/// Counts what behaved as told and what did not.
#[derive(Default)]
pub struct Story {
    /// Steps told.
    pub steps: u32,
    /// Steps that did not behave as told.
    pub failures: u32,
}

impl Story {
    /// Starts an act.
    pub fn act(&self, title: &str) {
        println!("\n== {title}");
    }
    /// Prints what a side did.
    pub fn note(&self, text: &str) {
        println!("   {text}");
    }
    /// A step that must succeed.
    pub fn check<T>(&mut self, what: &str, result: Result<T, Status>) -> Option<T> {
        self.steps += 1;
        match result {
            Ok(value) => {
                println!("   ok       {what}");
                Some(value)
            }
            Err(status) => {
                self.failures += 1;
                println!(
                    "   FAILED   {what}: {:?} {}",
                    status.code(),
                    status.message()
                );
                None
            }
        }
    }
    /// A fact that must hold.
    pub fn expect(&mut self, what: &str, holds: bool) {
        self.check(
            what,
            if holds {
                Ok(())
            } else {
                Err(Status::unknown("did not hold"))
            },
        );
    }
    /// A step that must be refused with `INVALID_ARGUMENT` whose `BadRequest` names `field`.
    pub fn invalid<T>(&mut self, what: &str, result: Result<T, Status>, field: &str) {
        self.steps += 1;
        let named = result.as_ref().err().is_some_and(|status| {
            status.code() == Code::InvalidArgument
                && status
                    .get_error_details()
                    .bad_request()
                    .is_some_and(|b| b.field_violations.iter().any(|v| v.field == field))
        });
        if named {
            println!("   refused  {what}: InvalidArgument naming {field}");
        } else {
            self.failures += 1;
            println!(
                "   FAILED   {what}: expected InvalidArgument naming {field}, got {result:?}",
                result = result.err()
            );
        }
    }

    /// A step that must be refused with `code` and `reason`.
    pub fn refused<T>(&mut self, what: &str, result: Result<T, Status>, code: Code, reason: &str) {
        self.steps += 1;
        match result {
            Err(status) => {
                let got = status
                    .get_error_details()
                    .error_info()
                    .map(|i| i.reason.clone())
                    .unwrap_or_default();
                if status.code() == code && got == reason {
                    println!("   refused  {what}: {code:?} {reason}");
                } else {
                    self.failures += 1;
                    println!(
                        "   FAILED   {what}: expected {code:?} {reason}, got {:?} {got} ({})",
                        status.code(),
                        status.message()
                    );
                }
            }
            Ok(_) => {
                self.failures += 1;
                println!("   FAILED   {what}: expected {code:?} {reason}, but it was allowed");
            }
        }
    }
}

/// alice's friends, as a partner's front end asks for them.
fn alices_friends() -> app::ListFriendsRequest {
    app::ListFriendsRequest {
        user_name: "alice".into(),
        ..Default::default()
    }
}

/// alice's inbox in a thread, as a partner's front end asks for it.
fn alices_inbox(thread_id: &str) -> app::InboxRequest {
    app::InboxRequest {
        user_name: "alice".into(),
        thread_id: thread_id.into(),
        ..Default::default()
    }
}

/// A transfer receipt of `cents` euro cents.
fn receipt_card(cents: i64) -> Kind {
    Kind::Receipt(pb::TransferReceipt {
        amount: Some(pb::Money {
            currency: "EUR".into(),
            minor_units: cents,
        }),
        reference: "TX-2026-1204".into(),
        date: Some(consent_core::clock::timestamp(1_764_806_400_000)),
    })
}

fn scope_values(names: &[String]) -> Vec<i32> {
    names
        .iter()
        .filter_map(|n| Scope::ALL.into_iter().find(|s| s.name() == n))
        .map(|s| s.to_proto() as i32)
        .collect()
}

fn names(scopes: &[i32]) -> String {
    scopes
        .iter()
        .filter_map(|s| Scope::from_proto(*s))
        .map(Scope::name)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn register(
    story: &mut Story,
    operator: &mut PartnerAdminClient<Channel>,
    redirect_uris: &[(&str, String)],
) {
    for id in PROFILES {
        let config =
            PartnerConfig::from_toml(&std::fs::read_to_string(profile(id)).expect("profile"))
                .expect("profile toml");
        let scopes = scope_values(&config.feature.scopes);
        let mut features = vec![pb::Feature {
            name: config.feature.name.clone(),
            description: config.feature.purpose.clone(),
            scopes: scopes.clone(),
            retired: false,
            card_kinds: config.feature.cards.iter().map(|k| *k as i32).collect(),
        }];
        if *id == "music" {
            features.push(pb::Feature {
                name: "listening-party".into(),
                description: "Show what friends say in a chosen thread during a listening party"
                    .into(),
                scopes: vec![pb::Scope::MessagesRead as i32],
                retired: false,
                card_kinds: Vec::new(),
            });
        }
        let request = pb::RegisterPartnerRequest {
            partner_id: config.partner_id.clone(),
            display_name: config.display_name.clone(),
            allowed_scopes: scopes,
            features,
            redirect_uris: redirect_uris
                .iter()
                .filter(|(profile, _)| profile == id)
                .map(|(_, uri)| uri.clone())
                .collect(),
        };
        story.check(
            &format!(
                "operator registers {} ({}) allowed: {}",
                config.display_name,
                id,
                config.feature.scopes.join(", ")
            ),
            operator.register_partner(request).await,
        );
    }
}

/// The user approves the pending request of `partner_name`, optionally narrowing scopes.
async fn approve(
    story: &mut Story,
    account: &mut AccountClient<Channel>,
    user: &User,
    partner_name: &str,
    scopes: Vec<i32>,
    thread_ids: Vec<String>,
) -> Option<pb::ConsentReceipt> {
    let pending = account
        .list_pending_requests(bearer(
            pb::ListPendingRequestsRequest::default(),
            &user.session,
        ))
        .await
        .ok()?
        .into_inner();
    let request = pending
        .requests
        .into_iter()
        .find(|r| r.partner_name == partner_name)?;
    story.note(&format!(
        "[platform app] {} sees: {} asks for '{}' ({}) — {}",
        user.name,
        partner_name,
        request.feature,
        names(&request.scopes),
        request.purpose
    ));
    let receipt = story.check(
        &format!("{} approves {partner_name}", user.name),
        account
            .approve_request(bearer(
                pb::ApproveRequestRequest {
                    request_id: request.request_id,
                    scopes,
                    thread_ids,
                    ..Default::default()
                },
                &user.session,
            ))
            .await
            .map(|r| r.into_inner()),
    )?;
    story.note(&format!("[receipt] {}", receipt.summary));
    if !receipt.scopes_refused.is_empty() {
        story.note(&format!(
            "[receipt] refused by {}: {}",
            user.name,
            names(&receipt.scopes_refused)
        ));
    }
    Some(receipt)
}

/// The binding message of `user`'s pending request from `partner_name`.
async fn pending_binding(
    account: &mut AccountClient<Channel>,
    user: &User,
    partner_name: &str,
) -> String {
    account
        .list_pending_requests(bearer(
            pb::ListPendingRequestsRequest::default(),
            &user.session,
        ))
        .await
        .map(|r| r.into_inner().requests)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.partner_name == partner_name)
        .map(|r| r.binding_message)
        .unwrap_or_default()
}

async fn connect(
    story: &mut Story,
    partner: &mut app::partner_app_client::PartnerAppClient<Channel>,
    account: &mut AccountClient<Channel>,
    user: &User,
    partner_name: &str,
    picked_threads: Vec<String>,
    scopes: Vec<i32>,
) -> Vec<String> {
    let asked = partner
        .connect_user(app::ConnectUserRequest {
            user_name: user.name.clone(),
            thread_ids: Vec::new(),
        })
        .await
        .map(|r| r.into_inner());
    let binding = story
        .check(
            &format!("{partner_name} asks {} for access", user.name),
            asked,
        )
        .map(|asked| {
            story.note(&format!("[{partner_name}] {}", asked.instructions));
            asked.binding_message
        })
        .unwrap_or_default();
    let shown = pending_binding(account, user, partner_name).await;
    story.note(&format!(
        "[platform app] {} sees the code {shown} with {partner_name}'s request",
        user.name
    ));
    story.expect(
        &format!(
            "the platform's app shows the code {partner_name} showed {}",
            user.name
        ),
        !binding.is_empty() && shown == binding,
    );
    approve(story, account, user, partner_name, scopes, picked_threads).await;
    let status = partner
        .connection_status(app::ConnectionStatusRequest {
            user_name: user.name.clone(),
        })
        .await
        .map(|r| r.into_inner());
    if let Some(status) = story.check(
        &format!("{partner_name} collects the grant for {}", user.name),
        status,
    ) {
        story.note(&format!(
            "[{partner_name}] {}: {} with {}",
            user.name,
            status.status,
            status.scopes.join(", ")
        ));
        story.expect(
            &format!("{partner_name} is connected for {}", user.name),
            status.status == "CONNECTED",
        );
        return status.thread_ids;
    }
    Vec::new()
}

/// A page that must have come back with `status`.
fn page_status(page: &Page, status: u16) -> Result<(), Status> {
    if page.status == status {
        Ok(())
    } else {
        Err(Status::unknown(format!(
            "{} answered {} instead of {status}: {}",
            page.url,
            page.status,
            page.body.chars().take(300).collect::<String>()
        )))
    }
}

/// The values of every checkbox `name` on a page.
fn checkbox_values(page: &Page, name: &str) -> Vec<String> {
    let marker = format!("name=\"{name}\" value=\"");
    page.body
        .match_indices(&marker)
        .filter_map(|(at, _)| {
            let start = at + marker.len();
            let end = page.body[start..].find('"')? + start;
            Some(page.body[start..end].to_string())
        })
        .collect()
}

/// The query parameter `name` of a URL.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The music app's backend asks `user` for its listening party through the code flow with
/// its listed thread; the user allows it on the consent page (the thread offered ticked);
/// the backend takes the code from the answer and exchanges it with its verifier. Returns
/// the grant token.
async fn party_grant(
    story: &mut Story,
    stack: &Stack<'_>,
    consent: &mut pb::consent_client::ConsentClient<Channel>,
    party: pb::PushAuthorizationRequest,
    user: &User,
    verifier: &str,
) -> Option<String> {
    // The platform's page shows the user's own id for the thread the app named.
    let thread = party
        .thread_ids
        .first()
        .and_then(|shown| stack.work.shown_to("music").thread_named(shown))
        .unwrap_or_default();
    let pushed = story.check(
        "music app pushes a request for its listening party on the family thread",
        consent
            .push_authorization(party)
            .await
            .map(tonic::Response::into_inner),
    )?;
    let browser = Browser::for_work(stack.work, stack.web_origin.clone());
    browser.sign_in(&user.name).await;
    let consent_page = browser
        .follow(browser.get(&pushed.authorize_url).await)
        .await;
    story.expect(
        &format!(
            "[platform page] {} sees the listed thread offered, ticked",
            user.name
        ),
        consent_page
            .body
            .contains(&format!("value=\"{thread}\" checked")),
    );
    let csrf = consent_page.field("csrf").unwrap_or_default();
    let form = [
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
        ("scope", "messages.read"),
        ("thread", thread.as_str()),
    ];
    let answer = browser.post(&consent_page.url, &form).await;
    let location = answer.location.clone().unwrap_or_default();
    let code = query_param(&location, "code").unwrap_or_default();
    story.expect(
        &format!("[platform page] {} allows: the answer carries the code, the state and the platform as iss", user.name),
        !code.is_empty()
            && query_param(&location, "state").as_deref() == Some("party-1")
            && query_param(&location, "iss").as_deref() == Some(stack.web_origin.as_str()),
    );
    let exchanged = story.check(
        "music app exchanges the code with its verifier",
        consent
            .exchange_code(pb::ExchangeCodeRequest {
                code,
                code_verifier: verifier.into(),
                redirect_uri: location.split('?').next().unwrap_or_default().into(),
            })
            .await
            .map(tonic::Response::into_inner),
    )?;
    Some(exchanged.grant_token)
}

/// `partner` presents `code` with a verifier it made up.
async fn exchange_without_verifier(
    stack: &Stack<'_>,
    partner: &str,
    code: &str,
    redirect_uri: &str,
) -> Result<pb::ExchangeRequestResponse, Status> {
    let channel = stack
        .work
        .channel(stack.partner, Some(&format!("partner-{partner}")))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    pb::consent_client::ConsentClient::new(channel)
        .exchange_code(pb::ExchangeCodeRequest {
            code: code.into(),
            code_verifier: "an-attacker-does-not-know-the-verifier-0000000".into(),
            redirect_uri: redirect_uri.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `user` connects the app of `partner` from their browser: signs up on the app's own site,
/// presses "Connect with the platform", signs in on the platform's page (not the app's),
/// leaves every permission ticked but `untick`, and lands back on the app, connected. With
/// `try_stealing`, the code in the browser's address bar is first tried by someone else:
/// another partner, and this partner's certificate without its PKCE verifier.
async fn connect_in_browser(
    story: &mut Story,
    stack: &Stack<'_>,
    (partner, partner_name): (&str, &str),
    user: &User,
    untick: &[&str],
    try_stealing: bool,
) -> Option<()> {
    let app = stack.partner(partner).web_origin.clone();
    let browser = Browser::for_work(stack.work, app.clone());
    let who = &user.name;
    let home = browser.get(&format!("{app}/")).await;
    let csrf = home.field("csrf").unwrap_or_default();
    let signed_up = browser
        .post(
            &format!("{app}/sign-up"),
            &[
                ("csrf", &csrf),
                ("name", who),
                ("password", "correct horse"),
            ],
        )
        .await;
    story.check(
        &format!("[{partner_name} site] {who} signs up with the app's own account"),
        page_status(&signed_up, 303),
    )?;
    let home = browser.follow(signed_up).await;
    let csrf = home.field("csrf").unwrap_or_default();
    let to_platform = browser
        .post(&format!("{app}/connect"), &[("csrf", &csrf)])
        .await;
    story.check(
        &format!("[{partner_name} site] {who} presses 'Connect with the platform': the app pushes its request and sends the browser to the platform"),
        page_status(&to_platform, 303),
    )?;
    let sign_in = browser.follow(to_platform).await;
    let form: Vec<(&str, String)> = vec![
        ("csrf", sign_in.field("csrf").unwrap_or_default()),
        ("next", sign_in.field("next").unwrap_or_default()),
        ("user_name", who.clone()),
        ("password", "correct horse".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let signed_in = browser.post(&sign_in.resolve("/sign-in"), &form).await;
    story.check(
        &format!("[platform page] {who} signs in on the platform's own page, never on the app's"),
        page_status(&signed_in, 303),
    )?;
    let consent = browser.follow(signed_in).await;
    story.check(
        &format!("[platform page] the consent page shows {partner_name}'s request"),
        page_status(&consent, 200),
    )?;
    let offered = checkbox_values(&consent, "scope");
    story.note(&format!(
        "[platform page] {partner_name} asks to: {}",
        offered.join(", ")
    ));
    let csrf = consent.field("csrf").unwrap_or_default();
    let mut form = vec![("csrf", csrf.as_str()), ("decision", "approve")];
    form.extend(
        offered
            .iter()
            .filter(|s| !untick.contains(&s.as_str()))
            .map(|s| ("scope", s.as_str())),
    );
    let answer = browser.post(&consent.url, &form).await;
    let unticked = if untick.is_empty() {
        String::new()
    } else {
        format!(" (unticks {})", untick.join(", "))
    };
    let location = answer.location.clone().unwrap_or_default();
    story.expect(
        &format!("[platform page] {who} allows{unticked}: back to the app with a code, its state and the platform as iss"),
        answer.status == 303
            && location.starts_with(&format!("{app}/callback?"))
            && query_param(&location, "code").is_some()
            && query_param(&location, "state").is_some()
            && query_param(&location, "iss").as_deref() == Some(stack.web_origin.as_str()),
    );
    if try_stealing {
        steal_code(story, stack, (partner, partner_name), who, &answer).await;
    }
    let landed = browser.follow(answer).await;
    story.expect(
        &format!(
            "[{partner_name} site] the app exchanged the code with its verifier: {who} is connected"
        ),
        landed.body.contains("<strong>CONNECTED</strong>"),
    );
    Some(())
}

/// Others present the code of `answer` (the redirect to the app) before the app does.
async fn steal_code(
    story: &mut Story,
    stack: &Stack<'_>,
    (partner, partner_name): (&str, &str),
    who: &str,
    answer: &Page,
) {
    let code = answer
        .location
        .as_deref()
        .and_then(|l| query_param(l, "code"))
        .unwrap_or_default();
    let redirect_uri = format!("{}/callback", stack.partner(partner).web_origin);
    let other = if partner == "video" { "music" } else { "video" };
    story.refused(
        &format!("{other} presents the code it saw in {who}'s address bar"),
        exchange_without_verifier(stack, other, &code, &redirect_uri).await,
        Code::PermissionDenied,
        "CODE_INVALID",
    );
    story.refused(
        &format!(
            "someone with {partner_name}'s certificate but not its PKCE verifier presents the code"
        ),
        exchange_without_verifier(stack, partner, &code, &redirect_uri).await,
        Code::PermissionDenied,
        "PKCE_MISMATCH",
    );
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) -> Result<(), Status> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Status::deadline_exceeded(format!(
        "{what} did not happen within 15 s"
    )))
}

async fn attested(account: &mut AccountClient<Channel>, user: &User, partner_id: &str) -> bool {
    let Ok(grants) = account
        .list_grants(bearer(pb::ListGrantsRequest::default(), &user.session))
        .await
    else {
        return false;
    };
    let mine: Vec<_> = grants
        .into_inner()
        .grants
        .into_iter()
        .filter(|g| g.partner_id == partner_id && g.feature != "listening-party")
        .collect();
    !mine.is_empty() && mine.iter().all(|g| g.deletion_attested_at.is_some())
}

/// Tells the story against `stack` (the platform and partners already running).
pub async fn tell(story: &mut Story, stack: &Stack<'_>) {
    let work = stack.work;
    let mut operator = PartnerAdminClient::new(
        work.channel(stack.operator, Some("operator"))
            .await
            .expect("operator"),
    );
    let (music_addr, music_data) = (
        stack.partner("music").api,
        stack.partner("music").data.as_ref(),
    );
    let video_addr = stack.partner("video").api;
    let (bank_addr, bank_data) = (
        stack.partner("bank").api,
        stack.partner("bank").data.as_ref(),
    );
    // The partners' own front ends: each presents its partner's certificate.
    let client = async |addr, id: &str| {
        app::partner_app_client::PartnerAppClient::new(
            work.channel(addr, Some(&format!("partner-{id}")))
                .await
                .expect("partner channel"),
        )
    };
    let (mut music, mut video, mut bank) = (
        client(music_addr, "music").await,
        client(video_addr, "video").await,
        client(bank_addr, "bank").await,
    );
    let (mut files, mut search) = (
        client(stack.partner("files").api, "files").await,
        client(stack.partner("search").api, "search").await,
    );

    let mut account = AccountClient::new(work.channel(stack.user, None).await.expect("account"));
    let crate::Family {
        alice,
        bob,
        carol,
        thread_id: family,
        first_message,
    } = crate::seed_family(&mut account).await;
    let say =
        async |account: &mut AccountClient<Channel>, user: &User, thread: &str, body: &str| {
            account
                .send_message(bearer(
                    pb::AccountSendMessageRequest {
                        thread_id: thread.into(),
                        body: body.into(),
                    },
                    &user.session,
                ))
                .await
                .expect("send")
                .into_inner()
        };
    say(&mut account, &carol, &family, "I'll bring dessert").await;
    story.note("seeded users alice, bob, carol; alice's friends bob and carol; a 'family' thread with two messages");

    story.act("1. Users connect apps: signing in with the platform on its consent page (bob unticks a permission), or, for an app without a browser, approving in the platform's own app");
    let (music_app, video_app) = (("music", "Music App"), ("video", "Video App"));
    connect_in_browser(story, stack, music_app, &alice, &[], true).await;
    connect_in_browser(story, stack, music_app, &bob, &["messages.delete"], false).await;
    connect_in_browser(story, stack, video_app, &alice, &[], false).await;
    let all = Vec::new();
    let bank_threads = connect(
        story,
        &mut bank,
        &mut account,
        &alice,
        "Bank",
        vec![family.clone()],
        all.clone(),
    )
    .await;
    let bank_family = bank_threads.first().cloned().unwrap_or_default();
    story.note(&format!(
        "[Bank] alice picked one thread; the bank knows it as {bank_family}, the platform as {family}"
    ));
    story.expect(
        "the bank names the thread by an id of its own",
        bank_threads.len() == 1 && bank_family != family,
    );
    let files_threads = connect(
        story,
        &mut files,
        &mut account,
        &alice,
        "Files",
        vec![family.clone()],
        all.clone(),
    )
    .await;
    let files_family = files_threads.first().cloned().unwrap_or_default();
    story.expect(
        "the files app has alice's picked thread, by an id unlike the bank's",
        files_threads.len() == 1 && files_family != bank_family,
    );
    connect(
        story,
        &mut search,
        &mut account,
        &alice,
        "People Search",
        Vec::new(),
        all.clone(),
    )
    .await;
    // What the platform shows the music app: the handle of alice's friend bob, as a friend
    // picker would give it, and the music app's own id of the family thread.
    let music_shown = work.shown_to("music");

    story.act("2. Each partner acts within its grant");
    let shared = story.check(
        "music app shares a track from alice with bob (a thread the app starts)",
        music
            .share(with_card(
                share_with_friend(
                    "alice",
                    &music_shown.handle(&bob.id),
                    "Now playing",
                    "track-1",
                ),
                Kind::Track(pb::Track {
                    title: "Blue in Green".into(),
                    artist: "Miles Davis".into(),
                    link: "https://music.example/tracks/blue-in-green".into(),
                    duration_seconds: 337,
                }),
            ))
            .await
            .map(|r| r.into_inner()),
    );
    let music_thread = shared
        .as_ref()
        .map(|s| s.thread_id.clone())
        .unwrap_or_default();
    let bobs_view = music_shown.thread_named(&music_thread).unwrap_or_default();
    say(&mut account, &bob, &bobs_view, "Love this one").await;
    if let Some(inbox) = story.check(
        "music app reads the reply in the thread it started",
        music
            .inbox(alices_inbox(&music_thread))
            .await
            .map(|r| r.into_inner()),
    ) {
        for m in &inbox.messages {
            story.note(&format!("[music app sees] {}: {}", m.sender, m.body));
        }
        story.expect(
            "bob appears to the music app only as a pseudonym",
            inbox
                .messages
                .iter()
                .any(|m| m.sender.starts_with("anon_") && m.body == "Love this one"),
        );
    }
    if let Some(share) = &shared {
        story.check(
            "music app unsends alice's share",
            music
                .unsend(app::UnsendRequest {
                    user_name: "alice".into(),
                    message_id: share.message_id.clone(),
                })
                .await,
        );
    }
    story.check(
        "carol lets apps her friends use see her name (bob does not)",
        account
            .set_privacy(bearer(
                pb::SetPrivacyRequest {
                    show_name_to_friends_apps: Some(true),
                    ..Default::default()
                },
                &carol.session,
            ))
            .await,
    );
    let friends = story
        .check(
            "video app lists alice's friends (friends.read)",
            video
                .list_friends(alices_friends())
                .await
                .map(|r| r.into_inner().friends),
        )
        .unwrap_or_default();
    story.note(&format!(
        "[video app sees] friends: {}",
        friends
            .iter()
            .map(|f| match f.display_name.as_str() {
                "" => format!("{} (no name)", f.user_id),
                name => format!("{name} ({})", f.user_id),
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    story.expect(
        "the video app gets handles, not user ids, and no name for bob",
        friends.len() == 2
            && friends.iter().all(|f| f.user_id.starts_with("anon_"))
            && friends.iter().filter(|f| f.display_name.is_empty()).count() == 1,
    );
    let carol_handle = friends
        .iter()
        .find(|f| f.display_name == "CAROL")
        .map(|f| f.user_id.clone())
        .unwrap_or_default();
    story.check(
        "video app recommends a video to carol, by her handle",
        video
            .share(with_card(
                share_with_friend("alice", &carol_handle, "Watch this", "rec-1"),
                Kind::Video(pb::Video {
                    title: "Miles Davis: Birth of the Cool".into(),
                    link: "https://video.example/watch/birth-of-the-cool".into(),
                    duration_seconds: 6900,
                }),
            ))
            .await,
    );
    let search_friends = story
        .check(
            "people search shows alice's friends in her results (friends.read)",
            search
                .list_friends(alices_friends())
                .await
                .map(|r| r.into_inner().friends),
        )
        .unwrap_or_default();
    for f in &search_friends {
        story.note(&format!(
            "[People Search shows] {}",
            match f.display_name.as_str() {
                "" => format!(
                    "{} (a friend who keeps her or his name from apps)",
                    f.user_id
                ),
                name => format!("{name} ({})", f.user_id),
            }
        ));
    }
    story.expect(
        "bob, who did not allow it, has no name in the search app; carol has hers",
        search_friends.len() == 2
            && search_friends
                .iter()
                .any(|f| f.display_name.is_empty() && f.user_id.starts_with("anon_"))
            && search_friends.iter().any(|f| f.display_name == "CAROL")
            && search_friends
                .iter()
                .all(|f| !friends.iter().any(|v| v.user_id == f.user_id)),
    );
    story.check(
        "files app shares a folder into the thread alice picked",
        files
            .share(with_card(
                share_in_thread("alice", &files_family, "The photos from Sunday", "f-1"),
                Kind::Folder(pb::SharedFolder {
                    name: "Sunday lunch".into(),
                    item_count: 42,
                    link: "https://files.example/s/sunday-lunch".into(),
                }),
            ))
            .await,
    );
    let receipt = story.check(
        "bank sends a transfer receipt into the family thread",
        bank.share(with_card(
            share_in_thread("alice", &bank_family, "You sent Bob 20.00 EUR", "tx-1"),
            receipt_card(2000),
        ))
        .await
        .map(|r| r.into_inner()),
    );
    let cards: Vec<String> = account
        .list_messages(bearer(
            pb::ListMessagesRequest {
                thread_id: family.clone(),
                page_size: 100,
                ..Default::default()
            },
            &alice.session,
        ))
        .await
        .map(|r| r.into_inner().messages)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.card.as_ref().and_then(consent_core::card::describe))
        .map(|(text, link)| format!("{text} {link}"))
        .collect();
    for card in &cards {
        story.note(&format!("[platform app shows alice] {card}"));
    }
    story.expect(
        "alice's own app shows the folder and the receipt as what they are",
        cards.len() == 2
            && cards[0].starts_with("Shared folder: Sunday lunch (42 items), on files.example")
            && cards[1].starts_with("Transfer receipt: EUR 20.00 on 2025-12-04, reference"),
    );

    story.act("3. Forbidden acts are refused, with their reason");
    story.refused(
        "files app tries to read the thread it shared into",
        files.inbox(alices_inbox(&files_family)).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );
    story.refused(
        "bank tries to post a folder",
        bank.share(with_card(
            share_in_thread("alice", &bank_family, "Statements", "tx-folder"),
            Kind::Folder(pb::SharedFolder {
                name: "Statements".into(),
                item_count: 12,
                link: "https://bank.example/statements".into(),
            }),
        ))
        .await,
        Code::PermissionDenied,
        "CARD_KIND_NOT_DECLARED",
    );
    story.invalid(
        "bank sends a receipt with a negative amount",
        bank.share(with_card(
            share_in_thread("alice", &bank_family, "Refund", "tx-negative"),
            receipt_card(-500),
        ))
        .await,
        "card.receipt.amount.minor_units",
    );
    story.refused(
        "people search tries to read alice's messages",
        search.inbox(alices_inbox(&family)).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );
    story.refused(
        "video app tries to read the family thread",
        video.inbox(alices_inbox(&family)).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );
    if let Some(receipt) = &receipt {
        story.refused(
            "bank tries to delete its receipt",
            bank.unsend(app::UnsendRequest {
                user_name: "alice".into(),
                message_id: receipt.message_id.clone(),
            })
            .await,
            Code::PermissionDenied,
            "SCOPE_MISSING",
        );
    }
    story.refused(
        "music app tries to read a thread it did not start",
        music
            .inbox(alices_inbox(&music_shown.thread(&family)))
            .await,
        Code::PermissionDenied,
        "THREAD_NOT_COVERED",
    );
    let stolen = music_data.token("alice").ok().flatten().unwrap_or_default();
    let video_direct = work
        .channel(stack.partner, Some("partner-video"))
        .await
        .expect("video channel");
    story.refused(
        "video app presents alice's music-app token (leaked from the music app's database)",
        pb::messaging_client::MessagingClient::new(video_direct)
            .list_threads(bearer(pb::ListThreadsRequest::default(), &stolen))
            .await,
        Code::PermissionDenied,
        "TOKEN_PARTNER_MISMATCH",
    );
    let music_direct = work
        .channel(stack.partner, Some("partner-music"))
        .await
        .expect("music channel");
    let mut music_consent = pb::consent_client::ConsentClient::new(music_direct.clone());
    let mut music_messaging = pb::messaging_client::MessagingClient::new(music_direct);
    let verifier = "a-listening-party-verifier-of-forty-three-chars";
    let party = pb::PushAuthorizationRequest {
        feature: "listening-party".into(),
        coverage: pb::ThreadCoverage::ListedThreads as i32,
        thread_ids: vec![music_shown.thread(&family)],
        include_history: false,
        purpose: "Show the family thread during a listening party".into(),
        redirect_uri: format!("{}/callback", stack.partner("music").web_origin),
        state: "party-1".into(),
        code_challenge: consent_core::authorization::s256(verifier),
        code_challenge_method: "S256".into(),
    };
    let party_token = party_grant(story, stack, &mut music_consent, party, &alice, verifier)
        .await
        .unwrap_or_default();
    story.refused(
        "music app (listening-party, no history) reads alice's message from before the grant",
        music_messaging
            .get_message(bearer(
                pb::GetMessageRequest {
                    message_id: music_shown.message(&first_message),
                },
                &party_token,
            ))
            .await,
        Code::PermissionDenied,
        "HISTORY_NOT_GRANTED",
    );

    story.act("4. Other participants: pseudonyms, opt-out, and who can read a thread");
    story.check(
        "carol opts out of being shown to apps that others use",
        account
            .set_privacy(bearer(
                pb::SetPrivacyRequest {
                    hide_from_others_apps: Some(true),
                    ..Default::default()
                },
                &carol.session,
            ))
            .await,
    );
    say(&mut account, &alice, &family, "Bring the kids").await;
    say(
        &mut account,
        &carol,
        &family,
        "My new address is 12 Elm Street",
    )
    .await;
    if let Some(listed) = story.check(
        "music app (listening-party) reads the family thread",
        music_messaging
            .list_messages(bearer(
                pb::ListMessagesRequest {
                    thread_id: music_shown.thread(&family),
                    ..Default::default()
                },
                &party_token,
            ))
            .await
            .map(|r| r.into_inner()),
    ) {
        for m in &listed.messages {
            story.note(&format!(
                "[music app sees] {}: {}",
                m.sender,
                if m.redacted {
                    "(redacted)".to_string()
                } else {
                    m.body.clone()
                }
            ));
        }
        story.expect(
            "only messages after the grant are shown",
            listed.messages.len() == 2,
        );
        story.expect(
            "carol's message is redacted",
            listed
                .messages
                .iter()
                .any(|m| m.redacted && m.body.is_empty()),
        );
    }
    if let Some(apps) = story.check(
        "bob asks which apps can read the family thread",
        account
            .list_thread_apps(bearer(
                pb::ListThreadAppsRequest {
                    thread_id: family.clone(),
                    ..Default::default()
                },
                &bob.session,
            ))
            .await
            .map(|r| r.into_inner()),
    ) {
        for a in &apps.apps {
            story.note(&format!(
                "[platform app shows bob] {} ('{}'), granted by {}",
                a.partner_name,
                a.feature,
                if a.granted_by_me {
                    "you"
                } else {
                    "another participant"
                }
            ));
        }
        story.expect(
            "bob sees the music app's listening party",
            apps.apps
                .iter()
                .any(|a| a.partner_id == "music" && !a.granted_by_me),
        );
    }

    story.act("5. The music app's feature is retired: its grants end at once");
    let alice_music_token = music_data.token("alice").ok().flatten().unwrap_or_default();
    if let Some(retired) = story.check(
        "operator retires the music app's 'share-tracks'",
        operator
            .retire_feature(pb::RetireFeatureRequest {
                partner_id: "music".into(),
                feature: "share-tracks".into(),
            })
            .await
            .map(|r| r.into_inner()),
    ) {
        story.note(&format!(
            "[operator] grants ended: {}",
            retired.grants_ended
        ));
    }
    story.refused(
        "the music app's next call with alice's grant",
        music_messaging
            .list_threads(bearer(
                pb::ListThreadsRequest::default(),
                &alice_music_token,
            ))
            .await,
        Code::PermissionDenied,
        "FEATURE_RETIRED",
    );
    story.check(
        "music app deletes alice's and bob's tokens and cached messages, and attests it",
        wait_until("music purge", async || {
            music_data.token("alice") == Ok(None)
                && music_data.token("bob") == Ok(None)
                && music_data.cached_messages("alice") == Ok(0)
                && attested(&mut account.clone(), &alice, "music").await
        })
        .await,
    );

    story.act("6. alice revokes the bank; the bank purges and attests; alice reads her access log");
    let grants = account
        .list_grants(bearer(pb::ListGrantsRequest::default(), &alice.session))
        .await
        .expect("grants")
        .into_inner()
        .grants;
    let bank_grant = grants
        .iter()
        .find(|g| g.partner_id == "bank")
        .map(|g| g.grant_id.clone())
        .unwrap_or_default();
    story.expect(
        "the bank holds a token for alice",
        matches!(bank_data.token("alice"), Ok(Some(_))),
    );
    story.check(
        "alice revokes the bank's grant",
        account
            .revoke_grant(bearer(
                pb::RevokeGrantRequest {
                    grant_id: bank_grant,
                },
                &alice.session,
            ))
            .await,
    );
    story.check(
        "bank deletes alice's token and attests the deletion",
        wait_until("bank purge", async || {
            bank_data.token("alice") == Ok(None)
                && attested(&mut account.clone(), &alice, "bank").await
        })
        .await,
    );
    let again = bank
        .share(share_in_thread(
            "alice",
            &bank_family,
            "Receipt: 5.00 EUR",
            "tx-2",
        ))
        .await;
    story.refused(
        "the bank can no longer send for alice",
        again,
        Code::FailedPrecondition,
        "NOT_CONNECTED",
    );
    if let Some(log) = story.check(
        "alice reads the access log of her data",
        account
            .read_access_log(bearer(
                pb::ReadAccessLogRequest {
                    page_size: 100,
                    page_token: String::new(),
                },
                &alice.session,
            ))
            .await
            .map(|r| r.into_inner()),
    ) {
        let denied: Vec<_> = log
            .records
            .iter()
            .filter(|r| r.decision == "deny")
            .collect();
        story.note(&format!(
            "[platform app shows alice] {} records about her data, {} refused:",
            log.records.len(),
            denied.len()
        ));
        for r in denied {
            story.note(&format!(
                "    {} {} → {}",
                r.partner_id,
                r.method.rsplit('/').next().unwrap_or_default(),
                r.reason
            ));
        }
    }
    if let Some(verified) = story.check(
        "operator verifies the audit chain",
        operator
            .verify_audit(pb::VerifyAuditRequest::default())
            .await
            .map(|r| r.into_inner()),
    ) {
        story.note(&format!(
            "[operator] {} records checked",
            verified.records_checked
        ));
        story.expect("the audit chain is intact", verified.ok);
    }
}

/// The platform and every profile as processes on loopback, registered and healthy.
pub struct ProcessStack {
    /// The work directory with the PKI, databases and logs.
    pub work: WorkDir,
    /// The platform's listeners.
    pub ports: crate::processes::PlatformPorts,
    platform: crate::processes::Process,
    partners: Vec<(&'static str, crate::processes::PartnerProcess)>,
}

impl ProcessStack {
    /// Makes the PKI in `dir`, starts the platform, registers every profile as the operator,
    /// and starts the partners, telling `story` what it does.
    pub async fn start(story: &mut Story, dir: &std::path::Path) -> Self {
        use crate::processes::{
            PlatformPorts, partner_web_addrs, redirect_uri_at, start_partner_at, start_platform,
        };
        story.act("Setting up: a development PKI, the platform and five partners as separate processes over mTLS");
        let work = WorkDir::new(dir);
        let ports = PlatformPorts::free();
        let platform = start_platform(&work, ports).await;
        story.note(&format!(
            "platform: partners {} · operators {} · users {}",
            ports.partner, ports.operator, ports.user
        ));
        let mut operator = PartnerAdminClient::new(
            work.channel(ports.operator, Some("operator"))
                .await
                .expect("operator"),
        );
        let webs = partner_web_addrs();
        let redirect_uris: Vec<(&str, String)> = webs
            .iter()
            .map(|(id, web)| (*id, redirect_uri_at(*web)))
            .collect();
        register(story, &mut operator, &redirect_uris).await;
        let mut partners = Vec::new();
        for (id, web) in webs {
            let partner = start_partner_at(&work, id, ports, web).await;
            story.note(&format!(
                "partner {id}: API {} · web https://localhost:{}",
                partner.addr,
                web.port()
            ));
            partners.push((id, partner));
        }
        ProcessStack {
            work,
            ports,
            platform,
            partners,
        }
    }

    /// The stack as the story sees it.
    pub fn view(&self) -> Stack<'_> {
        Stack {
            work: &self.work,
            partner: self.ports.partner,
            operator: self.ports.operator,
            user: self.ports.user,
            web_origin: self.ports.web_origin(),
            partners: self
                .partners
                .iter()
                .map(|(id, p)| StackPartner {
                    id,
                    api: p.addr,
                    web_origin: format!("https://localhost:{}", p.web.port()),
                    data: Box::new(LocalStore(p.database.clone())),
                })
                .collect(),
        }
    }

    /// Stops every process and returns their log files.
    pub fn stop(self) -> Vec<std::path::PathBuf> {
        let mut logs = vec![self.platform.log.clone()];
        logs.extend(self.partners.iter().map(|(_, p)| p.process.log.clone()));
        drop(self.partners);
        drop(self.platform);
        logs
    }
}
