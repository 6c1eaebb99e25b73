//! Sessions of signed-in users, in the app (a bearer token) and in the browser (a cookie)
//! alike: when one ends, and whom it lets act.

use crate::denial::{Denied, Reason, Refusal};

/// A session as stored: whose it is and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The signed-in user (on the partner's web app, the name of its own account).
    pub user_id: String,
    /// When it stops working.
    pub expires_ms: i64,
}

/// When a session begun at `now_ms` ends, if sessions last `session_ms`.
pub fn ends_ms(now_ms: i64, session_ms: i64) -> i64 {
    now_ms.saturating_add(session_ms)
}

/// The user `session` lets act at `now_ms`: its own, up to (not at) its end. No session, or
/// one that has ended, lets nobody act.
pub fn user_of(session: Option<Session>, now_ms: i64) -> Result<String, Refusal> {
    match session {
        Some(session) if now_ms < session.expires_ms => Ok(session.user_id),
        _ => Err(invalid()),
    }
}

/// The refusal of a call whose session token is missing, unknown or ended
/// (`SESSION_INVALID`).
pub fn invalid() -> Refusal {
    Refusal::Unauthenticated(Denied::new(
        Reason::SessionInvalid,
        "sign in and send 'authorization: Bearer <session token>'",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alices(expires_ms: i64) -> Option<Session> {
        Some(Session {
            user_id: "usr_alice".into(),
            expires_ms,
        })
    }

    fn reason(refused: Result<String, Refusal>) -> Option<Reason> {
        match refused {
            Err(Refusal::Unauthenticated(denied)) => Some(denied.reason),
            _ => None,
        }
    }

    #[test]
    fn a_session_lets_its_user_act_until_it_ends() {
        let begun = 1_000;
        let ends = ends_ms(begun, 500);
        assert_eq!(ends, 1_500);
        assert_eq!(user_of(alices(ends), begun).unwrap(), "usr_alice");
        assert_eq!(user_of(alices(ends), ends - 1).unwrap(), "usr_alice");
        assert_eq!(
            reason(user_of(alices(ends), ends)),
            Some(Reason::SessionInvalid)
        );
        assert_eq!(reason(user_of(None, begun)), Some(Reason::SessionInvalid));
    }

    #[test]
    fn a_session_of_any_length_ends_at_the_latest_time_there_is() {
        assert_eq!(ends_ms(i64::MAX - 1, 10), i64::MAX);
    }
}
