//! Every refusal the gateway can give, and the one place each becomes an HTTP status and
//! a JSON-RPC error body. Messages name the rule that failed; none echoes a header value,
//! a key or an argument.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warden_proto::envelope::error_body;
use warden_proto::headers::HeaderMismatch;
use warden_proto::{EnvelopeError, Era, ProtocolVersion, RequestId, codes};

/// What a client is told when Warden's database is away.
pub(crate) const STORE_UNAVAILABLE: &str =
    "Warden's store is unavailable right now, so the request was not run; retry in a few seconds";

/// What a client is told when the replicas' shared state is away (and the operator
/// chose to refuse).
pub(crate) const SHARED_UNAVAILABLE: &str = "Warden's shared limits (Redis) cannot be reached, so the request was not run; retry in a few seconds";

/// A JSON-RPC error from a method handler, before the era decides its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    /// When Warden itself refused, the rule that did (for audit); `None` for errors
    /// that come from an upstream or from a failure.
    pub rule: Option<&'static str>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
            rule: None,
        }
    }

    /// A refusal by Warden under `rule`.
    pub fn refusal(code: i64, message: impl Into<String>, rule: &'static str) -> Self {
        Self {
            rule: Some(rule),
            ..Self::new(code, message)
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::refusal(codes::INVALID_PARAMS, message, "validation.params")
    }

    pub fn method_not_found() -> Self {
        Self::refusal(
            codes::METHOD_NOT_FOUND,
            "Method not found",
            "catalogue.unknown_method",
        )
    }

    /// A rate limit's refusal: the layer and the wait travel in `data`.
    pub fn rate_limited(refusal: &warden_limits::Refusal) -> Self {
        if refusal.layer == warden_limits::Layer::Shared {
            return Self::shared_unavailable();
        }
        Self {
            code: codes::RATE_LIMITED,
            message: refusal.message.clone(),
            data: Some(json!({
                "layer": refusal.layer.name(),
                "retryAfter": refusal.retry_after,
            })),
            rule: Some(refusal.layer.name()),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        (self.code == codes::RATE_LIMITED)
            .then(|| self.data.as_ref()?.get("retryAfter")?.as_u64())
            .flatten()
    }

    /// Details go to the log by the caller; the client learns only that it failed.
    pub fn internal() -> Self {
        Self::new(codes::INTERNAL_ERROR, "Internal error")
    }

    /// A store call that failed (the caller logs the details): retryable when the
    /// database is away, internal otherwise.
    pub fn store(error: &warden_store::StoreError) -> Self {
        if error.is_unavailable() {
            Self::store_unavailable()
        } else {
            Self::internal()
        }
    }

    /// The cluster's shared state cannot be reached (retryable, 503).
    pub fn shared_unavailable() -> Self {
        Self::refusal(
            codes::CLUSTER_UNAVAILABLE,
            SHARED_UNAVAILABLE,
            "cluster.unavailable",
        )
    }

    /// A result that reached Warden but whose reading could not be recorded in the
    /// session's shared flow state: withheld.
    pub fn flow_unrecorded() -> Self {
        Self::refusal(
            codes::CLUSTER_UNAVAILABLE,
            "Warden's shared state (Redis) cannot be reached, so the result was withheld; retry in a few seconds",
            "cluster.unavailable",
        )
    }

    pub fn store_unavailable() -> Self {
        Self::new(codes::STORE_UNAVAILABLE, STORE_UNAVAILABLE)
    }
}

/// What a `401`/`403` tells the client about authenticating (RFC 6750 §3, RFC 9728 §5.1).
#[derive(Debug, Clone, Default)]
pub struct Challenge {
    /// Where the protected-resource metadata is, when OAuth is on.
    pub resource_metadata: Option<String>,
    /// A credential was presented and refused (`error="invalid_token"`).
    pub invalid_token: bool,
    /// The scope to ask for (`error="insufficient_scope"`).
    pub scope: Option<String>,
}

impl Challenge {
    fn header_value(&self) -> String {
        let mut params = Vec::new();
        if let Some(url) = &self.resource_metadata {
            params.push(format!("resource_metadata=\"{url}\""));
        }
        if let Some(scope) = &self.scope {
            params.push("error=\"insufficient_scope\"".to_owned());
            params.push(format!("scope=\"{scope}\""));
        } else if self.invalid_token {
            params.push("error=\"invalid_token\"".to_owned());
        }
        if params.is_empty() {
            "Bearer".to_owned()
        } else {
            format!("Bearer {}", params.join(", "))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing or invalid credentials")]
    Unauthorized(Challenge),
    #[error("the token grants none of the scopes this server accepts")]
    InsufficientScope(Challenge),
    #[error(
        "too many failed authentications from this address; try again in {retry_after} seconds"
    )]
    TooManyFailures { retry_after: u64 },
    #[error(
        "credentials are not accepted in the URL; send the key in the Authorization header as Bearer"
    )]
    CredentialsInUrl,
    #[error(
        "credentials are not accepted in the request body; send the key in the Authorization header as Bearer"
    )]
    CredentialsInBody { id: Option<RequestId> },
    #[error("the Accept header must allow application/json or text/event-stream")]
    NotAcceptable,
    #[error("the GET stream needs an Accept header allowing text/event-stream")]
    StreamNotAcceptable,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{error}")]
    Envelope {
        error: EnvelopeError,
        id: Option<RequestId>,
    },
    #[error("the body could not be read")]
    BodyRead,
    #[error("the request body did not arrive within {limit_ms} ms")]
    BodyTimeout { limit_ms: u128 },
    #[error(
        "this request needs an Mcp-Session-Id header; send initialize first, or use a 2026-07-28 request with _meta"
    )]
    MissingSession,
    #[error("unknown or expired session; send initialize to start a new one")]
    UnknownSession,
    /// A rate limit refused something that has no JSON-RPC id (an address's request
    /// before authentication, a stream).
    #[error("{message}")]
    RateLimited {
        layer: &'static str,
        retry_after: u64,
        message: String,
    },
    #[error("too many open sessions; try again later")]
    SessionLimit,
    /// The key store cannot be reached: a credential cannot be checked now.
    #[error("{}", STORE_UNAVAILABLE)]
    StoreUnavailable,
    /// The shared limits cannot be reached (`on_redis_down = "refuse"`).
    #[error("{}", SHARED_UNAVAILABLE)]
    SharedUnavailable,
    #[error(
        "this session is already initialized; send initialize without Mcp-Session-Id to start another"
    )]
    AlreadyInitialized { id: RequestId },
    #[error("a stream is already open for this session")]
    StreamAlreadyOpen,
    #[error("this endpoint has no stream without a session; 2026-07-28 clients use POST only")]
    StreamWithoutSession,
    #[error("clients must not send JSON-RPC responses in the 2026-07-28 protocol")]
    ResponseNotAccepted,
    #[error("Header mismatch: {mismatch}")]
    HeaderMismatch {
        id: Option<RequestId>,
        mismatch: HeaderMismatch,
    },
    #[error("Unsupported protocol version")]
    UnsupportedVersion {
        id: Option<RequestId>,
        requested: String,
    },
    #[error("Invalid MCP-Protocol-Version header")]
    LegacyVersionHeader { id: Option<RequestId> },
    #[error("{}", error.message)]
    Rpc {
        id: RequestId,
        era: Era,
        error: Box<RpcError>,
    },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::TooManyFailures { .. } | Self::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // A rate limit is a 429 in both eras, so that clients back off.
            Self::Rpc { error, .. } if error.code == codes::RATE_LIMITED => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // So is Warden's store being away: a 503 in both eras, for load balancers
            // and clients to retry.
            Self::StoreUnavailable | Self::SharedUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Rpc { error, .. } if codes::is_unavailable(error.code) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::NotAcceptable | Self::StreamNotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Envelope { .. }
            | Self::CredentialsInUrl
            | Self::CredentialsInBody { .. }
            | Self::BodyRead
            | Self::MissingSession
            | Self::ResponseNotAccepted
            | Self::HeaderMismatch { .. }
            | Self::UnsupportedVersion { .. }
            | Self::LegacyVersionHeader { .. }
            | Self::AlreadyInitialized { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::SessionLimit => StatusCode::SERVICE_UNAVAILABLE,
            Self::StreamAlreadyOpen => StatusCode::CONFLICT,
            Self::StreamWithoutSession => StatusCode::METHOD_NOT_ALLOWED,
            // A legacy session carries method errors in a 200 (clients read the body);
            // the 2026-07-28 transport gives them an HTTP status of their own.
            Self::Rpc {
                era: Era::Legacy, ..
            } => StatusCode::OK,
            Self::Rpc {
                era: Era::Modern,
                error,
                ..
            } => match error.code {
                codes::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
                codes::NOT_CONFIRMED => StatusCode::FORBIDDEN,
                codes::INTERNAL_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
                codes::UPSTREAM_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    fn code(&self) -> i64 {
        match self {
            Self::Unauthorized(_) | Self::InsufficientScope(_) => codes::UNAUTHORIZED,
            Self::Envelope { error, .. } => error.code(),
            Self::HeaderMismatch { .. } => codes::HEADER_MISMATCH,
            Self::UnsupportedVersion { .. } | Self::LegacyVersionHeader { .. } => {
                codes::UNSUPPORTED_PROTOCOL_VERSION
            }
            Self::Rpc { error, .. } => error.code,
            Self::ResponseNotAccepted
            | Self::CredentialsInUrl
            | Self::AlreadyInitialized { .. } => codes::INVALID_REQUEST,
            Self::CredentialsInBody { .. } => codes::INVALID_PARAMS,
            Self::BodyRead => codes::PARSE_ERROR,
            Self::RateLimited { .. } => codes::RATE_LIMITED,
            Self::StoreUnavailable => codes::STORE_UNAVAILABLE,
            Self::SharedUnavailable => codes::CLUSTER_UNAVAILABLE,
            _ => codes::TRANSPORT_REFUSED,
        }
    }

    fn id(&self) -> Option<&RequestId> {
        match self {
            Self::Envelope { id, .. }
            | Self::HeaderMismatch { id, .. }
            | Self::UnsupportedVersion { id, .. }
            | Self::LegacyVersionHeader { id }
            | Self::CredentialsInBody { id } => id.as_ref(),
            Self::Rpc { id, .. } | Self::AlreadyInitialized { id } => Some(id),
            _ => None,
        }
    }

    /// The rule that refused, for the audit trail and the request log.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Rpc { error, .. } => error.rule.unwrap_or("upstream"),
            Self::CredentialsInBody { .. } => "credentials.body",
            Self::CredentialsInUrl => "credentials.url",
            Self::HeaderMismatch { .. } => "transport.header_mismatch",
            Self::UnsupportedVersion { .. } | Self::LegacyVersionHeader { .. } => {
                "transport.version"
            }
            Self::MissingSession => "transport.missing_session",
            Self::UnknownSession => "transport.unknown_session",
            Self::ResponseNotAccepted => "transport.response",
            Self::AlreadyInitialized { .. } => "transport.reinitialize",
            Self::SessionLimit => "limits.sessions",
            Self::StoreUnavailable => "store.unavailable",
            Self::SharedUnavailable => "cluster.unavailable",
            Self::RateLimited { layer, .. } => layer,
            Self::Unauthorized(_) => "auth.credential",
            Self::InsufficientScope(_) => "auth.scope",
            Self::TooManyFailures { .. } => "auth.guessing",
            _ => "transport",
        }
    }

    /// This refusal as a JSON-RPC error with its rule (for the audit record).
    pub(crate) fn as_refusal(&self) -> RpcError {
        match self {
            Self::Rpc { error, .. } => RpcError {
                rule: Some(self.rule()),
                ..(**error).clone()
            },
            _ => RpcError::refusal(self.code(), self.to_string(), self.rule()),
        }
    }

    /// The JSON-RPC error body.
    pub fn body(&self) -> Value {
        let supported = || Value::from(ProtocolVersion::ALL.map(ProtocolVersion::as_str).to_vec());
        let data = match self {
            Self::UnsupportedVersion { requested, .. } => {
                // The requested value comes from a header: cut it short, keep it printable.
                let requested: String = requested
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(32)
                    .collect();
                Some(json!({ "supported": supported(), "requested": requested }))
            }
            Self::LegacyVersionHeader { .. } => Some(json!({ "supported": supported() })),
            Self::Rpc { error, .. } => error.data.clone(),
            Self::RateLimited {
                layer, retry_after, ..
            } => Some(json!({ "layer": layer, "retryAfter": retry_after })),
            _ => None,
        };
        error_body(self.id(), self.code(), &self.to_string(), data)
    }
}

/// The rule that refused a request, on its answer (see `log`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefusedBy(pub &'static str);

/// The layer a rule belongs to (`validation.arguments` → `validation`), as a trace
/// names it.
pub(crate) fn layer_of(rule: &str) -> &'static str {
    match rule.split('.').next().unwrap_or(rule) {
        "auth" => "authentication",
        "guard" => "guard",
        "credentials" => "credentials",
        "limits" | "rate" => "limits",
        "transport" => "transport",
        "catalogue" => "catalogue",
        "validation" => "validation",
        "policy" => "policy",
        "confirm" | "confirmation" => "confirmation",
        "store" => "store",
        "cluster" => "cluster",
        _ => "gateway",
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        // For the request's trace: which rule refused, when no audit record says so.
        response.extensions_mut().insert(RefusedBy(self.rule()));
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized(challenge) | Self::InsufficientScope(challenge) => {
                if let Ok(value) = HeaderValue::from_str(&challenge.header_value()) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Self::SessionLimit | Self::StoreUnavailable | Self::SharedUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Rpc { error, .. } if codes::is_unavailable(error.code) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::TooManyFailures { retry_after } | Self::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            Self::Rpc { error, .. } if error.retry_after().is_some() => {
                if let Some(retry_after) = error.retry_after() {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                }
            }
            Self::StreamWithoutSession => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            }
            Self::BodyTimeout { .. } => {
                // The rest of the body may still come; the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Any path other than the MCP endpoint.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(error_body(
            None,
            codes::TRANSPORT_REFUSED,
            "Not found",
            None,
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_method_errors_get_their_own_status() {
        let rpc = |era, code| GatewayError::Rpc {
            id: RequestId::Number(1),
            era,
            error: Box::new(RpcError::new(code, "x")),
        };
        assert_eq!(
            rpc(Era::Legacy, codes::METHOD_NOT_FOUND).status(),
            StatusCode::OK
        );
        assert_eq!(
            rpc(Era::Modern, codes::METHOD_NOT_FOUND).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            rpc(Era::Modern, codes::INVALID_PARAMS).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            rpc(Era::Modern, codes::INTERNAL_ERROR).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn challenges_name_the_metadata_and_the_error() {
        let mut challenge = Challenge::default();
        assert_eq!(challenge.header_value(), "Bearer");
        challenge.invalid_token = true;
        assert_eq!(challenge.header_value(), "Bearer error=\"invalid_token\"");
        challenge.resource_metadata = Some("https://h/.well-known/oauth-protected-resource".into());
        challenge.scope = Some("read".into());
        assert_eq!(
            challenge.header_value(),
            "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource\", error=\"insufficient_scope\", scope=\"read\""
        );
    }

    #[test]
    fn unsupported_version_lists_what_is_supported() {
        let body = GatewayError::UnsupportedVersion {
            id: Some(RequestId::Number(1)),
            requested: "1900-01-01\n".into(),
        }
        .body();
        assert_eq!(body["error"]["code"], codes::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(body["error"]["data"]["requested"], "1900-01-01");
        assert!(
            body["error"]["data"]["supported"]
                .as_array()
                .unwrap()
                .contains(&json!("2026-07-28"))
        );
    }
}
