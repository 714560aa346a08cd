//! The admin listener: metrics, health, the catalogue's kinds for `warden tools list`,
//! and `POST /reload` for `warden reload`. Behind the same Host guard as the public port
//! (a page rebound to a loopback address cannot read it); `/reload` answers only peers
//! on this machine, wherever the listener is bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warden_upstream::Upstreams;

use warden_store::Health;

use crate::audit::Auditor;
use crate::metrics::Metrics;

/// Asks the process to read its configuration again, and waits for the report (what
/// was applied, restarted, and what waits for a restart) as JSON.
pub type ReloadRequests = mpsc::Sender<oneshot::Sender<Value>>;

/// How long `POST /reload` waits for the reload (restarted upstreams included).
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// The admin listener's routes. Serve them with the peer's address
/// (`into_make_service_with_connect_info::<SocketAddr>`): `/reload` needs it.
/// `store` is asked by `/readyz` whether it answers.
pub fn admin_router(
    state: &crate::AppState,
    reload: ReloadRequests,
    store: Arc<dyn Health>,
) -> Router {
    let (metrics, upstreams) = (state.metrics().clone(), state.upstreams().clone());
    let readiness = Readiness {
        upstreams: upstreams.clone(),
        store,
        auditor: state.auditor().clone(),
        limiter: state.limiter().clone(),
        store_away: Arc::default(),
    };
    Router::new()
        .route("/metrics", get(scrape).with_state(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready).with_state(readiness))
        .route("/tools", get(tools).with_state(upstreams))
        .route("/reload", post(reload_config).with_state(reload))
        .layer(axum::middleware::from_fn_with_state(
            state.admin_guard().clone(),
            crate::guard::check,
        ))
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

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The catalogue as `warden tools list` shows it: each tool's upstream, kind and where
/// the kind came from (names and kinds only; never a schema or a description).
async fn tools(State(upstreams): State<Arc<Upstreams>>) -> Response {
    let tools: Vec<serde_json::Value> = upstreams
        .tool_kinds()
        .into_iter()
        .map(|tool| {
            serde_json::json!({
                "name": tool.name,
                "upstream": tool.upstream,
                "kind": tool.kind.as_str(),
                "kind_from": tool.source.as_str(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "tools": tools })).into_response()
}

/// What `/readyz` looks at.
#[derive(Clone)]
struct Readiness {
    upstreams: Arc<Upstreams>,
    store: Arc<dyn Health>,
    auditor: Arc<Auditor>,
    limiter: Arc<warden_limits::Limiter>,
    /// Whether the last probe found the store away: the log says so once per outage,
    /// not once per probe.
    store_away: Arc<std::sync::atomic::AtomicBool>,
}

/// Ready when every upstream has answered its handshake, the store answers, the shared
/// limits answer (unless the operator chose to count locally without them) and the
/// audit trail is being written; otherwise 503 naming what is not.
async fn ready(State(readiness): State<Readiness>) -> Response {
    if !readiness
        .upstreams
        .all()
        .iter()
        .all(|u| u.facts().is_some())
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstreams not ready\n").into_response();
    }
    let away = readiness.store.check().await.err();
    let was_away = readiness
        .store_away
        .swap(away.is_some(), std::sync::atomic::Ordering::Relaxed);
    if let Some(error) = away {
        if !was_away {
            tracing::warn!(%error, "not ready: the store does not answer");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
    }
    if was_away {
        tracing::info!("the store answers again");
    }
    if !readiness.limiter.ready().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shared limits (Redis) unavailable\n",
        )
            .into_response();
    }
    if readiness.auditor.is_failing() {
        return (StatusCode::SERVICE_UNAVAILABLE, "audit trail not written\n").into_response();
    }
    "ready\n".into_response()
}
