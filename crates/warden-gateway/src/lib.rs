//! The HTTP front of Warden. A request travels, in this order:
//! request log → Host/Origin guard → CORS → credentials-in-URL refusal → authentication
//! (with brute-force refusal) → transport (media types, body cap,
//! JSON-RPC envelope, era and session) → dispatch (catalogue, argument validation) →
//! relay to the upstream, and back. [`router`] is the one place that composes that stack.

mod auth;
mod cors;
mod credentials;
mod dispatch;
mod error;
mod guard;
mod input_required;
mod listener;
mod log;
mod relay;
mod session;
mod state;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::post;
use serde_json::Value;
use tokio::sync::broadcast;

pub use error::GatewayError;
pub use listener::{Listener, TlsCertificate, TlsError};
pub use state::AppState;

/// The MCP endpoint's path.
pub const MCP_PATH: &str = "/mcp";

/// Builds the whole request stack. Layers run outermost first, that is from the last
/// `.layer` up: log → Host/Origin guard → CORS → credentials-in-URL refusal →
/// authentication → the MCP endpoint.
pub fn router(state: AppState, listen: SocketAddr) -> Router {
    let guard = guard::HostGuard::new(listen, state.allowed_hosts(), state.allowed_origins());
    let mcp = Router::new()
        .route(
            MCP_PATH,
            post(transport::post)
                .get(transport::get)
                .delete(transport::delete),
        )
        // Authentication: nothing on the MCP endpoint runs without a valid, unrevoked key;
        // an address that keeps guessing is refused before any lookup.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .merge(mcp)
        .fallback(error::not_found)
        // A credential in the URL is refused on every route, before anything reads it.
        .layer(middleware::from_fn(credentials::refuse_in_url))
        // CORS: preflights are answered here, without credentials; answers to allowed
        // origins name that origin.
        .layer(middleware::from_fn(cors::answer))
        // Host/Origin guard: a page in a browser (DNS rebinding, cross-site requests)
        // is refused before any credential is looked at.
        .layer(middleware::from_fn_with_state(
            Arc::new(guard),
            guard::check,
        ))
        // Request log: one line per request with what the handlers learned (MCP method,
        // era, key id); never a body, a header value or a query string.
        .layer(middleware::from_fn(log::log_request))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then closes every session stream and lets in-flight
/// requests finish.
pub async fn serve(
    listener: Listener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(session::sweep_until(state.sessions(), stop_rx));
    let relay_changes = tokio::spawn(relay_changes(state.sessions(), state.upstreams().changes()));
    let sessions = state.sessions();
    let listen = axum::serve::Listener::local_addr(&listener)?;
    let app = router(state, listen).into_make_service_with_connect_info::<listener::ClientAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Open GET streams would otherwise hold graceful shutdown open forever.
            sessions.close_all();
            let _ = stop_tx.send(true);
        })
        .await;
    sweeper.abort();
    relay_changes.abort();
    result
}

/// Passes upstream list changes to every session's stream, and resource updates to the
/// sessions subscribed to that resource.
async fn relay_changes(sessions: Arc<session::Sessions>, mut changes: broadcast::Receiver<Value>) {
    loop {
        let message = match changes.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let updated_uri = (message["method"] == "notifications/resources/updated")
            .then(|| message["params"]["uri"].as_str().map(str::to_owned))
            .flatten();
        for session in sessions.all() {
            if updated_uri
                .as_deref()
                .is_none_or(|uri| session.is_subscribed(uri))
            {
                session.push(&message);
            }
        }
    }
}
