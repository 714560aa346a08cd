//! Daily costs on PostgreSQL: each replica's totals in its own rows, so that a replica's
//! restart continues its totals and replicas never overwrite each other's.

use super::Postgres;
use crate::costs::Costs;
use crate::{Result, StoreFuture};

#[derive(Debug, Clone)]
pub struct PgCosts {
    db: Postgres,
    replica: String,
}

impl PgCosts {
    pub fn new(db: Postgres, replica: &str) -> Self {
        Self {
            db,
            replica: replica.to_owned(),
        }
    }

    async fn day_in(&self, day: i64) -> Result<Vec<(String, u64)>> {
        let rows = self
            .db
            .client()
            .await?
            .query(
                "SELECT tenant, spent FROM daily_costs WHERE day = $1 AND replica = $2",
                &[&day, &self.replica],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)))
            .collect())
    }

    async fn record_in(&self, day: i64, totals: &[(String, u64)]) -> Result<()> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO daily_costs (tenant, day, replica, spent) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, day, replica)
                 DO UPDATE SET spent = GREATEST(daily_costs.spent, excluded.spent)",
            )
            .await?;
        for (tenant, spent) in totals {
            let spent = i64::try_from(*spent).unwrap_or(i64::MAX);
            tx.execute(&upsert, &[tenant, &day, &self.replica, &spent])
                .await?;
        }
        tx.execute(
            "DELETE FROM daily_costs WHERE day < $1 AND replica = $2",
            &[&day, &self.replica],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Costs for PgCosts {
    fn day(&self, day: i64) -> StoreFuture<'_, Vec<(String, u64)>> {
        Box::pin(self.day_in(day))
    }

    fn record<'a>(&'a self, day: i64, totals: &'a [(String, u64)]) -> StoreFuture<'a, ()> {
        Box::pin(self.record_in(day, totals))
    }
}
