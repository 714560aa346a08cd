//! The echo upstream: the smallest honest MCP server over Streamable HTTP, so a benchmark
//! measures the path to it rather than the server. One tool, `echo` (and, with
//! `--tools N`, N - 1 more that only fill the catalogue); both eras; no sessions (a
//! legacy server may do without); JSON answers only.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tools in the catalogue, `echo` included.
    #[arg(long, default_value_t = 1)]
    tools: usize,
}

/// Longest `text` the echo tool takes: room for the argument-size curve's 1 MB.
const MAX_TEXT: usize = 4 * 1024 * 1024;

/// The catalogue: `echo`, then tools that are listed and never called.
fn catalogue(tools: usize) -> Value {
    let echo = json!({
        "name": "echo",
        "description": "Returns its text.",
        "inputSchema": {
            "type": "object",
            "properties": { "text": { "type": "string", "maxLength": MAX_TEXT } },
            "required": ["text"],
            "additionalProperties": false,
        },
        "annotations": { "readOnlyHint": true },
    });
    let fillers = (1..tools.max(1)).map(|i| {
        json!({
            "name": format!("tool_{i:05}"),
            "description": "Fills the catalogue.",
            "inputSchema": {
                "type": "object",
                "properties": { "n": { "type": "integer" } },
                "additionalProperties": false,
            },
            "annotations": { "readOnlyHint": true },
        })
    });
    Value::Array(std::iter::once(echo).chain(fillers).collect())
}

const MODERN: &str = "2026-07-28";
const LEGACY: &str = "2025-11-25";

pub fn run(args: Args) -> Result<(), crate::Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}/mcp", listener.local_addr()?);
        let tools = std::sync::Arc::new(catalogue(args.tools));
        let app = Router::new().route(
            "/mcp",
            post(move |body| handle(tools.clone(), body)).get(no_stream),
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn no_stream() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

async fn handle(tools: std::sync::Arc<Value>, body: axum::body::Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
        // Notifications and responses.
        return StatusCode::ACCEPTED.into_response();
    };
    let modern = message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
        .as_str()
        .is_some();
    let mut result = match method {
        "initialize" => json!({
            "protocolVersion": LEGACY,
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "echo", "version": "1" },
        }),
        "server/discover" => json!({
            "supportedVersions": [MODERN, LEGACY],
            "capabilities": { "tools": {} },
            "ttlMs": 0,
            "cacheScope": "public",
        }),
        "ping" => json!({}),
        "tools/list" => json!({ "tools": *tools }),
        "tools/call" if message["params"]["name"] == "echo" => {
            let text = message["params"]["arguments"]["text"].clone();
            json!({ "content": [{ "type": "text", "text": text }], "isError": false })
        }
        _ => {
            let status = if modern {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            let error = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32601, "message": "Method not found" } });
            return (status, axum::Json(error)).into_response();
        }
    };
    if modern {
        result["resultType"] = "complete".into();
        if method == "tools/list" {
            result["ttlMs"] = 0.into();
            result["cacheScope"] = "public".into();
        }
    }
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}
