//! `audit.db`: one row for every request that reached policy, allowed or refused.
//! Rows are chained: each carries the SHA-256 of the row before it and a hash of its
//! own fields, so an edited row, a deleted one, or rows cut from the front beyond what
//! retention recorded are found by [`AuditStore::verify`].
//!
//! Arguments are never stored; at most a keyed hash of them, for correlation.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::db::{Durability, Single};
use crate::{DataDir, Result, StoreFuture};

/// The audit trail, wherever it is kept.
pub trait Audit: std::fmt::Debug + Send + Sync {
    /// Appends `records` to this process's chain, all or none.
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> StoreFuture<'a, ()>;
    /// The newest records that match, oldest first, each with its position (larger is
    /// later; `after_id` pages on from one).
    fn query<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<(i64, AuditRecord)>>;
    fn count(&self) -> StoreFuture<'_, u64>;
    /// Walks every chain: its name (the replica's; empty for a data directory's one
    /// chain) and what was found.
    fn verify(&self) -> StoreFuture<'_, Vec<(String, Verdict)>>;
    /// Deletes records older than `before_ms`, keeping every chain verifiable.
    fn prune(&self, before_ms: i64) -> StoreFuture<'_, u64>;
}

/// [`AuditStore`] for async callers: the data directory's one chain.
#[derive(Debug, Clone)]
pub struct SqliteAudit(Arc<AuditStore>);

impl SqliteAudit {
    pub fn new(store: Arc<AuditStore>) -> Self {
        Self(store)
    }

    fn blocking<'a, T: Send + 'static>(
        &self,
        work: impl FnOnce(&AuditStore) -> Result<T> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        crate::on_blocking_thread(&self.0, "audit", work)
    }
}

impl Audit for SqliteAudit {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> StoreFuture<'a, ()> {
        let records = records.to_vec();
        self.blocking(move |store| store.append(&records))
    }

    fn query<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<(i64, AuditRecord)>> {
        let filter = filter.clone();
        self.blocking(move |store| store.query(&filter))
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.blocking(AuditStore::count)
    }

    fn verify(&self) -> StoreFuture<'_, Vec<(String, Verdict)>> {
        self.blocking(|store| Ok(vec![(String::new(), store.verify()?)]))
    }

    fn prune(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        self.blocking(move |store| store.prune(before_ms))
    }
}

pub(crate) const FILE: &str = "audit.db";
pub(crate) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE audit (
        id            INTEGER PRIMARY KEY,
        at_ms         INTEGER NOT NULL,
        tenant        TEXT NOT NULL,
        principal     TEXT NOT NULL,
        client        TEXT NOT NULL,
        instance      TEXT NOT NULL,
        era           TEXT NOT NULL,
        method        TEXT NOT NULL,
        target        TEXT,
        upstream      TEXT,
        decision      TEXT NOT NULL,
        rule          TEXT,
        outcome       TEXT NOT NULL,
        latency_us    INTEGER NOT NULL,
        request_bytes INTEGER NOT NULL,
        result_bytes  INTEGER NOT NULL,
        args_hash     TEXT,
        prev_hash     BLOB NOT NULL,
        hash          BLOB NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms);
    CREATE INDEX audit_tenant ON audit (tenant, at_ms);
    -- Where the chain starts after retention cut older rows.
    CREATE TABLE audit_anchor (
        only      INTEGER PRIMARY KEY CHECK (only = 1),
        first_id  INTEGER NOT NULL,
        prev_hash BLOB NOT NULL
    );
",
    "
    -- The trace a call belonged to ([telemetry]), to find its record from a trace. Not
    -- indexed: random keys would dirty a page of the index for almost every record
    -- (measured: 8-10 us a call); `warden audit list --trace` reads the retained trail.
    ALTER TABLE audit ADD COLUMN trace_id TEXT;
",
];
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// One audited request. `principal` is a key id or `oauth:<subject>`, never a
/// credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub tenant: String,
    pub principal: String,
    pub client: String,
    pub instance: String,
    pub era: String,
    pub method: String,
    pub target: Option<String>,
    pub upstream: Option<String>,
    /// `allowed` or `refused`.
    pub decision: String,
    /// The rule that refused (`validation.arguments`, `rate.per_key`, …).
    pub rule: Option<String>,
    /// `ok`, `tool_error`, `protocol_error`, `timeout`, `unavailable`, `cancelled`,
    /// `refused`.
    pub outcome: String,
    pub latency_us: i64,
    pub request_bytes: i64,
    pub result_bytes: i64,
    pub args_hash: Option<String>,
    /// The OpenTelemetry trace the call belonged to (32 hex digits), with `[telemetry]`.
    pub trace_id: Option<String>,
}

impl AuditRecord {
    /// A record of something an operator did, or of what happened to a call without a
    /// client asking (a held call that expired): `actor` is who did it (`operator:<user>`,
    /// `warden`), `method` what (`keys/add`, `approvals/approve`, …), `target` to what.
    pub fn action(actor: &str, method: &str, tenant: &str, target: &str, outcome: &str) -> Self {
        Self {
            at_ms: crate::now_unix().saturating_mul(1000),
            tenant: tenant.to_owned(),
            principal: actor.to_owned(),
            era: "operator".to_owned(),
            method: method.to_owned(),
            target: Some(target.to_owned()),
            decision: "allowed".to_owned(),
            outcome: outcome.to_owned(),
            ..Self::default()
        }
    }

    /// The hash that chains this row to `prev`.
    pub(crate) fn chained_hash(&self, id: i64, prev: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(prev);
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(&id.to_be_bytes());
        field(&self.at_ms.to_be_bytes());
        for text in [
            &self.tenant,
            &self.principal,
            &self.client,
            &self.instance,
            &self.era,
            &self.method,
            &self.decision,
            &self.outcome,
        ] {
            field(text.as_bytes());
        }
        for optional in [&self.target, &self.upstream, &self.rule, &self.args_hash] {
            match optional {
                Some(text) => {
                    field(b"+");
                    field(text.as_bytes());
                }
                None => field(b"-"),
            }
        }
        for number in [self.latency_us, self.request_bytes, self.result_bytes] {
            field(&number.to_be_bytes());
        }
        // Chained only when present, so that rows from before the column verify as
        // they were written; adding or removing one changes the hash like any edit.
        if let Some(trace_id) = &self.trace_id {
            field(b"trace");
            field(trace_id.as_bytes());
        }
        hasher.finalize().into()
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub principal: Option<String>,
    pub target: Option<String>,
    pub decision: Option<String>,
    pub since_ms: Option<i64>,
    /// Records before this time (milliseconds since the epoch).
    pub until_ms: Option<i64>,
    /// Rows after this id (for following the trail).
    pub after_id: Option<i64>,
    /// The records of one trace.
    pub trace_id: Option<String>,
    /// Rows before this id (for paging back through it).
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        rows: u64,
    },
    /// The row's fields do not match its hash: edited.
    Edited {
        id: i64,
    },
    /// The chain breaks before this row: rows were removed.
    Missing {
        before_id: i64,
    },
}

#[derive(Debug)]
pub struct AuditStore {
    db: Single,
}

pub(crate) type Row = (i64, AuditRecord, Vec<u8>, Vec<u8>);

impl AuditStore {
    pub fn open(dir: &DataDir) -> Result<Self> {
        Ok(Self {
            db: Single::open(&dir.file(FILE), MIGRATIONS, Durability::ProcessCrash)?,
        })
    }

    /// Appends `records` in one transaction, each chained to the one before. The
    /// transaction takes the write lock before it reads the chain's end, so the server
    /// and an admin command appending at once cannot both chain to the same row.
    pub fn append(&self, records: &[AuditRecord]) -> Result<()> {
        let mut conn = self.db.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last = tx
            .query_row(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        // With every row cut by retention, the chain continues from where it was cut.
        let (mut id, mut prev) = match last {
            Some(last) => last,
            None => tx
                .query_row("SELECT first_id, prev_hash FROM audit_anchor", [], |row| {
                    Ok((row.get::<_, i64>(0)? - 1, row.get::<_, Vec<u8>>(1)?))
                })
                .optional()?
                .unwrap_or((0, GENESIS.to_vec())),
        };
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit (id, at_ms, tenant, principal, client, instance, era, method,
                    target, upstream, decision, rule, outcome, latency_us, request_bytes,
                    result_bytes, args_hash, prev_hash, hash, trace_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20)",
            )?;
            for record in records {
                id += 1;
                let hash = record.chained_hash(id, &prev);
                insert.execute(params![
                    id,
                    record.at_ms,
                    record.tenant,
                    record.principal,
                    record.client,
                    record.instance,
                    record.era,
                    record.method,
                    record.target,
                    record.upstream,
                    record.decision,
                    record.rule,
                    record.outcome,
                    record.latency_us,
                    record.request_bytes,
                    record.result_bytes,
                    record.args_hash,
                    prev,
                    hash.as_slice(),
                    record.trace_id,
                ])?;
                prev = hash.to_vec();
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rows matching `filter`, oldest first (the newest `limit` of them).
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<(i64, AuditRecord)>> {
        let conn = self.db.lock();
        let mut rows: Vec<(i64, AuditRecord)> = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR principal = ?2)
                   AND (?3 IS NULL OR target = ?3) AND (?4 IS NULL OR decision = ?4)
                   AND (?5 IS NULL OR at_ms >= ?5) AND (?6 IS NULL OR id > ?6)
                   AND (?7 IS NULL OR at_ms < ?7) AND (?8 IS NULL OR id < ?8)
                   AND (?10 IS NULL OR trace_id = ?10)
                 ORDER BY id DESC LIMIT ?9"
            ))?
            .query_map(
                params![
                    filter.tenant,
                    filter.principal,
                    filter.target,
                    filter.decision,
                    filter.since_ms,
                    filter.after_id,
                    filter.until_ms,
                    filter.before_id,
                    i64::try_from(filter.limit).unwrap_or(i64::MAX),
                    filter.trace_id,
                ],
                read_row,
            )?
            .map(|row| row.map(|(id, record, _, _)| (id, record)))
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    pub fn count(&self) -> Result<u64> {
        let conn = self.db.lock();
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |row| row.get(0))?;
        Ok(count.max(0) as u64)
    }

    /// Walks the whole chain.
    pub fn verify(&self) -> Result<Verdict> {
        let conn = self.db.lock();
        let anchor: Option<(i64, Vec<u8>)> = conn
            .query_row("SELECT first_id, prev_hash FROM audit_anchor", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let (mut expected_id, mut prev) = anchor.unwrap_or((1, GENESIS.to_vec()));
        let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY id"))?;
        let mut rows = statement.query([])?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let (id, record, prev_hash, hash) = read_row(row)?;
            if id != expected_id || prev_hash != prev {
                return Ok(Verdict::Missing { before_id: id });
            }
            if record.chained_hash(id, &prev).as_slice() != hash.as_slice() {
                return Ok(Verdict::Edited { id });
            }
            prev = hash;
            expected_id = id + 1;
            count += 1;
        }
        Ok(Verdict::Intact { rows: count })
    }

    /// Deletes rows older than `before_ms` and records where the chain now starts.
    pub fn prune(&self, before_ms: i64) -> Result<u64> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let last_cut: Option<i64> = tx.query_row(
            "SELECT MAX(id) FROM audit WHERE at_ms < ?1",
            params![before_ms],
            |row| row.get(0),
        )?;
        let Some(last_cut) = last_cut else {
            return Ok(0);
        };
        // The next row's prev_hash is the hash of the last row cut.
        let cut_hash: Vec<u8> = tx.query_row(
            "SELECT hash FROM audit WHERE id = ?1",
            params![last_cut],
            |row| row.get(0),
        )?;
        let cut = tx.execute("DELETE FROM audit WHERE id <= ?1", params![last_cut])?;
        let (first_id, prev_hash) = (last_cut + 1, cut_hash);
        tx.execute(
            "INSERT INTO audit_anchor (only, first_id, prev_hash) VALUES (1, ?1, ?2)
             ON CONFLICT (only) DO UPDATE SET first_id = excluded.first_id,
                prev_hash = excluded.prev_hash",
            params![first_id, prev_hash],
        )?;
        tx.commit()?;
        Ok(cut as u64)
    }
}

pub(crate) const COLUMNS: &str =
    "id, at_ms, tenant, principal, client, instance, era, method, target,
    upstream, decision, rule, outcome, latency_us, request_bytes, result_bytes, args_hash,
    prev_hash, hash, trace_id";

pub(crate) fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        AuditRecord {
            at_ms: row.get(1)?,
            tenant: row.get(2)?,
            principal: row.get(3)?,
            client: row.get(4)?,
            instance: row.get(5)?,
            era: row.get(6)?,
            method: row.get(7)?,
            target: row.get(8)?,
            upstream: row.get(9)?,
            decision: row.get(10)?,
            rule: row.get(11)?,
            outcome: row.get(12)?,
            latency_us: row.get(13)?,
            request_bytes: row.get(14)?,
            result_bytes: row.get(15)?,
            args_hash: row.get(16)?,
            trace_id: row.get(19)?,
        },
        row.get(17)?,
        row.get(18)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> AuditRecord {
        AuditRecord {
            at_ms: n * 1000,
            tenant: "acme".into(),
            principal: "key_1".into(),
            method: "tools/call".into(),
            target: Some(format!("tool{n}")),
            decision: "allowed".into(),
            outcome: "ok".into(),
            ..AuditRecord::default()
        }
    }

    fn six_rows() -> (tempfile::TempDir, AuditStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&DataDir::open(tmp.path()).unwrap()).unwrap();
        store
            .append(&(1..=5).map(record).collect::<Vec<_>>())
            .unwrap();
        store.append(&[record(6)]).unwrap();
        (tmp, store)
    }

    fn raw(store: &AuditStore, sql: &str) {
        store.db.lock().execute(sql, []).unwrap();
    }

    /// A trace id is chained once set: rows without one hash as they did before the
    /// column existed, and setting, changing or clearing one is an edit.
    #[test]
    fn a_trace_id_is_found_and_chained() {
        let (_tmp, store) = six_rows();
        let traced = AuditRecord {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ..record(7)
        };
        assert_ne!(
            traced.chained_hash(7, &GENESIS),
            record(7).chained_hash(7, &GENESIS)
        );
        store.append(std::slice::from_ref(&traced)).unwrap();
        let found = store
            .query(&AuditFilter {
                trace_id: traced.trace_id.clone(),
                limit: 10,
                ..AuditFilter::default()
            })
            .unwrap();
        assert_eq!(found, vec![(7, traced)]);
        assert_eq!(store.verify().unwrap(), Verdict::Intact { rows: 7 });
        raw(&store, "UPDATE audit SET trace_id = NULL WHERE id = 7");
        assert_eq!(store.verify().unwrap(), Verdict::Edited { id: 7 });
        let (_tmp, store) = six_rows();
        raw(&store, "UPDATE audit SET trace_id = 'ab' WHERE id = 2");
        assert_eq!(store.verify().unwrap(), Verdict::Edited { id: 2 });
    }

    #[test]
    fn an_intact_chain_verifies_and_edits_and_deletions_do_not() {
        let (_tmp, store) = six_rows();
        assert_eq!(store.verify().unwrap(), Verdict::Intact { rows: 6 });
        raw(&store, "UPDATE audit SET decision = 'refused' WHERE id = 3");
        assert_eq!(store.verify().unwrap(), Verdict::Edited { id: 3 });

        let (_tmp, store) = six_rows();
        raw(&store, "DELETE FROM audit WHERE id = 4");
        assert_eq!(store.verify().unwrap(), Verdict::Missing { before_id: 5 });

        let (_tmp, store) = six_rows();
        raw(&store, "DELETE FROM audit WHERE id = 1");
        assert_eq!(store.verify().unwrap(), Verdict::Missing { before_id: 2 });
    }

    #[test]
    fn retention_cuts_the_front_and_the_chain_still_verifies() {
        let (_tmp, store) = six_rows();
        assert_eq!(store.prune(3500).unwrap(), 3);
        assert_eq!(store.verify().unwrap(), Verdict::Intact { rows: 3 });
        store.append(&[record(7)]).unwrap();
        assert_eq!(store.verify().unwrap(), Verdict::Intact { rows: 4 });
        // Cutting more than retention recorded is still found.
        raw(&store, "DELETE FROM audit WHERE id = 4");
        assert_eq!(store.verify().unwrap(), Verdict::Missing { before_id: 5 });
    }

    #[test]
    fn the_chain_continues_after_retention_cut_every_record() {
        let (_tmp, store) = six_rows();
        assert_eq!(store.prune(i64::MAX).unwrap(), 6);
        assert_eq!(store.verify().unwrap(), Verdict::Intact { rows: 0 });
        store.append(&[record(7), record(8)]).unwrap();
        assert_eq!(store.verify().unwrap(), Verdict::Intact { rows: 2 });
    }

    #[test]
    fn queries_filter_and_follow() {
        let (_tmp, store) = six_rows();
        let filter = AuditFilter {
            target: Some("tool2".into()),
            limit: 10,
            ..AuditFilter::default()
        };
        assert_eq!(store.query(&filter).unwrap().len(), 1);
        let after = AuditFilter {
            after_id: Some(4),
            limit: 10,
            ..AuditFilter::default()
        };
        let ids: Vec<i64> = store
            .query(&after)
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, [5, 6]);
    }
}
