//! CORS, answered before authentication: a browser's preflight carries no credentials,
//! so it must succeed without them. The Host/Origin guard runs first, so any `Origin`
//! seen here is one the operator allows; it is echoed back, never `*`.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

const METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// What an MCP client sends; `Mcp-Param-*` names are allowed as the browser asks for them.
const REQUEST_HEADERS: &str = "authorization, content-type, accept, mcp-session-id, \
     mcp-protocol-version, mcp-method, mcp-name, last-event-id";
const PARAM_HEADER_PREFIX: &str = "mcp-param-";
/// What a browser script may read from an answer.
const EXPOSED: &str = "mcp-session-id, www-authenticate";
const PREFLIGHT_MAX_AGE: &str = "86400";

/// A step of the front door: a preflight is answered here, without credentials.
pub(crate) fn answer_preflight(request: &Request) -> Option<Response> {
    (request.method() == Method::OPTIONS).then(|| preflight(origin(request), request.headers()))
}

/// The origin a request came with, which its answer must name.
pub(crate) fn origin(request: &Request) -> Option<HeaderValue> {
    request.headers().get(header::ORIGIN).cloned()
}

/// Names the allowed origin on an answer to a request that came with one.
pub(crate) fn name_origin(origin: Option<HeaderValue>, response: &mut Response) {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// 204 with an empty body; with CORS headers only when a browser asked (an `Origin`).
fn preflight(origin: Option<HeaderValue>, request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(METHODS));
    let Some(origin) = origin else {
        return response;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    if let Ok(allowed) = HeaderValue::from_str(&allowed_headers(request)) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    response
}

/// The fixed list, plus the `Mcp-Param-*` headers this preflight asks about.
fn allowed_headers(request: &HeaderMap) -> String {
    let mut allowed = REQUEST_HEADERS.to_owned();
    let asked = request
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase());
    for name in asked {
        let valid = name.len() > PARAM_HEADER_PREFIX.len()
            && name.starts_with(PARAM_HEADER_PREFIX)
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if valid && !allowed.split(", ").any(|known| known == name) {
            allowed.push_str(", ");
            allowed.push_str(&name);
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_headers_are_allowed_as_asked_and_nothing_else() {
        let mut request = HeaderMap::new();
        request.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("Authorization, Mcp-Param-Region, X-Evil, mcp-param-"),
        );
        let allowed = allowed_headers(&request);
        assert!(allowed.ends_with(", mcp-param-region"), "{allowed}");
        assert!(!allowed.contains("x-evil"), "{allowed}");
        assert_eq!(allowed.matches("authorization").count(), 1);
    }
}
