//! The address layer of the rate limits, in front of authentication; the other layers
//! run where the request is understood (`transport`: per key; `dispatch`: calls; GET
//! streams). See `warden-limits` for the layers themselves.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_limits::{Layer, Limiter, Refusal};

use crate::client_addr::client_network;
use crate::error::GatewayError;

/// Every request from one address counts, before any credential is looked at.
pub(crate) async fn per_address(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let address = client_network(&request);
    if let Some(address) = address
        && let Err(refusal) = limiter.admit_address(address).await
    {
        return refused(refusal).into_response();
    }
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
