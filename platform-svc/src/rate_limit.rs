//! Per-partner rate limits at the edge: a token bucket per partner id, checked before a
//! call reaches any handler, so one partner over its limit gets `RESOURCE_EXHAUSTED`
//! while the others are unaffected. Refused calls do no work at all (no store access, no
//! audit record), which is the point of refusing them.

use std::collections::HashMap;
use std::sync::Mutex;
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
}
