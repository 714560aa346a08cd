//! `[cluster]`: what several replicas share beyond the store. With `redis`, the rate
//! limits, concurrency slots and the daily cost ledger are counted in Redis, so that a
//! limit means the same whatever the number of replicas.

use std::time::Duration;

use crate::upstream::Secret;

pub(crate) mod raw {
    use serde::Deserialize;

    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Cluster {
        pub redis: Option<String>,
        pub replica_id: Option<String>,
        pub key_prefix: Option<String>,
        pub on_redis_down: Option<String>,
        pub expected_replicas: Option<u32>,
        pub lease_secs: Option<u64>,
        pub redis_timeout_ms: Option<u64>,
    }
}

pub const DEFAULT_KEY_PREFIX: &str = "warden";
pub const DEFAULT_LEASE_SECS: u64 = 30;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 500;

/// What a replica does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisDown {
    /// Refuse calls with 503 (and report not ready): no limit is ever exceeded.
    Refuse,
    /// Count locally, each limit divided by the expected number of replicas, and say so
    /// loudly every minute.
    Local,
}

/// Redis shared by the replicas of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `redis://` or `rediss://` (TLS); may hold a password, so it never prints.
    pub redis: Secret,
    /// This process's name among the replicas; `None`: the host name and a random
    /// suffix, new at every start.
    pub replica_id: Option<String>,
    /// Every key this cluster writes starts with it, so clusters can share one Redis.
    pub key_prefix: String,
    pub on_redis_down: OnRedisDown,
    /// What each limit is divided by when a replica counts on its own (`local`).
    pub expected_replicas: u32,
    /// How long a concurrency slot outlives a replica that stopped renewing it.
    pub lease: Duration,
    /// How long one Redis round trip may take before Redis counts as down.
    pub timeout: Duration,
}

/// Checks `[cluster]`: `Ok(None)` without `redis`; errors name the field.
pub(crate) fn validate(
    raw: raw::Cluster,
    lookup_env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Cluster>, (&'static str, String)> {
    let Some(redis) = raw.redis else {
        let redis_only = [
            ("cluster.replica_id", raw.replica_id.is_some()),
            ("cluster.key_prefix", raw.key_prefix.is_some()),
            ("cluster.on_redis_down", raw.on_redis_down.is_some()),
            ("cluster.expected_replicas", raw.expected_replicas.is_some()),
            ("cluster.lease_secs", raw.lease_secs.is_some()),
            ("cluster.redis_timeout_ms", raw.redis_timeout_ms.is_some()),
        ];
        return match redis_only.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err((field, "needs cluster.redis".into())),
            None => Ok(None),
        };
    };
    let redis = Secret::resolve(redis, lookup_env).map_err(|message| ("cluster.redis", message))?;
    let url = redis.expose();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        // The value itself is not repeated: it may hold a password.
        return Err((
            "cluster.redis",
            "must be a redis://host:port or rediss://host:port URL".into(),
        ));
    }
    let name_ok = crate::is_valid_label;
    let replica_id = match raw.replica_id {
        Some(id) if name_ok(&id) => Some(id),
        Some(_) => {
            return Err((
                "cluster.replica_id",
                "must be 1-64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        None => None,
    };
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if !name_ok(&key_prefix) {
        return Err((
            "cluster.key_prefix",
            "must be 1-64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let on_redis_down = match raw.on_redis_down.as_deref().unwrap_or("refuse") {
        "refuse" => OnRedisDown::Refuse,
        "local" => OnRedisDown::Local,
        other => {
            return Err((
                "cluster.on_redis_down",
                format!("{other:?} is not a choice: \"refuse\" or \"local\""),
            ));
        }
    };
    Ok(Some(Cluster {
        redis,
        replica_id,
        key_prefix,
        on_redis_down,
        expected_replicas: crate::bounded(raw.expected_replicas, 1, 1..=1024)
            .map_err(|m| ("cluster.expected_replicas", m))?,
        lease: Duration::from_secs(
            crate::bounded(raw.lease_secs, DEFAULT_LEASE_SECS, 3..=3600)
                .map_err(|m| ("cluster.lease_secs", m))?,
        ),
        timeout: Duration::from_millis(
            crate::bounded(raw.redis_timeout_ms, DEFAULT_REDIS_TIMEOUT_MS, 10..=60_000)
                .map_err(|m| ("cluster.redis_timeout_ms", m))?,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: raw::Cluster) -> Result<Option<Cluster>, (&'static str, String)> {
        validate(raw, &|name| {
            (name == "REDIS").then(|| "redis://:hunter2@127.0.0.1:6379".to_owned())
        })
    }

    #[test]
    fn redis_is_optional_and_its_fields_need_it() {
        assert_eq!(check(raw::Cluster::default()), Ok(None));
        let stray = raw::Cluster {
            on_redis_down: Some("local".into()),
            ..raw::Cluster::default()
        };
        assert_eq!(check(stray).unwrap_err().0, "cluster.on_redis_down");
    }

    #[test]
    fn defaults_and_refusals() {
        let cluster = check(raw::Cluster {
            redis: Some("env:REDIS".into()),
            ..raw::Cluster::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(cluster.on_redis_down, OnRedisDown::Refuse);
        assert_eq!(cluster.key_prefix, "warden");
        assert_eq!(cluster.expected_replicas, 1);
        assert_eq!(format!("{cluster:?}").matches("hunter2").count(), 0);
        let refused = |raw: raw::Cluster| check(raw).unwrap_err();
        let with = |f: fn(&mut raw::Cluster)| {
            let mut raw = raw::Cluster {
                redis: Some("env:REDIS".into()),
                ..raw::Cluster::default()
            };
            f(&mut raw);
            raw
        };
        assert_eq!(
            refused(with(|r| r.redis = Some("http://:hunter2@x".into()))),
            (
                "cluster.redis",
                "must be a redis://host:port or rediss://host:port URL".into()
            )
        );
        assert_eq!(
            refused(with(|r| r.redis = Some("env:UNSET".into()))).1,
            "environment variable UNSET is not set"
        );
        assert_eq!(
            refused(with(|r| r.on_redis_down = Some("hope".into()))).0,
            "cluster.on_redis_down"
        );
        assert_eq!(
            refused(with(|r| r.key_prefix = Some("a b".into()))).0,
            "cluster.key_prefix"
        );
        assert_eq!(
            refused(with(|r| r.lease_secs = Some(1))).0,
            "cluster.lease_secs"
        );
    }
}
