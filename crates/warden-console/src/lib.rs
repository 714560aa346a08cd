//! The admin listener: the operator's console (web pages), `/metrics`, the health
//! endpoints, `/tools` for `warden tools list` and `POST /reload` for `warden reload`.
//! Never on the MCP port; loopback by default.
//!
//! The console reads the stores through their traits and the running gateway through
//! [`Gateway`], a narrow interface the binary implements; it never reaches into the
//! gateway's internals. Pages are rendered on the server (maud), charts are SVG, and the
//! one script (`console.js`, embedded) only adds live updates and a copy button: every
//! action is a plain form that works without it. [`router`] composes the stack.

mod assets;
mod chart;
mod error;
mod gateway;
mod html;
mod operator;
mod ops;
mod pages;
mod traffic;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use warden_store::{Approvals, Audit, Health, Keys, Pins};

pub use gateway::{Gateway, GatewayFuture, Login, TenantCost, ToolEntry, Totals, UpstreamStatus};
pub use ops::ReloadRequests;

use crate::operator::Operators;
use crate::traffic::Traffic;

/// What the admin listener serves from.
pub struct Parts {
    pub gateway: Arc<dyn Gateway>,
    pub keys: Arc<dyn Keys>,
    pub audit: Arc<dyn Audit>,
    pub approvals: Arc<dyn Approvals>,
    pub pins: Arc<dyn Pins>,
    /// Asked by `/readyz` whether the store answers.
    pub health: Arc<dyn Health>,
    pub reload: ReloadRequests,
    /// Whether browsers reach the console over TLS (its cookie is then `Secure`).
    pub tls: bool,
}

/// Everything a console handler may use.
pub(crate) struct Console {
    pub gateway: Arc<dyn Gateway>,
    pub keys: Arc<dyn Keys>,
    pub audit: Arc<dyn Audit>,
    pub approvals: Arc<dyn Approvals>,
    pub pins: Arc<dyn Pins>,
    pub operators: Operators,
    pub traffic: Traffic,
    /// Live pages (server-sent events) open at once.
    pub live_pages: Arc<tokio::sync::Semaphore>,
}

/// Live pages open at once, over every operator.
const MAX_LIVE_PAGES: usize = 32;

/// The admin listener's routes. Serve them with the peer's address
/// (`into_make_service_with_connect_info::<SocketAddr>`): `/reload` and the login need
/// it. Layers run outermost first, from the last `.layer` up: Host/Origin guard →
/// security headers → (pages only) the operator's session → the handler.
pub fn router(parts: Parts) -> Router {
    let console = Arc::new(Console {
        gateway: parts.gateway.clone(),
        keys: parts.keys,
        audit: parts.audit,
        approvals: parts.approvals,
        pins: parts.pins,
        operators: Operators::new(parts.tls),
        traffic: Traffic::default(),
        live_pages: Arc::new(tokio::sync::Semaphore::new(MAX_LIVE_PAGES)),
    });
    tokio::spawn(traffic::sample_until_dropped(Arc::downgrade(&console)));
    // The pages: nothing here runs without an operator's session; a change also needs
    // the session's CSRF token (checked by each action) and an admin key's session.
    let pages = Router::new()
        .route("/", get(pages::overview::page))
        .route("/approvals", get(pages::approvals::page))
        .route("/approvals/events", get(pages::approvals::events))
        .route("/approvals/decide", post(pages::approvals::decide))
        .route("/tools", get(pages::tools::page))
        .route("/tools/approve", post(pages::tools::approve))
        .route("/audit", get(pages::audit::page))
        .route("/audit/export", get(pages::audit::export))
        .route("/audit/verify", get(pages::audit::verify))
        .route("/keys", get(pages::keys::page))
        .route("/keys/add", post(pages::keys::add))
        .route("/keys/revoke", post(pages::keys::revoke))
        .route("/keys/rotate", post(pages::keys::rotate))
        .route("/tenants", get(pages::tenants::page))
        .route("/logout", post(operator::logout))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            operator::require,
        ))
        .with_state(console.clone());
    // The login page and the console's own files need no session.
    let open = Router::new()
        .route("/login", get(operator::login_page).post(operator::login))
        .route("/assets/{file}", get(assets::serve))
        .with_state(console.clone());
    // What machines use (Prometheus, probes, the CLI): as before the console existed.
    let machine = ops::routes(parts.gateway.clone(), parts.health, parts.reload, console);
    Router::new()
        .merge(pages)
        .merge(open)
        .merge(machine)
        .fallback(error::not_found)
        // Every answer forbids framing, sniffing, referrers, caching and any script
        // or style not served from here (no inline script at all).
        .layer(middleware::from_fn(html::security_headers))
        // The Host/Origin guard of the MCP port: a page rebound to this address, or a
        // form posted from another site, is refused before anything runs.
        .layer(middleware::from_fn_with_state(
            parts.gateway,
            gateway::guard,
        ))
}
