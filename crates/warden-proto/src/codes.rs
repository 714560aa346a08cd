//! JSON-RPC error codes used by MCP. `-32000..=-32019` are ours to define.

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Legacy era only; the modern era answers an unknown resource with `INVALID_PARAMS`.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Implementation-defined: the request lacks valid credentials.
pub const UNAUTHORIZED: i64 = -32001;
/// Implementation-defined: the request is refused by the transport (session, media type,
/// size).
pub const TRANSPORT_REFUSED: i64 = -32000;
/// Implementation-defined: the upstream server could not answer (down, restarting,
/// timed out). Retryable.
pub const UPSTREAM_UNAVAILABLE: i64 = -32003;
/// Implementation-defined: the client cancelled the request before it finished.
pub const REQUEST_CANCELLED: i64 = -32004;
/// Implementation-defined: a rate limit refused the request; `data` names the layer and
/// `retryAfter` (seconds). Always HTTP 429 with `Retry-After`.
pub const RATE_LIMITED: i64 = -32005;
/// Implementation-defined: a person was asked to confirm the call (or an operator to
/// approve it) and said no, or did not answer in time. Nothing ran; the caller should not
/// retry unless the person asks it to. HTTP 403 in the 2026-07-28 era.
pub const NOT_CONFIRMED: i64 = -32006;
/// Implementation-defined: Warden's own store (its database) cannot be reached now, so
/// the request was not run. Retryable; HTTP 503 in both eras.
pub const STORE_UNAVAILABLE: i64 = -32007;
/// Implementation-defined: the state Warden's replicas share (Redis) cannot be reached
/// now, and the operator chose to refuse rather than count on each replica alone. The
/// request was not run. Retryable; HTTP 503 in both eras.
pub const CLUSTER_UNAVAILABLE: i64 = -32008;

/// Whether `code` says Warden itself cannot serve now (HTTP 503, `Retry-After`).
pub fn is_unavailable(code: i64) -> bool {
    code == STORE_UNAVAILABLE || code == CLUSTER_UNAVAILABLE
}
