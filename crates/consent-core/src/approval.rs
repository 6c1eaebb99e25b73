//! The rules of getting a grant: what a partner may ask a user for, and what the user's
//! approval on the consent screen turns into. The user may approve fewer scopes, no history
//! and a shorter lifetime than asked, never more; the lifetime is capped by operator
//! policy. With listed coverage the user picks the threads, any of their own: those the
//! partner asked for are offered first, ticked, and a partner may ask for none and leave
//! the choice to the user.

use crate::clock::DAY_MS;
use crate::denial::{Denied, FieldViolation, Reason, Refusal};
use crate::model::{
    AccessRequest, Coverage, Feature, Grant, GrantState, Partner, RequestStatus, ScopeSet, Thread,
};
use crate::rules::LifetimePolicy;

/// Whether a partner may ask `user_id` for access to `feature` over the `listed` threads
/// (each id with the thread it names, if any). A retired feature cannot be asked for; a
/// listed thread must include the user, and one that does not is answered exactly as one
/// that does not exist.
pub fn may_request(
    user_id: &str,
    feature: &Feature,
    listed: &[(&str, Option<Thread>)],
) -> Result<(), Refusal> {
    may_ask_for(feature)?;
    for (index, (id, thread)) in listed.iter().enumerate() {
        let member = thread
            .as_ref()
            .is_some_and(|t| crate::ownership::is_member(user_id, t));
        if !member {
            return Err(Refusal::NotFound {
                kind: "thread",
                id: format!("thread_ids[{index}] {id}"),
            });
        }
    }
    Ok(())
}

/// Whether a partner may ask for `feature` at all: not once it is retired.
pub fn may_ask_for(feature: &Feature) -> Result<(), Refusal> {
    if feature.retired {
        return Err(Refusal::Precondition(Denied::new(
            Reason::FeatureNotActive,
            format!("feature {} is retired", feature.name),
        )));
    }
    Ok(())
}

/// A pending request not decided within this long expires.
pub const REQUEST_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// Pending requests one partner may have for one account name at a time.
pub const MAX_PENDING_PER_PARTNER: usize = 3;

/// Requests made before this instant and still pending have expired at `now_ms`.
pub fn request_cutoff_ms(now_ms: i64) -> i64 {
    now_ms.saturating_sub(REQUEST_TTL_MS)
}

/// The status of `access` at `now_ms`: a pending request past [`REQUEST_TTL_MS`] is
/// expired, whether or not the sweep has marked it yet.
pub fn status_at(access: &AccessRequest, now_ms: i64) -> RequestStatus {
    if access.status == RequestStatus::Pending && access.created_ms < request_cutoff_ms(now_ms) {
        RequestStatus::RequestExpired
    } else {
        access.status
    }
}

/// What to do with a new request, given the partner's requests still pending for the
/// same account name.
#[derive(Debug)]
pub enum Placement<'a> {
    /// The same request is already pending: answer with it, add nothing.
    Existing(&'a AccessRequest),
    /// Add the new request.
    New,
}

/// Where a partner's new request `wanted` goes: a request identical to a pending one (same
/// feature, coverage, threads, history, binding message and account label) is that one,
/// so retries do not pile up on the user's consent screen; past
/// [`MAX_PENDING_PER_PARTNER`] different ones, it is refused. The rule is the same whether
/// or not a user has the name; requests made while no user had it (which no one can
/// approve) do not count once someone has. Only decoupled requests (those with a binding
/// message) count: one the consent page made for the code flow is that page's.
pub fn place_request<'a>(
    pending: &'a [AccessRequest],
    wanted: &AccessRequest,
) -> Result<Placement<'a>, Refusal> {
    let counted = |a: &&AccessRequest| a.user_id == wanted.user_id && !a.binding_message.is_empty();
    let same = |a: &&AccessRequest| {
        counted(a)
            && a.feature == wanted.feature
            && a.coverage == wanted.coverage
            && a.thread_ids == wanted.thread_ids
            && a.include_history == wanted.include_history
            && a.binding_message == wanted.binding_message
            && a.account_label == wanted.account_label
    };
    if let Some(existing) = pending.iter().find(same) {
        return Ok(Placement::Existing(existing));
    }
    if pending.iter().filter(counted).count() >= MAX_PENDING_PER_PARTNER {
        return Err(Refusal::Exhausted(Denied::new(
            Reason::TooManyPendingRequests,
            format!(
                "{MAX_PENDING_PER_PARTNER} requests for this name are already pending: wait for a decision"
            ),
        )));
    }
    Ok(Placement::New)
}

/// Whether the user may still decide (approve or deny) `access` at `now_ms`: only while
/// it is pending and not expired.
pub fn may_decide(access: &AccessRequest, now_ms: i64) -> Result<(), Refusal> {
    match status_at(access, now_ms) {
        RequestStatus::Pending => Ok(()),
        RequestStatus::RequestExpired => Err(Refusal::Precondition(Denied::new(
            Reason::RequestExpired,
            "the request expired before it was decided",
        ))),
        _ => Err(Refusal::Precondition(Denied::new(
            Reason::RequestNotPending,
            "the request was already decided",
        ))),
    }
}

/// Whether a decision of `access` is the one already made of it, sent again (a double
/// click on Allow, a form sent twice): a denial of a denied request, or an approval with
/// `choice` of an approved one whose grant, still active, is the one `choice` makes. A
/// browser shows only the answer to the last form it sent, so such a form is answered as
/// the first one was rather than refused. `choice` is `None` for a denial.
pub fn decides_again(
    access: &AccessRequest,
    grant: Option<&Grant>,
    choice: Option<&Choice>,
    policy: &LifetimePolicy,
) -> bool {
    match (access.status, choice) {
        (RequestStatus::Denied, None) => true,
        (RequestStatus::Approved | RequestStatus::Exchanged, Some(choice)) => {
            grant.is_some_and(|g| g.state == GrantState::Active && made(access, choice, g, policy))
        }
        _ => false,
    }
}

/// Whether approving `access` with `choice` makes `grant`: its permissions, threads,
/// history and lifetime.
fn made(access: &AccessRequest, choice: &Choice, grant: &Grant, policy: &LifetimePolicy) -> bool {
    choice.scopes == grant.scopes
        && sorted(&choice.thread_ids) == sorted(&grant.thread_ids)
        && (access.include_history && choice.include_history) == grant.include_history
        && lifetime_ms(choice.lifetime_days, policy) == Some(grant.not_after_ms - grant.created_ms)
}

/// Whether the user may decide a request in the platform's own app rather than on its
/// consent page: not one the partner `pushed` for the code flow, since only the consent
/// page's answer reaches the partner (with a code).
pub fn may_decide_in_app(pushed: bool) -> Result<(), Refusal> {
    if pushed {
        return Err(Refusal::Precondition(Denied::new(
            Reason::DecidedOnConsentPage,
            "this request is decided on the platform's consent page",
        )));
    }
    Ok(())
}

/// Whether exchanging an approved request issues its grant's token now: once, and only
/// while the grant is active (a grant revoked before its exchange yields no token).
pub fn may_issue_token(access: &AccessRequest, grant: Option<&Grant>) -> bool {
    access.status == RequestStatus::Approved && grant.is_some_and(|g| g.state == GrantState::Active)
}

/// The threads an approval of a request for listed threads covers when the user, in the
/// platform's app, chose none ("as asked"): those asked for that the user is in (`yours`).
/// With none of them there is nothing to approve as asked, and the user must pick.
pub fn threads_as_asked(yours: Vec<String>) -> Result<Vec<String>, Refusal> {
    if yours.is_empty() {
        return Err(Refusal::Invalid(vec![FieldViolation::new(
            "thread_ids",
            "pick at least one of your threads",
        )]));
    }
    Ok(yours)
}

/// Whether the consent page may approve a request of `coverage` with the `ticked`
/// threads. The page offers a request's threads ticked, so unticking every one is not "as
/// asked" but no choice: the user ticks one, or denies.
pub fn may_approve_ticked(coverage: Coverage, ticked: &[String]) -> Result<(), Refusal> {
    if coverage == Coverage::Listed && ticked.is_empty() {
        return Err(Refusal::Invalid(vec![FieldViolation::new(
            "thread",
            "tick at least one conversation, or deny",
        )]));
    }
    Ok(())
}

/// What the user chose on the consent screen; an empty set or list, or a lifetime of 0,
/// means "as asked".
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// Scopes approved.
    pub scopes: ScopeSet,
    /// Threads approved (listed coverage only).
    pub thread_ids: Vec<String>,
    /// Days the grant lasts.
    pub lifetime_days: u32,
    /// Whether older messages may be read.
    pub include_history: bool,
}

/// The grant an approval makes, before it gets an id and a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// Scopes granted.
    pub scopes: ScopeSet,
    /// Scopes asked for and not granted.
    pub refused: ScopeSet,
    /// Threads covered (listed coverage).
    pub thread_ids: Vec<String>,
    /// Whether older messages may be read.
    pub include_history: bool,
    /// When the grant expires.
    pub not_after_ms: i64,
    /// Whether the user granted less than asked.
    pub narrowed: bool,
}

/// The scopes a request for `feature` asks the user for: those the feature declares that
/// its partner's registration allows.
pub fn asked_scopes(feature: &Feature, partner: &Partner) -> ScopeSet {
    ScopeSet::from_bits(feature.scopes.bits() & partner.allowed_scopes.bits())
}

/// Thread ids in order, to compare two lists as sets.
fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

/// How long a grant approved for `days` lasts: the longest policy allows for 0, `None`
/// beyond it.
fn lifetime_ms(days: u32, policy: &LifetimePolicy) -> Option<i64> {
    match i64::from(days) * DAY_MS {
        0 => Some(policy.max_lifetime_ms),
        ms if ms > policy.max_lifetime_ms => None,
        ms => Some(ms),
    }
}

/// Turns a user's approval of `access` into the grant it makes. The request must still be
/// pending, its partner active and its feature not retired; every field the user chose
/// beyond what was asked, or beyond policy, is named in one refusal.
pub fn approve(
    access: &AccessRequest,
    partner: Option<&Partner>,
    feature: Option<&Feature>,
    choice: Choice,
    now_ms: i64,
    policy: &LifetimePolicy,
) -> Result<Approved, Refusal> {
    let precondition = |reason, message: &str| Refusal::Precondition(Denied::new(reason, message));
    may_decide(access, now_ms)?;
    let Some(partner) = partner.filter(|p| !p.suspended) else {
        return Err(precondition(
            Reason::PartnerSuspended,
            "the partner is suspended",
        ));
    };
    if partner.blocked {
        return Err(precondition(
            Reason::PartnerBlocked,
            "the partner is blocked by an operator",
        ));
    }
    let Some(feature) = feature.filter(|f| !f.retired) else {
        return Err(precondition(
            Reason::FeatureNotActive,
            "the feature was retired",
        ));
    };
    let asked = asked_scopes(feature, partner);
    let mut violations = Vec::new();

    let scopes = if choice.scopes.is_empty() {
        asked
    } else {
        choice.scopes
    };
    if !scopes.is_subset_of(asked) {
        violations.push(FieldViolation::new(
            "scopes",
            format!("may only include scopes asked for: {}", asked.names()),
        ));
    }

    // With listed coverage the user picks among their own threads; the partner's list only
    // says which are offered ticked, so a grant never tells which of them the user is in
    // (the caller checks that each picked thread is the user's, with `may_request`).
    let thread_ids = if access.coverage != Coverage::Listed {
        if !choice.thread_ids.is_empty() {
            violations.push(FieldViolation::new(
                "thread_ids",
                "only a request for listed threads covers chosen threads",
            ));
        }
        Vec::new()
    } else if !choice.thread_ids.is_empty() {
        choice.thread_ids
    } else if access.thread_ids.is_empty() {
        violations.push(FieldViolation::new(
            "thread_ids",
            "pick at least one thread",
        ));
        Vec::new()
    } else {
        access.thread_ids.clone()
    };

    let lifetime_ms = lifetime_ms(choice.lifetime_days, policy).unwrap_or_else(|| {
        violations.push(FieldViolation::new(
            "lifetime_days",
            format!("must be at most {} days", policy.max_lifetime_ms / DAY_MS),
        ));
        0
    });

    if !violations.is_empty() {
        return Err(Refusal::Invalid(violations));
    }
    let include_history = access.include_history && choice.include_history;
    Ok(Approved {
        narrowed: scopes != asked
            || sorted(&thread_ids) != sorted(&access.thread_ids)
            || include_history != access.include_history,
        refused: asked.minus(scopes),
        scopes,
        thread_ids,
        include_history,
        not_after_ms: now_ms + lifetime_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Scope;

    const POLICY: LifetimePolicy = LifetimePolicy {
        max_lifetime_ms: 90 * DAY_MS,
        inactivity_lapse_ms: 30 * DAY_MS,
    };

    fn access() -> AccessRequest {
        AccessRequest {
            id: "req_1".into(),
            partner_id: "files".into(),
            feature: "share".into(),
            user_id: "usr_a".into(),
            user_name: "alice".into(),
            binding_message: "1234-5678".into(),
            account_label: "files account 'a'".into(),
            coverage: Coverage::Listed,
            thread_ids: vec!["thr_1".into(), "thr_2".into()],
            include_history: true,
            purpose: String::new(),
            status: RequestStatus::Pending,
            grant_id: None,
            created_ms: 0,
        }
    }
    fn partner() -> Partner {
        Partner {
            id: "files".into(),
            display_name: "Files".into(),
            allowed_scopes: ScopeSet::of(&[Scope::MessagesRead, Scope::MessagesWrite]),
            suspended: false,
            blocked: false,
            redirect_uris: Vec::new(),
        }
    }
    fn feature() -> Feature {
        Feature {
            partner_id: "files".into(),
            name: "share".into(),
            description: String::new(),
            scopes: ScopeSet::of(&[
                Scope::MessagesRead,
                Scope::MessagesWrite,
                Scope::FriendsRead,
            ]),
            retired: false,
            card_kinds: Vec::new(),
        }
    }

    #[test]
    fn an_approval_as_asked_grants_what_both_feature_and_registration_allow() {
        let (a, p, f) = (access(), partner(), feature());
        let choice = Choice {
            include_history: true,
            ..Choice::default()
        };
        let approved = approve(&a, Some(&p), Some(&f), choice, 1_000, &POLICY).unwrap();
        assert_eq!(
            approved.scopes,
            ScopeSet::of(&[Scope::MessagesRead, Scope::MessagesWrite]),
            "friends.read is not in the registration"
        );
        assert!(!approved.narrowed);
        assert_eq!(
            approved.not_after_ms,
            1_000 + 90 * DAY_MS,
            "capped by policy"
        );
    }

    #[test]
    fn a_narrower_approval_is_marked_narrowed_and_names_what_was_refused() {
        let (a, p, f) = (access(), partner(), feature());
        let choice = Choice {
            scopes: ScopeSet::of(&[Scope::MessagesWrite]),
            thread_ids: vec!["thr_2".into()],
            lifetime_days: 7,
            include_history: false,
        };
        let approved = approve(&a, Some(&p), Some(&f), choice, 0, &POLICY).unwrap();
        assert!(approved.narrowed);
        assert_eq!(approved.refused, ScopeSet::of(&[Scope::MessagesRead]));
        assert_eq!(approved.thread_ids, ["thr_2"]);
        assert!(!approved.include_history);
        assert_eq!(approved.not_after_ms, 7 * DAY_MS);
    }

    #[test]
    fn every_field_chosen_beyond_the_request_or_policy_is_named() {
        let (p, f) = (partner(), feature());
        let a = AccessRequest {
            thread_ids: Vec::new(),
            ..access()
        };
        let choice = Choice {
            scopes: ScopeSet::of(&[Scope::FriendsRead]),
            thread_ids: Vec::new(),
            lifetime_days: 365,
            include_history: false,
        };
        let refused = approve(&a, Some(&p), Some(&f), choice, 0, &POLICY).unwrap_err();
        let Refusal::Invalid(violations) = refused else {
            panic!("{refused:?}");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["scopes", "thread_ids", "lifetime_days"]);
    }

    #[test]
    fn listed_threads_as_asked_are_the_users_own_and_the_page_needs_one_ticked() {
        let field = |r: Refusal| match r {
            Refusal::Invalid(v) => v[0].field.clone(),
            other => panic!("{other:?}"),
        };
        let yours = vec!["thr_1".to_string()];
        assert_eq!(threads_as_asked(yours.clone()).unwrap(), yours);
        assert_eq!(
            field(threads_as_asked(Vec::new()).unwrap_err()),
            "thread_ids"
        );

        assert!(may_approve_ticked(Coverage::Listed, &yours).is_ok());
        let none_ticked = may_approve_ticked(Coverage::Listed, &[]).unwrap_err();
        assert_eq!(field(none_ticked), "thread");
        assert!(may_approve_ticked(Coverage::All, &[]).is_ok());
    }

    #[test]
    fn a_decided_request_a_suspended_partner_or_a_retired_feature_cannot_be_approved() {
        let (p, f) = (partner(), feature());
        let decided = AccessRequest {
            status: RequestStatus::Denied,
            ..access()
        };
        let reason = |r: Refusal| match r {
            Refusal::Precondition(d) => d.reason,
            other => panic!("{other:?}"),
        };
        let refused = approve(&decided, Some(&p), Some(&f), Choice::default(), 0, &POLICY);
        assert_eq!(reason(refused.unwrap_err()), Reason::RequestNotPending);
        let suspended = Partner {
            suspended: true,
            ..partner()
        };
        let refused = approve(
            &access(),
            Some(&suspended),
            Some(&f),
            Choice::default(),
            0,
            &POLICY,
        );
        assert_eq!(reason(refused.unwrap_err()), Reason::PartnerSuspended);
        let retired = Feature {
            retired: true,
            ..feature()
        };
        let refused = approve(
            &access(),
            Some(&p),
            Some(&retired),
            Choice::default(),
            0,
            &POLICY,
        );
        assert_eq!(reason(refused.unwrap_err()), Reason::FeatureNotActive);
    }

    #[test]
    fn a_listed_thread_without_the_user_looks_like_no_thread() {
        let thread = |participants: &[&str]| Thread {
            id: "thr_1".into(),
            title: String::new(),
            started_by_partner: None,
            created_ms: 0,
            participants: participants.iter().map(|p| p.to_string()).collect(),
        };
        let f = feature();
        assert!(may_request("usr_a", &f, &[("thr_1", Some(thread(&["usr_a"])))]).is_ok());
        let absent = may_request("usr_a", &f, &[("thr_1", None)]).unwrap_err();
        let foreign = may_request("usr_a", &f, &[("thr_1", Some(thread(&["usr_b"])))]).unwrap_err();
        assert_eq!(absent, foreign, "no oracle for whether the thread exists");
    }

    #[test]
    fn a_repeated_request_is_the_pending_one_and_more_than_three_are_refused() {
        let pending = vec![access()];
        let again = AccessRequest {
            id: "req_2".into(),
            purpose: "asked again".into(),
            ..access()
        };
        match place_request(&pending, &again).unwrap() {
            Placement::Existing(existing) => assert_eq!(existing.id, "req_1"),
            Placement::New => panic!("a duplicate must not be added"),
        }
        let other = |n: &str| AccessRequest {
            id: format!("req_{n}"),
            thread_ids: vec![format!("thr_{n}")],
            ..access()
        };
        assert!(matches!(
            place_request(&pending, &other("9")),
            Ok(Placement::New)
        ));
        let from_the_consent_page = |n: &str| AccessRequest {
            binding_message: String::new(),
            ..other(n)
        };
        let code_flow = vec![
            from_the_consent_page("3"),
            from_the_consent_page("4"),
            from_the_consent_page("5"),
        ];
        assert!(matches!(
            place_request(&code_flow, &other("6")),
            Ok(Placement::New)
        ));
        let full = vec![other("3"), other("4"), other("5")];
        let refused = place_request(&full, &other("6")).unwrap_err();
        assert!(matches!(
            refused,
            Refusal::Exhausted(Denied {
                reason: Reason::TooManyPendingRequests,
                ..
            })
        ));
    }

    #[test]
    fn only_the_decision_already_made_is_a_decision_sent_again() {
        let decided = |status| AccessRequest { status, ..access() };
        let choice = Choice {
            scopes: ScopeSet::of(&[Scope::MessagesRead]),
            thread_ids: vec!["thr_2".into(), "thr_1".into()],
            lifetime_days: 7,
            include_history: true,
        };
        let approved = approve(
            &access(),
            Some(&partner()),
            Some(&feature()),
            choice.clone(),
            100,
            &POLICY,
        )
        .unwrap();
        let grant = Grant {
            id: "grt_1".into(),
            user_id: "usr_a".into(),
            partner_id: "files".into(),
            feature: "share".into(),
            scopes: approved.scopes,
            coverage: Coverage::Listed,
            thread_ids: vec!["thr_1".into(), "thr_2".into()],
            include_history: approved.include_history,
            created_ms: 100,
            not_after_ms: approved.not_after_ms,
            last_used_ms: None,
            state: GrantState::Active,
            ended_ms: None,
            attested_ms: None,
        };
        let again = |status, grant: Option<&Grant>, choice: Option<&Choice>| {
            decides_again(&decided(status), grant, choice, &POLICY)
        };
        for status in [RequestStatus::Approved, RequestStatus::Exchanged] {
            assert!(again(status, Some(&grant), Some(&choice)), "{status:?}");
            assert!(
                !again(status, Some(&grant), None),
                "a denial after an approval"
            );
        }
        assert!(again(RequestStatus::Denied, None, None));
        for status in [RequestStatus::Pending, RequestStatus::RequestExpired] {
            assert!(!again(status, None, None) && !again(status, None, Some(&choice)));
        }
        assert!(!again(RequestStatus::Denied, None, Some(&choice)));
        assert!(!again(RequestStatus::Approved, None, Some(&choice)));
        let revoked = Grant {
            state: GrantState::Revoked,
            ..grant.clone()
        };
        assert!(!again(
            RequestStatus::Exchanged,
            Some(&revoked),
            Some(&choice)
        ));
        // Another tab's different choice is not the decision made.
        let others = [
            Choice {
                scopes: ScopeSet::of(&[Scope::MessagesRead, Scope::MessagesWrite]),
                ..choice.clone()
            },
            Choice {
                thread_ids: vec!["thr_1".into()],
                ..choice.clone()
            },
            Choice {
                lifetime_days: 8,
                ..choice.clone()
            },
            Choice {
                include_history: false,
                ..choice.clone()
            },
        ];
        for other in &others {
            assert!(
                !again(RequestStatus::Exchanged, Some(&grant), Some(other)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn an_undecided_request_expires_after_a_day() {
        let a = access();
        assert_eq!(status_at(&a, REQUEST_TTL_MS), RequestStatus::Pending);
        assert!(may_decide(&a, REQUEST_TTL_MS).is_ok());
        assert_eq!(
            status_at(&a, REQUEST_TTL_MS + 1),
            RequestStatus::RequestExpired
        );
        assert!(matches!(
            may_decide(&a, REQUEST_TTL_MS + 1),
            Err(Refusal::Precondition(Denied {
                reason: Reason::RequestExpired,
                ..
            }))
        ));
        let decided = AccessRequest {
            status: RequestStatus::Denied,
            ..access()
        };
        assert_eq!(
            status_at(&decided, 10 * REQUEST_TTL_MS),
            RequestStatus::Denied
        );
    }
}
