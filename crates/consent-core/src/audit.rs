//! The tamper-evident audit chain: each record's hash covers its fields and the previous
//! record's hash, so a flipped byte, a deleted or reordered record breaks the chain at that
//! point, and truncation shows against a checkpoint taken from an earlier export.
//!
//! Each record also carries a MAC of its position and hash under the audit key, a secret
//! kept in a file outside the database. A hash chain alone can be rebuilt by anyone who can
//! write the database; the MACs cannot be made without the key, so a rewritten record (and
//! every record after it, re-chained) fails verification. Because each hash covers every
//! record before it, any record's MAC is a signed checkpoint of the whole chain up to it.

use crate::model::{AuditEntry, AuditRecord};
use crate::secret::SecretKey;
use sha2::{Digest, Sha256};

/// The secret that MACs audit records, read from a file outside the database.
pub type AuditKey = SecretKey;

/// The MAC of the record at `seq` whose hash is `hash` (hex).
pub fn record_mac(key: &AuditKey, seq: i64, hash: &str) -> String {
    hex::encode(key.mac(&[b"audit-record", &seq.to_be_bytes(), hash.as_bytes()]))
}

/// Whether `mac` is the MAC of the record at `seq` with `hash`.
pub fn record_mac_verifies(key: &AuditKey, seq: i64, hash: &str, mac: &str) -> bool {
    hex::decode(mac).is_ok_and(|mac| {
        key.verifies(
            &[b"audit-record", &seq.to_be_bytes(), hash.as_bytes()],
            &mac,
        )
    })
}

/// Hash of a record from its position, time, content and predecessor.
pub fn record_hash(seq: i64, at_ms: i64, entry: &AuditEntry, prev_hash: &str) -> String {
    let mut hasher = Sha256::new();
    for field in [
        seq.to_string().as_str(),
        at_ms.to_string().as_str(),
        &entry.partner_id,
        &entry.user_id,
        &entry.grant_id,
        &entry.method,
        &entry.resource,
        &entry.decision,
        &entry.reason,
        prev_hash,
    ] {
        // Length-prefix each field so that no two different records hash the same.
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Outcome of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records examined.
    pub checked: u64,
    /// First record that does not verify, with why.
    pub first_bad: Option<(i64, String)>,
}

/// Walks the chain incrementally, record by record, in sequence order.
#[derive(Debug)]
pub struct ChainVerifier {
    key: AuditKey,
    expected_seq: i64,
    prev_hash: String,
    checked: u64,
    first_bad: Option<(i64, String)>,
}

impl ChainVerifier {
    /// A verifier expecting the first record, checking MACs with `key`.
    pub fn new(key: &AuditKey) -> Self {
        ChainVerifier {
            key: key.clone(),
            expected_seq: 1,
            prev_hash: String::new(),
            checked: 0,
            first_bad: None,
        }
    }

    /// Whether every record fed so far verifies (false for good once one did not).
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }

    /// Feeds the next record; returns false once a bad record was found.
    pub fn push(&mut self, record: &AuditRecord) -> bool {
        if self.first_bad.is_some() {
            return false;
        }
        self.checked += 1;
        let problem = if record.seq != self.expected_seq {
            Some(format!(
                "expected record {} but found {}",
                self.expected_seq, record.seq
            ))
        } else if record.prev_hash != self.prev_hash {
            Some("does not link to the previous record".to_string())
        } else if record.hash
            != record_hash(record.seq, record.at_ms, &record.entry, &record.prev_hash)
        {
            Some("content does not match its hash".to_string())
        } else if !record_mac_verifies(&self.key, record.seq, &record.hash, &record.mac) {
            Some("its MAC does not verify: written without the audit key".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.first_bad = Some((self.expected_seq, problem));
            return false;
        }
        self.expected_seq += 1;
        self.prev_hash.clone_from(&record.hash);
        true
    }

    /// Checks that a checkpoint (seq and hash from an earlier export) is still in the chain.
    pub fn check_checkpoint(&mut self, seq: i64, hash: &str, found: Option<&AuditRecord>) {
        if self.first_bad.is_some() {
            return;
        }
        match found {
            Some(record) if record.hash == hash => {}
            Some(_) => self.first_bad = Some((seq, "checkpoint hash differs".to_string())),
            None => {
                self.first_bad = Some((
                    seq,
                    "checkpoint record is missing: the chain was truncated".to_string(),
                ))
            }
        }
    }

    /// The result.
    pub fn finish(self) -> Verification {
        Verification {
            checked: self.checked,
            first_bad: self.first_bad,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let key = key();
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let entry = AuditEntry {
                    method: format!("/m/{seq}"),
                    decision: "allow".into(),
                    ..Default::default()
                };
                let hash = record_hash(seq, seq * 10, &entry, &prev);
                AuditRecord {
                    seq,
                    at_ms: seq * 10,
                    entry,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    mac: record_mac(&key, seq, &hash),
                    hash,
                }
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> Verification {
        let key = key();
        let mut v = ChainVerifier::new(&key);
        for r in records {
            v.push(r);
        }
        v.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let v = verify(&chain(5));
        assert_eq!(v.checked, 5);
        assert_eq!(v.first_bad, None);
    }

    #[test]
    fn edits_deletions_and_reorders_name_the_first_bad_record() {
        let mut edited = chain(5);
        edited[2].entry.decision = "deny".into();
        assert_eq!(verify(&edited).first_bad.unwrap().0, 3);

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify(&deleted).first_bad.unwrap().0, 2);

        let mut reordered = chain(5);
        reordered.swap(3, 4);
        assert_eq!(verify(&reordered).first_bad.unwrap().0, 4);
    }

    #[test]
    fn a_chain_rebuilt_without_the_key_fails_at_the_first_rewritten_record() {
        let mut rebuilt = chain(5);
        rebuilt[2].entry.decision = "deny".into();
        for i in 2..5 {
            let prev = rebuilt[i - 1].hash.clone();
            let r = &mut rebuilt[i];
            r.prev_hash = prev;
            r.hash = record_hash(r.seq, r.at_ms, &r.entry, &r.prev_hash);
        }
        let v = verify(&rebuilt);
        assert_eq!(
            v.first_bad.unwrap().0,
            3,
            "every hash links, the MAC does not"
        );
        let other = AuditKey::from_hex(&"cd".repeat(32)).unwrap();
        let first = &chain(1)[0];
        assert!(!record_mac_verifies(&other, 1, &first.hash, &first.mac));
    }
}
