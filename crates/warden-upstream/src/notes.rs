//! The embedded notes server as an upstream: in process, answering in JSON-RPC terms like
//! any other, for the caller's tenant.

use serde_json::{Map, Value, json};
use warden_notes::{NotesError, NotesServer};
use warden_proto::codes;

use crate::UpstreamError;

pub(crate) fn facts_capabilities() -> Value {
    json!({
        "tools": { "listChanged": false },
        "resources": { "listChanged": false, "subscribe": false },
    })
}

pub(crate) const INSTRUCTIONS: &str = "Warden notes: a private knowledge base. Use search_notes to find notes, get_note to read one, and create_note / update_note / delete_note to change them.";

/// Runs one request on a blocking thread; the answer is a JSON-RPC response message.
pub(crate) async fn request(
    notes: &NotesServer,
    tenant: &str,
    method: &str,
    params: Map<String, Value>,
) -> Result<Value, UpstreamError> {
    let notes = notes.clone();
    let tenant = tenant.to_owned();
    let method = method.to_owned();
    tokio::task::spawn_blocking(move || answer(&notes, &tenant, &method, &params))
        .await
        .map_err(|_| UpstreamError::Unavailable)
}

fn answer(notes: &NotesServer, tenant: &str, method: &str, params: &Map<String, Value>) -> Value {
    let cursor = params.get("cursor").and_then(Value::as_str);
    let outcome = match method {
        "tools/list" => Ok(json!({ "tools": warden_notes::tool_definitions() })),
        "tools/call" => {
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let arguments = params
                .get("arguments")
                .cloned()
                .unwrap_or_else(|| json!({}));
            notes
                .call_tool(tenant, name, arguments)
                .map(warden_notes::ToolOutcome::into_result)
        }
        "resources/list" => notes.list_resources(tenant, cursor),
        "resources/templates/list" => {
            Ok(json!({ "resourceTemplates": warden_notes::resource_templates() }))
        }
        "resources/read" => {
            let uri = params
                .get("uri")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match notes.read_resource(tenant, uri) {
                Ok(Some(result)) => Ok(result),
                Ok(None) => return error(codes::RESOURCE_NOT_FOUND, "Resource not found"),
                Err(e) => Err(e),
            }
        }
        "prompts/list" => Ok(json!({ "prompts": [] })),
        _ => return error(codes::METHOD_NOT_FOUND, "Method not found"),
    };
    match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": 0, "result": result }),
        Err(NotesError::Cursor) => error(codes::INVALID_PARAMS, "Invalid cursor"),
        Err(NotesError::UnknownTool) => error(codes::INVALID_PARAMS, "Unknown tool"),
        Err(NotesError::Arguments) => error(codes::INVALID_PARAMS, "Invalid arguments"),
        Err(NotesError::Store(e)) => {
            tracing::error!(error = %e, "notes store failed");
            error(codes::INTERNAL_ERROR, "Internal error")
        }
    }
}

fn error(code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 0, "error": { "code": code, "message": message } })
}
