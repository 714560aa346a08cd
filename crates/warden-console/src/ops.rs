//! What machines use on the admin listener: `/metrics`, `/healthz`, `/readyz`,
//! `/api/tools` (for `warden tools list`) and `POST /reload` (for `warden reload`),
//! which answers only peers on this machine, wherever the listener is bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use warden_store::Health;

use crate::Console;
use crate::gateway::Gateway;

/// Asks the process to read its configuration again, and waits for the report (what
/// was applied, restarted, and what waits for a restart) as JSON.
pub type ReloadRequests = mpsc::Sender<oneshot::Sender<Value>>;

/// How long `POST /reload` waits for the reload (restarted upstreams included).
const RELOAD_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn routes(
    gateway: Arc<dyn Gateway>,
    store: Arc<dyn Health>,
    reload: ReloadRequests,
    console: Arc<Console>,
) -> Router {
    let readiness = Arc::new(Readiness {
        gateway: gateway.clone(),
        store,
        store_away: AtomicBool::new(false),
    });
    Router::new()
        .route("/metrics", get(scrape).with_state(gateway.clone()))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready).with_state(readiness))
        .route("/api/tools", get(tools).with_state(console))
        .route("/reload", post(reload_config).with_state(reload))
}

/// `POST /reload`: the configuration file read again and applied; 200 with the report,
/// 422 when the file is refused (the running configuration stays), 403 from a peer
/// that is not on this machine.
async fn reload_config(
    State(reload): State<ReloadRequests>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "reload is accepted from this machine only\n",
        )
            .into_response();
    }
    let (answer, report) = oneshot::channel();
    if reload.send(answer).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match tokio::time::timeout(RELOAD_WAIT, report).await {
        Ok(Ok(report)) => {
            let status = if report["ok"] == true {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (status, axum::Json(report)).into_response()
        }
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            "the reload did not finish in time; see the log\n",
        )
            .into_response(),
    }
}

async fn scrape(State(gateway): State<Arc<dyn Gateway>>) -> Response {
    match gateway.metrics() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The catalogue as `warden tools list` shows it: each tool's upstream, kind and where
/// the kind came from (names and kinds only; never a schema or a description).
async fn tools(State(console): State<Arc<Console>>) -> Response {
    let tools: Vec<Value> = console
        .gateway
        .tools()
        .into_iter()
        .map(|tool| {
            json!({
                "name": tool.name,
                "upstream": tool.upstream,
                "kind": tool.kind,
                "kind_from": tool.kind_from,
            })
        })
        .collect();
    axum::Json(json!({ "tools": tools })).into_response()
}

/// What `/readyz` looks at.
struct Readiness {
    gateway: Arc<dyn Gateway>,
    store: Arc<dyn Health>,
    /// Whether the last probe found the store away: the log says so once per outage,
    /// not once per probe.
    store_away: AtomicBool,
}

/// Ready when every upstream has answered its handshake, the store answers, the shared
/// limits answer (unless the operator chose to count locally without them) and the
/// audit trail is being written; otherwise 503 naming what is not.
async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    let unavailable = |what: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{what}\n"));
    if !readiness.gateway.upstreams().iter().all(|u| u.up) {
        return unavailable("upstreams not ready").into_response();
    }
    let away = readiness.store.check().await.err();
    let was_away = readiness.store_away.swap(away.is_some(), Ordering::Relaxed);
    if let Some(error) = away {
        if !was_away {
            tracing::warn!(%error, "not ready: the store does not answer");
        }
        return unavailable("store unavailable").into_response();
    }
    if was_away {
        tracing::info!("the store answers again");
    }
    if let Some(what) = readiness.gateway.not_ready().await {
        return unavailable(what).into_response();
    }
    "ready\n".into_response()
}
