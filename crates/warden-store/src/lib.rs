//! Warden's durable state. By default in SQLite files inside the data directory:
//! `keys.db` (API keys, stored as keyed hashes), `notes.db` (the embedded knowledge
//! base), `costs.db` (daily spending per tenant) and `audit.db` (the chained audit
//! trail); for several replicas in PostgreSQL (`postgres`), where row-level security
//! confines every tenant table to the tenant a transaction names. Every note query
//! filters by tenant; there is no API that reads across tenants.

pub mod approvals;
pub mod audit;
pub mod copy;
pub mod costs;
mod db;
pub mod keys;
pub mod notes;
pub mod pins;
pub mod postgres;

use std::path::{Path, PathBuf};

pub use approvals::{Approval, ApprovalStore, Approvals, SqliteApprovals};
pub use audit::{Audit, AuditFilter, AuditRecord, AuditStore, SqliteAudit, Verdict};
pub use costs::{CostStore, Costs, SqliteCosts};
pub use keys::{
    KEY_PREFIX, KeyOptions, KeyRecord, KeyStore, Keys, NewKey, Principal, Scope, SqliteKeys,
};
pub use notes::{Note, NoteSummary, Notes, NotesStore, SearchHit, SqliteNotes};
pub use pins::{Pin, PinState, PinStore, Pins, Sighting, SqlitePins};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The database cannot be reached now (a 503 to clients, not a 500).
    #[error("{0}")]
    Unavailable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A page cursor this server did not issue (or another backend did).
    #[error("the cursor is not one this server issued")]
    Cursor,
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the database could not be reached or stopped answering (a retry may
    /// succeed), rather than refusing the work itself.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Postgres(error) => postgres::is_unavailable(error),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs `work` on `store` on a blocking thread: how the SQLite stores (synchronous
/// underneath) answer the async storage traits. `what` names the store if the worker
/// dies.
pub(crate) fn on_blocking_thread<'a, S, T>(
    store: &std::sync::Arc<S>,
    what: &'static str,
    work: impl FnOnce(&S) -> Result<T> + Send + 'static,
) -> StoreFuture<'a, T>
where
    S: Send + Sync + 'static,
    T: Send + 'static,
{
    let store = store.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| StoreError::Unavailable(format!("the {what} store's worker stopped")))?
    })
}

/// What a store call returns to async callers (the storage traits are object-safe, so
/// that callers hold `Arc<dyn …>` and never name a backend).
pub type StoreFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Whether the database answers now (for `/readyz`).
pub trait Health: std::fmt::Debug + Send + Sync {
    fn check(&self) -> StoreFuture<'_, ()>;
}

/// Files in the data directory are there while the process runs.
impl Health for DataDir {
    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Every store of one installation, each behind its trait: what `warden serve` and the
/// admin commands work with, whichever backend holds it.
#[derive(Debug, Clone)]
pub struct Stores {
    pub keys: std::sync::Arc<dyn Keys>,
    pub notes: std::sync::Arc<dyn Notes>,
    pub audit: std::sync::Arc<dyn Audit>,
    pub approvals: std::sync::Arc<dyn Approvals>,
    pub pins: std::sync::Arc<dyn Pins>,
    pub costs: std::sync::Arc<dyn Costs>,
    pub health: std::sync::Arc<dyn Health>,
}

impl Stores {
    /// The SQLite files of `dir` (each created and migrated on first use).
    pub fn sqlite(dir: &DataDir) -> Result<Self> {
        use std::sync::Arc;
        Ok(Self {
            keys: Arc::new(SqliteKeys::new(Arc::new(KeyStore::open(dir)?))),
            notes: Arc::new(SqliteNotes::new(Arc::new(NotesStore::open(dir)?))),
            audit: Arc::new(SqliteAudit::new(Arc::new(AuditStore::open(dir)?))),
            approvals: Arc::new(SqliteApprovals::new(Arc::new(ApprovalStore::open(dir)?))),
            pins: Arc::new(SqlitePins::new(Arc::new(PinStore::open(dir)?))),
            costs: Arc::new(SqliteCosts::new(Arc::new(CostStore::open(dir)?))),
            health: Arc::new(dir.clone()),
        })
    }

    /// PostgreSQL through `db`: keys hashed with `secret` (the same on every replica),
    /// this process's audit chain, held calls and costs named `replica`.
    pub fn postgres(db: &postgres::Postgres, secret: [u8; 32], replica: &str) -> Self {
        use std::sync::Arc;
        Self {
            keys: Arc::new(postgres::PgKeys::new(db.clone(), secret)),
            notes: Arc::new(postgres::PgNotes::new(db.clone())),
            audit: Arc::new(postgres::PgAudit::new(db.clone(), replica)),
            approvals: Arc::new(postgres::PgApprovals::new(db.clone(), replica)),
            pins: Arc::new(postgres::PgPins::new(db.clone())),
            costs: Arc::new(postgres::PgCosts::new(db.clone(), replica)),
            health: Arc::new(db.clone()),
        }
    }
}

/// The folder that holds every file Warden keeps. Created with mode 0700.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        create_private_dir(&root)?;
        Ok(Self { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A 32-byte secret of this installation kept in file `name`, made on first use.
    pub fn secret(&self, name: &str) -> Result<[u8; 32]> {
        keys::load_or_create_secret(self, name)
    }
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StoreError::io(format!("creating data directory {}", path.display()), e))
}

/// Writes `contents` to a new file readable only by its owner. Fails if the file exists,
/// so a secret is never silently replaced.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))
}

/// A 32-byte secret written as 64 hex digits (surrounding blanks ignored).
pub fn secret_from_hex(text: &str) -> Option<[u8; 32]> {
    let mut secret = [0; 32];
    hex::decode_to_slice(text.trim(), &mut secret).ok()?;
    Some(secret)
}

/// A key for one `purpose`, derived from `secret` (so that one shared secret keys
/// several things without any two keys being the same).
pub fn derive_key(secret: &[u8; 32], purpose: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 UTC text for a Unix time, as shown to clients and operators.
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
