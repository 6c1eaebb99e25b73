//! Typed content: each kind of card accepted from a feature that declares it and shown to
//! the thread's people as what it is; each malformed card refused with its field; a card
//! of a kind the feature does not declare refused with its own reason; nothing written.

use consent_proto::platform::v1 as pb;
use end_to_end::{Scenario, assert_invalid_fields, assert_refused, bearer};
use pb::card::Kind;
use tonic::Code;

fn track(link: &str) -> pb::Card {
    pb::Card {
        kind: Some(Kind::Track(pb::Track {
            title: "Blue in Green".into(),
            artist: "Miles Davis".into(),
            link: link.into(),
            duration_seconds: 337,
        })),
    }
}

fn video() -> pb::Card {
    pb::Card {
        kind: Some(Kind::Video(pb::Video {
            title: "Kind of Blue, the documentary".into(),
            link: "https://video.example/v/9".into(),
            duration_seconds: 3600,
        })),
    }
}

fn folder(name: &str) -> pb::Card {
    pb::Card {
        kind: Some(Kind::Folder(pb::SharedFolder {
            name: name.into(),
            item_count: 120,
            link: "https://files.example/f/7".into(),
        })),
    }
}

fn receipt(currency: &str, minor_units: i64) -> pb::Card {
    pb::Card {
        kind: Some(Kind::Receipt(pb::TransferReceipt {
            amount: Some(pb::Money {
                currency: currency.into(),
                minor_units,
            }),
            reference: "TX-42".into(),
            date: Some(consent_core::clock::timestamp(1_764_000_000_000)),
        })),
    }
}

fn send(thread_id: &str, key: &str, card: pb::Card) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        thread_id: thread_id.into(),
        body: "for you".into(),
        idempotency_key: key.into(),
        card: Some(card),
    }
}

/// alice's messages in the family thread, as her own client shows them.
async fn family_messages(s: &Scenario) -> Vec<pb::Message> {
    s.platform
        .account()
        .await
        .list_messages(bearer(
            pb::ListMessagesRequest {
                thread_id: s.family_thread.clone(),
                page_size: 100,
                page_token: String::new(),
            },
            &s.alice.session,
        ))
        .await
        .unwrap()
        .into_inner()
        .messages
}

#[tokio::test]
async fn each_kind_of_card_goes_through_from_the_feature_that_declares_it() {
    let s = Scenario::new().await;
    let mut sent = Vec::new();
    for (partner, feature, card) in [
        ("files", "share-folders", folder("Holiday photos")),
        ("bank", "receipts", receipt("EUR", 2000)),
        ("video", "recommend", video()),
    ] {
        let mut client = s.platform.partner(partner).await;
        let (token, grant) = s.family_grant(&mut client, &s.alice, feature).await;
        let message = client
            .messaging
            .send_message(bearer(
                send(&grant.thread_ids[0], partner, card.clone()),
                &token,
            ))
            .await
            .unwrap_or_else(|e| panic!("{partner}: {e:?}"))
            .into_inner();
        assert_eq!(
            message.card.as_ref(),
            Some(&card),
            "{partner} sees what it sent"
        );
        sent.push(card);
    }
    // A track, in a thread the music app starts with bob.
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    let started = music
        .messaging
        .start_thread(bearer(
            pb::StartThreadRequest {
                participant_ids: vec![music.shown.handle(&s.bob.id)],
                title: "tracks".into(),
                body: "listen".into(),
                idempotency_key: "t1".into(),
                card: Some(track("https://music.example/t/1")),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        started.message.unwrap().card,
        Some(track("https://music.example/t/1"))
    );

    // alice's own client shows each card as what it is.
    let shown: Vec<pb::Card> = family_messages(&s)
        .await
        .into_iter()
        .filter_map(|m| m.card)
        .collect();
    assert_eq!(shown, sent);

    // And the platform's conversation page shows each as what it is, links as links.
    let browser = end_to_end::browser::Browser::new(&s.platform);
    browser.sign_in("alice").await;
    let page = browser.get(&format!("/threads/{}", s.family_thread)).await;
    for text in [
        "Shared folder: Holiday photos (120 items)",
        "href=\"https://files.example/f/7\"",
        "Transfer receipt: EUR 20.00 on 2025-11-24, reference TX-42",
        "Video: Kind of Blue, the documentary (1:00:00), on video.example",
    ] {
        assert!(page.body.contains(text), "{text} in {}", page.body);
    }
    // A thread she is not in is not found, as every page answers a NOT_FOUND, and the page
    // names the code where the refusal carries no reason of its own.
    let missing = browser.get("/threads/no-such-thread").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(
        missing.body.contains("thread not found"),
        "{}",
        missing.body
    );
    assert!(missing.body.contains("NOT_FOUND"), "{}", missing.body);

    // Once her session has ended, though the browser still holds its cookie, the page
    // sends her to sign in and back to it.
    s.platform.clock.advance_ms(400 * 24 * 60 * 60 * 1000);
    let page = browser.get(&format!("/threads/{}", s.family_thread)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let next = format!("/sign-in?next=%2Fthreads%2F{}", s.family_thread);
    assert_eq!(page.location.as_deref(), Some(next.as_str()));
}

#[tokio::test]
async fn a_malformed_card_is_refused_naming_every_bad_field_and_nothing_is_written() {
    let s = Scenario::new().await;
    let mut bank = s.platform.partner("bank").await;
    let (token, grant) = s.family_grant(&mut bank, &s.alice, "receipts").await;
    let thread = &grant.thread_ids[0];
    let before = family_messages(&s).await.len();
    let cases: Vec<(pb::Card, Vec<&str>)> = vec![
        (
            receipt("EUR", -500),
            vec!["card.receipt.amount.minor_units"],
        ),
        (receipt("XYZ", 100), vec!["card.receipt.amount.currency"]),
        (
            receipt("BTC", 0),
            vec![
                "card.receipt.amount.currency",
                "card.receipt.amount.minor_units",
            ],
        ),
        (
            pb::Card {
                kind: Some(Kind::Receipt(pb::TransferReceipt::default())),
            },
            vec![
                "card.receipt.amount",
                "card.receipt.reference",
                "card.receipt.date",
            ],
        ),
        (pb::Card::default(), vec!["card.kind"]),
    ];
    for (n, (card, fields)) in cases.into_iter().enumerate() {
        let err = bank
            .messaging
            .send_message(bearer(send(thread, &format!("k{n}"), card), &token))
            .await
            .unwrap_err();
        assert_invalid_fields(&err, &fields);
    }
    // Links are https only, whatever the kind; an oversized card is refused by its field.
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    for (card, fields) in [
        (track("http://music.example/t/1"), vec!["card.track.link"]),
        (track("javascript:alert(1)"), vec!["card.track.link"]),
        (
            track(&format!("https://music.example/{}", "a".repeat(3000))),
            vec!["card.track.link"],
        ),
        (
            pb::Card {
                kind: Some(Kind::Video(pb::Video {
                    title: String::new(),
                    link: "https://video.example/v/1".into(),
                    duration_seconds: 90_000,
                })),
            },
            vec!["card.video.title", "card.video.duration_seconds"],
        ),
    ] {
        let err = music
            .messaging
            .start_thread(bearer(
                pb::StartThreadRequest {
                    participant_ids: vec![music.shown.handle(&s.bob.id)],
                    title: "t".into(),
                    body: "b".into(),
                    idempotency_key: "k".into(),
                    card: Some(card),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_invalid_fields(&err, &fields);
    }
    let mut files = s.platform.partner("files").await;
    let (token, grant) = s.family_grant(&mut files, &s.alice, "share-folders").await;
    let err = files
        .messaging
        .send_message(bearer(
            send(&grant.thread_ids[0], "f", folder(&"n".repeat(201))),
            &token,
        ))
        .await
        .unwrap_err();
    assert_invalid_fields(&err, &["card.folder.name"]);
    assert_eq!(family_messages(&s).await.len(), before, "nothing written");
}

#[tokio::test]
async fn a_card_of_a_kind_the_feature_does_not_declare_is_refused() {
    let s = Scenario::new().await;
    let mut bank = s.platform.partner("bank").await;
    let (token, grant) = s.family_grant(&mut bank, &s.alice, "receipts").await;
    let before = family_messages(&s).await.len();
    for (n, card) in [folder("Statements"), track("https://music.example/t/1")]
        .into_iter()
        .enumerate()
    {
        let err = bank
            .messaging
            .send_message(bearer(
                send(&grant.thread_ids[0], &format!("k{n}"), card),
                &token,
            ))
            .await
            .unwrap_err();
        assert_refused(&err, Code::PermissionDenied, "CARD_KIND_NOT_DECLARED");
    }
    assert_eq!(family_messages(&s).await.len(), before, "nothing written");

    // A feature declares each kind once, of the kinds there are.
    let mut operator = s.platform.operator().await;
    let err = operator
        .register_partner(pb::RegisterPartnerRequest {
            partner_id: "rogue".into(),
            display_name: "Rogue".into(),
            allowed_scopes: vec![pb::Scope::MessagesWrite as i32],
            features: vec![pb::Feature {
                name: "spam".into(),
                description: "spam".into(),
                scopes: vec![pb::Scope::MessagesWrite as i32],
                retired: false,
                card_kinds: vec![pb::CardKind::Track as i32, 99],
            }],
            redirect_uris: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_invalid_fields(&err, &["features[0].card_kinds[1]"]);
}

#[tokio::test]
async fn a_card_is_checked_on_every_path_and_hidden_with_its_authors_words() {
    let s = Scenario::new().await;
    // StartThread refuses an undeclared kind as SendMessage does.
    let mut music = s.platform.partner("music").await;
    let (token, _) = s.music_grant(&mut music).await;
    let start = |card: pb::Card, key: &str| pb::StartThreadRequest {
        participant_ids: vec![music.shown.handle(&s.bob.id)],
        title: "t".into(),
        body: "b".into(),
        idempotency_key: key.into(),
        card: Some(card),
    };
    let err = music
        .messaging
        .start_thread(bearer(start(receipt("EUR", 100), "r"), &token))
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "CARD_KIND_NOT_DECLARED");
    // The idempotency key covers the card: a retry with another card is refused.
    let first = start(track("https://music.example/t/1"), "same");
    music
        .messaging
        .start_thread(bearer(first, &token))
        .await
        .unwrap();
    let other = start(track("https://music.example/t/2"), "same");
    let err = music
        .messaging
        .start_thread(bearer(other, &token))
        .await
        .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");

    // bob's receipt, sent through his own grant, reaches alice's listening party redacted
    // with his words once he hides from others' apps.
    let mut bank = s.platform.partner("bank").await;
    let (bob_token, bob_grant) = s.family_grant(&mut bank, &s.bob, "receipts").await;
    s.platform
        .account()
        .await
        .set_privacy(bearer(
            pb::SetPrivacyRequest {
                hide_from_others_apps: Some(true),
                ..Default::default()
            },
            &s.bob.session,
        ))
        .await
        .unwrap();
    let (party, party_grant) = s
        .family_grant(&mut music, &s.alice, "listening-party")
        .await;
    bank.messaging
        .send_message(bearer(
            send(&bob_grant.thread_ids[0], "b1", receipt("EUR", 700)),
            &bob_token,
        ))
        .await
        .unwrap();
    let read = music
        .list_messages(&party_grant.thread_ids[0], &party)
        .await
        .unwrap()
        .messages;
    let bobs = read.iter().find(|m| m.redacted).expect("bob's message");
    assert!(bobs.card.is_none() && bobs.body.is_empty(), "{bobs:?}");

    // Registration: a kind declared twice, or by a feature that sends no messages, or
    // one with no scope.
    let mut operator = s.platform.operator().await;
    let feature = |name: &str, card_kinds: Vec<i32>, scopes: Vec<i32>| pb::Feature {
        name: name.into(),
        description: "f".into(),
        scopes,
        retired: false,
        card_kinds,
    };
    let write = pb::Scope::MessagesWrite as i32;
    let friends = pb::Scope::FriendsRead as i32;
    let track_kind = pb::CardKind::Track as i32;
    let err = operator
        .register_partner(pb::RegisterPartnerRequest {
            partner_id: "rogue".into(),
            display_name: "Rogue".into(),
            allowed_scopes: vec![write, friends],
            features: vec![
                feature("f0", vec![track_kind, track_kind], vec![write]),
                feature("f1", vec![track_kind], vec![friends]),
                feature("f2", vec![track_kind], vec![]),
            ],
            redirect_uris: Vec::new(),
        })
        .await
        .unwrap_err();
    // One BadRequest names every bad field of every feature.
    assert_invalid_fields(
        &err,
        &[
            "features[0].card_kinds[1]",
            "features[1].card_kinds",
            "features[2].card_kinds",
            "features[2].scopes",
        ],
    );
    // The partner's own fields are named with its features', not before them.
    let err = operator
        .register_partner(pb::RegisterPartnerRequest {
            partner_id: "Rogue App".into(),
            display_name: "Rogue".into(),
            allowed_scopes: Vec::new(),
            features: vec![feature("f", vec![track_kind], vec![friends])],
            redirect_uris: vec!["http://rogue.example/cb".into()],
        })
        .await
        .unwrap_err();
    assert_invalid_fields(
        &err,
        &[
            "partner_id",
            "allowed_scopes",
            "redirect_uris[0]",
            "features[0].card_kinds",
        ],
    );
}
