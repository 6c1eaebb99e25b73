//! The user surface under abuse: sign-in throttling per account name and per client
//! address, and a password-hashing queue that refuses a flood instead of queueing it while
//! sign-ins are still served.

use consent_core::clock::Clock;
use consent_proto::platform::v1 as pb;
use end_to_end::{TestPlatform, assert_refused, seed_family, sign_up};
use pb::account_client::AccountClient;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Code, Status};

async fn sign_in(
    account: &mut AccountClient<Channel>,
    name: &str,
    password: &str,
) -> Result<pb::SignInResponse, Status> {
    account
        .sign_in(pb::SignInRequest {
            user_name: name.into(),
            password: password.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn sign_up_as(account: &mut AccountClient<Channel>, name: &str) -> Result<(), Status> {
    account
        .sign_up(pb::SignUpRequest {
            user_name: name.into(),
            display_name: name.to_uppercase(),
            password: "correct horse".into(),
        })
        .await
        .map(drop)
}

fn throttled(status: &Status) {
    assert_refused(status, Code::ResourceExhausted, "SIGN_IN_THROTTLED");
}

#[tokio::test]
async fn an_account_name_backs_off_after_its_failures_known_or_not() {
    let platform = TestPlatform::start_with(|config| {
        config.sign_in.account_failures = 3;
        config.sign_in.first_backoff_secs = 10;
    })
    .await;
    let mut account = platform.account().await;
    seed_family(&mut account).await;
    for name in ["alice", "nobody"] {
        for _ in 0..3 {
            let err = sign_in(&mut account, name, "wrong password")
                .await
                .unwrap_err();
            assert_refused(&err, Code::Unauthenticated, "BAD_CREDENTIALS");
        }
        // Past the threshold even the right password waits; an unknown name is treated
        // exactly as a known one, so the throttle tells nobody which names exist.
        throttled(
            &sign_in(&mut account, name, "correct horse")
                .await
                .unwrap_err(),
        );
    }
    assert!(sign_in(&mut account, "bob", "correct horse").await.is_ok());

    advance_past_backoff(&platform.clock, 10);
    sign_in(&mut account, "alice", "correct horse")
        .await
        .expect("after the backoff, the right password signs in");
    // The success cleared alice's failures: one more mistake is not throttled.
    let err = sign_in(&mut account, "alice", "wrong password")
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "BAD_CREDENTIALS");
}

#[tokio::test]
async fn a_client_address_backs_off_after_failures_across_names_and_doubles() {
    let platform = TestPlatform::start_with(|config| {
        config.sign_in.address_failures = 4;
        config.sign_in.first_backoff_secs = 10;
    })
    .await;
    let mut account = platform.account().await;
    seed_family(&mut account).await;
    for name in ["guess1", "guess2", "guess3", "guess4"] {
        let err = sign_in(&mut account, name, "a guessed password")
            .await
            .unwrap_err();
        assert_refused(&err, Code::Unauthenticated, "BAD_CREDENTIALS");
    }
    throttled(
        &sign_in(&mut account, "alice", "correct horse")
            .await
            .unwrap_err(),
    );

    advance_past_backoff(&platform.clock, 10);
    let err = sign_in(&mut account, "guess5", "a guessed password")
        .await
        .unwrap_err();
    assert_refused(&err, Code::Unauthenticated, "BAD_CREDENTIALS");
    // The next backoff is twice as long: 10 s later the address still waits.
    advance_past_backoff(&platform.clock, 10);
    throttled(
        &sign_in(&mut account, "alice", "correct horse")
            .await
            .unwrap_err(),
    );
    advance_past_backoff(&platform.clock, 10);
    assert!(
        sign_in(&mut account, "alice", "correct horse")
            .await
            .is_ok()
    );
}

fn advance_past_backoff(clock: &Arc<Clock>, secs: i64) {
    clock.advance_ms(secs * 1000 + 1);
}

#[tokio::test]
async fn a_flood_of_sign_ups_is_refused_past_the_queue_while_sign_ins_are_served() {
    let platform = TestPlatform::start_with(|config| config.sign_in.pending_sign_ups = 4).await;
    let mut account = platform.account().await;
    seed_family(&mut account).await;

    let flood: Vec<_> = (0..40)
        .map(|n| {
            let mut account = account.clone();
            tokio::spawn(async move {
                let name = format!("flood{n}");
                let result = sign_up_as(&mut account, &name).await;
                (name, result)
            })
        })
        .collect();
    // A sign-in and a sign-up of a taken name, sent while the flood is queued.
    let signed_in = sign_in(&mut account, "alice", "correct horse").await;
    let taken = sign_up_as(&mut account, "bob").await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for task in flood {
        let (name, result) = task.await.expect("sign-up task");
        match result {
            Ok(()) => accepted.push(name),
            Err(status) => {
                assert_refused(&status, Code::ResourceExhausted, "PASSWORD_QUEUE_FULL");
                refused.push(name);
            }
        }
    }
    signed_in.expect("a sign-in is served during the flood");
    // The name is checked before any hashing, so a taken name is told so even when the
    // hashing queue is full.
    assert_refused(&taken.unwrap_err(), Code::AlreadyExists, "ALREADY_EXISTS");
    assert!(
        refused.len() >= 20,
        "most of 40 sign-ups at once are refused past a queue of 4: {} refused",
        refused.len()
    );
    assert!(!accepted.is_empty(), "the queue's own sign-ups are served");

    // Nothing of a refused sign-up was written: its name is free to take now.
    let late = sign_up(&mut account, &refused[0]).await;
    assert!(!late.session.is_empty());
    assert!(
        sign_in(&mut account, &accepted[0], "correct horse")
            .await
            .is_ok()
    );
}
