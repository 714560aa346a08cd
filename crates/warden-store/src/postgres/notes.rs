//! The notes on PostgreSQL: the same tools, results, caps and pagination as on SQLite.
//! Every statement runs in a transaction that names its tenant (row-level security) and
//! filters by it too.
//!
//! Where it differs from SQLite: ranking is `ts_rank` over weighted columns (title 1,
//! tags 0.5, body 0.25) instead of BM25, so scores are on another scale and close
//! results may order differently; words are not stripped of diacritics (`café` does not
//! find `cafe`); snippets come from the body only.

use tokio_postgres::Row;

use super::{Postgres, tenant_transaction};
use crate::notes::{
    MAX_VERSIONS, Note, NotePatch, NoteSummary, Notes, Page, RANKED_CANDIDATES, Restored,
    SearchHit, decode_cursor_with, new_note_id, page, search_terms,
};
use crate::{Result, StoreFuture, format_time, now_unix};

/// `ts_rank` weights, in the order D, C (body), B (tags), A (title).
const RANK_WEIGHTS: [f32; 4] = [0.1, 0.25, 0.5, 1.0];
/// Words in a snippet at most, as FTS5's `snippet(…, '[', ']', '…', 16)`.
const SNIPPET_WORDS: usize = 16;

/// The newest candidates, ranked, with the bodies of the rows returned: migration 5's
/// `search_notes`, which searches the transaction's tenant only. One statement, one
/// round trip: it is its own transaction, which names the tenant first (the search's
/// words depend on the setting's result, so the setting is made before the search runs;
/// were it not, the search would find nothing). The authors of the few notes found are
/// read afterwards, by row.
const SEARCH: &str = "SELECT s.id, s.title, s.body, s.rank,
        (SELECT n.author FROM notes n WHERE n.tenant = t.tenant AND n.id = s.id)
    FROM (SELECT set_config('warden.tenant', $5, true) AS tenant) t,
         LATERAL search_notes($1 || left(t.tenant, 0), $2, $3, $4) s";

/// Listing cursors (see `notes::SQLITE_CURSOR`).
const CURSOR: &str = "p1:";

const NOTE_COLUMNS: &str = "id, title, body, tags, created_at, updated_at, author";

/// The notes of every tenant in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgNotes {
    db: Postgres,
}

impl PgNotes {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }

    /// Inserts many notes of one tenant in one transaction, 1,000 rows a statement
    /// (benchmarks, imports, `warden store copy`).
    pub async fn create_many(
        &self,
        tenant: &str,
        notes: &[(String, String, Vec<String>)],
    ) -> Result<usize> {
        let now = now_unix();
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        for chunk in notes.chunks(1_000) {
            let ids: Vec<String> = chunk.iter().map(|_| new_note_id()).collect();
            let titles: Vec<&str> = chunk.iter().map(|(title, _, _)| title.as_str()).collect();
            let bodies: Vec<&str> = chunk.iter().map(|(_, body, _)| body.as_str()).collect();
            // Arrays of arrays must be rectangular: tags travel as JSON, one per note.
            let tags: Vec<String> = chunk
                .iter()
                .map(|(_, _, tags)| serde_json::to_string(tags).unwrap_or_else(|_| "[]".into()))
                .collect();
            tx.execute(
                "INSERT INTO notes (id, tenant, title, body, tags, created_at, updated_at)
                 SELECT id, $1, title, body,
                        ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), $6, $6
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                      AS n (id, title, body, tags)",
                &[&tenant, &ids, &titles, &bodies, &tags, &now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(notes.len())
    }

    async fn search_in(
        &self,
        tenant: &str,
        query: &str,
        limit: u32,
    ) -> Result<Option<Vec<SearchHit>>> {
        let terms = search_terms(query);
        if terms.is_empty() {
            return Ok(None);
        }
        let words = terms.join(" ");
        let client = self.db.client().await?;
        let statement = client.prepare_cached(SEARCH).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &words,
                    &i64::from(RANKED_CANDIDATES),
                    &i64::from(limit),
                    &RANK_WEIGHTS.as_slice(),
                    &tenant,
                ],
            )
            .await?;
        let terms: Vec<String> = terms.iter().map(|t| t.to_lowercase()).collect();
        Ok(Some(
            rows.iter()
                .map(|row| SearchHit {
                    id: row.get(0),
                    title: row.get(1),
                    snippet: snippet(row.get(2), &terms),
                    score: row.get(3),
                    author: row.get(4),
                })
                .collect(),
        ))
    }

    async fn get_in(&self, tenant: &str, id: &str) -> Result<Option<Note>> {
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {NOTE_COLUMNS} FROM notes WHERE tenant = $1 AND id = $2"),
                &[&tenant, &id],
            )
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(note_of))
    }

    async fn list_in(
        &self,
        tenant: &str,
        tag: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page> {
        let before = cursor
            .map(|cursor| decode_cursor_with(CURSOR, cursor))
            .transpose()?;
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        // One extra row tells whether another page exists.
        let rows = tx
            .query(
                "SELECT seq, id, title, tags, updated_at, author FROM notes
                 WHERE tenant = $1
                   AND ($2::text IS NULL OR tags @> ARRAY[$2::text])
                   AND ($3::bigint IS NULL OR seq < $3)
                 ORDER BY seq DESC LIMIT $4",
                &[&tenant, &tag, &before, &(i64::from(limit) + 1)],
            )
            .await?;
        tx.commit().await?;
        let notes: Vec<(i64, NoteSummary)> = rows
            .iter()
            .map(|row| {
                (
                    row.get(0),
                    NoteSummary {
                        id: row.get(1),
                        title: row.get(2),
                        tags: row.get(3),
                        updated_at: format_time(row.get(4)),
                        author: row.get(5),
                    },
                )
            })
            .collect();
        Ok(page(notes, limit, CURSOR))
    }

    async fn create_in(
        &self,
        tenant: &str,
        author: Option<&str>,
        (title, body, tags): (&str, &str, &[String]),
    ) -> Result<Note> {
        let now = now_unix();
        let id = new_note_id();
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO notes (id, tenant, title, body, tags, created_at, updated_at, author)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7) RETURNING {NOTE_COLUMNS}"
                ),
                &[&id, &tenant, &title, &body, &tags, &now, &author],
            )
            .await?;
        tx.commit().await?;
        Ok(note_of(&row))
    }

    async fn update_in(
        &self,
        tenant: &str,
        author: &str,
        id: &str,
        patch: &NotePatch,
    ) -> Result<Option<Note>> {
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        if !lock_note(&tx, tenant, id).await? {
            return Ok(None);
        }
        keep_version(&tx, tenant, id).await?;
        let row = tx
            .query_one(
                &format!(
                    "UPDATE notes SET title = coalesce($3, title), body = coalesce($4, body),
                     tags = coalesce($5, tags), updated_at = $6,
                     author = CASE WHEN author = $7 THEN author END
                     WHERE tenant = $1 AND id = $2 RETURNING {NOTE_COLUMNS}"
                ),
                &[
                    &tenant,
                    &id,
                    &patch.title,
                    &patch.body,
                    &patch.tags,
                    &now_unix(),
                    &author,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(Some(note_of(&row)))
    }

    async fn restore_in(&self, tenant: &str, id: &str) -> Result<Restored> {
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        if !lock_note(&tx, tenant, id).await? {
            return Ok(Restored::NoNote);
        }
        let Some(earlier) = tx
            .query_opt(
                "DELETE FROM note_versions WHERE note_id = $1 AND version =
                     (SELECT max(version) FROM note_versions WHERE note_id = $1)
                 RETURNING title, body, tags",
                &[&id],
            )
            .await?
        else {
            return Ok(Restored::NothingEarlier);
        };
        // What the note holds now becomes the newest earlier version: a second restore
        // undoes the first.
        keep_version(&tx, tenant, id).await?;
        let (title, body, tags): (String, String, Vec<String>) =
            (earlier.get(0), earlier.get(1), earlier.get(2));
        let row = tx
            .query_one(
                &format!(
                    "UPDATE notes SET title = $3, body = $4, tags = $5, updated_at = $6
                     WHERE tenant = $1 AND id = $2 RETURNING {NOTE_COLUMNS}"
                ),
                &[&tenant, &id, &title, &body, &tags, &now_unix()],
            )
            .await?;
        tx.commit().await?;
        Ok(Restored::Note(note_of(&row)))
    }

    async fn delete_in(&self, tenant: &str, id: &str) -> Result<bool> {
        let mut client = self.db.client().await?;
        let tx = tenant_transaction(&mut client, tenant).await?;
        let deleted = tx
            .execute(
                "DELETE FROM notes WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }
}

/// Locks the tenant's note `id` for this transaction; false when there is none.
async fn lock_note(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: &str,
) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM notes WHERE tenant = $1 AND id = $2 FOR UPDATE",
            &[&tenant, &id],
        )
        .await?
        .is_some())
}

/// Saves what note `id` holds now as its newest earlier version, dropping the oldest
/// past `MAX_VERSIONS`.
async fn keep_version(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO note_versions (note_id, tenant, version, title, body, tags, replaced_at)
         SELECT id, tenant,
                coalesce((SELECT max(version) FROM note_versions WHERE note_id = $2), 0) + 1,
                title, body, tags, $3
         FROM notes WHERE tenant = $1 AND id = $2",
        &[&tenant, &id, &now_unix()],
    )
    .await?;
    tx.execute(
        "DELETE FROM note_versions WHERE note_id = $1 AND version <=
             (SELECT max(version) FROM note_versions WHERE note_id = $1) - $2",
        &[&id, &i32::try_from(MAX_VERSIONS).unwrap_or(i32::MAX)],
    )
    .await?;
    Ok(())
}

fn note_of(row: &Row) -> Note {
    Note {
        id: row.get(0),
        title: row.get(1),
        body: row.get(2),
        tags: row.get(3),
        created_at: format_time(row.get(4)),
        updated_at: format_time(row.get(5)),
        author: row.get(6),
    }
}

/// Up to [`SNIPPET_WORDS`] words of `body` where the most of `terms` (lowercase) meet,
/// each match in brackets and `…` where the body was cut: what FTS5's `snippet()` gives
/// on SQLite. Words are runs of letters and digits, compared lowercased (as the
/// `simple` configuration does).
fn snippet(body: &str, terms: &[String]) -> String {
    let mut words: Vec<(usize, usize, bool)> = Vec::new();
    let mut start = None;
    for (at, c) in body
        .char_indices()
        .chain(std::iter::once((body.len(), ' ')))
    {
        match (start, c.is_alphanumeric()) {
            (None, true) => start = Some(at),
            (Some(from), false) => {
                let word = body[from..at].to_lowercase();
                words.push((from, at, terms.contains(&word)));
                start = None;
            }
            _ => {}
        }
    }
    if words.is_empty() {
        return String::new();
    }
    // Windows of SNIPPET_WORDS words that open three words before a match; the first
    // of those holding the most matches (the body's start when nothing matches).
    let span = SNIPPET_WORDS.min(words.len());
    let matches_in = |first: usize| words[first..first + span].iter().filter(|w| w.2).count();
    let first = words
        .iter()
        .enumerate()
        .filter(|(_, word)| word.2)
        .map(|(at, _)| at.saturating_sub(3).min(words.len() - span))
        .max_by_key(|&first| (matches_in(first), std::cmp::Reverse(first)))
        .unwrap_or(0);
    let window = &words[first..first + span];
    let mut text = String::new();
    if first > 0 {
        text.push('…');
    }
    let mut at = window[0].0;
    for &(from, to, matched) in window {
        text.push_str(&body[at..from]);
        if matched {
            text.push('[');
            text.push_str(&body[from..to]);
            text.push(']');
        } else {
            text.push_str(&body[from..to]);
        }
        at = to;
    }
    if first + span < words.len() {
        text.push('…');
    }
    text
}

impl Notes for PgNotes {
    fn search<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Option<Vec<SearchHit>>> {
        Box::pin(self.search_in(tenant, query, limit))
    }

    fn get<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Option<Note>> {
        Box::pin(self.get_in(tenant, id))
    }

    fn list<'a>(
        &'a self,
        tenant: &'a str,
        tag: Option<&'a str>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page> {
        Box::pin(self.list_in(tenant, tag, cursor, limit))
    }

    fn create<'a>(
        &'a self,
        tenant: &'a str,
        author: Option<&'a str>,
        title: &'a str,
        body: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, Note> {
        Box::pin(self.create_in(tenant, author, (title, body, tags)))
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        author: &'a str,
        id: &'a str,
        patch: &'a NotePatch,
    ) -> StoreFuture<'a, Option<Note>> {
        Box::pin(self.update_in(tenant, author, id, patch))
    }

    fn restore<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Restored> {
        Box::pin(self.restore_in(tenant, id))
    }

    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_in(tenant, id))
    }
}

#[cfg(test)]
mod tests {
    use super::snippet;

    #[test]
    fn snippets_bracket_the_words_found_where_most_of_them_meet() {
        let terms = ["wombat".to_owned(), "food".to_owned()];
        assert_eq!(snippet("Buy Wombat food!", &terms), "Buy [Wombat] [food]");
        let long = format!(
            "{} wombat and its food {}",
            "a ".repeat(30),
            "b ".repeat(30)
        );
        let cut = snippet(&long, &terms);
        assert!(cut.starts_with('…') && cut.ends_with('…'), "{cut}");
        assert!(cut.contains("[wombat] and its [food]"), "{cut}");
        assert_eq!(cut.split_whitespace().count(), 16, "{cut}");
        // No match: the beginning of the body; no words at all: nothing.
        assert_eq!(snippet("café au lait", &terms), "café au lait");
        assert_eq!(snippet(" … ", &terms), "");
    }
}
