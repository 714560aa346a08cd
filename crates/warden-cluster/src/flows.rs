//! The sessions' flow states in Redis, so that the replica serving a session's next call
//! knows what its last call met on another. A hash per session (or modern client
//! instance) holds the two flags, the call count and the tools used (each with its
//! rank, so that their order survives); a sorted set per tenant, by last use, keeps the
//! tenant within its share. Both expire with the session idle time.
//!
//! Reading is one `HGETALL`, recording one script: a call costs two round trips more.

use std::sync::Arc;
use std::time::Duration;

use warden_config::Returns;
use warden_gateway::{FlowStore, SessionFacts, SharedFuture};

use crate::Redis;

/// Records what reached a session and makes room in its tenant's share. KEYS: the
/// session's hash, the tenant's set. ARGV: the instance, untrusted (0/1), private
/// (0/1), the tool ("" when none), idle ms, the share, the prefix of the tenant's
/// hashes, the tools remembered at most. Returns nothing.
const RECORD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idle = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - idle)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  while redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) do
    local oldest = redis.call('ZPOPMIN', KEYS[2])
    if #oldest == 0 then break end
    redis.call('DEL', ARGV[7] .. oldest[1])
  end
end
redis.call('HSETNX', KEYS[1], 'calls', 0)
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'untrusted', 1) end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'private', 1) end
if ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'calls', 1)
  local field = 'tool:' .. ARGV[4]
  local known = tonumber(redis.call('HGET', KEYS[1], 'tools') or '0')
  if redis.call('HEXISTS', KEYS[1], field) == 0 and known < tonumber(ARGV[8]) then
    redis.call('HSET', KEYS[1], field, known, 'tools', known + 1)
  end
end
redis.call('PEXPIRE', KEYS[1], idle)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], idle)
return 0
";

/// Flow states shared by the replicas.
pub struct RedisFlows {
    redis: Arc<Redis>,
    record: redis::Script,
    idle: Duration,
    per_tenant: usize,
}

impl std::fmt::Debug for RedisFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFlows")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisFlows {
    /// Flow states on `redis`, each kept for `sessions.idle_timeout`, at most
    /// `sessions.max_sessions` per tenant.
    pub fn new(redis: Arc<Redis>, sessions: &warden_config::Sessions) -> Arc<Self> {
        Arc::new(Self {
            redis,
            record: redis::Script::new(RECORD),
            idle: sessions.idle_timeout,
            per_tenant: sessions.max_sessions,
        })
    }

    /// The hashes of `tenant` start with this. The tenant's length comes first, so
    /// that no tenant and instance pair reads as another (`a:b` + `c`, `a` + `b:c`).
    fn flows_of(&self, tenant: &str) -> String {
        self.redis
            .key(format_args!("flow:{}:{tenant}:", tenant.len()))
    }

    fn tenant_set(&self, tenant: &str) -> String {
        self.redis
            .key(format_args!("flows:{}:{tenant}", tenant.len()))
    }
}

/// A session's facts from its hash's fields (none: it met nothing, or is gone).
fn facts_of(fields: Vec<(String, String)>) -> SessionFacts {
    let mut facts = SessionFacts::default();
    let mut tools: Vec<(u64, String)> = Vec::new();
    for (field, value) in fields {
        match field.as_str() {
            "untrusted" => facts.untrusted_seen = value == "1",
            "private" => facts.private_read = value == "1",
            "calls" => facts.calls = value.parse().unwrap_or(0),
            _ => {
                if let Some(tool) = field.strip_prefix("tool:") {
                    tools.push((value.parse().unwrap_or(u64::MAX), tool.to_owned()));
                }
            }
        }
    }
    tools.sort();
    facts.tools_used = tools.into_iter().map(|(_, tool)| tool).collect();
    facts
}

impl FlowStore for RedisFlows {
    fn facts<'a>(&'a self, tenant: &'a str, instance: &'a str) -> SharedFuture<'a, SessionFacts> {
        Box::pin(async move {
            let mut command = redis::cmd("HGETALL");
            command.arg(format!("{}{instance}", self.flows_of(tenant)));
            let fields: Vec<(String, String)> = self.redis.query(&command).await?;
            Ok(facts_of(fields))
        })
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        instance: &'a str,
        tool: Option<&'a str>,
        returns: Returns,
    ) -> SharedFuture<'a, ()> {
        Box::pin(async move {
            let prefix = self.flows_of(tenant);
            let mut invocation = self.record.prepare_invoke();
            invocation
                .key(format!("{prefix}{instance}"))
                .key(self.tenant_set(tenant))
                .arg(instance)
                .arg(u8::from(returns.untrusted))
                .arg(u8::from(returns.private))
                .arg(tool.unwrap_or_default())
                .arg(crate::state::millis(self.idle))
                .arg(self.per_tenant)
                .arg(prefix)
                .arg(warden_gateway::TOOLS_REMEMBERED);
            let _: i64 = self.redis.run(&invocation).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_read_back_in_the_order_the_tools_were_first_used() {
        let fields = [
            ("calls", "3"),
            ("untrusted", "1"),
            ("tool:search_notes", "1"),
            ("tools", "2"),
            ("tool:get_note", "0"),
        ]
        .map(|(field, value)| (field.to_owned(), value.to_owned()));
        let facts = facts_of(fields.to_vec());
        assert!(facts.untrusted_seen && !facts.private_read);
        assert_eq!(facts.calls, 3);
        assert_eq!(facts.tools_used, ["get_note", "search_notes"]);
        assert_eq!(facts_of(Vec::new()), SessionFacts::default());
    }
}
