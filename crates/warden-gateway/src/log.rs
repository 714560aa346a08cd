//! The request log: one line per request at info level.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use warden_store::Principal;
use warden_telemetry::{Telemetry, Trace};

use crate::audit::VerdictCell;
use crate::error::{RefusedBy, layer_of};
use crate::metrics::Metrics;

/// What the request log layer needs: the counters and where traces go.
#[derive(Clone)]
pub(crate) struct RequestLog {
    pub metrics: Arc<Metrics>,
    pub telemetry: Telemetry,
}

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

/// The request log line, and the request's trace: begun here, from the headers, so that
/// every layer below can record its span in it (a request extension).
pub(crate) async fn log_request(
    State(log): State<RequestLog>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let http_method = request.method().clone();
    // The path only: a query string may carry a credential and is never logged.
    let path = request.uri().path().to_owned();
    let trace = log
        .telemetry
        .begin(request.headers(), span_name(&http_method));
    if log.telemetry.is_on() {
        trace.set("http.request.method", http_method.as_str().to_owned());
        trace.set("url.path", path.clone());
        request.extensions_mut().insert(trace.clone());
    }
    let response = next.run(request).await;
    let facts = response
        .extensions()
        .get::<RequestFacts>()
        .cloned()
        .unwrap_or_default();
    let mcp = response.extensions().get::<McpFacts>();
    let verdict = mcp.and_then(|m| m.verdict.get());
    let status = response.status().as_u16();
    log.metrics.response(status);
    let trace_id = trace.trace_id();
    if trace.is_sampled() {
        record_in_trace(&trace, (&http_method, &path), &response, &facts);
    }
    tracing::info!(
        http.method = %http_method,
        http.path = %path,
        http.status = status,
        mcp.method = mcp.map(|m| m.method.as_str()),
        mcp.era = mcp.map(|m| m.era),
        tenant = facts.tenant.as_deref(),
        key_id = facts.key_id.as_deref(),
        decision = verdict.map(|v| v.decision),
        rule = verdict.and_then(|v| v.rule),
        policy = verdict.and_then(|v| v.policy.as_deref()),
        outcome = verdict.map(|v| v.outcome),
        trace_id = trace_id.as_deref(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// The HTTP server span's name until the MCP method names it.
fn span_name(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "POST" => "POST",
        "GET" => "GET",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "HTTP",
    }
}

/// What the answer says about the request, on its span: the status, the caller, and a
/// refusal that happened before the request had an audit record (guard, address rate,
/// authentication, transport).
fn record_in_trace(
    trace: &Trace,
    (method, path): (&axum::http::Method, &str),
    response: &Response,
    facts: &RequestFacts,
) {
    trace.set("http.request.method", method.as_str().to_owned());
    trace.set("url.path", path.to_owned());
    trace.set(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    if let Some(tenant) = &facts.tenant {
        trace.set("warden.tenant", tenant.clone());
    }
    if let Some(key_id) = &facts.key_id {
        trace.set("warden.key_id", key_id.clone());
    }
    if let Some(RefusedBy(rule)) = response.extensions().get::<RefusedBy>() {
        trace.refuse(layer_of(rule), rule);
    }
}
