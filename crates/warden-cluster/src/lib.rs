//! What Warden's replicas share beyond the store, kept in Redis (`[cluster] redis`):
//! the rate limits, the concurrency slots and the daily cost ledger
//! ([`RedisCounters`], behind `warden-limits`' `SharedCounters`).
//!
//! Every key this cluster writes starts with `[cluster] key_prefix`, so that several
//! clusters can share one Redis. Each step a request takes is one atomic Lua script
//! (one round trip), timed by Redis's own clock so that replicas need no synchronised
//! clocks. A script touches keys of one request and the cluster's total, so a Redis
//! Cluster (sharded) deployment is not supported: use one primary (with replicas or
//! Sentinel for failover).
//!
//! Redis is a dependency, never a silent single point of failure: a round trip that
//! fails or outlives `redis_timeout_ms` is [`Unreachable`], and `warden-limits` then
//! refuses or counts locally as the operator chose. The connection is made again in
//! the background; nothing needs a restart.

mod counters;
mod flows;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;
use warden_limits::Unreachable;

pub use counters::RedisCounters;
pub use flows::RedisFlows;
pub use state::RedisState;

/// How often a replica without a connection tries to make one (calls in between are
/// answered at once as unreachable, not held up by a connect attempt each).
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// A configuration Warden cannot use for Redis; the message never repeats the URL.
#[derive(Debug, thiserror::Error)]
#[error("[cluster] redis: {0}")]
pub struct ClusterError(String);

/// One replica's handle on the cluster's Redis.
pub struct Redis {
    client: redis::Client,
    config: ConnectionManagerConfig,
    connection: Mutex<Link>,
    timeout: Duration,
    /// Every key starts with `<prefix>:`.
    prefix: String,
    replica_id: String,
    round_trips: AtomicU64,
}

/// The connection, or when it was last tried.
enum Link {
    Up(ConnectionManager),
    Down { tried: Option<Instant> },
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Reads the configuration; the first connection is made on first use, so a
    /// replica starts (and reports itself not ready) while Redis is away.
    pub fn new(cluster: &warden_config::Cluster) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(cluster.redis.expose()).map_err(|error| {
            // The driver's message may quote the URL; only its kind is shown.
            ClusterError(format!("not a usable Redis URL ({:?})", error.kind()))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cluster.timeout))
            .set_response_timeout(Some(cluster.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let replica_id = cluster
            .replica_id
            .clone()
            .unwrap_or_else(default_replica_id);
        Ok(Arc::new(Self {
            client,
            config,
            connection: Mutex::new(Link::Down { tried: None }),
            timeout: cluster.timeout,
            prefix: cluster.key_prefix.clone(),
            replica_id,
            round_trips: AtomicU64::new(0),
        }))
    }

    /// This replica's name in the cluster.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Round trips to Redis so far (for the benchmark and metrics).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// `<prefix>:<rest>`.
    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// A connection, made now if there is none and the last try is long enough ago.
    async fn connection(&self) -> Result<ConnectionManager, Unreachable> {
        let mut link = self.connection.lock().await;
        match &*link {
            Link::Up(connection) => return Ok(connection.clone()),
            Link::Down { tried: Some(at) } if at.elapsed() < RECONNECT_INTERVAL => {
                return Err(Unreachable);
            }
            Link::Down { .. } => {}
        }
        let made = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone()),
        )
        .await;
        match made {
            Ok(Ok(connection)) => {
                *link = Link::Up(connection.clone());
                Ok(connection)
            }
            Ok(Err(error)) => {
                tracing::debug!(kind = ?error.kind(), "no connection to Redis");
                *link = Link::Down {
                    tried: Some(Instant::now()),
                };
                Err(Unreachable)
            }
            Err(_) => {
                *link = Link::Down {
                    tried: Some(Instant::now()),
                };
                Err(Unreachable)
            }
        }
    }

    /// Runs `script` once, within the timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unreachable> {
        let mut connection = self.connection().await?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                // The manager reconnects by itself; a script error (a bug, or a Redis
                // that refuses scripts) is said in the log.
                if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
                    tracing::debug!(kind = ?error.kind(), "Redis round trip failed");
                } else {
                    tracing::error!(kind = ?error.kind(), detail = error.detail().unwrap_or(""), "Redis refused a script");
                }
                Err(Unreachable)
            }
            Err(_) => Err(Unreachable),
        }
    }

    /// Runs one command, within the timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, Unreachable> {
        let mut connection = self.connection().await?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, command.query_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                tracing::debug!(kind = ?error.kind(), "Redis command failed");
                Err(Unreachable)
            }
            Err(_) => Err(Unreachable),
        }
    }

    async fn ping(&self) -> Result<(), Unreachable> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }
}

/// The host name and 48 random bits: unique per process, readable in Redis.
fn default_replica_id() -> String {
    let host = warden_config::host_replica_name()
        .filter(|name| name.len() <= 48)
        .unwrap_or_else(|| "warden".to_owned());
    format!("{host}-{:012x}", rand::random::<u64>() >> 16)
}
