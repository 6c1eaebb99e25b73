//! The embedded SQLite store: one connection in WAL mode with `synchronous=FULL`, owned by
//! a writer thread, and read-only connections beside it, each owned by a reader thread.
//!
//! **Writes: group commit.** The writer takes every job waiting in its queue (up to
//! [`MAX_BATCH`]), runs them in one transaction, each in a savepoint of its own so that a
//! failing job takes back only its own writes, commits once, and only then tells each job.
//! While it commits, new jobs queue up and form the next batch, so concurrent calls share
//! one fsync instead of queueing behind each other's; a lone call never waits for company.
//!
//! **Reads** run on [`reader_count`] reader threads, each owning a read-only connection and
//! taking read jobs from one queue, each job in a transaction of its own: WAL gives it a
//! snapshot of what is committed, and a commit becomes visible only once it is on disk.
//!
//! A bound page size is written `LIMIT CAST(?n AS INTEGER)`: with a bare `LIMIT ?n` SQLite
//! plans the statement anew on every use, since the value may change the plan.

use super::codec::{
    encode_card, encode_card_kinds, join_ids, join_lines, limit, newer_than, split_lines,
};
use super::migrations::{AUDIT_MAC_MIGRATION, MIGRATIONS};
use super::records::{
    self, AUDIT_COLUMNS, CODE_COLUMNS, EVENT_COLUMNS, FEATURE_COLUMNS, GRANT_COLUMNS,
    MESSAGES_WITH_OPT_OUT, PUSHED_COLUMNS, REQUEST_COLUMNS, SESSION_COLUMNS, USER_COLUMNS,
    prefixed_user_columns,
};
use super::{
    IdempotentResponse, Job, MessageRow, Page, Paged, ReadJob, Repo, Store, StoreError, StoreResult,
};
use crate::workers::{ReadQueue, Workers, WriteQueue};
use consent_core::audit::{AuditKey, record_hash, record_mac};
use consent_core::authorization::{AuthorizationCode, PushedRequest};
use consent_core::model::{
    AccessRequest, AuditEntry, AuditRecord, Feature, Grant, GrantEvent, GrantState, Message,
    Partner, PrivacyChange, ReadByOthersApp, RequestStatus, Scope, ScopeSet, Thread, ThreadFilter,
    User,
};
use consent_core::session::Session;
use consent_proto::platform::v1::GrantEventKind;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, named_params, params};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::PoisonError;
use std::time::Duration;
use tokio::sync::watch;

/// Most jobs committed together.
const MAX_BATCH: usize = 256;
/// How many reader threads, each with its read-only connection: one per core, since a read
/// is mostly CPU work on pages the OS caches and each reader keeps a page cache of its own;
/// and at least two, so that reads go on while one waits on the disk.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .max(2)
}
/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 256;

impl From<rusqlite::Error> for StoreError {
    /// A database another process holds locked past the busy timeout is a wait that ran
    /// out, as on PostgreSQL: the call may be tried again. Anything else is a failure.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Failed(e.to_string()),
        }
    }
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    workers: Workers,
    events: watch::Sender<i64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and
    /// starts the writer and readers, which end once the store is closed or dropped and
    /// their queues are empty.
    /// Audit records are MAC'd with `audit_key`.
    pub fn open(path: &Path, audit_key: AuditKey) -> StoreResult<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn, &audit_key)?;
        let last_event: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM grant_events", [], |r| {
                r.get(0)
            })?;
        let events = watch::Sender::new(last_event);
        let writer_events = events.clone();
        let readers = (0..reader_count())
            .map(|_| {
                let conn = open_reader(path)?;
                Ok(move |queue: &ReadQueue| read_snapshots(&conn, queue))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let workers = Workers::start(
            "sqlite",
            move |queue| write_batches(&conn, &queue, &writer_events, &audit_key),
            readers,
        )?;
        Ok(SqliteStore { workers, events })
    }
}

/// A read-only connection to the database at `path`.
fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// A reader thread: takes the next read job from the shared queue and runs it in a read
/// transaction of its own, until the store is closed or dropped. A job that panics is
/// dropped (its caller hears that it did not finish) and the reader goes on.
fn read_snapshots(conn: &Connection, queue: &ReadQueue) {
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        if let Err(error) = run(conn, "BEGIN") {
            job.run(Err(error.into()));
            continue;
        }
        let mut repo = SqliteRepo {
            conn,
            audit_key: None,
            last_event: None,
        };
        let _ = catch_unwind(AssertUnwindSafe(|| job.run(Ok(&mut repo))));
        // Ending the transaction releases the snapshot; a reader left inside one would
        // refuse every later read and hold back the WAL's checkpoints.
        if let Err(error) = run(conn, "COMMIT") {
            tracing::error!(%error, "a read transaction did not end");
            if !conn.is_autocommit() {
                let _ = run(conn, "ROLLBACK");
            }
        }
    }
}

/// The writer thread: waits for a job, takes every other job already waiting, runs them
/// all in one transaction and commits once, then tells each job. Ends when the store is
/// closed or dropped and the queue is empty.
fn write_batches(
    conn: &Connection,
    queue: &WriteQueue,
    events: &watch::Sender<i64>,
    audit_key: &AuditKey,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let started = std::time::Instant::now();
        let mut last_event = None;
        let committed = run_batch(conn, audit_key, &mut batch, &mut last_event)
            .and_then(|()| run(conn, "COMMIT"))
            .map_err(StoreError::from);
        crate::observe_commit("sqlite", batch.len(), started, &committed);
        match &committed {
            Ok(()) => {
                if let Some(seq) = last_event {
                    events.send_replace(seq);
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "a batch did not commit");
                if !conn.is_autocommit()
                    && let Err(error) = run(conn, "ROLLBACK")
                {
                    tracing::error!(%error, "the batch could not be rolled back");
                }
            }
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// Runs each job of `batch` in a savepoint of its own inside one transaction, so that a
/// failing job takes back only its own writes. A job that panics fails like one that
/// returns an error, and the writer goes on. Some failures (a full disk, an I/O error)
/// make SQLite roll back the whole transaction, not only the statement: then no job of
/// the batch may commit.
fn run_batch(
    conn: &Connection,
    audit_key: &AuditKey,
    batch: &mut [Box<dyn Job>],
    last_event: &mut Option<i64>,
) -> rusqlite::Result<()> {
    run(conn, "BEGIN IMMEDIATE")?;
    for job in batch {
        run(conn, "SAVEPOINT job")?;
        let mut repo = SqliteRepo {
            conn,
            audit_key: Some(audit_key),
            last_event: None,
        };
        let kept = catch_unwind(AssertUnwindSafe(|| job.run(&mut repo))).unwrap_or(false);
        if conn.is_autocommit() {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("the transaction was rolled back".into()),
            ));
        }
        if kept {
            *last_event = repo.last_event.or(*last_event);
            run(conn, "RELEASE job")?;
        } else {
            run(conn, "ROLLBACK TO job")?;
            run(conn, "RELEASE job")?;
        }
    }
    Ok(())
}

/// Runs a statement without parameters (a transaction's begin, end or savepoint),
/// prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn migrate(conn: &mut Connection, audit_key: &AuditKey) -> StoreResult<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if index == AUDIT_MAC_MIGRATION {
            mac_existing_records(&tx, audit_key)?;
        }
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// MACs the audit records a store held before records carried MACs, once, in the
/// migration that adds them: each record whose hash and link still verify, up to the first
/// that does not (which `VerifyAudit` will then name, as it did before).
fn mac_existing_records(tx: &Connection, key: &AuditKey) -> rusqlite::Result<()> {
    let records = {
        let mut stmt = tx.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"))?;
        let rows = stmt.query_map([], audit_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut prev_hash = String::new();
    for (expected_seq, record) in (1..).zip(&records) {
        let intact = record.seq == expected_seq
            && record.prev_hash == prev_hash
            && record.hash == record_hash(record.seq, record.at_ms, &record.entry, &prev_hash);
        if !intact {
            tracing::warn!(
                seq = record.seq,
                "the audit chain was already broken here; records from it on are left without MACs"
            );
            break;
        }
        tx.execute(
            "UPDATE audit SET mac = ?1 WHERE seq = ?2",
            params![record_mac(key, record.seq, &record.hash), record.seq],
        )?;
        prev_hash.clone_from(&record.hash);
    }
    if let Some(head) = records.last() {
        tracing::info!(head_seq = head.seq, head_hash = %head.hash, "audit records written before MACs were MAC'd at upgrade");
    }
    Ok(())
}

impl Store for SqliteStore {
    fn submit(&self, job: Box<dyn Job>) {
        self.workers.submit(job);
    }

    fn submit_read(&self, job: Box<dyn ReadJob>) {
        self.workers.submit_read(job);
    }

    fn event_watch(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    fn close(&self, within: Duration) -> bool {
        self.workers.close(within)
    }
}

/// The repository over one connection: the writer's inside its transaction, or a read
/// connection inside its snapshot (where every write fails).
struct SqliteRepo<'a> {
    conn: &'a Connection,
    /// The key that MACs audit records: the writer's; readers append nothing.
    audit_key: Option<&'a AuditKey>,
    /// The newest grant event this job added.
    last_event: Option<i64>,
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn insert_or_exists(result: rusqlite::Result<usize>, what: String) -> StoreResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists(what)),
        Err(e) => Err(e.into()),
    }
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    records::user(r)
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<(i64, MessageRow)> {
    records::message_row(r)
}

fn feature_row(r: &Row<'_>) -> rusqlite::Result<Feature> {
    records::feature(r)
}

fn request_row(r: &Row<'_>) -> rusqlite::Result<AccessRequest> {
    records::request(r)
}

fn pushed_row(r: &Row<'_>) -> rusqlite::Result<PushedRequest> {
    records::pushed(r)
}

/// The active grants of a thread's participants, found through the participants' index
/// and the grants' index by user, not by a scan of every grant.
const ACTIVE_GRANTS_ON_THREAD: &str = "user_id IN (SELECT user_id FROM thread_participants WHERE thread_id = :thread) \
     AND state = :state";

fn grant_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    records::grant(r)
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    records::audit(r)
}

impl SqliteRepo<'_> {
    /// Runs one statement, prepared once and cached.
    fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// Reads one row with a statement prepared once and cached.
    fn query_row<T, P, F>(&self, sql: &str, params: P, row: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.conn.prepare_cached(sql)?.query_row(params, row)
    }

    fn participants(&self, thread_id: &str) -> StoreResult<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT user_id FROM thread_participants WHERE thread_id = ?1 ORDER BY user_id",
        )?;
        let rows = stmt.query_map([thread_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn thread_with_participants(
        &self,
        row: (i64, String, String, Option<String>, i64),
    ) -> StoreResult<(i64, Thread)> {
        let (seq, id, title, started_by_partner, created_ms) = row;
        let participants = self.participants(&id)?;
        Ok((
            seq,
            Thread {
                id,
                title,
                started_by_partner,
                created_ms,
                participants,
            },
        ))
    }

    fn grants_where(
        &self,
        condition: &str,
        args: impl rusqlite::Params,
    ) -> StoreResult<Vec<Grant>> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE {condition} ORDER BY rowid");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, grant_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A page of the users (`u`) that `from_where` finds for `user_id` (as `?1`), in the
    /// order of `cursor`, after `page.after`.
    fn users_page(
        &self,
        from_where: &str,
        cursor: &str,
        user_id: &str,
        page: Page,
    ) -> StoreResult<Paged<User>> {
        let sql = format!(
            "SELECT {}, {cursor} FROM {from_where} AND {cursor} > ?2 \
             ORDER BY {cursor} LIMIT CAST(?3 AS INTEGER)",
            prefixed_user_columns()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![user_id, page.after, limit(page)], |r| {
            Ok((r.get(6)?, user_row(r)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A page of the grants matching `condition`, newest first: the cursor is the row id
    /// (grants are never deleted, so row ids are never reused), `:before` the last one seen
    /// (see [`newer_than`]), `:limit` the page size.
    fn grants_page(
        &self,
        condition: &str,
        args: &[(&str, &dyn rusqlite::ToSql)],
    ) -> StoreResult<Paged<Grant>> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS}, rowid FROM grants WHERE {condition} \
             AND rowid < :before ORDER BY rowid DESC LIMIT CAST(:limit AS INTEGER)"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, |r| Ok((r.get(14)?, grant_row(r)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The events `condition` finds, oldest first, at most `limit`.
    fn events_where(
        &self,
        condition: &str,
        args: &[&dyn rusqlite::ToSql],
        limit: usize,
    ) -> StoreResult<Vec<GrantEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM grant_events WHERE {condition} ORDER BY seq LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, |r| records::event(r))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit_where(
        &self,
        condition: &str,
        args: impl rusqlite::Params,
    ) -> StoreResult<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE {condition}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, audit_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The authorization code whose `column` is `value`.
    fn code_where(&self, column: &str, value: &str) -> StoreResult<Option<AuthorizationCode>> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM authorization_codes WHERE {column} = ?1");
        Ok(self
            .query_row(&sql, [value], |r| records::code(r))
            .optional()?)
    }
}

impl Repo for SqliteRepo<'_> {
    fn insert_user(&mut self, user: &User, now_ms: i64) -> StoreResult<()> {
        let result = self.execute(
            "INSERT INTO users (id, name, display_name, password_hash, hide_from_others_apps, name_to_friends_apps, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![user.id, user.name, user.display_name, user.password_hash, user.hide_from_others_apps, user.name_to_friends_apps, now_ms],
        );
        insert_or_exists(result, format!("user name {} is taken", user.name))
    }

    fn user_by_name(&mut self, name: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1");
        Ok(self.query_row(&sql, [name], user_row).optional()?)
    }

    fn user_by_id(&mut self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
        Ok(self.query_row(&sql, [id], user_row).optional()?)
    }

    fn set_privacy(&mut self, user_id: &str, change: PrivacyChange) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET hide_from_others_apps = COALESCE(?2, hide_from_others_apps), \
             name_to_friends_apps = COALESCE(?3, name_to_friends_apps) WHERE id = ?1",
            params![
                user_id,
                change.hide_from_others_apps,
                change.name_to_friends_apps
            ],
        )?;
        Ok(())
    }

    fn insert_session(
        &mut self,
        token_hash: &str,
        user_id: &str,
        expires_ms: i64,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_ms) VALUES (?1, ?2, ?3)",
            params![token_hash, user_id, expires_ms],
        )?;
        Ok(())
    }

    fn delete_session(&mut self, token_hash: &str) -> StoreResult<()> {
        self.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }

    fn forget_sessions(&mut self, before_ms: i64) -> StoreResult<usize> {
        Ok(self.execute("DELETE FROM sessions WHERE expires_ms < ?1", [before_ms])?)
    }

    fn session(&mut self, token_hash: &str) -> StoreResult<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = ?1");
        Ok(self
            .query_row(&sql, [token_hash], |r| records::session(r))
            .optional()?)
    }

    fn add_friendship(&mut self, a: &str, b: &str) -> StoreResult<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO friends (user_id, friend_id) VALUES (?1, ?2)")?;
        stmt.execute([a, b])?;
        stmt.execute([b, a])?;
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM friend_requests WHERE (from_id = ?1 AND to_id = ?2) OR (from_id = ?2 AND to_id = ?1)",
        )?;
        stmt.execute([a, b])?;
        Ok(())
    }

    fn add_friend_request(&mut self, from: &str, to: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "INSERT OR IGNORE INTO friend_requests (from_id, to_id, created_ms) VALUES (?1, ?2, ?3)",
            params![from, to, now_ms],
        )?;
        Ok(())
    }

    fn friend_request_exists(&mut self, from: &str, to: &str) -> StoreResult<bool> {
        Ok(self
            .query_row(
                "SELECT 1 FROM friend_requests WHERE from_id = ?1 AND to_id = ?2",
                [from, to],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn friend_requests_from(&mut self, user_id: &str, since_ms: i64) -> StoreResult<usize> {
        let count: i64 = self.query_row(
            "SELECT COUNT(*) FROM friend_requests WHERE from_id = ?1 AND created_ms >= ?2",
            params![user_id, since_ms],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn friend_requests_to(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<User>> {
        self.users_page(
            "friend_requests r JOIN users u ON u.id = r.from_id WHERE r.to_id = ?1",
            "r.seq",
            user_id,
            page,
        )
    }

    fn friend_ids(&mut self, user_id: &str) -> StoreResult<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT friend_id FROM friends WHERE user_id = ?1")?;
        let rows = stmt.query_map([user_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn are_friends(&mut self, a: &str, b: &str) -> StoreResult<bool> {
        Ok(self
            .query_row(
                "SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2",
                [a, b],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn friends(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<User>> {
        self.users_page(
            "friends f JOIN users u ON u.id = f.friend_id WHERE f.user_id = ?1",
            "u.rowid",
            user_id,
            page,
        )
    }

    fn insert_thread(&mut self, thread: &Thread) -> StoreResult<()> {
        self.execute(
            "INSERT INTO threads (id, title, started_by_partner, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![thread.id, thread.title, thread.started_by_partner, thread.created_ms],
        )?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO thread_participants (thread_id, user_id) VALUES (?1, ?2)",
        )?;
        for user_id in &thread.participants {
            stmt.execute([&thread.id, user_id])?;
        }
        Ok(())
    }

    fn thread(&mut self, id: &str) -> StoreResult<Option<Thread>> {
        let row = self
            .query_row(
                "SELECT seq, id, title, started_by_partner, created_ms FROM threads WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        row.map(|row| self.thread_with_participants(row).map(|(_, t)| t))
            .transpose()
    }

    fn threads_of(
        &mut self,
        user_id: &str,
        filter: &ThreadFilter,
        page: Page,
    ) -> StoreResult<Paged<Thread>> {
        let (condition, arg) = match filter {
            ThreadFilter::All => ("?4 = ''", String::new()),
            ThreadFilter::Ids(ids) => (
                "instr(',' || ?4 || ',', ',' || t.id || ',') > 0",
                join_ids(ids),
            ),
            ThreadFilter::StartedBy(partner) => ("t.started_by_partner = ?4", partner.clone()),
        };
        let sql = format!(
            "SELECT t.seq, t.id, t.title, t.started_by_partner, t.created_ms FROM threads t \
             JOIN thread_participants p ON p.thread_id = t.id \
             WHERE p.user_id = ?1 AND t.seq > ?2 AND {condition} ORDER BY t.seq LIMIT CAST(?3 AS INTEGER)"
        );
        let rows: Vec<(i64, String, String, Option<String>, i64)> = {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![user_id, page.after, limit(page), arg], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        rows.into_iter()
            .map(|row| self.thread_with_participants(row))
            .collect()
    }

    fn insert_message(&mut self, message: &Message) -> StoreResult<()> {
        self.execute(
            "INSERT INTO messages (id, thread_id, sender_id, body, created_ms, sent_by_partner, card) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![message.id, message.thread_id, message.sender_id, message.body, message.created_ms, message.sent_by_partner, encode_card(message.card.as_ref())],
        )?;
        Ok(())
    }

    fn message(&mut self, id: &str) -> StoreResult<Option<MessageRow>> {
        let sql = format!("{MESSAGES_WITH_OPT_OUT} WHERE m.id = ?1");
        Ok(self
            .query_row(&sql, [id], message_row)
            .optional()?
            .map(|(_, row)| row))
    }

    fn messages(
        &mut self,
        thread_id: &str,
        since_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<MessageRow>> {
        let sql = format!(
            "{MESSAGES_WITH_OPT_OUT} WHERE m.thread_id = ?1 AND m.seq > ?2 AND m.created_ms >= ?3 \
             ORDER BY m.seq LIMIT CAST(?4 AS INTEGER)"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![thread_id, page.after, since_ms, limit(page)],
            message_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_message(&mut self, id: &str) -> StoreResult<()> {
        self.conn
            .execute("DELETE FROM messages WHERE id = ?1", [id])?;
        Ok(())
    }

    fn insert_partner(&mut self, partner: &Partner, now_ms: i64) -> StoreResult<()> {
        let result = self.execute(
            "INSERT INTO partners (id, display_name, allowed_scopes, suspended, blocked, redirect_uris, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![partner.id, partner.display_name, partner.allowed_scopes.bits(), partner.suspended, partner.blocked, join_lines(&partner.redirect_uris), now_ms],
        );
        insert_or_exists(
            result,
            format!("partner {} is already registered", partner.id),
        )
    }

    fn partner(&mut self, id: &str) -> StoreResult<Option<Partner>> {
        Ok(self
            .query_row(
                "SELECT id, display_name, allowed_scopes, suspended, blocked, redirect_uris FROM partners WHERE id = ?1",
                [id],
                |r| {
                    Ok(Partner {
                        id: r.get(0)?,
                        display_name: r.get(1)?,
                        allowed_scopes: ScopeSet::from_bits(r.get(2)?),
                        suspended: r.get(3)?,
                        blocked: r.get(4)?,
                        redirect_uris: split_lines(&r.get::<_, String>(5)?),
                    })
                },
            )
            .optional()?)
    }

    fn suspend_partner(&mut self, id: &str) -> StoreResult<()> {
        self.conn
            .execute("UPDATE partners SET suspended = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    fn set_partner_blocked(&mut self, id: &str, blocked: bool) -> StoreResult<()> {
        self.execute(
            "UPDATE partners SET blocked = ?2 WHERE id = ?1",
            params![id, blocked],
        )?;
        Ok(())
    }

    fn insert_feature(&mut self, feature: &Feature) -> StoreResult<()> {
        let result = self.execute(
            "INSERT INTO features (partner_id, name, description, scopes, retired, card_kinds) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![feature.partner_id, feature.name, feature.description, feature.scopes.bits(), feature.retired, encode_card_kinds(&feature.card_kinds)],
        );
        insert_or_exists(result, format!("feature {} already exists", feature.name))
    }

    fn feature(&mut self, partner_id: &str, name: &str) -> StoreResult<Option<Feature>> {
        let sql =
            format!("SELECT {FEATURE_COLUMNS} FROM features WHERE partner_id = ?1 AND name = ?2");
        Ok(self
            .query_row(&sql, [partner_id, name], feature_row)
            .optional()?)
    }

    fn features_of(&mut self, partner_id: &str) -> StoreResult<Vec<Feature>> {
        let sql =
            format!("SELECT {FEATURE_COLUMNS} FROM features WHERE partner_id = ?1 ORDER BY name");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([partner_id], feature_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn retire_feature(&mut self, partner_id: &str, name: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE features SET retired = 1 WHERE partner_id = ?1 AND name = ?2",
            [partner_id, name],
        )?;
        Ok(())
    }

    fn insert_request(&mut self, request: &AccessRequest) -> StoreResult<()> {
        self.execute(
            "INSERT INTO access_requests (id, partner_id, feature, user_id, coverage, thread_ids, include_history, purpose, status, grant_id, created_ms, user_name, binding_message, account_label) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                request.id, request.partner_id, request.feature,
                Some(request.user_id.as_str()).filter(|id| !id.is_empty()),
                request.coverage.to_i32(), join_ids(&request.thread_ids), request.include_history,
                request.purpose, request.status as i32, request.grant_id, request.created_ms,
                request.user_name, request.binding_message, request.account_label
            ],
        )?;
        Ok(())
    }

    fn request(&mut self, id: &str) -> StoreResult<Option<AccessRequest>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM access_requests WHERE id = ?1");
        Ok(self.query_row(&sql, [id], request_row).optional()?)
    }

    fn pending_requests(
        &mut self,
        user_id: &str,
        created_after_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<AccessRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS}, rowid FROM access_requests WHERE user_id = ?1 AND status = ?2 \
             AND created_ms >= ?3 AND rowid > ?4 ORDER BY rowid LIMIT CAST(?5 AS INTEGER)"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let pending = RequestStatus::Pending as i32;
        let args = params![user_id, pending, created_after_ms, page.after, limit(page)];
        let rows = stmt.query_map(args, |r| Ok((r.get(14)?, request_row(r)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn pending_requests_from(
        &mut self,
        partner_id: &str,
        user_name: &str,
        created_after_ms: i64,
    ) -> StoreResult<Vec<AccessRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM access_requests WHERE partner_id = ?1 AND user_name = ?2 \
             AND status = ?3 AND created_ms >= ?4 ORDER BY created_ms, id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let pending = RequestStatus::Pending as i32;
        let args = params![partner_id, user_name, pending, created_after_ms];
        let rows = stmt.query_map(args, request_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn expire_requests(&mut self, created_before_ms: i64) -> StoreResult<usize> {
        Ok(self.execute(
            "UPDATE access_requests SET status = ?1 WHERE status = ?2 AND created_ms < ?3",
            params![
                RequestStatus::RequestExpired as i32,
                RequestStatus::Pending as i32,
                created_before_ms
            ],
        )?)
    }

    fn set_request_status(
        &mut self,
        id: &str,
        status: RequestStatus,
        grant_id: Option<&str>,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE access_requests SET status = ?2, grant_id = COALESCE(?3, grant_id) WHERE id = ?1",
            params![id, status as i32, grant_id],
        )?;
        Ok(())
    }

    fn insert_grant(&mut self, g: &Grant) -> StoreResult<()> {
        self.execute(
            "INSERT INTO grants (id, user_id, partner_id, feature, scopes, coverage, thread_ids, include_history, created_ms, not_after_ms, last_used_ms, state, ended_ms, attested_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                g.id, g.user_id, g.partner_id, g.feature, g.scopes.bits(), g.coverage.to_i32(),
                join_ids(&g.thread_ids), g.include_history, g.created_ms, g.not_after_ms,
                g.last_used_ms, g.state.to_i32(), g.ended_ms, g.attested_ms
            ],
        )?;
        Ok(())
    }

    fn set_grant_token(&mut self, grant_id: &str, token_hash: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET token_hash = ?2 WHERE id = ?1",
            [grant_id, token_hash],
        )?;
        Ok(())
    }

    fn grant(&mut self, id: &str) -> StoreResult<Option<Grant>> {
        Ok(self.grants_where("id = ?1", [id])?.into_iter().next())
    }

    fn grant_by_token(&mut self, token_hash: &str) -> StoreResult<Option<Grant>> {
        Ok(self
            .grants_where("token_hash = ?1", [token_hash])?
            .into_iter()
            .next())
    }

    fn grants_of_partner(
        &mut self,
        partner_id: &str,
        active_only: bool,
        page: Page,
    ) -> StoreResult<Paged<Grant>> {
        self.grants_page(
            "partner_id = :partner AND (:active_only = 0 OR state = :active)",
            named_params! {
                ":partner": partner_id,
                ":active_only": active_only,
                ":active": GrantState::Active.to_i32(),
                ":before": newer_than(page),
                ":limit": limit(page),
            },
        )
    }

    fn grants_of_user(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<Grant>> {
        self.grants_page(
            "user_id = :user",
            named_params! {":user": user_id, ":before": newer_than(page), ":limit": limit(page)},
        )
    }

    fn active_grants_on_thread(
        &mut self,
        thread_id: &str,
        page: Page,
    ) -> StoreResult<Paged<Grant>> {
        self.grants_page(
            ACTIVE_GRANTS_ON_THREAD,
            named_params! {
                ":thread": thread_id,
                ":state": GrantState::Active.to_i32(),
                ":before": newer_than(page),
                ":limit": limit(page),
            },
        )
    }

    fn active_grants_of(
        &mut self,
        partner_id: &str,
        feature: Option<&str>,
    ) -> StoreResult<Vec<Grant>> {
        self.grants_where(
            "partner_id = ?1 AND (?2 IS NULL OR feature = ?2) AND state = ?3",
            params![partner_id, feature, GrantState::Active.to_i32()],
        )
    }

    fn grants_due_to_end(&mut self, now_ms: i64, idle_before_ms: i64) -> StoreResult<Vec<Grant>> {
        self.grants_where(
            "state = ?1 AND (not_after_ms <= ?2 OR COALESCE(last_used_ms, created_ms) <= ?3)",
            params![GrantState::Active.to_i32(), now_ms, idle_before_ms],
        )
    }

    fn all_grants(&mut self, page: Page) -> StoreResult<Paged<Grant>> {
        self.grants_page(
            "1 = 1",
            named_params! {":before": newer_than(page), ":limit": limit(page)},
        )
    }

    fn end_grant(&mut self, id: &str, state: GrantState, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET state = ?2, ended_ms = ?3 WHERE id = ?1 AND state = ?4",
            params![id, state.to_i32(), now_ms, GrantState::Active.to_i32()],
        )?;
        Ok(())
    }

    fn touch_grant(&mut self, id: &str, scope: Scope, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET last_used_ms = MAX(COALESCE(last_used_ms, ?2), ?2) WHERE id = ?1",
            params![id, now_ms],
        )?;
        self.execute(
            "INSERT INTO grant_scope_use (grant_id, scope, last_used_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (grant_id, scope) DO UPDATE \
             SET last_used_ms = MAX(grant_scope_use.last_used_ms, excluded.last_used_ms)",
            params![id, ScopeSet::of(&[scope]).bits(), now_ms],
        )?;
        Ok(())
    }

    fn used_scopes(&mut self, id: &str) -> StoreResult<ScopeSet> {
        let bits: i64 = self.query_row(
            "SELECT COALESCE(SUM(scope), 0) FROM grant_scope_use WHERE grant_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        Ok(ScopeSet::from_bits(bits))
    }

    fn grants_by_state(&mut self) -> StoreResult<Vec<(GrantState, usize)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM grants GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            let n: i64 = r.get(1)?;
            Ok((
                GrantState::from_stored(r.get(0)?),
                usize::try_from(n).unwrap_or(usize::MAX),
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn unattested_grants_ended_by(&mut self, ended_by_ms: i64) -> StoreResult<usize> {
        let count: i64 = self.query_row(
            "SELECT COUNT(*) FROM grants WHERE state <> ?1 AND attested_ms IS NULL AND ended_ms <= ?2",
            params![GrantState::Active.to_i32(), ended_by_ms],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn attest_deletion(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET attested_ms = COALESCE(attested_ms, ?2) WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    fn push_event(&mut self, grant: &Grant, kind: GrantEventKind, now_ms: i64) -> StoreResult<i64> {
        self.execute(
            "INSERT INTO grant_events (partner_id, grant_id, user_id, kind, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![grant.partner_id, grant.id, grant.user_id, kind as i32, now_ms],
        )?;
        let seq = self.conn.last_insert_rowid();
        self.last_event = Some(seq);
        Ok(seq)
    }

    fn events_after(
        &mut self,
        partner_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<GrantEvent>> {
        self.events_where(
            "partner_id = ?1 AND seq > ?2",
            params![partner_id, after_seq],
            limit,
        )
    }

    fn events_since(&mut self, after_seq: i64, limit: usize) -> StoreResult<Vec<GrantEvent>> {
        self.events_where("seq > ?1", params![after_seq], limit)
    }

    fn append_audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        let (prev_seq, prev_hash): (i64, String) = self
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or_default();
        let seq = prev_seq + 1;
        let hash = record_hash(seq, now_ms, entry, &prev_hash);
        let key = self
            .audit_key
            .ok_or_else(|| StoreError::Failed("audit records are appended on the writer".into()))?;
        let mac = record_mac(key, seq, &hash);
        self.execute(
            "INSERT INTO audit (seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash, mac) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                seq, now_ms, entry.partner_id, entry.user_id, entry.grant_id, entry.method,
                entry.resource, entry.decision, entry.reason, prev_hash, hash, mac
            ],
        )?;
        Ok(())
    }

    fn audit_records(&mut self, after_seq: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.audit_where(
            "seq > ?1 ORDER BY seq LIMIT CAST(?2 AS INTEGER)",
            params![after_seq, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn audit_records_of_user(
        &mut self,
        user_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.audit_where(
            "user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT CAST(?3 AS INTEGER)",
            params![user_id, after_seq, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn record_read_by_others_app(&mut self, read: &ReadByOthersApp) -> StoreResult<()> {
        self.execute(
            "INSERT INTO reads_by_others_apps (user_id, partner_id, thread_id, messages, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                read.user_id,
                read.partner_id,
                read.thread_id,
                read.messages,
                read.at_ms
            ],
        )?;
        Ok(())
    }

    fn reads_by_others_apps(
        &mut self,
        user_id: &str,
        page: Page,
    ) -> StoreResult<Paged<ReadByOthersApp>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, user_id, partner_id, thread_id, messages, at_ms FROM reads_by_others_apps \
             WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT CAST(?3 AS INTEGER)",
        )?;
        let rows = stmt.query_map(params![user_id, page.after, limit(page)], |r| {
            Ok((
                r.get(0)?,
                ReadByOthersApp {
                    user_id: r.get(1)?,
                    partner_id: r.get(2)?,
                    thread_id: r.get(3)?,
                    messages: r.get(4)?,
                    at_ms: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit_record(&mut self, seq: i64) -> StoreResult<Option<AuditRecord>> {
        Ok(self.audit_where("seq = ?1", [seq])?.into_iter().next())
    }

    fn audit_head(&mut self) -> StoreResult<Option<AuditRecord>> {
        Ok(self
            .audit_where("1 = 1 ORDER BY seq DESC LIMIT 1", [])?
            .into_iter()
            .next())
    }

    fn idempotent_response(
        &mut self,
        grant_id: &str,
        key: &str,
        since_ms: i64,
    ) -> StoreResult<Option<IdempotentResponse>> {
        Ok(self
            .query_row(
                "SELECT request_hash, response FROM idempotency \
                 WHERE grant_id = ?1 AND key = ?2 AND created_ms >= ?3",
                params![grant_id, key, since_ms],
                |r| {
                    Ok(IdempotentResponse {
                        request_hash: r.get(0)?,
                        response: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    fn save_idempotent_response(
        &mut self,
        grant_id: &str,
        key: &str,
        response: &IdempotentResponse,
        now_ms: i64,
    ) -> StoreResult<()> {
        // A record past its window may still be there: the new one takes its place.
        self.execute(
            "INSERT OR REPLACE INTO idempotency (grant_id, key, request_hash, response, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![grant_id, key, response.request_hash, response.response, now_ms],
        )?;
        Ok(())
    }

    fn forget_idempotent_responses(&mut self, before_ms: i64) -> StoreResult<usize> {
        Ok(self.execute("DELETE FROM idempotency WHERE created_ms < ?1", [before_ms])?)
    }

    fn insert_pushed_request(&mut self, uri_hash: &str, pushed: &PushedRequest) -> StoreResult<()> {
        self.execute(
            "INSERT INTO pushed_requests (uri_hash, partner_id, feature, coverage, thread_ids, include_history, purpose, redirect_uri, state, code_challenge, expires_ms, access_request_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                uri_hash, pushed.partner_id, pushed.feature, pushed.coverage.to_i32(),
                join_ids(&pushed.thread_ids), pushed.include_history, pushed.purpose,
                pushed.redirect_uri, pushed.state, pushed.code_challenge, pushed.expires_ms,
                pushed.access_request_id
            ],
        )?;
        Ok(())
    }

    fn pushed_request(&mut self, uri_hash: &str) -> StoreResult<Option<PushedRequest>> {
        let sql = format!("SELECT {PUSHED_COLUMNS} FROM pushed_requests WHERE uri_hash = ?1");
        Ok(self.query_row(&sql, [uri_hash], pushed_row).optional()?)
    }

    fn pushed_request_of(&mut self, access_request_id: &str) -> StoreResult<Option<PushedRequest>> {
        let sql =
            format!("SELECT {PUSHED_COLUMNS} FROM pushed_requests WHERE access_request_id = ?1");
        Ok(self
            .query_row(&sql, [access_request_id], pushed_row)
            .optional()?)
    }

    fn open_pushed_request(&mut self, uri_hash: &str, access_request_id: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE pushed_requests SET access_request_id = ?2 WHERE uri_hash = ?1",
            params![uri_hash, access_request_id],
        )?;
        Ok(())
    }

    fn insert_code(&mut self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()> {
        self.execute(
            "INSERT INTO authorization_codes (code_hash, partner_id, grant_id, redirect_uri, code_challenge, expires_ms, redeemed_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                code_hash, code.partner_id, code.grant_id, code.redirect_uri,
                code.code_challenge, code.expires_ms, code.redeemed_ms
            ],
        )?;
        Ok(())
    }

    fn code(&mut self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>> {
        self.code_where("code_hash", code_hash)
    }

    fn code_of_grant(&mut self, grant_id: &str) -> StoreResult<Option<AuthorizationCode>> {
        self.code_where("grant_id", grant_id)
    }

    fn rehash_code_of_grant(&mut self, grant_id: &str, new_hash: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE authorization_codes SET code_hash = ?2 WHERE grant_id = ?1",
            params![grant_id, new_hash],
        )?;
        Ok(())
    }

    fn redeem_code(&mut self, code_hash: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE authorization_codes SET redeemed_ms = ?2 WHERE code_hash = ?1",
            params![code_hash, now_ms],
        )?;
        Ok(())
    }

    fn forget_authorization_flows(&mut self, before_ms: i64) -> StoreResult<usize> {
        let pushed = self.execute(
            "DELETE FROM pushed_requests WHERE expires_ms < ?1",
            [before_ms],
        )?;
        let codes = self.execute(
            "DELETE FROM authorization_codes WHERE expires_ms < ?1",
            [before_ms],
        )?;
        Ok(pushed + codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{enqueue, execute, hold_writer, read_blocking, read_then_execute, transact};
    use consent_core::audit::ChainVerifier;
    use std::sync::{Arc, mpsc};

    fn refusal(reason: &str) -> AuditEntry {
        AuditEntry {
            decision: "deny".into(),
            reason: reason.into(),
            ..AuditEntry::default()
        }
    }

    fn test_key() -> AuditKey {
        AuditKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    /// Queues `work`; the receiver hears how it went once its transaction ended.
    fn queue<R: Send + 'static>(
        store: &SqliteStore,
        work: impl FnOnce(&mut dyn Repo) -> StoreResult<R> + Send + 'static,
    ) -> mpsc::Receiver<StoreResult<R>> {
        let (done, outcome) = mpsc::channel();
        enqueue(store, work, move |result| {
            let _ = done.send(result);
        });
        outcome
    }

    /// The reasons of the committed audit records, in order, once their chain verifies.
    fn committed_reasons(store: &SqliteStore) -> Vec<String> {
        let records = read_blocking(store, |repo| repo.audit_records(0, 100)).unwrap();
        let key = test_key();
        let mut chain = ChainVerifier::new(&key);
        for record in &records {
            chain.push(record);
        }
        assert_eq!(
            chain.finish().first_bad,
            None,
            "the committed chain verifies"
        );
        records.into_iter().map(|r| r.entry.reason).collect()
    }

    #[test]
    fn records_written_before_macs_are_macd_once_at_upgrade_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..AUDIT_MAC_MIGRATION] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", AUDIT_MAC_MIGRATION)
                .unwrap();
            let mut prev = String::new();
            for seq in 1..=3 {
                let entry = refusal("OLD");
                let hash = record_hash(seq, 0, &entry, &prev);
                conn.execute(
                    "INSERT INTO audit (seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash) \
                     VALUES (?1, 0, '', '', '', '', '', 'deny', 'OLD', ?2, ?3)",
                    params![seq, prev, hash],
                )
                .unwrap();
                prev = hash;
            }
        }
        let store = SqliteStore::open(&path, test_key()).unwrap();
        let appended = queue(&store, |repo| repo.append_audit(&refusal("NEW"), 0));
        assert!(matches!(
            appended.recv_timeout(Duration::from_secs(10)),
            Ok(Ok(()))
        ));
        assert_eq!(committed_reasons(&store), ["OLD", "OLD", "OLD", "NEW"]);
    }

    /// Awaits `work`, failing the test if it takes more than ten seconds.
    async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("finished within ten seconds")
    }

    #[tokio::test]
    async fn a_transaction_after_a_read_commits_though_its_caller_went_away() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("platform.db"), test_key()).unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let release = hold_writer(store.as_ref());
        let (looked, has_looked) = tokio::sync::oneshot::channel();
        let (ran, has_run) = tokio::sync::oneshot::channel();
        let call = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                read_then_execute(
                    &store,
                    move |repo| {
                        let _ = looked.send(());
                        repo.audit_records(0, 10).map(|records| records.len())
                    },
                    move |repo, seen| {
                        let _ = ran.send(());
                        repo.append_audit(&refusal(&format!("SAW {seen}")), 0)
                    },
                )
                .await
            }
        });

        within(has_looked).await.unwrap();
        call.abort();
        assert!(within(call).await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        within(has_run).await.unwrap();
        // Queued after the transaction that ran, so it commits with it or after it.
        within(execute(store.as_ref(), |_| Ok::<_, StoreError>(())))
            .await
            .unwrap();

        let reasons = read_blocking(store.as_ref(), |repo| repo.audit_records(0, 10))
            .unwrap()
            .into_iter()
            .map(|r| r.entry.reason)
            .collect::<Vec<_>>();
        assert_eq!(reasons, ["SAW 0"]);
    }

    #[tokio::test]
    async fn closing_commits_what_was_queued_and_refuses_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, test_key()).unwrap());
        let release_writer = hold_writer(store.as_ref());
        for n in 0..20 {
            enqueue(
                store.as_ref(),
                move |repo| repo.append_audit(&refusal(&format!("QUEUED {n}")), 0),
                drop,
            );
        }
        // A read still running when the store is closed, whose caller has gone.
        let (looked, has_looked) = tokio::sync::oneshot::channel();
        let (release_read, read_held) = mpsc::channel::<()>();
        let call = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                read_then_execute(
                    &store,
                    move |_| {
                        let _ = looked.send(());
                        let _ = read_held.recv();
                        Ok(())
                    },
                    |repo, ()| repo.append_audit(&refusal("AFTER THE READ"), 0),
                )
                .await
            }
        });
        within(has_looked).await.unwrap();
        call.abort();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(release_read);
            drop(release_writer);
        });

        let closing = Arc::clone(&store);
        let closed = tokio::task::spawn_blocking(move || closing.close(Duration::from_secs(10)));
        assert!(within(closed).await.unwrap(), "every thread ended in time");

        let later = within(execute(store.as_ref(), |_| Ok::<_, StoreError>(()))).await;
        assert!(
            matches!(&later, Err(StoreError::Unavailable(m)) if m == "the store stopped"),
            "{later:?}"
        );
        let later_read = read_blocking(store.as_ref(), |repo| repo.audit_head());
        assert!(
            matches!(&later_read, Err(StoreError::Unavailable(m)) if m == "the store stopped"),
            "{later_read:?}"
        );
        let reopened = SqliteStore::open(&path, test_key()).unwrap();
        let mut expected = (0..20).map(|n| format!("QUEUED {n}")).collect::<Vec<_>>();
        expected.push("AFTER THE READ".into());
        assert_eq!(committed_reasons(&reopened), expected);
    }

    #[test]
    fn closing_gives_up_at_its_deadline_and_can_be_waited_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let store = SqliteStore::open(&path, test_key()).unwrap();
        let release_writer = hold_writer(&store);
        let queued = queue(&store, |repo| repo.append_audit(&refusal("QUEUED"), 0));

        assert!(
            !store.close(Duration::from_millis(200)),
            "the held writer cannot end in time"
        );
        let later = queue(&store, |_| Ok(())).recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(&later, Ok(Err(StoreError::Unavailable(m))) if m == "the store stopped"),
            "{later:?}"
        );
        drop(release_writer);
        assert!(
            store.close(Duration::from_secs(10)),
            "the writer ends once released"
        );
        let committed = queued.recv_timeout(Duration::from_secs(10));
        assert!(matches!(committed, Ok(Ok(()))), "{committed:?}");
        let reopened = SqliteStore::open(&path, test_key()).unwrap();
        assert_eq!(committed_reasons(&reopened), ["QUEUED"]);
    }

    #[test]
    fn a_close_that_gives_up_on_a_read_still_lets_the_writer_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let store = SqliteStore::open(&path, test_key()).unwrap();
        let (looked, has_looked) = mpsc::channel();
        let (release_read, read_held) = mpsc::channel::<()>();
        crate::enqueue_read(
            &store,
            move |_| {
                let _ = looked.send(());
                let _ = read_held.recv();
                Ok::<_, StoreError>(())
            },
            drop,
        );
        has_looked.recv_timeout(Duration::from_secs(10)).unwrap();
        let queued = queue(&store, |repo| repo.append_audit(&refusal("QUEUED"), 0));

        assert!(
            !store.close(Duration::from_millis(200)),
            "the held read cannot end in time"
        );
        let committed = queued.recv_timeout(Duration::from_secs(10));
        assert!(matches!(committed, Ok(Ok(()))), "{committed:?}");
        let later = queue(&store, |_| Ok(())).recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(&later, Ok(Err(StoreError::Unavailable(_)))),
            "the writer's queue is closed though a read held the close up: {later:?}"
        );
        drop(release_read);
        let reopened = SqliteStore::open(&path, test_key()).unwrap();
        assert_eq!(committed_reasons(&reopened), ["QUEUED"]);
    }

    #[test]
    fn a_database_another_process_holds_locked_is_unavailable_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let store = SqliteStore::open(&path, test_key()).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let refused = queue(&store, |repo| repo.append_audit(&refusal("LOCKED OUT"), 0))
            .recv_timeout(Duration::from_secs(30));
        assert!(
            matches!(&refused, Ok(Err(StoreError::Unavailable(_)))),
            "a wait past the busy timeout may be tried again: {refused:?}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        let later = queue(&store, |repo| repo.append_audit(&refusal("AFTER"), 0))
            .recv_timeout(Duration::from_secs(30));
        assert!(matches!(later, Ok(Ok(()))), "{later:?}");
        assert_eq!(committed_reasons(&store), ["AFTER"]);
    }

    #[tokio::test]
    async fn a_read_that_fails_returns_its_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("platform.db"), test_key()).unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);

        let outcome = within(read_then_execute(
            &store,
            |_| Err::<(), _>(StoreError::Failed("the read failed".into())),
            |repo, ()| repo.append_audit(&refusal("AFTER A FAILED READ"), 0),
        ))
        .await;

        assert!(
            matches!(&outcome, Err(StoreError::Failed(m)) if m == "the read failed"),
            "{outcome:?}"
        );
        within(execute(store.as_ref(), |_| Ok::<_, StoreError>(())))
            .await
            .unwrap();
        let records = read_blocking(store.as_ref(), |repo| repo.audit_records(0, 10)).unwrap();
        assert!(records.is_empty(), "nothing appended: {records:?}");
    }

    #[test]
    fn jobs_queued_together_share_a_transaction_and_each_hears_of_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db"), test_key()).unwrap();

        let release = hold_writer(&store);
        let first = queue(&store, |repo| repo.append_audit(&refusal("FIRST"), 0));
        let second = queue(&store, |repo| repo.append_audit(&refusal("SECOND"), 0));
        release.send(()).unwrap();

        let wait = Duration::from_secs(10);
        assert!(matches!(first.recv_timeout(wait), Ok(Ok(()))));
        assert!(matches!(second.recv_timeout(wait), Ok(Ok(()))));
        assert_eq!(committed_reasons(&store), ["FIRST", "SECOND"]);
    }

    #[test]
    fn a_dropped_store_commits_the_jobs_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let store = SqliteStore::open(&path, test_key()).unwrap();

        let outcome = queue(&store, |repo| repo.append_audit(&refusal("LAST"), 0));
        drop(store);

        let committed = outcome.recv_timeout(Duration::from_secs(10));
        assert!(matches!(committed, Ok(Ok(()))), "{committed:?}");
        let reopened = SqliteStore::open(&path, test_key()).unwrap();
        assert_eq!(committed_reasons(&reopened), ["LAST"]);
    }

    #[test]
    fn a_failing_job_takes_back_its_own_writes_and_nothing_of_the_jobs_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db"), test_key()).unwrap();
        let ids: Vec<String> = (0..8000).map(|n| format!("usr_{n:04}")).collect();
        let users = ids.clone();
        transact(&store, move |repo| {
            for id in users {
                let user = User {
                    id: id.clone(),
                    name: id,
                    display_name: "d".repeat(100),
                    password_hash: String::new(),
                    hide_from_others_apps: false,
                    name_to_friends_apps: false,
                };
                repo.insert_user(&user, 0)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();

        // Queued while the writer is held, the next three share a transaction.
        let release = hold_writer(&store);
        let before = queue(&store, |repo| repo.append_audit(&refusal("BEFORE"), 0));
        let every = ids.clone();
        let failing = queue(&store, move |repo| {
            // Changes every page of the users table: its savepoint's copy of them, over
            // 1 MiB, outgrows the memory SQLite keeps it in, and moves to a file.
            for id in &every {
                let hide = PrivacyChange {
                    hide_from_others_apps: Some(true),
                    ..PrivacyChange::default()
                };
                repo.set_privacy(id, hide)?;
            }
            repo.append_audit(&refusal("TAKEN BACK"), 0)?;
            Err::<(), _>(StoreError::Failed("the job failed".into()))
        });
        let after = queue(&store, |repo| repo.append_audit(&refusal("AFTER"), 0));
        release.send(()).unwrap();

        let wait = Duration::from_secs(10);
        assert!(matches!(before.recv_timeout(wait), Ok(Ok(_))));
        assert!(matches!(
            failing.recv_timeout(wait),
            Ok(Err(StoreError::Failed(_)))
        ));
        assert!(matches!(after.recv_timeout(wait), Ok(Ok(_))));
        assert_eq!(committed_reasons(&store), ["BEFORE", "AFTER"]);
        let hidden = read_blocking(&store, move |repo| {
            let mut hidden = 0;
            for id in &ids {
                hidden += usize::from(
                    repo.user_by_id(id)?
                        .is_some_and(|u| u.hide_from_others_apps),
                );
            }
            Ok::<_, StoreError>(hidden)
        })
        .unwrap();
        assert_eq!(hidden, 0, "no user keeps the failed job's change");
    }

    #[test]
    fn a_snapshot_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db"), test_key()).unwrap();
        let written = read_blocking(&store, |repo| {
            repo.end_grant("grt_1", GrantState::Revoked, 0)
        });
        assert!(written.is_err(), "a read-only snapshot refuses writes");
    }

    #[test]
    fn the_apps_of_a_thread_are_found_through_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        drop(SqliteStore::open(&path, test_key()).unwrap());
        let conn = Connection::open(&path).unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT {GRANT_COLUMNS} FROM grants WHERE {ACTIVE_GRANTS_ON_THREAD} \
             AND rowid < 100 ORDER BY rowid DESC LIMIT 20"
        );
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(params!["thr_1", 0], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN grants")),
            "{plan:?}"
        );
        assert!(
            plan.iter().any(|step| step.contains("grants_by_user")),
            "{plan:?}"
        );
    }
}
