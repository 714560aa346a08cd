//! Where an installation keeps its state, opened by the `[store]` of its configuration:
//! SQLite files in the data directory, or PostgreSQL shared by every replica. `serve`
//! waits for PostgreSQL at start; the admin commands try once and say why they could
//! not.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use warden_config::{PostgresStore, ServerSecret, Store};
use warden_store::postgres::{PgSettings, Postgres};
use warden_store::{AuditRecord, DataDir, Stores};

use crate::{Failure, Place};

/// The longest wait between two attempts to reach PostgreSQL at start.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The stores an admin command works on, and the runtime that drives them.
pub(crate) struct Installation {
    pub stores: Stores,
    runtime: tokio::runtime::Runtime,
}

impl Installation {
    /// The stores `place` names: its configuration's `[store]` (PostgreSQL), else the
    /// data directory's files.
    pub fn open(place: Place) -> Result<Self, Failure> {
        // `--data-dir` names the files themselves; otherwise the configuration file,
        // read once, says where the state is.
        let locations = match (&place.data_dir, &place.config) {
            (None, Some(config)) => Some(warden_config::locations_in(config)?),
            _ => None,
        };
        let store = match &locations {
            Some(locations) => locations.store()?,
            None => Store::Sqlite,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stores = match &store {
            Store::Sqlite => {
                let path = match (place.data_dir, locations) {
                    (Some(dir), _) => dir,
                    (None, Some(locations)) => locations.data_dir,
                    (None, None) => PathBuf::from(warden_config::DEFAULT_DATA_DIR),
                };
                Stores::sqlite(&data_dir(path, place.init)?)?
            }
            Store::Postgres(pg) => runtime.block_on(async {
                let db = Postgres::new(&settings(pg))?;
                db.check_schema().await?;
                Ok::<_, Failure>(Stores::postgres(&db, server_secret(pg)?, &replica(pg)?))
            })?,
        };
        Ok(Self { stores, runtime })
    }

    /// Runs a store call to completion.
    pub fn run<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// Records an operator's action in the audit trail, chained like every record (a
    /// running Warden may be appending at the same moment; the store takes turns).
    pub fn audit_action(
        &self,
        method: &str,
        tenant: &str,
        target: &str,
        outcome: &str,
    ) -> Result<(), Failure> {
        let record = operator_action(method, tenant, target, outcome);
        self.run(self.stores.audit.append(std::slice::from_ref(&record)))?;
        Ok(())
    }
}

/// The data directory at `path`. One that does not exist is created only with `init`:
/// otherwise the command would work on a fresh store the running Warden never reads.
fn data_dir(path: PathBuf, init: bool) -> Result<DataDir, Failure> {
    if !path.exists() && !init {
        return Err(format!(
            "there is no Warden data directory at {}: name the one your Warden uses with --config FILE (or WARDEN_CONFIG) or --data-dir DIR (or WARDEN_DATA_DIR), or pass --init to create a new one there",
            path.display()
        )
        .into());
    }
    Ok(DataDir::open(path)?)
}

/// An operator's action as an audit record: who (the operating-system user), what, to
/// what (redacted).
pub(crate) fn operator_action(
    method: &str,
    tenant: &str,
    target: &str,
    outcome: &str,
) -> AuditRecord {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let actor = format!("operator:{}", warden_redact::text(&user));
    AuditRecord::action(
        &actor,
        method,
        tenant,
        &warden_redact::text(target),
        outcome,
    )
}

/// The stores `warden serve` runs on, with the key of the arguments hash. PostgreSQL
/// is waited for (with backoff, a line per attempt) until it answers or `stop` turns
/// true; with an `owner_url` the schema is brought up to date first, under the
/// migration lock (replicas starting together take turns).
pub(crate) async fn open_for_serving(
    store: &Store,
    dir: &DataDir,
    args_secret_file: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Stores, [u8; 32]), Failure> {
    let pg = match store {
        Store::Sqlite => return Ok((Stores::sqlite(dir)?, dir.secret(args_secret_file)?)),
        Store::Postgres(pg) => pg,
    };
    let secret = server_secret(pg)?;
    let replica = replica(pg)?;
    let db = Postgres::new(&settings(pg))?;
    let mut wait = Duration::from_millis(500);
    loop {
        let attempt = async {
            if let Some(owner) = &pg.owner_url {
                let runtime_role = warden_store::postgres::role_of(pg.url.expose())?;
                warden_store::postgres::migrate(
                    owner.expose(),
                    Some(&runtime_role),
                    pg.connect_timeout,
                )
                .await?;
            }
            db.check_schema().await
        };
        match attempt.await {
            Ok(()) => break,
            Err(error) if error.is_unavailable() => {
                tracing::warn!(%error, "PostgreSQL does not answer; trying again in {} ms (/readyz answers 503 meanwhile)", wait.as_millis());
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return Err("stopped while waiting for PostgreSQL".into()),
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
    let encrypted = db.is_encrypted().await.unwrap_or(false);
    tracing::info!(%replica, tls = encrypted, "state in PostgreSQL");
    // Every replica hashes arguments alike, so that one call's hash matches across them.
    let args_key = warden_store::derive_key(&secret, b"warden audit arguments");
    Ok((Stores::postgres(&db, secret, &replica), args_key))
}

/// What `warden config check` can tell of `[store]` without connecting: the server
/// secret is readable and this replica has a name.
pub(crate) fn check(store: &Store) -> Result<(), Failure> {
    if let Store::Postgres(pg) = store {
        server_secret(pg)?;
        replica(pg)?;
    }
    Ok(())
}

fn settings(pg: &PostgresStore) -> PgSettings {
    PgSettings {
        url: pg.url.expose().to_owned(),
        pool_size: pg.pool_size,
        statement_timeout: pg.statement_timeout,
        connect_timeout: pg.connect_timeout,
    }
}

/// The secret every replica hashes keys with: 64 hex digits from the environment or a
/// file (never from the database).
fn server_secret(pg: &PostgresStore) -> Result<[u8; 32], Failure> {
    let text = match &pg.server_secret {
        ServerSecret::Value(secret) => secret.expose().as_bytes().to_vec(),
        ServerSecret::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                format!("[store] server_secret: cannot read {}: {e}", path.display())
            })?;
            // A file of 32 bytes is a data directory's own server.secret, taken as it
            // is, so that the keys of an installation copied over match.
            if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(raw);
            }
            bytes
        }
    };
    std::str::from_utf8(&text)
        .ok()
        .and_then(warden_store::secret_from_hex)
        .ok_or_else(|| {
            "[store] server_secret must hold 64 hex digits (or be a data directory's 32-byte server.secret)".into()
        })
}

/// This replica's name: `[store] replica`, else the host name.
fn replica(pg: &PostgresStore) -> Result<String, Failure> {
    match &pg.replica {
        Some(name) => Ok(name.clone()),
        None => host_replica_name(),
    }
}

/// The machine's host name, as the name of the replica that runs here.
pub(crate) fn host_replica_name() -> Result<String, Failure> {
    warden_config::host_replica_name().ok_or_else(|| {
        "[store] replica: the host name cannot name this replica; set replica = \"NAME\" (1-64 letters, digits, '-', '_' or '.')".into()
    })
}
