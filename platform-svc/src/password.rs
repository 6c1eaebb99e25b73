//! Password hashing (Argon2id, default parameters: 19 MiB, 2 passes) on one dedicated
//! thread that owns one 19 MiB working buffer. Hashes are deliberately expensive: running
//! them one at a time keeps a flood of sign-ins from occupying the runtime's threads. The
//! buffer is reused from one hash to the next (allocating it per hash on the runtime's
//! threads left the allocator holding several copies, about 60 MiB), and freed after a
//! second with no work, so that a platform nobody is signing in to does not hold it.
//!
//! Work waits in two bounded queues, and the thread takes sign-ins (verifications) before
//! sign-ups (new hashes), so a flood of sign-ups cannot keep people from signing in. A full
//! queue refuses at once with `RESOURCE_EXHAUSTED` instead of queueing, and work whose
//! caller has gone (a cancelled RPC) is dropped unstarted. A sign-in for an unknown user
//! name is verified against a dummy hash with the same parameters, so it costs the same
//! work as a known name and its answer takes as long.

use crate::error::{ApiError, ApiResult};
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use consent_core::denial::Reason;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// What unknown user names are verified against: a hash of nothing anyone knows, with the
/// default parameters (a unit test checks they are the ones new hashes use).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm90IGEgcmVhbCBzYWx0$Tf2hIgRMt7qDL9OdH2ZJ8E5mzwvMIqCY8HgyZWxUVPg";

/// How long the hashing thread keeps its working buffer with no work: sign-ins a second
/// or less apart reuse it, and each after a longer pause pays for touching 19 MiB of new
/// memory again (a sign-in alone took 19–20 ms in the benchmark with the buffer freed at
/// once, 16–17 ms with it kept for a second). The benchmark waits longer than this after
/// its sign-ups before it counts peak RSS (`tests/bench/main.rs`).
const KEEP_BUFFER_IDLE: Duration = Duration::from_secs(1);

/// How many requests may wait for the hashing thread, of each kind.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Sign-ins waiting to be verified.
    pub sign_ins: usize,
    /// Sign-ups waiting to be hashed.
    pub sign_ups: usize,
}

struct Verify {
    password: String,
    stored: Option<String>,
    reply: oneshot::Sender<bool>,
}

struct Hash {
    password: String,
    reply: oneshot::Sender<ApiResult<String>>,
}

#[derive(Default)]
struct Queues {
    sign_ins: VecDeque<Verify>,
    sign_ups: VecDeque<Hash>,
    closed: bool,
}

impl Queues {
    fn is_idle(&self) -> bool {
        self.sign_ins.is_empty() && self.sign_ups.is_empty()
    }
}

struct Shared {
    limits: QueueLimits,
    queues: Mutex<Queues>,
    ready: Condvar,
    computed: AtomicU64,
    /// How long the thread keeps its working buffer with no work ([`KEEP_BUFFER_IDLE`]).
    keep_buffer_idle: Duration,
}

impl Shared {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the queues when the last [`PasswordHasher`] is dropped, which ends the thread.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.queues().closed = true;
        self.0.ready.notify_all();
    }
}

/// The hashing thread's handle.
#[derive(Clone)]
pub struct PasswordHasher {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHasher")
    }
}

fn busy() -> ApiError {
    ApiError::ResourceExhausted(
        Reason::PasswordQueueFull,
        "too many sign-ins or sign-ups are waiting: try again shortly".into(),
    )
}

fn stopped() -> ApiError {
    ApiError::Storage("password hasher stopped".into())
}

impl PasswordHasher {
    /// Starts the hashing thread; it ends when the last handle is dropped.
    pub fn start(limits: QueueLimits) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            limits,
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            computed: AtomicU64::new(0),
            keep_buffer_idle: KEEP_BUFFER_IDLE,
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("password-hasher".into())
            .spawn(move || work(&worker))?;
        Ok(PasswordHasher {
            owner: Arc::new(Owner(shared)),
        })
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// An Argon2id PHC string for `password`; refused at once when the sign-up queue is full.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        let (reply, answer) = oneshot::channel();
        {
            let shared = self.shared();
            let mut queues = shared.queues();
            if queues.sign_ups.len() >= shared.limits.sign_ups {
                return Err(busy());
            }
            queues.sign_ups.push_back(Hash { password, reply });
        }
        self.shared().ready.notify_one();
        answer.await.map_err(|_| stopped())?
    }

    /// Whether `password` matches the stored PHC string; with no stored string (an unknown
    /// user name), the same work is done against a dummy hash and the answer is false.
    /// Refused at once when the sign-in queue is full.
    pub async fn verify(&self, password: String, stored: Option<String>) -> ApiResult<bool> {
        let (reply, answer) = oneshot::channel();
        {
            let shared = self.shared();
            let mut queues = shared.queues();
            if queues.sign_ins.len() >= shared.limits.sign_ins {
                return Err(busy());
            }
            queues.sign_ins.push_back(Verify {
                password,
                stored,
                reply,
            });
        }
        self.shared().ready.notify_one();
        answer.await.map_err(|_| stopped())
    }
}

/// The next piece of work, sign-ins first; `None` once the queues are closed. Frees the
/// engine's buffer once no work has come for the shared keep time.
fn next(shared: &Shared, engine: &mut Engine) -> Option<Result<Verify, Hash>> {
    let mut queues = shared.queues();
    loop {
        if let Some(verify) = queues.sign_ins.pop_front() {
            return Some(Ok(verify));
        }
        if let Some(hash) = queues.sign_ups.pop_front() {
            return Some(Err(hash));
        }
        if queues.closed {
            return None;
        }
        queues = if engine.blocks.is_empty() {
            shared
                .ready
                .wait(queues)
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            let (queues, waited) = shared
                .ready
                .wait_timeout(queues, shared.keep_buffer_idle)
                .unwrap_or_else(PoisonError::into_inner);
            if waited.timed_out() && queues.is_idle() {
                // Freed outside the lock, so that callers queueing work do not wait on it.
                drop(queues);
                engine.blocks = Vec::new();
                shared.queues()
            } else {
                queues
            }
        };
    }
}

/// The hashing thread: takes work until the queues close, skipping work nobody awaits.
fn work(shared: &Shared) {
    let mut engine = Engine { blocks: Vec::new() };
    while let Some(item) = next(shared, &mut engine) {
        match item {
            Ok(Verify {
                password,
                stored,
                reply,
            }) => {
                if reply.is_closed() {
                    continue;
                }
                let against = stored.as_deref().unwrap_or(DUMMY_HASH);
                let matches = engine.matches(&password, against) && stored.is_some();
                shared.computed.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(matches);
            }
            Err(Hash { password, reply }) => {
                if reply.is_closed() {
                    continue;
                }
                let hashed = engine.hash(&password);
                shared.computed.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(hashed);
            }
        }
    }
}

/// Argon2 with a working buffer kept between calls (empty until the first, and once freed).
struct Engine {
    blocks: Vec<Block>,
}

impl Engine {
    /// The raw Argon2 output of `len` bytes, computed in the kept buffer.
    fn compute(
        &mut self,
        argon: &Argon2<'_>,
        params: &Params,
        password: &[u8],
        salt: &Salt<'_>,
        len: usize,
    ) -> argon2::password_hash::Result<Output> {
        if self.blocks.len() != params.block_count() {
            self.blocks = vec![Block::default(); params.block_count()];
        }
        let mut salt_buffer = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_buffer)?;
        Output::init_with(len, |out| {
            Ok(argon.hash_password_into_with_memory(password, salt, out, &mut self.blocks)?)
        })
    }

    /// A PHC string of `password` under a new random salt.
    fn hash(&mut self, password: &str) -> Result<String, ApiError> {
        let failed =
            |e: argon2::password_hash::Error| ApiError::Storage(format!("password hashing: {e}"));
        let params = Params::DEFAULT;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let salt =
            SaltString::encode_b64(&consent_core::secret::random_bytes::<16>()).map_err(failed)?;
        let output = self
            .compute(
                &argon,
                &params,
                password.as_bytes(),
                &salt.as_salt(),
                Params::DEFAULT_OUTPUT_LEN,
            )
            .map_err(failed)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(failed)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `stored` (compared in constant time).
    fn matches(&mut self, password: &str, stored: &str) -> bool {
        let Ok(phc) = PasswordHash::new(stored) else {
            return false;
        };
        let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
            Algorithm::try_from(phc.algorithm),
            Params::try_from(&phc),
            phc.salt,
            phc.hash,
        ) else {
            return false;
        };
        let version = phc.version.map_or(Ok(Version::V0x13), Version::try_from);
        let Ok(version) = version else { return false };
        let argon = Argon2::new(algorithm, version, params.clone());
        self.compute(&argon, &params, password.as_bytes(), &salt, expected.len())
            .is_ok_and(|output| output == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password_and_reads_as_standard_argon2id() {
        let mut engine = Engine { blocks: Vec::new() };
        let stored = engine.hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(engine.matches("correct horse", &stored));
        assert!(!engine.matches("wrong horse", &stored));
        assert!(!engine.matches("correct horse", "not a hash"));
        // The standard verifier agrees, so stored hashes stay portable.
        use argon2::password_hash::PasswordVerifier;
        let phc = PasswordHash::new(&stored).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &phc)
                .is_ok()
        );
    }

    #[test]
    fn unknown_names_are_verified_against_a_hash_with_the_default_parameters() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let (params, default) = (Params::try_from(&dummy).unwrap(), Params::DEFAULT);
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        assert_eq!(dummy.hash.unwrap().len(), Params::DEFAULT_OUTPUT_LEN);
    }

    fn shared(queues: Queues) -> Shared {
        shared_keeping(queues, KEEP_BUFFER_IDLE)
    }

    fn shared_keeping(queues: Queues, keep_buffer_idle: Duration) -> Shared {
        Shared {
            limits: QueueLimits {
                sign_ins: 4,
                sign_ups: 4,
            },
            queues: Mutex::new(queues),
            ready: Condvar::new(),
            computed: AtomicU64::new(0),
            keep_buffer_idle,
        }
    }

    #[test]
    fn sign_ins_go_before_sign_ups() {
        let mut queues = Queues::default();
        queues.sign_ups.push_back(Hash {
            password: "a new password".into(),
            reply: oneshot::channel().0,
        });
        queues.sign_ins.push_back(Verify {
            password: "a password".into(),
            stored: None,
            reply: oneshot::channel().0,
        });
        let shared = shared(queues);
        let mut engine = Engine { blocks: Vec::new() };
        assert!(matches!(next(&shared, &mut engine), Some(Ok(_))));
        assert!(matches!(next(&shared, &mut engine), Some(Err(_))));
    }

    #[test]
    fn an_unknown_name_costs_one_computation_and_work_nobody_awaits_costs_none() {
        let (verified, mut verify_answer) = oneshot::channel();
        let (hashed, mut hash_answer) = oneshot::channel();
        let mut queues = Queues::default();
        queues.sign_ins.push_back(Verify {
            password: "anything".into(),
            stored: None,
            reply: verified,
        });
        queues.sign_ins.push_back(Verify {
            password: "cancelled".into(),
            stored: None,
            reply: oneshot::channel().0,
        });
        queues.sign_ups.push_back(Hash {
            password: "a new password".into(),
            reply: hashed,
        });
        queues.closed = true;
        let shared = shared(queues);
        work(&shared);
        assert_eq!(shared.computed.load(Ordering::Relaxed), 2);
        assert_eq!(verify_answer.try_recv(), Ok(false));
        assert!(hash_answer.try_recv().unwrap().is_ok());
    }

    /// Whether the hashing thread, holding a buffer and waiting with no work for `idle`,
    /// still holds it when work comes.
    fn buffer_kept_after(keep_buffer_idle: Duration, idle: Duration) -> bool {
        let shared = Arc::new(shared_keeping(Queues::default(), keep_buffer_idle));
        let mut engine = Engine { blocks: Vec::new() };
        assert!(engine.hash("a password").is_ok());
        assert!(
            !engine.blocks.is_empty(),
            "the hash left no buffer to reuse"
        );
        let waiting = Arc::clone(&shared);
        let worker = std::thread::spawn(move || {
            let work = next(&waiting, &mut engine);
            (matches!(work, Some(Err(_))), !engine.blocks.is_empty())
        });
        std::thread::sleep(idle);
        shared.queues().sign_ups.push_back(Hash {
            password: "another".into(),
            reply: oneshot::channel().0,
        });
        shared.ready.notify_all();
        let (got_the_work, kept) = worker.join().unwrap();
        assert!(got_the_work);
        kept
    }

    #[test]
    fn the_working_buffer_is_kept_while_work_comes_and_freed_once_idle() {
        assert!(
            buffer_kept_after(Duration::from_secs(60), Duration::from_millis(50)),
            "freed before the keep time"
        );
        assert!(
            !buffer_kept_after(Duration::from_millis(10), Duration::from_millis(500)),
            "kept past the keep time"
        );
    }
}
