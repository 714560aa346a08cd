//! The embedded knowledge base. Every statement takes the tenant as a bound parameter;
//! reads go through connections SQLite opened read-only.

use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::keys::random_hex;
use crate::{DataDir, Result, StoreError, StoreFuture, db, now_unix};

pub(crate) const FILE: &str = "notes.db";
pub(crate) const MIGRATIONS: &[&str] = &["
    -- Each tenant owns one contiguous range of note rowids (its number << TENANT_SHIFT
    -- onwards), so a full-text search is confined to one tenant by a rowid range that
    -- FTS5 seeks to directly, instead of ranking every tenant's matches. Rowids count
    -- down within the range: newest first is ascending order, which FTS5 streams.
    CREATE TABLE tenants (
        num  INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    ) STRICT;
    CREATE TABLE notes (
        seq        INTEGER PRIMARY KEY,
        id         TEXT NOT NULL UNIQUE,
        tenant     TEXT NOT NULL,
        title      TEXT NOT NULL,
        body       TEXT NOT NULL,
        tags       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX notes_by_tenant ON notes (tenant, seq);
    CREATE TABLE note_tags (
        tenant TEXT NOT NULL,
        tag    TEXT NOT NULL,
        seq    INTEGER NOT NULL REFERENCES notes (seq) ON DELETE CASCADE,
        PRIMARY KEY (tenant, tag, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX note_tags_by_note ON note_tags (seq);
    CREATE VIRTUAL TABLE notes_fts USING fts5 (
        title, body, tags,
        content = 'notes', content_rowid = 'seq',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
        INSERT INTO notes_fts (rowid, title, body, tags) VALUES (new.seq, new.title, new.body, new.tags);
    END;
    CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN
        INSERT INTO notes_fts (notes_fts, rowid, title, body, tags)
        VALUES ('delete', old.seq, old.title, old.body, old.tags);
    END;
    CREATE TRIGGER notes_fts_update AFTER UPDATE ON notes BEGIN
        INSERT INTO notes_fts (notes_fts, rowid, title, body, tags)
        VALUES ('delete', old.seq, old.title, old.body, old.tags);
        INSERT INTO notes_fts (rowid, title, body, tags) VALUES (new.seq, new.title, new.body, new.tags);
    END;
", "
    -- What a note held before each of its last changes, newest the highest version:
    -- an update (even one that blanks a note) can be undone. Deleting the note deletes
    -- them too.
    CREATE TABLE note_versions (
        seq         INTEGER NOT NULL REFERENCES notes (seq) ON DELETE CASCADE,
        version     INTEGER NOT NULL,
        title       TEXT NOT NULL,
        body        TEXT NOT NULL,
        tags        TEXT NOT NULL,
        replaced_at INTEGER NOT NULL,
        PRIMARY KEY (seq, version)
    ) STRICT, WITHOUT ROWID;
", "
    -- Who wrote a note (see `Note::author`).
    ALTER TABLE notes ADD COLUMN author TEXT;
"];

/// Earlier versions kept per note; older ones are dropped.
pub(crate) const MAX_VERSIONS: i64 = 20;

/// Once the schema is in place, a connection may only read and write the notes tables:
/// SQLite's authorizer refuses DROP, ALTER, ATTACH, CREATE, PRAGMA writes and any other
/// table, so that even a query built wrongly (or an injected one) cannot reach further.
fn least_privilege(conn: &Connection) {
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    fn notes_table(name: &str) -> bool {
        matches!(name, "tenants" | "notes" | "note_tags" | "note_versions")
            || name.starts_with("notes_fts")
    }
    conn.authorizer(Some(|context: AuthContext<'_>| match context.action {
        AuthAction::Select
        | AuthAction::Transaction { .. }
        | AuthAction::Savepoint { .. }
        | AuthAction::Function { .. }
        | AuthAction::Recursive => Authorization::Allow,
        AuthAction::Read { table_name, .. } => {
            if notes_table(table_name) || matches!(table_name, "sqlite_master" | "sqlite_schema") {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
            if notes_table(table_name) =>
        {
            Authorization::Allow
        }
        // Reading a setting is harmless; changing one is not.
        AuthAction::Pragma {
            pragma_value: None, ..
        } => Authorization::Allow,
        _ => Authorization::Deny,
    }));
}

/// Bits of a note rowid below the tenant number: 2^40 notes per tenant, 2^22 tenants.
const TENANT_SHIFT: u32 = 40;
/// A search ranks at most this many of a tenant's matches, the newest ones, so that a
/// query matching most notes costs the same as one matching a few thousand.
pub(crate) const RANKED_CANDIDATES: u32 = 1_000;

/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;
/// Search terms beyond this are ignored: a longer query is not a better one.
const MAX_SEARCH_TERMS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub id: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Who wrote it: the one key (or OAuth client) that created it and made every change
    /// since, or `None` once a second one changed it, for a note imported from outside
    /// (`import_url`, `create_many`) and for notes older than this record. Never shown:
    /// the gateway counts text written by anyone but the reader as untrusted.
    #[serde(skip)]
    pub author: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoteSummary {
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    pub updated_at: String,
    /// As [`Note::author`].
    #[serde(skip)]
    pub author: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub title: String,
    pub snippet: String,
    pub score: f64,
    /// As [`Note::author`].
    #[serde(skip)]
    pub author: Option<String>,
}

/// One page of a listing; `next_cursor` is opaque to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub notes: Vec<NoteSummary>,
    pub next_cursor: Option<String>,
}

/// What `restore` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    Note(Note),
    /// The tenant has no such note.
    NoNote,
    /// The note has never been changed (or its earlier versions are gone).
    NothingEarlier,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct NotePatch {
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
}

pub struct NotesStore {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

impl fmt::Debug for NotesStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotesStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The rowid range a tenant's notes live in.
fn tenant_range(num: i64) -> (i64, i64) {
    (num << TENANT_SHIFT, ((num + 1) << TENANT_SHIFT) - 1)
}

fn tenant_num(conn: &Connection, tenant: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT num FROM tenants WHERE name = ?1")?
        .query_row([tenant], |row| row.get(0))
        .optional()?)
}

/// The tenant's number, registering the tenant on its first note.
fn ensure_tenant_num(conn: &Connection, tenant: &str) -> Result<i64> {
    conn.prepare_cached("INSERT OR IGNORE INTO tenants (name) VALUES (?1)")?
        .execute([tenant])?;
    let num = tenant_num(conn, tenant)?
        .ok_or_else(|| StoreError::Invalid("tenant registration failed".into()))?;
    if num >= 1 << (62 - TENANT_SHIFT) {
        return Err(StoreError::Invalid("too many tenants".into()));
    }
    Ok(num)
}

/// The next free rowid in the tenant's range: one below the newest note's.
fn next_seq(conn: &Connection, num: i64) -> Result<i64> {
    let (low, high) = tenant_range(num);
    let newest: Option<i64> = conn
        .prepare_cached("SELECT min(seq) FROM notes WHERE seq BETWEEN ?1 AND ?2")?
        .query_row([low, high], |row| row.get(0))?;
    let next = newest.map_or(high, |newest| newest - 1);
    if next < low {
        return Err(StoreError::Invalid("the tenant has too many notes".into()));
    }
    Ok(next)
}

/// The words of a search: runs of letters and digits, at most `MAX_SEARCH_TERMS`, every
/// one required. Both backends search for exactly these.
pub(crate) fn search_terms(query: &str) -> Vec<&str> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_SEARCH_TERMS)
        .collect()
}

/// Turns free text into a safe FTS5 query: every word becomes a quoted term (so no FTS5
/// operator or syntax error can come from a client), all of them required.
fn match_expression(query: &str) -> Option<String> {
    let terms: Vec<String> = search_terms(query)
        .into_iter()
        .map(|t| format!("\"{t}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// The cursors of SQLite listings; PostgreSQL's have their own prefix, so that a
/// cursor never means one position in one store and another in the other.
pub(crate) const SQLITE_CURSOR: &str = "n1:";

fn decode_cursor(cursor: &str) -> Result<i64> {
    decode_cursor_with(SQLITE_CURSOR, cursor)
}

/// A page of a listing fetched with one row more than `limit`: that row, if it came,
/// says another page exists, which the cursor (`prefix` and the last row's `seq`)
/// continues.
pub(crate) fn page(mut rows: Vec<(i64, NoteSummary)>, limit: u32, prefix: &str) -> Page {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(seq, _)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{prefix}{seq}"))
        })
    } else {
        None
    };
    Page {
        notes: rows.into_iter().map(|(_, note)| note).collect(),
        next_cursor,
    }
}

pub(crate) fn decode_cursor_with(prefix: &str, cursor: &str) -> Result<i64> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(prefix).and_then(|n| n.parse().ok()))
        .ok_or(StoreError::Cursor)
}

fn tags_from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn note_from_row(row: &Row<'_>) -> rusqlite::Result<Note> {
    Ok(Note {
        id: row.get(0)?,
        title: row.get(1)?,
        body: row.get(2)?,
        tags: tags_from_json(&row.get::<_, String>(3)?),
        created_at: crate::format_time(row.get(4)?),
        updated_at: crate::format_time(row.get(5)?),
        author: row.get(6)?,
    })
}

/// The rowid of the tenant's note `id`.
fn seq_of(conn: &Connection, tenant: &str, id: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT seq FROM notes WHERE tenant = ?1 AND id = ?2",
            params![tenant, id],
            |r| r.get::<_, i64>(0),
        )
        .optional()?)
}

/// Saves what note `seq` holds now as its newest earlier version, dropping the oldest
/// past `MAX_VERSIONS`.
fn keep_version(conn: &Connection, seq: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO note_versions (seq, version, title, body, tags, replaced_at)
         SELECT seq, coalesce((SELECT max(version) FROM note_versions WHERE seq = ?1), 0) + 1,
                title, body, tags, ?2
         FROM notes WHERE seq = ?1",
        params![seq, now_unix()],
    )?;
    conn.execute(
        "DELETE FROM note_versions WHERE seq = ?1 AND version <=
            (SELECT max(version) FROM note_versions WHERE seq = ?1) - ?2",
        params![seq, MAX_VERSIONS],
    )?;
    Ok(())
}

const SELECT_NOTE: &str = "SELECT id, title, body, tags, created_at, updated_at, author
    FROM notes WHERE tenant = ?1 AND id = ?2";

impl NotesStore {
    pub fn open(dir: &DataDir) -> Result<Self> {
        let path = dir.file(FILE);
        let mut writer = db::open_writer(&path)?;
        db::migrate(&mut writer, MIGRATIONS)?;
        least_privilege(&writer);
        Ok(Self {
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            path,
        })
    }

    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = db::open_reader(&self.path)?;
                least_privilege(&conn);
                conn
            }
        };
        let result = f(&conn);
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }

    /// Ranked full-text search within one tenant. An empty result for a query with no
    /// searchable words is reported as `None`. Queries matching more than
    /// `RANKED_CANDIDATES` notes rank the newest that many.
    pub fn search(&self, tenant: &str, query: &str, limit: u32) -> Result<Option<Vec<SearchHit>>> {
        let Some(expression) = match_expression(query) else {
            return Ok(None);
        };
        self.read(|conn| {
            let Some(num) = tenant_num(conn, tenant)? else {
                return Ok(Some(Vec::new()));
            };
            let (low, high) = tenant_range(num);
            // The newest candidates, by rowid alone (no ranking needed to find them).
            let oldest: Option<i64> = conn
                .prepare_cached(
                    "SELECT max(seq) FROM (SELECT rowid AS seq FROM notes_fts
                     WHERE notes_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3 ORDER BY rowid LIMIT ?4)",
                )?
                .query_row(params![expression, low, high, RANKED_CANDIDATES], |row| {
                    row.get(0)
                })?;
            let Some(oldest) = oldest else {
                return Ok(Some(Vec::new()));
            };
            // Rank the candidates, then build snippets for the few rows returned. The join
            // re-checks the tenant: the rowid range is an optimisation, not the only guard.
            let mut stmt = conn.prepare_cached(
                "WITH ranked AS (
                     SELECT rowid AS seq, bm25(notes_fts, 4.0, 1.0, 2.0) AS rank
                     FROM notes_fts WHERE notes_fts MATCH ?1 AND rowid BETWEEN ?3 AND ?4
                     ORDER BY rank LIMIT ?5
                 )
                 SELECT n.id, n.title, snippet(notes_fts, -1, '[', ']', '…', 16), ranked.rank,
                        n.author
                 FROM ranked
                 JOIN notes n ON n.seq = ranked.seq AND n.tenant = ?2
                 JOIN notes_fts ON notes_fts.rowid = ranked.seq
                 WHERE notes_fts MATCH ?1
                 ORDER BY ranked.rank",
            )?;
            let hits = stmt.query_map(params![expression, tenant, low, oldest, limit], |row| {
                Ok(SearchHit {
                    id: row.get(0)?,
                    title: row.get(1)?,
                    snippet: row.get(2)?,
                    score: -row.get::<_, f64>(3)?,
                    author: row.get(4)?,
                })
            })?;
            Ok(Some(hits.collect::<rusqlite::Result<_>>()?))
        })
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<Option<Note>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(SELECT_NOTE)?
                .query_row(params![tenant, id], note_from_row)
                .optional()?)
        })
    }

    /// Newest first, optionally only notes carrying `tag`.
    pub fn list(
        &self,
        tenant: &str,
        tag: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page> {
        let after = cursor.map(decode_cursor).transpose()?.unwrap_or(i64::MIN);
        self.read(|conn| {
            let sql = if tag.is_some() {
                "SELECT n.seq, n.id, n.title, n.tags, n.updated_at, n.author
                 FROM note_tags t JOIN notes n ON n.seq = t.seq
                 WHERE t.tenant = ?1 AND t.tag = ?2 AND t.seq > ?3 ORDER BY t.seq LIMIT ?4"
            } else {
                "SELECT seq, id, title, tags, updated_at, author FROM notes
                 WHERE tenant = ?1 AND ?2 IS NULL AND seq > ?3 ORDER BY seq LIMIT ?4"
            };
            let mut stmt = conn.prepare_cached(sql)?;
            // One extra row tells whether another page exists.
            let rows = stmt.query_map(params![tenant, tag, after, limit + 1], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    NoteSummary {
                        id: row.get(1)?,
                        title: row.get(2)?,
                        tags: tags_from_json(&row.get::<_, String>(3)?),
                        updated_at: crate::format_time(row.get(4)?),
                        author: row.get(5)?,
                    },
                ))
            })?;
            let rows: Vec<(i64, NoteSummary)> = rows.collect::<rusqlite::Result<_>>()?;
            Ok(page(rows, limit, SQLITE_CURSOR))
        })
    }

    /// A new note by `author` (`None`: text from outside, see [`Note::author`]).
    pub fn create(
        &self,
        tenant: &str,
        author: Option<&str>,
        title: &str,
        body: &str,
        tags: &[String],
    ) -> Result<Note> {
        let now = now_unix();
        let id = new_note_id();
        self.write(|conn| {
            let tx = conn.transaction()?;
            let num = ensure_tenant_num(&tx, tenant)?;
            insert_note(&tx, tenant, num, &id, author, (title, body, tags), now)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(Note {
            id,
            title: title.to_owned(),
            body: body.to_owned(),
            tags: tags.to_vec(),
            created_at: crate::format_time(now),
            updated_at: crate::format_time(now),
            author: author.map(str::to_owned),
        })
    }

    /// Applies `patch` by `author`, keeping what the note held before as its newest
    /// earlier version; `None` when the tenant has no such note.
    pub fn update(
        &self,
        tenant: &str,
        author: &str,
        id: &str,
        patch: &NotePatch,
    ) -> Result<Option<Note>> {
        self.write(|conn| {
            let tx = conn.transaction()?;
            let Some(seq) = seq_of(&tx, tenant, id)? else {
                return Ok(None);
            };
            let tags_json = patch
                .tags
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            keep_version(&tx, seq)?;
            tx.execute(
                "UPDATE notes SET title = coalesce(?2, title), body = coalesce(?3, body),
                 tags = coalesce(?4, tags), updated_at = ?5,
                 author = CASE WHEN author = ?6 THEN author END WHERE seq = ?1",
                params![seq, patch.title, patch.body, tags_json, now_unix(), author],
            )?;
            if let Some(tags) = &patch.tags {
                tx.execute("DELETE FROM note_tags WHERE seq = ?1", [seq])?;
                insert_tags(&tx, tenant, seq, tags)?;
            }
            let note = tx.query_row(SELECT_NOTE, params![tenant, id], note_from_row)?;
            tx.commit()?;
            Ok(Some(note))
        })
    }

    /// Brings back the note as it was before its last change; what it holds now becomes
    /// the newest earlier version, so a second restore undoes the first.
    pub fn restore(&self, tenant: &str, id: &str) -> Result<Restored> {
        self.write(|conn| {
            let tx = conn.transaction()?;
            let Some(seq) = seq_of(&tx, tenant, id)? else {
                return Ok(Restored::NoNote);
            };
            let earlier: Option<(i64, String, String, String)> = tx
                .query_row(
                    "SELECT version, title, body, tags FROM note_versions WHERE seq = ?1
                     ORDER BY version DESC LIMIT 1",
                    [seq],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((version, title, body, tags)) = earlier else {
                return Ok(Restored::NothingEarlier);
            };
            tx.execute(
                "DELETE FROM note_versions WHERE seq = ?1 AND version = ?2",
                params![seq, version],
            )?;
            keep_version(&tx, seq)?;
            tx.execute(
                "UPDATE notes SET title = ?2, body = ?3, tags = ?4, updated_at = ?5 WHERE seq = ?1",
                params![seq, title, body, tags, now_unix()],
            )?;
            tx.execute("DELETE FROM note_tags WHERE seq = ?1", [seq])?;
            insert_tags(&tx, tenant, seq, &tags_from_json(&tags))?;
            let note = tx.query_row(SELECT_NOTE, params![tenant, id], note_from_row)?;
            tx.commit()?;
            Ok(Restored::Note(note))
        })
    }

    /// Deletes a note; false when the tenant has no such note.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<bool> {
        self.write(|conn| {
            Ok(conn.execute(
                "DELETE FROM notes WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
            )? == 1)
        })
    }

    /// Inserts many notes in one transaction (benchmarks and imports).
    pub fn create_many(
        &self,
        tenant: &str,
        notes: impl IntoIterator<Item = (String, String, Vec<String>)>,
    ) -> Result<usize> {
        let now = now_unix();
        self.write(|conn| {
            let tx = conn.transaction()?;
            let num = ensure_tenant_num(&tx, tenant)?;
            let mut count = 0;
            for (title, body, tags) in notes {
                insert_note(
                    &tx,
                    tenant,
                    num,
                    &new_note_id(),
                    None,
                    (&title, &body, &tags),
                    now,
                )?;
                count += 1;
            }
            tx.commit()?;
            Ok(count)
        })
    }
}

pub(crate) fn new_note_id() -> String {
    format!("n_{}", random_hex(8))
}

/// Inserts one note (and its tags) at the next rowid of the tenant's range.
fn insert_note(
    conn: &Connection,
    tenant: &str,
    num: i64,
    id: &str,
    author: Option<&str>,
    (title, body, tags): (&str, &str, &[String]),
    now: i64,
) -> Result<()> {
    let tags_json = serde_json::to_string(tags).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let seq = next_seq(conn, num)?;
    conn.prepare_cached(
        "INSERT INTO notes (seq, id, tenant, title, body, tags, created_at, updated_at, author)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
    )?
    .execute(params![
        seq, id, tenant, title, body, tags_json, now, author
    ])?;
    insert_tags(conn, tenant, seq, tags)
}

fn insert_tags(conn: &Connection, tenant: &str, seq: i64, tags: &[String]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO note_tags (tenant, tag, seq) VALUES (?1, ?2, ?3)")?;
    for tag in tags {
        stmt.execute(params![tenant, tag, seq])?;
    }
    Ok(())
}

/// The notes of every tenant, whichever database holds them. Every method is confined
/// to `tenant`; none reads across tenants.
pub trait Notes: fmt::Debug + Send + Sync {
    /// `None` when the query has no searchable words.
    fn search<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Option<Vec<SearchHit>>>;
    fn get<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Option<Note>>;
    /// Newest first, `limit` at a time; `cursor` continues an earlier page.
    fn list<'a>(
        &'a self,
        tenant: &'a str,
        tag: Option<&'a str>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page>;
    /// A note by `author`; `None` for text from outside (see [`Note::author`]).
    fn create<'a>(
        &'a self,
        tenant: &'a str,
        author: Option<&'a str>,
        title: &'a str,
        body: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, Note>;
    /// Keeps what the note held as its newest earlier version. A change by anyone but
    /// the note's author leaves it without one.
    fn update<'a>(
        &'a self,
        tenant: &'a str,
        author: &'a str,
        id: &'a str,
        patch: &'a NotePatch,
    ) -> StoreFuture<'a, Option<Note>>;
    /// Brings back the newest earlier version.
    fn restore<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Restored>;
    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, bool>;
}

/// [`NotesStore`] for async callers: each call runs on a blocking thread.
#[derive(Debug, Clone)]
pub struct SqliteNotes(Arc<NotesStore>);

impl SqliteNotes {
    pub fn new(store: Arc<NotesStore>) -> Self {
        Self(store)
    }

    fn blocking<'a, T: Send + 'static>(
        &self,
        work: impl FnOnce(&NotesStore) -> Result<T> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        crate::on_blocking_thread(&self.0, "notes", work)
    }
}

impl Notes for SqliteNotes {
    fn search<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Option<Vec<SearchHit>>> {
        let (tenant, query) = (tenant.to_owned(), query.to_owned());
        self.blocking(move |store| store.search(&tenant, &query, limit))
    }

    fn get<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Option<Note>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.blocking(move |store| store.get(&tenant, &id))
    }

    fn list<'a>(
        &'a self,
        tenant: &'a str,
        tag: Option<&'a str>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page> {
        let tenant = tenant.to_owned();
        let (tag, cursor) = (tag.map(str::to_owned), cursor.map(str::to_owned));
        self.blocking(move |store| store.list(&tenant, tag.as_deref(), cursor.as_deref(), limit))
    }

    fn create<'a>(
        &'a self,
        tenant: &'a str,
        author: Option<&'a str>,
        title: &'a str,
        body: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, Note> {
        let (tenant, title, body) = (tenant.to_owned(), title.to_owned(), body.to_owned());
        let (author, tags) = (author.map(str::to_owned), tags.to_vec());
        self.blocking(move |store| store.create(&tenant, author.as_deref(), &title, &body, &tags))
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        author: &'a str,
        id: &'a str,
        patch: &'a NotePatch,
    ) -> StoreFuture<'a, Option<Note>> {
        let (tenant, author) = (tenant.to_owned(), author.to_owned());
        let (id, patch) = (id.to_owned(), patch.clone());
        self.blocking(move |store| store.update(&tenant, &author, &id, &patch))
    }

    fn restore<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Restored> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.blocking(move |store| store.restore(&tenant, &id))
    }

    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.blocking(move |store| store.delete(&tenant, &id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, NotesStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = NotesStore::open(&DataDir::open(tmp.path()).unwrap()).unwrap();
        (tmp, store)
    }

    #[test]
    fn an_update_can_be_undone_and_a_restore_too() {
        let (_tmp, store) = store();
        let note = store
            .create(
                "acme",
                Some("key_a"),
                "Plan",
                "the whole plan",
                &["a".into()],
            )
            .unwrap();
        assert_eq!(
            store.restore("acme", &note.id).unwrap(),
            Restored::NothingEarlier
        );
        let blank = NotePatch {
            body: Some(String::new()),
            tags: Some(Vec::new()),
            ..NotePatch::default()
        };
        store
            .update("acme", "key_a", &note.id, &blank)
            .unwrap()
            .unwrap();
        // Another tenant cannot restore (or see) it.
        assert_eq!(store.restore("globex", &note.id).unwrap(), Restored::NoNote);
        let Restored::Note(back) = store.restore("acme", &note.id).unwrap() else {
            panic!("not restored");
        };
        assert_eq!(
            (back.body.as_str(), back.tags.clone()),
            ("the whole plan", vec!["a".to_owned()])
        );
        assert_eq!(
            store.list("acme", Some("a"), None, 10).unwrap().notes.len(),
            1
        );
        // Restoring again undoes the restore.
        let Restored::Note(again) = store.restore("acme", &note.id).unwrap() else {
            panic!("not restored");
        };
        assert_eq!(again.body, "");
        // Versions are bounded.
        for i in 0..(MAX_VERSIONS + 5) {
            let patch = NotePatch {
                body: Some(format!("v{i}")),
                ..NotePatch::default()
            };
            store.update("acme", "key_a", &note.id, &patch).unwrap();
        }
        let kept: i64 = store
            .read(
                |conn| Ok(conn.query_row("SELECT count(*) FROM note_versions", [], |r| r.get(0))?),
            )
            .unwrap();
        assert_eq!(kept, MAX_VERSIONS);
        assert!(store.delete("acme", &note.id).unwrap());
        let kept: i64 = store
            .read(
                |conn| Ok(conn.query_row("SELECT count(*) FROM note_versions", [], |r| r.get(0))?),
            )
            .unwrap();
        assert_eq!(kept, 0, "versions go with their note");
    }

    #[test]
    fn the_connections_cannot_reach_beyond_the_notes_tables() {
        let (tmp, store) = store();
        let outside = tmp.path().join("elsewhere.db");
        for sql in [
            "DROP TABLE notes".to_owned(),
            "DROP TRIGGER notes_fts_insert".to_owned(),
            "ALTER TABLE notes ADD COLUMN x TEXT".to_owned(),
            "CREATE TABLE stolen (x)".to_owned(),
            format!("ATTACH DATABASE '{}' AS other", outside.display()),
            "PRAGMA journal_mode = DELETE".to_owned(),
            "PRAGMA writable_schema = ON".to_owned(),
            "DELETE FROM sqlite_master".to_owned(),
        ] {
            let written = store.write(|conn| Ok(conn.execute_batch(&sql)));
            assert!(written.unwrap().is_err(), "the writer ran {sql}");
            let read = store.read(|conn| Ok(conn.execute_batch(&sql)));
            assert!(read.unwrap().is_err(), "a reader ran {sql}");
        }
        assert!(!outside.exists());
        // The store itself still works.
        let note = store.create("acme", Some("key_a"), "t", "b", &[]).unwrap();
        assert_eq!(store.get("acme", &note.id).unwrap().unwrap().title, "t");
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_search_update_delete() {
        let (_tmp, store) = store();
        let note = store
            .create(
                "a",
                Some("key_a"),
                "Rust ownership",
                "Borrowing rules explained",
                &tags(&["rust"]),
            )
            .unwrap();
        let hits = store.search("a", "borrowing", 10).unwrap().unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, note.id);
        assert!(
            hits[0].snippet.contains("[Borrowing]"),
            "{}",
            hits[0].snippet
        );

        let patch = NotePatch {
            body: Some("Lifetimes instead".into()),
            ..Default::default()
        };
        let updated = store
            .update("a", "key_a", &note.id, &patch)
            .unwrap()
            .unwrap();
        assert_eq!(updated.title, "Rust ownership");
        assert!(
            store
                .search("a", "borrowing", 10)
                .unwrap()
                .unwrap()
                .is_empty(),
            "index follows updates"
        );
        assert_eq!(
            store.search("a", "lifetimes", 10).unwrap().unwrap().len(),
            1
        );

        assert!(store.delete("a", &note.id).unwrap());
        assert!(store.get("a", &note.id).unwrap().is_none());
        assert!(
            store
                .search("a", "lifetimes", 10)
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn tenants_never_see_each_other() {
        let (_tmp, store) = store();
        let secret = store
            .create(
                "acme",
                Some("key_a"),
                "Plans",
                "merger codename bluebird",
                &tags(&["x"]),
            )
            .unwrap();
        // Tenant names that tokenise alike must still be distinct.
        for other in ["acme-x", "x-acme", "ACME", "acm"] {
            assert!(
                store
                    .search(other, "bluebird", 10)
                    .unwrap()
                    .unwrap()
                    .is_empty()
            );
            assert!(store.get(other, &secret.id).unwrap().is_none());
            assert!(store.list(other, None, None, 10).unwrap().notes.is_empty());
            assert!(
                store
                    .list(other, Some("x"), None, 10)
                    .unwrap()
                    .notes
                    .is_empty()
            );
            assert!(
                store
                    .update(other, "key_a", &secret.id, &NotePatch::default())
                    .unwrap()
                    .is_none()
            );
            assert!(!store.delete(other, &secret.id).unwrap());
        }
        assert!(store.get("acme", &secret.id).unwrap().is_some());
    }

    #[test]
    fn hostile_queries_are_plain_words() {
        let (_tmp, store) = store();
        store
            .create("a", Some("key_a"), "t", "alpha beta", &[])
            .unwrap();
        for query in [
            "alpha OR",
            "\"alpha",
            "alpha*",
            "NEAR(alpha beta)",
            "title:alpha",
            "tags:x",
            "a\0b",
        ] {
            store.search("a", query, 10).unwrap();
        }
        assert_eq!(store.search("a", "?? !!", 10).unwrap(), None);
    }

    fn titles(page: &Page) -> Vec<&str> {
        page.notes.iter().map(|n| n.title.as_str()).collect()
    }

    #[test]
    fn listing_pages_by_tag() {
        let (_tmp, store) = store();
        for i in 0..5 {
            store
                .create(
                    "a",
                    Some("key_a"),
                    &format!("n{i}"),
                    "b",
                    &tags(if i % 2 == 0 { &["even"] } else { &["odd"] }),
                )
                .unwrap();
        }
        let first = store.list("a", None, None, 2).unwrap();
        assert_eq!(titles(&first), ["n4", "n3"]);
        let second = store
            .list("a", None, first.next_cursor.as_deref(), 2)
            .unwrap();
        assert_eq!(titles(&second), ["n2", "n1"]);
        let third = store
            .list("a", None, second.next_cursor.as_deref(), 2)
            .unwrap();
        assert_eq!(third.notes.len(), 1);
        assert_eq!(third.next_cursor, None);
        let even = store.list("a", Some("even"), None, 10).unwrap();
        assert_eq!(even.notes.len(), 3);
        assert!(store.list("a", None, Some("garbage"), 2).is_err());
    }

    #[test]
    fn readers_cannot_write() {
        let (_tmp, store) = store();
        let err = store
            .read(|conn| Ok(conn.execute("DELETE FROM notes", [])?))
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
