//! What one partner sees of people, threads and messages: identifiers keyed per partner,
//! so that two partners comparing their data cannot join it.
//!
//! - A person other than the granting user is a *handle*: `anon_` and 16 hex digits of an
//!   HMAC-SHA-256, under the pseudonym key, of the partner id and the user id. It cannot be
//!   undone; the platform recognises a handle by computing it again for the user's
//!   friends.
//! - A thread or message id is the platform's id encrypted for the partner: the id's
//!   random bytes (at most 15, behind a length byte, zero-padded) as one AES-128 block,
//!   under a key the pseudonym key derives for the partner and the kind (an HMAC of the
//!   two). The same thread has one id for a partner every time and unrelated ids for two
//!   partners, and the platform reads an id a partner sends back without a table. An id
//!   that does not decrypt to that shape under the caller's key names nothing.
//!
//! The granting user's own id is not hidden from the partner they granted. Rotating the
//! pseudonym key changes every handle and id a partner holds (see
//! `docs/configuration.md`).

use crate::secret::SecretKey;
use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

/// Longest random part of an id, in bytes, that fits one block behind its length byte.
const MOST_ID_BYTES: usize = 15;

/// The identifiers one partner sees. Making one derives its keys; a clone copies them.
#[derive(Clone)]
pub struct PartnerView<'a> {
    key: &'a SecretKey,
    partner_id: String,
    threads: Aes128,
    messages: Aes128,
    pages: Aes128,
}

impl std::fmt::Debug for PartnerView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartnerView({})", self.partner_id)
    }
}

impl<'a> PartnerView<'a> {
    /// The view of `partner_id`, keyed by the pseudonym key.
    pub fn new(key: &'a SecretKey, partner_id: &str) -> Self {
        let cipher = |kind: &[u8]| {
            let mac = key.mac(&[b"ids", kind, partner_id.as_bytes()]);
            Aes128::new_from_slice(&mac[..16]).expect("an AES-128 key is 16 bytes")
        };
        PartnerView {
            key,
            partner_id: partner_id.to_string(),
            threads: cipher(b"thread"),
            messages: cipher(b"message"),
            pages: cipher(b"page"),
        }
    }

    /// How the partner sees `user_id` under a grant of `granting_user`: that user by their
    /// id, anyone else by their handle.
    pub fn person(&self, granting_user: &str, user_id: &str) -> String {
        if user_id == granting_user {
            user_id.to_string()
        } else {
            self.handle(user_id)
        }
    }

    /// The partner's handle for `user_id`.
    pub fn handle(&self, user_id: &str) -> String {
        let mac = self
            .key
            .mac(&[b"pseudonym", self.partner_id.as_bytes(), user_id.as_bytes()]);
        ["anon_", &hex::encode(&mac[..8])].concat()
    }

    /// The partner's id for the thread `thread_id`.
    pub fn thread(&self, thread_id: &str) -> String {
        shown(&self.threads, thread_id)
    }

    /// The thread the partner names `shown`, if it names one.
    pub fn thread_named(&self, shown: &str) -> Option<String> {
        named(&self.threads, "thr", shown)
    }

    /// The partner's id for the message `message_id`.
    pub fn message(&self, message_id: &str) -> String {
        shown(&self.messages, message_id)
    }

    /// The message the partner names `shown`, if it names one.
    pub fn message_named(&self, shown: &str) -> Option<String> {
        named(&self.messages, "msg", shown)
    }

    /// The partner's form of a page token (`c` and a store cursor, "" at the end): the
    /// cursor encrypted like an id, since a cursor is a row's place in a table that all
    /// partners share.
    pub fn page_token(&self, token: &str) -> String {
        match token.strip_prefix('c').and_then(|n| n.parse::<i64>().ok()) {
            Some(cursor) => shown(
                &self.pages,
                &format!("pg_{}", hex::encode(cursor.to_be_bytes())),
            ),
            None => String::new(),
        }
    }

    /// The page token (`c` and a cursor) that the partner's token `shown` stands for.
    pub fn page_token_named(&self, shown: &str) -> Option<String> {
        let cursor = named(&self.pages, "pg", shown)?;
        let bytes: [u8; 8] = hex::decode(cursor.strip_prefix("pg_")?)
            .ok()?
            .try_into()
            .ok()?;
        Some(format!("c{}", i64::from_be_bytes(bytes)))
    }
}

/// `id` (`prefix_hex`) as the partner sees it: the same prefix, then the encrypted block in
/// hex. An id of another shape (the platform makes none) is shown as the encryption of
/// its digest, which names nothing when sent back. It runs twice for each message a
/// partner reads, so the id is joined from its parts, without `format!`'s writes and
/// reallocations.
fn shown(cipher: &Aes128, id: &str) -> String {
    let (prefix, random) = id.split_once('_').unwrap_or(("id", id));
    let bytes = match hex::decode(random) {
        Ok(bytes) if bytes.len() <= MOST_ID_BYTES => bytes,
        _ => <sha2::Sha256 as sha2::Digest>::digest(id.as_bytes())[..MOST_ID_BYTES].to_vec(),
    };
    let mut block = aes::Block::default();
    block[0] = bytes.len() as u8;
    block[1..=bytes.len()].copy_from_slice(&bytes);
    cipher.encrypt_block(&mut block);
    [prefix, "_", &hex::encode(block)].concat()
}

/// The platform's id that `shown` stands for, if it decrypts to an id with `prefix`.
fn named(cipher: &Aes128, prefix: &str, shown: &str) -> Option<String> {
    let encrypted = shown.strip_prefix(prefix)?.strip_prefix('_')?;
    let bytes = hex::decode(encrypted).ok()?;
    let mut block = aes::Block::clone_from_slice(bytes.get(..16).filter(|_| bytes.len() == 16)?);
    cipher.decrypt_block(&mut block);
    let len = usize::from(block[0]);
    if len > MOST_ID_BYTES || block[1 + len..].iter().any(|b| *b != 0) {
        return None;
    }
    Some([prefix, "_", &hex::encode(&block[1..=len])].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{new_id, new_ordered_id};

    #[test]
    fn ids_round_trip_for_their_partner_and_differ_across_partners() {
        let key = SecretKey::generate();
        let (music, video) = (
            PartnerView::new(&key, "music"),
            PartnerView::new(&key, "video"),
        );
        let thread = new_id("thr");
        let message = new_ordered_id("msg", 1_700_000_000_000);
        assert_eq!(music.thread(&thread), music.thread(&thread), "stable");
        assert_ne!(music.thread(&thread), video.thread(&thread));
        assert_ne!(music.thread(&thread), thread);
        assert_eq!(
            music.thread_named(&music.thread(&thread)),
            Some(thread.clone())
        );
        assert_eq!(
            music.message_named(&music.message(&message)),
            Some(message.clone())
        );
        // Another partner's id decrypts, if at all, to random bytes: never to the thread.
        assert_ne!(
            video.thread_named(&music.thread(&thread)),
            Some(thread.clone()),
            "another partner's id"
        );
        assert_eq!(
            music.message_named(&music.thread(&thread)),
            None,
            "a thread's id"
        );
        assert_eq!(music.thread_named(&thread), None, "the platform's own id");
        for junk in [
            "",
            "thr_",
            "thr_zz",
            "thr_00",
            &format!("thr_{}", "0".repeat(64)),
        ] {
            assert_eq!(music.thread_named(junk), None, "{junk}");
        }
        assert!(music.thread(&thread).starts_with("thr_"));
        let other_key = SecretKey::generate();
        assert_ne!(
            PartnerView::new(&other_key, "music").thread(&thread),
            music.thread(&thread)
        );
    }

    #[test]
    fn page_tokens_are_the_partners_own() {
        let key = SecretKey::generate();
        let (music, video) = (
            PartnerView::new(&key, "music"),
            PartnerView::new(&key, "video"),
        );
        let token = music.page_token("c42");
        let plain = hex::encode(42i64.to_be_bytes());
        assert!(
            token.starts_with("pg_") && !token.contains(&plain),
            "{token}"
        );
        assert_ne!(token, video.page_token("c42"));
        assert_eq!(music.page_token_named(&token).as_deref(), Some("c42"));
        assert_eq!(video.page_token_named(&token), None);
        assert_eq!(
            music.page_token_named("c42"),
            None,
            "the platform's own form"
        );
        assert_eq!(music.page_token(""), "", "the last page has none");
    }

    #[test]
    fn people_are_handles_except_the_granting_user() {
        let key = SecretKey::generate();
        let (music, video) = (
            PartnerView::new(&key, "music"),
            PartnerView::new(&key, "video"),
        );
        assert_eq!(music.person("usr_a", "usr_a"), "usr_a");
        assert_eq!(music.person("usr_a", "usr_b"), music.handle("usr_b"));
        assert_ne!(music.handle("usr_b"), video.handle("usr_b"));
        assert!(music.handle("usr_b").starts_with("anon_"));
        assert_ne!(
            PartnerView::new(&SecretKey::generate(), "music").handle("usr_b"),
            music.handle("usr_b")
        );
    }
}
