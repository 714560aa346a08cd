//! An upstream's answer as the client gets it: its result or its error (hardened like
//! anything else it says), or Warden's word that it could not be reached.

use serde_json::Value;
use warden_config::Results;
use warden_policy::{Hardening, harden_message};
use warden_proto::{Era, codes};
use warden_upstream::{Upstream, UpstreamError};

use crate::error::RpcError;

/// How what `upstream` sends is hardened on its way to a client (`tool` names the
/// call it answers); `None` when the operator turned hardening off.
pub(crate) fn hardening(
    results: &Results,
    upstream: &Upstream,
    tool: Option<&str>,
) -> Option<Hardening> {
    results.harden.then(|| Hardening {
        max_result_bytes: results.max_result_bytes,
        untrusted_origin: upstream.is_untrusted().then(|| match tool {
            Some(tool) => format!("tool {tool} of upstream {}", upstream.name()),
            None => format!("upstream {}", upstream.name()),
        }),
    })
}

/// The `result` of an upstream's response message, or its error as ours. The upstream's
/// own JSON-RPC errors pass through (they are the server's word to the client),
/// hardened like anything else it says.
pub(crate) fn upstream_result(
    mut answer: Value,
    era: Era,
    hardening: Option<&Hardening>,
) -> Result<Value, RpcError> {
    if let Some(result) = answer.get_mut("result") {
        return Ok(result.take());
    }
    let mut error = answer
        .get_mut("error")
        .map(Value::take)
        .ok_or_else(RpcError::internal)?;
    if let Some(hardening) = hardening {
        harden_message(&mut error, hardening);
    }
    let mut code = error
        .get("code")
        .and_then(Value::as_i64)
        .unwrap_or(codes::INTERNAL_ERROR);
    if code == codes::RESOURCE_NOT_FOUND && era == Era::Modern {
        code = codes::INVALID_PARAMS;
    }
    Err(RpcError {
        code,
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("Upstream error")
            .to_owned(),
        data: error.get_mut("data").map(Value::take),
        rule: None,
    })
}

/// A failure to reach an upstream, logged with its details and named to the client
/// without them.
pub(crate) fn upstream_failed(
    upstream: &Upstream,
    error: &UpstreamError,
    method: &str,
) -> RpcError {
    tracing::warn!(upstream = upstream.name(), %error, method, "upstream call failed");
    unavailable(error)
}

/// What a client is told when its call outlived the upstream's `call_timeout_ms` (the
/// audit record's outcome is then `timeout`).
pub(crate) const UPSTREAM_TIMEOUT: &str = "The upstream server did not answer in time";

/// What a client is told when its call could not be sent to the upstream at all.
const UPSTREAM_DOWN: &str = "The upstream server is unavailable; try again";

/// Whether `error` says the call never reached its upstream (so it cost nothing).
pub(crate) fn never_reached(error: &RpcError) -> bool {
    error.code == codes::UPSTREAM_UNAVAILABLE && error.message == UPSTREAM_DOWN
}

pub(crate) fn unavailable(error: &UpstreamError) -> RpcError {
    let message = match error {
        UpstreamError::Timeout => UPSTREAM_TIMEOUT,
        UpstreamError::Exited => "The upstream server stopped during the call; try again",
        // It answered, but not with something Warden can pass on: the call may have run.
        UpstreamError::Oversized => {
            "The upstream server's answer was too large to pass on, even with its text cut"
        }
        UpstreamError::Status(_) | UpstreamError::Protocol => {
            "The upstream server's answer could not be used; try again"
        }
        UpstreamError::Unavailable
        | UpstreamError::Connect
        | UpstreamError::Handshake(_)
        | UpstreamError::Spawn(_)
        | UpstreamError::CommandNotFound(_) => UPSTREAM_DOWN,
    };
    RpcError::new(codes::UPSTREAM_UNAVAILABLE, message)
}
