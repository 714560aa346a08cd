//! What the console needs of the running gateway, and nothing more: the binary
//! implements [`Gateway`] over the gateway's parts.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_store::{AuditRecord, Principal};

pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a credential presented at the login gives.
#[derive(Debug)]
pub enum Login {
    /// A valid key or OAuth token.
    Valid(Principal),
    /// Unknown, revoked, expired or forged (counted against the address).
    Refused,
    /// The address guessed too often: refused without a lookup for this many seconds.
    Throttled { retry_after: u64 },
    /// The key store cannot be reached now.
    Unavailable,
}

/// An upstream as the overview shows it.
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    pub name: String,
    /// Its handshake is done (it serves calls).
    pub up: bool,
    /// Times its child process stopped and was started again.
    pub restarts: u64,
}

/// A catalogue entry: names and kinds, never a schema or a description.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    pub name: String,
    pub upstream: String,
    /// `read`, `write` or `destructive`.
    pub kind: String,
    /// Where the kind came from (`config`, `annotations`, `unclassified`, …).
    pub kind_from: String,
}

/// Counts since the process started, which the console turns into rates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// JSON-RPC requests answered (allowed or refused).
    pub requests: u64,
    /// Refusals by layer (`auth`, `rate`, `validation`, …).
    pub refusals: BTreeMap<String, u64>,
}

/// A tenant's spending today against its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCost {
    pub tenant: String,
    pub spent: u64,
    pub cap: u64,
}

/// The running gateway, as the console sees it.
pub trait Gateway: Send + Sync + 'static {
    /// Checks a credential presented at the login: a key or an OAuth token, counted
    /// against `address` as a wrong key is on the MCP port.
    fn login<'a>(&'a self, address: IpAddr, presented: &'a str) -> GatewayFuture<'a, Login>;
    /// Whether the admin listener's Host/Origin guard lets this request in.
    fn allows(&self, host: Option<&str>, origin: Option<&str>) -> bool;
    fn upstreams(&self) -> Vec<UpstreamStatus>;
    fn tools(&self) -> Vec<ToolEntry>;
    /// What keeps the gateway from serving besides its upstreams and the store (the
    /// shared limits, the audit trail), for `/readyz`; `None` when nothing does.
    fn not_ready(&self) -> GatewayFuture<'_, Option<&'static str>>;
    /// The metrics, in OpenMetrics text.
    fn metrics(&self) -> Option<String>;
    fn totals(&self) -> Totals;
    /// Today's spending of each tenant that spent or has a cap of its own.
    fn costs(&self) -> Vec<TenantCost>;
    /// Appends to the audit trail (through the gateway's writer, so that one process
    /// keeps one chain).
    fn record(&self, record: AuditRecord) -> GatewayFuture<'_, ()>;
}

/// The Host/Origin guard in front of everything on the admin listener.
pub(crate) async fn guard(
    State(gateway): State<Arc<dyn Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(_)) => return forbidden(),
    };
    if gateway.allows(host, origin) {
        next.run(request).await
    } else {
        forbidden()
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "Forbidden: this Host or Origin is not allowed\n",
    )
        .into_response()
}
