//! The address layer of the rate limits, in front of authentication; the other layers
//! run where the request is understood (`transport`: per key; `dispatch`: calls; GET
//! streams). See `warden-limits` for the layers themselves.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_limits::{Layer, Limiter, Refusal};
use warden_telemetry::{Span, Trace};

use crate::client_addr::client_network;
use crate::error::GatewayError;

/// Every request from one address counts, before any credential is looked at.
pub(crate) async fn per_address(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let address = client_network(&request);
    let mut span = request
        .extensions()
        .get::<Trace>()
        .map_or_else(Span::inert, |trace| trace.span("warden.limits"));
    span.set("warden.limits.layer", "address");
    if let Some(address) = address
        && let Err(refusal) = limiter.admit_address(address).await
    {
        let refused = refused(refusal);
        span.refuse("limits", refused.rule());
        return refused.into_response();
    }
    drop(span);
    next.run(request).await
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
