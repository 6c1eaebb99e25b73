//! The authorization code flow end to end: a partner pushes its request over mTLS, a
//! browser signs in on the platform's page and approves on the consent page with one
//! permission unticked, the partner exchanges the code with its PKCE verifier; then each
//! refusal of the flow, with its audit record, and the grants page's revoke button.

use consent_core::authorization::s256;
use consent_proto::platform::v1 as pb;
use end_to_end::browser::{Browser, Page};
use end_to_end::{Scenario, assert_refused, bearer, redirect_uri};
use tonic::Code;

const VERIFIER: &str = "a-verifier-of-forty-three-characters-or-more-000";

fn push(state: &str) -> pb::PushAuthorizationRequest {
    pb::PushAuthorizationRequest {
        feature: "share-tracks".into(),
        coverage: pb::ThreadCoverage::PartnerStartedThreads as i32,
        thread_ids: Vec::new(),
        include_history: false,
        purpose: "share what you listen to".into(),
        redirect_uri: redirect_uri("music"),
        state: state.into(),
        code_challenge: s256(VERIFIER),
        code_challenge_method: "S256".into(),
    }
}

/// The music app pushes the request of [`push`]; returns the URL it sends the browser to.
async fn pushed_url(music: &mut end_to_end::Partner, state: &str) -> String {
    music
        .consent
        .push_authorization(push(state))
        .await
        .unwrap()
        .into_inner()
        .authorize_url
}

/// The music app pushes a request with listed coverage of `thread_ids` (its own ids for
/// them); returns the URL it sends the browser to.
async fn push_listed(
    music: &mut end_to_end::Partner,
    state: &str,
    thread_ids: Vec<String>,
) -> String {
    let mut listed = push(state);
    listed.coverage = pb::ThreadCoverage::ListedThreads as i32;
    listed.thread_ids = thread_ids;
    music
        .consent
        .push_authorization(listed)
        .await
        .unwrap()
        .into_inner()
        .authorize_url
}

/// The query parameter `name` of a URL.
fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Alice, signed in, follows `authorize_url` to her consent page; returns that page.
async fn consent_page(browser: &Browser, authorize_url: &str) -> (String, Page) {
    let opened = browser.get(authorize_url).await;
    assert_eq!(opened.status, 303, "{}", opened.body);
    let consent = opened.location.expect("to the consent page");
    assert!(consent.starts_with("/consent/req_"), "{consent}");
    let page = browser.get(&consent).await;
    assert_eq!(page.status, 200, "{}", page.body);
    (consent, page)
}

/// The audit records of `method`, as (decision, reason).
async fn audited(s: &Scenario, method: &str) -> Vec<(String, String)> {
    s.platform
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.method == method)
        .map(|r| (r.decision, r.reason))
        .collect()
}

fn exchange(code: &str, verifier: &str, redirect: &str) -> pb::ExchangeCodeRequest {
    pb::ExchangeCodeRequest {
        code: code.into(),
        code_verifier: verifier.into(),
        redirect_uri: redirect.into(),
    }
}

#[tokio::test]
async fn a_user_signs_in_on_the_platform_unticks_a_permission_and_the_partner_gets_the_narrower_grant()
 {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let pushed = music
        .consent
        .push_authorization(push("st-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        pushed
            .request_uri
            .starts_with("urn:ietf:params:oauth:request_uri:")
    );
    assert_eq!(pushed.expires_in, 90);
    let browser = Browser::new(&s.platform);
    assert!(
        pushed
            .authorize_url
            .starts_with(&format!("{}/authorize?client_id=music&", browser.origin))
    );

    // Not signed in: the platform's own sign-in page first, then back to the request.
    let first = browser.get(&pushed.authorize_url).await;
    assert_eq!(first.status, 303);
    let sign_in_url = first.location.unwrap();
    assert!(
        sign_in_url.starts_with("/sign-in?next=%2Fauthorize"),
        "{sign_in_url}"
    );
    let form = browser.get(&sign_in_url).await;
    let csrf = form.field("csrf").unwrap();
    let next = form.field("next").unwrap();
    assert!(next.starts_with("/authorize?client_id=music"), "{next}");
    let signed_in = browser
        .post(
            "/sign-in",
            &[
                ("csrf", &csrf),
                ("user_name", "alice"),
                ("password", "correct horse"),
                ("next", &next),
            ],
        )
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let cookie = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-session="))
        .expect("session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    let back = signed_in.location.unwrap();
    let (consent, page) = consent_page(&browser, &back).await;

    // Only the consent page decides a pushed request: not alice's app, and bob's app does
    // not even find it.
    let request_id = consent.trim_start_matches("/consent/").to_string();
    let mut account = s.platform.account().await;
    for (user, code, reason) in [
        (
            &s.alice,
            Code::FailedPrecondition,
            "DECIDED_ON_CONSENT_PAGE",
        ),
        (&s.bob, Code::NotFound, ""),
    ] {
        let approve = pb::ApproveRequestRequest {
            request_id: request_id.clone(),
            ..Default::default()
        };
        let refused = account
            .approve_request(bearer(approve, &user.session))
            .await
            .unwrap_err();
        let deny = pb::DenyRequestRequest {
            request_id: request_id.clone(),
        };
        let also_refused = account
            .deny_request(bearer(deny, &user.session))
            .await
            .unwrap_err();
        for refused in [refused, also_refused] {
            if reason.is_empty() {
                assert_eq!(refused.code(), code, "{refused:?}");
            } else {
                assert_refused(&refused, code, reason);
            }
        }
    }
    assert!(page.body.contains("Music App"), "{}", page.body);
    assert!(page.body.contains("read your messages"));
    assert!(page.body.contains("delete messages you wrote"));
    assert!(
        page.body
            .contains("Besides text, its messages may carry: tracks."),
        "the kinds of card the feature sends: {}",
        page.body
    );
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("default-src 'none'")
            && policy.contains("form-action 'self' https://music.example"),
        "{policy}"
    );

    let csrf = page.field("csrf").unwrap();
    let decided = browser
        .post(
            &consent,
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("scope", "threads.read"),
                ("scope", "messages.read"),
                ("scope", "messages.write"),
                ("lifetime_days", "30"),
            ],
        )
        .await;
    assert_eq!(decided.status, 303, "{}", decided.body);
    let answer = decided.location.unwrap();
    assert!(answer.starts_with(&redirect_uri("music")), "{answer}");
    assert_eq!(param(&answer, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&answer, "iss"), Some(browser.origin.clone()));
    let code = param(&answer, "code").expect("code");

    let exchanged = music
        .consent
        .exchange_code(exchange(&code, VERIFIER, &redirect_uri("music")))
        .await
        .unwrap()
        .into_inner();
    let grant = exchanged.grant.unwrap();
    let scopes: Vec<i32> = [
        pb::Scope::ThreadsRead,
        pb::Scope::MessagesRead,
        pb::Scope::MessagesWrite,
    ]
    .iter()
    .map(|s| *s as i32)
    .collect();
    assert_eq!(grant.scopes, scopes, "messages.delete was unticked");
    assert_eq!(grant.user_id, s.alice.id);
    music
        .list_threads(&exchanged.grant_token)
        .await
        .expect("the token works");

    // The code works once; a replay revokes the grant it gave, whatever comes with it.
    let replay = music
        .consent
        .exchange_code(exchange(&code, "x", ""))
        .await
        .unwrap_err();
    assert_refused(&replay, Code::PermissionDenied, "CODE_REUSED");
    let after = music
        .list_threads(&exchanged.grant_token)
        .await
        .unwrap_err();
    assert_refused(&after, Code::PermissionDenied, "GRANT_REVOKED");
    let records = audited(&s, "/consent.platform.v1.Consent/ExchangeCode").await;
    assert_eq!(
        records,
        [
            ("allow".into(), String::new()),
            ("deny".into(), "CODE_REUSED".into())
        ]
    );

    // The request_uri was used: opening it again is refused, and audited.
    let reopened = browser.get(&pushed.authorize_url).await;
    assert_eq!(reopened.status, 403, "{}", reopened.body);
    assert!(reopened.body.contains("REQUEST_URI_INVALID"));
    assert_eq!(
        audited(&s, "GET /authorize").await,
        [("deny".into(), "REQUEST_URI_INVALID".into())]
    );
}

/// Pushes a request, has alice approve it in `browser` as asked, and returns the code.
async fn approved_code(browser: &Browser, music: &mut end_to_end::Partner) -> String {
    let authorize_url = pushed_url(music, "st-2").await;
    let (consent, page) = consent_page(browser, &authorize_url).await;
    let csrf = page.field("csrf").unwrap();
    let decided = browser
        .post(
            &consent,
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("scope", "messages.write"),
            ],
        )
        .await;
    assert_eq!(decided.status, 303, "{}", decided.body);
    param(&decided.location.unwrap(), "code").unwrap()
}

/// Like [`approved_code`], exchanged by the music app: its grant token.
async fn granted_token(browser: &Browser, music: &mut end_to_end::Partner) -> String {
    let code = approved_code(browser, music).await;
    music
        .consent
        .exchange_code(exchange(&code, VERIFIER, &redirect_uri("music")))
        .await
        .unwrap()
        .into_inner()
        .grant_token
}

#[tokio::test]
async fn a_decision_sent_twice_is_answered_as_the_first_and_only_the_last_code_works() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let uri = redirect_uri("music");

    // A double click on Allow: the browser follows the second answer, whose code works.
    let authorize_url = pushed_url(&mut music, "st-allow").await;
    let (consent, page) = consent_page(&browser, &authorize_url).await;
    let csrf = page.field("csrf").unwrap();
    let allow = [
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
        ("scope", "messages.write"),
    ];
    let first = browser.post(&consent, &allow).await;
    let second = browser.post(&consent, &allow).await;
    assert_eq!((first.status, second.status), (303, 303), "{}", second.body);
    let (first, second) = (first.location.unwrap(), second.location.unwrap());
    assert!(second.starts_with(&uri), "{second}");
    assert_eq!(param(&second, "state").as_deref(), Some("st-allow"));
    assert_eq!(param(&second, "iss"), param(&first, "iss"));
    let first_code = param(&first, "code").unwrap();
    let second_code = param(&second, "code").unwrap();
    assert_ne!(first_code, second_code);
    assert_eq!(
        audited(&s, "POST /consent").await,
        [("allow".to_string(), String::new())],
        "the new code's issue is recorded"
    );
    // The same request allowed in another tab with another lifetime is not the decision
    // made: refused, and the code stands.
    let other_tab = [allow.as_slice(), &[("lifetime_days", "7")]].concat();
    let differing = browser.post(&consent, &other_tab).await;
    assert_eq!(differing.status, 409, "{}", differing.body);
    assert!(
        differing.body.contains("REQUEST_NOT_PENDING"),
        "{}",
        differing.body
    );
    let replaced = music
        .consent
        .exchange_code(exchange(&first_code, VERIFIER, &uri))
        .await
        .unwrap_err();
    assert_refused(&replaced, Code::PermissionDenied, "CODE_INVALID");
    let exchanged = music
        .consent
        .exchange_code(exchange(&second_code, VERIFIER, &uri))
        .await
        .unwrap()
        .into_inner();
    assert!(exchanged.grant_token.starts_with("pgt_"), "{exchanged:?}");
    // Once the code is exchanged the request stays decided, whatever is sent.
    let late = browser.post(&consent, &allow).await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(late.body.contains("REQUEST_NOT_PENDING"), "{}", late.body);
    let turned = browser
        .post(&consent, &[("csrf", &csrf), ("decision", "deny")])
        .await;
    assert_eq!(turned.status, 409, "{}", turned.body);

    // An Allow sent again once its code has expired is refused too.
    let authorize_url = pushed_url(&mut music, "st-slow").await;
    let (consent, _) = consent_page(&browser, &authorize_url).await;
    assert_eq!(browser.post(&consent, &allow).await.status, 303);
    s.platform.clock.advance_ms(61_000);
    let expired = browser.post(&consent, &allow).await;
    assert_eq!(expired.status, 409, "{}", expired.body);
    assert!(
        expired.body.contains("REQUEST_NOT_PENDING"),
        "{}",
        expired.body
    );
    assert_eq!(
        audited(&s, "/consent.platform.v1.Account/ApproveRequest")
            .await
            .len(),
        2,
        "one grant for each request"
    );
    assert_eq!(audited(&s, "POST /consent").await.len(), 1);

    // Deny sent twice: access_denied both times, one denial.
    let authorize_url = pushed_url(&mut music, "st-deny").await;
    let (consent, _) = consent_page(&browser, &authorize_url).await;
    for _ in 0..2 {
        let denied = browser
            .post(&consent, &[("csrf", &csrf), ("decision", "deny")])
            .await;
        assert_eq!(denied.status, 303, "{}", denied.body);
        let answer = denied.location.unwrap();
        assert_eq!(param(&answer, "error").as_deref(), Some("access_denied"));
        assert_eq!(param(&answer, "state").as_deref(), Some("st-deny"));
    }
    assert_eq!(
        audited(&s, "/consent.platform.v1.Account/DenyRequest")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn codes_are_bound_to_their_partner_verifier_redirect_and_lifetime() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut video = s.platform.partner("video").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let code = approved_code(&browser, &mut music).await;
    let uri = redirect_uri("music");

    let wrong = music
        .consent
        .exchange_code(exchange(&code, &"w".repeat(43), &uri))
        .await
        .unwrap_err();
    assert_refused(&wrong, Code::PermissionDenied, "PKCE_MISMATCH");
    let altered = format!("{uri}?next=https://evil.example");
    let moved = music
        .consent
        .exchange_code(exchange(&code, VERIFIER, &altered))
        .await
        .unwrap_err();
    assert_refused(&moved, Code::PermissionDenied, "REDIRECT_URI_MISMATCH");
    let stolen = video
        .consent
        .exchange_code(exchange(&code, VERIFIER, &uri))
        .await
        .unwrap_err();
    assert_refused(&stolen, Code::PermissionDenied, "CODE_INVALID");
    let log = browser.get("/access-log").await;
    assert!(
        log.body.contains("CODE_INVALID"),
        "alice sees the attempt: {}",
        log.body
    );
    s.platform.clock.advance_ms(61_000);
    let late = music
        .consent
        .exchange_code(exchange(&code, VERIFIER, &uri))
        .await
        .unwrap_err();
    assert_refused(&late, Code::PermissionDenied, "CODE_INVALID");
    let reasons: Vec<String> = audited(&s, "/consent.platform.v1.Consent/ExchangeCode")
        .await
        .into_iter()
        .map(|(decision, reason)| format!("{decision} {reason}"))
        .collect();
    assert_eq!(
        reasons,
        [
            "deny PKCE_MISMATCH",
            "deny REDIRECT_URI_MISMATCH",
            "deny CODE_INVALID",
            "deny CODE_INVALID"
        ]
    );

    // An unregistered redirect URI is refused when the request is pushed.
    let mut elsewhere = push("st-3");
    elsewhere.redirect_uri = "https://evil.example/callback".into();
    let refused = music
        .consent
        .push_authorization(elsewhere)
        .await
        .unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "REDIRECT_URI_MISMATCH");
    assert_eq!(
        audited(&s, "/consent.platform.v1.Consent/PushAuthorization")
            .await
            .last(),
        Some(&("deny".to_string(), "REDIRECT_URI_MISMATCH".to_string()))
    );

    // A request_uri not opened within its lifetime is refused.
    let authorize_url = pushed_url(&mut music, "st-4").await;
    s.platform.clock.advance_ms(91_000);
    let expired = browser.get(&authorize_url).await;
    assert_eq!(expired.status, 403);
    assert!(expired.body.contains("REQUEST_URI_INVALID") && expired.body.contains("expired"));
    // And another partner cannot present it as its own.
    let authorize_url = pushed_url(&mut music, "st-5").await;
    let posing = authorize_url.replace("client_id=music", "client_id=video");
    assert_eq!(browser.get(&posing).await.status, 403);
    let opened = audited(&s, "GET /authorize").await;
    let invalid = ("deny".to_string(), "REQUEST_URI_INVALID".to_string());
    assert_eq!(
        opened,
        [invalid.clone(), invalid],
        "both refusals are audited"
    );
}

#[tokio::test]
async fn web_sign_in_is_throttled_as_on_the_grpc_surface() {
    let s = Scenario::new().await;
    let browser = Browser::new(&s.platform);
    let attempt = |password: &'static str| {
        let browser = &browser;
        async move {
            let form = browser.get("/sign-in").await;
            let csrf = form.field("csrf").unwrap();
            browser
                .post(
                    "/sign-in",
                    &[
                        ("csrf", &csrf),
                        ("user_name", "alice"),
                        ("password", password),
                    ],
                )
                .await
        }
    };
    for _ in 0..5 {
        let wrong = attempt("not her password").await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
        assert!(wrong.body.contains("wrong user name or password"));
    }
    let throttled = attempt("correct horse").await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.body.contains("retry in"), "{}", throttled.body);
}

#[tokio::test]
async fn forms_need_their_csrf_token_and_sign_in_never_leaves_the_platform() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let authorize_url = pushed_url(&mut music, "st-6").await;
    let (consent, _) = consent_page(&browser, &authorize_url).await;
    let forged = browser
        .post(
            &consent,
            &[("decision", "approve"), ("scope", "messages.write")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("CSRF_INVALID"));
    assert_eq!(
        audited(&s, "POST /consent").await,
        [("deny".into(), "CSRF_INVALID".into())]
    );
    let wrong = browser
        .post(
            &consent,
            &[
                ("csrf", "csrf_guess"),
                ("decision", "approve"),
                ("scope", "messages.write"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 403);
    assert!(wrong.body.contains("CSRF_INVALID"), "{}", wrong.body);

    // A decision that is neither approve nor deny decides nothing; the request stays open.
    let page = browser.get(&consent).await;
    let csrf = page.field("csrf").unwrap();
    let unclear = browser
        .post(&consent, &[("csrf", &csrf), ("decision", "later")])
        .await;
    assert_eq!(unclear.status, 400, "{}", unclear.body);
    assert!(unclear.body.contains("decision"), "{}", unclear.body);

    // Denying sends the partner access_denied with its state.
    let page = browser.get(&consent).await;
    assert_eq!(page.status, 200, "the request is still open: {}", page.body);
    let csrf = page.field("csrf").unwrap();
    let denied = browser
        .post(&consent, &[("csrf", &csrf), ("decision", "deny")])
        .await;
    let answer = denied.location.unwrap();
    assert!(answer.starts_with(&redirect_uri("music")));
    assert_eq!(param(&answer, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&answer, "state").as_deref(), Some("st-6"));
    assert_eq!(param(&answer, "code"), None);
    assert_eq!(
        audited(&s, "/consent.platform.v1.Account/DenyRequest").await,
        [("allow".into(), String::new())],
        "the denial is recorded, as an approval is"
    );

    // Open redirects: `next` may only be a path on the platform.
    let other = Browser::new(&s.platform);
    for next in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
    ] {
        let form = other.get("/sign-in").await;
        let csrf = form.field("csrf").unwrap();
        let signed_in = other
            .post(
                "/sign-in",
                &[
                    ("csrf", &csrf),
                    ("user_name", "bob"),
                    ("password", "correct horse"),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(signed_in.location.as_deref(), Some("/grants"), "{next}");
    }
    // A sign-in form posted without its token is refused before any password work.
    let fresh = Browser::new(&s.platform);
    let forged = fresh
        .post(
            "/sign-in",
            &[("user_name", "bob"), ("password", "correct horse")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("CSRF_INVALID"), "{}", forged.body);
}

#[tokio::test]
async fn the_grants_page_lists_each_grant_in_plain_words_and_its_revoke_button_ends_it() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let token = granted_token(&browser, &mut music).await;

    let page = browser.get("/grants").await;
    assert_eq!(page.status, 200);
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let forged = browser.post("/grants/grt_anything/revoke", &[]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("CSRF_INVALID"), "{}", forged.body);
    // A query or form that does not parse is refused on a page, as every failure is.
    let malformed = browser.get("/grants?after=soon").await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(
        malformed.body.contains("INVALID_ARGUMENT") && malformed.body.contains("query"),
        "{}",
        malformed.body
    );
    assert!(
        page.body.contains("Music App") && page.body.contains("send messages as you"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("only conversations started from the app")
    );
    let form_start = page.body.find("/revoke").expect("a revoke button");
    let action_start = page.body[..form_start].rfind("/grants/").unwrap();
    let action = &page.body[action_start..form_start + "/revoke".len()];
    let forged = browser.post(action, &[("csrf", "csrf_guess")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        audited(&s, "POST /grants/revoke").await,
        [("deny".to_string(), "CSRF_INVALID".to_string())]
    );
    // A forged revocation changes nothing: the grant still answers with its own limits.
    let still = music.list_threads(&token).await.unwrap_err();
    assert_refused(&still, Code::PermissionDenied, "SCOPE_MISSING");
    let csrf = page.field("csrf").unwrap();
    let revoked = browser.post(action, &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, 303);
    // Revoked before the page that follows is drawn.
    let refused = music.list_threads(&token).await.unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "GRANT_REVOKED");
    let page = browser.get("/grants").await;
    assert!(page.body.contains("revoked by you"));

    // Without a session, or with one that has ended, the pages and forms send the browser
    // to sign in and back to the page, with its query; a revocation, to the grants page
    // its button is on.
    let stranger = Browser::new(&s.platform);
    // alice's own session, which lasts 12 hours.
    let ended = format!("__Host-session={}", s.alice.session);
    let ended = ended.as_str();
    let kept = stranger.send_with_cookie("GET", "/access-log", ended).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    s.platform.clock.advance_ms(12 * 60 * 60 * 1000 + 1);
    let sign_in_then = |page: Page| (page.status, page.location);
    for (asked, back) in [
        (stranger.get("/grants").await, "%2Fgrants"),
        (
            stranger.get("/grants?after=3").await,
            "%2Fgrants%3Fafter%3D3",
        ),
        (stranger.get("/access-log").await, "%2Faccess-log"),
        (
            stranger
                .send_with_cookie("GET", "/access-log?page=2", ended)
                .await,
            "%2Faccess-log%3Fpage%3D2",
        ),
        (
            stranger
                .send_with_cookie("GET", "/threads?page=2", ended)
                .await,
            "%2Fthreads%3Fpage%3D2",
        ),
        (
            stranger
                .send_with_cookie("GET", "/threads/thr_x?page=2", ended)
                .await,
            "%2Fthreads%2Fthr_x%3Fpage%3D2",
        ),
        (
            stranger.send_with_cookie("POST", "/privacy", ended).await,
            "%2Fprivacy",
        ),
        (stranger.get("/privacy").await, "%2Fprivacy"),
        (
            stranger.post("/consent/req_x", &[]).await,
            "%2Fconsent%2Freq_x",
        ),
        (stranger.post(action, &[("csrf", &csrf)]).await, "%2Fgrants"),
    ] {
        assert_eq!(
            sign_in_then(asked),
            (303, Some(format!("/sign-in?next={back}")))
        );
    }
}

#[tokio::test]
async fn for_listed_coverage_the_user_picks_the_conversations_on_the_consent_page() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let authorize_url = push_listed(&mut music, "st-7", Vec::new()).await;
    let (consent, page) = consent_page(&browser, &authorize_url).await;
    assert!(
        page.body
            .contains(&format!("value=\"{}\"", s.family_thread)),
        "{}",
        page.body
    );
    let csrf = page.field("csrf").unwrap();
    let approve = |threads: &[&str]| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("decision", "approve".into()),
            ("scope", "messages.read".into()),
        ];
        form.extend(threads.iter().map(|t| ("thread", t.to_string())));
        form
    };
    let post = |form: Vec<(&'static str, String)>| {
        let browser = &browser;
        let consent = consent.clone();
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            browser.post(&consent, &form).await
        }
    };
    let mut forever = approve(&[&s.family_thread]);
    forever.push(("lifetime_days", "forever".into()));
    let malformed = post(forever).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(
        malformed.body.contains("INVALID_ARGUMENT") && malformed.body.contains("form"),
        "a form that does not parse is refused on a page: {}",
        malformed.body
    );
    let none = post(approve(&[])).await;
    assert_eq!(
        none.status, 400,
        "unticking every conversation is not approving all"
    );
    let foreign = post(approve(&["thr_not_hers"])).await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    let picked = post(approve(&[&s.family_thread])).await;
    assert_eq!(picked.status, 303, "{}", picked.body);
    let code = param(&picked.location.unwrap(), "code").unwrap();
    let grant = music
        .consent
        .exchange_code(exchange(&code, VERIFIER, &redirect_uri("music")))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(
        grant.thread_ids,
        vec![music.shown.thread(&s.family_thread)],
        "the grant names the thread by the music app's own id"
    );
}

#[tokio::test]
async fn the_conversations_asked_for_are_offered_ticked_however_many_the_user_has() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;
    for n in 0..100 {
        end_to_end::create_thread(&mut account, &s.alice, &[&s.bob], &format!("chat {n}")).await;
    }
    let newest = end_to_end::create_thread(&mut account, &s.alice, &[&s.bob], "newest").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let asked = vec![music.shown.thread(&newest)];
    let authorize_url = push_listed(&mut music, "st-9", asked).await;
    let (_, page) = consent_page(&browser, &authorize_url).await;
    assert!(
        page.body.contains(&format!("value=\"{newest}\" checked")),
        "the newest of alice's 102 conversations, asked for, is offered ticked: {}",
        page.body
    );
    let boxes: Vec<&str> = page.body.split("name=\"thread\"").skip(1).collect();
    assert_eq!(boxes.len(), 100, "as many as a decision may tick");
    let ticked = boxes
        .iter()
        .filter(|rest| {
            rest.split('>')
                .next()
                .unwrap_or_default()
                .contains("checked")
        })
        .count();
    assert_eq!(ticked, 1, "only the one asked for is ticked");
    assert!(
        page.body.contains("Signed in as <strong>alice</strong>"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_platform() {
    let s = Scenario::new().await;
    let browser = Browser::new(&s.platform);
    let session_of = |signed_in: &end_to_end::browser::Page| {
        let cookie = signed_in
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("__Host-session="))
            .unwrap();
        cookie
            .trim_start_matches("__Host-session=")
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let mut account = s.platform.account().await;
    let first = session_of(&browser.sign_in("alice").await);
    // Signing in again on the same browser ends the session it held.
    let token = session_of(&browser.sign_in("alice").await);
    assert_ne!(first, token);
    let refused = account
        .list_grants(end_to_end::bearer(pb::ListGrantsRequest::default(), &first))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::Unauthenticated, "SESSION_INVALID");
    account
        .list_grants(end_to_end::bearer(pb::ListGrantsRequest::default(), &token))
        .await
        .unwrap();
    let page = browser.get("/grants").await;
    let csrf = page.field("csrf").unwrap();
    let out = browser.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.location.as_deref(), Some("/sign-in"));
    let removal = out
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-session="))
        .unwrap();
    assert!(
        removal.contains("Secure") && removal.contains("Max-Age=0"),
        "{removal}"
    );
    assert_eq!(browser.get("/grants").await.status, 303);
    // The token itself no longer works anywhere.
    let refused = account
        .list_grants(end_to_end::bearer(pb::ListGrantsRequest::default(), &token))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::Unauthenticated, "SESSION_INVALID");
}

#[tokio::test]
async fn the_user_pages_show_the_access_log_who_reads_each_conversation_privacy_and_receipts() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let browser = Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let token = granted_token(&browser, &mut music).await;
    music.list_threads(&token).await.unwrap_err();

    let log = browser.get("/access-log").await;
    assert_eq!(log.status, 200);
    assert!(
        log.body.contains("ExchangeCode") && log.body.contains("allowed"),
        "{}",
        log.body
    );
    assert!(
        log.body.contains("SCOPE_MISSING"),
        "the refused call is in the log: {}",
        log.body
    );

    let threads = browser.get("/threads").await;
    assert_eq!(threads.status, 200);
    assert!(threads.body.contains("family"), "{}", threads.body);

    let grants = browser.get("/grants").await;
    let link = grants
        .body
        .find("href=\"/grants/grt_")
        .expect("a receipt link")
        + "href=\"".len();
    let end = grants.body[link..].find('"').unwrap() + link;
    let receipt = browser.get(&grants.body[link..end]).await;
    assert_eq!(receipt.status, 200);
    assert!(
        receipt.body.contains("Music App may use messages.write"),
        "{}",
        receipt.body
    );

    let privacy = browser.get("/privacy").await;
    assert!(
        !privacy.body.contains("checked"),
        "both settings start off: {}",
        privacy.body
    );
    let csrf = privacy.field("csrf").unwrap();
    let saved = browser
        .post(
            "/privacy",
            &[("csrf", &csrf), ("hide_from_others_apps", "yes")],
        )
        .await;
    assert_eq!(saved.status, 303);
    let privacy = browser.get("/privacy").await;
    assert!(
        privacy
            .body
            .contains("name=\"hide_from_others_apps\" value=\"yes\" checked"),
        "{}",
        privacy.body
    );
    assert!(
        !privacy
            .body
            .contains("name=\"show_name_to_friends_apps\" value=\"yes\" checked")
    );
    let forged = browser
        .post("/privacy", &[("show_name_to_friends_apps", "yes")])
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("CSRF_INVALID"), "{}", forged.body);

    // With the store gone, a page says so as every page does: 503, and the reason.
    let store = std::sync::Arc::clone(&s.platform.store);
    tokio::task::spawn_blocking(move || store.close(std::time::Duration::from_secs(10)))
        .await
        .unwrap();
    let down = browser.get("/access-log").await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.body.contains("STORE_UNAVAILABLE"), "{}", down.body);
}
