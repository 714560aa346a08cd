//! The gateway's shared state in Redis: legacy session records (a hash each, expiring
//! when idle, and a sorted set per key by last use, for the per-key share), handles
//! under their hashed names, and the bus (one pub/sub channel per cluster).
//!
//! Pub/sub delivers to whoever listens at the time: a replica that was disconnected
//! misses what was said meanwhile. Nothing on the bus is the only copy of a decision:
//! session records are read from Redis on every request, and a missed answer or resume
//! leaves its call to its deadline.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::broadcast;
use warden_gateway::{BusMessage, ClusterState, SessionRecord, SharedFuture};

use crate::Redis;

/// Messages a replica may fall behind by before it misses some.
const BUS_BACKLOG: usize = 1024;
/// How long a lost subscription waits before it is made again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// Records a session and makes room under its key's share. KEYS: the session, its
/// key's set. ARGV: id, key id, version, client name, capabilities, idle ms, the share,
/// the prefix of session keys. Returns the ids evicted.
const OPEN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idle = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - idle)
local evicted = {}
while redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  if #oldest == 0 then break end
  redis.call('DEL', ARGV[8] .. oldest[1])
  table.insert(evicted, oldest[1])
end
redis.call('HSET', KEYS[1], 'key', ARGV[2], 'version', ARGV[3], 'name', ARGV[4], 'caps', ARGV[5])
redis.call('PEXPIRE', KEYS[1], idle)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], idle)
return evicted
";

/// A session's record, its idle clock restarted unless the idle time is 0. KEYS: the
/// session. ARGV: idle ms, the prefix of key sets, the id. Returns nil when it is gone.
const TOUCH: &str = r"
local record = redis.call('HMGET', KEYS[1], 'key', 'version', 'name', 'caps')
if not record[1] then return false end
if tonumber(ARGV[1]) == 0 then return record end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
local set = ARGV[2] .. record[1]
redis.call('ZADD', set, 'XX', now, ARGV[3])
redis.call('PEXPIRE', set, tonumber(ARGV[1]))
return record
";

/// Ends a session. KEYS: the session. ARGV: the prefix of key sets, the id.
const CLOSE: &str = r"
local key = redis.call('HGET', KEYS[1], 'key')
if not key then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. key, ARGV[2])
return 1
";

pub struct RedisState {
    redis: Arc<Redis>,
    open: redis::Script,
    touch: redis::Script,
    close: redis::Script,
    bus: broadcast::Sender<BusMessage>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// The shared state on `redis`, listening to the bus for as long as it is in use.
    pub fn start(redis: Arc<Redis>) -> Arc<Self> {
        let (bus, _) = broadcast::channel(BUS_BACKLOG);
        let state = Arc::new(Self {
            redis,
            open: redis::Script::new(OPEN),
            touch: redis::Script::new(TOUCH),
            close: redis::Script::new(CLOSE),
            bus,
        });
        tokio::spawn(listen(Arc::downgrade(&state)));
        state
    }

    fn session_key(&self, id: &str) -> String {
        self.redis.key(format_args!("session:{id}"))
    }

    fn sessions_of_key(&self, key_id: &str) -> String {
        self.redis.key(format_args!("sessions:key:{key_id}"))
    }

    fn handle(&self, name: &str) -> String {
        self.redis.key(format_args!("handle:{name}"))
    }

    fn channel(&self) -> String {
        self.redis.key(format_args!("bus"))
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Receives the bus until the state is dropped, subscribing again whenever the
/// subscription is lost.
async fn listen(state: std::sync::Weak<RedisState>) {
    let mut said_lost = false;
    loop {
        let Some((client, channel, bus)) = state
            .upgrade()
            .map(|s| (s.redis.client.clone(), s.channel(), s.bus.clone()))
        else {
            return;
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(Duration::from_secs(5), subscribed).await {
            if said_lost {
                tracing::info!("listening to the cluster's bus again");
                said_lost = false;
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<BusMessage>(&payload) {
                    Ok(message) => {
                        let _ = bus.send(message);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "a cluster message was not understood (replicas of different versions?)");
                    }
                }
            }
        }
        if !said_lost {
            tracing::warn!("the cluster's bus (Redis pub/sub) is lost; subscribing again");
            said_lost = true;
        }
        drop(bus);
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

impl ClusterState for RedisState {
    fn replica_id(&self) -> &str {
        self.redis.replica_id()
    }

    fn open_session<'a>(
        &'a self,
        id: &'a str,
        record: &'a SessionRecord,
        idle: Duration,
        max_per_key: usize,
    ) -> SharedFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut invocation = self.open.prepare_invoke();
            invocation
                .key(self.session_key(id))
                .key(self.sessions_of_key(&record.key_id))
                .arg(id)
                .arg(&record.key_id)
                .arg(&record.version)
                .arg(&record.client_name)
                .arg(&record.capabilities)
                .arg(millis(idle))
                .arg(max_per_key)
                .arg(self.session_key(""));
            self.redis.run(&invocation).await
        })
    }

    fn session<'a>(
        &'a self,
        id: &'a str,
        idle: Option<Duration>,
    ) -> SharedFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let mut invocation = self.touch.prepare_invoke();
            invocation
                .key(self.session_key(id))
                .arg(idle.map_or(0, millis))
                .arg(self.sessions_of_key(""))
                .arg(id);
            let record: Option<Vec<String>> = self.redis.run(&invocation).await?;
            Ok(
                record.and_then(|fields| match <[String; 4]>::try_from(fields) {
                    Ok([key_id, version, client_name, capabilities]) => Some(SessionRecord {
                        key_id,
                        version,
                        client_name,
                        capabilities,
                    }),
                    Err(_) => None,
                }),
            )
        })
    }

    fn close_session<'a>(&'a self, id: &'a str) -> SharedFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.close.prepare_invoke();
            invocation
                .key(self.session_key(id))
                .arg(self.sessions_of_key(""))
                .arg(id);
            let closed: i64 = self.redis.run(&invocation).await?;
            Ok(closed == 1)
        })
    }

    fn put<'a>(&'a self, name: &'a str, value: &'a str, ttl: Duration) -> SharedFuture<'a, ()> {
        Box::pin(async move {
            let mut command = redis::cmd("SET");
            command
                .arg(self.handle(name))
                .arg(value)
                .arg("PX")
                .arg(millis(ttl));
            self.redis.query::<()>(&command).await
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> SharedFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut command = redis::cmd("GET");
            command.arg(self.handle(name));
            self.redis.query(&command).await
        })
    }

    fn take<'a>(&'a self, name: &'a str) -> SharedFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut command = redis::cmd("GETDEL");
            command.arg(self.handle(name));
            self.redis.query(&command).await
        })
    }

    fn present<'a>(&'a self, names: &'a [String]) -> SharedFuture<'a, Vec<bool>> {
        Box::pin(async move {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            let mut command = redis::cmd("MGET");
            for name in names {
                command.arg(self.handle(name));
            }
            let values: Vec<Option<String>> = self.redis.query(&command).await?;
            Ok(values.into_iter().map(|value| value.is_some()).collect())
        })
    }

    fn publish(&self, message: &BusMessage) -> SharedFuture<'_, ()> {
        let payload = serde_json::to_string(message).unwrap_or_default();
        Box::pin(async move {
            let mut command = redis::cmd("PUBLISH");
            command.arg(self.channel()).arg(payload);
            self.redis.query::<i64>(&command).await.map(drop)
        })
    }

    fn messages(&self) -> broadcast::Receiver<BusMessage> {
        self.bus.subscribe()
    }
}
