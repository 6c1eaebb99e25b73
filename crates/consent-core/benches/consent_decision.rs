//! The consent decision alone: `rules::authorize` for an allowed and a refused call
//! (`cargo bench -p consent-core`). The end-to-end benchmark reports its p99 as well.

mod decision_inputs;

use consent_core::model::Scope;
use consent_core::rules::{GrantContext, authorize};
use criterion::{Criterion, criterion_group, criterion_main};
use decision_inputs::decision_inputs;
use std::hint::black_box;

fn decision(c: &mut Criterion) {
    let (grant, partner, feature, policy) = decision_inputs();
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
