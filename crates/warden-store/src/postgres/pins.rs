//! Tool pins on PostgreSQL, shared by every replica: a definition is pinned once for
//! all of them, and one approval accepts it everywhere. A check writes only what
//! changes, so that replicas watching the pins' revision do not wake each other up.

use tokio_postgres::Row;

use super::Postgres;
use crate::pins::{Pin, PinState, Pins, Sighting};
use crate::{Result, StoreFuture, now_unix};

const CHANGED: &str = "its definition changed since it was approved";

#[derive(Debug, Clone)]
pub struct PgPins {
    db: Postgres,
}

impl PgPins {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }

    async fn check_all_in(&self, seen: &[Sighting]) -> Result<Vec<PinState>> {
        let mut client = self.db.client().await?;
        let mut states = Vec::with_capacity(seen.len());
        for sighting in seen {
            // A first sight that another replica pinned at the same moment is checked
            // again, against that pin.
            let mut attempts = 0;
            let state = loop {
                attempts += 1;
                let tx = client.transaction().await?;
                let state = check_one(&tx, sighting).await?;
                tx.commit().await?;
                match state {
                    Some(state) => break state,
                    None if attempts < 2 => {}
                    None => {
                        return Err(crate::StoreError::Unavailable(format!(
                            "the pin of {} kept changing while it was checked",
                            sighting.tool
                        )));
                    }
                }
            };
            states.push(state);
        }
        Ok(states)
    }

    async fn approve_in(
        &self,
        tool: &str,
        expected: &str,
        hash_of: fn(&str) -> String,
    ) -> Result<bool> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let pending: Option<String> = tx
            .query_opt(
                "SELECT pending FROM pins WHERE tool = $1 FOR UPDATE",
                &[&tool],
            )
            .await?
            .and_then(|row| row.get(0));
        let Some(pending) = pending else {
            return Ok(false);
        };
        let hash = hash_of(&pending);
        if hash != expected {
            return Ok(false);
        }
        tx.execute(
            "UPDATE pins SET hash = $2, definition = pending, pending = NULL, pending_why = NULL,
                updated_at = $3, revision = nextval('pins_revision') WHERE tool = $1",
            &[&tool, &hash, &now_unix()],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The pin of `tool`, or (`None`) every pin waiting for approval.
    async fn select(&self, tool: Option<&str>) -> Result<Vec<Pin>> {
        let rows = self
            .db
            .client()
            .await?
            .query(
                "SELECT tool, definition, pending, pending_why FROM pins
                 WHERE ($1::text IS NULL AND pending IS NOT NULL) OR tool = $1 ORDER BY tool",
                &[&tool],
            )
            .await?;
        Ok(rows.iter().map(pin_from).collect())
    }

    async fn version_in(&self) -> Result<i64> {
        Ok(self
            .db
            .client()
            .await?
            .query_one("SELECT coalesce(max(revision), 0) FROM pins", &[])
            .await?
            .get(0))
    }
}

/// One sighting against its pin, in `tx` (the row locked while deciding); `None` when
/// another replica pinned the tool first since the row was read.
async fn check_one(
    tx: &deadpool_postgres::Transaction<'_>,
    seen: &Sighting,
) -> Result<Option<PinState>> {
    let row = tx
        .query_opt(
            "SELECT hash, pending FROM pins WHERE tool = $1 FOR UPDATE",
            &[&seen.tool],
        )
        .await?;
    let (accepted, waiting): (Option<String>, Option<String>) = match &row {
        Some(row) => (row.get(0), row.get(1)),
        None => (None, None),
    };
    let new = waiting.as_deref() != Some(seen.definition.as_str());
    let withhold = |why: &str| {
        let why = why.to_owned();
        async move {
            if new {
                tx.execute(
                    "INSERT INTO pins (tool, pending, pending_why, updated_at, revision)
                     VALUES ($1, $2, $3, $4, nextval('pins_revision'))
                     ON CONFLICT (tool) DO UPDATE SET pending = excluded.pending,
                        pending_why = excluded.pending_why, updated_at = excluded.updated_at,
                        revision = excluded.revision",
                    &[&seen.tool, &seen.definition, &why, &now_unix()],
                )
                .await?;
            }
            Ok::<_, crate::StoreError>(PinState::Withheld { reason: why, new })
        }
    };
    let state = match accepted {
        Some(hash) if hash == seen.hash => PinState::Accepted,
        Some(hash) if hash == seen.legacy_hash => {
            tx.execute(
                "UPDATE pins SET hash = $2, definition = $3, updated_at = $4,
                    revision = nextval('pins_revision') WHERE tool = $1",
                &[&seen.tool, &seen.hash, &seen.definition, &now_unix()],
            )
            .await?;
            PinState::Accepted
        }
        Some(_) => withhold(CHANGED).await?,
        None => match &seen.suspicion {
            Some(why) => withhold(why).await?,
            // Withheld before as suspicious, and not any more: accepted now.
            None if row.is_some() => {
                tx.execute(
                    "UPDATE pins SET hash = $2, definition = $3, pending = NULL,
                        pending_why = NULL, updated_at = $4, revision = nextval('pins_revision')
                     WHERE tool = $1",
                    &[&seen.tool, &seen.hash, &seen.definition, &now_unix()],
                )
                .await?;
                PinState::Accepted
            }
            None => {
                let inserted = tx
                    .execute(
                        "INSERT INTO pins (tool, hash, definition, updated_at, revision)
                         VALUES ($1, $2, $3, $4, nextval('pins_revision'))
                         ON CONFLICT (tool) DO NOTHING",
                        &[&seen.tool, &seen.hash, &seen.definition, &now_unix()],
                    )
                    .await?;
                if inserted == 0 {
                    return Ok(None);
                }
                PinState::Accepted
            }
        },
    };
    Ok(Some(state))
}

fn pin_from(row: &Row) -> Pin {
    Pin {
        tool: row.get(0),
        definition: row.get(1),
        pending: row.get(2),
        pending_why: row.get(3),
    }
}

impl Pins for PgPins {
    fn check_all<'a>(&'a self, seen: &'a [Sighting]) -> StoreFuture<'a, Vec<PinState>> {
        Box::pin(self.check_all_in(seen))
    }

    fn approve<'a>(
        &'a self,
        tool: &'a str,
        expected: &'a str,
        hash_of: fn(&str) -> String,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.approve_in(tool, expected, hash_of))
    }

    fn get<'a>(&'a self, tool: &'a str) -> StoreFuture<'a, Option<Pin>> {
        Box::pin(async move { Ok(self.select(Some(tool)).await?.into_iter().next()) })
    }

    fn waiting(&self) -> StoreFuture<'_, Vec<Pin>> {
        Box::pin(self.select(None))
    }

    fn version(&self) -> StoreFuture<'_, i64> {
        Box::pin(self.version_in())
    }
}
