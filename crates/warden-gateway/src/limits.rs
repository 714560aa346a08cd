//! The address layer of the rate limits, in front of authentication; the other layers
//! run where the request is understood (`transport`: per key; `dispatch`: calls; GET
//! streams). See `warden-limits` for the layers themselves.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use warden_limits::{Layer, Limiter, Refusal};
use warden_store::Principal;
use warden_telemetry::{Span, Trace};

use crate::bench_layers::{Layer as BenchLayer, skipped};
use crate::client_addr::client_network;
use crate::error::GatewayError;

/// The address's rate, a step of the front door: every request from one address
/// counts, before any credential is looked at. A refusal is the answer.
pub(crate) fn admit_address<'a>(
    limiter: &'a Limiter,
    request: &Request,
) -> impl Future<Output = Result<(), Response>> + Send + 'a {
    // Only what is read from the request is held across the wait, not the request.
    let address = client_network(request);
    let mut span = request
        .extensions()
        .get::<Trace>()
        .map_or_else(Span::inert, |trace| trace.span("warden.limits"));
    span.set("warden.limits.layer", "address");
    async move {
        let Some(address) = address else {
            return Ok(());
        };
        let admitted = limiter.admit_address(address).await;
        admitted.map_err(|refusal| {
            let refused = refused(refusal);
            span.refuse("limits", refused.rule());
            refused.into_response()
        })
    }
}

/// The key's rate: every JSON-RPC request of a key counts, opening a session too
/// (notifications and answers do not). A `bench-layers` build may leave it out.
pub(crate) async fn admit_request(limiter: &Limiter, principal: &Principal) -> Result<(), Refusal> {
    if skipped(BenchLayer::Limits) {
        return Ok(());
    }
    limiter
        .admit_request(&principal.key_id, principal.rpm)
        .await
}

/// A refusal of something that has no JSON-RPC id.
pub(crate) fn refused(refusal: Refusal) -> GatewayError {
    if refusal.layer == Layer::Shared {
        return GatewayError::SharedUnavailable;
    }
    GatewayError::RateLimited {
        layer: refusal.layer.name(),
        retry_after: refusal.retry_after,
        message: refusal.message,
    }
}
