//! The rows that decide a partner call — the partner, the grant behind a token, the
//! grant's feature and the scopes it has used, the thread and its participants, and
//! whether a message's author opted out of others' apps — kept in memory, so that most
//! calls are decided without SQL.
//!
//! Only the writer changes these rows. It notes which ones a batch touched and, once the
//! batch has committed and before any job of it hears so, drops them and moves the
//! generation on. A snapshot fills a missing entry only if the generation has not moved
//! since before the snapshot began, so a row read before a commit never outlives that
//! commit in the cache. Between a commit and the drop a reader may still see the row as it
//! was, as a snapshot begun a moment earlier would; what a snapshot allows is re-checked
//! on the writer before it is recorded. The writer itself, which sees every commit as it
//! makes it, reads through the cache only until its batch changes one of these rows.
//!
//! The cache is bounded: a map that is full is emptied before the next entry goes in.

use crate::model::{Feature, Grant, Partner, ScopeSet, Thread};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most entries each map holds.
const MAX_ENTRIES: usize = 4096;

/// A cached row the writer added or changed. An added row counts too: until it commits,
/// the writer must not offer it to the cache.
#[derive(Debug)]
pub enum Changed {
    /// A partner, by id.
    Partner(String),
    /// A feature, by partner id and name.
    Feature(String, String),
    /// A grant, its state, last use or attestation, by id.
    Grant(String),
    /// The token bound to a grant, by grant id.
    GrantToken(String),
    /// A thread, by id. Threads do not change once made; only a new one is noted.
    Thread(String),
    /// A user's opt-out from others' apps, by user id.
    User(String),
}

/// The cache shared by the writer and the snapshots.
#[derive(Debug, Default)]
pub struct AuthCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    partners: HashMap<String, Partner>,
    features: HashMap<(String, String), Feature>,
    /// Token hash to grant id.
    tokens: HashMap<String, String>,
    grants: HashMap<String, Grant>,
    used_scopes: HashMap<String, ScopeSet>,
    threads: HashMap<String, Thread>,
    /// User id to whether the user hides their messages from others' apps.
    hides: HashMap<String, bool>,
}

impl AuthCache {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation now: read it before a snapshot begins and fill with it.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Drops what a committed batch changed and moves the generation on.
    pub fn forget(&self, changed: &[Changed]) {
        if changed.is_empty() {
            return;
        }
        let mut state = self.state();
        state.generation += 1;
        for row in changed {
            match row {
                Changed::Partner(id) => drop(state.partners.remove(id)),
                Changed::Feature(partner, name) => {
                    drop(state.features.remove(&(partner.clone(), name.clone())));
                }
                Changed::Grant(id) => {
                    state.grants.remove(id);
                    state.used_scopes.remove(id);
                }
                Changed::GrantToken(id) => {
                    state.tokens.retain(|_, grant| grant != id);
                    state.grants.remove(id);
                }
                Changed::Thread(id) => drop(state.threads.remove(id)),
                Changed::User(id) => drop(state.hides.remove(id)),
            }
        }
    }

    /// A cached partner.
    pub fn partner(&self, id: &str) -> Option<Partner> {
        self.state().partners.get(id).cloned()
    }

    /// A cached feature.
    pub fn feature(&self, partner_id: &str, name: &str) -> Option<Feature> {
        self.state()
            .features
            .get(&(partner_id.to_string(), name.to_string()))
            .cloned()
    }

    /// The cached grant a token hash is bound to.
    pub fn grant_by_token(&self, token_hash: &str) -> Option<Grant> {
        let state = self.state();
        let id = state.tokens.get(token_hash)?;
        state.grants.get(id).cloned()
    }

    /// A cached grant, by id.
    pub fn grant(&self, id: &str) -> Option<Grant> {
        self.state().grants.get(id).cloned()
    }

    /// A cached thread.
    pub fn thread(&self, id: &str) -> Option<Thread> {
        self.state().threads.get(id).cloned()
    }

    /// Whether a user hides their messages from others' apps, if cached.
    pub fn hides(&self, user_id: &str) -> Option<bool> {
        self.state().hides.get(user_id).copied()
    }

    /// The cached scopes a grant has used.
    pub fn used_scopes(&self, grant_id: &str) -> Option<ScopeSet> {
        self.state().used_scopes.get(grant_id).copied()
    }

    /// Keeps a partner read in a snapshot begun at `generation`.
    pub fn fill_partner(&self, generation: u64, partner: &Partner) {
        self.fill(generation, |state| {
            insert_bounded(&mut state.partners, partner.id.clone(), partner.clone());
        });
    }

    /// Keeps a feature read in a snapshot begun at `generation`.
    pub fn fill_feature(&self, generation: u64, feature: &Feature) {
        self.fill(generation, |state| {
            let key = (feature.partner_id.clone(), feature.name.clone());
            insert_bounded(&mut state.features, key, feature.clone());
        });
    }

    /// Keeps the grant a token hash resolved to in a snapshot begun at `generation`.
    pub fn fill_grant_of_token(&self, generation: u64, token_hash: &str, grant: &Grant) {
        self.fill(generation, |state| {
            state.make_room_for_grant();
            state
                .tokens
                .insert(token_hash.to_string(), grant.id.clone());
            state.grants.insert(grant.id.clone(), grant.clone());
        });
    }

    /// Keeps a grant read by id in a snapshot begun at `generation`.
    pub fn fill_grant(&self, generation: u64, grant: &Grant) {
        self.fill(generation, |state| {
            state.make_room_for_grant();
            state.grants.insert(grant.id.clone(), grant.clone());
        });
    }

    /// Keeps a thread read in a snapshot begun at `generation`.
    pub fn fill_thread(&self, generation: u64, thread: &Thread) {
        self.fill(generation, |state| {
            insert_bounded(&mut state.threads, thread.id.clone(), thread.clone());
        });
    }

    /// Keeps a user's opt-out read in a snapshot begun at `generation`.
    pub fn fill_hides(&self, generation: u64, user_id: &str, hides: bool) {
        self.fill(generation, |state| {
            insert_bounded(&mut state.hides, user_id.to_string(), hides);
        });
    }

    /// Keeps a grant's used scopes read in a snapshot begun at `generation`.
    pub fn fill_used_scopes(&self, generation: u64, grant_id: &str, used: ScopeSet) {
        self.fill(generation, |state| {
            insert_bounded(&mut state.used_scopes, grant_id.to_string(), used);
        });
    }

    fn fill(&self, generation: u64, insert: impl FnOnce(&mut State)) {
        let mut state = self.state();
        if state.generation == generation {
            insert(&mut state);
        }
    }
}

impl State {
    /// Tokens point at grants, so the two maps are emptied together.
    fn make_room_for_grant(&mut self) {
        if self.tokens.len() >= MAX_ENTRIES || self.grants.len() >= MAX_ENTRIES {
            self.tokens.clear();
            self.grants.clear();
        }
    }
}

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, GrantState};

    fn partner(suspended: bool) -> Partner {
        Partner {
            id: "music".into(),
            display_name: "Music".into(),
            allowed_scopes: ScopeSet::default(),
            suspended,
        }
    }

    fn grant(id: &str, state: GrantState) -> Grant {
        Grant {
            id: id.into(),
            user_id: "alice".into(),
            partner_id: "music".into(),
            feature: "share".into(),
            scopes: ScopeSet::default(),
            coverage: Coverage::All,
            thread_ids: Vec::new(),
            include_history: false,
            created_ms: 0,
            not_after_ms: 1,
            last_used_ms: None,
            state,
            ended_ms: None,
            attested_ms: None,
        }
    }

    #[test]
    fn a_row_read_before_a_commit_is_not_kept_after_it() {
        let cache = AuthCache::default();
        let before = cache.generation();
        // The writer commits a suspension while a snapshot begun earlier is still reading.
        cache.forget(&[Changed::Partner("music".into())]);
        cache.fill_partner(before, &partner(false));
        assert!(cache.partner("music").is_none());
        cache.fill_partner(cache.generation(), &partner(true));
        assert!(cache.partner("music").is_some_and(|p| p.suspended));
    }

    #[test]
    fn a_committed_change_drops_the_row() {
        let cache = AuthCache::default();
        let generation = cache.generation();
        cache.fill_grant_of_token(generation, "hash", &grant("grt_1", GrantState::Active));
        cache.fill_used_scopes(generation, "grt_1", ScopeSet::default());
        assert!(cache.grant_by_token("hash").is_some());
        cache.forget(&[Changed::Grant("grt_1".into())]);
        assert!(cache.grant_by_token("hash").is_none());
        assert!(cache.used_scopes("grt_1").is_none());
        assert!(cache.generation() > generation);
    }

    #[test]
    fn a_new_token_unbinds_the_old_one() {
        let cache = AuthCache::default();
        cache.fill_grant_of_token(
            cache.generation(),
            "old",
            &grant("grt_1", GrantState::Active),
        );
        cache.forget(&[Changed::GrantToken("grt_1".into())]);
        cache.fill_grant_of_token(
            cache.generation(),
            "new",
            &grant("grt_1", GrantState::Active),
        );
        assert!(cache.grant_by_token("old").is_none());
        assert!(cache.grant_by_token("new").is_some());
    }

    #[test]
    fn a_full_map_is_emptied_before_it_grows() {
        let cache = AuthCache::default();
        for n in 0..=MAX_ENTRIES {
            cache.fill_used_scopes(cache.generation(), &format!("grt_{n}"), ScopeSet::default());
        }
        assert!(cache.used_scopes("grt_0").is_none());
        assert!(cache.used_scopes(&format!("grt_{MAX_ENTRIES}")).is_some());
        assert_eq!(cache.state().used_scopes.len(), 1);
    }
}
