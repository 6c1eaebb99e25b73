//! Sign-in throttling, per account and per client address, counted three ways: an account
//! name from one address (`account_failures`), an account name from anywhere
//! (`account_failures_any_address`, looser, so that one address cannot lock a person out
//! while many together still cannot guess without end), and an address across names
//! (`address_failures`; IPv6 by its /64). Every attempt counts as a failure of all three
//! until it succeeds (so attempts made at once cannot slip past the count); a success
//! clears its name-and-address count and takes back its own count elsewhere, and an
//! attempt the hashing queue refused counts as nothing. Once a count reaches its bound,
//! each further attempt waits a backoff that starts at `first_backoff_secs` and doubles
//! with every failure, up to `max_backoff_secs`; an attempt inside the backoff is refused
//! at once with `RESOURCE_EXHAUSTED` / `SIGN_IN_THROTTLED`, costs no hashing and counts as
//! nothing. Unknown names are counted as known ones are, so the throttle tells nobody
//! which exist.
//! Failures are forgotten an hour after the last one; each table holds at most
//! [`MAX_TRACKED`] entries, the oldest making way for a new one.

use crate::config::SignInLimits;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures are forgotten this long after the last one.
const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;
/// Entries kept per table (names, addresses).
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: i64,
}

/// Failure counts keyed by `K`, with their threshold.
#[derive(Debug)]
struct Table<K> {
    threshold: u32,
    entries: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(threshold: u32) -> Self {
        Table {
            threshold: threshold.max(1),
            entries: HashMap::new(),
        }
    }

    /// When `key` may try again, if it is in a backoff at `now_ms`.
    fn blocked_until(&self, key: &K, now_ms: i64, limits: &SignInLimits) -> Option<i64> {
        let failures = self.entries.get(key)?;
        if failures.count < self.threshold || now_ms - failures.last_ms > FORGET_AFTER_MS {
            return None;
        }
        let doublings = (failures.count - self.threshold).min(30);
        let backoff_ms = (i64::from(limits.first_backoff_secs) * 1000)
            .saturating_mul(1 << doublings)
            .min(i64::from(limits.max_backoff_secs) * 1000);
        let until = failures.last_ms + backoff_ms;
        (until > now_ms).then_some(until)
    }

    fn fail(&mut self, key: &K, now_ms: i64) {
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_TRACKED {
            self.make_room(now_ms);
        }
        let failures = self.entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            last_ms: now_ms,
        });
        if now_ms - failures.last_ms > FORGET_AFTER_MS {
            failures.count = 0;
        }
        failures.count += 1;
        failures.last_ms = now_ms;
    }

    fn forgive_one(&mut self, key: &K) {
        if let Some(failures) = self.entries.get_mut(key) {
            failures.count = failures.count.saturating_sub(1);
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops forgotten entries, and the oldest one if none was.
    fn make_room(&mut self, now_ms: i64) {
        self.entries
            .retain(|_, f| now_ms - f.last_ms <= FORGET_AFTER_MS);
        if self.entries.len() >= MAX_TRACKED
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, f)| f.last_ms)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

#[derive(Debug)]
struct Tables {
    /// An account name from one client address.
    pairs: Table<(String, Option<IpAddr>)>,
    /// An account name from anywhere: a looser bound, so that one address cannot lock
    /// someone out, while many addresses together still cannot guess without end.
    names: Table<String>,
    addresses: Table<IpAddr>,
}

/// The sign-in throttle of one platform process.
#[derive(Debug)]
pub struct SignInThrottle {
    limits: SignInLimits,
    tables: Mutex<Tables>,
}

/// An attempt under way: counted as a failure until [`SignInThrottle::succeeded`].
#[derive(Debug)]
pub struct Attempt {
    name: String,
    address: Option<IpAddr>,
}

/// The address an attempt is counted under: IPv4 as it is, IPv6 by its /64 (one network
/// holds as many /128 addresses as it likes).
fn counted_address(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

impl SignInThrottle {
    /// A throttle with `limits`.
    pub fn new(limits: SignInLimits) -> Self {
        SignInThrottle {
            tables: Mutex::new(Tables {
                pairs: Table::new(limits.account_failures),
                names: Table::new(limits.account_failures_any_address),
                addresses: Table::new(limits.address_failures),
            }),
            limits,
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts an attempt for `name` from `address`, or says until when it must wait.
    pub fn begin(&self, name: &str, address: Option<IpAddr>, now_ms: i64) -> Result<Attempt, i64> {
        let mut tables = self.tables();
        let address = address.map(counted_address);
        let (name, pair) = (name.to_string(), (name.to_string(), address));
        let blocked = [
            tables.pairs.blocked_until(&pair, now_ms, &self.limits),
            tables.names.blocked_until(&name, now_ms, &self.limits),
            address.and_then(|a| tables.addresses.blocked_until(&a, now_ms, &self.limits)),
        ];
        if let Some(until) = blocked.into_iter().flatten().max() {
            return Err(until);
        }
        tables.pairs.fail(&pair, now_ms);
        tables.names.fail(&name, now_ms);
        if let Some(address) = address {
            tables.addresses.fail(&address, now_ms);
        }
        Ok(Attempt { name, address })
    }

    /// The attempt succeeded: its name starts afresh from its address, and neither the
    /// name's overall count nor the address is charged for it.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut tables = self.tables();
        tables.pairs.clear(&(attempt.name.clone(), attempt.address));
        self.forgive(&mut tables, attempt);
    }

    /// The attempt was never decided (the store or the hashing queue failed it): it counts
    /// as nothing.
    pub fn abandoned(&self, attempt: Attempt) {
        let mut tables = self.tables();
        tables
            .pairs
            .forgive_one(&(attempt.name.clone(), attempt.address));
        self.forgive(&mut tables, attempt);
    }

    fn forgive(&self, tables: &mut Tables, attempt: Attempt) {
        tables.names.forgive_one(&attempt.name);
        if let Some(address) = attempt.address {
            tables.addresses.forgive_one(&address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SignInLimits {
        SignInLimits {
            account_failures: 3,
            account_failures_any_address: 6,
            address_failures: 5,
            first_backoff_secs: 1,
            max_backoff_secs: 4,
            ..SignInLimits::default()
        }
    }

    #[test]
    fn a_name_waits_a_doubling_backoff_after_its_failures_until_a_success() {
        let throttle = SignInThrottle::new(limits());
        for _ in 0..3 {
            assert!(throttle.begin("alice", None, 0).is_ok());
        }
        assert_eq!(throttle.begin("alice", None, 10).unwrap_err(), 1000);
        assert!(
            throttle.begin("bob", None, 10).is_ok(),
            "other names are free"
        );
        assert!(throttle.begin("alice", None, 1000).is_ok());
        assert_eq!(throttle.begin("alice", None, 1001).unwrap_err(), 3000);
        let attempt = throttle.begin("alice", None, 3000).unwrap();
        assert_eq!(throttle.begin("alice", None, 3001).unwrap_err(), 7000);
        throttle.succeeded(attempt);
        assert!(throttle.begin("alice", None, 3002).is_ok());
    }

    #[test]
    fn the_backoff_is_capped_and_failures_are_forgotten() {
        let throttle = SignInThrottle::new(limits());
        let mut now = 0;
        for _ in 0..10 {
            while let Err(until) = throttle.begin("alice", None, now) {
                assert!(until - now <= 4000, "never longer than the cap");
                now = until;
            }
        }
        let later = now + FORGET_AFTER_MS + 1;
        for _ in 0..3 {
            assert!(throttle.begin("alice", None, later).is_ok());
        }
    }

    #[test]
    fn an_address_is_throttled_across_names_and_not_charged_for_successes() {
        let throttle = SignInThrottle::new(limits());
        let address: IpAddr = [192, 0, 2, 7].into();
        for _ in 0..10 {
            let attempt = throttle.begin("carol", Some(address), 0).unwrap();
            throttle.succeeded(attempt);
        }
        for name in ["n1", "n2", "n3", "n4", "n5"] {
            assert!(throttle.begin(name, Some(address), 0).is_ok());
        }
        assert!(throttle.begin("n6", Some(address), 0).is_err());
        assert!(throttle.begin("n6", Some([192, 0, 2, 8].into()), 0).is_ok());
    }

    #[test]
    fn one_address_cannot_lock_a_name_out_for_another_but_many_together_can_not_guess_on() {
        let throttle = SignInThrottle::new(limits());
        let (attacker, owner): (IpAddr, IpAddr) = ([198, 51, 100, 1].into(), [192, 0, 2, 1].into());
        for _ in 0..3 {
            assert!(throttle.begin("alice", Some(attacker), 0).is_ok());
        }
        assert!(throttle.begin("alice", Some(attacker), 0).is_err());
        let attempt = throttle
            .begin("alice", Some(owner), 0)
            .expect("the owner may still try");
        throttle.succeeded(attempt);
        // Six failures from anywhere throttle the name everywhere.
        for n in 0..3u8 {
            assert!(
                throttle
                    .begin("alice", Some([203, 0, 113, n].into()), 0)
                    .is_ok()
            );
        }
        assert!(throttle.begin("alice", Some(owner), 0).is_err());
    }

    #[test]
    fn an_abandoned_attempt_counts_as_nothing_and_ipv6_counts_by_network() {
        let throttle = SignInThrottle::new(limits());
        for _ in 0..10 {
            let attempt = throttle.begin("alice", None, 0).unwrap();
            throttle.abandoned(attempt);
        }
        assert!(throttle.begin("alice", None, 0).is_ok());
        let network = |host: u16| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, host]);
        for host in 1..=5 {
            assert!(
                throttle
                    .begin(&format!("n{host}"), Some(network(host)), 0)
                    .is_ok()
            );
        }
        assert!(
            throttle.begin("n6", Some(network(6)), 0).is_err(),
            "one /64, one count"
        );
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut table = Table::new(1);
        for n in 0..(MAX_TRACKED + 10) {
            table.fail(&n, i64::try_from(n).unwrap());
        }
        assert_eq!(table.entries.len(), MAX_TRACKED);
        assert!(!table.entries.contains_key(&0), "the oldest made way");
    }
}
