//! `[store]`: where Warden keeps what must survive a restart. SQLite files in the data
//! directory (the default), or PostgreSQL for several replicas.

use std::path::PathBuf;
use std::time::Duration;

use crate::upstream::Secret;

pub(crate) mod raw {
    use serde::Deserialize;

    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub backend: Option<String>,
        pub url: Option<String>,
        pub owner_url: Option<String>,
        pub pool_size: Option<usize>,
        pub statement_timeout_ms: Option<u64>,
        pub connect_timeout_ms: Option<u64>,
        pub server_secret: Option<String>,
        pub replica: Option<String>,
    }
}

pub const DEFAULT_POOL_SIZE: usize = 16;
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum Store {
    /// SQLite files in the data directory.
    #[default]
    Sqlite,
    Postgres(Postgres),
}

/// A PostgreSQL store shared by every replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Postgres {
    /// The runtime role's `postgres://…` (least privilege; see `warden store migrate`).
    pub url: Secret,
    /// The schema owner's, for migrations; without it `warden store migrate` needs
    /// `--as-owner` (the runtime role then owns the schema).
    pub owner_url: Option<Secret>,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    /// The key every replica hashes credentials with; never stored in the database.
    pub server_secret: ServerSecret,
    /// This replica's name: its audit chain, its held calls and its cost totals carry
    /// it. Stable across its restarts, unique among running replicas; `None` takes the
    /// machine's host name.
    pub replica: Option<String>,
}

/// Where the shared server secret comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerSecret {
    /// 64 hex digits, from the environment (resolved at load).
    Value(Secret),
    /// A file holding the 64 hex digits (read at start).
    File(PathBuf),
}

/// Checks `[store]`: errors name the field, `Err((field, message))`.
pub(crate) fn validate(
    raw: raw::Store,
    lookup_env: &impl Fn(&str) -> Option<String>,
) -> Result<Store, (&'static str, String)> {
    let resolve = |field: &'static str, value: String| {
        Secret::resolve(value, lookup_env).map_err(|message| (field, message))
    };
    match raw.backend.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            let postgres_only = [
                ("store.url", raw.url.is_some()),
                ("store.owner_url", raw.owner_url.is_some()),
                ("store.pool_size", raw.pool_size.is_some()),
                (
                    "store.statement_timeout_ms",
                    raw.statement_timeout_ms.is_some(),
                ),
                ("store.connect_timeout_ms", raw.connect_timeout_ms.is_some()),
                ("store.server_secret", raw.server_secret.is_some()),
                ("store.replica", raw.replica.is_some()),
            ];
            match postgres_only.iter().find(|(_, set)| *set) {
                Some((field, _)) => Err((field, "goes with backend = \"postgres\" only".into())),
                None => Ok(Store::Sqlite),
            }
        }
        "postgres" => {
            let url = resolve(
                "store.url",
                raw.url
                    .ok_or(("store.url", "backend = \"postgres\" needs a url".to_owned()))?,
            )?;
            postgres_url("store.url", &url)?;
            let owner_url = raw
                .owner_url
                .map(|value| resolve("store.owner_url", value))
                .transpose()?;
            if let Some(owner) = &owner_url {
                postgres_url("store.owner_url", owner)?;
            }
            let server_secret = match raw.server_secret {
                None => {
                    return Err((
                        "store.server_secret",
                        "backend = \"postgres\" needs the secret every replica hashes keys with: \
                         \"env:NAME\" or \"file:/path\" (64 hex digits; it never goes into the database)"
                            .into(),
                    ));
                }
                Some(value) => match value.strip_prefix("file:") {
                    Some(path) => ServerSecret::File(PathBuf::from(path)),
                    None if value.starts_with("env:") => {
                        let secret = resolve("store.server_secret", value)?;
                        let hex = secret.expose().trim();
                        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return Err((
                                "store.server_secret",
                                "the variable must hold 64 hex digits (32 bytes)".into(),
                            ));
                        }
                        ServerSecret::Value(secret)
                    }
                    None => {
                        return Err((
                            "store.server_secret",
                            "must be \"env:NAME\" or \"file:/path\": a secret is not written into the configuration".into(),
                        ));
                    }
                },
            };
            Ok(Store::Postgres(Postgres {
                url,
                owner_url,
                pool_size: crate::bounded(raw.pool_size, DEFAULT_POOL_SIZE, 1..=1024)
                    .map_err(|m| ("store.pool_size", m))?,
                statement_timeout: Duration::from_millis(
                    crate::bounded(
                        raw.statement_timeout_ms,
                        DEFAULT_STATEMENT_TIMEOUT_MS,
                        100..=600_000,
                    )
                    .map_err(|m| ("store.statement_timeout_ms", m))?,
                ),
                connect_timeout: Duration::from_millis(
                    crate::bounded(
                        raw.connect_timeout_ms,
                        DEFAULT_CONNECT_TIMEOUT_MS,
                        100..=120_000,
                    )
                    .map_err(|m| ("store.connect_timeout_ms", m))?,
                ),
                server_secret,
                replica: match raw.replica {
                    Some(name) if is_replica_name(&name) => Some(name),
                    Some(_) => {
                        return Err((
                            "store.replica",
                            "must be 1-64 letters, digits, '-', '_' or '.'".into(),
                        ));
                    }
                    None => None,
                },
            }))
        }
        other => Err((
            "store.backend",
            format!("{other:?} is not a backend: \"sqlite\" or \"postgres\""),
        )),
    }
}

/// This machine's host name, when it is a name a replica may take (the default of
/// `[store] replica`, and the start of `[cluster] replica_id`'s).
pub fn host_replica_name() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim();
    is_replica_name(host).then(|| host.to_owned())
}

/// A name a replica may take (also used where the host name is its default).
pub fn is_replica_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A URL the PostgreSQL driver takes; the message never repeats it (it may hold a
/// password).
fn postgres_url(field: &'static str, url: &Secret) -> Result<(), (&'static str, String)> {
    let text = url.expose();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(())
    } else {
        Err((
            field,
            "must be a postgres://user@host:port/database URL".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(text: &str) -> Result<Store, (&'static str, String)> {
        let raw: raw::Store = toml::from_str(text).unwrap();
        validate(raw, &|name| match name {
            "PG" => Some("postgres://warden@db:5432/warden".into()),
            "SECRET" => Some("ab".repeat(32)),
            "SHORT" => Some("abcd".into()),
            _ => None,
        })
    }

    #[test]
    fn sqlite_by_default_and_postgres_needs_a_url_and_a_shared_secret() {
        assert_eq!(store("").unwrap(), Store::Sqlite);
        assert_eq!(store("url = \"env:PG\"").unwrap_err().0, "store.url");
        let Store::Postgres(pg) =
            store("backend = \"postgres\"\nurl = \"env:PG\"\nserver_secret = \"env:SECRET\"")
                .unwrap()
        else {
            panic!("postgres")
        };
        assert_eq!(pg.pool_size, DEFAULT_POOL_SIZE);
        assert!(!format!("{pg:?}").contains("warden@db"), "urls never print");
        for (text, field) in [
            (
                "backend = \"postgres\"\nserver_secret = \"env:SECRET\"",
                "store.url",
            ),
            (
                "backend = \"postgres\"\nurl = \"env:PG\"",
                "store.server_secret",
            ),
            (
                "backend = \"postgres\"\nurl = \"env:PG\"\nserver_secret = \"00ff\"",
                "store.server_secret",
            ),
            (
                "backend = \"postgres\"\nurl = \"env:PG\"\nserver_secret = \"env:SHORT\"",
                "store.server_secret",
            ),
            (
                "backend = \"postgres\"\nurl = \"mysql://x\"\nserver_secret = \"env:SECRET\"",
                "store.url",
            ),
            (
                "backend = \"postgres\"\nurl = \"env:PG\"\nserver_secret = \"env:SECRET\"\npool_size = 0",
                "store.pool_size",
            ),
            ("backend = \"oracle\"", "store.backend"),
        ] {
            assert_eq!(store(text).unwrap_err().0, field, "{text}");
        }
        let Store::Postgres(pg) = store(
            "backend = \"postgres\"\nurl = \"env:PG\"\nserver_secret = \"file:/etc/warden/secret\"",
        )
        .unwrap() else {
            panic!("postgres")
        };
        assert_eq!(
            pg.server_secret,
            ServerSecret::File("/etc/warden/secret".into())
        );
    }
}
