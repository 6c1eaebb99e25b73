//! Opaque credentials (grant and session tokens) and ids: high-entropy random strings,
//! stored only as SHA-256 hashes so that a copy of the database grants nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Prefix of grant tokens.
pub const GRANT_TOKEN_PREFIX: &str = "pgt_";
/// Prefix of session tokens.
pub const SESSION_TOKEN_PREFIX: &str = "pst_";
/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "pac_";
/// Prefix of the random part of a `request_uri`.
pub const REQUEST_URI_TOKEN_PREFIX: &str = "par_";
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

/// Bytes of a new secret key.
pub const SECRET_KEY_BYTES: usize = 32;

/// A secret key kept in a file outside the database (the audit key, the pseudonym key),
/// so that a copy of the database can neither forge audit records nor undo pseudonyms.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A key from the text of a key file: at least 32 bytes as hex (surrounding white
    /// space ignored).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
        if bytes.len() < SECRET_KEY_BYTES {
            return Err(format!(
                "{} bytes, at least {SECRET_KEY_BYTES} needed",
                bytes.len()
            ));
        }
        Ok(SecretKey(bytes))
    }

    /// A new random key.
    pub fn generate() -> Self {
        SecretKey(random_bytes::<SECRET_KEY_BYTES>().to_vec())
    }

    /// The key as the hex text of a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// HMAC-SHA-256 under this key of `parts`, each prefixed with its length so that no
    /// two different lists of parts are confused.
    fn hmac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The MAC of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.hmac(parts).finalize().into_bytes().into()
    }

    /// Whether `expected` is the MAC of `parts` (compared in constant time).
    pub fn verifies(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        self.hmac(parts).verify_slice(expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_key_reads_back_refuses_short_keys_and_separates_its_parts() {
        let key = SecretKey::generate();
        assert_eq!(SecretKey::from_hex(&key.to_hex()).unwrap().0, key.0);
        assert!(SecretKey::from_hex("abcd").is_err(), "too short");
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err(), "not hex");
        let mac = key.mac(&[b"ab", b"c"]);
        assert!(key.verifies(&[b"ab", b"c"], &mac));
        assert!(!key.verifies(&[b"a", b"bc"], &mac));
        assert!(!SecretKey::generate().verifies(&[b"ab", b"c"], &mac));
    }

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
