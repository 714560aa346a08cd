//! The Host/Origin guard against DNS rebinding and cross-site requests. Bound to loopback,
//! Warden answers only requests addressed to a loopback name, and only browser origins on
//! this machine. Bound elsewhere, a browser origin must match the Host it talks to.

use std::net::{IpAddr, SocketAddr};

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use warden_proto::codes;
use warden_proto::envelope::error_body;

use crate::swap::Swap;

#[derive(Debug, Clone)]
pub(crate) struct HostGuard {
    loopback_only: bool,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
}

impl HostGuard {
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        Self {
            loopback_only: listen.ip().is_loopback(),
            allowed_hosts: allowed_hosts.to_vec(),
            allowed_origins: allowed_origins.to_vec(),
        }
    }

    pub(crate) fn allows(&self, host: Option<&str>, origin: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        self.allows_host(host) && origin.is_none_or(|origin| self.allows_origin(origin, host))
    }

    /// A configured host, or a loopback name on a loopback listener; any Host when the
    /// listener is public and nothing is configured.
    fn allows_host(&self, host: &str) -> bool {
        // Entries are lowercase already; no copy of the Host per request.
        let listed = self.allowed_hosts.iter().any(|entry| {
            entry.eq_ignore_ascii_case(host) || entry.eq_ignore_ascii_case(host_name(host))
        });
        listed
            || (self.loopback_only && is_loopback_name(host_name(host)))
            || (!self.loopback_only && self.allowed_hosts.is_empty())
    }

    /// A configured origin; with none configured, an origin on this machine for a
    /// loopback listener, the Host's own origin otherwise.
    fn allows_origin(&self, origin: &str, host: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.contains(&origin);
        }
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

/// A step of the front door: a page in a browser (DNS rebinding, cross-site requests)
/// is refused (403) before any credential is looked at (the refusal, if any).
pub(crate) fn check(guard: &Swap<HostGuard>, request: &Request) -> Option<Response> {
    let guard = guard.get();
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let origin = match headers.get(header::ORIGIN).map(|value| value.to_str()) {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(_)) => return Some(forbidden()),
    };
    (!guard.allows(host, origin)).then(forbidden)
}

fn forbidden() -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        axum::Json(error_body(
            None,
            codes::TRANSPORT_REFUSED,
            "Forbidden: this Host or Origin is not allowed",
            None,
        )),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(crate::error::RefusedBy("guard.host_origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, hosts: &[&str], origins: &[&str]) -> HostGuard {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        HostGuard::new(listen.parse().unwrap(), &owned(hosts), &owned(origins))
    }

    #[test]
    fn loopback_listener_takes_only_loopback_names() {
        let guard = guard("127.0.0.1:8080", &[], &[]);
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
        let guard = guard("0.0.0.0:443", &[], &[]);
        assert!(guard.allows(Some("mcp.example.com"), None));
        assert!(guard.allows(Some("mcp.example.com"), Some("https://mcp.example.com")));
        assert!(!guard.allows(Some("mcp.example.com"), Some("https://evil.example.com")));
    }

    #[test]
    fn configured_lists_are_exact() {
        let guard = guard(
            "0.0.0.0:443",
            &["mcp.example.com", "10.0.0.5:8443"],
            &["https://app.example.com"],
        );
        assert!(guard.allows(Some("MCP.example.com:443"), None));
        assert!(guard.allows(Some("10.0.0.5:8443"), None));
        assert!(!guard.allows(Some("10.0.0.5:9000"), None));
        assert!(!guard.allows(Some("rebound.example.net"), None));
        assert!(guard.allows(Some("mcp.example.com"), Some("https://app.example.com")));
        assert!(!guard.allows(Some("mcp.example.com"), Some("https://mcp.example.com")));
        assert!(!guard.allows(Some("mcp.example.com"), Some("http://app.example.com")));
        // A loopback listener still answers to loopback names besides the list.
        let local = self::guard("127.0.0.1:8080", &["warden.internal"], &[]);
        assert!(local.allows(Some("warden.internal:8080"), None));
        assert!(local.allows(Some("localhost:8080"), None));
        assert!(!local.allows(Some("evil.example.com"), None));
    }
}
