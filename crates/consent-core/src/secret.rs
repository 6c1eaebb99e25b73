//! Opaque credentials (grant and session tokens) and ids: high-entropy random strings,
//! stored only as SHA-256 hashes so that a copy of the database grants nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of grant tokens.
pub const GRANT_TOKEN_PREFIX: &str = "pgt_";
/// Prefix of session tokens.
pub const SESSION_TOKEN_PREFIX: &str = "pst_";
/// Bytes of randomness in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Length of the base64url text of a token's random part.
const TOKEN_TEXT_LEN: usize = 43;

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    bytes
}

/// A new token: `prefix` followed by 256 random bits in base64url.
pub fn new_token(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_BYTES>())
    )
}

/// Whether `token` has the exact shape of a token with `prefix` (checked before hashing,
/// so that malformed or oversized input is refused early).
pub fn is_well_formed(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == TOKEN_TEXT_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Hex SHA-256 of a token: the only form in which tokens are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new opaque id such as `thr_3f9a…` (96 random bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random_bytes::<12>()))
}

/// A new id that sorts by `now_ms`, such as `msg_0193…` (time, then 64 random bits), for
/// rows made at a high rate: their unique index grows at one end, so a commit of many
/// writes one index page rather than a random page for each.
pub fn new_ordered_id(prefix: &str, now_ms: i64) -> String {
    format!("{prefix}_{now_ms:012x}{}", hex::encode(random_bytes::<8>()))
}

/// 32 random bytes, hex-encoded (for installation secrets).
pub fn new_secret() -> String {
    hex::encode(random_bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_sort_by_time_and_stay_unguessable() {
        let earlier = new_ordered_id("msg", 1_700_000_000_000);
        let later = new_ordered_id("msg", 1_700_000_000_001);
        assert!(earlier < later, "{earlier} sorts before {later}");
        assert_ne!(
            new_ordered_id("msg", 5),
            new_ordered_id("msg", 5),
            "the random part differs within one millisecond"
        );
        let id_shaped = |id: &str| {
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        assert!(
            id_shaped(&earlier),
            "{earlier} passes as an id the platform issued"
        );
    }
}
