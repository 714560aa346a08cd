//! The Host/Origin guard against DNS rebinding and cross-site requests. Bound to loopback,
//! Warden answers only requests addressed to a loopback name, and only browser origins on
//! this machine. Bound elsewhere, a browser origin must match the Host it talks to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_proto::codes;
use warden_proto::envelope::error_body;

#[derive(Debug, Clone, Copy)]
pub(crate) struct HostGuard {
    loopback_only: bool,
}

impl HostGuard {
    pub fn for_listener(listen: SocketAddr) -> Self {
        Self {
            loopback_only: listen.ip().is_loopback(),
        }
    }

    fn allows(&self, host: Option<&str>, origin: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        if self.loopback_only && !is_loopback_name(host_name(host)) {
            return false;
        }
        match origin {
            None => true,
            Some(origin) => {
                let Some(authority) = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
                else {
                    return false;
                };
                if self.loopback_only {
                    is_loopback_name(host_name(authority))
                } else {
                    authority.eq_ignore_ascii_case(host)
                }
            }
        }
    }
}

/// The name part of a `host[:port]` authority.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) async fn check(
    State(guard): State<Arc<HostGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let origin = match headers.get(header::ORIGIN) {
        None => None,
        Some(value) => match value.to_str() {
            Ok(origin) => Some(origin),
            Err(_) => return forbidden(),
        },
    };
    if guard.allows(host, origin) {
        next.run(request).await
    } else {
        forbidden()
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(error_body(
            None,
            codes::TRANSPORT_REFUSED,
            "Forbidden: this Host or Origin is not allowed",
            None,
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listener_takes_only_loopback_names() {
        let guard = HostGuard::for_listener("127.0.0.1:8080".parse().unwrap());
        assert!(guard.allows(Some("127.0.0.1:8080"), None));
        assert!(guard.allows(Some("localhost:8080"), Some("http://localhost:3000")));
        assert!(guard.allows(Some("[::1]:8080"), Some("http://127.0.0.1:6274")));
        assert!(!guard.allows(Some("evil.example.com"), None));
        assert!(!guard.allows(Some("127.0.0.1:8080"), Some("http://evil.example.com")));
        assert!(!guard.allows(Some("127.0.0.1:8080"), Some("null")));
        assert!(!guard.allows(None, None));
    }

    #[test]
    fn other_listeners_need_same_origin() {
        let guard = HostGuard::for_listener("0.0.0.0:443".parse().unwrap());
        assert!(guard.allows(Some("mcp.example.com"), None));
        assert!(guard.allows(Some("mcp.example.com"), Some("https://mcp.example.com")));
        assert!(!guard.allows(Some("mcp.example.com"), Some("https://evil.example.com")));
    }
}
