//! The limits in Redis: token buckets (a minute's allowance, refilled continuously, as
//! the local ones), leased concurrency slots (a sorted set per key and one in all,
//! scored by when each lease expires), per-session call counts and the daily cost
//! ledger (a hash per day, tenant to cost spent).
//!
//! A replica renews its leases while their calls run; one that dies stops renewing,
//! and its slots free themselves within `[cluster] lease_secs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use warden_limits::{
    Admission, Admitted, Bucket, Layer, Lease, SharedCounters, SharedFuture, Taken, Unreachable,
};

use crate::Redis;

/// How long an idle bucket is kept: after a minute it is full again, so forgetting it
/// changes nothing.
const BUCKET_TTL_MS: u64 = 60_000;
/// A session's call count outlives its last call by this.
const SESSION_COUNT_TTL_SECS: u64 = 86_400;
/// A day's ledger is kept into the next day (for replicas whose clocks are behind).
const LEDGER_TTL_SECS: u64 = 2 * 86_400;
/// Leases renewed in one round trip.
const RENEW_BATCH: usize = 512;

/// Takes one token. KEYS: bucket. ARGV: per minute. Returns 0 (taken) or the wait in
/// milliseconds.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local held = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(held[1]) or cap
local last = tonumber(held[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - last) * cap / 60000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) * 60000 / cap))
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return wait
";

/// Admits a call, all or nothing. KEYS: session count, tool bucket, key slots, all
/// slots, day ledger. ARGV: max session calls, tool rpm (0: none), max per key, max in
/// all, lease ms, lease id, tenant, cost, cap, and the TTLs. Returns {0} admitted,
/// {1, layer, wait ms} limited (1 session, 2 tool, 3 cost), {2} every slot taken.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local calls = tonumber(redis.call('GET', KEYS[1]) or '0')
if calls >= tonumber(ARGV[1]) then return {1, 1, 60000} end
local rpm = tonumber(ARGV[2])
local tokens = 0
if rpm > 0 then
  local held = redis.call('HMGET', KEYS[2], 't', 'ts')
  tokens = tonumber(held[1]) or rpm
  local last = tonumber(held[2]) or now
  tokens = math.min(rpm, tokens + math.max(0, now - last) * rpm / 60000)
  if tokens < 1 then
    return {1, 2, math.max(1, math.ceil((1 - tokens) * 60000 / rpm))}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then return {2, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then return {2, 1} end
local cost = tonumber(ARGV[8])
local spent = tonumber(redis.call('HGET', KEYS[5], ARGV[7]) or '0')
if spent + cost > tonumber(ARGV[9]) then return {1, 3, 0} end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[10]))
if rpm > 0 then
  redis.call('HSET', KEYS[2], 't', tostring(tokens - 1), 'ts', now)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[12]))
end
local lease = tonumber(ARGV[5])
redis.call('ZADD', KEYS[3], now + lease, ARGV[6])
redis.call('PEXPIRE', KEYS[3], lease * 2)
redis.call('ZADD', KEYS[4], now + lease, ARGV[6])
redis.call('PEXPIRE', KEYS[4], lease * 2)
if cost > 0 then
  redis.call('HINCRBY', KEYS[5], ARGV[7], cost)
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[11]))
end
return {0}
";

/// Gives a call's slots back, and its cost when refunded. KEYS: key slots, all slots,
/// day ledger. ARGV: lease id, tenant, refund.
const RELEASE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local refund = tonumber(ARGV[3])
if refund > 0 then
  local spent = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
  if spent > 0 then
    redis.call('HSET', KEYS[3], ARGV[2], math.max(0, spent - refund))
  end
end
return 0
";

/// Extends leases still held. KEYS: all slots, then each lease's key slots. ARGV: lease
/// ms, then each lease id. A lease already gone (expired) is not brought back.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], lease * 2)
  redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return 0
";

pub struct RedisCounters {
    redis: Arc<Redis>,
    lease: Duration,
    take: redis::Script,
    admit: redis::Script,
    release: redis::Script,
    renew: redis::Script,
    next_lease: AtomicU64,
    /// Leases this replica holds: lease id to its key's slot set.
    held: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    fn new(redis: Arc<Redis>, lease: Duration) -> Self {
        Self {
            redis,
            lease,
            take: redis::Script::new(TAKE),
            admit: redis::Script::new(ADMIT),
            release: redis::Script::new(RELEASE),
            renew: redis::Script::new(RENEW),
            next_lease: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slots_of(&self, key_id: &str) -> String {
        self.redis.key(format_args!("slots:key:{key_id}"))
    }

    fn all_slots(&self) -> String {
        self.redis.key(format_args!("slots:all"))
    }

    fn ledger(&self, day: i64) -> String {
        self.redis.key(format_args!("cost:{day}"))
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    async fn admit_in(&self, admission: Admission<'_>) -> Result<Admitted, Unreachable> {
        let lease_id = format!(
            "{}:{}",
            self.redis.replica_id(),
            self.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let key_slots = self.slots_of(admission.key_id);
        let (tool, rpm) = admission.tool_rate.unwrap_or(("", 0));
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(
                self.redis
                    .key(format_args!("calls:session:{}", admission.session)),
            )
            .key(
                self.redis
                    .key(format_args!("rate:tool:{}:{tool}", admission.key_id)),
            )
            .key(&key_slots)
            .key(self.all_slots())
            .key(self.ledger(admission.day))
            .arg(admission.max_session_calls)
            .arg(rpm)
            .arg(admission.max_per_key)
            .arg(admission.max_total)
            .arg(self.lease_ms())
            .arg(&lease_id)
            .arg(admission.tenant)
            .arg(admission.cost)
            .arg(admission.cap)
            .arg(SESSION_COUNT_TTL_SECS)
            .arg(LEDGER_TTL_SECS)
            .arg(BUCKET_TTL_MS);
        let answer: Vec<i64> = self.redis.run(&invocation).await?;
        Ok(match answer[..] {
            [0] => {
                self.held().insert(lease_id.clone(), key_slots);
                Admitted::Yes(Lease {
                    id: lease_id,
                    key_id: admission.key_id.to_owned(),
                    tenant: admission.tenant.to_owned(),
                    cost: admission.cost,
                    day: admission.day,
                })
            }
            [1, layer, wait] => {
                let layer = match layer {
                    1 => Layer::PerSession,
                    2 => Layer::PerTool,
                    _ => Layer::DailyCost,
                };
                let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
                Admitted::Limited(layer, wait)
            }
            [2, 0] => Admitted::Busy(Taken::Key),
            [2, 1] => Admitted::Busy(Taken::All),
            _ => {
                tracing::error!(?answer, "the admission script answered something unknown");
                return Err(Unreachable);
            }
        })
    }

    /// Extends every lease this replica holds, a third of the lease time apart, for as
    /// long as the counters are in use.
    async fn renew_while_used(counters: std::sync::Weak<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Some(this) = counters.upgrade() else {
                return;
            };
            this.renew_held().await;
        }
    }

    async fn renew_held(&self) {
        let held: Vec<(String, String)> = self
            .held()
            .iter()
            .map(|(id, slots)| (id.clone(), slots.clone()))
            .collect();
        for batch in held.chunks(RENEW_BATCH) {
            let mut invocation = self.renew.prepare_invoke();
            invocation.key(self.all_slots()).arg(self.lease_ms());
            for (id, slots) in batch {
                invocation.key(slots).arg(id);
            }
            if self.redis.run::<i64>(&invocation).await.is_err() {
                tracing::warn!(
                    leases = batch.len(),
                    "leases not renewed in Redis; calls running past their lease may let others exceed the concurrency limit"
                );
            }
        }
    }

    /// The counters of `redis`, renewing their leases while they are in use.
    pub fn start(redis: Arc<Redis>, lease: Duration) -> Arc<Self> {
        let counters = Arc::new(Self::new(redis, lease));
        tokio::spawn(Self::renew_while_used(Arc::downgrade(&counters), lease / 3));
        counters
    }
}

impl SharedCounters for RedisCounters {
    fn take<'a>(
        &'a self,
        bucket: Bucket<'a>,
        per_minute: u32,
    ) -> SharedFuture<'a, Option<Duration>> {
        Box::pin(async move {
            let key = match bucket {
                Bucket::Address(address) => self.redis.key(format_args!("rate:ip:{address}")),
                Bucket::Key(key_id) => self.redis.key(format_args!("rate:key:{key_id}")),
            };
            let mut invocation = self.take.prepare_invoke();
            invocation.key(key).arg(per_minute).arg(BUCKET_TTL_MS);
            let wait: u64 = self.redis.run(&invocation).await?;
            Ok((wait > 0).then(|| Duration::from_millis(wait)))
        })
    }

    fn admit<'a>(&'a self, admission: Admission<'a>) -> SharedFuture<'a, Admitted> {
        Box::pin(self.admit_in(admission))
    }

    fn release(&self, lease: Lease, refund: bool) {
        self.held().remove(&lease.id);
        let keys = [
            self.slots_of(&lease.key_id),
            self.all_slots(),
            self.ledger(lease.day),
        ];
        let (redis, script) = (self.redis.clone(), self.release.clone());
        tokio::spawn(async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation
                .arg(&lease.id)
                .arg(&lease.tenant)
                .arg(if refund { lease.cost } else { 0 });
            if redis.run::<i64>(&invocation).await.is_err() {
                // The slot frees itself when its lease runs out.
                tracing::debug!("a slot was not given back to Redis; its lease will expire");
            }
        });
    }

    fn ping(&self) -> SharedFuture<'_, ()> {
        Box::pin(self.redis.ping())
    }

    fn round_trips(&self) -> u64 {
        self.redis.round_trips()
    }
}
