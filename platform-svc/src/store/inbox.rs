//! The writer's inbox: the queue of jobs between the calls that submit them and the one
//! thread that writes.
//!
//! Waking a sleeping thread costs a system call on the caller's side and a context switch
//! on the writer's, several microseconds of a core each time. So the inbox wakes the writer
//! only when it has to act: when it is idle and a job arrives, or when it holds a
//! transaction open for jobs nobody waits for and a job someone waits for arrives (or a
//! full batch has gathered). Jobs nobody waits for join such a transaction without waking
//! anyone; the writer takes them when its deadline comes. A flood of refusals' audit
//! records then costs one wake-up per deferred commit rather than one per record.

use super::Job;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Jobs waiting for the writer.
#[derive(Default)]
pub(super) struct Inbox {
    state: Mutex<State>,
    woken: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Box<dyn Job>>,
    /// How many of `jobs` someone waits for.
    awaited: usize,
    /// What the writer sleeps until, if it sleeps.
    sleeping: Option<Until>,
    /// No more jobs are taken; the writer empties the queue and ends.
    closed: bool,
}

/// What a sleeping writer must be woken for.
#[derive(Clone, Copy)]
enum Until {
    /// Any job.
    AnyJob,
    /// A job someone waits for, or `full` jobs.
    AwaitedJob { full: usize },
}

/// How [`Inbox::wait`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Woken {
    /// Jobs are waiting to be taken.
    Jobs,
    /// The deadline passed.
    Deadline,
    /// The inbox is closed and empty.
    Closed,
}

impl State {
    /// Whether a writer sleeping until `until` must act now.
    fn ready(&self, until: Until) -> bool {
        match until {
            Until::AnyJob => !self.jobs.is_empty(),
            Until::AwaitedJob { full } => self.awaited > 0 || self.jobs.len() >= full,
        }
    }
}

impl Inbox {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, waking the writer if it must act on it; hands the job back once the
    /// inbox is closed.
    pub(super) fn push(&self, job: Box<dyn Job>) -> Result<(), Box<dyn Job>> {
        let mut state = self.state();
        if state.closed {
            return Err(job);
        }
        state.awaited += usize::from(job.awaited());
        state.jobs.push_back(job);
        if state.sleeping.is_some_and(|until| state.ready(until)) {
            // Woken once: later jobs need not wake it again.
            state.sleeping = None;
            drop(state);
            self.woken.notify_one();
        }
        Ok(())
    }

    /// Closes the inbox: later pushes fail, and the writer, woken, takes what is left.
    pub(super) fn close(&self) {
        self.state().closed = true;
        self.woken.notify_one();
    }

    /// Sleeps until a job is queued or, with `deferring` (a deadline and how many jobs
    /// make a full batch), until a job someone waits for is queued, a full batch has
    /// gathered or the deadline passes.
    pub(super) fn wait(&self, deferring: Option<(Instant, usize)>) -> Woken {
        let until = deferring.map_or(Until::AnyJob, |(_, full)| Until::AwaitedJob { full });
        let mut state = self.state();
        loop {
            if state.ready(until) {
                return Woken::Jobs;
            }
            if state.closed {
                return if state.jobs.is_empty() {
                    Woken::Closed
                } else {
                    Woken::Jobs
                };
            }
            let left = match deferring {
                None => None,
                Some((deadline, _)) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) => Some(left),
                    None => return Woken::Deadline,
                },
            };
            state.sleeping = Some(until);
            state = match left {
                None => self
                    .woken
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    self.woken
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.sleeping = None;
        }
    }

    /// Moves queued jobs into `batch`, oldest first, until it holds `max`.
    pub(super) fn take(&self, batch: &mut Vec<Box<dyn Job>>, max: usize) {
        let mut state = self.state();
        while batch.len() < max {
            let Some(job) = state.jobs.pop_front() else {
                break;
            };
            state.awaited -= usize::from(job.awaited());
            batch.push(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Repo;
    use std::sync::Arc;
    use std::time::Duration;

    /// A job that only says whether someone waits for it.
    struct Marker {
        awaited: bool,
    }

    impl Job for Marker {
        fn run(&mut self, _: &mut dyn Repo) -> bool {
            true
        }
        fn finish(self: Box<Self>, _: Result<(), String>) {}
        fn awaited(&self) -> bool {
            self.awaited
        }
    }

    fn job(awaited: bool) -> Box<dyn Job> {
        Box::new(Marker { awaited })
    }

    /// Pushes `job` from another thread once the caller has had time to fall asleep.
    fn push_later(inbox: &Arc<Inbox>, job: Box<dyn Job>) -> std::thread::JoinHandle<()> {
        let inbox = Arc::clone(inbox);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            assert!(inbox.push(job).is_ok());
        })
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn an_idle_writer_wakes_for_any_job() {
        let inbox = Arc::new(Inbox::default());
        let pusher = push_later(&inbox, job(false));

        assert_eq!(inbox.wait(None), Woken::Jobs);
        pusher.join().unwrap();
        let mut batch = Vec::new();
        inbox.take(&mut batch, 8);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_deferring_writer_sleeps_through_jobs_nobody_waits_for_until_its_deadline() {
        let inbox = Arc::new(Inbox::default());
        let begun = Instant::now();
        let deadline = begun + Duration::from_millis(300);
        let pusher = push_later(&inbox, job(false));

        assert_eq!(inbox.wait(Some((deadline, 8))), Woken::Deadline);
        assert!(Instant::now() >= deadline);
        pusher.join().unwrap();
        let mut batch = Vec::new();
        inbox.take(&mut batch, 8);
        assert_eq!(batch.len(), 1, "the job waits in the inbox for the writer");
    }

    /// With a job nobody waits for queued, `next` wakes a writer deferring with room for
    /// `full` jobs long before its deadline.
    fn a_deferring_writer_wakes_for(next: Box<dyn Job>, full: usize) {
        let inbox = Arc::new(Inbox::default());
        assert!(inbox.push(job(false)).is_ok());
        let begun = Instant::now();
        let pusher = push_later(&inbox, next);

        assert_eq!(inbox.wait(Some((begun + LONG, full))), Woken::Jobs);
        assert!(begun.elapsed() < LONG);
        pusher.join().unwrap();
    }

    #[test]
    fn a_deferring_writer_wakes_for_a_job_someone_waits_for() {
        a_deferring_writer_wakes_for(job(true), 8);
    }

    #[test]
    fn a_deferring_writer_wakes_for_a_full_batch() {
        a_deferring_writer_wakes_for(job(false), 2);
    }

    #[test]
    fn a_closed_inbox_refuses_jobs_and_hands_over_those_it_holds() {
        let inbox = Inbox::default();
        assert!(inbox.push(job(false)).is_ok());
        inbox.close();

        assert!(inbox.push(job(true)).is_err());
        assert_eq!(inbox.wait(Some((Instant::now() + LONG, 8))), Woken::Jobs);
        let mut batch = Vec::new();
        inbox.take(&mut batch, 8);
        assert_eq!(batch.len(), 1);
        assert_eq!(inbox.wait(None), Woken::Closed);
    }

    #[test]
    fn take_keeps_count_of_the_jobs_someone_waits_for() {
        let inbox = Inbox::default();
        for awaited in [true, false, false] {
            assert!(inbox.push(job(awaited)).is_ok());
        }
        let mut batch = Vec::new();
        inbox.take(&mut batch, 1);

        assert_eq!(
            inbox.wait(Some((Instant::now() + Duration::from_millis(20), 8))),
            Woken::Deadline,
            "only jobs nobody waits for are left"
        );
    }
}
