//! The HTTP front of Warden. A request travels, in this order:
//! connection cap → TLS ([`Listener`]) → HTTP/1.1 with header and body clocks ([`serve`])
//! → the front door (`front_door.rs`: request log and trace → client address →
//! Host/Origin guard → CORS → credentials-in-URL refusal → address rate → authentication,
//! with brute-force refusal, a key or an OAuth token) → transport (media types, body cap,
//! JSON-RPC envelope, era and session) → dispatch (catalogue, argument validation) →
//! relay to the upstream, and back. [`router`] is the one place that composes that stack.

mod answer;
mod audit;
mod auth;
mod bench_layers;
mod client_addr;
mod confirm;
mod cors;
mod credentials;
mod dispatch;
mod error;
mod front_door;
mod guard;
mod input_required;
mod limits;
mod listener;
mod log;
mod metrics;
mod oauth;
mod policy;
mod relay;
mod remote;
mod repoll;
mod session;
mod shared;
mod state;
mod swap;
mod transport;
mod waiting;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::middleware;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::Value;
use tokio::sync::broadcast;
use tower_service::Service as _;
use warden_config::Connections;

pub use audit::Auditor;
pub use auth::Credential;
pub use error::GatewayError;
pub use listener::{Listener, TlsCertificate, TlsError};
pub use metrics::{Metrics, Totals};
pub use oauth::{OAuthError, OAuthVerifier};
pub use policy::{FlowStore, PolicyEngine, TOOLS_REMEMBERED, compile as compile_policies};
pub use shared::{
    BusError, BusMessage, BusPrincipal, ClusterState, SessionRecord, SharedFuture, Unreachable,
};
pub use state::{AppState, Parts};
pub use warden_policy::rules::SessionFacts;

/// The MCP endpoint's path.
pub const MCP_PATH: &str = "/mcp";

/// Builds the whole request stack: the routes behind the front door
/// (`front_door.rs`: request log and trace, client address, Host/Origin guard, CORS,
/// credentials-in-URL refusal, and on the MCP endpoint the address's rate and
/// authentication), then the transport and dispatch in the handlers.
pub fn router(state: AppState, tls: bool) -> Router {
    let mcp = Router::new().route(
        MCP_PATH,
        post(transport::post)
            .get(transport::get)
            .delete(transport::delete),
    );
    // Protected-resource metadata (RFC 9728) is public: a client reads it to learn
    // where to get a token, or (with API keys) that the key goes in the header.
    let metadata = match state.oauth() {
        Some(oauth) => Router::new()
            .route(oauth::METADATA_PATH, get(oauth::metadata))
            .route(&oauth.metadata_path(), get(oauth::metadata))
            .with_state(oauth.clone()),
        None => Router::new()
            .route(oauth::METADATA_PATH, get(oauth::key_metadata))
            .route(
                &format!("{}{MCP_PATH}", oauth::METADATA_PATH),
                get(oauth::key_metadata),
            )
            .with_state(oauth::KeyResource { tls }),
    };
    let door = Arc::new(front_door::FrontDoor {
        log: log::RequestLog {
            metrics: state.metrics().clone(),
            telemetry: state.telemetry().clone(),
        },
        addresses: state.client_addresses().clone(),
        guard: state.guard().clone(),
        limiter: state.limiter().clone(),
        authenticator: state.authenticator().clone(),
        tls,
    });
    Router::new()
        .merge(mcp)
        .merge(metadata)
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(door, front_door::enter))
        .with_state(state)
}

/// Serves `routes` (the admin listener's) on `listener`, plain or TLS, until `stop`
/// resolves: each connection HTTP/1.1 with the header-read clock, under the listener's
/// connection cap, each request given its peer as `ConnectInfo<SocketAddr>`.
pub async fn serve_routes(
    mut listener: Listener,
    routes: Router,
    header_read_timeout: std::time::Duration,
    stop: impl Future<Output = ()> + Send,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    tokio::pin!(stop);
    loop {
        let listener::Accepted { io, peer, slot } = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            routes.clone().call(request)
        });
        let connection = http.serve_connection(TokioIo::new(io), service);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "admin connection closed with an error");
            }
            drop(slot);
        });
    }
}

/// Serves until `shutdown` resolves, then closes every session stream and lets in-flight
/// requests finish for at most the configured grace.
///
/// Each connection is HTTP/1.1 served by hyper with a header-read clock (slow-loris and
/// idle keep-alive), under the listener's connection cap.
pub async fn serve(
    mut listener: Listener,
    state: AppState,
    connections: &Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(session::sweep_until(state.sessions(), stop_rx.clone()));
    let relay_changes = tokio::spawn(relay_changes(state.sessions(), state.upstreams().changes()));
    let sessions = state.sessions();
    // The writers stop only after the last request has finished (or the grace ended),
    // so that nothing those requests record is lost.
    let (writers_stop, writers_stop_rx) = tokio::sync::watch::channel(false);
    let costs = tokio::spawn(state.limiter().clone().keep_costs(writers_stop_rx.clone()));
    let audit_writer = tokio::spawn(state.auditor().clone().write_until(writers_stop_rx));
    // In a cluster: what the other replicas say about calls and sessions held here.
    let bus = remote::start(&state);
    let expiry = tokio::spawn(confirm::expire_held_until(
        state.confirmations().approvals().clone(),
        state.auditor().clone(),
        stop_rx.clone(),
    ));
    let app = router(state, listener.is_tls());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(connections.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let listener::Accepted { io, peer, slot } = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo(listener::ClientAddr(peer)));
            // A router is always ready; each request gets its own handle.
            app.clone().call(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(error) = repoll::repolled(connection).await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Open GET streams would otherwise hold graceful shutdown open until the grace ends.
    sessions.close_all();
    let _ = stop_tx.send(true);
    if tokio::time::timeout(connections.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = connections.shutdown_grace.as_millis(),
            "requests still in flight at the end of the shutdown grace were cut off"
        );
    }
    sweeper.abort();
    relay_changes.abort();
    if let Some(bus) = bus {
        bus.abort();
    }
    expiry.abort();
    let _ = writers_stop.send(true);
    // The last spent costs and audit records reach the disk before the process ends.
    let _ = costs.await;
    let _ = audit_writer.await;
    Ok(())
}

/// Passes upstream list changes to every session's stream (in a cluster, with one
/// message to the other replicas), and resource updates to the sessions subscribed to
/// that resource.
async fn relay_changes(sessions: Arc<session::Sessions>, mut changes: broadcast::Receiver<Value>) {
    loop {
        let message = match changes.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if message["method"] == "notifications/resources/updated" {
            let Some(uri) = message["params"]["uri"].as_str() else {
                continue;
            };
            for session in sessions.all() {
                if session.is_subscribed(uri) {
                    // The subscription is known where it was made; the stream may be
                    // open on another replica.
                    session.push(&message, true);
                }
            }
            continue;
        }
        for session in sessions.all() {
            session.push(&message, false);
        }
        if let Some(shared) = sessions.shared() {
            // Each replica runs its own children, so a client may hear of one change
            // more than once; it lists again, which is harmless.
            let told = BusMessage::ListChanged {
                from: shared.replica_id().to_owned(),
                message,
            };
            if shared.publish(&told).await.is_err() {
                tracing::warn!(
                    "a list change was not passed to the other replicas (Redis unreachable)"
                );
            }
        }
    }
}
