//! Password hashing (Argon2id, default parameters: 19 MiB, 2 passes) on one dedicated
//! thread that owns one reusable 19 MiB working buffer. Hashes are deliberately expensive:
//! running them one at a time keeps a flood of sign-ins from occupying the runtime's
//! threads, and reusing the buffer keeps the process's memory flat (allocating it per hash
//! left the allocator holding several copies, about 60 MiB).

use crate::error::ApiError;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::mpsc;
use tokio::sync::oneshot;

enum Work {
    Hash(String, oneshot::Sender<Result<String, ApiError>>),
    Verify(String, String, oneshot::Sender<bool>),
}

/// The hashing thread's handle.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    work: mpsc::Sender<Work>,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("password work")
    }
}

impl PasswordHasher {
    /// Starts the hashing thread; it ends when the last handle is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (work, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("password-hasher".into())
            .spawn(move || {
                let mut engine = Engine { blocks: Vec::new() };
                for item in queue {
                    match item {
                        Work::Hash(password, reply) => {
                            let _ = reply.send(engine.hash(&password));
                        }
                        Work::Verify(password, stored, reply) => {
                            let _ = reply.send(engine.matches(&password, &stored));
                        }
                    }
                }
            })?;
        Ok(PasswordHasher { work })
    }

    /// An Argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.work
            .send(Work::Hash(password, reply))
            .map_err(|_| ApiError::Storage("password hasher stopped".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Storage("password hasher stopped".into()))?
    }

    /// Whether `password` matches the stored PHC string.
    pub async fn verify(&self, password: String, stored: String) -> bool {
        let (reply, answer) = oneshot::channel();
        if self
            .work
            .send(Work::Verify(password, stored, reply))
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// Argon2 with a working buffer kept between calls.
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
}
