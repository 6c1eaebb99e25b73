//! Per-partner limits. Request rates: a token bucket per partner id, checked at the edge
//! before a call reaches any handler, so one partner over its limit gets
//! `RESOURCE_EXHAUSTED` while the others are unaffected; refused calls do no work at all
//! (no store access, no audit record), which is the point of refusing them. Event streams:
//! a partner may hold only so many `WatchGrantEvents` streams open at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Token buckets keyed by partner id.
#[derive(Debug)]
pub struct PartnerRateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl PartnerRateLimiter {
    /// `per_second` sustained, up to `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        PartnerRateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `partner_id`; false when its bucket is empty.
    pub fn try_acquire(&self, partner_id: &str) -> bool {
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = buckets.entry(partner_id.to_string()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Open `WatchGrantEvents` streams, counted per partner against a cap.
#[derive(Debug)]
pub struct EventStreamSlots {
    per_partner: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct EventStreamSlot {
    slots: Arc<EventStreamSlots>,
    partner_id: String,
}

impl EventStreamSlots {
    /// At most `per_partner` open streams per partner.
    pub fn new(per_partner: usize) -> Arc<Self> {
        Arc::new(EventStreamSlots {
            per_partner,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more stream of `partner_id`, or `None` when it holds all it may.
    pub fn acquire(self: &Arc<Self>, partner_id: &str) -> Option<EventStreamSlot> {
        let mut open = self.open();
        let count = open.entry(partner_id.to_string()).or_default();
        if *count >= self.per_partner {
            return None;
        }
        *count += 1;
        Some(EventStreamSlot {
            slots: Arc::clone(self),
            partner_id: partner_id.to_string(),
        })
    }
}

impl Drop for EventStreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        if let Some(count) = open.get_mut(&self.partner_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.partner_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partner_has_its_own_bucket() {
        let limiter = PartnerRateLimiter::new(1, 3);
        assert!((0..3).all(|_| limiter.try_acquire("music")));
        assert!(!limiter.try_acquire("music"));
        assert!(limiter.try_acquire("video"));
    }

    #[test]
    fn a_partner_holds_at_most_its_streams_and_a_closed_one_frees_its_slot() {
        let slots = EventStreamSlots::new(2);
        let first = slots.acquire("music").unwrap();
        let _second = slots.acquire("music").unwrap();
        assert!(slots.acquire("music").is_none());
        assert!(slots.acquire("video").is_some(), "each partner has its own");
        drop(first);
        assert!(slots.acquire("music").is_some());
    }
}
