//! The front door: every step a request takes before its handler, in one layer (one
//! future per request, where each step was a layer and a boxed future of its own). The
//! steps live in their own modules; this is their order:
//!
//! 1. the request log and the request's trace (`log`): around everything below;
//! 2. the client's network (`client_addr`): the TCP peer, or a trusted proxy's
//!    forwarded address, for the steps that count by address;
//! 3. the Host/Origin guard (`guard`): a page in a browser is refused (403) before any
//!    credential is looked at;
//! 4. CORS (`cors`): preflights answered without credentials;
//! 5. a credential in the URL refused (`credentials`), on every path;
//! 6. on the MCP endpoint only: the address's rate (`limits`), then authentication
//!    (`auth`); elsewhere (the OAuth metadata, unknown paths) neither runs;
//!
//! then the handler; on the way out, the allowed origin, what the log learns of the
//! caller, and over TLS the HSTS header on every answer, refusals included.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use warden_limits::Limiter;

use crate::MCP_PATH;
use crate::auth::{self, Authenticator};
use crate::bench_layers::{Layer, skipped};
use crate::client_addr::{self, ClientAddresses};
use crate::cors;
use crate::credentials;
use crate::guard::{self, HostGuard};
use crate::limits;
use crate::log::RequestLog;
use crate::swap::Swap;

/// One year; subdomains are left to whoever runs the domain.
const HSTS: &str = "max-age=31536000";

/// What the front door's steps need, and nothing else of the gateway.
pub(crate) struct FrontDoor {
    pub log: RequestLog,
    pub addresses: Arc<Swap<ClientAddresses>>,
    pub guard: Arc<Swap<HostGuard>>,
    pub limiter: Arc<Limiter>,
    pub authenticator: Arc<Authenticator>,
    /// The listener speaks TLS: every answer tells a browser to keep to https.
    pub tls: bool,
}

pub(crate) async fn enter(
    State(door): State<Arc<FrontDoor>>,
    mut request: Request,
    next: Next,
) -> Response {
    let logged = door.log.begin(&mut request);
    let mut response = door.pass(request, next).await;
    door.log.end(logged, &mut response);
    if door.tls {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

impl FrontDoor {
    /// Steps 2 to 6, then the handler.
    async fn pass(&self, mut request: Request, next: Next) -> Response {
        client_addr::resolve(&self.addresses, &mut request);
        let front = !skipped(Layer::Front);
        if front && let Some(refused) = guard::check(&self.guard, &request) {
            return refused;
        }
        if front && let Some(preflight) = cors::answer_preflight(&request) {
            return preflight;
        }
        let origin = front.then(|| cors::origin(&request)).flatten();
        let mut response = self.authenticated(request, next, front).await;
        cors::name_origin(origin, &mut response);
        response
    }

    /// Steps 5 and 6, then the handler; the caller's facts go on the answer for the log.
    async fn authenticated(&self, mut request: Request, next: Next, front: bool) -> Response {
        if front && let Some(refused) = credentials::refuse_in_url(&request) {
            return refused;
        }
        if !is_mcp_endpoint(&request) {
            return next.run(request).await;
        }
        if front && let Err(refused) = limits::admit_address(&self.limiter, &request).await {
            return refused;
        }
        let facts = match auth::authenticate_request(&self.authenticator, &mut request).await {
            Ok(facts) => facts,
            Err(refused) => return refused,
        };
        let mut response = next.run(request).await;
        response.extensions_mut().insert(facts);
        response
    }
}

/// The MCP endpoint's routes: POST, GET (and so HEAD) and DELETE on its path. Other
/// methods there are answered 405 by the router, as before any credential.
fn is_mcp_endpoint(request: &Request) -> bool {
    request.uri().path() == MCP_PATH
        && matches!(
            *request.method(),
            Method::POST | Method::GET | Method::HEAD | Method::DELETE
        )
}
