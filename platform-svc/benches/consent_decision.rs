//! The consent decision alone: `consent::authorize` for an allowed and a refused call
//! (`cargo bench -p platform-svc`). The end-to-end benchmark reports its p99 as well.

use criterion::{Criterion, criterion_group, criterion_main};
use platform_svc::consent::{GrantContext, LifetimePolicy, authorize};
use platform_svc::model::{Coverage, Feature, Grant, GrantState, Partner, Scope, ScopeSet};
use std::hint::black_box;

fn decision(c: &mut Criterion) {
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
    };
    let feature = Feature {
        partner_id: "music".into(),
        name: "share".into(),
        description: String::new(),
        scopes: grant.scopes,
        retired: false,
    };
    let policy = LifetimePolicy {
        max_lifetime_ms: i64::MAX,
        inactivity_lapse_ms: i64::MAX,
    };
    let ctx = GrantContext {
        caller_partner_id: "music",
        grant: &grant,
        partner: &partner,
        feature: &feature,
    };
    c.bench_function("consent decision: allowed", |b| {
        b.iter(|| {
            authorize(
                black_box(&ctx),
                black_box(Scope::MessagesRead),
                1_000,
                &policy,
            )
            .is_ok()
        })
    });
    c.bench_function("consent decision: scope missing", |b| {
        b.iter(|| {
            authorize(
                black_box(&ctx),
                black_box(Scope::FriendsRead),
                1_000,
                &policy,
            )
            .is_err()
        })
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
