//! Whose is what. A user reaches only their own grants and access requests and the
//! threads they are in; a partner only its own grants and the access requests it made.
//! Anything else is answered exactly as if it did not exist (`NOT_FOUND`), so that no one
//! learns which ids are someone else's.

use crate::denial::Refusal;
use crate::model::{AccessRequest, Grant, Thread};

/// `thing`, if `owned`; otherwise the refusal for a `kind` named `id` that does not exist.
fn owned_or_not_found<T>(
    thing: Option<T>,
    owned: impl FnOnce(&T) -> bool,
    kind: &'static str,
    id: &str,
) -> Result<T, Refusal> {
    thing.filter(owned).ok_or_else(|| Refusal::NotFound {
        kind,
        id: id.to_string(),
    })
}

/// The grant named `grant_id`, if the user gave it.
pub fn users_grant(user_id: &str, grant_id: &str, grant: Option<Grant>) -> Result<Grant, Refusal> {
    owned_or_not_found(grant, |g| g.user_id == user_id, "grant", grant_id)
}

/// The grant named `grant_id`, if it was given to the partner.
pub fn partners_grant(
    partner_id: &str,
    grant_id: &str,
    grant: Option<Grant>,
) -> Result<Grant, Refusal> {
    owned_or_not_found(grant, |g| g.partner_id == partner_id, "grant", grant_id)
}

/// The access request named `request_id`, if it was made to the user.
pub fn users_request(
    user_id: &str,
    request_id: &str,
    access: Option<AccessRequest>,
) -> Result<AccessRequest, Refusal> {
    owned_or_not_found(
        access,
        |a| a.user_id == user_id,
        "access request",
        request_id,
    )
}

/// The access request named `request_id`, if the partner made it.
pub fn partners_request(
    partner_id: &str,
    request_id: &str,
    access: Option<AccessRequest>,
) -> Result<AccessRequest, Refusal> {
    owned_or_not_found(
        access,
        |a| a.partner_id == partner_id,
        "access request",
        request_id,
    )
}

/// Whether the user is in `thread`.
pub fn is_member(user_id: &str, thread: &Thread) -> bool {
    thread.participants.iter().any(|p| p == user_id)
}

/// The thread named `thread_id`, if the user is in it.
pub fn members_thread(
    user_id: &str,
    thread_id: &str,
    thread: Option<Thread>,
) -> Result<Thread, Refusal> {
    owned_or_not_found(thread, |t| is_member(user_id, t), "thread", thread_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, GrantState, ScopeSet};

    fn grant() -> Grant {
        Grant {
            id: "gr_1".into(),
            partner_id: "music".into(),
            feature: "share".into(),
            user_id: "usr_a".into(),
            scopes: ScopeSet::default(),
            coverage: Coverage::Listed,
            thread_ids: Vec::new(),
            include_history: false,
            state: GrantState::Active,
            created_ms: 0,
            not_after_ms: 1,
            last_used_ms: None,
            ended_ms: None,
            attested_ms: None,
        }
    }

    fn not_found<T: std::fmt::Debug>(refused: Result<T, Refusal>) -> String {
        match refused {
            Err(Refusal::NotFound { kind, id }) => format!("{kind} {id}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_ones_grant_is_answered_as_one_that_does_not_exist() {
        assert!(users_grant("usr_a", "gr_1", Some(grant())).is_ok());
        assert!(partners_grant("music", "gr_1", Some(grant())).is_ok());
        assert_eq!(
            not_found(users_grant("usr_b", "gr_1", Some(grant()))),
            "grant gr_1"
        );
        assert_eq!(not_found(users_grant("usr_a", "gr_1", None)), "grant gr_1");
        assert_eq!(
            not_found(partners_grant("video", "gr_1", Some(grant()))),
            "grant gr_1"
        );
    }

    #[test]
    fn a_request_is_reached_by_its_user_and_its_partner_alone() {
        let access = || AccessRequest {
            id: "req_1".into(),
            partner_id: "music".into(),
            feature: "share".into(),
            user_id: "usr_a".into(),
            user_name: "alice".into(),
            binding_message: String::new(),
            account_label: String::new(),
            coverage: Coverage::All,
            thread_ids: Vec::new(),
            include_history: false,
            purpose: String::new(),
            status: crate::model::RequestStatus::Pending,
            grant_id: None,
            created_ms: 0,
        };
        assert!(users_request("usr_a", "req_1", Some(access())).is_ok());
        assert!(partners_request("music", "req_1", Some(access())).is_ok());
        let gone = "access request req_1";
        assert_eq!(
            not_found(users_request("usr_b", "req_1", Some(access()))),
            gone
        );
        assert_eq!(
            not_found(partners_request("video", "req_1", Some(access()))),
            gone
        );
        assert_eq!(not_found(partners_request("music", "req_1", None)), gone);
    }

    #[test]
    fn a_thread_is_reached_only_by_its_members() {
        let thread = Thread {
            id: "thr_1".into(),
            title: String::new(),
            started_by_partner: None,
            created_ms: 0,
            participants: vec!["usr_a".into(), "usr_b".into()],
        };
        assert!(is_member("usr_b", &thread));
        assert!(!is_member("usr_c", &thread));
        assert!(members_thread("usr_a", "thr_1", Some(thread.clone())).is_ok());
        assert_eq!(
            not_found(members_thread("usr_c", "thr_1", Some(thread))),
            "thread thr_1"
        );
    }
}
