//! The whole consent lifecycle over real mutual TLS: request, approve, exchange, act within
//! the grant, events, revoke, attest deletion, and the user's access log.

use consent_proto::platform::v1 as pb;
use end_to_end::{Scenario, assert_not_found, assert_refused, bearer};
use tonic::Code;

#[tokio::test]
async fn a_grant_lives_from_request_to_attested_deletion() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;

    // The partner asks; the user sees the request in the platform's own client.
    let asked = music
        .consent
        .request_access(pb::RequestAccessRequest {
            binding_message: "1234-5678".into(),
            account_label: "the test account".into(),
            user_name: "alice".into(),
            feature: "share-tracks".into(),
            coverage: pb::ThreadCoverage::PartnerStartedThreads as i32,
            thread_ids: vec![],
            include_history: false,
            purpose: "share tracks with friends".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let pending = account
        .list_pending_requests(bearer(
            pb::ListPendingRequestsRequest::default(),
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.requests.len(), 1);
    assert_eq!(pending.requests[0].partner_name, "Music App");

    // Before approval the exchange says PENDING and hands out nothing.
    let early = music
        .consent
        .exchange_request(pb::ExchangeRequestRequest {
            request_id: asked.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(early.status, pb::RequestStatus::Pending as i32);
    assert!(early.grant_token.is_empty());

    // Alice approves fewer scopes than asked: no delete.
    let receipt = account
        .approve_request(bearer(
            pb::ApproveRequestRequest {
                request_id: asked.request_id.clone(),
                scopes: vec![
                    pb::Scope::ThreadsRead as i32,
                    pb::Scope::MessagesRead as i32,
                    pb::Scope::MessagesWrite as i32,
                ],
                lifetime_days: 30,
                ..Default::default()
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        receipt.scopes_refused,
        vec![pb::Scope::MessagesDelete as i32]
    );
    assert!(receipt.summary.contains("Music App"));

    // The token is handed out exactly once.
    let exchanged = music
        .consent
        .exchange_request(pb::ExchangeRequestRequest {
            request_id: asked.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = exchanged.grant_token;
    assert!(token.starts_with("pgt_"));
    let again = music
        .consent
        .exchange_request(pb::ExchangeRequestRequest {
            request_id: asked.request_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, pb::RequestStatus::Exchanged as i32);
    assert!(again.grant_token.is_empty());

    // The partner starts a thread with bob and reads bob's reply; bob is a pseudonym.
    let started = music
        .messaging
        .start_thread(bearer(
            pb::StartThreadRequest {
                participant_ids: vec![music.shown.handle(&s.bob.id)],
                title: "tracks".into(),
                body: "listen to this".into(),
                idempotency_key: "start-1".into(),
                card: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let thread = started.thread.unwrap();
    assert_eq!(
        thread.participants,
        vec![s.alice.id.clone()],
        "without participants.read, alice alone"
    );
    // The thread and its first message have the music app's own ids.
    let real_thread = music.shown.thread_named(&thread.thread_id).unwrap();
    assert_ne!(real_thread, thread.thread_id);
    account
        .send_message(bearer(
            pb::AccountSendMessageRequest {
                thread_id: real_thread.clone(),
                body: "love it".into(),
            },
            &s.bob.session,
        ))
        .await
        .unwrap();
    let read = music
        .list_messages(&thread.thread_id, &token)
        .await
        .unwrap();
    assert_eq!(read.messages.len(), 2);
    assert_eq!(read.messages[1].body, "love it");
    assert!(read.messages[1].sender.starts_with("anon_"));

    // Delete was not approved.
    let refused = music
        .messaging
        .delete_message(bearer(
            pb::DeleteMessageRequest {
                message_id: started.message.unwrap().message_id,
                idempotency_key: "del-1".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "SCOPE_MISSING");

    // The partner sees its grant; the user sees which apps read the thread.
    let grants = music
        .consent
        .introspect_grants(pb::IntrospectGrantsRequest {
            active_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grants.grants.len(), 1);
    let grant_id = grants.grants[0].grant_id.clone();
    let apps = account
        .list_thread_apps(bearer(
            pb::ListThreadAppsRequest {
                thread_id: real_thread.clone(),
                ..Default::default()
            },
            &s.bob.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(apps.apps.len(), 1);
    assert!(!apps.apps[0].granted_by_me);

    // Events: approval (narrowed), then revocation, seen by a watcher opened beforehand.
    let mut events = music.grant_events().await.unwrap();
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.kind, pb::GrantEventKind::GrantNarrowed as i32);
    account
        .revoke_grant(bearer(
            pb::RevokeGrantRequest {
                grant_id: grant_id.clone(),
            },
            &s.alice.session,
        ))
        .await
        .unwrap();
    let revoked = events.message().await.unwrap().unwrap();
    assert_eq!(revoked.kind, pb::GrantEventKind::GrantRevoked as i32);
    assert!(revoked.deletion_required);
    assert!(revoked.sequence > first.sequence);

    // The very next call is refused, and the partner attests deletion.
    let after = music.list_threads(&token).await.unwrap_err();
    assert_refused(&after, Code::PermissionDenied, "GRANT_REVOKED");
    let attested = music.attest_deletion(&grant_id).await.unwrap();
    assert!(attested.deletion_attested_at.is_some());

    // A watcher that reconnects after the first event it saw gets the next: the revocation.
    let mut replay = music
        .consent
        .watch_grant_events(pb::WatchGrantEventsRequest {
            after_sequence: first.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replay.message().await.unwrap().unwrap().sequence,
        revoked.sequence
    );

    // Alice reads who touched her data: allowed and denied calls alike.
    let log = account
        .read_access_log(bearer(
            pb::ReadAccessLogRequest {
                page_size: 100,
                page_token: String::new(),
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        log.records
            .iter()
            .any(|r| r.method.ends_with("/ListMessages") && r.decision == "allow")
    );
    assert!(
        log.records
            .iter()
            .any(|r| r.reason == "GRANT_REVOKED" && r.decision == "deny")
    );
    assert!(log.records.iter().all(|r| r.user_id == s.alice.id));

    s.platform.shutdown().await;
}

#[tokio::test]
async fn an_opted_out_friend_is_shown_redacted_under_a_pseudonym() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;
    account
        .set_privacy(bearer(
            pb::SetPrivacyRequest {
                hide_from_others_apps: Some(true),
                ..Default::default()
            },
            &s.carol.session,
        ))
        .await
        .unwrap();
    account
        .send_message(bearer(
            pb::AccountSendMessageRequest {
                thread_id: s.family_thread.clone(),
                body: "secret".into(),
            },
            &s.carol.session,
        ))
        .await
        .unwrap();
    let (token, _) = s
        .grant(
            &mut music,
            &s.alice,
            "listening-party",
            pb::ThreadCoverage::ListedThreads,
            vec![s.family_thread.clone()],
            pb::ApproveRequestRequest {
                include_history: true,
                ..Default::default()
            },
        )
        .await;
    let messages = music
        .list_messages(&music.shown.thread(&s.family_thread), &token)
        .await
        .unwrap()
        .messages;
    assert_eq!(messages.len(), 2, "history was approved: both messages");
    let carol = &messages[1];
    assert!(carol.redacted);
    assert!(carol.body.is_empty());
    assert!(carol.sender.starts_with("anon_"));
    assert_eq!(
        messages[0].sender, s.alice.id,
        "the granting user is shown as herself"
    );
    assert_eq!(messages[0].body, "dinner at 7?");

    // carol sees which app reads her thread, and that her messages are redacted to it.
    let apps = account
        .list_thread_apps(bearer(
            pb::ListThreadAppsRequest {
                thread_id: s.family_thread.clone(),
                ..Default::default()
            },
            &s.carol.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(apps.apps.len(), 1);
    assert!(apps.apps[0].my_messages_redacted);
    s.platform.shutdown().await;
}

#[tokio::test]
async fn a_page_of_large_messages_shrinks_to_fit_the_reply_and_continues() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;
    let (token, _) = s
        .grant(
            &mut music,
            &s.alice,
            "listening-party",
            pb::ThreadCoverage::ListedThreads,
            vec![s.family_thread.clone()],
            pb::ApproveRequestRequest {
                include_history: true,
                ..Default::default()
            },
        )
        .await;
    // 66 messages of 4 KiB: 264 KiB, over the 256 KiB message limit in one page.
    for n in 0..66 {
        account
            .send_message(bearer(
                pb::AccountSendMessageRequest {
                    thread_id: s.family_thread.clone(),
                    body: format!("{n:04}{}", "x".repeat(4092)),
                },
                &s.alice.session,
            ))
            .await
            .expect("send");
    }
    let (mut partner_bodies, mut pages, mut page_token) = (Vec::new(), 0, String::new());
    loop {
        let page = music
            .messaging
            .list_messages(bearer(
                pb::ListMessagesRequest {
                    thread_id: music.shown.thread(&s.family_thread),
                    page_size: 100,
                    page_token: page_token.clone(),
                },
                &token,
            ))
            .await
            .expect("every page fits the reply limit")
            .into_inner();
        pages += 1;
        assert!(
            page.next_page_token.is_empty() || page.next_page_token.starts_with("pg_"),
            "a partner's page token is its own, not the store's cursor"
        );
        partner_bodies.extend(page.messages.into_iter().map(|m| m.body));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(pages >= 2, "the first page was cut to fit: {pages} page(s)");
    assert_eq!(partner_bodies.len(), 67, "every message once, none skipped");
    assert!(partner_bodies.windows(2).all(|w| w[0] != w[1]));

    // The user's own pages are bounded the same way.
    let first = account
        .list_messages(bearer(
            pb::ListMessagesRequest {
                thread_id: s.family_thread.clone(),
                page_size: 100,
                page_token: String::new(),
            },
            &s.alice.session,
        ))
        .await
        .expect("the user's page fits too")
        .into_inner();
    assert!(first.messages.len() < 67 && !first.next_page_token.is_empty());
}

#[tokio::test]
async fn a_person_sees_when_an_app_read_their_messages_through_someone_elses_grant() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;
    let say = |body: &str, session: &str| {
        bearer(
            pb::AccountSendMessageRequest {
                thread_id: s.family_thread.clone(),
                body: body.into(),
            },
            session,
        )
    };
    account
        .send_message(say("7 works", &s.bob.session))
        .await
        .unwrap();
    account
        .set_privacy(bearer(
            pb::SetPrivacyRequest {
                hide_from_others_apps: Some(true),
                ..Default::default()
            },
            &s.carol.session,
        ))
        .await
        .unwrap();
    account
        .send_message(say("maybe", &s.carol.session))
        .await
        .unwrap();
    let (token, _) = s
        .grant(
            &mut music,
            &s.alice,
            "listening-party",
            pb::ThreadCoverage::ListedThreads,
            vec![s.family_thread.clone()],
            pb::ApproveRequestRequest {
                include_history: true,
                ..Default::default()
            },
        )
        .await;
    let listed = music
        .list_messages(&music.shown.thread(&s.family_thread), &token)
        .await
        .unwrap();
    assert_eq!(listed.messages.len(), 3);

    let reads_of = |session: &str| bearer(pb::ListReadsByOthersAppsRequest::default(), session);
    let bob = account
        .list_reads_by_others_apps(reads_of(&s.bob.session))
        .await
        .unwrap()
        .into_inner()
        .reads;
    assert_eq!(
        bob.len(),
        1,
        "bob's one message was read through alice's grant"
    );
    assert_eq!(
        (bob[0].partner_id.as_str(), bob[0].partner_name.as_str()),
        ("music", "Music App")
    );
    assert_eq!(
        (bob[0].thread_id.as_str(), bob[0].messages),
        (s.family_thread.as_str(), 1)
    );
    assert!(bob[0].at.is_some());
    for (who, session) in [
        ("carol, redacted,", &s.carol.session),
        ("alice, the granter,", &s.alice.session),
    ] {
        let reads = account
            .list_reads_by_others_apps(reads_of(session))
            .await
            .unwrap()
            .into_inner()
            .reads;
        assert!(
            reads.is_empty(),
            "{who} has no read by another's app: {reads:?}"
        );
    }
}

#[tokio::test]
async fn friends_are_mutual_and_reach_an_app_as_handles_named_only_by_their_consent() {
    let s = Scenario::new().await;
    let mut video = s.platform.partner("video").await;
    let mut account = s.platform.account().await;
    let dave = end_to_end::sign_up(&mut account, "dave").await;
    let asked = account
        .add_friend(bearer(
            pb::AddFriendRequest {
                user_name: "dave".into(),
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!asked.friends, "a request, until dave adds alice back");
    let (token, _) = s
        .grant(
            &mut video,
            &s.alice,
            "recommend",
            pb::ThreadCoverage::AllThreads,
            vec![],
            Default::default(),
        )
        .await;
    let friends = |video: &mut end_to_end::Partner| {
        let request = bearer(pb::ListFriendsRequest::default(), &token);
        let mut messaging = video.messaging.clone();
        async move {
            messaging
                .list_friends(request)
                .await
                .unwrap()
                .into_inner()
                .friends
        }
    };
    let listed = friends(&mut video).await;
    assert_eq!(listed.len(), 2, "bob and carol, not dave: {listed:?}");
    assert!(listed.iter().all(|f| f.user_id.starts_with("anon_")));
    assert!(
        listed.iter().all(|f| f.display_name.is_empty()),
        "no name without the friend's consent"
    );
    let start = |participant: &str| pb::StartThreadRequest {
        participant_ids: vec![participant.into()],
        title: "a video".into(),
        body: "watch this".into(),
        idempotency_key: format!("k-{participant}"),
        card: None,
    };
    let err = video
        .messaging
        .start_thread(bearer(start(&dave.id), &token))
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "NOT_A_FRIEND");

    let waiting = account
        .list_friend_requests(bearer(
            pb::ListFriendRequestsRequest::default(),
            &dave.session,
        ))
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].user_name, "alice");
    let accepted = account
        .add_friend(bearer(
            pb::AddFriendRequest {
                user_name: "alice".into(),
            },
            &dave.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.friends);
    let shown = account
        .set_privacy(bearer(
            pb::SetPrivacyRequest {
                show_name_to_friends_apps: Some(true),
                ..Default::default()
            },
            &dave.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.show_name_to_friends_apps && !shown.hide_from_others_apps);

    let listed = friends(&mut video).await;
    assert_eq!(listed.len(), 3);
    let named: Vec<_> = listed
        .iter()
        .filter(|f| !f.display_name.is_empty())
        .collect();
    assert_eq!(named.len(), 1, "only dave allowed his name: {listed:?}");
    assert_eq!(named[0].display_name, "DAVE");
    // The handle is keyed by the key file, which the database does not hold.
    let key = std::fs::read_to_string(s.platform.dir.path().join("pseudonym.key")).unwrap();
    let key = consent_core::secret::SecretKey::from_hex(&key).unwrap();
    assert_eq!(
        named[0].user_id,
        s.platform.shown_to("video").handle(&dave.id)
    );
    assert!(
        !s.platform.database().holds_text(&key.to_hex()),
        "the database holds no pseudonym key"
    );
    // The handle is what the app messages; it never learns dave's user id.
    let started = video
        .messaging
        .start_thread(bearer(start(&named[0].user_id), &token))
        .await
        .unwrap()
        .into_inner()
        .thread
        .unwrap();
    assert_eq!(
        started.participants,
        vec![s.alice.id.clone()],
        "without participants.read the app sees alice alone"
    );
    let refused = video
        .messaging
        .start_thread(bearer(start(&dave.id), &token))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "NOT_A_FRIEND");
}

#[tokio::test]
async fn grant_lists_are_paged_and_a_partner_can_ask_for_its_grants_by_id() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut video = s.platform.partner("video").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.music_grant(&mut music).await.1.grant_id);
    }
    let (_, foreign) = s
        .grant(
            &mut video,
            &s.alice,
            "recommend",
            pb::ThreadCoverage::AllThreads,
            vec![],
            Default::default(),
        )
        .await;
    let mut account = s.platform.account().await;
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page = account
            .list_grants(bearer(
                pb::ListGrantsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                },
                &s.alice.session,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.grants.len() <= 3);
        seen.extend(page.grants.into_iter().map(|g| g.grant_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first = [&foreign.grant_id, &ids[2], &ids[1], &ids[0]];
    assert_eq!(
        seen.iter().collect::<Vec<_>>(),
        newest_first,
        "every grant once, newest first"
    );

    let introspect =
        |grant_ids: Vec<String>, page_size, page_token: String| pb::IntrospectGrantsRequest {
            grant_ids,
            page_size,
            page_token,
            ..Default::default()
        };
    let first = music
        .consent
        .introspect_grants(introspect(vec![], 2, String::new()))
        .await
        .unwrap()
        .into_inner();
    let first_ids: Vec<_> = first.grants.iter().map(|g| &g.grant_id).collect();
    assert_eq!(first_ids, [&ids[2], &ids[1]]);
    let rest = music
        .consent
        .introspect_grants(introspect(vec![], 2, first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    let rest_ids: Vec<_> = rest.grants.iter().map(|g| &g.grant_id).collect();
    assert_eq!(rest_ids, [&ids[0]]);
    assert!(rest.next_page_token.is_empty());
    let asked = music
        .consent
        .introspect_grants(introspect(
            vec![ids[0].clone(), foreign.grant_id.clone()],
            0,
            String::new(),
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = asked.grants.iter().map(|g| g.grant_id.as_str()).collect();
    assert_eq!(
        got,
        [ids[0].as_str()],
        "another partner's grant is left out"
    );
}

#[tokio::test]
async fn a_request_answers_the_same_for_a_name_nobody_has_and_carries_its_binding_message() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    // A well-formed id of a thread nobody has, as the music app would name it.
    let nobodys = "thr_00000000000000000000abcd";
    let asked_thread = music.shown.thread(nobodys);
    let ask = |user_name: &str, binding: &str| pb::RequestAccessRequest {
        user_name: user_name.into(),
        feature: "listening-party".into(),
        coverage: pb::ThreadCoverage::ListedThreads as i32,
        thread_ids: vec![asked_thread.clone()],
        purpose: "a listening party".into(),
        binding_message: binding.into(),
        account_label: "Music App account 'al'".into(),
        ..Default::default()
    };
    let mut answers = Vec::new();
    for name in ["alice", "nobody-here"] {
        let first = music
            .consent
            .request_access(ask(name, "1111-2222"))
            .await
            .unwrap()
            .into_inner();
        let again = music
            .consent
            .request_access(ask(name, "1111-2222"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            first.request_id, again.request_id,
            "a retry is the same request"
        );
        for binding in ["3333-4444", "5555-6666"] {
            music
                .consent
                .request_access(ask(name, binding))
                .await
                .unwrap();
        }
        let over = music
            .consent
            .request_access(ask(name, "7777-8888"))
            .await
            .unwrap_err();
        assert_refused(&over, Code::ResourceExhausted, "TOO_MANY_PENDING_REQUESTS");
        let polled = music
            .consent
            .exchange_request(pb::ExchangeRequestRequest {
                request_id: first.request_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(polled.status, pb::RequestStatus::Pending as i32);
        answers.push(pb::AccessRequest {
            request_id: String::new(),
            created_at: None,
            ..first
        });
    }
    assert_eq!(
        answers[0], answers[1],
        "the answer tells nothing about the name"
    );
    assert!(answers[0].user_id.is_empty());

    // alice sees the binding message and the partner-side account with the request.
    let pending = s
        .platform
        .account()
        .await
        .list_pending_requests(bearer(
            pb::ListPendingRequestsRequest::default(),
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner()
        .requests;
    let bindings: Vec<&str> = pending.iter().map(|r| r.binding_message.as_str()).collect();
    assert_eq!(bindings, ["1111-2222", "3333-4444", "5555-6666"]);
    assert!(
        pending
            .iter()
            .all(|r| r.account_label == "Music App account 'al'")
    );
    // A thread alice is not in is never offered: she picks from her own.
    let browser = end_to_end::browser::Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let page = browser
        .get(&format!("/consent/{}", pending[0].request_id))
        .await;
    assert!(
        page.body.contains("1111-2222") && page.body.contains("Music App account"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(nobodys) && !page.body.contains(&asked_thread));
    assert!(page.body.contains(&s.family_thread), "{}", page.body);

    // A day later both requests have expired alike.
    s.platform.clock.advance_ms(25 * 60 * 60 * 1000);
    let mut late = Vec::new();
    for name in ["alice", "nobody-here"] {
        let again = music
            .consent
            .request_access(ask(name, "9999-0000"))
            .await
            .unwrap()
            .into_inner();
        late.push(pb::AccessRequest {
            request_id: String::new(),
            created_at: None,
            ..again
        });
    }
    assert_eq!(late[0], late[1]);
}

#[tokio::test]
async fn two_partners_see_unrelated_ids_for_the_same_thread_message_and_person() {
    let s = Scenario::new().await;
    let (mut music, mut bank) = (
        s.platform.partner("music").await,
        s.platform.partner("bank").await,
    );
    let (music_token, music_grant) = s
        .family_grant(&mut music, &s.alice, "listening-party")
        .await;
    let (bank_token, bank_grant) = s.family_grant(&mut bank, &s.alice, "receipts").await;
    let (music_thread, bank_thread) = (&music_grant.thread_ids[0], &bank_grant.thread_ids[0]);
    assert_ne!(music_thread, bank_thread, "one thread, two unrelated ids");
    assert!(music_thread != &s.family_thread && bank_thread != &s.family_thread);

    let sent = bank
        .messaging
        .send_message(bearer(
            pb::SendMessageRequest {
                thread_id: bank_thread.clone(),
                body: "paid 10".into(),
                idempotency_key: "r1".into(),
                card: None,
            },
            &bank_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&sent.thread_id, bank_thread);
    let read = music
        .list_messages(music_thread, &music_token)
        .await
        .unwrap()
        .messages;
    let seen = read
        .iter()
        .find(|m| m.body == "paid 10")
        .expect("music reads the receipt");
    assert_eq!(&seen.thread_id, music_thread);
    assert_ne!(
        seen.message_id, sent.message_id,
        "one message, two unrelated ids"
    );
    assert_eq!(sent.sent_by_partner, "bank", "the bank sees its own sends");
    assert!(
        seen.sent_by_partner.is_empty(),
        "music does not learn that alice uses the bank"
    );
    // Neither the bank's id for the message nor for the thread names anything for music.
    let err = music
        .messaging
        .get_message(bearer(
            pb::GetMessageRequest {
                message_id: sent.message_id.clone(),
            },
            &music_token,
        ))
        .await
        .unwrap_err();
    assert_not_found(&err, "message");
    let err = music
        .list_messages(bank_thread, &music_token)
        .await
        .unwrap_err();
    assert_not_found(&err, "thread");
    // Bob, in the thread, is a handle of music's own.
    say_as(&s, &s.bob, "hello").await;
    let read = music
        .list_messages(music_thread, &music_token)
        .await
        .unwrap()
        .messages;
    let bobs = read.iter().find(|m| m.body == "hello").unwrap();
    assert_eq!(bobs.sender, music.shown.handle(&s.bob.id));
    assert_ne!(bobs.sender, bank.shown.handle(&s.bob.id));
}

async fn say_as(s: &Scenario, user: &end_to_end::User, body: &str) {
    s.platform
        .account()
        .await
        .send_message(bearer(
            pb::AccountSendMessageRequest {
                thread_id: s.family_thread.clone(),
                body: body.into(),
            },
            &user.session,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn pending_requests_thread_apps_and_the_access_review_are_paged() {
    let s = Scenario::new().await;
    let (mut music, mut bank) = (
        s.platform.partner("music").await,
        s.platform.partner("bank").await,
    );
    let mut account = s.platform.account().await;
    let family = || vec![s.family_thread.clone()];
    // Readers of the family thread: music for alice and for bob; the bank (no
    // messages.read) is found by the query and left out of every page.
    for user in [&s.alice, &s.bob] {
        let listed = pb::ThreadCoverage::ListedThreads;
        s.grant(
            &mut music,
            user,
            "listening-party",
            listed,
            family(),
            Default::default(),
        )
        .await;
    }
    s.grant(
        &mut bank,
        &s.alice,
        "receipts",
        pb::ThreadCoverage::ListedThreads,
        family(),
        Default::default(),
    )
    .await;
    let mut apps = Vec::new();
    let mut page_token = String::new();
    for _ in 0..5 {
        let page = account
            .list_thread_apps(bearer(
                pb::ListThreadAppsRequest {
                    thread_id: s.family_thread.clone(),
                    page_size: 1,
                    page_token: page_token.clone(),
                },
                &s.carol.session,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.apps.len() <= 1);
        apps.extend(page.apps);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert!(page_token.is_empty(), "the pages end");
    assert_eq!(apps.len(), 2, "both music grants, not the bank's: {apps:?}");
    assert!(apps.iter().all(|a| a.partner_id == "music"));

    // Two requests wait for alice; pages of one.
    for feature in ["share-tracks", "listening-party"] {
        music
            .consent
            .request_access(pb::RequestAccessRequest {
                user_name: "alice".into(),
                feature: feature.into(),
                coverage: pb::ThreadCoverage::AllThreads as i32,
                purpose: "to test".into(),
                binding_message: "1234-5678".into(),
                account_label: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let pending = |page_token: String| {
        bearer(
            pb::ListPendingRequestsRequest {
                page_size: 1,
                page_token,
            },
            &s.alice.session,
        )
    };
    let first = account
        .list_pending_requests(pending(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.requests.len(), 1);
    let second = account
        .list_pending_requests(pending(first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.requests.len(), 1);
    assert_ne!(first.requests[0].request_id, second.requests[0].request_id);
    let err = account
        .list_pending_requests(pending("c-1".into()))
        .await
        .unwrap_err();
    end_to_end::assert_invalid_field(&err, "page_token");

    // The access review, a grant at a time, finds what one large page finds.
    let mut operator = s.platform.operator().await;
    let review = |page_size: i32, page_token: String| pb::AccessReviewRequest {
        page_size,
        page_token,
        ..Default::default()
    };
    let all = operator
        .access_review(review(100, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(all.next_page_token.is_empty());
    assert!(!all.findings.is_empty());
    let (mut paged, mut page_token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = operator
            .access_review(review(1, page_token.clone()))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        paged.extend(page.findings);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert!(pages >= 3, "one grant a page: {pages}");
    assert_eq!(paged, all.findings);
}

#[tokio::test]
async fn the_store_counts_grants_by_state_and_overdue_attestations_from_their_due_time() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;
    let (_, kept) = s.music_grant(&mut music).await;
    let (_, revoked) = s.music_grant(&mut music).await;
    end_to_end::revoke(&mut account, &s.alice, &revoked.grant_id).await;

    let id = revoked.grant_id.clone();
    let (by_state, ended_ms) = consent_store::read(&s.platform.store, move |repo| {
        let ended = repo.grant(&id)?.and_then(|g| g.ended_ms);
        Ok::<_, consent_store::StoreError>((repo.grants_by_state()?, ended))
    })
    .await
    .unwrap();
    let mut by_state: Vec<_> = by_state
        .into_iter()
        .map(|(state, n)| (state.name(), n))
        .collect();
    by_state.sort();
    assert_eq!(by_state, [("active", 1), ("revoked", 1)], "{kept:?}");
    let ended_ms = ended_ms.expect("the revoked grant has ended");
    let overdue = |ended_by: i64| {
        consent_store::read(&s.platform.store, move |repo| {
            repo.unattested_grants_ended_by(ended_by)
        })
    };
    assert_eq!(overdue(ended_ms - 1).await.unwrap(), 0, "not yet due");
    assert_eq!(overdue(ended_ms).await.unwrap(), 1, "due from the end on");
    music.attest_deletion(&revoked.grant_id).await.unwrap();
    assert_eq!(overdue(ended_ms).await.unwrap(), 0, "attested");
}
