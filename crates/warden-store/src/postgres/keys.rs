//! API keys on PostgreSQL, shared by every replica: a revocation on one is refused by
//! all from their next request, because every request looks its key up (its last use
//! is written at most once a minute).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::Postgres;
use crate::keys::{
    KeyOptions, KeyRecord, Keys, NewKey, Principal, SECRET_BYTES, Scope, hashes_match, key_hash,
    labels_of, labels_text, mint, plausible,
};
use crate::{Result, StoreFuture, now_unix};

/// `last_used` is written at most this often per key.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

const RECORD_COLUMNS: &str =
    "id, tenant, name, scope, created_at, last_used, revoked_at, expires_at, rpm, labels";

pub struct PgKeys {
    db: Postgres,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for PgKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKeys").finish_non_exhaustive()
    }
}

impl PgKeys {
    /// `secret` keys the hashes; every replica must use the same one.
    pub fn new(db: Postgres, secret: [u8; SECRET_BYTES]) -> Self {
        Self { db, secret }
    }

    async fn authenticate_in(&self, presented: &str) -> Result<Option<Principal>> {
        if !plausible(presented) {
            return Ok(None);
        }
        let hash = key_hash(&self.secret, presented);
        let now = now_unix();
        let client = self.db.client().await?;
        // Prepared once per connection: every request runs it.
        let lookup = client
            .prepare_cached(
                "SELECT id, hash, tenant, scope, last_used, rpm, name, labels FROM keys
                 WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            )
            .await?;
        let Some(row) = client.query_opt(&lookup, &[&hash.as_slice(), &now]).await? else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.get(1);
        let scope: String = row.get(3);
        let (true, Some(scope)) = (hashes_match(&stored, &hash), Scope::parse(&scope)) else {
            return Ok(None);
        };
        let key_id: String = row.get(0);
        let last_used: Option<i64> = row.get(4);
        if last_used.is_none_or(|at| now - at >= LAST_USED_RESOLUTION_SECS) {
            client
                .execute(
                    "UPDATE keys SET last_used = $2 WHERE id = $1",
                    &[&key_id, &now],
                )
                .await?;
        }
        let rpm: Option<i32> = row.get(5);
        Ok(Some(Principal {
            key_id,
            tenant: row.get(2),
            scope,
            rpm: rpm.and_then(|rpm| u32::try_from(rpm).ok()),
            name: row.get(6),
            labels: labels_of(row.get(7)),
            groups: Vec::new(),
        }))
    }

    async fn add_in(
        &self,
        tenant: &str,
        name: &str,
        scope: Scope,
        options: KeyOptions,
    ) -> Result<NewKey> {
        let new = mint(tenant, name, scope, options)?;
        let client = self.db.client().await?;
        insert(&client, &self.secret, &new).await?;
        Ok(new)
    }

    async fn rotate_in(&self, id: &str, grace_secs: i64) -> Result<Option<NewKey>> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let now = now_unix();
        let Some(old) = tx
            .query_opt(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM keys WHERE id = $1 AND revoked_at IS NULL
                     AND (expires_at IS NULL OR expires_at > $2) FOR UPDATE"
                ),
                &[&id, &now],
            )
            .await?
        else {
            return Ok(None);
        };
        let old = record_of(&old);
        let new = mint(&old.tenant, &old.name, old.scope, old.options.clone())?;
        insert(&tx, &self.secret, &new).await?;
        let until = now.saturating_add(grace_secs.max(0));
        tx.execute(
            "UPDATE keys SET expires_at = LEAST(COALESCE(expires_at, $2), $2) WHERE id = $1",
            &[&id, &until],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(new))
    }

    async fn list_in(&self) -> Result<Vec<KeyRecord>> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                &format!("SELECT {RECORD_COLUMNS} FROM keys ORDER BY created_at, id"),
                &[],
            )
            .await?;
        Ok(rows.iter().map(record_of).collect())
    }

    async fn revoke_in(&self, id: &str) -> Result<bool> {
        let client = self.db.client().await?;
        let changed = client
            .execute(
                "UPDATE keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now_unix()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn has_keys_in(&self) -> Result<bool> {
        let client = self.db.client().await?;
        Ok(client
            .query_one("SELECT EXISTS (SELECT 1 FROM keys)", &[])
            .await?
            .get(0))
    }
}

async fn insert(
    client: &impl GenericClient,
    secret: &[u8; SECRET_BYTES],
    new: &NewKey,
) -> Result<()> {
    let record = &new.record;
    let rpm = record
        .options
        .rpm
        .map(|rpm| i32::try_from(rpm).unwrap_or(i32::MAX));
    client
        .execute(
            "INSERT INTO keys (id, hash, tenant, name, scope, created_at, expires_at, rpm, labels)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &record.id,
                &key_hash(secret, &new.key).as_slice(),
                &record.tenant,
                &record.name,
                &record.scope.as_str(),
                &record.created_at,
                &record.options.expires_at,
                &rpm,
                &labels_text(&record.options.labels),
            ],
        )
        .await?;
    Ok(())
}

fn record_of(row: &Row) -> KeyRecord {
    let scope: String = row.get(3);
    let rpm: Option<i32> = row.get(8);
    KeyRecord {
        id: row.get(0),
        tenant: row.get(1),
        name: row.get(2),
        scope: Scope::parse(&scope).unwrap_or(Scope::Read),
        created_at: row.get(4),
        last_used: row.get(5),
        revoked_at: row.get(6),
        options: KeyOptions {
            expires_at: row.get(7),
            rpm: rpm.and_then(|rpm| u32::try_from(rpm).ok()),
            labels: labels_of(row.get(9)),
        },
    }
}

impl Keys for PgKeys {
    fn authenticate<'a>(&'a self, presented: &'a str) -> StoreFuture<'a, Option<Principal>> {
        Box::pin(self.authenticate_in(presented))
    }

    fn add<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        scope: Scope,
        options: KeyOptions,
    ) -> StoreFuture<'a, NewKey> {
        Box::pin(self.add_in(tenant, name, scope, options))
    }

    fn rotate<'a>(&'a self, id: &'a str, grace_secs: i64) -> StoreFuture<'a, Option<NewKey>> {
        Box::pin(self.rotate_in(id, grace_secs))
    }

    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        Box::pin(self.list_in())
    }

    fn revoke<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.revoke_in(id))
    }

    fn has_keys(&self) -> StoreFuture<'_, bool> {
        Box::pin(self.has_keys_in())
    }
}
