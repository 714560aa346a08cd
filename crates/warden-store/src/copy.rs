//! `warden store copy`: an installation's SQLite files into a PostgreSQL store, so that
//! moving to several replicas keeps its keys, notes (with their earlier versions), pins,
//! held calls, daily costs and audit trail.
//!
//! Rows keep their identities, times and hashes. The audit trail becomes the chain of
//! one replica (record N of the data directory is record N of that chain, under the same
//! hash), so `warden audit verify` checks it as it checked the file, and a replica of
//! that name continues it. Running the copy again adds only what is new: a row the
//! database already holds is kept and counted as there.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _};

use crate::audit::Verdict;
use crate::postgres::Postgres;
use crate::{Result, StoreError};

/// Rows of one kind: how many the data directory holds, how many were new to the
/// database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub what: &'static str,
    pub found: u64,
    pub added: u64,
}

/// What a copy did.
#[derive(Debug)]
pub struct CopyReport {
    pub copied: Vec<Copied>,
    /// The copied audit chain, verified as the database now holds it.
    pub chain: Verdict,
}

/// Rows read from SQLite and written to PostgreSQL at a time (one transaction each).
const BATCH: i64 = 1_000;

/// Copies the SQLite files of the data directory at `dir` into `db` (whose schema must be
/// current). The audit trail becomes `replica`'s chain.
pub async fn sqlite_to_postgres(dir: &Path, db: &Postgres, replica: &str) -> Result<CopyReport> {
    if !dir.is_dir() {
        return Err(StoreError::Invalid(format!(
            "there is no Warden data directory at {}",
            dir.display()
        )));
    }
    crate::postgres::schema_is_current(&db.client().await?).await?;
    let mut copied = Vec::new();
    if let Some(source) = open_source(dir, crate::keys::FILE, crate::keys::MIGRATIONS)? {
        copied.push(copy_keys(&source, db).await?);
    }
    if let Some(source) = open_source(dir, crate::notes::FILE, crate::notes::MIGRATIONS)? {
        copied.extend(copy_notes(&source, db).await?);
    }
    if let Some(source) = open_source(dir, crate::pins::FILE, crate::pins::MIGRATIONS)? {
        copied.push(copy_pins(&source, db).await?);
    }
    if let Some(source) = open_source(dir, crate::approvals::FILE, crate::approvals::MIGRATIONS)? {
        copied.push(copy_approvals(&source, db, replica).await?);
    }
    if let Some(source) = open_source(dir, crate::costs::FILE, crate::costs::MIGRATIONS)? {
        copied.push(copy_costs(&source, db, replica).await?);
    }
    if let Some(source) = open_source(dir, crate::audit::FILE, crate::audit::MIGRATIONS)? {
        copied.push(copy_audit(&source, db, replica).await?);
    }
    let chain = crate::postgres::audit::verify_chain(&db.client().await?, replica).await?;
    Ok(CopyReport { copied, chain })
}

/// The data directory's `file`, brought to its current schema; `None` when the
/// installation never made it (nothing of that kind to copy).
fn open_source(dir: &Path, file: &str, migrations: &[&str]) -> Result<Option<Connection>> {
    let path = dir.join(file);
    if !path.exists() {
        return Ok(None);
    }
    let mut conn = crate::db::open_writer(&path)?;
    crate::db::migrate(&mut conn, migrations)?;
    Ok(Some(conn))
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// PostgreSQL text cannot hold NUL (notes written before Warden refused it might).
fn text(value: String) -> String {
    if value.contains('\0') {
        value.replace('\0', "\u{FFFD}")
    } else {
        value
    }
}

type KeyRow = (
    String,
    Vec<u8>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    String,
);

/// Keys as their hashes: they match on PostgreSQL only where the replicas hash with the
/// data directory's `server.secret` (the caller says so).
async fn copy_keys(source: &Connection, db: &Postgres) -> Result<Copied> {
    let rows: Vec<KeyRow> = read_all(
        source,
        "SELECT id, hash, tenant, name, scope, created_at, last_used, revoked_at, expires_at,
                rpm, labels
         FROM keys ORDER BY created_at, id",
    )?;
    let added = insert_each(
        db,
        "INSERT INTO keys (id, hash, tenant, name, scope, created_at, last_used, revoked_at,
             expires_at, rpm, labels)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        rows.iter().map(
            |(id, hash, tenant, name, scope, created, used, revoked, expires, rpm, labels)| {
                [
                    id as &Param<'_>,
                    hash,
                    tenant,
                    name,
                    scope,
                    created,
                    used,
                    revoked,
                    expires,
                    rpm,
                    labels,
                ]
            },
        ),
    )
    .await?;
    Ok(Copied {
        what: "keys",
        found: count(rows.len()),
        added,
    })
}

/// Notes and their earlier versions, a tenant at a time in that tenant's transactions
/// (row-level security holds for the copy too), oldest first so that listings keep
/// their order.
async fn copy_notes(source: &Connection, db: &Postgres) -> Result<[Copied; 2]> {
    let mut notes = Copied {
        what: "notes",
        found: 0,
        added: 0,
    };
    let mut versions = Copied {
        what: "note versions",
        found: 0,
        added: 0,
    };
    let tenants: Vec<(String,)> =
        read_all(source, "SELECT DISTINCT tenant FROM notes ORDER BY tenant")?;
    let mut client = db.client().await?;
    for (tenant,) in &tenants {
        let mut after = i64::MIN;
        loop {
            let batch = NoteBatch::read(source, tenant, after)?;
            let Some(last) = batch.last_seq else { break };
            after = last;
            notes.found += count(batch.ids.len());
            versions.found += count(batch.version_ids.len());
            let tx = crate::postgres::tenant_transaction(&mut client, tenant).await?;
            notes.added += tx
                .execute(
                    "INSERT INTO notes (id, tenant, title, body, tags, created_at, updated_at,
                         author)
                     SELECT id, $1, title, body,
                            ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)),
                            created_at, updated_at, author
                     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
                                 $7::int8[], $8::text[]) WITH ORDINALITY
                          AS n (id, title, body, tags, created_at, updated_at, author,
                                position)
                     ORDER BY position
                     ON CONFLICT DO NOTHING",
                    &[
                        tenant,
                        &batch.ids,
                        &batch.titles,
                        &batch.bodies,
                        &batch.tags,
                        &batch.created,
                        &batch.updated,
                        &batch.authors,
                    ],
                )
                .await?;
            versions.added += tx
                .execute(
                    "INSERT INTO note_versions (note_id, tenant, version, title, body, tags,
                         replaced_at)
                     SELECT id, $1, version, title, body,
                            ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), replaced_at
                     FROM unnest($2::text[], $3::int4[], $4::text[], $5::text[], $6::text[],
                                 $7::int8[])
                          AS v (id, version, title, body, tags, replaced_at)
                     ON CONFLICT DO NOTHING",
                    &[
                        tenant,
                        &batch.version_ids,
                        &batch.versions,
                        &batch.version_titles,
                        &batch.version_bodies,
                        &batch.version_tags,
                        &batch.replaced,
                    ],
                )
                .await?;
            tx.commit().await?;
        }
    }
    Ok([notes, versions])
}

/// Up to [`BATCH`] of a tenant's notes after position `after`, with their versions, as
/// columns.
#[derive(Default)]
struct NoteBatch {
    last_seq: Option<i64>,
    ids: Vec<String>,
    titles: Vec<String>,
    bodies: Vec<String>,
    tags: Vec<String>,
    created: Vec<i64>,
    updated: Vec<i64>,
    authors: Vec<Option<String>>,
    version_ids: Vec<String>,
    versions: Vec<i32>,
    version_titles: Vec<String>,
    version_bodies: Vec<String>,
    version_tags: Vec<String>,
    replaced: Vec<i64>,
}

impl NoteBatch {
    fn read(source: &Connection, tenant: &str, after: i64) -> Result<Self> {
        let mut batch = Self::default();
        let mut notes = source.prepare(
            "SELECT seq, id, title, body, tags, created_at, updated_at, author FROM notes
             WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = notes.query(rusqlite::params![tenant, after, BATCH])?;
        while let Some(row) = rows.next()? {
            batch.last_seq = Some(row.get(0)?);
            batch.ids.push(row.get(1)?);
            batch.titles.push(text(row.get(2)?));
            batch.bodies.push(text(row.get(3)?));
            batch.tags.push(row.get(4)?);
            batch.created.push(row.get(5)?);
            batch.updated.push(row.get(6)?);
            batch.authors.push(row.get(7)?);
        }
        let Some(last) = batch.last_seq else {
            return Ok(batch);
        };
        let mut versions = source.prepare(
            "SELECT n.id, v.version, v.title, v.body, v.tags, v.replaced_at
             FROM note_versions v JOIN notes n ON n.seq = v.seq
             WHERE n.tenant = ?1 AND n.seq > ?2 AND n.seq <= ?3
             ORDER BY v.seq, v.version",
        )?;
        let mut rows = versions.query(rusqlite::params![tenant, after, last])?;
        while let Some(row) = rows.next()? {
            batch.version_ids.push(row.get(0)?);
            batch.versions.push(row.get(1)?);
            batch.version_titles.push(text(row.get(2)?));
            batch.version_bodies.push(text(row.get(3)?));
            batch.version_tags.push(row.get(4)?);
            batch.replaced.push(row.get(5)?);
        }
        Ok(batch)
    }
}

type PinRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

/// Accepted and waiting tool definitions; a tool the database already pins keeps its
/// pin there (the replicas may have decided on it since).
async fn copy_pins(source: &Connection, db: &Postgres) -> Result<Copied> {
    let rows: Vec<PinRow> = read_all(
        source,
        "SELECT tool, hash, definition, pending, pending_why, updated_at FROM pins",
    )?;
    let added = insert_each(
        db,
        "INSERT INTO pins (tool, hash, definition, pending, pending_why, updated_at, revision)
         VALUES ($1, $2, $3, $4, $5, $6, nextval('pins_revision'))
         ON CONFLICT (tool) DO NOTHING",
        rows.iter()
            .map(|(tool, hash, definition, pending, why, updated)| {
                [tool as &Param<'_>, hash, definition, pending, why, updated]
            }),
    )
    .await?;
    Ok(Copied {
        what: "pins",
        found: count(rows.len()),
        added,
    })
}

type ApprovalRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

/// Held calls, as `replica`'s: the calls themselves lived in the old process's memory,
/// so a pending one is expired when a replica of that name starts.
async fn copy_approvals(source: &Connection, db: &Postgres, replica: &str) -> Result<Copied> {
    let rows: Vec<ApprovalRow> = read_all(
        source,
        "SELECT id, tenant, principal, tool, summary, status, created_at, decided_at
         FROM approvals ORDER BY created_at",
    )?;
    let added = insert_each(
        db,
        "INSERT INTO approvals (id, replica, tenant, principal, tool, summary, status,
             created_at, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        rows.iter().map(
            |(id, tenant, principal, tool, summary, status, created, decided)| {
                [
                    id as &Param<'_>,
                    &replica,
                    tenant,
                    principal,
                    tool,
                    summary,
                    status,
                    created,
                    decided,
                ]
            },
        ),
    )
    .await?;
    Ok(Copied {
        what: "held calls",
        found: count(rows.len()),
        added,
    })
}

/// Each tenant's spending per day, as `replica`'s totals.
async fn copy_costs(source: &Connection, db: &Postgres, replica: &str) -> Result<Copied> {
    let rows: Vec<(String, i64, i64)> =
        read_all(source, "SELECT tenant, day, spent FROM daily_costs")?;
    let added = insert_each(
        db,
        "INSERT INTO daily_costs (tenant, day, replica, spent) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        rows.iter()
            .map(|(tenant, day, spent)| [tenant as &Param<'_>, day, &replica, spent]),
    )
    .await?;
    Ok(Copied {
        what: "daily costs",
        found: count(rows.len()),
        added,
    })
}

/// A statement parameter.
type Param<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

/// Every row `select` finds in `source`.
fn read_all<R>(source: &Connection, select: &str) -> Result<Vec<R>>
where
    R: for<'r> TryFrom<&'r rusqlite::Row<'r>, Error = rusqlite::Error>,
{
    Ok(source
        .prepare(select)?
        .query_map([], |row| R::try_from(row))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Runs `insert` once per row's parameters, all in one transaction; how many rows were
/// new (the statements keep what the database already holds).
async fn insert_each<'p, const N: usize>(
    db: &Postgres,
    insert: &str,
    rows: impl Iterator<Item = [&'p Param<'p>; N]>,
) -> Result<u64> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    let statement = tx.prepare(insert).await?;
    let mut added = 0;
    for params in rows {
        added += tx.execute(&statement, &params).await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// The audit trail, verbatim, as `replica`'s chain: record N at position N, with its
/// hashes, and where retention cut the file, the same anchor. A position the database
/// already holds must hold the same record: another chain under that name is refused,
/// not merged.
async fn copy_audit(source: &Connection, db: &Postgres, replica: &str) -> Result<Copied> {
    use crate::postgres::audit::{Link, insert_links, lock_chain};
    let mut copied = Copied {
        what: "audit records",
        found: 0,
        added: 0,
    };
    let mut client = db.client().await?;
    // The database may hold this name's chain only as an earlier copy of this trail
    // (perhaps continued since): then it holds the trail's first record as it is.
    let first: Option<(i64, Vec<u8>)> = source
        .query_row("SELECT id, hash FROM audit ORDER BY id LIMIT 1", [], |r| {
            r.try_into()
        })
        .optional()?;
    let named = client
        .query_opt(
            "SELECT 1 FROM audit WHERE replica = $1
             UNION ALL SELECT 1 FROM audit_anchor WHERE replica = $1 LIMIT 1",
            &[&replica],
        )
        .await?
        .is_some();
    if let (Some((seq, hash)), true) = (&first, named) {
        let there = client
            .query_opt(
                "SELECT hash FROM audit WHERE replica = $1 AND seq = $2",
                &[&replica, seq],
            )
            .await?
            .map(|row| row.get::<_, Vec<u8>>(0));
        if there.as_ref() != Some(hash) {
            return Err(another_chain(replica, *seq));
        }
    }
    let anchor: Option<(i64, Vec<u8>)> = source
        .query_row("SELECT first_id, prev_hash FROM audit_anchor", [], |r| {
            r.try_into()
        })
        .optional()?;
    if let Some((first, prev)) = &anchor {
        client
            .execute(
                "INSERT INTO audit_anchor (replica, first_seq, prev_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (replica) DO NOTHING",
                &[&replica, first, prev],
            )
            .await?;
    }
    let mut read = source.prepare(&format!(
        "SELECT {} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
        crate::audit::COLUMNS
    ))?;
    let mut after = 0_i64;
    loop {
        let rows: Vec<crate::audit::Row> = read
            .query_map(rusqlite::params![after, BATCH], crate::audit::read_row)?
            .collect::<rusqlite::Result<_>>()?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            break;
        };
        after = last.0;
        copied.found += count(rows.len());
        let tx = client.transaction().await?;
        lock_chain(&tx, replica).await?;
        let held: HashMap<i64, Vec<u8>> = tx
            .query(
                "SELECT seq, hash FROM audit WHERE replica = $1 AND seq BETWEEN $2 AND $3",
                &[&replica, &first.0, &last.0],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut links = Vec::new();
        for (seq, record, prev, hash) in &rows {
            match held.get(seq) {
                Some(there) if there == hash => {}
                Some(_) => return Err(another_chain(replica, *seq)),
                None => links.push(Link {
                    seq: *seq,
                    record,
                    prev: prev.clone(),
                    hash: hash.clone(),
                }),
            }
        }
        insert_links(&tx, replica, &links).await?;
        copied.added += count(links.len());
        tx.commit().await?;
    }
    Ok(copied)
}

/// The refusal to merge two chains under one name.
fn another_chain(replica: &str, seq: i64) -> StoreError {
    StoreError::Invalid(format!(
        "the database already holds another audit chain for replica {replica} (its record \
         {seq} differs or is missing): copy under another name with --replica"
    ))
}
