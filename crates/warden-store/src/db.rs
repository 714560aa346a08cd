//! Connection setup shared by the stores.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::Result;

/// Opens a read-write connection, creating the file, with WAL and full durability: a
/// client told "created" must find its note after a crash.
pub(crate) fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    restrict_permissions(path);
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Opens a connection that SQLite itself refuses to write through.
pub(crate) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), %error, "could not restrict database file permissions");
    }
}

/// Applies `migrations[i]` for every schema version the file has not seen yet.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (version, sql) in migrations.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// A small store's one file and its one writer connection.
pub(crate) struct Single {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Single {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Single").finish_non_exhaustive()
    }
}

/// How a small store commits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Every commit reaches the disk before it returns.
    Full,
    /// A commit survives the process being killed (WAL), not necessarily an OS crash.
    ProcessCrash,
}

impl Single {
    pub fn open(path: &Path, migrations: &[&str], durability: Durability) -> Result<Self> {
        let mut conn = open_writer(path)?;
        if durability == Durability::ProcessCrash {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        migrate(&mut conn, migrations)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
