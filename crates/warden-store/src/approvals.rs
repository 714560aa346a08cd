//! `approvals.db`: calls held for an operator's decision (`confirm = "approve"`). The
//! server keeps the call itself in memory; this file holds what the operator sees and
//! decides: the tool, who asked, a redacted summary, and the decision.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use crate::db::{Durability, Single};
use crate::{DataDir, Result, StoreFuture, now_unix};

pub(crate) const FILE: &str = "approvals.db";
pub(crate) const MIGRATIONS: &[&str] = &["
    CREATE TABLE approvals (
        id         TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL,
        principal  TEXT NOT NULL,
        tool       TEXT NOT NULL,
        summary    TEXT NOT NULL,
        status     TEXT NOT NULL,   -- pending, approved, denied, done, expired
        created_at INTEGER NOT NULL,
        decided_at INTEGER
    ) STRICT;
"];

/// One held call as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub tenant: String,
    pub principal: String,
    pub tool: String,
    pub summary: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug)]
pub struct ApprovalStore {
    db: Single,
}

impl ApprovalStore {
    pub fn open(dir: &DataDir) -> Result<Self> {
        Ok(Self {
            db: Single::open(&dir.file(FILE), MIGRATIONS, Durability::Full)?,
        })
    }

    /// Records a held call; returns its id (`apr_` + 128 random bits, hex).
    pub fn hold(&self, tenant: &str, principal: &str, tool: &str, summary: &str) -> Result<String> {
        let id = format!("apr_{}", crate::keys::random_hex(16));
        self.db.lock().execute(
            "INSERT INTO approvals (id, tenant, principal, tool, summary, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
            params![id, tenant, principal, tool, summary, now_unix()],
        )?;
        Ok(id)
    }

    /// The operator's decision on a pending call: the call decided, or `None` when `id`
    /// is not pending.
    pub fn decide(&self, id: &str, approve: bool) -> Result<Option<Approval>> {
        let status = if approve { "approved" } else { "denied" };
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE approvals SET status = ?2, decided_at = ?3 WHERE id = ?1 AND status = 'pending'",
            params![id, status, now_unix()],
        )?;
        let decided = if changed == 1 {
            Some(tx.query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                params![id],
                approval_from_row,
            )?)
        } else {
            None
        };
        tx.commit()?;
        Ok(decided)
    }

    /// Expires the calls still pending that were held before `cutoff` (Unix seconds) and
    /// returns them: past their time, or orphaned by a restart (the call itself lived in
    /// the previous process's memory).
    pub fn expire(&self, cutoff: i64) -> Result<Vec<Approval>> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let expired: Vec<Approval> = tx
            .prepare(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE status = 'pending' AND created_at < ?1"
            ))?
            .query_map(params![cutoff], approval_from_row)?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "UPDATE approvals SET status = 'expired', decided_at = ?2
             WHERE status = 'pending' AND created_at < ?1",
            params![cutoff, now_unix()],
        )?;
        tx.commit()?;
        Ok(expired)
    }

    /// Marks an approved call as run, once: false if it was not approved (or already run).
    pub fn mark_done(&self, id: &str) -> Result<bool> {
        let changed = self.db.lock().execute(
            "UPDATE approvals SET status = 'done' WHERE id = ?1 AND status = 'approved'",
            params![id],
        )?;
        Ok(changed == 1)
    }

    pub fn status(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .lock()
            .query_row(
                "SELECT status FROM approvals WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Calls waiting for a decision, oldest first.
    pub fn pending(&self) -> Result<Vec<Approval>> {
        let conn = self.db.lock();
        let mut statement = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE status = 'pending' ORDER BY created_at, id"
        ))?;
        let rows = statement.query_map([], approval_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Held calls, wherever they are kept.
pub trait Approvals: std::fmt::Debug + Send + Sync {
    /// Records a held call; its id.
    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        principal: &'a str,
        tool: &'a str,
        summary: &'a str,
    ) -> StoreFuture<'a, String>;
    /// Approves or denies a pending call: the call, if it was pending.
    fn decide<'a>(&'a self, id: &'a str, approve: bool) -> StoreFuture<'a, Option<Approval>>;
    /// Expires the pending calls held before `cutoff` (Unix seconds), by any replica.
    fn expire_before(&self, cutoff: i64) -> StoreFuture<'_, Vec<Approval>>;
    /// Expires every call this process's predecessors held and left pending (the calls
    /// lived in their memory): at start.
    fn expire_abandoned(&self) -> StoreFuture<'_, Vec<Approval>>;
    /// Marks an approved call as run; false when it was not approved or already ran.
    fn mark_done<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    fn status<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<String>>;
    fn pending(&self) -> StoreFuture<'_, Vec<Approval>>;
}

/// [`ApprovalStore`] for async callers (one process holds its calls: every pending one
/// left at start was abandoned).
#[derive(Debug, Clone)]
pub struct SqliteApprovals(Arc<ApprovalStore>);

impl SqliteApprovals {
    pub fn new(store: Arc<ApprovalStore>) -> Self {
        Self(store)
    }

    fn blocking<'a, T: Send + 'static>(
        &self,
        work: impl FnOnce(&ApprovalStore) -> Result<T> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        crate::on_blocking_thread(&self.0, "approvals", work)
    }
}

impl Approvals for SqliteApprovals {
    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        principal: &'a str,
        tool: &'a str,
        summary: &'a str,
    ) -> StoreFuture<'a, String> {
        let owned = [tenant, principal, tool, summary].map(str::to_owned);
        self.blocking(move |store| store.hold(&owned[0], &owned[1], &owned[2], &owned[3]))
    }

    fn decide<'a>(&'a self, id: &'a str, approve: bool) -> StoreFuture<'a, Option<Approval>> {
        let id = id.to_owned();
        self.blocking(move |store| store.decide(&id, approve))
    }

    fn expire_before(&self, cutoff: i64) -> StoreFuture<'_, Vec<Approval>> {
        self.blocking(move |store| store.expire(cutoff))
    }

    fn expire_abandoned(&self) -> StoreFuture<'_, Vec<Approval>> {
        self.blocking(|store| store.expire(now_unix().saturating_add(1)))
    }

    fn mark_done<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        self.blocking(move |store| store.mark_done(&id))
    }

    fn status<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<String>> {
        let id = id.to_owned();
        self.blocking(move |store| store.status(&id))
    }

    fn pending(&self) -> StoreFuture<'_, Vec<Approval>> {
        self.blocking(ApprovalStore::pending)
    }
}

const COLUMNS: &str = "id, tenant, principal, tool, summary, status, created_at";

fn approval_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: row.get(0)?,
        tenant: row.get(1)?,
        principal: row.get(2)?,
        tool: row.get(3)?,
        summary: row.get(4)?,
        status: row.get(5)?,
        created_at: row.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_call_is_decided_once_and_run_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ApprovalStore::open(&DataDir::open(tmp.path()).unwrap()).unwrap();
        let id = store
            .hold("acme", "key_1", "delete_note", "{\"id\":\"n_1\"}")
            .unwrap();
        assert_eq!(store.pending().unwrap().len(), 1);
        assert!(!store.mark_done(&id).unwrap());
        assert_eq!(
            store.decide(&id, true).unwrap().unwrap().tool,
            "delete_note"
        );
        assert!(store.decide(&id, false).unwrap().is_none());
        assert!(store.pending().unwrap().is_empty());
        assert!(store.mark_done(&id).unwrap());
        assert!(!store.mark_done(&id).unwrap());
        let other = store.hold("acme", "key_1", "delete_note", "{}").unwrap();
        assert!(store.decide(&other, false).unwrap().is_some());
        assert_eq!(store.status(&other).unwrap().as_deref(), Some("denied"));
        // What is still pending expires, once.
        let waiting = store.hold("globex", "key_2", "delete_note", "{}").unwrap();
        let expired = store.expire(now_unix() + 1).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].id.as_str(), expired[0].tenant.as_str()),
            (waiting.as_str(), "globex")
        );
        assert!(store.expire(now_unix() + 1).unwrap().is_empty());
        assert!(store.decide(&waiting, true).unwrap().is_none());
    }
}
