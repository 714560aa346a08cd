//! The notes server's tool and resource definitions. The schemas are tight on purpose:
//! the gateway validates every call against them before a handler runs.

use serde_json::{Value, json};

pub const RESOURCE_SCHEME: &str = "notes://";
pub(crate) const RESOURCE_PAGE_SIZE: u32 = 50;

const MAX_TITLE_CHARS: u64 = 200;
const MAX_BODY_CHARS: u64 = 65_536;
const MAX_QUERY_CHARS: u64 = 256;
const MAX_TAGS: u64 = 16;
const MAX_SEARCH_RESULTS: u64 = 50;
const MAX_LIST_PAGE: u64 = 100;
const MAX_CURSOR_CHARS: u64 = 64;

fn note_id() -> Value {
    json!({ "type": "string", "pattern": "^n_[0-9a-f]{16}$", "description": "A note id: n_ followed by 16 hexadecimal digits." })
}

fn title() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS })
}

fn body() -> Value {
    json!({ "type": "string", "maxLength": MAX_BODY_CHARS, "description": "Markdown text." })
}

fn tag() -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$" })
}

fn tags() -> Value {
    json!({ "type": "array", "items": tag(), "maxItems": MAX_TAGS })
}

fn timestamp() -> Value {
    json!({ "type": "string", "description": "RFC 3339, UTC" })
}

fn note_output() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "title": { "type": "string" },
            "body": { "type": "string" },
            "tags": { "type": "array", "items": { "type": "string" } },
            "created_at": timestamp(),
            "updated_at": timestamp(),
        },
        "required": ["id", "title", "body", "tags", "created_at", "updated_at"],
        "additionalProperties": false,
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

fn annotations(title: &str, read_only: bool, destructive: bool, idempotent: bool) -> Value {
    json!({
        "title": title,
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": false,
    })
}

fn tool(
    name: &str,
    title: &str,
    description: &str,
    input: Value,
    output: Value,
    annotations: Value,
) -> Value {
    json!({
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": input,
        "outputSchema": output,
        "annotations": annotations,
    })
}

/// The tools whose results always carry text from outside: `import_url` brings a web
/// page in. A session that received one is marked `untrusted_seen`. The other tools'
/// results count as untrusted when they show a note someone else wrote (the server
/// marks them: `FOREIGN_TEXT`).
pub const UNTRUSTED_RESULTS: [&str; 1] = ["import_url"];
/// The tools whose results are the tenant's private data.
pub const PRIVATE_RESULTS: [&str; 4] = ["search_notes", "get_note", "list_notes", "import_url"];

/// Every tool the notes server offers, in a stable order.
pub fn tool_definitions() -> Vec<Value> {
    vec![
        tool(
            "search_notes",
            "Search notes",
            "Full-text search over your notes. Every word of the query must appear. Returns the best matches first, each with its id, title and a short snippet.",
            object(
                json!({
                    "query": { "type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS },
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_SEARCH_RESULTS, "default": 10 },
                }),
                &["query"],
            ),
            object(
                json!({ "results": { "type": "array", "items": object(
                    json!({
                        "id": { "type": "string" },
                        "title": { "type": "string" },
                        "snippet": { "type": "string" },
                        "score": { "type": "number" },
                    }),
                    &["id", "title", "snippet", "score"],
                ) } }),
                &["results"],
            ),
            annotations("Search notes", true, false, true),
        ),
        tool(
            "get_note",
            "Get a note",
            "Returns one note in full: title, body, tags and timestamps.",
            object(json!({ "id": note_id() }), &["id"]),
            note_output(),
            annotations("Get a note", true, false, true),
        ),
        tool(
            "list_notes",
            "List notes",
            "Lists notes, newest first, optionally only those with a tag. Pass next_cursor from one page to get the next.",
            object(
                json!({
                    "tag": tag(),
                    "cursor": { "type": "string", "maxLength": MAX_CURSOR_CHARS },
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIST_PAGE, "default": 20 },
                }),
                &[],
            ),
            object(
                json!({
                    "notes": { "type": "array", "items": object(
                        json!({
                            "id": { "type": "string" },
                            "title": { "type": "string" },
                            "tags": { "type": "array", "items": { "type": "string" } },
                            "updated_at": timestamp(),
                        }),
                        &["id", "title", "tags", "updated_at"],
                    ) },
                    "next_cursor": { "type": "string" },
                }),
                &["notes"],
            ),
            annotations("List notes", true, false, true),
        ),
        tool(
            "create_note",
            "Create a note",
            "Creates a note and returns it with its new id.",
            object(
                json!({ "title": title(), "body": body(), "tags": tags() }),
                &["title", "body"],
            ),
            note_output(),
            annotations("Create a note", false, false, false),
        ),
        tool(
            "import_url",
            "Import a web page",
            "Fetches a public web page (http or https, at most 1 MiB of HTML or text) and saves its text as a new note. Scripts, styles and markup are removed.",
            object(
                json!({
                    "url": {"type": "string", "format": "uri", "maxLength": 2048,
                            "description": "The page's http or https URL."},
                    "title": title(),
                    "tags": tags()
                }),
                &["url"],
            ),
            note_output(),
            annotations("Import a web page", false, false, false),
        ),
        tool(
            "update_note",
            "Update a note",
            "Changes the given fields of a note; fields left out keep their value. Tags, when given, replace the old ones. What the note held before is kept and can be brought back.",
            object(
                json!({ "id": note_id(), "title": title(), "body": body(), "tags": tags() }),
                &["id"],
            ),
            note_output(),
            annotations("Update a note", false, false, true),
        ),
        tool(
            "restore_note",
            "Restore a note",
            "Brings a note back to what it held before its last change. The change itself is kept, so restoring again undoes the restore.",
            object(json!({ "id": note_id() }), &["id"]),
            note_output(),
            annotations("Restore a note", false, false, false),
        ),
        tool(
            "delete_note",
            "Delete a note",
            "Deletes a note and its earlier versions for good.",
            object(json!({ "id": note_id() }), &["id"]),
            object(
                json!({ "id": { "type": "string" }, "deleted": { "type": "boolean" } }),
                &["id", "deleted"],
            ),
            annotations("Delete a note", false, true, true),
        ),
    ]
}

/// `resources/templates/list` entries.
pub fn resource_templates() -> Vec<Value> {
    vec![json!({
        "uriTemplate": format!("{RESOURCE_SCHEME}{{id}}"),
        "name": "note",
        "title": "Note",
        "description": "One note as Markdown: its title as a heading, then its body.",
        "mimeType": "text/markdown",
    })]
}
