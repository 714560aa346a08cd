//! `costs.db`: what each tenant has spent per UTC day, so a daily cost cap survives a
//! restart. The limiter counts in memory and writes here in batches.

use std::sync::Arc;

use rusqlite::params;

use crate::db::{Durability, Single};
use crate::{DataDir, Result, StoreFuture};

/// Daily spending per tenant, wherever it is kept. Each replica keeps its own totals
/// (sharing the ledger across replicas is the cluster's job); they survive its restarts.
pub trait Costs: std::fmt::Debug + Send + Sync {
    /// This replica's totals of `day` (days since 1970-01-01, UTC), per tenant.
    fn day(&self, day: i64) -> StoreFuture<'_, Vec<(String, u64)>>;
    /// Raises this replica's totals of `day` to `totals` (never lowers one) and forgets
    /// earlier days.
    fn record<'a>(&'a self, day: i64, totals: &'a [(String, u64)]) -> StoreFuture<'a, ()>;
}

/// [`CostStore`] for async callers.
#[derive(Debug, Clone)]
pub struct SqliteCosts(Arc<CostStore>);

impl SqliteCosts {
    pub fn new(store: Arc<CostStore>) -> Self {
        Self(store)
    }
}

impl Costs for SqliteCosts {
    fn day(&self, day: i64) -> StoreFuture<'_, Vec<(String, u64)>> {
        crate::on_blocking_thread(&self.0, "costs", move |store| store.day(day))
    }

    fn record<'a>(&'a self, day: i64, totals: &'a [(String, u64)]) -> StoreFuture<'a, ()> {
        let totals = totals.to_vec();
        crate::on_blocking_thread(&self.0, "costs", move |store| store.record(day, &totals))
    }
}

pub(crate) const FILE: &str = "costs.db";
pub(crate) const MIGRATIONS: &[&str] = &["
    CREATE TABLE daily_costs (
        tenant TEXT NOT NULL,
        day    INTEGER NOT NULL,   -- days since 1970-01-01, UTC
        spent  INTEGER NOT NULL,
        PRIMARY KEY (tenant, day)
    ) WITHOUT ROWID;
"];

#[derive(Debug)]
pub struct CostStore {
    db: Single,
}

impl CostStore {
    pub fn open(dir: &DataDir) -> Result<Self> {
        Ok(Self {
            db: Single::open(&dir.file(FILE), MIGRATIONS, Durability::Full)?,
        })
    }

    /// Every tenant's spending on `day`.
    pub fn day(&self, day: i64) -> Result<Vec<(String, u64)>> {
        let conn = self.db.lock();
        let mut statement = conn.prepare("SELECT tenant, spent FROM daily_costs WHERE day = ?1")?;
        let rows = statement.query_map(params![day], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?.max(0) as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the spending totals of `day` (the new totals, not increments), in one
    /// transaction; older days are dropped.
    pub fn record(&self, day: i64, totals: &[(String, u64)]) -> Result<()> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO daily_costs (tenant, day, spent) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, day) DO UPDATE SET spent = MAX(spent, excluded.spent)",
            )?;
            for (tenant, spent) in totals {
                upsert.execute(params![
                    tenant,
                    day,
                    i64::try_from(*spent).unwrap_or(i64::MAX)
                ])?;
            }
            tx.execute("DELETE FROM daily_costs WHERE day < ?1", params![day])?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_survive_reopening_and_old_days_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let store = CostStore::open(&dir).unwrap();
        store.record(100, &[("acme".into(), 5)]).unwrap();
        store
            .record(101, &[("acme".into(), 7), ("beta".into(), 1)])
            .unwrap();
        store.record(101, &[("acme".into(), 3)]).unwrap();
        drop(store);
        let store = CostStore::open(&dir).unwrap();
        let mut today = store.day(101).unwrap();
        today.sort();
        assert_eq!(today, [("acme".into(), 7), ("beta".into(), 1)]);
        assert!(store.day(100).unwrap().is_empty());
    }
}
