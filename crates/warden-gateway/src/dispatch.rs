//! What each MCP method does, once the transport has settled who is calling and in
//! which era. Policy comes first (catalogue, scope, argument schema); only a call that
//! passes reaches the notes server.

use serde_json::{Map, Value, json};
use warden_notes::NotesError;
use warden_policy::{PolicyError, ToolKind};
use warden_proto::era::SERVER_INFO_META;
use warden_proto::{Era, ProtocolVersion, Request, codes};
use warden_store::{Principal, Scope};

use crate::error::RpcError;
use crate::state::AppState;

const SERVER_NAME: &str = "warden";
const INSTRUCTIONS: &str = "Warden notes: a private knowledge base. Use search_notes to find notes, get_note to read one, and create_note / update_note / delete_note to change them.";

fn server_info() -> Value {
    json!({ "name": SERVER_NAME, "title": "Warden", "version": env!("CARGO_PKG_VERSION") })
}

fn capabilities() -> Value {
    json!({
        "tools": { "listChanged": false },
        "resources": { "listChanged": false, "subscribe": false },
    })
}

/// The `initialize` result for a legacy session.
pub(crate) fn initialize_result(version: ProtocolVersion) -> Value {
    json!({
        "protocolVersion": version.as_str(),
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

fn discover_result() -> Value {
    json!({
        "supportedVersions": ProtocolVersion::ALL.map(ProtocolVersion::as_str),
        "capabilities": capabilities(),
        "instructions": INSTRUCTIONS,
    })
}

/// The most a key of `scope` may do.
fn ceiling(scope: Scope) -> ToolKind {
    match scope {
        Scope::Read => ToolKind::Read,
        Scope::Write | Scope::Admin => ToolKind::Destructive,
    }
}

/// Runs one request and returns its `result`, shaped for `era`.
pub(crate) async fn handle(
    state: &AppState,
    principal: &Principal,
    era: Era,
    request: &Request,
) -> Result<Value, RpcError> {
    let params = &request.params;
    let result = match (request.method.as_str(), era) {
        ("ping", Era::Legacy) => json!({}),
        ("server/discover", Era::Modern) => discover_result(),
        ("tools/list", _) => {
            no_cursor(params)?;
            let tools: Vec<&Value> = state
                .catalogue()
                .visible(ceiling(principal.scope))
                .map(|t| t.definition())
                .collect();
            json!({ "tools": tools })
        }
        ("tools/call", _) => call_tool(state, principal, params).await?,
        ("resources/list", _) => {
            let cursor = optional_str(params, "cursor")?;
            notes_blocking(state, principal, move |notes, tenant| {
                notes.list_resources(tenant, cursor.as_deref())
            })
            .await?
        }
        ("resources/templates/list", _) => {
            no_cursor(params)?;
            json!({ "resourceTemplates": warden_notes::resource_templates() })
        }
        ("resources/read", _) => {
            let uri = required_str(params, "uri")?;
            notes_blocking(state, principal, move |notes, tenant| {
                notes.read_resource(tenant, &uri)
            })
            .await?
            .ok_or_else(|| resource_not_found(era))?
        }
        _ => return Err(RpcError::method_not_found()),
    };
    Ok(shape_for_era(era, &request.method, result))
}

/// Modern results say they are complete, how long they may be cached (not at all: notes
/// change) and by whom (this caller only), and who answered.
fn shape_for_era(era: Era, method: &str, mut result: Value) -> Value {
    if era == Era::Modern
        && let Some(object) = result.as_object_mut()
    {
        object.insert("resultType".into(), "complete".into());
        if matches!(
            method,
            "server/discover"
                | "tools/list"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
        ) {
            object.insert("ttlMs".into(), 0.into());
            object.insert("cacheScope".into(), "private".into());
        }
        let meta = object
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(SERVER_INFO_META.into(), server_info());
        }
    }
    result
}

fn resource_not_found(era: Era) -> RpcError {
    let code = match era {
        Era::Legacy => codes::RESOURCE_NOT_FOUND,
        Era::Modern => codes::INVALID_PARAMS,
    };
    RpcError::new(code, "Resource not found")
}

async fn call_tool(
    state: &AppState,
    principal: &Principal,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let name = required_str(params, "name")?;
    let arguments = match params.get("arguments") {
        None => Value::Object(Map::new()),
        Some(Value::Object(arguments)) => Value::Object(arguments.clone()),
        Some(_) => {
            return Err(RpcError::invalid_params(
                "params.arguments must be an object",
            ));
        }
    };
    let tool = state
        .catalogue()
        .lookup(&name, ceiling(principal.scope))
        .map_err(policy_error)?;
    tool.validate(&arguments).map_err(policy_error)?;
    let outcome = notes_blocking(state, principal, move |notes, tenant| {
        notes.call_tool(tenant, &name, arguments)
    })
    .await?;
    Ok(outcome.into_result())
}

fn policy_error(error: PolicyError) -> RpcError {
    match error {
        PolicyError::UnknownTool => RpcError::invalid_params("Unknown tool"),
        invalid @ PolicyError::InvalidArguments { .. } => {
            RpcError::invalid_params(invalid.to_string())
        }
    }
}

/// Runs notes work on a blocking thread, for the caller's tenant.
async fn notes_blocking<T: Send + 'static>(
    state: &AppState,
    principal: &Principal,
    work: impl FnOnce(&warden_notes::NotesServer, &str) -> Result<T, NotesError> + Send + 'static,
) -> Result<T, RpcError> {
    let notes = state.notes().clone();
    let tenant = principal.tenant.clone();
    match tokio::task::spawn_blocking(move || work(&notes, &tenant)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(NotesError::Cursor)) => Err(RpcError::invalid_params("Invalid cursor")),
        Ok(Err(NotesError::UnknownTool)) => Err(RpcError::invalid_params("Unknown tool")),
        Ok(Err(NotesError::Arguments)) => Err(RpcError::invalid_params("Invalid arguments")),
        Ok(Err(NotesError::Store(error))) => {
            tracing::error!(%error, "notes store failed");
            Err(RpcError::internal())
        }
        Err(error) => {
            tracing::error!(%error, "notes task failed");
            Err(RpcError::internal())
        }
    }
}

fn required_str(params: &Map<String, Value>, field: &'static str) -> Result<String, RpcError> {
    params
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| RpcError::invalid_params(format!("params.{field} must be a string")))
}

fn optional_str(
    params: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, RpcError> {
    match params.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "params.{field} must be a string"
        ))),
    }
}

/// Lists that fit on one page issue no cursor, so any cursor is not ours.
fn no_cursor(params: &Map<String, Value>) -> Result<(), RpcError> {
    match optional_str(params, "cursor")? {
        None => Ok(()),
        Some(_) => Err(RpcError::invalid_params("Invalid cursor")),
    }
}
