//! One test per refusal: each asserts the gRPC code and the `ErrorInfo` reason.

use consent_core::clock::DAY_MS;
use consent_proto::platform::v1 as pb;
use end_to_end::{
    Scenario, assert_invalid_field, assert_invalid_fields, assert_not_found, assert_refused, bearer,
};
use tonic::Code;

fn list_threads() -> pb::ListThreadsRequest {
    pb::ListThreadsRequest::default()
}

#[tokio::test]
async fn scope_missing() {
    let s = Scenario::new().await;
    let mut video = s.platform.partner("video").await;
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
    let err = video
        .list_messages(&s.family_thread, &token)
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "SCOPE_MISSING");
    let friends = video
        .messaging
        .list_friends(bearer(pb::ListFriendsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(friends.friends.len(), 2, "friends.read works where granted");
}

#[tokio::test]
async fn grant_expired_and_its_event() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let approve = pb::ApproveRequestRequest {
        lifetime_days: 1,
        ..Default::default()
    };
    let (token, grant) = s
        .grant(
            &mut music,
            &s.alice,
            "share-tracks",
            pb::ThreadCoverage::PartnerStartedThreads,
            vec![],
            approve,
        )
        .await;
    s.platform.clock.advance_ms(2 * DAY_MS);
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "GRANT_EXPIRED");
    let mut events = music.grant_events().await.unwrap();
    events.message().await.unwrap().unwrap();
    let expired = events.message().await.unwrap().unwrap();
    assert_eq!(expired.kind, pb::GrantEventKind::GrantExpired as i32);
    assert_eq!(expired.grant_id, grant.grant_id);
}

#[tokio::test]
async fn grant_lapsed_after_inactivity() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    s.platform.clock.advance_ms(31 * DAY_MS);
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "GRANT_LAPSED");
}

#[tokio::test]
async fn feature_retired_ends_grants_before_returning() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    music.list_threads(&token).await.unwrap();
    let retired = s
        .platform
        .operator()
        .await
        .retire_feature(pb::RetireFeatureRequest {
            partner_id: "music".into(),
            feature: "share-tracks".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retired.grants_ended, 1);
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "FEATURE_RETIRED");
    let err = music
        .consent
        .request_access(pb::RequestAccessRequest {
            binding_message: "1234-5678".into(),
            account_label: "the test account".into(),
            user_name: "bob".into(),
            feature: "share-tracks".into(),
            coverage: pb::ThreadCoverage::AllThreads as i32,
            purpose: "again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "FEATURE_NOT_ACTIVE");
}

#[tokio::test]
async fn partner_suspended() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, grant) = s.music_grant(&mut music).await;
    let suspended = s
        .platform
        .operator()
        .await
        .suspend_partner(pb::SuspendPartnerRequest {
            partner_id: "music".into(),
        })
        .await
        .unwrap();
    assert_eq!(suspended.into_inner().grants_ended, 1);
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "PARTNER_SUSPENDED");
    let err = music
        .consent
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "PARTNER_SUSPENDED");

    // It may still wind down: a stream opened now sends what it has not heard, the
    // suspension's ending included, then ends; and it may attest the deletion.
    let mut events = music.grant_events().await.unwrap();
    let approval = events.message().await.unwrap().unwrap();
    let suspension = events.message().await.unwrap().unwrap();
    assert_eq!(
        (approval.grant_id.as_str(), suspension.grant_id.as_str()),
        (grant.grant_id.as_str(), grant.grant_id.as_str())
    );
    assert_eq!(suspension.kind, pb::GrantEventKind::GrantSuspended as i32);
    let ended = events.message().await.unwrap_err();
    assert_refused(&ended, Code::Unauthenticated, "PARTNER_SUSPENDED");
    let attested = music.attest_deletion(&grant.grant_id).await.unwrap();
    assert!(attested.deletion_attested_at.is_some());

    // Blocked as well, it may still wind down.
    s.platform
        .operator()
        .await
        .block_partner(pb::BlockPartnerRequest {
            partner_id: "music".into(),
            blocked: true,
        })
        .await
        .unwrap();
    music
        .attest_deletion(&grant.grant_id)
        .await
        .expect("attesting again is accepted, blocked or not");
}

#[tokio::test]
async fn a_blocked_partner_still_hears_a_revocation_and_may_attest_its_deletion() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, grant) = s.music_grant(&mut music).await;
    s.platform
        .operator()
        .await
        .block_partner(pb::BlockPartnerRequest {
            partner_id: "music".into(),
            blocked: true,
        })
        .await
        .unwrap();
    s.platform
        .account()
        .await
        .revoke_grant(bearer(
            pb::RevokeGrantRequest {
                grant_id: grant.grant_id.clone(),
            },
            &s.alice.session,
        ))
        .await
        .unwrap();

    // It may call nothing else, but it hears of the revocation and may attest.
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "PARTNER_BLOCKED");
    let mut events = music.grant_events().await.unwrap();
    events.message().await.unwrap().unwrap();
    let revoked = events.message().await.unwrap().unwrap();
    assert_eq!(revoked.kind, pb::GrantEventKind::GrantRevoked as i32);
    assert!(revoked.deletion_required);
    let ended = events.message().await.unwrap_err();
    assert_refused(&ended, Code::Unauthenticated, "PARTNER_BLOCKED");
    let attested = music.attest_deletion(&grant.grant_id).await.unwrap();
    assert!(attested.deletion_attested_at.is_some());
}

#[tokio::test]
async fn partner_blocked_and_unblocked_keeps_its_grants() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, grant) = s.music_grant(&mut music).await;
    let mut operator = s.platform.operator().await;
    let block = |blocked| pb::BlockPartnerRequest {
        partner_id: "music".into(),
        blocked,
    };
    let partner = operator
        .block_partner(block(true))
        .await
        .unwrap()
        .into_inner();
    assert!(partner.blocked && !partner.suspended);
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "PARTNER_BLOCKED");
    let err = music
        .consent
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "PARTNER_BLOCKED");
    let mut account = s.platform.account().await;
    let grants = account
        .list_grants(bearer(pb::ListGrantsRequest::default(), &s.alice.session))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let kept = grants
        .iter()
        .find(|g| g.grant_id == grant.grant_id)
        .unwrap();
    assert_eq!(
        kept.state,
        pb::GrantState::Active as i32,
        "a block ends no grant"
    );

    let partner = operator
        .block_partner(block(false))
        .await
        .unwrap()
        .into_inner();
    assert!(!partner.blocked);
    music
        .list_threads(&token)
        .await
        .expect("the same grant works again once unblocked");
    let err = operator
        .block_partner(pb::BlockPartnerRequest {
            partner_id: "nobody".into(),
            blocked: true,
        })
        .await
        .unwrap_err();
    assert_not_found(&err, "partner");
}

#[tokio::test]
async fn a_partner_holds_only_so_many_event_streams_and_a_closed_one_frees_its_place() {
    let platform =
        end_to_end::TestPlatform::start_with(|c| c.limits.partner_event_streams = 2).await;
    let s = Scenario::with_platform(platform).await;
    let music = s.platform.partner("music").await;
    let watch = || {
        let mut consent = music.consent.clone();
        async move {
            consent
                .watch_grant_events(pb::WatchGrantEventsRequest { after_sequence: 0 })
                .await
        }
    };
    let first = watch().await.unwrap();
    let _second = watch().await.unwrap();
    let err = watch().await.unwrap_err();
    assert_refused(&err, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    let video = s.platform.partner("video").await;
    let mut other = video.consent.clone();
    other
        .watch_grant_events(pb::WatchGrantEventsRequest { after_sequence: 0 })
        .await
        .expect("another partner has its own streams");

    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(stream) = watch().await {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a closed stream frees its place");
}

#[tokio::test]
async fn a_suspension_reaches_an_open_event_stream_and_then_ends_it() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (_, grant) = s.music_grant(&mut music).await;
    let mut events = music.grant_events().await.unwrap();
    let approved = events.message().await.unwrap().unwrap();
    assert_eq!(approved.grant_id, grant.grant_id);

    s.platform
        .operator()
        .await
        .suspend_partner(pb::SuspendPartnerRequest {
            partner_id: "music".into(),
        })
        .await
        .unwrap();

    let suspended = events.message().await.unwrap().unwrap();
    assert_eq!(suspended.kind, pb::GrantEventKind::GrantSuspended as i32);
    assert_eq!(suspended.grant_id, grant.grant_id);
    let ended = events.message().await.unwrap_err();
    assert_refused(&ended, Code::Unauthenticated, "PARTNER_SUSPENDED");
    // The end was recorded before it was sent, as a refusal of the stream's method.
    let stream_refusals: Vec<_> = s
        .platform
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.method.ends_with("/WatchGrantEvents") && r.decision == "deny")
        .map(|r| (r.partner_id, r.reason))
        .collect();
    assert_eq!(
        stream_refusals,
        [("music".to_string(), "PARTNER_SUSPENDED".to_string())]
    );
}

#[tokio::test]
async fn thread_not_covered() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    let err = music
        .list_messages(&music.shown.thread(&s.family_thread), &token)
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "THREAD_NOT_COVERED");
    assert!(
        !err.message().contains(&s.family_thread),
        "no refusal names the platform's id: {err:?}"
    );
    // The platform's own id of the thread, or another partner's, names nothing here.
    let video_id = s.platform.shown_to("video").thread(&s.family_thread);
    for unknown in [&s.family_thread, &video_id] {
        let err = music.list_messages(unknown, &token).await.unwrap_err();
        assert_not_found(&err, "thread");
    }
    let threads = music.list_threads(&token).await.unwrap();
    assert!(
        threads.threads.is_empty(),
        "a thread the partner did not start is not listed"
    );
}

#[tokio::test]
async fn history_not_granted() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let approve = pb::ApproveRequestRequest {
        include_history: false,
        ..Default::default()
    };
    let (token, _) = s
        .grant(
            &mut music,
            &s.alice,
            "listening-party",
            pb::ThreadCoverage::ListedThreads,
            vec![s.family_thread.clone()],
            approve,
        )
        .await;
    let err = music
        .messaging
        .get_message(bearer(
            pb::GetMessageRequest {
                message_id: music.shown.message(&s.old_message),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "HISTORY_NOT_GRANTED");
    let listed = music
        .list_messages(&music.shown.thread(&s.family_thread), &token)
        .await
        .unwrap();
    assert!(
        listed.messages.is_empty(),
        "older messages are left out of lists"
    );
}

#[tokio::test]
async fn not_own_message() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    let started = music
        .messaging
        .start_thread(bearer(
            pb::StartThreadRequest {
                participant_ids: vec![music.shown.handle(&s.bob.id)],
                title: "t".into(),
                body: "hi".into(),
                idempotency_key: "k1".into(),
                card: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let thread_id = music
        .shown
        .thread_named(&started.thread.unwrap().thread_id)
        .unwrap();
    let reply = s
        .platform
        .account()
        .await
        .send_message(bearer(
            pb::AccountSendMessageRequest {
                thread_id,
                body: "bob's".into(),
            },
            &s.bob.session,
        ))
        .await
        .unwrap()
        .into_inner();
    let err = music
        .messaging
        .delete_message(bearer(
            pb::DeleteMessageRequest {
                message_id: music.shown.message(&reply.message_id),
                idempotency_key: "d1".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "NOT_OWN_MESSAGE");
    let own = started.message.unwrap().message_id;
    let deleted = music
        .messaging
        .delete_message(bearer(
            pb::DeleteMessageRequest {
                message_id: own.clone(),
                idempotency_key: "d2".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.message_id, own);
}

#[tokio::test]
async fn token_partner_mismatch_is_refused_and_audited() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut video = s.platform.partner("video").await;
    let (music_token, _) = s.music_grant(&mut music).await;
    let (video_token, _) = s
        .grant(
            &mut video,
            &s.alice,
            "recommend",
            pb::ThreadCoverage::AllThreads,
            vec![],
            Default::default(),
        )
        .await;
    let err = video.list_threads(&music_token).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "TOKEN_PARTNER_MISMATCH");
    let err = music
        .messaging
        .list_friends(bearer(pb::ListFriendsRequest::default(), &video_token))
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "TOKEN_PARTNER_MISMATCH");
    let log = s
        .platform
        .account()
        .await
        .read_access_log(bearer(
            pb::ReadAccessLogRequest {
                page_size: 100,
                ..Default::default()
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner();
    let misuse: Vec<_> = log
        .records
        .iter()
        .filter(|r| r.reason == "TOKEN_PARTNER_MISMATCH")
        .collect();
    assert_eq!(misuse.len(), 2);
    assert!(misuse.iter().any(|r| r.partner_id == "video"));
}

#[tokio::test]
async fn grant_released() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, grant) = s.music_grant(&mut music).await;
    let released = music
        .consent
        .release_grant(pb::ReleaseGrantRequest {
            grant_id: grant.grant_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.state, pb::GrantState::Released as i32);
    let err = music.list_threads(&token).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "GRANT_RELEASED");
}

#[tokio::test]
async fn missing_malformed_oversized_and_unknown_tokens() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let err = music
        .messaging
        .list_threads(list_threads())
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "TOKEN_MISSING");
    let unknown = format!("pgt_{}", "A".repeat(43));
    for token in ["", "nonsense", &"x".repeat(10 * 1024), &unknown] {
        let err = music.list_threads(token).await.unwrap_err();
        assert_refused(&err, Code::Unauthenticated, "TOKEN_INVALID");
    }
    // Over the 16 KiB header limit, every surface says so rather than failing with UNKNOWN.
    let huge = "x".repeat(20 * 1024);
    let err = music.list_threads(&huge).await.unwrap_err();
    assert_refused(&err, Code::ResourceExhausted, "HEADERS_TOO_LARGE");
    let err = s
        .platform
        .account()
        .await
        .list_grants(bearer(pb::ListGrantsRequest::default(), &huge))
        .await
        .unwrap_err();
    assert_refused(&err, Code::ResourceExhausted, "HEADERS_TOO_LARGE");
}

#[tokio::test]
async fn unregistered_partner_and_wrong_surface_identities() {
    let s = Scenario::new().await;
    let mut rogue = s.platform.partner("rogue").await;
    let err = rogue
        .consent
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "PARTNER_UNKNOWN");

    let operator_on_partner = s
        .platform
        .channel(s.platform.addrs.partner, Some(&s.platform.pki.operator))
        .await
        .unwrap();
    let err = pb::consent_client::ConsentClient::new(operator_on_partner)
        .introspect_grants(pb::IntrospectGrantsRequest::default())
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "WRONG_IDENTITY");

    let music_cert = s.platform.partner_cert("music");
    let partner_on_operator = s
        .platform
        .channel(s.platform.addrs.operator, Some(music_cert))
        .await
        .unwrap();
    let err = pb::partner_admin_client::PartnerAdminClient::new(partner_on_operator)
        .suspend_partner(pb::SuspendPartnerRequest {
            partner_id: "video".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "WRONG_IDENTITY");
}

#[tokio::test]
async fn idempotent_sends() {
    let s = Scenario::new().await;
    let mut bank = s.platform.partner("bank").await;
    let (token, _) = s.family_grant(&mut bank, &s.alice, "receipts").await;
    let thread = bank.shown.thread(&s.family_thread);
    let send = |body: &str| pb::SendMessageRequest {
        thread_id: thread.clone(),
        body: body.into(),
        idempotency_key: "receipt-42".into(),
        card: None,
    };
    let first = bank
        .messaging
        .send_message(bearer(send("paid 10"), &token))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        let retry = bank
            .messaging
            .send_message(bearer(send("paid 10"), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(retry.message_id, first.message_id);
    }
    let err = bank
        .messaging
        .send_message(bearer(send("paid 99"), &token))
        .await
        .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");

    // A key belongs to its grant: under bob's grant the same key is a new request.
    let (bob_token, _) = s.family_grant(&mut bank, &s.bob, "receipts").await;
    let bobs = bank
        .messaging
        .send_message(bearer(send("bob paid 5"), &bob_token))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.message_id, first.message_id);

    let all = s
        .platform
        .account()
        .await
        .list_messages(bearer(
            pb::ListMessagesRequest {
                thread_id: s.family_thread.clone(),
                ..Default::default()
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.messages.iter().filter(|m| m.body == "paid 10").count(),
        1
    );
    // The bank may not read what it sent.
    let err = bank.list_messages(&thread, &token).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "SCOPE_MISSING");

    // And it holds for a day: after that, the same key starts a new request.
    s.platform.clock.advance_ms(25 * 60 * 60 * 1000);
    let later = bank
        .messaging
        .send_message(bearer(send("paid 11"), &token))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(later.message_id, first.message_id);
}

#[tokio::test]
async fn registration_refuses_scopes_the_partner_may_not_have() {
    let s = Scenario::new().await;
    let err = s
        .platform
        .operator()
        .await
        .register_feature(pb::RegisterFeatureRequest {
            partner_id: "bank".into(),
            feature: Some(pb::Feature {
                name: "snoop".into(),
                description: "read everything".into(),
                scopes: vec![pb::Scope::MessagesRead as i32],
                retired: false,
                card_kinds: Vec::new(),
            }),
        })
        .await
        .unwrap_err();
    assert_invalid_field(&err, "feature.scopes");

    // A bad field of its own is named with the scope the bank may not have, and with a bad
    // partner id, the feature's fields that can be checked alone.
    let snoop = |name: &str, description: &str| pb::Feature {
        name: name.into(),
        description: description.into(),
        scopes: vec![pb::Scope::MessagesRead as i32],
        retired: false,
        card_kinds: Vec::new(),
    };
    let mut operator = s.platform.operator().await;
    for (partner_id, feature, fields) in [
        (
            "bank",
            snoop("snoop", ""),
            ["feature.description", "feature.scopes"],
        ),
        (
            "Bank!",
            snoop("Snoop!", "read"),
            ["partner_id", "feature.name"],
        ),
    ] {
        let err = operator
            .register_feature(pb::RegisterFeatureRequest {
                partner_id: partner_id.into(),
                feature: Some(feature),
            })
            .await
            .unwrap_err();
        end_to_end::assert_invalid_fields(&err, &fields);
    }
    // An unknown partner is not found, whatever the feature.
    let err = operator
        .register_feature(pb::RegisterFeatureRequest {
            partner_id: "nobody".into(),
            feature: None,
        })
        .await
        .unwrap_err();
    assert_not_found(&err, "partner");
    // A partner registered with the same feature twice, or a scope twice, is told which.
    let err = operator
        .register_partner(pb::RegisterPartnerRequest {
            partner_id: "twice".into(),
            display_name: "Twice".into(),
            allowed_scopes: vec![
                pb::Scope::MessagesRead as i32,
                pb::Scope::MessagesRead as i32,
            ],
            redirect_uris: Vec::new(),
            features: vec![snoop("snoop", "read"), snoop("snoop", "read again")],
        })
        .await
        .unwrap_err();
    end_to_end::assert_invalid_fields(&err, &["allowed_scopes[1]", "features[1].name"]);
}

#[tokio::test]
async fn a_user_cannot_approve_more_than_asked() {
    let s = Scenario::new().await;
    let mut video = s.platform.partner("video").await;
    let request = video
        .consent
        .request_access(pb::RequestAccessRequest {
            binding_message: "1234-5678".into(),
            account_label: "the test account".into(),
            user_name: "alice".into(),
            feature: "recommend".into(),
            coverage: pb::ThreadCoverage::AllThreads as i32,
            purpose: "recommend videos".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = s
        .platform
        .account()
        .await
        .approve_request(bearer(
            pb::ApproveRequestRequest {
                request_id: request.request_id,
                scopes: vec![pb::Scope::MessagesRead as i32],
                ..Default::default()
            },
            &s.alice.session,
        ))
        .await
        .unwrap_err();
    assert_invalid_field(&err, "scopes");
}

#[tokio::test]
async fn invalid_input_names_the_field() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let (token, _) = s
        .family_grant(&mut music, &s.alice, "listening-party")
        .await;
    let list = |thread_id: &str, page_size: i32, page_token: &str| {
        bearer(
            pb::ListMessagesRequest {
                thread_id: thread_id.into(),
                page_size,
                page_token: page_token.into(),
            },
            &token,
        )
    };
    let err = music
        .messaging
        .list_messages(list(&s.family_thread, 101, ""))
        .await
        .unwrap_err();
    assert_invalid_field(&err, "page_size");
    let err = music
        .messaging
        .list_messages(list(&s.family_thread, 10, "garbage"))
        .await
        .unwrap_err();
    assert_invalid_field(&err, "page_token");
    let err = music
        .messaging
        .list_messages(list("../etc/passwd", 10, ""))
        .await
        .unwrap_err();
    assert_invalid_field(&err, "thread_id");
    let err = music
        .messaging
        .list_messages(list("", 10, ""))
        .await
        .unwrap_err();
    assert_invalid_field(&err, "thread_id");
    let err = music
        .messaging
        .list_messages(list("thr_doesnotexist", 10, ""))
        .await
        .unwrap_err();
    assert_not_found(&err, "thread");
    // A thread id the partner was not given, the platform's own included, is named.
    let err = music
        .consent
        .request_access(pb::RequestAccessRequest {
            user_name: "alice".into(),
            feature: "listening-party".into(),
            coverage: pb::ThreadCoverage::ListedThreads as i32,
            thread_ids: vec![
                music.shown.thread(&s.family_thread),
                s.family_thread.clone(),
            ],
            purpose: "to test".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_field(&err, "thread_ids[1]");
    // Every bad thread id of a request is named: malformed, repeated, or never given.
    let shown = music.shown.thread(&s.family_thread);
    let err = music
        .consent
        .request_access(pb::RequestAccessRequest {
            user_name: "alice".into(),
            feature: "listening-party".into(),
            coverage: pb::ThreadCoverage::ListedThreads as i32,
            thread_ids: vec![
                String::new(),
                shown.clone(),
                format!("thr_{}", shown["thr_".len()..].to_uppercase()),
                s.family_thread.clone(),
            ],
            purpose: "to test".into(),
            binding_message: "1234-5678".into(),
            account_label: "the test account".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_fields(&err, &["thread_ids[0]", "thread_ids[2]", "thread_ids[3]"]);
    // With an unknown coverage, the threads are still checked as listed ones, not refused
    // as too many.
    let err = music
        .consent
        .push_authorization(pb::PushAuthorizationRequest {
            feature: "listening-party".into(),
            coverage: 99,
            thread_ids: vec![music.shown.thread(&s.family_thread)],
            purpose: "to test".into(),
            redirect_uri: end_to_end::redirect_uri("music"),
            state: "st-1".into(),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            code_challenge_method: "S256".into(),
            include_history: false,
        })
        .await
        .unwrap_err();
    assert_invalid_fields(&err, &["coverage"]);
    let err = music
        .messaging
        .list_messages(list("", 101, "garbage"))
        .await
        .unwrap_err();
    assert_invalid_fields(&err, &["thread_id", "page_size", "page_token"]);

    let mut account = s.platform.account().await;
    for (body, field) in [("", "body"), (&"x".repeat(5000) as &str, "body")] {
        let err = account
            .send_message(bearer(
                pb::AccountSendMessageRequest {
                    thread_id: s.family_thread.clone(),
                    body: body.into(),
                },
                &s.alice.session,
            ))
            .await
            .unwrap_err();
        assert_invalid_field(&err, field);
    }
    let err = account
        .sign_up(pb::SignUpRequest {
            user_name: "Bad Name!".into(),
            display_name: "x".into(),
            password: "long enough".into(),
        })
        .await
        .unwrap_err();
    assert_invalid_field(&err, "user_name");
    let err = account
        .sign_up(pb::SignUpRequest {
            user_name: "Bad Name!".into(),
            display_name: String::new(),
            password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_invalid_fields(&err, &["user_name", "display_name", "password"]);
}

#[tokio::test]
async fn sessions_and_credentials() {
    let s = Scenario::new().await;
    let mut account = s.platform.account().await;
    let err = account
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "SESSION_INVALID");
    let err = account
        .sign_in(pb::SignInRequest {
            user_name: "alice".into(),
            password: "wrong password".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "BAD_CREDENTIALS");
    let err = account
        .sign_up(pb::SignUpRequest {
            user_name: "alice".into(),
            display_name: "again".into(),
            password: "long enough".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, "ALREADY_EXISTS");
}

#[tokio::test]
async fn pending_requests_are_deduplicated_capped_per_partner_and_expire() {
    let s = Scenario::new().await;
    let mut music = s.platform.partner("music").await;
    let mut account = s.platform.account().await;
    let ask = |feature: &str, history: bool, threads: Vec<String>| pb::RequestAccessRequest {
        binding_message: "1234-5678".into(),
        account_label: "the test account".into(),
        user_name: "alice".into(),
        feature: feature.into(),
        coverage: if threads.is_empty() {
            pb::ThreadCoverage::PartnerStartedThreads
        } else {
            pb::ThreadCoverage::ListedThreads
        } as i32,
        thread_ids: threads,
        include_history: history,
        purpose: "to test".into(),
    };
    let family = vec![music.shown.thread(&s.family_thread)];
    let first = music
        .consent
        .request_access(ask("share-tracks", false, vec![]))
        .await
        .unwrap()
        .into_inner();
    let again = music
        .consent
        .request_access(ask("share-tracks", false, vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.request_id, first.request_id,
        "a retry is the same request"
    );
    for (feature, history, threads) in [
        ("share-tracks", true, vec![]),
        ("listening-party", true, family.clone()),
    ] {
        music
            .consent
            .request_access(ask(feature, history, threads))
            .await
            .unwrap();
    }
    let err = music
        .consent
        .request_access(ask("listening-party", false, family.clone()))
        .await
        .unwrap_err();
    assert_refused(&err, Code::ResourceExhausted, "TOO_MANY_PENDING_REQUESTS");
    let pending = || bearer(pb::ListPendingRequestsRequest::default(), &s.alice.session);
    let listed = account.list_pending_requests(pending()).await.unwrap();
    assert_eq!(listed.into_inner().requests.len(), 3);

    // A day later, undecided requests have expired: off the consent screen, reported as
    // expired to the partner, no longer approvable, and no longer counted.
    s.platform.clock.advance_ms(DAY_MS + 1);
    let session = account
        .sign_in(pb::SignInRequest {
            user_name: "alice".into(),
            password: "correct horse".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_token;
    let pending = || bearer(pb::ListPendingRequestsRequest::default(), &session);
    let listed = account.list_pending_requests(pending()).await.unwrap();
    assert!(listed.into_inner().requests.is_empty());
    let exchanged = music
        .consent
        .exchange_request(pb::ExchangeRequestRequest {
            request_id: first.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exchanged.status, pb::RequestStatus::RequestExpired as i32);
    assert!(exchanged.grant_token.is_empty());
    let err = account
        .approve_request(bearer(
            pb::ApproveRequestRequest {
                request_id: first.request_id,
                ..Default::default()
            },
            &session,
        ))
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "REQUEST_EXPIRED");
    music
        .consent
        .request_access(ask("listening-party", false, family))
        .await
        .expect("the cap counts pending requests only");
}
