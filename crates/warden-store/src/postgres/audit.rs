//! The audit trail on PostgreSQL: every replica keeps its own hash chain (its name, its
//! own sequence) in the shared table, so that replicas append without waiting on each
//! other, and `verify` checks every chain.

use deadpool_postgres::GenericClient;

use tokio_postgres::Row;

use super::Postgres;
use crate::audit::{Audit, AuditFilter, AuditRecord, GENESIS, Verdict};
use crate::{Result, StoreFuture};

/// The record's columns, from `at_ms` on (after a leading position column).
const RECORD_COLUMNS: &str = "at_ms, tenant, principal, client, instance, era, method, target,
    upstream, decision, rule, outcome, latency_us, request_bytes, result_bytes, args_hash, trace_id";

/// Appends to one replica's chain; verifies and prunes all of them.
#[derive(Debug, Clone)]
pub struct PgAudit {
    db: Postgres,
    replica: String,
}

impl PgAudit {
    /// `replica` names this replica's chain: stable across its restarts, unique among
    /// the replicas sharing the database.
    pub fn new(db: Postgres, replica: &str) -> Self {
        Self {
            db,
            replica: replica.to_owned(),
        }
    }

    /// Appends `records` to this replica's chain in one transaction. Appends of one
    /// replica take turns (a transaction-level advisory lock on its name), so two of its
    /// writers never chain to the same row.
    async fn append_in(&self, records: &[AuditRecord]) -> Result<()> {
        // PostgreSQL text cannot hold NUL, and a client chooses some of these fields:
        // one record it poisoned must not make the store refuse the whole batch.
        let records: Vec<AuditRecord> = records.iter().map(without_nul).collect();
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        lock_chain(&tx, &self.replica).await?;
        let (mut seq, mut prev) = chain_end(&tx, &self.replica).await?;
        let mut links = Vec::with_capacity(records.len());
        for record in &records {
            seq += 1;
            let hash = record.chained_hash(seq, &prev).to_vec();
            links.push(Link {
                seq,
                record,
                prev,
                hash: hash.clone(),
            });
            prev = hash;
        }
        insert_links(&tx, &self.replica, &links).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every replica's records that match, newest `limit`, oldest first; positioned by
    /// the table's own order of insertion.
    async fn query_in(&self, filter: &AuditFilter) -> Result<Vec<(i64, AuditRecord)>> {
        let client = self.db.client().await?;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT id, {RECORD_COLUMNS} FROM audit
                     WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR principal = $2)
                       AND ($3::text IS NULL OR target = $3) AND ($4::text IS NULL OR decision = $4)
                       AND ($5::bigint IS NULL OR at_ms >= $5) AND ($6::bigint IS NULL OR id > $6)
                       AND ($7::bigint IS NULL OR at_ms < $7) AND ($8::bigint IS NULL OR id < $8)
                       AND ($10::text IS NULL OR trace_id = $10)
                     ORDER BY id DESC LIMIT $9"
                ),
                &[
                    &filter.tenant,
                    &filter.principal,
                    &filter.target,
                    &filter.decision,
                    &filter.since_ms,
                    &filter.after_id,
                    &filter.until_ms,
                    &filter.before_id,
                    &limit,
                    &filter.trace_id,
                ],
            )
            .await?;
        let mut found: Vec<(i64, AuditRecord)> = rows
            .iter()
            .map(|row| (row.get(0), record_from(row)))
            .collect();
        found.reverse();
        Ok(found)
    }

    /// Rows of every replica.
    async fn count_in(&self) -> Result<u64> {
        let client = self.db.client().await?;
        let count: i64 = client
            .query_one("SELECT count(*) FROM audit", &[])
            .await?
            .get(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Walks every replica's chain, by replica name.
    async fn verify_in(&self) -> Result<Vec<(String, Verdict)>> {
        let client = self.db.client().await?;
        let replicas: Vec<String> = client
            .query(
                "SELECT replica FROM audit UNION SELECT replica FROM audit_anchor ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut verdicts = Vec::with_capacity(replicas.len());
        for replica in replicas {
            let verdict = verify_chain(&client, &replica).await?;
            verdicts.push((replica, verdict));
        }
        Ok(verdicts)
    }

    /// Deletes every replica's rows older than `before_ms` and records where each chain
    /// now starts.
    async fn prune_in(&self, before_ms: i64) -> Result<u64> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let cuts = tx
            .query(
                "SELECT DISTINCT ON (replica) replica, seq, hash FROM audit
                 WHERE at_ms < $1 ORDER BY replica, seq DESC",
                &[&before_ms],
            )
            .await?;
        let mut removed = 0;
        for cut in &cuts {
            let (replica, last_cut, hash): (String, i64, Vec<u8>) =
                (cut.get(0), cut.get(1), cut.get(2));
            removed += tx
                .execute(
                    "DELETE FROM audit WHERE replica = $1 AND seq <= $2",
                    &[&replica, &last_cut],
                )
                .await?;
            // The next row's prev_hash is the hash of the last row cut.
            tx.execute(
                "INSERT INTO audit_anchor (replica, first_seq, prev_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (replica) DO UPDATE SET first_seq = excluded.first_seq,
                    prev_hash = excluded.prev_hash",
                &[&replica, &(last_cut + 1), &hash],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(removed)
    }
}

/// Makes the transaction's appends to `replica`'s chain take turns with every other's
/// (a transaction-level advisory lock on its name).
pub(crate) async fn lock_chain(tx: &impl GenericClient, replica: &str) -> Result<()> {
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('warden.audit:' || $1, 0))")
        .await?;
    tx.execute(&lock, &[&replica]).await?;
    Ok(())
}

/// One link of a replica's chain: its record at `seq`, chained after `prev`.
pub(crate) struct Link<'a> {
    pub seq: i64,
    pub record: &'a AuditRecord,
    pub prev: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Inserts `links` into `replica`'s chain in one statement (a batch is one round trip,
/// not one per record).
pub(crate) async fn insert_links(
    tx: &impl GenericClient,
    replica: &str,
    links: &[Link<'_>],
) -> Result<()> {
    let column = |field: fn(&AuditRecord) -> &str| -> Vec<&str> {
        links.iter().map(|l| field(l.record)).collect()
    };
    let optional = |field: fn(&AuditRecord) -> Option<&str>| -> Vec<Option<&str>> {
        links.iter().map(|l| field(l.record)).collect()
    };
    let number = |field: fn(&AuditRecord) -> i64| -> Vec<i64> {
        links.iter().map(|l| field(l.record)).collect()
    };
    let statement = tx
        .prepare_cached(
            "INSERT INTO audit (replica, seq, at_ms, tenant, principal, client, instance, era,
                 method, target, upstream, decision, rule, outcome, latency_us, request_bytes,
                 result_bytes, args_hash, prev_hash, hash, trace_id)
             SELECT $1, l.* FROM unnest($2::int8[], $3::int8[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                 $12::text[], $13::text[], $14::text[], $15::int8[], $16::int8[], $17::int8[],
                 $18::text[], $19::bytea[], $20::bytea[], $21::text[]) AS l
             ORDER BY 2",
        )
        .await?;
    let seqs: Vec<i64> = links.iter().map(|l| l.seq).collect();
    let prevs: Vec<&[u8]> = links.iter().map(|l| l.prev.as_slice()).collect();
    let hashes: Vec<&[u8]> = links.iter().map(|l| l.hash.as_slice()).collect();
    tx.execute(
        &statement,
        &[
            &replica,
            &seqs,
            &number(|r| r.at_ms),
            &column(|r| &r.tenant),
            &column(|r| &r.principal),
            &column(|r| &r.client),
            &column(|r| &r.instance),
            &column(|r| &r.era),
            &column(|r| &r.method),
            &optional(|r| r.target.as_deref()),
            &optional(|r| r.upstream.as_deref()),
            &column(|r| &r.decision),
            &optional(|r| r.rule.as_deref()),
            &column(|r| &r.outcome),
            &number(|r| r.latency_us),
            &number(|r| r.request_bytes),
            &number(|r| r.result_bytes),
            &optional(|r| r.args_hash.as_deref()),
            &prevs,
            &hashes,
            &optional(|r| r.trace_id.as_deref()),
        ],
    )
    .await?;
    Ok(())
}

/// The last sequence number and hash of `replica`'s chain (where retention cut it, when
/// every row is gone; the start, for a new chain).
async fn chain_end(client: &impl GenericClient, replica: &str) -> Result<(i64, Vec<u8>)> {
    let last = client
        .prepare_cached("SELECT seq, hash FROM audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1")
        .await?;
    if let Some(last) = client.query_opt(&last, &[&replica]).await? {
        return Ok((last.get(0), last.get(1)));
    }
    Ok(anchor(client, replica)
        .await?
        .map_or((0, GENESIS.to_vec()), |(first, prev)| (first - 1, prev)))
}

async fn anchor(client: &impl GenericClient, replica: &str) -> Result<Option<(i64, Vec<u8>)>> {
    Ok(client
        .query_opt(
            "SELECT first_seq, prev_hash FROM audit_anchor WHERE replica = $1",
            &[&replica],
        )
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

pub(crate) async fn verify_chain(client: &impl GenericClient, replica: &str) -> Result<Verdict> {
    let (mut expected, mut prev) = anchor(client, replica)
        .await?
        .unwrap_or((1, GENESIS.to_vec()));
    let rows = client
        .query(
            &format!(
                "SELECT seq, {RECORD_COLUMNS}, prev_hash, hash
                 FROM audit WHERE replica = $1 ORDER BY seq"
            ),
            &[&replica],
        )
        .await?;
    for row in &rows {
        let seq: i64 = row.get(0);
        let record = record_from(row);
        let (prev_hash, hash): (Vec<u8>, Vec<u8>) = (row.get(18), row.get(19));
        if seq != expected || prev_hash != prev {
            return Ok(Verdict::Missing { before_id: seq });
        }
        if record.chained_hash(seq, &prev).as_slice() != hash.as_slice() {
            return Ok(Verdict::Edited { id: seq });
        }
        prev = hash;
        expected = seq + 1;
    }
    Ok(Verdict::Intact {
        rows: u64::try_from(rows.len()).unwrap_or(u64::MAX),
    })
}

/// The record in columns 1 to 17 of `row` ([`RECORD_COLUMNS`] after a position).
fn record_from(row: &Row) -> AuditRecord {
    AuditRecord {
        at_ms: row.get(1),
        tenant: row.get(2),
        principal: row.get(3),
        client: row.get(4),
        instance: row.get(5),
        era: row.get(6),
        method: row.get(7),
        target: row.get(8),
        upstream: row.get(9),
        decision: row.get(10),
        rule: row.get(11),
        outcome: row.get(12),
        latency_us: row.get(13),
        request_bytes: row.get(14),
        result_bytes: row.get(15),
        args_hash: row.get(16),
        trace_id: row.get(17),
    }
}

impl Audit for PgAudit {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> StoreFuture<'a, ()> {
        Box::pin(self.append_in(records))
    }

    fn query<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<(i64, AuditRecord)>> {
        Box::pin(self.query_in(filter))
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.count_in())
    }

    fn verify(&self) -> StoreFuture<'_, Vec<(String, Verdict)>> {
        Box::pin(self.verify_in())
    }

    fn prune(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(self.prune_in(before_ms))
    }
}

/// `record` with every NUL character replaced (U+FFFD), so that PostgreSQL takes it.
fn without_nul(record: &AuditRecord) -> AuditRecord {
    let clean = |text: &String| text.replace('\0', "\u{FFFD}");
    let clean_optional = |text: &Option<String>| text.as_ref().map(clean);
    AuditRecord {
        tenant: clean(&record.tenant),
        principal: clean(&record.principal),
        client: clean(&record.client),
        instance: clean(&record.instance),
        era: clean(&record.era),
        method: clean(&record.method),
        target: clean_optional(&record.target),
        upstream: clean_optional(&record.upstream),
        decision: clean(&record.decision),
        rule: clean_optional(&record.rule),
        outcome: clean(&record.outcome),
        args_hash: clean_optional(&record.args_hash),
        trace_id: clean_optional(&record.trace_id),
        ..record.clone()
    }
}
