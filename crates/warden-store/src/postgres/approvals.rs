//! Held calls on PostgreSQL: any replica's operator sees and decides every held call;
//! the call itself waits in the memory of the replica that holds it.

use tokio_postgres::Row;

use super::Postgres;
use crate::approvals::{Approval, Approvals};
use crate::{Result, StoreFuture, now_unix};

const COLUMNS: &str = "id, tenant, principal, tool, summary, status, created_at";

#[derive(Debug, Clone)]
pub struct PgApprovals {
    db: Postgres,
    replica: String,
}

impl PgApprovals {
    /// `replica` names the calls this process holds (see [`Approvals::expire_abandoned`]).
    pub fn new(db: Postgres, replica: &str) -> Self {
        Self {
            db,
            replica: replica.to_owned(),
        }
    }

    async fn hold_in(
        &self,
        tenant: &str,
        principal: &str,
        tool: &str,
        summary: &str,
    ) -> Result<String> {
        let id = format!("apr_{}", crate::keys::random_hex(16));
        self.db
            .client()
            .await?
            .execute(
                "INSERT INTO approvals (id, replica, tenant, principal, tool, summary, status,
                    created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)",
                &[
                    &id,
                    &self.replica,
                    &tenant,
                    &principal,
                    &tool,
                    &summary,
                    &now_unix(),
                ],
            )
            .await?;
        Ok(id)
    }

    async fn decide_in(&self, id: &str, approve: bool) -> Result<Option<Approval>> {
        let status = if approve { "approved" } else { "denied" };
        let row = self
            .db
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE approvals SET status = $2, decided_at = $3
                     WHERE id = $1 AND status = 'pending' RETURNING {COLUMNS}"
                ),
                &[&id, &status, &now_unix()],
            )
            .await?;
        Ok(row.as_ref().map(approval_from))
    }

    async fn expire_where(
        &self,
        condition: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Vec<Approval>> {
        let rows = self
            .db
            .client()
            .await?
            .query(
                &format!(
                    "UPDATE approvals SET status = 'expired', decided_at = $2
                     WHERE status = 'pending' AND {condition} RETURNING {COLUMNS}"
                ),
                &[value, &now_unix()],
            )
            .await?;
        let mut expired: Vec<Approval> = rows.iter().map(approval_from).collect();
        expired.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(expired)
    }

    async fn mark_done_in(&self, id: &str) -> Result<bool> {
        let changed = self
            .db
            .client()
            .await?
            .execute(
                "UPDATE approvals SET status = 'done' WHERE id = $1 AND status = 'approved'",
                &[&id],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn status_in(&self, id: &str) -> Result<Option<String>> {
        let row = self
            .db
            .client()
            .await?
            .query_opt("SELECT status FROM approvals WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn pending_in(&self) -> Result<Vec<Approval>> {
        let rows = self
            .db
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = 'pending'
                     ORDER BY created_at, id"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(approval_from).collect())
    }
}

fn approval_from(row: &Row) -> Approval {
    Approval {
        id: row.get(0),
        tenant: row.get(1),
        principal: row.get(2),
        tool: row.get(3),
        summary: row.get(4),
        status: row.get(5),
        created_at: row.get(6),
    }
}

impl Approvals for PgApprovals {
    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        principal: &'a str,
        tool: &'a str,
        summary: &'a str,
    ) -> StoreFuture<'a, String> {
        Box::pin(self.hold_in(tenant, principal, tool, summary))
    }

    fn decide<'a>(&'a self, id: &'a str, approve: bool) -> StoreFuture<'a, Option<Approval>> {
        Box::pin(self.decide_in(id, approve))
    }

    fn expire_before(&self, cutoff: i64) -> StoreFuture<'_, Vec<Approval>> {
        Box::pin(async move { self.expire_where("created_at < $1", &cutoff).await })
    }

    fn expire_abandoned(&self) -> StoreFuture<'_, Vec<Approval>> {
        Box::pin(async move { self.expire_where("replica = $1", &self.replica).await })
    }

    fn mark_done<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.mark_done_in(id))
    }

    fn status<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(self.status_in(id))
    }

    fn pending(&self) -> StoreFuture<'_, Vec<Approval>> {
        Box::pin(self.pending_in())
    }
}
