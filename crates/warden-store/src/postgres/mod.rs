//! PostgreSQL: the store for several replicas (and for operators who already run it).
//!
//! Warden connects as a *runtime* role that owns nothing: it holds only SELECT, INSERT,
//! UPDATE and DELETE on the tables of schema `warden`, cannot run DDL, and sees a tenant
//! table's rows only for the tenant its transaction names (row-level security keyed by
//! `warden.tenant`, set per transaction with `set_config(…, true)`). The schema belongs to
//! an *owner* role that only `warden store migrate` uses.

mod approvals;
pub(crate) mod audit;
mod costs;
mod keys;
mod migrations;
mod notes;
mod pins;
mod url;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use approvals::PgApprovals;
pub use audit::PgAudit;
pub use costs::PgCosts;
pub use keys::PgKeys;
pub use migrations::{Migrated, SCHEMA_VERSION, migrate};
pub use notes::PgNotes;
pub use pins::PgPins;

use crate::{Result, StoreError};
use url::Transport;

/// Where the store is and how Warden talks to it.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://…` of the runtime role (it holds credentials: never logged).
    pub url: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// The longest one statement may run; PostgreSQL cancels it past this.
    pub statement_timeout: Duration,
    /// The longest a connection may take to open, and a caller to wait for a pooled one.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The role `url` connects as.
pub fn role_of(url: &str) -> Result<String> {
    url::parse(url)?
        .0
        .get_user()
        .map(str::to_owned)
        .ok_or_else(|| {
            StoreError::Invalid(
                "the PostgreSQL URL names no user: write postgres://USER@host/database".into(),
            )
        })
}

/// A pool of connections as the runtime role.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// The pool; nothing connects until a connection is first needed.
    pub fn new(settings: &PgSettings) -> Result<Self> {
        let (mut config, transport) = url::parse(&settings.url)?;
        config.connect_timeout(settings.connect_timeout);
        // Every statement runs in schema `warden` and is cancelled past the timeout.
        config.options(format!(
            "-c search_path=warden -c statement_timeout={}",
            settings.statement_timeout.as_millis()
        ));
        config.application_name("warden");
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match transport {
            Transport::Plain => Manager::from_config(config, tokio_postgres::NoTls, recycling),
            Transport::Tls { root_cert } => {
                Manager::from_config(config, url::tls_connector(root_cert.as_deref())?, recycling)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Invalid(format!("the PostgreSQL pool: {e}")))?;
        Ok(Self { pool })
    }

    /// Whether connections to the server are encrypted (the server's own view).
    pub async fn is_encrypted(&self) -> Result<bool> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.is_some_and(|row| row.get(0)))
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(StoreError::from)
    }

    /// Checks that the schema is the one this build speaks (a database migrated by an
    /// older Warden, or not at all, is named, not half used), and that the role is one
    /// row-level security binds: not the schema's owner, a superuser or `BYPASSRLS`.
    pub async fn check_schema(&self) -> Result<()> {
        let client = self.client().await?;
        let unbound: bool = client
            .query_one(
                "SELECT rolsuper OR rolbypassrls
                     OR pg_has_role(current_user, (SELECT nspowner FROM pg_namespace
                                                   WHERE nspname = 'warden'), 'MEMBER')
                 FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await?
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
        if unbound {
            return Err(StoreError::Invalid(
                "the [store] url's role owns the schema, is a superuser or has BYPASSRLS: \
                 row-level security would not bind it; connect as a runtime role that owns nothing"
                    .into(),
            ));
        }
        schema_is_current(&client).await
    }
}

/// Whether the schema is the version this build speaks: named when it is not.
pub(crate) async fn schema_is_current(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<()> {
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => StoreError::Invalid(
                "the database has no Warden schema: run `warden store migrate`".into(),
            ),
            _ => StoreError::from(e),
        })?
        .get(0);
    match version {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(newer) if newer > SCHEMA_VERSION => Err(StoreError::Invalid(format!(
            "the database schema is version {newer}, newer than this Warden ({SCHEMA_VERSION}): upgrade Warden"
        ))),
        found => Err(StoreError::Invalid(format!(
            "the database schema is version {}, this Warden needs {SCHEMA_VERSION}: run `warden store migrate`",
            found.unwrap_or(0)
        ))),
    }
}

impl crate::Health for Postgres {
    fn check(&self) -> crate::StoreFuture<'_, ()> {
        Box::pin(async move {
            self.client().await?.simple_query("SELECT 1").await?;
            Ok(())
        })
    }
}

/// A transaction that sees (and may write) only `tenant`'s rows of the tenant tables.
pub(crate) async fn tenant_transaction<'c>(
    client: &'c mut deadpool_postgres::Client,
    tenant: &str,
) -> Result<deadpool_postgres::Transaction<'c>> {
    let tx = client.transaction().await?;
    // `true`: the setting ends with the transaction, so a pooled connection never
    // carries one tenant's setting into another's work.
    let set = tx
        .prepare_cached("SELECT set_config('warden.tenant', $1, true)")
        .await?;
    tx.execute(&set, &[&tenant]).await?;
    Ok(tx)
}

/// Whether `error` means the server is away (no answer, a closed connection, a server
/// shutting down or starting) rather than a refusal of the statement.
pub(crate) fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            // 08: connection exception; 57P01-57P03: shutdown, crash, cannot connect
            // now; 57014: statement cancelled (the timeout); 53: out of resources.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "57014")
        }
    }
}

/// What went wrong, in the server's words when it answered (tokio-postgres shows only
/// "db error" for those).
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    // The cause (a refused connection, a timeout) says what to fix; neither it nor the
    // error carries the URL.
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Self::Postgres(error),
            other => Self::Unavailable(format!("no PostgreSQL connection: {other}")),
        }
    }
}
