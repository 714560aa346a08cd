//! `notes`, the knowledge base Warden serves when nothing else is configured. It is an
//! MCP server in process: its tool and resource definitions are data the gateway puts in
//! its catalogue (and validates calls against), and its handlers run on already
//! validated arguments for an authenticated tenant.

mod definitions;

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warden_store::notes::{NotePatch, Restored};
use warden_store::{Notes, StoreError};

pub use definitions::{
    PRIVATE_RESULTS, RESOURCE_SCHEME, UNTRUSTED_RESULTS, resource_templates, tool_definitions,
};

#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    /// The arguments passed the schema but still do not fit (a defect in the schema).
    #[error("the arguments do not fit the tool")]
    Arguments,
    #[error("unknown tool")]
    UnknownTool,
    #[error("the cursor is not one this server issued")]
    Cursor,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for NotesError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Cursor => Self::Cursor,
            other => Self::Store(other),
        }
    }
}

pub type Result<T, E = NotesError> = std::result::Result<T, E>;

/// A tool's answer: `structuredContent` on success, a message for the model otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    Structured(Value),
    ToolError(String),
}

/// Where a result that shows text someone other than the asker wrote (another key's
/// note, a web page `import_url` saved) says so: `"_meta": {FOREIGN_TEXT: true}`. The
/// gateway takes the mark off (it trusts it from this server only) and counts the
/// result as untrusted for the session's flow state.
pub const FOREIGN_TEXT: &str = "warden/foreign-text";

/// A tool's answer, and whether it shows text someone other than the asker wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub outcome: ToolOutcome,
    pub foreign: bool,
}

impl Answer {
    fn own(outcome: ToolOutcome) -> Self {
        Self {
            outcome,
            foreign: false,
        }
    }

    /// The MCP `CallToolResult`, marked when it shows foreign text.
    pub fn into_result(self) -> Value {
        let mut result = self.outcome.into_result();
        if self.foreign {
            mark_foreign(&mut result);
        }
        result
    }
}

/// Marks a result as showing text someone other than the asker wrote.
fn mark_foreign(result: &mut Value) {
    result["_meta"] = json!({ FOREIGN_TEXT: true });
}

/// Whether text by `author` is foreign to `asker`: written by another, or by no one
/// in particular (see `Note::author`).
fn foreign_to(asker: &str, author: Option<&str>) -> bool {
    author != Some(asker)
}

/// Whether any of the texts by `authors` is foreign to `asker`.
fn any_foreign<'a>(asker: &str, mut authors: impl Iterator<Item = &'a Option<String>>) -> bool {
    authors.any(|author| foreign_to(asker, author.as_deref()))
}

impl ToolOutcome {
    /// The MCP `CallToolResult`; structured results are mirrored as text for clients
    /// that only read `content`.
    pub fn into_result(self) -> Value {
        match self {
            Self::Structured(value) => json!({
                "content": [{ "type": "text", "text": value.to_string() }],
                "structuredContent": value,
                "isError": false,
            }),
            Self::ToolError(message) => json!({
                "content": [{ "type": "text", "text": message }],
                "isError": true,
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NotesServer {
    store: Arc<dyn Notes>,
}

#[derive(Deserialize)]
struct SearchArgs {
    query: String,
    #[serde(default = "default_search_limit")]
    limit: u32,
}

fn default_search_limit() -> u32 {
    10
}

#[derive(Deserialize)]
struct IdArgs {
    id: String,
}

#[derive(Deserialize)]
struct ListArgs {
    tag: Option<String>,
    cursor: Option<String>,
    #[serde(default = "default_list_limit")]
    limit: u32,
}

fn default_list_limit() -> u32 {
    20
}

#[derive(Deserialize)]
struct CreateArgs {
    title: String,
    body: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct UpdateArgs {
    id: String,
    title: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
}

fn parse<T: DeserializeOwned>(arguments: Value) -> Result<T> {
    serde_json::from_value(arguments).map_err(|_| NotesError::Arguments)
}

fn not_found(id: &str) -> ToolOutcome {
    ToolOutcome::ToolError(format!(
        "No note with id {id} exists. Use search_notes or list_notes to find note ids."
    ))
}

/// Whether any text holds a NUL character: refused alike on every backend (PostgreSQL
/// text cannot hold one).
fn has_nul<'a>(texts: impl IntoIterator<Item = Option<&'a String>>) -> bool {
    texts.into_iter().flatten().any(|text| text.contains('\0'))
}

fn nul_refused() -> ToolOutcome {
    ToolOutcome::ToolError(
        "Titles and bodies cannot contain the NUL character (U+0000); remove it and try again."
            .into(),
    )
}

fn structured(value: impl serde::Serialize) -> Result<ToolOutcome> {
    serde_json::to_value(value)
        .map(ToolOutcome::Structured)
        .map_err(|_| NotesError::Arguments)
}

/// A note as a result, foreign unless `asker` alone wrote it.
fn note_answer(asker: &str, note: &warden_store::notes::Note) -> Result<Answer> {
    Ok(Answer {
        foreign: foreign_to(asker, note.author.as_deref()),
        outcome: structured(note)?,
    })
}

/// Who asks: the tenant whose notes these are, and the key (or OAuth client) asking,
/// the author of what it writes.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub tenant: &'a str,
    pub author: &'a str,
}

impl NotesServer {
    pub fn new(store: Arc<dyn Notes>) -> Self {
        Self { store }
    }

    /// Runs one tool for `asker`. `arguments` must already have passed the tool's
    /// `inputSchema`.
    pub async fn call_tool(
        &self,
        asker: Asker<'_>,
        name: &str,
        arguments: Value,
    ) -> Result<Answer> {
        match name {
            "search_notes" => {
                let args: SearchArgs = parse(arguments)?;
                match self
                    .store
                    .search(asker.tenant, &args.query, args.limit)
                    .await?
                {
                    Some(results) => Ok(Answer {
                        foreign: any_foreign(asker.author, results.iter().map(|hit| &hit.author)),
                        outcome: structured(json!({ "results": results }))?,
                    }),
                    None => Ok(Answer::own(ToolOutcome::ToolError(
                        "The query has no searchable words; use letters or digits.".into(),
                    ))),
                }
            }
            "get_note" => {
                let args: IdArgs = parse(arguments)?;
                match self.store.get(asker.tenant, &args.id).await? {
                    Some(note) => note_answer(asker.author, &note),
                    None => Ok(Answer::own(not_found(&args.id))),
                }
            }
            "list_notes" => {
                let args: ListArgs = parse(arguments)?;
                let page = self
                    .store
                    .list(
                        asker.tenant,
                        args.tag.as_deref(),
                        args.cursor.as_deref(),
                        args.limit,
                    )
                    .await?;
                let foreign = any_foreign(asker.author, page.notes.iter().map(|n| &n.author));
                let mut value = json!({ "notes": page.notes });
                if let Some(cursor) = page.next_cursor {
                    value["next_cursor"] = Value::String(cursor);
                }
                Ok(Answer {
                    outcome: ToolOutcome::Structured(value),
                    foreign,
                })
            }
            _ => self.write_tool(asker, name, arguments).await,
        }
    }

    /// `create_note`'s arguments saved as a note with text from outside (`import_url`):
    /// it has no author, so reading it counts as untrusted for everyone.
    pub async fn import(&self, asker: Asker<'_>, arguments: Value) -> Result<Answer> {
        self.create(asker, None, arguments).await
    }

    async fn create(
        &self,
        asker: Asker<'_>,
        author: Option<&str>,
        arguments: Value,
    ) -> Result<Answer> {
        let args: CreateArgs = parse(arguments)?;
        if has_nul([Some(&args.title), Some(&args.body)]) {
            return Ok(Answer::own(nul_refused()));
        }
        let tags = dedup(args.tags);
        let created = self
            .store
            .create(asker.tenant, author, &args.title, &args.body, &tags)
            .await;
        match created {
            Ok(note) => note_answer(asker.author, &note),
            // A limit of the store (too many notes for the tenant): the model is told,
            // not handed an internal error.
            Err(StoreError::Invalid(reason)) => Ok(Answer::own(ToolOutcome::ToolError(format!(
                "The note was not created: {reason}."
            )))),
            Err(other) => Err(other.into()),
        }
    }

    /// The tools that change notes. `update_note` and `restore_note` answer with the
    /// whole note, foreign when another's text is in it.
    async fn write_tool(&self, asker: Asker<'_>, name: &str, arguments: Value) -> Result<Answer> {
        let (tenant, store) = (asker.tenant, &self.store);
        match name {
            "create_note" => self.create(asker, Some(asker.author), arguments).await,
            "update_note" => {
                let args: UpdateArgs = parse(arguments)?;
                if has_nul([args.title.as_ref(), args.body.as_ref()]) {
                    return Ok(Answer::own(nul_refused()));
                }
                let patch = NotePatch {
                    title: args.title,
                    body: args.body,
                    tags: args.tags.map(dedup),
                };
                match store.update(tenant, asker.author, &args.id, &patch).await? {
                    Some(note) => note_answer(asker.author, &note),
                    None => Ok(Answer::own(not_found(&args.id))),
                }
            }
            "restore_note" => {
                let args: IdArgs = parse(arguments)?;
                match store.restore(tenant, &args.id).await? {
                    Restored::Note(note) => note_answer(asker.author, &note),
                    Restored::NoNote => Ok(Answer::own(not_found(&args.id))),
                    Restored::NothingEarlier => Ok(Answer::own(ToolOutcome::ToolError(format!(
                        "Note {} has not been changed since it was created: there is nothing to restore.",
                        args.id
                    )))),
                }
            }
            "delete_note" => {
                let args: IdArgs = parse(arguments)?;
                if store.delete(tenant, &args.id).await? {
                    structured(json!({ "id": args.id, "deleted": true })).map(Answer::own)
                } else {
                    Ok(Answer::own(not_found(&args.id)))
                }
            }
            _ => Err(NotesError::UnknownTool),
        }
    }
    /// `resources/list`: one resource per note, newest first (marked when another's
    /// title is among them).
    pub async fn list_resources(&self, asker: Asker<'_>, cursor: Option<&str>) -> Result<Value> {
        let page = self
            .store
            .list(asker.tenant, None, cursor, definitions::RESOURCE_PAGE_SIZE)
            .await?;
        let resources: Vec<Value> = page
            .notes
            .iter()
            .map(|note| {
                json!({
                    "uri": format!("{RESOURCE_SCHEME}{}", note.id),
                    "name": note.title,
                    "mimeType": "text/markdown",
                })
            })
            .collect();
        let mut result = json!({ "resources": resources });
        if let Some(cursor) = page.next_cursor {
            result["nextCursor"] = Value::String(cursor);
        }
        if any_foreign(asker.author, page.notes.iter().map(|n| &n.author)) {
            mark_foreign(&mut result);
        }
        Ok(result)
    }

    /// `resources/read`: `None` when the URI names no note of this tenant.
    pub async fn read_resource(&self, asker: Asker<'_>, uri: &str) -> Result<Option<Value>> {
        let Some(id) = uri.strip_prefix(RESOURCE_SCHEME) else {
            return Ok(None);
        };
        Ok(self.store.get(asker.tenant, id).await?.map(|note| {
            let mut result = json!({
                "contents": [{
                    "uri": uri,
                    "mimeType": "text/markdown",
                    "text": format!("# {}\n\n{}", note.title, note.body),
                }]
            });
            if foreign_to(asker.author, note.author.as_deref()) {
                mark_foreign(&mut result);
            }
            result
        }))
    }
}

fn dedup(mut tags: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tags.retain(|tag| seen.insert(tag.clone()));
    tags
}
