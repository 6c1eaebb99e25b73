//! Consent enforcement: the rules that decide whether a partner call may touch a user's
//! data, as pure functions of the grant, the partner, the feature, the resource and the
//! time. Handlers call these and nothing else decides.

use crate::denial::{Denied, FieldViolation, Reason, Refusal};
use crate::model::{
    Coverage, Feature, Grant, GrantState, Message, Partner, Scope, ScopeSet, Thread, ThreadFilter,
    User,
};
use crate::partner_view::PartnerView;
use consent_proto::platform::v1::GrantEventKind;

/// Operator policy on grant lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct LifetimePolicy {
    /// Cap on a grant's lifetime.
    pub max_lifetime_ms: i64,
    /// A grant unused this long lapses.
    pub inactivity_lapse_ms: i64,
}

/// A refusal, and the state the grant must move to because of it (if it ends now).
#[derive(Debug)]
pub struct Denial {
    /// Why.
    pub denied: Denied,
    /// With expiry or lapse: the grant ends now, in this state.
    pub ends_grant: Option<GrantState>,
}

impl Denial {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Denial {
            denied: Denied::new(reason, message),
            ends_grant: None,
        }
    }
    fn ending(reason: Reason, message: &str, state: GrantState) -> Self {
        Denial {
            ends_grant: Some(state),
            ..Denial::new(reason, message)
        }
    }
}

/// Everything known about the grant a token resolved to.
#[derive(Debug)]
pub struct GrantContext<'a> {
    /// The partner on the connection.
    pub caller_partner_id: &'a str,
    /// The grant the token belongs to.
    pub grant: &'a Grant,
    /// The grant's partner.
    pub partner: &'a Partner,
    /// The grant's feature.
    pub feature: &'a Feature,
}

/// Whether the grant may be used now for an RPC needing `required`. Checks, in order:
/// token bound to the caller, grant state, partner suspension, feature retirement,
/// expiry, inactivity, scope.
pub fn authorize(
    ctx: &GrantContext<'_>,
    required: Scope,
    now_ms: i64,
    policy: &LifetimePolicy,
) -> Result<(), Denial> {
    let grant = ctx.grant;
    if grant.partner_id != ctx.caller_partner_id {
        return Err(Denial::new(
            Reason::TokenPartnerMismatch,
            "grant token was issued to another partner",
        ));
    }
    if let Some(reason) = ended_reason(grant.state) {
        return Err(Denial::new(reason, "grant is no longer active"));
    }
    if ctx.partner.suspended {
        return Err(Denial::ending(
            Reason::PartnerSuspended,
            "partner is suspended",
            GrantState::Suspended,
        ));
    }
    if ctx.feature.retired {
        return Err(Denial::ending(
            Reason::FeatureRetired,
            "the grant's feature was retired",
            GrantState::Retired,
        ));
    }
    match ending_due(grant, now_ms, policy) {
        Some(GrantState::Expired) => {
            return Err(Denial::ending(
                Reason::GrantExpired,
                "grant expired",
                GrantState::Expired,
            ));
        }
        Some(state) => {
            return Err(Denial::ending(
                Reason::GrantLapsed,
                "grant lapsed after inactivity",
                state,
            ));
        }
        None => {}
    }
    if !grant.scopes.contains(required) {
        return Err(Denial::new(
            Reason::ScopeMissing,
            format!("grant lacks scope {}", required.name()),
        ));
    }
    Ok(())
}

/// The denial reason for a grant in an ended state, `None` while active.
pub fn ended_reason(state: GrantState) -> Option<Reason> {
    match state {
        GrantState::Active => None,
        GrantState::Revoked => Some(Reason::GrantRevoked),
        GrantState::Expired => Some(Reason::GrantExpired),
        GrantState::Lapsed => Some(Reason::GrantLapsed),
        GrantState::Retired => Some(Reason::FeatureRetired),
        GrantState::Suspended => Some(Reason::PartnerSuspended),
        GrantState::Released => Some(Reason::GrantReleased),
    }
}

/// Refuses a grant that has ended (revoked, expired, released...), with the reason of its
/// state: no token is issued for it.
pub fn still_active(grant: &Grant) -> Result<(), Denied> {
    match ended_reason(grant.state) {
        None => Ok(()),
        Some(reason) => Err(Denied::new(reason, "the grant has ended")),
    }
}

/// How an active grant ends by time alone, if it must end now: expired past its
/// `not_after`, or lapsed after going unused past the inactivity limit.
pub fn ending_due(grant: &Grant, now_ms: i64, policy: &LifetimePolicy) -> Option<GrantState> {
    if now_ms >= grant.not_after_ms {
        Some(GrantState::Expired)
    } else if idle_for(grant, now_ms) >= policy.inactivity_lapse_ms {
        Some(GrantState::Lapsed)
    } else {
        None
    }
}

/// Grants last used (or, never used, created) at or before this instant have lapsed: the
/// bound a store filters by to find them.
pub fn lapse_cutoff_ms(now_ms: i64, policy: &LifetimePolicy) -> i64 {
    now_ms - policy.inactivity_lapse_ms
}

/// How long a grant has gone unused.
fn idle_for(grant: &Grant, now_ms: i64) -> i64 {
    now_ms - grant.last_used_ms.unwrap_or(grant.created_ms)
}

/// The access review's finding on an active grant: unused for `dormant_ms` or more.
pub fn is_dormant(grant: &Grant, now_ms: i64, dormant_ms: i64) -> bool {
    grant.state == GrantState::Active && idle_for(grant, now_ms) >= dormant_ms
}

/// Scopes a grant holds but has never used: the access review suggests dropping them.
pub fn unused_scopes(grant: &Grant, used: ScopeSet) -> ScopeSet {
    grant.scopes.minus(used)
}

/// Whether the partner of an ended grant is past due attesting that it deleted the user's
/// data (`due_ms` after the grant ended).
pub fn attestation_overdue(grant: &Grant, now_ms: i64, due_ms: i64) -> bool {
    grant.state != GrantState::Active
        && grant.attested_ms.is_none()
        && grant
            .ended_ms
            .is_some_and(|ended| ended <= overdue_if_ended_by(now_ms, due_ms))
}

/// The same rule as a bound a query can filter by: an ended, unattested grant's
/// attestation is overdue at `now_ms` if the grant ended at or before this time.
pub fn overdue_if_ended_by(now_ms: i64, due_ms: i64) -> i64 {
    now_ms - due_ms
}

/// Whether the grant covers `thread` (which must include the granting user).
pub fn covers_thread(grant: &Grant, thread: &Thread) -> Result<(), Denied> {
    let covered = crate::ownership::is_member(&grant.user_id, thread)
        && match grant.coverage {
            Coverage::All => true,
            Coverage::Listed => grant.thread_ids.contains(&thread.id),
            Coverage::PartnerStarted => {
                thread.started_by_partner.as_deref() == Some(grant.partner_id.as_str())
            }
        };
    if covered {
        Ok(())
    } else {
        Err(Denied::new(
            Reason::ThreadNotCovered,
            "the thread is not covered by the grant".to_string(),
        ))
    }
}

/// Whether the partner on a connection may call at all: it must be registered, not
/// suspended and not blocked.
pub fn partner_may_call(partner_id: &str, partner: Option<Partner>) -> Result<Partner, Refusal> {
    match partner {
        None => Err(Refusal::Unauthenticated(Denied::new(
            Reason::PartnerUnknown,
            format!("partner {partner_id} is not registered"),
        ))),
        Some(p) if p.suspended => Err(Refusal::Unauthenticated(Denied::new(
            Reason::PartnerSuspended,
            format!("partner {partner_id} is suspended"),
        ))),
        Some(p) if p.blocked => Err(Refusal::Unauthenticated(Denied::new(
            Reason::PartnerBlocked,
            format!("partner {partner_id} is blocked by an operator"),
        ))),
        Some(p) => Ok(p),
    }
}

/// Whether the partner on a connection may do what winding down asks of it, though it may
/// not otherwise call: hear which of its grants ended (its event stream, whose backlog
/// holds the endings a suspension made, or the revocations made while it was blocked) and
/// attest that it deleted their data. A registered partner may, suspended or blocked:
/// both only ever lead it to delete what users no longer allow. An unknown one may not.
pub fn partner_may_wind_down(
    partner_id: &str,
    partner: Option<Partner>,
) -> Result<Partner, Refusal> {
    match partner {
        Some(p) => Ok(p),
        None => partner_may_call(partner_id, None),
    }
}

/// Friend requests one user may send in a day.
pub const MAX_FRIEND_REQUESTS_PER_DAY: usize = 100;

/// Requests sent after this instant count against a user's daily allowance at `now_ms`.
pub fn friend_request_window_ms(now_ms: i64) -> i64 {
    now_ms.saturating_sub(crate::clock::DAY_MS)
}

/// Whether a user who sent `sent_today` friend requests in the last day may send one more:
/// not past [`MAX_FRIEND_REQUESTS_PER_DAY`], so no one can fill everyone's request list.
pub fn may_ask_friend(sent_today: usize) -> Result<(), Refusal> {
    if sent_today < MAX_FRIEND_REQUESTS_PER_DAY {
        Ok(())
    } else {
        Err(Refusal::Exhausted(Denied::new(
            Reason::TooManyFriendRequests,
            format!("{MAX_FRIEND_REQUESTS_PER_DAY} friend requests were sent in the last day"),
        )))
    }
}

/// What adding a friend does, given what is already there between the two users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Befriending {
    /// They become friends: they were already, or the other had asked first.
    Friends,
    /// A friend request is sent, for the other to accept.
    Ask,
    /// Nothing new: the user asked before and the other has not answered.
    AlreadyAsked,
}

/// What adding a friend does: friends at once if `they_asked` first (or they are
/// `already_friends`), otherwise a request, unless the user `already_asked`.
pub fn befriending(already_friends: bool, they_asked: bool, already_asked: bool) -> Befriending {
    if already_friends || they_asked {
        Befriending::Friends
    } else if already_asked {
        Befriending::AlreadyAsked
    } else {
        Befriending::Ask
    }
}

/// A user befriends someone else, never themselves.
pub fn may_befriend(user_id: &str, friend_id: &str) -> Result<(), Refusal> {
    if user_id == friend_id {
        Err(Refusal::Invalid(vec![FieldViolation::new(
            "user_name",
            "is yourself",
        )]))
    } else {
        Ok(())
    }
}

/// The creation time of the oldest message the grant may read: its own creation unless
/// the user approved older history (the store may filter by it).
pub fn history_starts_ms(grant: &Grant) -> i64 {
    if grant.include_history {
        i64::MIN
    } else {
        grant.created_ms
    }
}

/// Which of the granting user's threads the grant covers, as a store selects them (the
/// same rule as [`covers_thread`]).
pub fn covered_threads(grant: &Grant) -> ThreadFilter {
    match grant.coverage {
        Coverage::All => ThreadFilter::All,
        Coverage::Listed => ThreadFilter::Ids(grant.thread_ids.clone()),
        Coverage::PartnerStarted => ThreadFilter::StartedBy(grant.partner_id.clone()),
    }
}

/// Whether the partner of `grant` can read the messages of `thread`: what a participant
/// is shown when asking which apps can read a thread.
pub fn can_read_thread(grant: &Grant, thread: &Thread) -> bool {
    grant.scopes.contains(Scope::MessagesRead) && covers_thread(grant, thread).is_ok()
}

/// The scopes a feature declares beyond what its partner's registration allows: a
/// registration with any is refused, so a partner can never be granted more.
pub fn scopes_not_allowed(feature: ScopeSet, allowed: ScopeSet) -> ScopeSet {
    feature.minus(allowed)
}

/// Whether a grant event tells the partner to delete what it holds of the user: every
/// event but an approval (narrowed or not) ends the grant.
pub fn requires_deletion(kind: GrantEventKind) -> bool {
    !matches!(
        kind,
        GrantEventKind::GrantApproved | GrantEventKind::GrantNarrowed
    )
}

/// Whether a partner may attest that it deleted a grant's data: only once the grant ended.
pub fn may_attest(grant: &Grant) -> Result<(), Refusal> {
    if grant.state == GrantState::Active {
        Err(Refusal::Precondition(Denied::new(
            Reason::GrantStillActive,
            "the grant is still active; release it first",
        )))
    } else {
        Ok(())
    }
}

/// Whether a message's age lets the grant read it (forward-only unless history was approved).
pub fn within_history(grant: &Grant, message: &Message) -> bool {
    message.created_ms >= history_starts_ms(grant)
}

/// A thread is started (by the user, or by a partner for the granting user) only among
/// the user's friends: `is_friend[i]` says whether the i-th participant asked for is one.
pub fn may_start_thread_with(is_friend: &[bool]) -> Result<(), Denied> {
    if is_friend.iter().all(|friend| *friend) {
        Ok(())
    } else {
        // Which participant is not a friend is left unsaid: a partner probing with a list
        // would otherwise learn who is friends with whom without starting any thread.
        Err(Denied::new(
            Reason::NotAFriend,
            "the participants must all be friends of the user",
        ))
    }
}

/// Refuses a message that predates the grant without approved history.
pub fn may_read(grant: &Grant, message: &Message) -> Result<(), Denied> {
    if within_history(grant, message) {
        Ok(())
    } else {
        Err(Denied::new(
            Reason::HistoryNotGranted,
            "message predates the grant and history was not approved",
        ))
    }
}

/// Refuses deleting a message the granting user did not write.
pub fn may_delete(grant: &Grant, message: &Message) -> Result<(), Denied> {
    if message.sender_id == grant.user_id {
        Ok(())
    } else {
        Err(Denied::new(
            Reason::NotOwnMessage,
            "only the granting user's own messages may be deleted",
        ))
    }
}

/// Whether a message must be redacted for the partner of `grant`: its author opted out of
/// being shown to apps that others use (an author the platform does not know, `None`, is
/// taken to have opted out), and the author is not the granting user.
pub fn must_redact(grant: &Grant, sender_id: &str, sender_hides: Option<bool>) -> bool {
    sender_hides.unwrap_or(true) && sender_id != grant.user_id
}

/// How a partner sees a friend of the granting user: by the friend's handle, and by name
/// only if the friend lets apps their friends use see it.
pub fn friend_for_partner(view: &PartnerView<'_>, friend: &User) -> (String, Option<String>) {
    let name = friend
        .name_to_friends_apps
        .then(|| friend.display_name.clone());
    (view.handle(&friend.id), name)
}

/// The friends a partner names (`asked`, as handles its view gave it), as user ids. Each
/// must be the handle of one of the granting user's friends (`friend_ids`); anything else,
/// a platform user id included, is refused as not a friend, without saying which.
pub fn friends_named(
    view: &PartnerView<'_>,
    asked: &[String],
    friend_ids: &[String],
) -> Result<Vec<String>, Denied> {
    let found: Vec<Option<&String>> = asked
        .iter()
        .map(|name| friend_ids.iter().find(|id| view.handle(id) == *name))
        .collect();
    may_start_thread_with(&found.iter().map(Option::is_some).collect::<Vec<_>>())?;
    Ok(found.into_iter().flatten().cloned().collect())
}

/// Whether a thread's other participants are shown to the partner of `grant` (as handles):
/// only with `participants.read`; otherwise the partner sees the granting user alone.
pub fn shows_participants(grant: &Grant) -> bool {
    grant.scopes.contains(Scope::ParticipantsRead)
}

/// Whether the partner of `grant`, given a message by `sender_id`, read someone else's
/// words through this grant: the author is not the granting user and the body was not
/// redacted. That person is told, in their own access log.
pub fn reads_another_person(grant: &Grant, sender_id: &str, redacted: bool) -> bool {
    sender_id != grant.user_id && !redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = crate::clock::DAY_MS;
    const POLICY: LifetimePolicy = LifetimePolicy {
        max_lifetime_ms: 90 * DAY,
        inactivity_lapse_ms: 30 * DAY,
    };

    #[test]
    fn a_suspended_or_blocked_partner_may_only_wind_down_and_an_unknown_one_not_even_that() {
        let reason = |refused: Result<Partner, Refusal>| match refused {
            Err(Refusal::Unauthenticated(denied)) => Some(denied.reason),
            Err(other) => panic!("{other:?}"),
            Ok(_) => None,
        };
        let suspended = Partner {
            suspended: true,
            ..partner()
        };
        let blocked = Partner {
            suspended: true,
            blocked: true,
            ..partner()
        };
        assert_eq!(
            reason(partner_may_call("music", Some(suspended.clone()))),
            Some(Reason::PartnerSuspended)
        );
        assert_eq!(
            reason(partner_may_wind_down("music", Some(suspended))),
            None
        );
        assert_eq!(reason(partner_may_wind_down("music", Some(blocked))), None);
        let only_blocked = Partner {
            blocked: true,
            ..partner()
        };
        assert_eq!(
            reason(partner_may_call("music", Some(only_blocked.clone()))),
            Some(Reason::PartnerBlocked)
        );
        assert_eq!(
            reason(partner_may_wind_down("music", Some(only_blocked))),
            None
        );
        assert_eq!(
            reason(partner_may_wind_down("music", None)),
            Some(Reason::PartnerUnknown)
        );
        assert_eq!(
            reason(partner_may_wind_down("music", Some(partner()))),
            None
        );
    }

    #[test]
    fn an_attestation_is_overdue_exactly_when_the_grant_ended_by_the_bound() {
        let due = 72 * 60 * 60 * 1000;
        let mut ended = grant();
        ended.state = GrantState::Revoked;
        ended.ended_ms = Some(10 * DAY);
        for now in [10 * DAY + due - 1, 10 * DAY + due, 10 * DAY + due + 1] {
            let by_bound = ended
                .ended_ms
                .is_some_and(|e| e <= overdue_if_ended_by(now, due));
            assert_eq!(attestation_overdue(&ended, now, due), by_bound, "at {now}");
        }
        assert!(!attestation_overdue(&ended, 10 * DAY + due - 1, due));
        assert!(attestation_overdue(&ended, 10 * DAY + due, due));
        ended.attested_ms = Some(11 * DAY);
        assert!(!attestation_overdue(&ended, 20 * DAY, due));
    }

    #[test]
    fn friends_are_handles_named_only_by_their_own_consent_and_handles_resolve() {
        let g = grant();
        let key = crate::secret::SecretKey::generate();
        let mut friend = User {
            id: "usr_carol".into(),
            name: "carol".into(),
            display_name: "Carol".into(),
            password_hash: String::new(),
            hide_from_others_apps: false,
            name_to_friends_apps: false,
        };
        let view = PartnerView::new(&key, &g.partner_id);
        let (handle, name) = friend_for_partner(&view, &friend);
        assert_eq!(
            (handle.as_str(), name),
            (view.handle("usr_carol").as_str(), None)
        );
        friend.name_to_friends_apps = true;
        assert_eq!(
            friend_for_partner(&view, &friend).1.as_deref(),
            Some("Carol")
        );

        let friends = vec!["usr_bob".to_string(), "usr_carol".to_string()];
        let bob = view.handle("usr_bob");
        assert_eq!(
            friends_named(&view, &[handle.clone(), bob], &friends).unwrap(),
            ["usr_carol", "usr_bob"]
        );
        for stranger in ["usr_bob", "anon_unknown"] {
            let asked = [handle.clone(), stranger.to_string()];
            assert_eq!(
                friends_named(&view, &asked, &friends).unwrap_err().reason,
                Reason::NotAFriend,
                "{stranger}: a platform id or an unknown handle is no one"
            );
        }
    }

    #[test]
    fn adding_a_friend_who_asked_first_befriends_and_asking_twice_does_nothing() {
        use Befriending::*;
        for (already_friends, they_asked, already_asked, step) in [
            (true, false, false, Friends),
            (false, true, false, Friends),
            (false, true, true, Friends),
            (false, false, true, AlreadyAsked),
            (false, false, false, Ask),
        ] {
            assert_eq!(
                befriending(already_friends, they_asked, already_asked),
                step
            );
        }
    }

    #[test]
    fn friend_requests_sent_in_a_day_are_bounded() {
        assert!(may_ask_friend(MAX_FRIEND_REQUESTS_PER_DAY - 1).is_ok());
        assert!(matches!(
            may_ask_friend(MAX_FRIEND_REQUESTS_PER_DAY),
            Err(Refusal::Exhausted(Denied {
                reason: Reason::TooManyFriendRequests,
                ..
            }))
        ));
    }

    #[test]
    fn a_read_of_someone_else_is_one_of_their_unredacted_messages() {
        let g = grant();
        assert!(reads_another_person(&g, "usr_bob", false));
        assert!(!reads_another_person(&g, "usr_bob", true), "redacted");
        assert!(
            !reads_another_person(&g, &g.user_id, false),
            "the granting user"
        );
    }

    fn grant() -> Grant {
        Grant {
            id: "grt_1".into(),
            user_id: "usr_a".into(),
            partner_id: "music".into(),
            feature: "share".into(),
            scopes: ScopeSet::of(&[Scope::MessagesRead]),
            coverage: Coverage::PartnerStarted,
            thread_ids: vec![],
            include_history: false,
            created_ms: 1_000,
            not_after_ms: 1_000 + 10 * DAY,
            last_used_ms: None,
            state: GrantState::Active,
            ended_ms: None,
            attested_ms: None,
        }
    }
    fn partner() -> Partner {
        Partner {
            id: "music".into(),
            display_name: "Music".into(),
            allowed_scopes: ScopeSet::of(&Scope::ALL),
            suspended: false,
            blocked: false,
            redirect_uris: Vec::new(),
        }
    }
    fn feature() -> Feature {
        Feature {
            partner_id: "music".into(),
            name: "share".into(),
            description: String::new(),
            scopes: ScopeSet::of(&[Scope::MessagesRead]),
            retired: false,
            card_kinds: Vec::new(),
        }
    }
    fn reason(d: Denial) -> &'static str {
        d.denied.reason.as_str()
    }

    #[test]
    fn each_lifecycle_rule_has_its_reason() {
        let (g, p, f) = (grant(), partner(), feature());
        let ok = GrantContext {
            caller_partner_id: "music",
            grant: &g,
            partner: &p,
            feature: &f,
        };
        assert!(authorize(&ok, Scope::MessagesRead, 2_000, &POLICY).is_ok());
        let other = GrantContext {
            caller_partner_id: "video",
            ..ok
        };
        let denial = authorize(&other, Scope::MessagesRead, 2_000, &POLICY).unwrap_err();
        assert_eq!(reason(denial), "TOKEN_PARTNER_MISMATCH");
        let denial = authorize(&ok, Scope::MessagesWrite, 2_000, &POLICY).unwrap_err();
        assert_eq!(reason(denial), "SCOPE_MISSING");
        let denial = authorize(&ok, Scope::MessagesRead, g.not_after_ms, &POLICY).unwrap_err();
        assert_eq!(denial.ends_grant, Some(GrantState::Expired));
        assert_eq!(reason(denial), "GRANT_EXPIRED");
        let long_policy = LifetimePolicy {
            inactivity_lapse_ms: DAY,
            ..POLICY
        };
        let denial = authorize(&ok, Scope::MessagesRead, 1_000 + DAY, &long_policy).unwrap_err();
        assert_eq!(reason(denial), "GRANT_LAPSED");
        let retired = Feature {
            retired: true,
            ..feature()
        };
        let ctx = GrantContext {
            feature: &retired,
            ..ok
        };
        let denial = authorize(&ctx, Scope::MessagesRead, 2_000, &POLICY).unwrap_err();
        assert_eq!(reason(denial), "FEATURE_RETIRED");
    }

    #[test]
    fn history_and_redaction_fail_closed() {
        let g = grant();
        let old = Message {
            id: "msg_1".into(),
            thread_id: "thr_1".into(),
            sender_id: "usr_b".into(),
            body: String::new(),
            created_ms: g.created_ms - 1,
            sent_by_partner: None,
            card: None,
        };
        let refused = may_read(&g, &old).unwrap_err();
        assert_eq!(
            refused.reason,
            Reason::HistoryNotGranted,
            "older than the grant"
        );
        let with_history = Grant {
            include_history: true,
            ..grant()
        };
        assert!(may_read(&with_history, &old).is_ok());
        assert!(must_redact(&g, "usr_b", None), "an unknown author hides");
        assert!(
            !must_redact(&g, "usr_a", Some(true)),
            "the granting user's own"
        );
        assert_eq!(
            may_start_thread_with(&[true, false]).unwrap_err().reason,
            Reason::NotAFriend
        );
    }
}
