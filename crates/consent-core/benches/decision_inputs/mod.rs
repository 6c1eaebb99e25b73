//! What both measurements of the consent decision decide on: the criterion benchmark beside
//! this file and the end-to-end `bench` (`tests/bench/report.rs`), which includes it.

use consent_core::model::{Coverage, Feature, Grant, GrantState, Partner, Scope, ScopeSet};
use consent_core::rules::LifetimePolicy;

/// An active grant of `music`'s `share` feature for messages and threads, with a policy
/// that never ends it.
pub fn decision_inputs() -> (Grant, Partner, Feature, LifetimePolicy) {
    let grant = Grant {
        id: "grt_1".into(),
        user_id: "usr_a".into(),
        partner_id: "music".into(),
        feature: "share".into(),
        scopes: ScopeSet::of(&[Scope::MessagesRead, Scope::ThreadsRead]),
        coverage: Coverage::All,
        thread_ids: vec![],
        include_history: false,
        created_ms: 1,
        not_after_ms: i64::MAX,
        last_used_ms: None,
        state: GrantState::Active,
        ended_ms: None,
        attested_ms: None,
    };
    let partner = Partner {
        id: "music".into(),
        display_name: "Music".into(),
        allowed_scopes: ScopeSet::of(&Scope::ALL),
        suspended: false,
        blocked: false,
        redirect_uris: Vec::new(),
    };
    let feature = Feature {
        partner_id: "music".into(),
        name: "share".into(),
        description: String::new(),
        scopes: grant.scopes,
        retired: false,
        card_kinds: Vec::new(),
    };
    let policy = LifetimePolicy {
        max_lifetime_ms: i64::MAX,
        inactivity_lapse_ms: i64::MAX,
    };
    (grant, partner, feature, policy)
}
