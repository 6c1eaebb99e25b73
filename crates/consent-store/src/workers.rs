//! A backend's threads: one writer and its readers, each fed by a queue, and how they
//! stop. Dropping the store lets them finish their queues on their own; [`Workers::close`]
//! also waits for them, up to a deadline: the readers first, since a read may queue a
//! transaction for the writer, then the writer. So once it returns `true`, everything
//! queued before it has run, and every transaction among it has committed or failed.

use crate::{Job, ReadJob, StoreError, StoreResult};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The writer's queue.
pub(crate) type WriteQueue = Receiver<Box<dyn Job>>;
/// The queue the readers share: each takes the next job under the lock.
pub(crate) type ReadQueue = Mutex<Receiver<Box<dyn ReadJob>>>;

/// A backend's writer and readers, with the queues that feed them.
pub(crate) struct Workers {
    jobs: RwLock<Option<Sender<Box<dyn Job>>>>,
    reads: RwLock<Option<Sender<Box<dyn ReadJob>>>>,
    threads: Mutex<Threads>,
}

/// The threads not yet known to have ended; a list for the writer's one too, so that
/// [`wait_for`] serves both.
struct Threads {
    writer: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `write` on the thread `{backend}-writer` and each of `readers` on a thread
    /// `{backend}-reader-{n}`, each serving its queue until that queue closes.
    pub(crate) fn start<W, R>(backend: &str, write: W, readers: Vec<R>) -> StoreResult<Self>
    where
        W: FnOnce(WriteQueue) + Send + 'static,
        R: FnOnce(&ReadQueue) + Send + 'static,
    {
        let (jobs, write_queue) = channel();
        let writer = spawn(&format!("{backend}-writer"), move || write(write_queue))?;
        let (reads, read_queue) = channel();
        let read_queue = Arc::new(Mutex::new(read_queue));
        let readers = readers
            .into_iter()
            .enumerate()
            .map(|(n, read)| {
                let queue = Arc::clone(&read_queue);
                spawn(&format!("{backend}-reader-{n}"), move || read(&queue))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Workers {
            jobs: RwLock::new(Some(jobs)),
            reads: RwLock::new(Some(reads)),
            threads: Mutex::new(Threads {
                writer: vec![writer],
                readers,
            }),
        })
    }

    /// Queues `job` for the writer; once the store is closed, the job hears so.
    pub(crate) fn submit(&self, job: Box<dyn Job>) {
        if let Err(job) = send(&self.jobs, job) {
            job.finish(Err(crate::stopped()));
        }
    }

    /// Queues `job` for the readers; once the store is closed, the job hears so.
    pub(crate) fn submit_read(&self, job: Box<dyn ReadJob>) {
        if let Err(job) = send(&self.reads, job) {
            job.run(Err(crate::stopped()));
        }
    }

    /// Closes the readers' queue and waits for them to finish it, then does the same for
    /// the writer, all within `within`; whether every thread ended in time, and without a
    /// panic. Work queued afterwards hears that the store stopped. A call made while
    /// another runs waits for that one, then for what it left. Must not be called from the
    /// store's own threads (a job, its `finish`, a read's reply): the thread would wait for
    /// itself.
    pub(crate) fn close(&self, within: Duration) -> bool {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now().checked_add(within);
        close_queue(&self.reads);
        let readers_ended = wait_for(&mut threads.readers, deadline);
        close_queue(&self.jobs);
        let writer_ended = wait_for(&mut threads.writer, deadline);
        readers_ended && writer_ended
    }
}

/// Puts `item` on `queue`, or gives it back if the queue is closed.
fn send<T>(queue: &RwLock<Option<Sender<T>>>, item: T) -> Result<(), T> {
    match queue
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        Some(sender) => sender.send(item).map_err(|unsent| unsent.0),
        None => Err(item),
    }
}

/// Closes `queue`: the thread taking from it ends once it is empty.
fn close_queue<T>(queue: &RwLock<Option<Sender<T>>>) {
    queue.write().unwrap_or_else(PoisonError::into_inner).take();
}

/// Starts a backend's thread `name`.
pub(crate) fn spawn(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> StoreResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|e| StoreError::Failed(format!("starting {name}: {e}")))
}

/// How often [`wait_for`] looks whether the threads have ended.
const POLL: Duration = Duration::from_millis(10);

/// Waits until every thread of `threads` has ended, then joins them; or, once `deadline`
/// has passed (`None`: never), leaves them be. Whether they all ended without a panic.
fn wait_for(threads: &mut Vec<JoinHandle<()>>, deadline: Option<Instant>) -> bool {
    while !threads.iter().all(JoinHandle::is_finished) {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return false;
        }
        std::thread::sleep(POLL);
    }
    // Every thread is joined: `all` would stop at the first that panicked.
    let panicked = threads.drain(..).map(join).filter(|ended| !ended).count();
    panicked == 0
}

/// Joins a backend's thread that has ended; whether it ended without a panic.
fn join(thread: JoinHandle<()>) -> bool {
    let name = thread
        .thread()
        .name()
        .unwrap_or("a store thread")
        .to_string();
    let ended = thread.join().is_ok();
    if !ended {
        tracing::error!(thread = name, "a store thread panicked");
    }
    ended
}
