//! The request log: one line per request at info level.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use warden_store::Principal;

use crate::audit::VerdictCell;
use crate::metrics::Metrics;

/// What the handlers learned about a request, carried back to the log on the response.
/// Holds identifiers only: a key id, never a key.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestFacts {
    pub tenant: Option<String>,
    pub key_id: Option<String>,
}

impl RequestFacts {
    pub(crate) fn for_principal(principal: &Principal) -> Self {
        Self {
            tenant: Some(principal.tenant.clone()),
            key_id: Some(principal.key_id.clone()),
        }
    }
}

/// Handlers record the MCP method and era here; the auth layer adds the caller.
#[derive(Debug, Clone)]
pub(crate) struct McpFacts {
    pub method: String,
    pub era: &'static str,
    /// The audit verdict, once the request has one.
    pub verdict: VerdictCell,
}

pub(crate) async fn log_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let http_method = request.method().clone();
    // The path only: a query string may carry a credential and is never logged.
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let facts = response
        .extensions()
        .get::<RequestFacts>()
        .cloned()
        .unwrap_or_default();
    let mcp = response.extensions().get::<McpFacts>();
    let verdict = mcp.and_then(|m| m.verdict.get());
    metrics.response(response.status().as_u16());
    tracing::info!(
        http.method = %http_method,
        http.path = %path,
        http.status = response.status().as_u16(),
        mcp.method = mcp.map(|m| m.method.as_str()),
        mcp.era = mcp.map(|m| m.era),
        tenant = facts.tenant.as_deref(),
        key_id = facts.key_id.as_deref(),
        decision = verdict.map(|v| v.decision),
        rule = verdict.and_then(|v| v.rule),
        policy = verdict.and_then(|v| v.policy.as_deref()),
        outcome = verdict.map(|v| v.outcome),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}
