//! The partner's side of "sign in with the platform", with both services as processes: a
//! user of the music app's own web app connects through the platform's consent page; the
//! callback takes only the answer its own browser session asked for, from the platform;
//! and the partner API serves only its own front ends and signed-in users.

use consent_proto::partner::v1 as app;
use consent_proto::platform::v1 as pb;
use end_to_end::assert_partner_refused;
use end_to_end::browser::{Browser, Page};
use end_to_end::processes::start_partner_at;
use end_to_end::world::{World, partner_db, world};
use tonic::Code;

/// Posts the sign-up form of the app at `origin` for `name` in `browser`.
async fn post_sign_up(browser: &Browser, origin: &str, name: &str) -> Page {
    let home = browser.get(&format!("{origin}/")).await;
    let csrf = home.field("csrf").expect("csrf");
    browser
        .post(
            &format!("{origin}/sign-up"),
            &[
                ("csrf", &csrf),
                ("name", name),
                ("password", "correct horse"),
            ],
        )
        .await
}

/// Signs up `name` on the app at `origin` in `browser`; returns the app's page.
async fn sign_up(browser: &Browser, origin: &str, name: &str) -> Page {
    let signed_up = post_sign_up(browser, origin, name).await;
    assert_eq!(signed_up.status, 303, "{}", signed_up.body);
    browser.follow(signed_up).await
}

/// Presses "Connect with the platform"; returns the platform's answer as the redirect
/// to the callback, after alice signed in there and approved with `scopes` ticked.
async fn connect(w: &World, browser: &Browser, origin: &str, home: &Page, scopes: &[&str]) -> Page {
    let csrf = home.field("csrf").expect("csrf");
    let to_platform = browser
        .post(&format!("{origin}/connect"), &[("csrf", &csrf)])
        .await;
    assert_eq!(to_platform.status, 303, "{}", to_platform.body);
    let authorize = to_platform.location.clone().unwrap();
    assert!(
        authorize.starts_with(&format!(
            "{}/authorize?client_id=music&request_uri=",
            w.ports.web_origin()
        )),
        "{authorize}"
    );
    let sign_in = browser.follow(browser.get(&authorize).await).await;
    assert!(sign_in.url.contains("/sign-in"), "{}", sign_in.url);
    let form: Vec<(&str, String)> = vec![
        ("csrf", sign_in.field("csrf").unwrap()),
        ("next", sign_in.field("next").unwrap()),
        ("user_name", "alice".into()),
        ("password", "correct horse".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let signed_in = browser.post(&sign_in.resolve("/sign-in"), &form).await;
    let consent = browser.follow(signed_in).await;
    assert!(consent.url.contains("/consent/req_"), "{}", consent.url);
    assert!(consent.body.contains("Music App"));
    let csrf = consent.field("csrf").unwrap();
    let mut form = vec![("csrf", csrf.as_str()), ("decision", "approve")];
    form.extend(scopes.iter().map(|s| ("scope", *s)));
    browser.post(&consent.url, &form).await
}

#[tokio::test]
async fn a_music_app_user_connects_through_the_consent_page_and_the_callback_checks_state_and_issuer()
 {
    let (w, _platform) = world().await;
    let music = start_partner_at(&w.work, "music", w.ports, w.music_web).await;
    let origin = format!("https://localhost:{}", music.web.port());
    let browser = Browser::for_work(&w.work, origin.clone());
    let home = sign_up(&browser, &origin, "alice").await;
    assert!(
        home.body.contains("Connect with the platform"),
        "{}",
        home.body
    );

    let answer = connect(
        &w,
        &browser,
        &origin,
        &home,
        &["messages.read", "messages.write", "messages.delete"],
    )
    .await;
    let callback = answer.location.clone().unwrap();
    assert!(
        callback.starts_with(&format!("{origin}/callback?code=")),
        "{callback}"
    );
    let connected = browser.follow(answer).await;
    assert!(connected.body.contains("CONNECTED"), "{}", connected.body);
    assert!(
        connected
            .body
            .contains("This app may: MESSAGES_READ, MESSAGES_WRITE, MESSAGES_DELETE"),
        "{}",
        connected.body
    );

    // The same connection, as the app's front end sees it over its API.
    let mut front_end = music.client(&w.work, "music").await;
    let status = front_end
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, "CONNECTED");

    // A share the platform refuses for good (to a thread that does not exist) fails, and
    // its retry with the same key is told so, not that it was delivered.
    let uncovered = app::ShareRequest {
        user_name: "alice".into(),
        thread_id: w
            .work
            .shown_to("music")
            .thread("thr_000000000000000000000000"),
        body: "to the family".into(),
        client_key: "k-uncovered".into(),
        ..Default::default()
    };
    let first = front_end.share(uncovered.clone()).await.unwrap_err();
    end_to_end::assert_not_found(&first, "thread");
    let again = front_end.share(uncovered).await.unwrap_err();
    assert_partner_refused(&again, Code::FailedPrecondition, "SHARE_FAILED");

    // A link on another site does not make the app read a thread.
    let share_form = connected.field("csrf").unwrap();
    let bobs_handle = w.work.shown_to("music").handle(&w.bob.id);
    let shared = browser
        .post(
            &format!("{origin}/share"),
            &[
                ("csrf", &share_form),
                ("friend_id", &bobs_handle),
                ("body", "Now playing"),
                ("client_key", "k1"),
            ],
        )
        .await;
    let thread = shared.location.clone().expect("to the thread");
    let own = browser.follow(shared).await;
    assert!(own.body.contains("id=\"inbox\""), "{}", own.body);
    let linked = browser
        .get_from_another_site(&format!("{origin}{thread}"))
        .await;
    assert!(!linked.body.contains("id=\"inbox\""), "{}", linked.body);

    // Unsend from the page: the message is gone from the thread.
    let message_id = own.field("message_id").expect("an unsend button");
    let csrf = own.field("csrf").unwrap();
    let thread_id = own.field("thread_id").unwrap_or_default();
    let unsent = browser
        .post(
            &format!("{origin}/unsend"),
            &[
                ("csrf", &csrf),
                ("message_id", &message_id),
                ("thread_id", &thread_id),
            ],
        )
        .await;
    assert_eq!(unsent.status, 303, "{}", unsent.body);
    let after = browser.follow(unsent).await;
    assert!(!after.body.contains("Now playing"), "{}", after.body);

    // Signing out and in again on the app's own page.
    let out = browser
        .post(&format!("{origin}/sign-out"), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303);
    let signed_out = browser.get(&format!("{origin}/")).await;
    assert!(
        signed_out.body.contains("Create an account"),
        "{}",
        signed_out.body
    );
    let csrf = signed_out.field("csrf").unwrap();
    let wrong = browser
        .post(
            &format!("{origin}/sign-in"),
            &[
                ("csrf", &csrf),
                ("name", "alice"),
                ("password", "not it at all"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let back = browser
        .post(
            &format!("{origin}/sign-in"),
            &[
                ("csrf", &csrf),
                ("name", "alice"),
                ("password", "correct horse"),
            ],
        )
        .await;
    assert_eq!(back.status, 303, "{}", back.body);
    let home = browser.follow(back).await;
    assert!(
        home.body.contains("<strong>CONNECTED</strong>"),
        "{}",
        home.body
    );
    let forged = browser.post(&format!("{origin}/disconnect"), &[]).await;
    assert_eq!(forged.status, 403, "a form without its token is refused");
    assert!(forged.body.contains("CSRF_INVALID"), "{}", forged.body);

    // The callback refuses answers its browser session did not ask for.
    let platform = w.ports.web_origin();
    for query in ["code=pac_x&state=st_forged", "code=pac_x"] {
        let forged = browser
            .get(&format!("{origin}/callback?{query}&iss={platform}"))
            .await;
        assert_eq!(forged.status, 400, "{query}");
        assert!(forged.body.contains("STATE_MISMATCH"), "{}", forged.body);
    }
    let flow_state = |music: &end_to_end::processes::PartnerProcess| -> String {
        partner_db(music)
            .query_row("SELECT state FROM flows", [], |r| r.get(0))
            .expect("a flow in progress")
    };
    let home = browser.get(&format!("{origin}/")).await;
    let csrf = home.field("csrf").unwrap();
    browser
        .post(&format!("{origin}/connect"), &[("csrf", &csrf)])
        .await;
    let state = flow_state(&music);
    let elsewhere = browser
        .get(&format!(
            "{origin}/callback?code=pac_x&state={state}&iss=https://evil.example"
        ))
        .await;
    assert_eq!(elsewhere.status, 400);
    assert!(
        elsewhere.body.contains("ISSUER_MISMATCH"),
        "{}",
        elsewhere.body
    );

    // A browser with no session here is told the answer cannot be taken.
    let signed_out = Browser::for_work(&w.work, origin.clone());
    let orphan = signed_out
        .get(&format!(
            "{origin}/callback?code=pac_x&state={state}&iss={platform}"
        ))
        .await;
    assert_eq!(orphan.status, 401);
    assert!(orphan.body.contains("SIGN_IN_FIRST"), "{}", orphan.body);
    // Its forms are sent to the home page, which offers sign-in.
    for form in ["connect", "share", "unsend", "disconnect"] {
        let sent = signed_out.post(&format!("{origin}/{form}"), &[]).await;
        assert_eq!(
            (sent.status, sent.location.as_deref()),
            (303, Some("/")),
            "{form}"
        );
    }

    // Another account's browser cannot complete alice's flow.
    browser
        .post(&format!("{origin}/connect"), &[("csrf", &csrf)])
        .await;
    let state = flow_state(&music);
    let mallory = Browser::for_work(&w.work, origin.clone());
    sign_up(&mallory, &origin, "mallory").await;
    let stolen = mallory
        .get(&format!(
            "{origin}/callback?code=pac_x&state={state}&iss={platform}"
        ))
        .await;
    assert_eq!(stolen.status, 400);
    assert!(stolen.body.contains("STATE_MISMATCH"));
    // The app's refusals show with the HTTP status of their code and their reason: mallory
    // has no connection to share through.
    let mallory_home = mallory.get(&format!("{origin}/")).await;
    let share = [
        ("csrf", mallory_home.field("csrf").unwrap()),
        ("thread_id", "thr_any".to_string()),
        ("body", "hi".to_string()),
        ("client_key", "k1".to_string()),
    ];
    let share: Vec<(&str, &str)> = share.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let unconnected = mallory.post(&format!("{origin}/share"), &share).await;
    assert_eq!(unconnected.status, 409, "{}", unconnected.body);
    assert!(
        unconnected.body.contains("NOT_CONNECTED"),
        "{}",
        unconnected.body
    );
    // A form or a query string that does not parse (here a field sent twice) is refused on
    // the app's page too, with the part that did not parse, not in the framework's text.
    let twice = [share[0], ("thread_id", "thr_a"), ("thread_id", "thr_b")];
    let malformed_form = mallory.post(&format!("{origin}/share"), &twice).await;
    let malformed_query = mallory.get(&format!("{origin}/?page=1&page=2")).await;
    for (malformed, part) in [(malformed_form, "form"), (malformed_query, "query")] {
        assert_eq!(malformed.status, 400, "{}", malformed.body);
        assert!(
            malformed.body.contains("That did not work")
                && malformed.body.contains("INVALID_ARGUMENT")
                && malformed
                    .body
                    .contains(&format!("the {part} did not parse")),
            "{}",
            malformed.body
        );
    }

    // Disconnecting on the app's page releases the grant.
    let home = browser.get(&format!("{origin}/")).await;
    let csrf = home.field("csrf").unwrap();
    let out = browser
        .post(&format!("{origin}/disconnect"), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    let status = front_end
        .connection_status(app::ConnectionStatusRequest {
            user_name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(status.status, "CONNECTED");
    // Its grant was given up once: disconnecting again releases nothing.
    let again = front_end
        .disconnect(app::DisconnectRequest {
            user_name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !again.released,
        "an ended connection has no grant to release"
    );
}

#[tokio::test]
async fn the_partner_api_serves_only_its_own_front_ends_and_signed_in_users() {
    let (w, _platform) = world().await;
    let music = start_partner_at(&w.work, "music", w.ports, w.music_web).await;
    let ask = |user_name: &str| app::ConnectionStatusRequest {
        user_name: user_name.into(),
    };

    let stranger = w.work.channel(music.addr, None).await.unwrap();
    let mut stranger = app::partner_app_client::PartnerAppClient::new(stranger);
    let refused = stranger.connection_status(ask("alice")).await.unwrap_err();
    assert_partner_refused(&refused, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");
    let share = app::ShareRequest {
        user_name: "alice".into(),
        friend_id: "anyone".into(),
        body: "hi".into(),
        client_key: "k".into(),
        ..Default::default()
    };
    let alice = || "alice".to_string();
    let refusals = [
        stranger.share(share).await.map(drop),
        stranger
            .connect_user(app::ConnectUserRequest {
                user_name: alice(),
                thread_ids: Vec::new(),
            })
            .await
            .map(drop),
        stranger
            .list_friends(app::ListFriendsRequest {
                user_name: alice(),
                ..Default::default()
            })
            .await
            .map(drop),
        stranger
            .inbox(app::InboxRequest {
                user_name: alice(),
                thread_id: "thr_1".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        stranger
            .unsend(app::UnsendRequest {
                user_name: alice(),
                message_id: "msg_1".into(),
            })
            .await
            .map(drop),
        stranger
            .disconnect(app::DisconnectRequest { user_name: alice() })
            .await
            .map(drop),
    ];
    for refused in refusals {
        assert_partner_refused(
            &refused.unwrap_err(),
            Code::Unauthenticated,
            "CALLER_UNAUTHENTICATED",
        );
    }

    // Another partner's certificate is not one of music's front ends.
    let video = w
        .work
        .channel(music.addr, Some("partner-video"))
        .await
        .unwrap();
    let refused = app::partner_app_client::PartnerAppClient::new(video)
        .connection_status(ask("alice"))
        .await
        .unwrap_err();
    assert_partner_refused(&refused, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");

    // A user signed in on the app's web acts for their own account only.
    let origin = format!("https://localhost:{}", music.web.port());
    let browser = Browser::for_work(&w.work, origin.clone());
    let signed_up = post_sign_up(&browser, &origin, "alice").await;
    let session = signed_up
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-partner-session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let as_alice = |user_name: &str| end_to_end::bearer(ask(user_name), &session);
    let own = stranger
        .connection_status(as_alice(""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.status, "NOT_CONNECTED");
    let refused = stranger
        .connection_status(as_alice("bob"))
        .await
        .unwrap_err();
    assert_partner_refused(&refused, Code::PermissionDenied, "NOT_YOUR_ACCOUNT");
    let forged = end_to_end::bearer(ask("alice"), "pss_forged");
    let refused = stranger.connection_status(forged).await.unwrap_err();
    assert_partner_refused(&refused, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");

    // A signed-in user cannot start the decoupled flow, which would ask the platform user
    // of the same name: they connect through the consent page.
    let connect = app::ConnectUserRequest {
        user_name: String::new(),
        thread_ids: Vec::new(),
    };
    let refused = stranger
        .connect_user(end_to_end::bearer(connect, &session))
        .await
        .unwrap_err();
    assert_partner_refused(&refused, Code::FailedPrecondition, "CONNECT_IN_BROWSER");

    // Every bad field of a share is named at once; an account not connected is said so.
    let bad_share = app::ShareRequest {
        card: Some(pb::Card { kind: None }),
        ..Default::default()
    };
    let refused = stranger
        .share(end_to_end::bearer(bad_share, &session))
        .await
        .unwrap_err();
    end_to_end::assert_invalid_fields(&refused, &["body", "client_key", "thread_id", "card.kind"]);
    let inbox = app::InboxRequest {
        thread_id: "thr_1".into(),
        ..Default::default()
    };
    let refused = stranger
        .inbox(end_to_end::bearer(inbox, &session))
        .await
        .unwrap_err();
    assert_partner_refused(&refused, Code::FailedPrecondition, "NOT_CONNECTED");

    // A name the app's front end already connected cannot be signed up for on the web.
    let mut front_end = music.client(&w.work, "music").await;
    let ask_bob = || app::ConnectUserRequest {
        user_name: "bob".into(),
        thread_ids: Vec::new(),
    };
    let first = front_end
        .connect_user(ask_bob())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.binding_message.len(), 9, "{}", first.binding_message);
    assert!(first.instructions.contains(&first.binding_message));
    // Asking again before bob answers repeats the same request, with the same code.
    let again = front_end
        .connect_user(ask_bob())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.request_id, again.binding_message),
        (first.request_id, first.binding_message)
    );
    let other = Browser::for_work(&w.work, origin.clone());
    let taken = post_sign_up(&other, &origin, "bob").await;
    assert_eq!(taken.status, 409, "{}", taken.body);
}
