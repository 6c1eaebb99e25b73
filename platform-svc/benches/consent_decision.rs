//! The consent decision alone: `consent::authorize` for an allowed and a refused call
//! (`cargo bench -p platform-svc`). The end-to-end benchmark reports its p99 as well.

mod decision_inputs;

use criterion::{Criterion, criterion_group, criterion_main};
use decision_inputs::decision_inputs;
use platform_svc::consent::{GrantContext, authorize};
use platform_svc::model::Scope;
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
