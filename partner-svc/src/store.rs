//! The partner's own store (SQLite, WAL, `synchronous=FULL`): its own accounts and their
//! web sessions, authorization flows in progress, each user's connection and grant token,
//! the outbox of shares, cached messages, and the grant-event cursor.
//! Tokens are kept because the partner must present them; they are never logged.

use consent_core::session::Session;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[error("partner store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A user's connection to this partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConnection {
    /// Platform account name.
    pub user_name: String,
    /// Platform access request.
    pub request_id: String,
    /// Grant, once collected.
    pub grant_id: Option<String>,
    /// Grant token, once collected.
    pub token: Option<String>,
    /// PENDING, CONNECTED, DENIED or ENDED.
    pub status: String,
}

/// An entry of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Id, also the platform idempotency key.
    pub share_id: String,
    /// Platform account name of the sender.
    pub user_name: String,
    /// Target thread, or "" to start one with `friend_id`.
    pub thread_id: String,
    /// Friend for a new thread.
    pub friend_id: String,
    /// Body.
    pub body: String,
    /// The card shared with it, encoded (`consent.platform.v1.Card`), or empty.
    pub card: Vec<u8>,
    /// QUEUED, DELIVERED or FAILED.
    pub status: String,
    /// Platform message id once delivered.
    pub message_id: String,
    /// Thread delivered into.
    pub delivered_thread_id: String,
    /// Why delivery failed for good.
    pub error: String,
}

/// The partner's store.
#[derive(Debug, Clone)]
pub struct PartnerStore {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS connections (
    user_name TEXT PRIMARY KEY, request_id TEXT NOT NULL, grant_id TEXT, token TEXT,
    status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    share_id TEXT PRIMARY KEY, user_name TEXT NOT NULL, client_key TEXT NOT NULL,
    thread_id TEXT NOT NULL, friend_id TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT NOT NULL, message_id TEXT NOT NULL DEFAULT '',
    delivered_thread_id TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL, UNIQUE (user_name, client_key));
CREATE TABLE IF NOT EXISTS cached_messages (
    user_name TEXT NOT NULL, message_id TEXT NOT NULL, thread_id TEXT NOT NULL,
    sender TEXT NOT NULL, body TEXT NOT NULL, redacted INTEGER NOT NULL,
    grant_id TEXT NOT NULL, PRIMARY KEY (user_name, message_id));
CREATE INDEX IF NOT EXISTS cached_messages_by_grant ON cached_messages(grant_id);
CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1), last_event INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL REFERENCES accounts(name),
    expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flows (
    state TEXT PRIMARY KEY, name TEXT NOT NULL, session_hash TEXT NOT NULL,
    verifier TEXT NOT NULL, expires_ms INTEGER NOT NULL);
INSERT OR IGNORE INTO cursor (id, last_event) VALUES (1, 0);
"#;

const SHARE_COLUMNS: &str = "share_id, user_name, thread_id, friend_id, body, status, message_id, delivered_thread_id, error, card";

fn share_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Share> {
    Ok(Share {
        share_id: r.get(0)?,
        user_name: r.get(1)?,
        thread_id: r.get(2)?,
        friend_id: r.get(3)?,
        body: r.get(4)?,
        status: r.get(5)?,
        message_id: r.get(6)?,
        delivered_thread_id: r.get(7)?,
        error: r.get(8)?,
        card: r.get(9)?,
    })
}

/// Keys the message cache by grant: a store made before that gets the column (its cache,
/// held under no grant, is dropped, as a cache may be).
fn add_grant_to_cache(conn: &Connection) -> rusqlite::Result<()> {
    let exists: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'cached_messages'",
        [],
        |r| r.get(0),
    )?;
    let keyed: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('cached_messages') WHERE name = 'grant_id'",
        [],
        |r| r.get(0),
    )?;
    if exists && !keyed {
        conn.execute_batch(
            "DELETE FROM cached_messages; ALTER TABLE cached_messages ADD COLUMN grant_id TEXT NOT NULL DEFAULT '';",
        )?;
    }
    Ok(())
}

/// Keeps the card of each share: a store made before that gets the column.
fn add_card_to_outbox(conn: &Connection) -> rusqlite::Result<()> {
    let kept: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('outbox') WHERE name = 'card'",
        [],
        |r| r.get(0),
    )?;
    if !kept {
        conn.execute_batch("ALTER TABLE outbox ADD COLUMN card BLOB NOT NULL DEFAULT x'';")?;
    }
    Ok(())
}

/// Keeps each pending connection's binding message, so that asking again repeats the same
/// request: a store made before that gets the column.
fn add_binding_to_connections(conn: &Connection) -> rusqlite::Result<()> {
    let kept: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('connections') WHERE name = 'binding_message'",
        [],
        |r| r.get(0),
    )?;
    if !kept {
        conn.execute_batch(
            "ALTER TABLE connections ADD COLUMN binding_message TEXT NOT NULL DEFAULT '';",
        )?;
    }
    Ok(())
}

impl PartnerStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        add_grant_to_cache(&conn)?;
        conn.execute_batch(SCHEMA)?;
        add_binding_to_connections(&conn)?;
        add_card_to_outbox(&conn)?;
        Ok(PartnerStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the connection in one transaction, on the blocking pool.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
    ) -> StoreResult<R> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = match conn.lock() {
                Ok(conn) => conn,
                Err(poisoned) => poisoned.into_inner(),
            };
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let result = work(&tx)?;
            tx.commit()?;
            Ok(result)
        })
        .await
        .map_err(|e| StoreError(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?
    }
}

impl PartnerStore {
    /// The account of an unexpired session `token` (`session::user_of` decides).
    pub async fn session_account(&self, token: &str) -> StoreResult<Option<String>> {
        let token_hash = consent_core::secret::hash_token(token);
        let stored = self.run(move |tx| session(tx, &token_hash)).await?;
        let now_ms = consent_core::clock::Clock::default().now_ms();
        Ok(consent_core::session::user_of(stored, now_ms).ok())
    }
}

/// Reads a user's connection.
pub fn connection(
    tx: &rusqlite::Transaction<'_>,
    user_name: &str,
) -> rusqlite::Result<Option<UserConnection>> {
    tx.query_row(
        "SELECT user_name, request_id, grant_id, token, status FROM connections WHERE user_name = ?1",
        [user_name],
        |r| {
            Ok(UserConnection {
                user_name: r.get(0)?,
                request_id: r.get(1)?,
                grant_id: r.get(2)?,
                token: r.get(3)?,
                status: r.get(4)?,
            })
        },
    )
    .optional()
}

/// Starts (or restarts) a pending connection.
pub fn put_pending(
    tx: &rusqlite::Transaction<'_>,
    user_name: &str,
    request_id: &str,
    binding_message: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO connections (user_name, request_id, status, binding_message) VALUES (?1, ?2, 'PENDING', ?3) \
         ON CONFLICT (user_name) DO UPDATE SET request_id = excluded.request_id, grant_id = NULL, token = NULL, status = 'PENDING', binding_message = excluded.binding_message",
        [user_name, request_id, binding_message],
    )?;
    Ok(())
}

/// The binding message of `user_name`'s connection while it waits for the user.
pub fn pending_binding(
    tx: &rusqlite::Transaction<'_>,
    user_name: &str,
) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT binding_message FROM connections WHERE user_name = ?1 AND status = 'PENDING' AND binding_message <> ''",
        [user_name],
        |r| r.get(0),
    )
    .optional()
}

/// Records the outcome of polling a request.
pub fn set_connection(
    tx: &rusqlite::Transaction<'_>,
    user_name: &str,
    status: &str,
    grant_id: Option<&str>,
    token: Option<&str>,
) -> rusqlite::Result<()> {
    // A status without a token never replaces a connection that holds one: of two
    // exchanges of one request, only the first gets the token, and the second's answer
    // must not end the connection the first made.
    tx.execute(
        "UPDATE connections SET status = ?2, grant_id = COALESCE(?3, grant_id), token = COALESCE(?4, token) \
         WHERE user_name = ?1 AND (?4 IS NOT NULL OR token IS NULL)",
        params![user_name, status, grant_id, token],
    )?;
    Ok(())
}

/// Forgets everything held under `grant_id`: its token, the messages read through it, and
/// the shares sent (or waiting to be sent) through it, with their bodies. Returns how many
/// cached messages were deleted.
pub fn purge_grant(tx: &rusqlite::Transaction<'_>, grant_id: &str) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM outbox WHERE user_name IN (SELECT user_name FROM connections WHERE grant_id = ?1)",
        [grant_id],
    )?;
    tx.execute(
        "UPDATE connections SET token = NULL, status = 'ENDED' WHERE grant_id = ?1",
        [grant_id],
    )?;
    tx.execute(
        "DELETE FROM cached_messages WHERE grant_id = ?1",
        [grant_id],
    )
}

/// Adds a share to the outbox, or returns the one already there for the same client key.
pub fn enqueue_share(
    tx: &rusqlite::Transaction<'_>,
    share: &Share,
    client_key: &str,
) -> rusqlite::Result<Share> {
    tx.execute(
        "INSERT OR IGNORE INTO outbox (share_id, user_name, client_key, thread_id, friend_id, body, card, status, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'QUEUED', COALESCE((SELECT MAX(seq) FROM outbox), 0) + 1)",
        params![share.share_id, share.user_name, client_key, share.thread_id, share.friend_id, share.body, share.card],
    )?;
    tx.query_row(
        &format!("SELECT {SHARE_COLUMNS} FROM outbox WHERE user_name = ?1 AND client_key = ?2"),
        [&share.user_name, client_key],
        share_row,
    )
}

/// A share by id.
pub fn share(tx: &rusqlite::Transaction<'_>, share_id: &str) -> rusqlite::Result<Option<Share>> {
    tx.query_row(
        &format!("SELECT {SHARE_COLUMNS} FROM outbox WHERE share_id = ?1"),
        [share_id],
        share_row,
    )
    .optional()
}

/// Queued shares, oldest first.
pub fn queued_shares(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<Share>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {SHARE_COLUMNS} FROM outbox WHERE status = 'QUEUED' ORDER BY seq"
    ))?;
    let rows = stmt.query_map([], share_row)?;
    rows.collect()
}

/// Marks a share delivered.
pub fn mark_delivered(
    tx: &rusqlite::Transaction<'_>,
    share_id: &str,
    message_id: &str,
    thread_id: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE outbox SET status = 'DELIVERED', message_id = ?2, delivered_thread_id = ?3 WHERE share_id = ?1",
        [share_id, message_id, thread_id],
    )?;
    Ok(())
}

/// Marks a share failed for good.
pub fn mark_failed(
    tx: &rusqlite::Transaction<'_>,
    share_id: &str,
    error: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE outbox SET status = 'FAILED', error = ?2 WHERE share_id = ?1",
        [share_id, error],
    )?;
    Ok(())
}

/// A cached message.
#[derive(Debug, Clone)]
pub struct CachedMessage {
    /// Platform message id.
    pub message_id: String,
    /// Thread.
    pub thread_id: String,
    /// Author as the platform showed it.
    pub sender: String,
    /// Body.
    pub body: String,
    /// Redacted by the platform.
    pub redacted: bool,
}

/// Caches messages read for a user through `grant_id`, unless that grant is no longer the
/// user's live one: a read that finishes after the grant was purged (or replaced) leaves
/// nothing behind. Returns whether they were cached.
pub fn cache_messages(
    tx: &rusqlite::Transaction<'_>,
    user_name: &str,
    grant_id: &str,
    messages: &[CachedMessage],
) -> rusqlite::Result<bool> {
    let live: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM connections WHERE user_name = ?1 AND grant_id = ?2 AND token IS NOT NULL",
        [user_name, grant_id],
        |r| r.get(0),
    )?;
    if !live {
        return Ok(false);
    }
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO cached_messages (user_name, message_id, thread_id, sender, body, redacted, grant_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for m in messages {
        stmt.execute(params![
            user_name,
            m.message_id,
            m.thread_id,
            m.sender,
            m.body,
            m.redacted,
            grant_id
        ])?;
    }
    Ok(true)
}

/// How many messages are cached for a user.
pub fn cached_count(tx: &rusqlite::Transaction<'_>, user_name: &str) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT COUNT(*) FROM cached_messages WHERE user_name = ?1",
        [user_name],
        |r| r.get(0),
    )
}

/// The last grant event applied.
pub fn event_cursor(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row("SELECT last_event FROM cursor WHERE id = 1", [], |r| {
        r.get(0)
    })
}

/// Records the last grant event applied (in the transaction that applied it).
pub fn set_event_cursor(tx: &rusqlite::Transaction<'_>, seq: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE cursor SET last_event = MAX(last_event, ?1) WHERE id = 1",
        [seq],
    )?;
    Ok(())
}

/// An authorization flow this partner started for one of its users' browser sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The partner account connecting.
    pub name: String,
    /// Hash of the web session that started it: only that browser may complete it.
    pub session_hash: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// When it is abandoned.
    pub expires_ms: i64,
}

/// Adds an account; false when the name is taken, by an account or by a connection a
/// front end made under that name (one namespace of this partner's users).
pub fn insert_account(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    password_hash: &str,
) -> rusqlite::Result<bool> {
    let added = tx.execute(
        "INSERT OR IGNORE INTO accounts (name, password_hash) \
         SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM connections WHERE user_name = ?1)",
        [name, password_hash],
    )?;
    Ok(added == 1)
}

/// An account's password hash.
pub fn password_hash(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT password_hash FROM accounts WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
}

/// Records a web session, forgetting sessions and flows that have expired.
pub fn insert_session(
    tx: &rusqlite::Transaction<'_>,
    token_hash: &str,
    name: &str,
    expires_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
    tx.execute("DELETE FROM flows WHERE expires_ms <= ?1", [now_ms])?;
    tx.execute(
        "INSERT INTO sessions (token_hash, name, expires_ms) VALUES (?1, ?2, ?3)",
        params![token_hash, name, expires_ms],
    )?;
    Ok(())
}

/// The session whose token hashes to `token_hash`, ended or not, with the account it
/// signed in.
pub fn session(
    tx: &rusqlite::Transaction<'_>,
    token_hash: &str,
) -> rusqlite::Result<Option<Session>> {
    tx.query_row(
        "SELECT name, expires_ms FROM sessions WHERE token_hash = ?1",
        [token_hash],
        |r| {
            Ok(Session {
                user_id: r.get(0)?,
                expires_ms: r.get(1)?,
            })
        },
    )
    .optional()
}

/// Ends a session.
pub fn delete_session(tx: &rusqlite::Transaction<'_>, token_hash: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
    Ok(())
}

/// Records a flow under its `state`.
pub fn insert_flow(
    tx: &rusqlite::Transaction<'_>,
    state: &str,
    flow: &Flow,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO flows (state, name, session_hash, verifier, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![state, flow.name, flow.session_hash, flow.verifier, flow.expires_ms],
    )?;
    Ok(())
}

/// Takes the unexpired flow of `state` that the session `session_hash` started (it is
/// used once); another session's flow stays as it is.
pub fn take_flow(
    tx: &rusqlite::Transaction<'_>,
    state: &str,
    session_hash: &str,
    now_ms: i64,
) -> rusqlite::Result<Option<Flow>> {
    let flow = tx
        .query_row(
            "SELECT name, session_hash, verifier, expires_ms FROM flows \
             WHERE state = ?1 AND session_hash = ?2 AND expires_ms > ?3",
            params![state, session_hash, now_ms],
            |r| {
                Ok(Flow {
                    name: r.get(0)?,
                    session_hash: r.get(1)?,
                    verifier: r.get(2)?,
                    expires_ms: r.get(3)?,
                })
            },
        )
        .optional()?;
    if flow.is_some() {
        tx.execute("DELETE FROM flows WHERE state = ?1", [state])?;
    }
    Ok(flow)
}

/// Records a connection made through the code flow.
pub fn put_connected(
    tx: &rusqlite::Transaction<'_>,
    user_name: &str,
    grant_id: &str,
    token: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO connections (user_name, request_id, grant_id, token, status) VALUES (?1, '', ?2, ?3, 'CONNECTED') \
         ON CONFLICT (user_name) DO UPDATE SET request_id = '', grant_id = excluded.grant_id, token = excluded.token, status = 'CONNECTED'",
        [user_name, grant_id, token],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_exchange_answered_after_another_took_the_token_leaves_the_connection_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartnerStore::open(&dir.path().join("partner.db")).unwrap();
        let status = |tx: &rusqlite::Transaction<'_>| {
            connection(tx, "bob").map(|c| c.map(|c| (c.status, c.token)))
        };
        let connected = Some(("CONNECTED".to_string(), Some("pgt_1".to_string())));
        // The token's answer first, then the other's "already exchanged".
        let after = store
            .run(move |tx| {
                put_pending(tx, "bob", "req_1", "1234-5678")?;
                set_connection(tx, "bob", "CONNECTED", Some("grt_1"), Some("pgt_1"))?;
                set_connection(tx, "bob", "ENDED", Some("grt_1"), None)?;
                status(tx)
            })
            .await
            .unwrap();
        assert_eq!(after, connected);
        // The other way round.
        let after = store
            .run(move |tx| {
                put_pending(tx, "bob", "req_2", "1234-5678")?;
                set_connection(tx, "bob", "ENDED", Some("grt_1"), None)?;
                set_connection(tx, "bob", "CONNECTED", Some("grt_1"), Some("pgt_1"))?;
                status(tx)
            })
            .await
            .unwrap();
        assert_eq!(after, connected);
    }

    fn message() -> CachedMessage {
        CachedMessage {
            message_id: "msg_1".into(),
            thread_id: "thr_1".into(),
            sender: "anon_1".into(),
            body: "hi".into(),
            redacted: false,
        }
    }

    #[tokio::test]
    async fn a_read_finishing_after_its_grant_was_purged_or_replaced_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartnerStore::open(&dir.path().join("partner.db")).unwrap();
        let count = |tx: &rusqlite::Transaction<'_>| cached_count(tx, "alice");
        store
            .run(|tx| {
                put_pending(tx, "alice", "req_1", "1234-5678")?;
                set_connection(tx, "alice", "CONNECTED", Some("grt_1"), Some("pgt_x"))
            })
            .await
            .unwrap();
        // The inbox fetch reads through grt_1; the grant's end is applied before it stores.
        assert_eq!(store.run(|tx| purge_grant(tx, "grt_1")).await.unwrap(), 0);
        let stored = store
            .run(|tx| cache_messages(tx, "alice", "grt_1", &[message()]))
            .await
            .unwrap();
        assert!(!stored);
        assert_eq!(store.run(count).await.unwrap(), 0);

        // Under the live grant it is kept, and only that grant's purge removes it.
        store
            .run(|tx| {
                put_pending(tx, "alice", "req_2", "1234-5678")?;
                set_connection(tx, "alice", "CONNECTED", Some("grt_2"), Some("pgt_y"))
            })
            .await
            .unwrap();
        assert!(
            !store
                .run(|tx| cache_messages(tx, "alice", "grt_1", &[message()]))
                .await
                .unwrap(),
            "the replaced grant caches nothing"
        );
        assert!(
            store
                .run(|tx| cache_messages(tx, "alice", "grt_2", &[message()]))
                .await
                .unwrap()
        );
        assert_eq!(store.run(|tx| purge_grant(tx, "grt_1")).await.unwrap(), 0);
        assert_eq!(store.run(count).await.unwrap(), 1);
        assert_eq!(store.run(|tx| purge_grant(tx, "grt_2")).await.unwrap(), 1);
        assert_eq!(store.run(count).await.unwrap(), 0);
    }
}
