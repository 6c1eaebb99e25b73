//! The PostgreSQL store, for several platform replicas on one database.
//!
//! It runs as the SQLite store does, so that the two are read the same way: a writer thread
//! with its own connection runs every queued job in one transaction (each in a savepoint of
//! its own) and commits once; reader threads, each with a connection, run read jobs on
//! `REPEATABLE READ READ ONLY` snapshots. The client is `postgres`, the blocking face of
//! `tokio-postgres`: the store's operations are synchronous closures run on the store's own
//! threads, never on an async runtime thread. A lost connection is opened again at the
//! start of the next transaction, so a replica cut off from the database refuses calls
//! (their jobs fail) and recovers without a restart.
//!
//! **What serializes.** Every write transaction first takes one transaction-scoped advisory
//! lock ([`WRITER_LOCK`]), so the writers of all replicas commit one after another, as
//! SQLite's single writer does. That is what the audit chain needs anyway (each record
//! links to the one before it, and every partner call appends one), and it keeps every
//! rule written against one writer true across replicas: a check made in a transaction
//! sees every commit before it, grant-event numbers are handed out in commit order (so a
//! partner's cursor never skips an event committed late), and an idempotency key is looked
//! up and stored with no other writer between. Replicas share the cost of a commit by
//! batching, as one process does; what they add is read capacity, and survival of a lost
//! replica. Commits wait for the server's `fsync` (`synchronous_commit = on`).
//!
//! **Grant events across replicas.** A batch that added events ends with `NOTIFY
//! grant_events`; each replica's listener thread (`LISTEN grant_events`) then reads the
//! newest event number and advances [`Store::event_watch`], and reads it again every second
//! in case a notification was missed while its connection was down.
//!
//! **Migrations** run at start in one transaction under another advisory lock
//! ([`MIGRATION_LOCK`]), so replicas that start together apply each migration once.

mod repo;
mod schema;

use crate::workers::{ReadQueue, Workers, WriteQueue, spawn};
use crate::{Job, ReadJob, Store, StoreError, StoreResult};
use consent_core::audit::AuditKey;
use fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Statement};
use repo::PgRepo;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Most jobs committed together. Each job that writes is a subtransaction (its savepoint);
/// past 64 in one transaction PostgreSQL's subtransaction cache overflows, which slows
/// every snapshot on every replica while it lasts.
const MAX_BATCH: usize = 64;
/// Reader threads, each with its connection.
const READERS: usize = 4;
/// The advisory lock every write transaction takes first.
const WRITER_LOCK: i64 = 0x636f_6e73_656e_7401;
/// The advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x636f_6e73_656e_7402;
/// How long to wait for a connection to the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unacknowledged write to the database's socket may wait before the
/// connection counts as lost.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the listener reads the newest event number without a notification.
const EVENT_RECHECK: Duration = Duration::from_secs(1);
/// Settings of every connection. Commits wait for the server's `fsync`. The server probes
/// an idle connection after 5 s and drops it after 3 unanswered probes 2 s apart, or after
/// 10 s of unacknowledged writes, so a replica cut off while it holds the writer lock
/// releases it within about 11 s. A transaction left idle for 30 s ends (a replica frozen
/// while holding the lock), and waiting 45 s for the writer lock fails rather than hanging
/// every replica's writes.
const SESSION: &str = "SET synchronous_commit = on; SET tcp_keepalives_idle = 5; \
    SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; \
    SET tcp_user_timeout = 10000; SET idle_in_transaction_session_timeout = '30s'; \
    SET lock_timeout = '45s'";
/// How a write transaction begins: every statement sees what committed before it, so the
/// first statement after the writer lock sees every other replica's commits. The store's
/// guarantees across replicas depend on this level.
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

impl From<postgres::Error> for StoreError {
    /// The database could not be reached, or asked to be tried again: the connection was
    /// lost, refused or timed out, the server is shutting down or starting (SQLSTATE
    /// classes 08 and 57P), or a wait ran out (the writer lock, an idle transaction, a
    /// cancelled statement). Any other error is a failure, one the client made included
    /// (a value that does not decode), so that a repeatable bug is not retried forever.
    fn from(e: postgres::Error) -> Self {
        let lost = e.is_closed()
            || std::error::Error::source(&e).is_some_and(|source| source.is::<std::io::Error>());
        let retry = e.code().is_some_and(|state| {
            let code = state.code();
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(code, "55P03" | "25P03" | "57014")
        });
        if lost || retry {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Failed(e.to_string())
        }
    }
}

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    workers: Workers,
    events: Arc<watch::Sender<i64>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/name`), applies
    /// pending migrations under an advisory lock and starts the writer, readers and
    /// event listener, which end once the store is closed or dropped and their queues are
    /// empty (the listener once it is dropped).
    /// Audit records are MAC'd with `audit_key`.
    pub fn open(url: &str, audit_key: AuditKey) -> StoreResult<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Failed(format!("database url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(SOCKET_TIMEOUT);
        }
        config.keepalives_idle(SOCKET_TIMEOUT);
        let mut link = Link::new(config.clone(), None);
        migrate(&mut link)?;
        let newest = newest_event(&mut link)?;
        let events = Arc::new(watch::Sender::new(newest));
        let writer_events = Arc::clone(&events);
        let readers = (0..READERS)
            .map(|_| {
                let mut link = Link::new(config.clone(), None);
                move |queue: &ReadQueue| read_snapshots(&mut link, queue)
            })
            .collect();
        let workers = Workers::start(
            "postgres",
            move |queue| write_batches(&mut link, &queue, &writer_events, &audit_key),
            readers,
        )?;
        let listener = Link::new(config, Some("LISTEN grant_events"));
        let followed = Arc::downgrade(&events);
        spawn("postgres-events", move || {
            follow_events(listener, &followed)
        })?;
        Ok(PostgresStore { workers, events })
    }
}

/// One connection, opened again at the start of a transaction when it was lost, with the
/// statements prepared on it.
struct Link {
    config: postgres::Config,
    /// Run on each new connection, after `synchronous_commit` is set.
    on_connect: Option<&'static str>,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Link {
    fn new(config: postgres::Config, on_connect: Option<&'static str>) -> Self {
        Link {
            config,
            on_connect,
            client: None,
            statements: HashMap::new(),
        }
    }

    /// The connection, opened anew if there is none or it was lost: only between
    /// transactions, never inside one.
    fn connect(&mut self) -> StoreResult<&mut Client> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                self.statements.clear();
                let mut client = self
                    .config
                    .connect(NoTls)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                client.batch_execute(SESSION)?;
                if let Some(sql) = self.on_connect {
                    client.batch_execute(sql)?;
                }
                client
            }
        };
        Ok(self.client.insert(client))
    }

    /// The open connection, inside a transaction.
    fn live(&mut self) -> StoreResult<&mut Client> {
        match &mut self.client {
            Some(client) if !client.is_closed() => Ok(client),
            _ => Err(StoreError::Unavailable(
                "the database connection was lost".into(),
            )),
        }
    }

    /// Begins a transaction with `begin`, connecting first if needed. A connection that
    /// died while idle shows it only when used: then this connects again, once, since
    /// nothing of the transaction has run yet.
    fn begin(&mut self, begin: &str) -> StoreResult<()> {
        match self
            .connect()?
            .batch_execute(begin)
            .map_err(StoreError::from)
        {
            Err(StoreError::Unavailable(_)) => {
                self.client = None;
                self.connect()?.batch_execute(begin)?;
                Ok(())
            }
            begun => begun,
        }
    }

    /// Runs statements without parameters (a transaction's end, a savepoint, a lock).
    fn run(&mut self, sql: &str) -> StoreResult<()> {
        self.live()?.batch_execute(sql)?;
        Ok(())
    }

    /// `sql`, prepared once per connection.
    fn prepared(&mut self, sql: &str) -> StoreResult<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.live()?.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Ends a failed transaction; a connection that cannot is dropped, to be opened anew.
    fn abandon(&mut self) {
        if self.run("ROLLBACK").is_err() {
            self.client = None;
        }
    }
}

/// Applies pending migrations in one transaction under [`MIGRATION_LOCK`].
fn migrate(link: &mut Link) -> StoreResult<()> {
    link.begin(BEGIN_WRITE)?;
    let applied = apply_migrations(link).and_then(|()| link.run("COMMIT"));
    if applied.is_err() {
        link.abandon();
    }
    applied
}

fn apply_migrations(link: &mut Link) -> StoreResult<()> {
    link.run(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
    link.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let applied: i32 = link
        .live()?
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .try_get(0)?;
    let applied = usize::try_from(applied).unwrap_or(0);
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(applied) {
        link.run(sql)?;
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        link.live()?.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )?;
    }
    Ok(())
}

/// The newest grant-event number committed.
fn newest_event(link: &mut Link) -> StoreResult<i64> {
    Ok(link
        .connect()?
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM grant_events", &[])?
        .try_get(0)?)
}

/// Moves the event watch forward to `seq`, never back.
fn advance(events: &watch::Sender<i64>, seq: i64) {
    events.send_if_modified(|newest| {
        let newer = seq > *newest;
        if newer {
            *newest = seq;
        }
        newer
    });
}

/// The listener thread: reads the newest event number after each notification and every
/// [`EVENT_RECHECK`], until the store is dropped. Should it panic, each replica's event
/// streams still poll every few seconds; the panic is logged.
fn follow_events(mut link: Link, events: &Weak<watch::Sender<i64>>) {
    let followed = catch_unwind(AssertUnwindSafe(|| {
        while let Some(watch) = events.upgrade() {
            match newest_event(&mut link) {
                Ok(seq) => advance(&watch, seq),
                Err(error) => {
                    tracing::warn!(%error, "the grant-event listener lost the database");
                    link.client = None;
                }
            }
            drop(watch);
            wait_for_notification(&mut link);
        }
    }));
    if followed.is_err() {
        tracing::error!("the grant-event listener stopped");
    }
}

/// Waits up to [`EVENT_RECHECK`] for a notification, then takes any others queued behind
/// it (one read of the newest number covers them all).
fn wait_for_notification(link: &mut Link) {
    match &mut link.client {
        Some(client) => {
            let mut notifications = client.notifications();
            let woken = matches!(
                notifications.timeout_iter(EVENT_RECHECK).next(),
                Ok(Some(_))
            );
            if woken {
                while let Ok(Some(_)) = notifications.iter().next() {}
            }
        }
        None => std::thread::sleep(EVENT_RECHECK),
    }
}

/// A reader thread: takes the next read job from the shared queue and runs it on a
/// snapshot of its own, until the store is closed or dropped. A job that panics is dropped
/// (its caller hears that it did not finish) and the reader goes on.
fn read_snapshots(link: &mut Link, queue: &ReadQueue) {
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        if let Err(error) = link.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
            link.client = None;
            job.run(Err(error));
            continue;
        }
        let mut repo = PgRepo::new(link, None);
        let _ = catch_unwind(AssertUnwindSafe(|| job.run(Ok(&mut repo))));
        if link.run("COMMIT").is_err() {
            link.abandon();
        }
    }
}

/// The writer thread: waits for a job, takes every other job already waiting, runs them
/// all in one transaction and commits once, then tells each job. Ends when the store is
/// closed or dropped and the queue is empty.
fn write_batches(
    link: &mut Link,
    queue: &WriteQueue,
    events: &watch::Sender<i64>,
    audit_key: &AuditKey,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let started = std::time::Instant::now();
        let mut outcome = Outcome::default();
        let committed =
            run_batch(link, audit_key, &mut batch, &mut outcome).and_then(|()| link.run("COMMIT"));
        crate::observe_commit("postgres", batch.len(), started, &committed);
        match &committed {
            Ok(()) => {
                if let Some(seq) = outcome.last_event {
                    advance(events, seq);
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "a batch did not commit");
                link.abandon();
            }
        }
        let mut own_failures = outcome.failed.into_iter();
        for job in batch {
            match own_failures.next().flatten() {
                Some(failure) => job.finish(Err(failure)),
                None => job.finish(committed.clone()),
            }
        }
    }
}

/// What a batch's jobs left besides their writes.
#[derive(Default)]
struct Outcome {
    /// The newest grant event the batch added.
    last_event: Option<i64>,
    /// Per job, in order: the failure that took back its writes alone, if any.
    failed: Vec<Option<StoreError>>,
}

/// Takes [`WRITER_LOCK`], then runs each job of `batch` in a savepoint of its own, so that
/// a failing job takes back only its own writes. A job that panics fails like one that
/// returns an error, and the writer goes on. A job that went on after one of its
/// statements failed (which aborts PostgreSQL's transaction back to the savepoint) fails
/// alone too.
fn run_batch(
    link: &mut Link,
    audit_key: &AuditKey,
    batch: &mut [Box<dyn Job>],
    outcome: &mut Outcome,
) -> StoreResult<()> {
    link.begin(BEGIN_WRITE)?;
    link.run(&format!("SELECT pg_advisory_xact_lock({WRITER_LOCK})"))?;
    for job in batch {
        link.run("SAVEPOINT job")?;
        let mut repo = PgRepo::new(link, Some(audit_key));
        let kept = catch_unwind(AssertUnwindSafe(|| job.run(&mut repo))).unwrap_or(false);
        let added = repo.last_event;
        let released = if kept {
            link.run("RELEASE SAVEPOINT job")
        } else {
            Err(StoreError::Failed("the job failed".into()))
        };
        match released {
            Ok(()) => {
                outcome.last_event = added.or(outcome.last_event);
                outcome.failed.push(None);
            }
            Err(failure) => {
                link.run("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?;
                outcome.failed.push(kept.then_some(failure));
            }
        }
    }
    if outcome.last_event.is_some() {
        link.run("NOTIFY grant_events")?;
    }
    Ok(())
}

impl Store for PostgresStore {
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
