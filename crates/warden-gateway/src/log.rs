//! The request log: one line per request at info level.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use warden_store::Principal;
use warden_telemetry::{Telemetry, Trace};

use crate::audit::VerdictCell;
use crate::error::{RefusedBy, layer_of};
use crate::metrics::Metrics;
use crate::repoll;

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

/// A request on its way through: when it came, what it asked for, its trace.
pub(crate) struct Logged {
    started: Instant,
    method: axum::http::Method,
    /// The path only: a query string may carry a credential and is never logged.
    path: String,
    trace: Trace,
}

impl RequestLog {
    /// Starts the request's log line and its trace, from the headers; the trace goes
    /// into the request's extensions, where every step below records its span.
    pub(crate) fn begin(&self, request: &mut Request) -> Logged {
        let method = request.method().clone();
        let trace = self.telemetry.begin(request.headers(), span_name(&method));
        if trace.is_on() {
            request.extensions_mut().insert(trace.clone());
        }
        Logged {
            started: Instant::now(),
            method,
            path: request.uri().path().to_owned(),
            trace,
        }
    }

    /// Writes the request's line with what the handlers learned, and tells its trace
    /// how it was answered. The line is formatted once the answer is on its way
    /// ([`repoll::after_this_poll`]), from what was known as the answer began.
    pub(crate) fn end(&self, logged: Logged, response: &mut Response) {
        let Logged {
            started,
            method: http_method,
            path,
            trace,
        } = logged;
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let status = response.status().as_u16();
        self.metrics.response(status);
        // Nothing reads these past this point: the line takes them.
        let facts = response.extensions_mut().remove::<RequestFacts>();
        let mcp = response.extensions_mut().remove::<McpFacts>();
        if trace.is_sampled() {
            record_in_trace(&trace, (&http_method, &path), response, facts.as_ref());
        }
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let trace_id = trace.trace_id();
        // A stream's verdict lands only when it ends: the line shows a verdict known as
        // the answer began, as when it was written here (a set cell never changes).
        let verdict = mcp
            .as_ref()
            .map(|m| Arc::clone(&m.verdict))
            .filter(|cell| cell.get().is_some());
        repoll::after_this_poll(move || {
            let verdict = verdict.as_deref().and_then(OnceLock::get);
            tracing::info!(
                http.method = %http_method,
                http.path = %path,
                http.status = status,
                mcp.method = mcp.as_ref().map(|m| m.method.as_str()),
                mcp.era = mcp.as_ref().map(|m| m.era),
                tenant = facts.as_ref().and_then(|f| f.tenant.as_deref()),
                key_id = facts.as_ref().and_then(|f| f.key_id.as_deref()),
                decision = verdict.map(|v| v.decision),
                rule = verdict.and_then(|v| v.rule),
                policy = verdict.and_then(|v| v.policy.as_deref()),
                outcome = verdict.map(|v| v.outcome),
                trace_id = trace_id.as_deref(),
                latency_us,
                "request"
            );
        });
    }
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
    facts: Option<&RequestFacts>,
) {
    trace.set("http.request.method", method.as_str().to_owned());
    trace.set("url.path", path.to_owned());
    trace.set(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    if let Some(tenant) = facts.and_then(|f| f.tenant.clone()) {
        trace.set("warden.tenant", tenant);
    }
    if let Some(key_id) = facts.and_then(|f| f.key_id.clone()) {
        trace.set("warden.key_id", key_id);
    }
    if let Some(RefusedBy(rule)) = response.extensions().get::<RefusedBy>() {
        trace.refuse(layer_of(rule), rule);
    }
}
