//! The platform's store: the interface the services write against, and its two backends:
//! SQLite for one process ([`SqliteStore`]), PostgreSQL for several replicas on one database
//! ([`PostgresStore`]); [`open`] picks one from the configured `database`.
//!
//! Handlers never see SQL. They hand the store a closure over [`Repo`], the typed
//! operations available inside one transaction, and get its value back once the
//! transaction is durably committed ([`execute`]), or run a closure that only reads on a
//! snapshot of committed data ([`read`]), or both in turn, the read's value passed to the
//! transaction ([`read_then_execute`]). Failures come back as [`StoreError`]; turning them
//! into gRPC statuses is the services' business.
//!
//! Nothing here blocks an async runtime thread: [`execute`], [`read`] and
//! [`read_then_execute`] hand their closures to the store's own threads and wait on a
//! channel for the value.
//!
//! **A backend** implements [`Store`] and [`Repo`] and nothing else: `submit` runs each
//! queued [`Job`] in a transaction (one job per transaction, or several, each in a
//! savepoint, as both backends here do) and calls [`Job::finish`] once that transaction
//! committed or failed; `submit_read` runs each [`ReadJob`] in a read-only transaction;
//! `event_watch` is advanced after each commit that added grant events (across replicas,
//! PostgreSQL's from `LISTEN`/`NOTIFY`); `close` runs what is queued, then stops. Both
//! backends here leave their threads and queues to `workers`. A backend's `Repo` turns its
//! driver's errors into [`StoreError`] where it is written. Handlers see neither backend.
//! Both read users, sessions, features, requests, pushed requests, authorization codes,
//! grants, messages, grant events and audit records from rows with the same decoders (`records`);
//! the other rows (partners, threads, reads by others' apps) are decoded where each backend
//! reads them. Both store values that have no column type the
//! same way (`codec`).

mod codec;
mod migrations;
mod postgres;
mod records;
mod sqlite;
mod workers;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use consent_core::audit::AuditKey;
use consent_core::authorization::{AuthorizationCode, PushedRequest};
use consent_core::model::{
    AccessRequest, AuditEntry, AuditRecord, Feature, Grant, GrantEvent, GrantState, Message,
    Partner, PrivacyChange, ReadByOthersApp, RequestStatus, Scope, ScopeSet, Thread, ThreadFilter,
    User,
};
use consent_core::session::Session;
use consent_proto::platform::v1::GrantEventKind;
use std::sync::Arc;
use tokio::sync::watch;

/// Opens the store `database` names: a `postgres://` or `postgresql://` URL is a
/// PostgreSQL database (shared by every replica that names it), a value without `://` the
/// path of a SQLite file (one process); any other URL is refused, and so is a value with
/// `=` in it, such as `host=db dbname=consent`: PostgreSQL's other form of connection
/// string, which would otherwise quietly become a SQLite file of that name, one per
/// replica. Blocks on I/O: call it off the async runtime's threads (e.g. in
/// `spawn_blocking`).
pub fn open(database: &str, audit_key: AuditKey) -> StoreResult<Arc<dyn Store>> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(database, audit_key)?))
    } else if let Some((scheme, _)) = database.split_once("://") {
        Err(StoreError::Failed(format!(
            "database: {scheme}:// is not a store; use postgres:// or a SQLite file's path"
        )))
    } else if database.contains('=') {
        Err(StoreError::Failed(
            "database: a value with '=' is not a SQLite file's path; give PostgreSQL as a \
             postgres:// URL"
                .into(),
        ))
    } else {
        Ok(Arc::new(SqliteStore::open(
            std::path::Path::new(database),
            audit_key,
        )?))
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists already; the message says which.
    #[error("{0}")]
    AlreadyExists(String),
    /// The database failed: nothing of the transaction was committed.
    #[error("storage failure: {0}")]
    Failed(String),
    /// The database could not be reached (a lost or refused connection, a wait that ran
    /// out), or this process's store has been closed (it is shutting down): nothing of the
    /// transaction was committed, unless the connection was lost during the commit itself,
    /// when it may have been. Trying again may work (with the same idempotency key, where
    /// the call takes one): on another replica, or here unless the store was closed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: rows after `after` (an opaque cursor), at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Cursor of the last row already seen (0 = start).
    pub after: i64,
    /// Maximum rows.
    pub limit: usize,
}

/// Rows with their cursors.
pub type Paged<T> = Vec<(i64, T)>;

/// A message and whether its author hides their messages from others' apps.
#[derive(Debug, Clone)]
pub struct MessageRow {
    /// The message.
    pub message: Message,
    /// The author's opt-out; `None` when the store does not know the author.
    pub sender_hides: Option<bool>,
}

/// A stored idempotent response.
#[derive(Debug, Clone)]
pub struct IdempotentResponse {
    /// Hash of the request that produced it.
    pub request_hash: String,
    /// Encoded response.
    pub response: Vec<u8>,
}

/// One unit of work: it runs inside a transaction, then hears how the commit went.
pub trait Job: Send {
    /// Runs against the store; returns false when its writes must be taken back.
    fn run(&mut self, repo: &mut dyn Repo) -> bool;
    /// Called once the transaction it ran in is durably committed, or failed to commit.
    fn finish(self: Box<Self>, committed: StoreResult<()>);
}

/// Work on a read-only snapshot of committed data.
pub trait ReadJob: Send {
    /// Runs against the snapshot, or hears why none could be had; any write it attempts
    /// fails.
    fn run(self: Box<Self>, snapshot: StoreResult<&mut dyn Repo>);
}

/// A durable store of everything the platform knows.
pub trait Store: Send + Sync + 'static {
    /// Queues `job`; it runs in a later transaction and finishes after that commits. Must
    /// not wait for the writer or the readers: a reader calls it, inside its read
    /// transaction, for [`read_then_execute`].
    fn submit(&self, job: Box<dyn Job>);
    /// Queues `job`; it runs soon on a snapshot of what is committed, beside the writer.
    fn submit_read(&self, job: Box<dyn ReadJob>);
    /// The newest grant-event sequence number, updated after each commit that added events.
    fn event_watch(&self) -> watch::Receiver<i64>;
    /// Runs every read queued so far, then every transaction queued so far (those the reads
    /// queued too), and stops, waiting at most `within`: once it returns `true`, each of
    /// those transactions has committed or failed; `false` says some were still running
    /// or waiting when the time was up, or a store thread panicked. Work queued later hears
    /// that the store stopped. A call made while another runs waits for that one first.
    /// For a process about to exit. Blocks: call it off the async runtime's threads, and
    /// never from the store's own (a job, or a read's reply).
    fn close(&self, within: std::time::Duration) -> bool;
}

/// A closure as a [`Job`], delivering its output through `reply` once committed.
struct Pending<F, R, E> {
    work: Option<F>,
    output: Option<Result<R, E>>,
    reply: Box<dyn FnOnce(Result<R, E>) + Send>,
}

impl<F, R, E> Job for Pending<F, R, E>
where
    F: FnOnce(&mut dyn Repo) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, repo: &mut dyn Repo) -> bool {
        let output = match self.work.take() {
            Some(work) => work(repo),
            None => Err(StoreError::Failed("job ran twice".into()).into()),
        };
        let keep = output.is_ok();
        self.output = Some(output);
        keep
    }

    fn finish(self: Box<Self>, committed: StoreResult<()>) {
        let result = match (self.output, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(e.into()),
            (None, Ok(())) => Err(StoreError::Failed("job did not run".into()).into()),
        };
        (self.reply)(result);
    }
}

/// Queues `work` to run in one of the store's transactions and returns at once; `done`
/// hears its value once committed.
pub fn enqueue<R, E>(
    store: &dyn Store,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
    done: impl FnOnce(Result<R, E>) + Send + 'static,
) where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    store.submit(Box::new(Pending {
        work: Some(work),
        output: None,
        reply: Box::new(done),
    }));
}

/// Queues `work` and returns the receiver that hears its value once committed.
fn submit<R, E>(
    store: &dyn Store,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<Result<R, E>>
where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    enqueue(store, work, move |result| {
        let _ = sender.send(result);
    });
    receiver
}

/// Counts a batch's commit: `consent_store_commit_seconds` (from the batch's first
/// statement until its commit returned), `consent_store_commit_jobs` (jobs in the batch),
/// and `consent_store_commit_failures_total`, each labelled with the `backend`. The
/// platform's readiness probe writes an empty job every second, which counts too.
fn observe_commit(
    backend: &'static str,
    jobs: usize,
    started: std::time::Instant,
    committed: &StoreResult<()>,
) {
    metrics::histogram!("consent_store_commit_seconds", "backend" => backend)
        .record(started.elapsed());
    metrics::histogram!("consent_store_commit_jobs", "backend" => backend).record(jobs as f64);
    if committed.is_err() {
        metrics::counter!("consent_store_commit_failures_total", "backend" => backend).increment(1);
    }
}

/// The store was closed, or its writer ended without an answer for a job.
fn stopped() -> StoreError {
    StoreError::Unavailable("the store stopped".into())
}

/// A read, or the transaction queued after it, that ended without an answer (it panicked,
/// or its thread ended with it still queued).
fn unfinished() -> StoreError {
    StoreError::Failed("a read, or its transaction, did not finish".into())
}

/// Runs `work` in one of the store's transactions and returns its value once committed.
pub async fn execute<R, E>(
    store: &dyn Store,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
) -> Result<R, E>
where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    submit(store, work).await.map_err(|_| stopped())?
}

/// Like [`execute`], blocking the calling thread (for code outside the async runtime).
pub fn transact<R, E>(
    store: &dyn Store,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
) -> Result<R, E>
where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    submit(store, work).blocking_recv().map_err(|_| stopped())?
}

/// Keeps the store's writer busy until the returned sender is sent to or dropped, so that
/// the jobs queued meanwhile wait, and then share one transaction: for tests that need to
/// see what happens while a commit is pending.
#[cfg(any(test, feature = "test-util"))]
pub fn hold_writer(store: &dyn Store) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    enqueue(
        store,
        move |_| {
            let _ = held.recv();
            Ok::<_, StoreError>(())
        },
        drop,
    );
    release
}

/// A closure as a [`ReadJob`], delivering its output through `reply`.
struct PendingRead<F, R, E> {
    work: F,
    reply: Box<dyn FnOnce(Result<R, E>) + Send>,
}

impl<F, R, E> ReadJob for PendingRead<F, R, E>
where
    F: FnOnce(&mut dyn Repo) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(self: Box<Self>, snapshot: StoreResult<&mut dyn Repo>) {
        let output = match snapshot {
            Ok(repo) => (self.work)(repo),
            Err(e) => Err(e.into()),
        };
        (self.reply)(output);
    }
}

/// Queues read-only `work` for a snapshot; `done` hears its value.
fn enqueue_read<R, E>(
    store: &dyn Store,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
    done: impl FnOnce(Result<R, E>) + Send + 'static,
) where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    store.submit_read(Box::new(PendingRead {
        work,
        reply: Box::new(done),
    }));
}

/// Runs read-only `work` on a snapshot of committed data, beside the writer.
pub async fn read<R, E>(
    store: &Arc<dyn Store>,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
) -> Result<R, E>
where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    enqueue_read(store.as_ref(), work, move |result| {
        let _ = sender.send(result);
    });
    receiver.await.map_err(|_| unfinished())?
}

/// Runs read-only `look` on a snapshot of committed data, then `then` with its value in
/// one of the store's transactions, and returns that value once committed. The reader that
/// ran `look` queues `then` for the writer itself, so the value does not travel back
/// through the async runtime in between. If `look` fails, `then` does not run. Once `look`
/// has run, `then` runs and commits even if the returned future is dropped. `then` sees
/// what committed after `look`'s snapshot: a caller that relies on what `look` saw checks
/// it again there.
pub async fn read_then_execute<S, R, E>(
    store: &Arc<dyn Store>,
    look: impl FnOnce(&mut dyn Repo) -> Result<S, E> + Send + 'static,
    then: impl FnOnce(&mut dyn Repo, S) -> Result<R, E> + Send + 'static,
) -> Result<R, E>
where
    S: Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let writer = Arc::clone(store);
    enqueue_read(store.as_ref(), look, move |looked| match looked {
        Ok(value) => enqueue(
            writer.as_ref(),
            move |repo| then(repo, value),
            move |result| {
                let _ = sender.send(result);
            },
        ),
        Err(e) => {
            let _ = sender.send(Err(e));
        }
    });
    receiver.await.map_err(|_| unfinished())?
}

/// Like [`read`], blocking the calling thread until the value is there.
pub fn read_blocking<R, E>(
    store: &dyn Store,
    work: impl FnOnce(&mut dyn Repo) -> Result<R, E> + Send + 'static,
) -> Result<R, E>
where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    enqueue_read(store, work, move |result| {
        let _ = sender.send(result);
    });
    receiver.recv().map_err(|_| unfinished())?
}

/// The operations available inside a transaction.
pub trait Repo {
    // Users, sessions and friends.
    /// Adds a user; `AlreadyExists` if the name is taken.
    fn insert_user(&mut self, user: &User, now_ms: i64) -> StoreResult<()>;
    /// A user by account name.
    fn user_by_name(&mut self, name: &str) -> StoreResult<Option<User>>;
    /// A user by id.
    fn user_by_id(&mut self, id: &str) -> StoreResult<Option<User>>;
    /// Changes the privacy settings that `change` names.
    fn set_privacy(&mut self, user_id: &str, change: PrivacyChange) -> StoreResult<()>;
    /// Records a session by its token hash.
    fn insert_session(
        &mut self,
        token_hash: &str,
        user_id: &str,
        expires_ms: i64,
    ) -> StoreResult<()>;
    /// Ends a session.
    fn delete_session(&mut self, token_hash: &str) -> StoreResult<()>;
    /// Forgets the sessions that expired before `before_ms`; returns how many.
    fn forget_sessions(&mut self, before_ms: i64) -> StoreResult<usize>;
    /// The session whose token hashes to `token_hash`, ended or not (`session::user_of`
    /// decides whether it still works).
    fn session(&mut self, token_hash: &str) -> StoreResult<Option<Session>>;
    /// Makes two users friends (both ways) and drops their requests to each other.
    fn add_friendship(&mut self, a: &str, b: &str) -> StoreResult<()>;
    /// Records `from`'s request to befriend `to` (kept once).
    fn add_friend_request(&mut self, from: &str, to: &str, now_ms: i64) -> StoreResult<()>;
    /// Whether `from` asked to befriend `to`.
    fn friend_request_exists(&mut self, from: &str, to: &str) -> StoreResult<bool>;
    /// How many friend requests `user_id` has sent since `since_ms`.
    fn friend_requests_from(&mut self, user_id: &str, since_ms: i64) -> StoreResult<usize>;
    /// A page of who asked to befriend `user_id` and is waiting for an answer, oldest first.
    fn friend_requests_to(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<User>>;
    /// The ids of all of a user's friends.
    fn friend_ids(&mut self, user_id: &str) -> StoreResult<Vec<String>>;
    /// Whether two users are friends.
    fn are_friends(&mut self, a: &str, b: &str) -> StoreResult<bool>;
    /// A page of a user's friends.
    fn friends(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<User>>;

    // Threads and messages.
    /// Adds a thread with its participants.
    fn insert_thread(&mut self, thread: &Thread) -> StoreResult<()>;
    /// A thread with its participants.
    fn thread(&mut self, id: &str) -> StoreResult<Option<Thread>>;
    /// A page of the threads `user_id` is in, narrowed by `filter`.
    fn threads_of(
        &mut self,
        user_id: &str,
        filter: &ThreadFilter,
        page: Page,
    ) -> StoreResult<Paged<Thread>>;
    /// Adds a message.
    fn insert_message(&mut self, message: &Message) -> StoreResult<()>;
    /// A message with its author's opt-out.
    fn message(&mut self, id: &str) -> StoreResult<Option<MessageRow>>;
    /// A page of a thread's messages created at or after `since_ms`, oldest first.
    fn messages(
        &mut self,
        thread_id: &str,
        since_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<MessageRow>>;
    /// Deletes a message.
    fn delete_message(&mut self, id: &str) -> StoreResult<()>;

    // Partners and features.
    /// Adds a partner; `AlreadyExists` if the id is taken.
    fn insert_partner(&mut self, partner: &Partner, now_ms: i64) -> StoreResult<()>;
    /// A partner.
    fn partner(&mut self, id: &str) -> StoreResult<Option<Partner>>;
    /// Marks a partner suspended.
    fn suspend_partner(&mut self, id: &str) -> StoreResult<()>;
    /// Blocks or unblocks a partner.
    fn set_partner_blocked(&mut self, id: &str, blocked: bool) -> StoreResult<()>;
    /// Adds a feature; `AlreadyExists` if the name is taken for the partner.
    fn insert_feature(&mut self, feature: &Feature) -> StoreResult<()>;
    /// A feature.
    fn feature(&mut self, partner_id: &str, name: &str) -> StoreResult<Option<Feature>>;
    /// A partner's features.
    fn features_of(&mut self, partner_id: &str) -> StoreResult<Vec<Feature>>;
    /// Marks a feature retired.
    fn retire_feature(&mut self, partner_id: &str, name: &str) -> StoreResult<()>;

    // Access requests.
    /// Adds a request.
    fn insert_request(&mut self, request: &AccessRequest) -> StoreResult<()>;
    /// A request.
    fn request(&mut self, id: &str) -> StoreResult<Option<AccessRequest>>;
    /// A page of a user's pending requests made at or after `created_after_ms`, oldest
    /// first.
    fn pending_requests(
        &mut self,
        user_id: &str,
        created_after_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<AccessRequest>>;
    /// One partner's pending requests for one account name, whether or not a user has it,
    /// made at or after `created_after_ms`.
    fn pending_requests_from(
        &mut self,
        partner_id: &str,
        user_name: &str,
        created_after_ms: i64,
    ) -> StoreResult<Vec<AccessRequest>>;
    /// Marks pending requests made before `created_before_ms` expired; how many.
    fn expire_requests(&mut self, created_before_ms: i64) -> StoreResult<usize>;
    /// Moves a request on, linking its grant if approved.
    fn set_request_status(
        &mut self,
        id: &str,
        status: RequestStatus,
        grant_id: Option<&str>,
    ) -> StoreResult<()>;

    // Grants.
    /// Adds a grant (without a token).
    fn insert_grant(&mut self, grant: &Grant) -> StoreResult<()>;
    /// Binds a token hash to a grant.
    fn set_grant_token(&mut self, grant_id: &str, token_hash: &str) -> StoreResult<()>;
    /// A grant.
    fn grant(&mut self, id: &str) -> StoreResult<Option<Grant>>;
    /// The grant a token hash belongs to, active or ended.
    fn grant_by_token(&mut self, token_hash: &str) -> StoreResult<Option<Grant>>;
    /// A page of a partner's grants, newest first.
    fn grants_of_partner(
        &mut self,
        partner_id: &str,
        active_only: bool,
        page: Page,
    ) -> StoreResult<Paged<Grant>>;
    /// A page of a user's grants, newest first.
    fn grants_of_user(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<Grant>>;
    /// A page of the active grants of the participants of a thread, newest first.
    fn active_grants_on_thread(&mut self, thread_id: &str, page: Page)
    -> StoreResult<Paged<Grant>>;
    /// Active grants of a feature, or of every feature of the partner when `feature` is None.
    fn active_grants_of(
        &mut self,
        partner_id: &str,
        feature: Option<&str>,
    ) -> StoreResult<Vec<Grant>>;
    /// Active grants past `not_after` or unused since `idle_before_ms`.
    fn grants_due_to_end(&mut self, now_ms: i64, idle_before_ms: i64) -> StoreResult<Vec<Grant>>;
    /// A page of all grants, newest first (for the access review).
    fn all_grants(&mut self, page: Page) -> StoreResult<Paged<Grant>>;
    /// Ends a grant: new state and end time (the token hash stays, so that later use is
    /// refused with the reason).
    fn end_grant(&mut self, id: &str, state: GrantState, now_ms: i64) -> StoreResult<()>;
    /// Records a use of the grant for `scope` at `now_ms`; a last use never moves back.
    fn touch_grant(&mut self, id: &str, scope: Scope, now_ms: i64) -> StoreResult<()>;
    /// Scopes of the grant used at least once.
    fn used_scopes(&mut self, id: &str) -> StoreResult<ScopeSet>;
    /// Records the partner's deletion attestation.
    fn attest_deletion(&mut self, id: &str, now_ms: i64) -> StoreResult<()>;
    /// How many grants are in each state (a state no grant is in is left out).
    fn grants_by_state(&mut self) -> StoreResult<Vec<(GrantState, usize)>>;
    /// How many ended grants have no deletion attestation and ended at or before
    /// `ended_by_ms`.
    fn unattested_grants_ended_by(&mut self, ended_by_ms: i64) -> StoreResult<usize>;

    // Grant events.
    /// Appends an event for the grant's partner.
    fn push_event(&mut self, grant: &Grant, kind: GrantEventKind, now_ms: i64) -> StoreResult<i64>;
    /// A partner's events after `after_seq`, oldest first.
    fn events_after(
        &mut self,
        partner_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<GrantEvent>>;
    /// Every partner's events after `after_seq`, oldest first, at most `limit`.
    fn events_since(&mut self, after_seq: i64, limit: usize) -> StoreResult<Vec<GrantEvent>>;

    // Audit.
    /// Appends a record to the chain, after the current head.
    fn append_audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()>;
    /// Records after `after_seq`, in order.
    fn audit_records(&mut self, after_seq: i64, limit: usize) -> StoreResult<Vec<AuditRecord>>;
    /// Records about one user's data after `after_seq`.
    fn audit_records_of_user(
        &mut self,
        user_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>>;
    /// One record.
    fn audit_record(&mut self, seq: i64) -> StoreResult<Option<AuditRecord>>;
    /// Notes that an app read someone's messages through another person's grant.
    fn record_read_by_others_app(&mut self, read: &ReadByOthersApp) -> StoreResult<()>;
    /// A page of the reads of one person's messages by apps through others' grants.
    fn reads_by_others_apps(
        &mut self,
        user_id: &str,
        page: Page,
    ) -> StoreResult<Paged<ReadByOthersApp>>;
    /// The last record.
    fn audit_head(&mut self) -> StoreResult<Option<AuditRecord>>;

    // Idempotency.
    /// The response stored under a grant's key since `since_ms`.
    fn idempotent_response(
        &mut self,
        grant_id: &str,
        key: &str,
        since_ms: i64,
    ) -> StoreResult<Option<IdempotentResponse>>;
    /// Stores a response under a grant's key, in place of any older one.
    fn save_idempotent_response(
        &mut self,
        grant_id: &str,
        key: &str,
        response: &IdempotentResponse,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Forgets the responses stored before `before_ms`; returns how many.
    fn forget_idempotent_responses(&mut self, before_ms: i64) -> StoreResult<usize>;

    // The authorization code flow.
    /// Adds a pushed request under the hash of its `request_uri`.
    fn insert_pushed_request(&mut self, uri_hash: &str, pushed: &PushedRequest) -> StoreResult<()>;
    /// A pushed request by the hash of its `request_uri`.
    fn pushed_request(&mut self, uri_hash: &str) -> StoreResult<Option<PushedRequest>>;
    /// The pushed request a signed-in user's browser turned into `access_request_id`.
    fn pushed_request_of(&mut self, access_request_id: &str) -> StoreResult<Option<PushedRequest>>;
    /// Links a pushed request to the access request it became; it cannot be opened again.
    fn open_pushed_request(&mut self, uri_hash: &str, access_request_id: &str) -> StoreResult<()>;
    /// Adds a code under its hash.
    fn insert_code(&mut self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()>;
    /// A code by its hash.
    fn code(&mut self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>>;
    /// The code issued for `grant_id` (the consent page issues one with each grant it
    /// makes, and the schema holds at most one per grant).
    fn code_of_grant(&mut self, grant_id: &str) -> StoreResult<Option<AuthorizationCode>>;
    /// Files the code issued for `grant_id` under `new_hash`: the code it was issued as is
    /// no longer known.
    fn rehash_code_of_grant(&mut self, grant_id: &str, new_hash: &str) -> StoreResult<()>;
    /// Marks a code exchanged.
    fn redeem_code(&mut self, code_hash: &str, now_ms: i64) -> StoreResult<()>;
    /// Forgets pushed requests and codes that expired before `before_ms`; returns how many.
    fn forget_authorization_flows(&mut self, before_ms: i64) -> StoreResult<usize>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_value_is_a_postgres_url_or_a_sqlite_path_and_nothing_else() {
        let key = || AuditKey::from_hex(&"ab".repeat(32)).unwrap();
        let refusal = |database: &str| match open(database, key()) {
            Err(StoreError::Failed(message)) => message,
            Err(other) => panic!("{database}: {other}"),
            Ok(_) => panic!("{database} was opened"),
        };
        assert!(refusal("mysql://db/consent").contains("mysql:// is not a store"));
        assert!(refusal("host=db dbname=consent").contains("postgres:// URL"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        assert!(open(path.to_str().unwrap(), key()).is_ok());
    }
}
