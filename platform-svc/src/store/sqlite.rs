//! The embedded SQLite store: one connection in WAL mode with `synchronous=FULL`, owned by
//! a writer thread that runs queued jobs in batches — one transaction and one fsync per
//! batch, a savepoint per job — so a commit is on disk before any job of it returns, and
//! concurrent calls share the cost of the fsync instead of queueing behind each other's.
//! Batches that nobody waits for share a transaction with the batches after them, for
//! 10 ms at most.
//!
//! Reads run beside it on read-only connections from a small pool, each in a transaction of
//! its own: WAL gives them a snapshot of what is committed, and a commit becomes visible
//! only once it is on disk. They look up partners, features, grants, used scopes, threads
//! and authors' opt-outs through the [`AuthCache`], which the writer keeps coherent with
//! its commits; a read takes a connection and begins its transaction only at its first
//! query, so one the cache answers whole (most refusals) touches no connection at all.
//!
//! A bound page size is written `LIMIT CAST(?n AS INTEGER)`: with a bare `LIMIT ?n` SQLite
//! plans the statement anew on every use, since the value may change the plan, and that
//! costs more than running it.

use super::auth_cache::{AuthCache, Changed};
use super::inbox::{Inbox, Woken};
use super::migrations::MIGRATIONS;
use super::{
    IdempotentResponse, Job, MessageRow, Page, Paged, Repo, Store, StoreResult, ThreadFilter,
};
use crate::audit::record_hash;
use crate::error::{ApiError, Reason};
use crate::model::{
    AccessRequest, AuditEntry, AuditRecord, Coverage, Feature, Grant, GrantEvent, GrantState,
    Message, Partner, RequestStatus, Scope, ScopeSet, Thread, User,
};
use consent_proto::platform::v1::GrantEventKind;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most jobs committed together.
const MAX_BATCH: usize = 256;
/// How long a batch smaller than the last waits for more jobs: about one fsync here.
const GATHER_WINDOW: Duration = Duration::from_micros(100);
/// How long a transaction that no caller waits for stays open for later jobs.
const MAX_DEFERRAL: Duration = Duration::from_millis(10);
/// Most idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 256;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    inbox: Arc<Inbox>,
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    cache: Arc<AuthCache>,
    events: watch::Sender<i64>,
    pseudonym_key: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A job's savepoint keeps its copies of the pages it changes in memory up to 124 KiB
        // (`LIBSQLITE3_FLAGS` in `.cargo/config.toml`).
        // Every statement the repository runs stays prepared.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn)?;
        let pseudonym_key = match conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'pseudonym_key'",
                [],
                |r| r.get(0),
            )
            .optional()?
        {
            Some(key) => key,
            None => {
                let key = crate::secret::new_secret();
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('pseudonym_key', ?1)",
                    [&key],
                )?;
                key
            }
        };
        let last_event: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM grant_events", [], |r| {
                r.get(0)
            })?;
        let events = watch::Sender::new(last_event);
        let inbox = Arc::new(Inbox::default());
        let writer_inbox = Arc::clone(&inbox);
        let writer_events = events.clone();
        let cache = Arc::new(AuthCache::default());
        let writer_cache = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let _close = CloseOnExit(&writer_inbox);
                write_batches(&conn, &writer_inbox, &writer_events, &writer_cache);
            })
            .map_err(|e| ApiError::Storage(format!("starting the writer: {e}")))?;
        Ok(SqliteStore {
            inbox,
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            cache,
            events,
            pseudonym_key,
        })
    }
}

impl Drop for SqliteStore {
    /// The writer commits what it holds and ends.
    fn drop(&mut self) {
        self.inbox.close();
    }
}

impl SqliteStore {
    fn reader(&self) -> rusqlite::Result<Connection> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn return_reader(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// The writer thread: takes every job waiting, runs them in one transaction, commits once,
/// drops the cached rows the batch changed, then tells each job. Ends when the store is
/// dropped, after committing what it holds.
///
/// When fewer jobs are waiting than the last batch held, more calls are probably on their
/// way: the writer gives them [`GATHER_WINDOW`] to join this commit rather than each paying
/// for an fsync of its own. A lone caller never waits, since its last batch held one job.
///
/// A batch that no caller waits for (see [`Job::awaited`]) leaves its transaction open for
/// the next ones, for up to [`MAX_DEFERRAL`] or [`MAX_BATCH`] jobs, or until a job someone
/// waits for joins it: a flood of such jobs then pays for one commit, and one wake-up of
/// the writer, every few milliseconds instead of one per batch.
fn write_batches(conn: &Connection, inbox: &Inbox, events: &watch::Sender<i64>, cache: &AuthCache) {
    let mut expected = 1;
    let mut open: Option<Transaction> = None;
    loop {
        let deferring = open
            .as_ref()
            .map(|tx| (tx.deadline, MAX_BATCH.saturating_sub(tx.jobs.len())));
        if inbox.wait(deferring) == Woken::Closed {
            break;
        }
        let mut batch = Vec::new();
        inbox.take(&mut batch, MAX_BATCH);
        let awaited = batch.iter().any(|job| job.awaited());
        if awaited && batch.len() < expected {
            std::thread::sleep(GATHER_WINDOW);
            inbox.take(&mut batch, MAX_BATCH);
        }
        let ran = if batch.is_empty() {
            Ok(())
        } else {
            expected = batch.len();
            open.get_or_insert_with(Transaction::new)
                .run(conn, batch, cache)
        };
        if ran.is_err() || open.as_ref().is_some_and(Transaction::due) {
            if let Some(tx) = open.take() {
                tx.end(conn, ran, events, cache);
            }
        }
    }
    if let Some(tx) = open.take() {
        tx.end(conn, Ok(()), events, cache);
    }
}

/// Closes the inbox when the writer ends, however it ends (a panic too), and fails the
/// jobs left in it, so that no caller waits for a writer that is gone.
struct CloseOnExit<'a>(&'a Inbox);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.close();
        let mut left = Vec::new();
        self.0.take(&mut left, usize::MAX);
        left.into_iter().for_each(writer_stopped);
    }
}

/// Tells a job that no writer will run it.
fn writer_stopped(job: Box<dyn Job>) {
    job.finish(Err("the store's writer stopped".into()));
}

/// The writer's transaction: the jobs run in it so far, each to hear how it ends.
struct Transaction {
    jobs: Vec<Box<dyn Job>>,
    /// Cached rows its jobs changed.
    changed: Vec<Changed>,
    /// The newest grant event its jobs added.
    last_event: Option<i64>,
    /// Whether a caller waits for one of its jobs: then it commits after their batch.
    awaited: bool,
    /// The audit chain's head once a job of it has appended a record, so that the next
    /// record need not read it back.
    chain_head: Option<ChainHead>,
    /// When it commits at the latest.
    deadline: Instant,
}

impl Transaction {
    fn new() -> Self {
        Transaction {
            jobs: Vec::new(),
            changed: Vec::new(),
            last_event: None,
            awaited: false,
            chain_head: None,
            deadline: Instant::now() + MAX_DEFERRAL,
        }
    }

    /// Runs `batch`, beginning the transaction first if this is its first batch. Each job
    /// runs in a savepoint of its own, so that a failing one takes back only its own writes,
    /// unless it writes with a single statement, which SQLite takes back by itself.
    fn run(
        &mut self,
        conn: &Connection,
        batch: Vec<Box<dyn Job>>,
        cache: &AuthCache,
    ) -> rusqlite::Result<()> {
        let run = |sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
        let first = self.jobs.len();
        self.awaited |= batch.iter().any(|job| job.awaited());
        self.jobs.extend(batch);
        if first == 0 {
            run("BEGIN IMMEDIATE")?;
        }
        for job in &mut self.jobs[first..] {
            let savepoint = !job.single_write();
            if savepoint {
                run("SAVEPOINT job")?;
            }
            let mut repo = SqliteRepo {
                conn: Conn::Writer(conn),
                last_event: None,
                cache: Cache::Writer(cache, &mut self.changed),
                chain_head: Some(&mut self.chain_head),
            };
            if job.run(&mut repo) {
                if savepoint {
                    run("RELEASE job")?;
                }
                self.last_event = repo.last_event.or(self.last_event);
                continue;
            }
            self.chain_head = None;
            if savepoint {
                run("ROLLBACK TO job")?;
                run("RELEASE job")?;
            } else if conn.is_autocommit() {
                // Some failures (a full disk, an I/O error) make SQLite roll back the whole
                // transaction, not only the statement: then no job of it may commit.
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("the transaction was rolled back".into()),
                ));
            }
        }
        Ok(())
    }

    /// Whether it must commit now.
    fn due(&self) -> bool {
        self.awaited || self.jobs.len() >= MAX_BATCH || Instant::now() >= self.deadline
    }

    /// Commits it if `ran` is fine, else rolls it back; drops the cached rows it changed,
    /// then tells each job.
    fn end(
        self,
        conn: &Connection,
        ran: rusqlite::Result<()>,
        events: &watch::Sender<i64>,
        cache: &AuthCache,
    ) {
        let committed = ran
            .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]).map(drop))
            .map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        } else if let Some(seq) = self.last_event {
            events.send_replace(seq);
        }
        cache.forget(&self.changed);
        for job in self.jobs {
            job.finish(committed.clone());
        }
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn submit(&self, job: Box<dyn Job>) {
        if let Err(job) = self.inbox.push(job) {
            writer_stopped(job);
        }
    }

    fn read(&self, work: &mut dyn FnMut(&mut dyn Repo) -> StoreResult<()>) -> StoreResult<()> {
        // Read before the snapshot begins, at the transaction's first read.
        let generation = self.cache.generation();
        let snapshot = OnceCell::new();
        let output = work(&mut SqliteRepo {
            conn: Conn::Snapshot(self, &snapshot),
            last_event: None,
            cache: Cache::Snapshot(&self.cache, generation),
            chain_head: None,
        });
        // Ending the transaction, if one began, releases the snapshot.
        let ended = match snapshot.into_inner() {
            Some(conn) => {
                let ended = conn.prepare_cached("COMMIT")?.execute([]);
                if ended.is_ok() {
                    self.return_reader(conn);
                }
                ended.map(drop)
            }
            None => Ok(()),
        };
        output?;
        ended?;
        Ok(())
    }

    fn event_watch(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    fn pseudonym_key(&self) -> &str {
        &self.pseudonym_key
    }
}

struct SqliteRepo<'a> {
    conn: Conn<'a>,
    last_event: Option<i64>,
    cache: Cache<'a>,
    /// On the writer, its transaction's record of the audit chain's head (empty until a
    /// job appends, and again once a job is rolled back); `None` on a snapshot.
    chain_head: Option<&'a mut Option<ChainHead>>,
}

/// The connection a repository reads and writes through.
enum Conn<'a> {
    /// The writer's, inside its transaction.
    Writer(&'a Connection),
    /// A read connection, taken from the store's pool with its read transaction begun at
    /// the first query: a call the [`AuthCache`] answers whole touches no connection.
    Snapshot(&'a SqliteStore, &'a OnceCell<Connection>),
}

/// The newest record of the audit chain: what the next record follows.
#[derive(Debug, Default)]
struct ChainHead {
    seq: i64,
    hash: String,
}

/// How a repository meets the [`AuthCache`].
enum Cache<'a> {
    /// On the writer, with the cached rows its batch has changed so far, for the cache to
    /// drop once they are committed. The cache holds what is committed, which is what the
    /// writer sees until its batch changes a cached row; from then on the batch reads
    /// only its own transaction.
    Writer(&'a AuthCache, &'a mut Vec<Changed>),
    /// On a snapshot begun at a generation: reads through the cache and fills it.
    Snapshot(&'a AuthCache, u64),
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn insert_or_exists(result: rusqlite::Result<usize>, what: String) -> StoreResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            Err(ApiError::AlreadyExists(Reason::AlreadyExists, what))
        }
        Err(e) => Err(e.into()),
    }
}

fn join_ids(ids: &[String]) -> String {
    ids.join(",")
}

fn split_ids(text: String) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_string).collect()
    }
}

const USER_COLUMNS: &str = "id, name, display_name, password_hash, hide_from_others_apps";
fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        display_name: r.get(2)?,
        password_hash: r.get(3)?,
        hide_from_others_apps: r.get(4)?,
    })
}

const MESSAGE_COLUMNS: &str = "seq, id, thread_id, sender_id, body, created_ms, sent_by_partner";
fn message_row(r: &Row<'_>) -> rusqlite::Result<(i64, Message)> {
    Ok((
        r.get(0)?,
        Message {
            id: r.get(1)?,
            thread_id: r.get(2)?,
            sender_id: r.get(3)?,
            body: r.get(4)?,
            created_ms: r.get(5)?,
            sent_by_partner: r.get(6)?,
        },
    ))
}

const FEATURE_COLUMNS: &str = "partner_id, name, description, scopes, retired";
fn feature_row(r: &Row<'_>) -> rusqlite::Result<Feature> {
    Ok(Feature {
        partner_id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        scopes: ScopeSet::from_bits(r.get(3)?),
        retired: r.get(4)?,
    })
}

const REQUEST_COLUMNS: &str = "id, partner_id, feature, user_id, coverage, thread_ids, include_history, purpose, status, grant_id, created_ms";
fn request_row(r: &Row<'_>) -> rusqlite::Result<AccessRequest> {
    Ok(AccessRequest {
        id: r.get(0)?,
        partner_id: r.get(1)?,
        feature: r.get(2)?,
        user_id: r.get(3)?,
        coverage: Coverage::from_i32(r.get(4)?).unwrap_or(Coverage::Listed),
        thread_ids: split_ids(r.get(5)?),
        include_history: r.get(6)?,
        purpose: r.get(7)?,
        status: RequestStatus::try_from(r.get::<_, i32>(8)?).unwrap_or(RequestStatus::Denied),
        grant_id: r.get(9)?,
        created_ms: r.get(10)?,
    })
}

const GRANT_COLUMNS: &str = "id, user_id, partner_id, feature, scopes, coverage, thread_ids, include_history, created_ms, not_after_ms, last_used_ms, state, ended_ms, attested_ms";
fn grant_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: r.get(0)?,
        user_id: r.get(1)?,
        partner_id: r.get(2)?,
        feature: r.get(3)?,
        scopes: ScopeSet::from_bits(r.get(4)?),
        // Unknown stored values fail closed: no threads, and an ended state.
        coverage: Coverage::from_i32(r.get(5)?).unwrap_or(Coverage::Listed),
        thread_ids: split_ids(r.get(6)?),
        include_history: r.get(7)?,
        created_ms: r.get(8)?,
        not_after_ms: r.get(9)?,
        last_used_ms: r.get(10)?,
        state: GrantState::from_i32(r.get(11)?).unwrap_or(GrantState::Revoked),
        ended_ms: r.get(12)?,
        attested_ms: r.get(13)?,
    })
}

const AUDIT_COLUMNS: &str = "seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash";
fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        entry: AuditEntry {
            partner_id: r.get(2)?,
            user_id: r.get(3)?,
            grant_id: r.get(4)?,
            method: r.get(5)?,
            resource: r.get(6)?,
            decision: r.get(7)?,
            reason: r.get(8)?,
        },
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

fn limit(page: Page) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}

impl SqliteRepo<'_> {
    /// The connection, beginning a snapshot's read transaction at its first use.
    fn conn(&self) -> rusqlite::Result<&Connection> {
        let (store, begun) = match &self.conn {
            Conn::Writer(conn) => return Ok(conn),
            Conn::Snapshot(store, begun) => (store, begun),
        };
        if let Some(conn) = begun.get() {
            return Ok(conn);
        }
        let conn = store.reader()?;
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(begun.get_or_init(|| conn))
    }

    /// On the writer, notes that a cached row changed.
    fn changed(&mut self, row: Changed) {
        if let Cache::Writer(_, changed) = &mut self.cache {
            changed.push(row);
        }
    }

    /// Answers from the cache when it can, and fills it on a miss.
    fn through_cache<T>(
        &self,
        cached: impl FnOnce(&AuthCache) -> Option<T>,
        query: impl FnOnce(&Self) -> StoreResult<Option<T>>,
        fill: impl FnOnce(&AuthCache, u64, &T),
    ) -> StoreResult<Option<T>> {
        let (cache, generation) = match &self.cache {
            Cache::Snapshot(cache, generation) => (*cache, *generation),
            Cache::Writer(cache, changed) if changed.is_empty() => (*cache, cache.generation()),
            Cache::Writer(..) => return query(self),
        };
        if let Some(hit) = cached(cache) {
            return Ok(Some(hit));
        }
        let row = query(self)?;
        if let Some(row) = &row {
            fill(cache, generation, row);
        }
        Ok(row)
    }

    /// A message with whether its author hides their messages from others' apps. An
    /// author the store does not know is taken to hide them.
    fn with_sender_opt_out(&self, message: Message) -> StoreResult<MessageRow> {
        let hides = self.through_cache(
            |cache| cache.hides(&message.sender_id),
            |repo| {
                Ok(repo
                    .query_row(
                        "SELECT hide_from_others_apps FROM users WHERE id = ?1",
                        [&message.sender_id],
                        |r| r.get(0),
                    )
                    .optional()?)
            },
            |cache, generation, hides| cache.fill_hides(generation, &message.sender_id, *hides),
        )?;
        Ok(MessageRow {
            message,
            sender_hides: hides.unwrap_or(true),
        })
    }

    /// Runs one statement, prepared once and cached.
    fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn()?.prepare_cached(sql)?.execute(params)
    }

    /// Reads one row with a statement prepared once and cached.
    fn query_row<T, P, F>(&self, sql: &str, params: P, row: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.conn()?.prepare_cached(sql)?.query_row(params, row)
    }

    fn participants(&self, thread_id: &str) -> StoreResult<Vec<String>> {
        let mut stmt = self.conn()?.prepare_cached(
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
        let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE {condition}");
        let mut stmt = self.conn()?.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, grant_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit_where(
        &self,
        condition: &str,
        args: impl rusqlite::Params,
    ) -> StoreResult<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE {condition}");
        let mut stmt = self.conn()?.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, audit_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Repo for SqliteRepo<'_> {
    fn insert_user(&mut self, user: &User, now_ms: i64) -> StoreResult<()> {
        let result = self.execute(
            "INSERT INTO users (id, name, display_name, password_hash, hide_from_others_apps, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user.id, user.name, user.display_name, user.password_hash, user.hide_from_others_apps, now_ms],
        );
        self.changed(Changed::User(user.id.clone()));
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

    fn set_hide_from_others_apps(&mut self, user_id: &str, hide: bool) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET hide_from_others_apps = ?2 WHERE id = ?1",
            params![user_id, hide],
        )?;
        self.changed(Changed::User(user_id.to_string()));
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

    fn session_user(&mut self, token_hash: &str, now_ms: i64) -> StoreResult<Option<String>> {
        Ok(self
            .query_row(
                "SELECT user_id FROM sessions WHERE token_hash = ?1 AND expires_ms > ?2",
                params![token_hash, now_ms],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn add_friendship(&mut self, a: &str, b: &str) -> StoreResult<()> {
        let mut stmt = self
            .conn()?
            .prepare_cached("INSERT OR IGNORE INTO friends (user_id, friend_id) VALUES (?1, ?2)")?;
        stmt.execute([a, b])?;
        stmt.execute([b, a])?;
        Ok(())
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
        let sql = format!(
            "SELECT u.rowid, {} FROM friends f JOIN users u ON u.id = f.friend_id \
             WHERE f.user_id = ?1 AND u.rowid > ?2 ORDER BY u.rowid LIMIT CAST(?3 AS INTEGER)",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stmt = self.conn()?.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![user_id, page.after, limit(page)], |r| {
            Ok((
                r.get(0)?,
                User {
                    id: r.get(1)?,
                    name: r.get(2)?,
                    display_name: r.get(3)?,
                    password_hash: r.get(4)?,
                    hide_from_others_apps: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn insert_thread(&mut self, thread: &Thread) -> StoreResult<()> {
        self.execute(
            "INSERT INTO threads (id, title, started_by_partner, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![thread.id, thread.title, thread.started_by_partner, thread.created_ms],
        )?;
        {
            let mut stmt = self.conn()?.prepare_cached(
                "INSERT OR IGNORE INTO thread_participants (thread_id, user_id) VALUES (?1, ?2)",
            )?;
            for user_id in &thread.participants {
                stmt.execute([&thread.id, user_id])?;
            }
        }
        self.changed(Changed::Thread(thread.id.clone()));
        Ok(())
    }

    fn thread(&mut self, id: &str) -> StoreResult<Option<Thread>> {
        self.through_cache(
            |cache| cache.thread(id),
            |repo| {
                let row = repo
                    .query_row(
                        "SELECT seq, id, title, started_by_partner, created_ms FROM threads WHERE id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                row.map(|row| repo.thread_with_participants(row).map(|(_, t)| t))
                    .transpose()
            },
            AuthCache::fill_thread,
        )
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
            let mut stmt = self.conn()?.prepare_cached(&sql)?;
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
            "INSERT INTO messages (id, thread_id, sender_id, body, created_ms, sent_by_partner) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![message.id, message.thread_id, message.sender_id, message.body, message.created_ms, message.sent_by_partner],
        )?;
        Ok(())
    }

    fn message(&mut self, id: &str) -> StoreResult<Option<MessageRow>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
        let message = self.query_row(&sql, [id], message_row).optional()?;
        message
            .map(|(_, message)| self.with_sender_opt_out(message))
            .transpose()
    }

    fn messages(
        &mut self,
        thread_id: &str,
        since_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<MessageRow>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE thread_id = ?1 AND seq > ?2 AND created_ms >= ?3 ORDER BY seq LIMIT CAST(?4 AS INTEGER)"
        );
        let messages: Vec<(i64, Message)> = {
            let mut stmt = self.conn()?.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![thread_id, page.after, since_ms, limit(page)],
                message_row,
            )?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        messages
            .into_iter()
            .map(|(seq, message)| Ok((seq, self.with_sender_opt_out(message)?)))
            .collect()
    }

    fn delete_message(&mut self, id: &str) -> StoreResult<()> {
        self.conn()?
            .execute("DELETE FROM messages WHERE id = ?1", [id])?;
        Ok(())
    }

    fn insert_partner(&mut self, partner: &Partner, now_ms: i64) -> StoreResult<()> {
        let result = self.execute(
            "INSERT INTO partners (id, display_name, allowed_scopes, suspended, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![partner.id, partner.display_name, partner.allowed_scopes.bits(), partner.suspended, now_ms],
        );
        self.changed(Changed::Partner(partner.id.clone()));
        insert_or_exists(
            result,
            format!("partner {} is already registered", partner.id),
        )
    }

    fn partner(&mut self, id: &str) -> StoreResult<Option<Partner>> {
        self.through_cache(
            |cache| cache.partner(id),
            |repo| {
                Ok(repo
                    .query_row(
                        "SELECT id, display_name, allowed_scopes, suspended FROM partners WHERE id = ?1",
                        [id],
                        |r| {
                            Ok(Partner {
                                id: r.get(0)?,
                                display_name: r.get(1)?,
                                allowed_scopes: ScopeSet::from_bits(r.get(2)?),
                                suspended: r.get(3)?,
                            })
                        },
                    )
                    .optional()?)
            },
            AuthCache::fill_partner,
        )
    }

    fn suspend_partner(&mut self, id: &str) -> StoreResult<()> {
        self.conn()?
            .execute("UPDATE partners SET suspended = 1 WHERE id = ?1", [id])?;
        self.changed(Changed::Partner(id.into()));
        Ok(())
    }

    fn insert_feature(&mut self, feature: &Feature) -> StoreResult<()> {
        let result = self.execute(
            "INSERT INTO features (partner_id, name, description, scopes, retired) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![feature.partner_id, feature.name, feature.description, feature.scopes.bits(), feature.retired],
        );
        self.changed(Changed::Feature(
            feature.partner_id.clone(),
            feature.name.clone(),
        ));
        insert_or_exists(result, format!("feature {} already exists", feature.name))
    }

    fn feature(&mut self, partner_id: &str, name: &str) -> StoreResult<Option<Feature>> {
        self.through_cache(
            |cache| cache.feature(partner_id, name),
            |repo| {
                let sql = format!(
                    "SELECT {FEATURE_COLUMNS} FROM features WHERE partner_id = ?1 AND name = ?2"
                );
                Ok(repo
                    .query_row(&sql, [partner_id, name], feature_row)
                    .optional()?)
            },
            AuthCache::fill_feature,
        )
    }

    fn features_of(&mut self, partner_id: &str) -> StoreResult<Vec<Feature>> {
        let sql =
            format!("SELECT {FEATURE_COLUMNS} FROM features WHERE partner_id = ?1 ORDER BY name");
        let mut stmt = self.conn()?.prepare_cached(&sql)?;
        let rows = stmt.query_map([partner_id], feature_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn retire_feature(&mut self, partner_id: &str, name: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE features SET retired = 1 WHERE partner_id = ?1 AND name = ?2",
            [partner_id, name],
        )?;
        self.changed(Changed::Feature(partner_id.into(), name.into()));
        Ok(())
    }

    fn insert_request(&mut self, request: &AccessRequest) -> StoreResult<()> {
        self.execute(
            "INSERT INTO access_requests (id, partner_id, feature, user_id, coverage, thread_ids, include_history, purpose, status, grant_id, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                request.id, request.partner_id, request.feature, request.user_id,
                request.coverage.to_i32(), join_ids(&request.thread_ids), request.include_history,
                request.purpose, request.status as i32, request.grant_id, request.created_ms
            ],
        )?;
        Ok(())
    }

    fn request(&mut self, id: &str) -> StoreResult<Option<AccessRequest>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM access_requests WHERE id = ?1");
        Ok(self.query_row(&sql, [id], request_row).optional()?)
    }

    fn pending_requests(&mut self, user_id: &str) -> StoreResult<Vec<AccessRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM access_requests WHERE user_id = ?1 AND status = ?2 ORDER BY created_ms, id"
        );
        let mut stmt = self.conn()?.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![user_id, RequestStatus::Pending as i32], request_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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
        self.changed(Changed::Grant(g.id.clone()));
        Ok(())
    }

    fn set_grant_token(&mut self, grant_id: &str, token_hash: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET token_hash = ?2 WHERE id = ?1",
            [grant_id, token_hash],
        )?;
        self.changed(Changed::GrantToken(grant_id.into()));
        Ok(())
    }

    fn grant(&mut self, id: &str) -> StoreResult<Option<Grant>> {
        self.through_cache(
            |cache| cache.grant(id),
            |repo| Ok(repo.grants_where("id = ?1", [id])?.into_iter().next()),
            AuthCache::fill_grant,
        )
    }

    fn grant_by_token(&mut self, token_hash: &str) -> StoreResult<Option<Grant>> {
        self.through_cache(
            |cache| cache.grant_by_token(token_hash),
            |repo| {
                Ok(repo
                    .grants_where("token_hash = ?1", [token_hash])?
                    .into_iter()
                    .next())
            },
            |cache, generation, grant| cache.fill_grant_of_token(generation, token_hash, grant),
        )
    }

    fn grants_of_partner(
        &mut self,
        partner_id: &str,
        active_only: bool,
    ) -> StoreResult<Vec<Grant>> {
        let active = GrantState::Active.to_i32();
        self.grants_where(
            "partner_id = ?1 AND (?2 = 0 OR state = ?3) ORDER BY created_ms DESC, id",
            params![partner_id, active_only, active],
        )
    }

    fn grants_of_user(&mut self, user_id: &str) -> StoreResult<Vec<Grant>> {
        self.grants_where("user_id = ?1 ORDER BY created_ms DESC, id", [user_id])
    }

    fn active_grants_of_users(&mut self, user_ids: &[String]) -> StoreResult<Vec<Grant>> {
        self.grants_where(
            "instr(',' || ?1 || ',', ',' || user_id || ',') > 0 AND state = ?2 ORDER BY created_ms, id",
            params![join_ids(user_ids), GrantState::Active.to_i32()],
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

    fn all_grants(&mut self) -> StoreResult<Vec<Grant>> {
        self.grants_where("1 = 1 ORDER BY created_ms, id", [])
    }

    fn end_grant(&mut self, id: &str, state: GrantState, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET state = ?2, ended_ms = ?3 WHERE id = ?1 AND state = ?4",
            params![id, state.to_i32(), now_ms, GrantState::Active.to_i32()],
        )?;
        self.changed(Changed::Grant(id.into()));
        Ok(())
    }

    fn touch_grant(&mut self, id: &str, scope: Scope, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET last_used_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?;
        self.execute(
            "INSERT INTO grant_scope_use (grant_id, scope, last_used_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (grant_id, scope) DO UPDATE SET last_used_ms = excluded.last_used_ms",
            params![id, ScopeSet::of(&[scope]).bits(), now_ms],
        )?;
        self.changed(Changed::Grant(id.into()));
        Ok(())
    }

    fn used_scopes(&mut self, id: &str) -> StoreResult<ScopeSet> {
        let used = self.through_cache(
            |cache| cache.used_scopes(id),
            |repo| {
                let bits: i64 = repo.query_row(
                    "SELECT COALESCE(SUM(scope), 0) FROM grant_scope_use WHERE grant_id = ?1",
                    [id],
                    |r| r.get(0),
                )?;
                Ok(Some(ScopeSet::from_bits(bits)))
            },
            |cache, generation, used| cache.fill_used_scopes(generation, id, *used),
        )?;
        Ok(used.unwrap_or_default())
    }

    fn attest_deletion(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET attested_ms = COALESCE(attested_ms, ?2) WHERE id = ?1",
            params![id, now_ms],
        )?;
        self.changed(Changed::Grant(id.into()));
        Ok(())
    }

    fn push_event(&mut self, grant: &Grant, kind: GrantEventKind, now_ms: i64) -> StoreResult<i64> {
        self.execute(
            "INSERT INTO grant_events (partner_id, grant_id, user_id, kind, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![grant.partner_id, grant.id, grant.user_id, kind as i32, now_ms],
        )?;
        let seq = self.conn()?.last_insert_rowid();
        self.last_event = Some(seq);
        Ok(seq)
    }

    fn events_after(
        &mut self,
        partner_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<GrantEvent>> {
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT seq, partner_id, grant_id, user_id, kind, at_ms FROM grant_events \
             WHERE partner_id = ?1 AND seq > ?2 ORDER BY seq LIMIT CAST(?3 AS INTEGER)",
        )?;
        let rows = stmt.query_map(
            params![
                partner_id,
                after_seq,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(GrantEvent {
                    seq: r.get(0)?,
                    partner_id: r.get(1)?,
                    grant_id: r.get(2)?,
                    user_id: r.get(3)?,
                    kind: GrantEventKind::try_from(r.get::<_, i32>(4)?)
                        .unwrap_or(GrantEventKind::Unspecified),
                    at_ms: r.get(5)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn append_audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        // Taken, not copied: if the insert fails, the next record reads the head back.
        let known = self.chain_head.as_deref_mut().and_then(Option::take);
        let prev = match known {
            Some(head) => head,
            None => self
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| {
                        Ok(ChainHead {
                            seq: r.get(0)?,
                            hash: r.get(1)?,
                        })
                    },
                )
                .optional()?
                .unwrap_or_default(),
        };
        let seq = prev.seq + 1;
        let hash = record_hash(seq, now_ms, entry, &prev.hash);
        self.execute(
            "INSERT INTO audit (seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                seq, now_ms, entry.partner_id, entry.user_id, entry.grant_id, entry.method,
                entry.resource, entry.decision, entry.reason, prev.hash, hash
            ],
        )?;
        if let Some(head) = self.chain_head.as_deref_mut() {
            *head = Some(ChainHead { seq, hash });
        }
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
        partner_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        Ok(self
            .query_row(
                "SELECT request_hash, response FROM idempotency WHERE partner_id = ?1 AND key = ?2",
                [partner_id, key],
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
        partner_id: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO idempotency (partner_id, key, request_hash, response) VALUES (?1, ?2, ?3, ?4)",
            params![partner_id, key, response.request_hash, response.response],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ChainVerifier;
    use crate::store::{append_unawaited, enqueue, hold_writer, read, transact};
    use std::sync::mpsc;

    fn refusal(reason: &str) -> AuditEntry {
        AuditEntry {
            decision: "deny".into(),
            reason: reason.into(),
            ..AuditEntry::default()
        }
    }

    /// What a queued job is told, and the receiver that hears it.
    fn reply<R: Send + 'static>() -> (
        impl FnOnce(StoreResult<R>) + Send + 'static,
        mpsc::Receiver<StoreResult<R>>,
    ) {
        let (done, outcome) = mpsc::channel();
        let tell = move |result| {
            let _ = done.send(result);
        };
        (tell, outcome)
    }

    /// Queues a record nobody waits for; the receiver hears how its commit went.
    fn record_unawaited(store: &SqliteStore, reason: &str) -> mpsc::Receiver<StoreResult<()>> {
        let (tell, outcome) = reply();
        append_unawaited(store, refusal(reason), 0, tell);
        outcome
    }

    /// Queues `work` as a job someone waits for; the receiver hears how it went.
    fn queue<R: Send + 'static>(
        store: &SqliteStore,
        work: impl FnOnce(&mut dyn Repo) -> StoreResult<R> + Send + 'static,
    ) -> mpsc::Receiver<StoreResult<R>> {
        let (tell, outcome) = reply();
        enqueue(store, work, tell);
        outcome
    }

    /// The reasons of the committed audit records, in order, once their chain verifies.
    fn committed_reasons(store: &SqliteStore) -> Vec<String> {
        let records = read(store, |repo| repo.audit_records(0, 100)).unwrap();
        let mut chain = ChainVerifier::new();
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
    fn a_job_nobody_waits_for_commits_though_no_other_job_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db")).unwrap();

        let outcome = record_unawaited(&store, "ALONE");

        let committed = outcome.recv_timeout(Duration::from_secs(10));
        assert!(matches!(committed, Ok(Ok(()))), "{committed:?}");
        assert_eq!(committed_reasons(&store), ["ALONE"]);
    }

    #[test]
    fn a_waiting_job_commits_the_jobs_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db")).unwrap();

        let outcome = record_unawaited(&store, "FIRST");
        let seen = transact(&store, |repo| repo.audit_records(0, 100)).unwrap();

        assert_eq!(
            seen.len(),
            1,
            "the waiting job sees the record queued before it"
        );
        assert!(
            matches!(outcome.try_recv(), Ok(Ok(()))),
            "the record committed with the waiting job"
        );
        assert_eq!(committed_reasons(&store), ["FIRST"]);
    }

    #[test]
    fn a_closing_store_commits_the_jobs_nobody_waits_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let store = SqliteStore::open(&path).unwrap();

        let outcome = record_unawaited(&store, "LAST");
        drop(store);

        let committed = outcome.recv_timeout(Duration::from_secs(10));
        assert!(matches!(committed, Ok(Ok(()))), "{committed:?}");
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(committed_reasons(&reopened), ["LAST"]);
    }

    #[test]
    fn records_nobody_waits_for_outlive_a_failing_job_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db")).unwrap();

        // Queued while the writer is held, the next three share a transaction; the two
        // records run without a savepoint of their own.
        let release = hold_writer(&store);
        let before = record_unawaited(&store, "BEFORE");
        let failing = queue(&store, |repo| {
            repo.append_audit(&refusal("TAKEN BACK"), 0)?;
            Err::<(), _>(ApiError::Storage("the job failed".into()))
        });
        let after = record_unawaited(&store, "AFTER");
        release.send(()).unwrap();

        let wait = Duration::from_secs(10);
        assert!(matches!(before.recv_timeout(wait), Ok(Ok(()))));
        assert!(matches!(
            failing.recv_timeout(wait),
            Ok(Err(ApiError::Storage(_)))
        ));
        assert!(matches!(after.recv_timeout(wait), Ok(Ok(()))));
        assert_eq!(committed_reasons(&store), ["BEFORE", "AFTER"]);
    }

    #[test]
    fn a_failing_job_takes_back_its_own_writes_and_nothing_of_the_jobs_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("platform.db")).unwrap();
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
                };
                repo.insert_user(&user, 0)?;
            }
            Ok(())
        })
        .unwrap();

        // Queued while the writer is held, the next three share a transaction.
        let release = hold_writer(&store);
        let before = queue(&store, |repo| repo.append_audit(&refusal("BEFORE"), 0));
        let every = ids.clone();
        let failing = queue(&store, move |repo| {
            // Changes every page of the users table: its savepoint's copy of them, over
            // 1 MiB, outgrows the buffer SQLite keeps it in, and moves to a file.
            for id in &every {
                repo.set_hide_from_others_apps(id, true)?;
            }
            repo.append_audit(&refusal("TAKEN BACK"), 0)?;
            Err::<(), _>(ApiError::Storage("the job failed".into()))
        });
        let after = queue(&store, |repo| repo.append_audit(&refusal("AFTER"), 0));
        release.send(()).unwrap();

        let wait = Duration::from_secs(10);
        assert!(matches!(before.recv_timeout(wait), Ok(Ok(_))));
        assert!(matches!(
            failing.recv_timeout(wait),
            Ok(Err(ApiError::Storage(_)))
        ));
        assert!(matches!(after.recv_timeout(wait), Ok(Ok(_))));
        assert_eq!(committed_reasons(&store), ["BEFORE", "AFTER"]);
        let hidden = read(&store, |repo| {
            let mut hidden = 0;
            for id in &ids {
                hidden += usize::from(
                    repo.user_by_id(id)?
                        .is_some_and(|u| u.hide_from_others_apps),
                );
            }
            Ok(hidden)
        })
        .unwrap();
        assert_eq!(hidden, 0, "no user keeps the failed job's change");
    }
}
