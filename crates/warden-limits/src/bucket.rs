//! Token buckets by key: a bucket holds up to a minute's allowance and refills
//! continuously, so a burst of a minute's worth passes at once and a steady stream
//! passes at the configured rate. The map is sharded (one lock per shard) and bounded.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Buckets one shard keeps; past it, full (idle) buckets are dropped first, then the
/// stalest.
const MAX_PER_SHARD: usize = 8_192;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_minute: u32) {
        let capacity = f64::from(per_minute);
        let earned = now.duration_since(self.last).as_secs_f64() * capacity / 60.0;
        self.tokens = (self.tokens + earned).min(capacity);
        self.last = now;
    }
}

#[derive(Debug)]
pub(crate) struct Buckets<K> {
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &K, per_minute: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= MAX_PER_SHARD {
            evict(&mut buckets, now, per_minute);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(per_minute),
            last: now,
        });
        bucket.refill(now, per_minute);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(
                missing * 60.0 / f64::from(per_minute),
            ))
        }
    }
}

fn evict<K: Hash + Eq + Clone>(buckets: &mut HashMap<K, Bucket>, now: Instant, per_minute: u32) {
    // A bucket idle for a minute is full again: forgetting it changes nothing.
    buckets.retain(|_, bucket| {
        let mut bucket = *bucket;
        bucket.refill(now, per_minute);
        bucket.tokens < f64::from(per_minute)
    });
    while buckets.len() >= MAX_PER_SHARD {
        let Some(stalest) = buckets
            .iter()
            .min_by_key(|(_, b)| b.last)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        buckets.remove(&stalest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_s_worth_passes_then_the_rate_holds() {
        let buckets = Buckets::new();
        for _ in 0..60 {
            assert!(buckets.take(&"k", 60).is_ok());
        }
        let wait = buckets.take(&"k", 60).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(buckets.take(&"other", 60).is_ok());
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(buckets.take(&"k", 60).is_ok());
    }
}
