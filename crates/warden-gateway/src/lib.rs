//! The HTTP front of Warden. A request travels, in this order:
//! request log → authentication → transport (media types, body cap, JSON-RPC envelope,
//! era and session) → dispatch (catalogue, argument validation, the upstream).
//! [`router`] is the one place that composes that stack.

mod auth;
mod dispatch;
mod error;
mod log;
mod session;
mod state;
mod transport;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::middleware;
use axum::routing::post;

pub use error::GatewayError;
pub use state::AppState;

/// The MCP endpoint's path.
pub const MCP_PATH: &str = "/mcp";

/// Builds the whole request stack, outermost layer last.
pub fn router(state: AppState) -> Router {
    let mcp = Router::new()
        .route(
            MCP_PATH,
            post(transport::post)
                .get(transport::get)
                .delete(transport::delete),
        )
        // Authentication: nothing on the MCP endpoint runs without a valid, unrevoked key.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .merge(mcp)
        .fallback(error::not_found)
        // Request log: one line per request with what the handlers learned (MCP method,
        // era, key id); never a body, a header value or a query string.
        .layer(middleware::from_fn(log::log_request))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then closes every session stream and lets in-flight
/// requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(session::sweep_until(state.sessions(), stop_rx));
    let sessions = state.sessions();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Open GET streams would otherwise hold graceful shutdown open forever.
            sessions.close_all();
            let _ = stop_tx.send(true);
        })
        .await;
    sweeper.abort();
    result
}
