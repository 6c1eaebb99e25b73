//! How each record is read from a row: the column lists (and the one query that joins two
//! tables, messages with their authors' opt-outs) and their decoders, written once for
//! both backends over [`StoredRow`], which each driver's row implements.

use crate::MessageRow;
use crate::codec::{decode_card, decode_card_kinds, split_ids};
use consent_core::authorization::{AuthorizationCode, PushedRequest};
use consent_core::model::{
    AccessRequest, AuditEntry, AuditRecord, Coverage, Feature, Grant, GrantEvent, GrantState,
    Message, ScopeSet, User, request_status_from_stored,
};
use consent_core::session::Session;
use consent_proto::platform::v1::GrantEventKind;

/// A row of either backend, read by column index.
pub(crate) trait StoredRow {
    /// The driver's error.
    type Error;
    /// A text column.
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A text column that may be NULL.
    fn maybe_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    /// A 64-bit integer column (times, sequence numbers, scope bits).
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    /// A 64-bit integer column that may be NULL.
    fn maybe_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A stored enum's number.
    fn number(&self, i: usize) -> Result<i32, Self::Error>;
    /// A boolean column.
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
    /// A boolean column that may be NULL.
    fn maybe_flag(&self, i: usize) -> Result<Option<bool>, Self::Error>;
    /// A binary column that may be NULL.
    fn maybe_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, Self::Error>;
}

impl StoredRow for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn maybe_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn maybe_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn number(&self, i: usize) -> rusqlite::Result<i32> {
        self.get(i)
    }
    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        self.get(i)
    }
    fn maybe_flag(&self, i: usize) -> rusqlite::Result<Option<bool>> {
        self.get(i)
    }
    fn maybe_bytes(&self, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
        self.get(i)
    }
}

impl StoredRow for postgres::Row {
    type Error = postgres::Error;
    fn text(&self, i: usize) -> Result<String, postgres::Error> {
        self.try_get(i)
    }
    fn maybe_text(&self, i: usize) -> Result<Option<String>, postgres::Error> {
        self.try_get(i)
    }
    fn int(&self, i: usize) -> Result<i64, postgres::Error> {
        self.try_get(i)
    }
    fn maybe_int(&self, i: usize) -> Result<Option<i64>, postgres::Error> {
        self.try_get(i)
    }
    fn number(&self, i: usize) -> Result<i32, postgres::Error> {
        self.try_get(i)
    }
    fn flag(&self, i: usize) -> Result<bool, postgres::Error> {
        self.try_get(i)
    }
    fn maybe_flag(&self, i: usize) -> Result<Option<bool>, postgres::Error> {
        self.try_get(i)
    }
    fn maybe_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, postgres::Error> {
        self.try_get(i)
    }
}

pub(crate) const USER_COLUMNS: &str =
    "id, name, display_name, password_hash, hide_from_others_apps, name_to_friends_apps";

/// [`USER_COLUMNS`] of the table aliased `u`.
pub(crate) fn prefixed_user_columns() -> String {
    USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn user<R: StoredRow>(r: &R) -> Result<User, R::Error> {
    Ok(User {
        id: r.text(0)?,
        name: r.text(1)?,
        display_name: r.text(2)?,
        password_hash: r.text(3)?,
        hide_from_others_apps: r.flag(4)?,
        name_to_friends_apps: r.flag(5)?,
    })
}

/// Messages (`m`) with their author's opt-out, in one query. Callers append their `WHERE`
/// and `ORDER BY` on `m.`-qualified columns: `id`, `created_ms` and, in PostgreSQL, `seq`
/// are columns of `users` too.
pub(crate) const MESSAGES_WITH_OPT_OUT: &str = "SELECT m.seq, m.id, m.thread_id, m.sender_id, m.body, \
     m.created_ms, m.sent_by_partner, m.card, u.hide_from_others_apps \
     FROM messages m LEFT JOIN users u ON u.id = m.sender_id";

/// A row of [`MESSAGES_WITH_OPT_OUT`]: the message's cursor, and the message with its
/// author's opt-out (`None` when the author is not in `users`).
pub(crate) fn message_row<R: StoredRow>(r: &R) -> Result<(i64, MessageRow), R::Error> {
    let message = Message {
        id: r.text(1)?,
        thread_id: r.text(2)?,
        sender_id: r.text(3)?,
        body: r.text(4)?,
        created_ms: r.int(5)?,
        sent_by_partner: r.maybe_text(6)?,
        card: decode_card(r.maybe_bytes(7)?),
    };
    Ok((
        r.int(0)?,
        MessageRow {
            message,
            sender_hides: r.maybe_flag(8)?,
        },
    ))
}

pub(crate) const FEATURE_COLUMNS: &str =
    "partner_id, name, description, scopes, retired, card_kinds";
pub(crate) fn feature<R: StoredRow>(r: &R) -> Result<Feature, R::Error> {
    Ok(Feature {
        partner_id: r.text(0)?,
        name: r.text(1)?,
        description: r.text(2)?,
        scopes: ScopeSet::from_bits(r.int(3)?),
        retired: r.flag(4)?,
        card_kinds: decode_card_kinds(&r.text(5)?),
    })
}

pub(crate) const REQUEST_COLUMNS: &str = "id, partner_id, feature, user_id, coverage, thread_ids, include_history, purpose, status, grant_id, created_ms, user_name, binding_message, account_label";
pub(crate) fn request<R: StoredRow>(r: &R) -> Result<AccessRequest, R::Error> {
    Ok(AccessRequest {
        id: r.text(0)?,
        partner_id: r.text(1)?,
        feature: r.text(2)?,
        user_id: r.maybe_text(3)?.unwrap_or_default(),
        coverage: Coverage::from_stored(r.number(4)?),
        thread_ids: split_ids(r.text(5)?),
        include_history: r.flag(6)?,
        purpose: r.text(7)?,
        status: request_status_from_stored(r.number(8)?),
        grant_id: r.maybe_text(9)?,
        created_ms: r.int(10)?,
        user_name: r.text(11)?,
        binding_message: r.text(12)?,
        account_label: r.text(13)?,
    })
}

pub(crate) const PUSHED_COLUMNS: &str = "partner_id, feature, coverage, thread_ids, include_history, purpose, redirect_uri, state, code_challenge, expires_ms, access_request_id";
pub(crate) fn pushed<R: StoredRow>(r: &R) -> Result<PushedRequest, R::Error> {
    Ok(PushedRequest {
        partner_id: r.text(0)?,
        feature: r.text(1)?,
        coverage: Coverage::from_stored(r.number(2)?),
        thread_ids: split_ids(r.text(3)?),
        include_history: r.flag(4)?,
        purpose: r.text(5)?,
        redirect_uri: r.text(6)?,
        state: r.text(7)?,
        code_challenge: r.text(8)?,
        expires_ms: r.int(9)?,
        access_request_id: r.maybe_text(10)?,
    })
}

pub(crate) const SESSION_COLUMNS: &str = "user_id, expires_ms";
pub(crate) fn session<R: StoredRow>(r: &R) -> Result<Session, R::Error> {
    Ok(Session {
        user_id: r.text(0)?,
        expires_ms: r.int(1)?,
    })
}

pub(crate) const CODE_COLUMNS: &str =
    "partner_id, grant_id, redirect_uri, code_challenge, expires_ms, redeemed_ms";
pub(crate) fn code<R: StoredRow>(r: &R) -> Result<AuthorizationCode, R::Error> {
    Ok(AuthorizationCode {
        partner_id: r.text(0)?,
        grant_id: r.text(1)?,
        redirect_uri: r.text(2)?,
        code_challenge: r.text(3)?,
        expires_ms: r.int(4)?,
        redeemed_ms: r.maybe_int(5)?,
    })
}

pub(crate) const GRANT_COLUMNS: &str = "id, user_id, partner_id, feature, scopes, coverage, thread_ids, include_history, created_ms, not_after_ms, last_used_ms, state, ended_ms, attested_ms";
pub(crate) fn grant<R: StoredRow>(r: &R) -> Result<Grant, R::Error> {
    Ok(Grant {
        id: r.text(0)?,
        user_id: r.text(1)?,
        partner_id: r.text(2)?,
        feature: r.text(3)?,
        scopes: ScopeSet::from_bits(r.int(4)?),
        coverage: Coverage::from_stored(r.number(5)?),
        thread_ids: split_ids(r.text(6)?),
        include_history: r.flag(7)?,
        created_ms: r.int(8)?,
        not_after_ms: r.int(9)?,
        last_used_ms: r.maybe_int(10)?,
        state: GrantState::from_stored(r.number(11)?),
        ended_ms: r.maybe_int(12)?,
        attested_ms: r.maybe_int(13)?,
    })
}

pub(crate) const EVENT_COLUMNS: &str = "seq, partner_id, grant_id, user_id, kind, at_ms";
pub(crate) fn event<R: StoredRow>(r: &R) -> Result<GrantEvent, R::Error> {
    Ok(GrantEvent {
        seq: r.int(0)?,
        partner_id: r.text(1)?,
        grant_id: r.text(2)?,
        user_id: r.text(3)?,
        kind: GrantEventKind::try_from(r.number(4)?).unwrap_or(GrantEventKind::Unspecified),
        at_ms: r.int(5)?,
    })
}

pub(crate) const AUDIT_COLUMNS: &str = "seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash, mac";
pub(crate) fn audit<R: StoredRow>(r: &R) -> Result<AuditRecord, R::Error> {
    Ok(AuditRecord {
        seq: r.int(0)?,
        at_ms: r.int(1)?,
        entry: AuditEntry {
            partner_id: r.text(2)?,
            user_id: r.text(3)?,
            grant_id: r.text(4)?,
            method: r.text(5)?,
            resource: r.text(6)?,
            decision: r.text(7)?,
            reason: r.text(8)?,
        },
        prev_hash: r.text(9)?,
        hash: r.text(10)?,
        mac: r.text(11)?,
    })
}
