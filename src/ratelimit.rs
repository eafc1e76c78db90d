//! Per-principal token buckets (route, principal and optionally tool), bounded and evicted
//! when idle so that a flood of distinct principals cannot grow memory without limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Most principals tracked per replica; the least recently used are forgotten first, which
/// at worst gives a forgotten principal a fresh burst.
const MAX_BUCKETS: u64 = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>, foldhash::quality::RandomState>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter {
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_BUCKETS)
                .time_to_idle(Duration::from_secs(600))
                .build_with_hasher(foldhash::quality::RandomState::default()),
        }
    }

    /// Takes one token from the bucket named `key`; on refusal returns how long until one is
    /// available (for `Retry-After`).
    pub fn check(&self, key: &str, limit: &RateLimit) -> Result<(), Duration> {
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                last: Instant::now(),
            }))
        });
        let mut b = bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * limit.per_second;
        b.tokens = (b.tokens + refill).min(f64::from(limit.burst));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / limit.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_is_refused_and_recovers() {
        let rl = RateLimiter::new();
        let limit = RateLimit {
            per_second: 50.0,
            burst: 3,
            per_tool: false,
        };
        for _ in 0..3 {
            assert!(rl.check("alice", &limit).is_ok());
        }
        let wait = rl.check("alice", &limit).unwrap_err();
        assert!(wait <= Duration::from_millis(20));
        assert!(rl.check("bob", &limit).is_ok(), "buckets are per principal");
        std::thread::sleep(Duration::from_millis(25));
        assert!(rl.check("alice", &limit).is_ok());
    }
}
