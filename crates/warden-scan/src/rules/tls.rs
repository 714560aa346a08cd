//! TLS: keys cross the network only encrypted, to a server that proves who it is.

use crate::rule::{Category, Rule, Severity, Verdict};

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-TLS-001",
        category: Category::Tls,
        severity: Severity::Critical,
        title: "Served over HTTPS when reached beyond this machine",
        remediation: "Terminate TLS at the server (or at Warden, `tls_cert`/`tls_key`); plain HTTP only on loopback.",
        reference: "MCP 2025-11-25, Authorization › Communication Security (HTTPS required)",
        check: |seen| {
            if !seen.target.is_http() {
                return Verdict::skip("not an HTTP target");
            }
            Verdict::from_check(seen.target.is_https() || seen.target.loopback, || {
                "plain HTTP to a host that is not this machine: keys travel in the clear".into()
            })
        },
    },
    Rule {
        id: "WS-TLS-002",
        category: Category::Tls,
        severity: Severity::Critical,
        title: "The certificate chain is valid for the host",
        remediation: "Serve a certificate chain a public (or your organisation's) CA signed for this name.",
        reference: "RFC 9110 § 4.3.4 (https certificate verification)",
        check: |seen| {
            if !seen.target.is_https() {
                return Verdict::skip("not an HTTPS target");
            }
            match &seen.tls_error {
                Some(error) if !is_protocol_version(error) => Verdict::fail(error.clone()),
                _ => Verdict::Pass,
            }
        },
    },
    Rule {
        id: "WS-TLS-003",
        category: Category::Tls,
        severity: Severity::High,
        title: "TLS 1.2 or newer is negotiated",
        remediation: "Turn off TLS 1.0 and 1.1.",
        reference: "RFC 8996 (TLS 1.0 and 1.1 deprecated)",
        check: |seen| {
            if !seen.target.is_https() {
                return Verdict::skip("not an HTTPS target");
            }
            // The scanner offers TLS 1.2 and 1.3 only: a server that knows nothing newer
            // than 1.1 fails the handshake with a protocol-version alert.
            match &seen.tls_error {
                Some(error) if is_protocol_version(error) => Verdict::fail(error.clone()),
                _ if seen.unreachable.is_some() => Verdict::skip("the server could not be reached"),
                _ => Verdict::Pass,
            }
        },
    },
    Rule {
        id: "WS-TLS-004",
        category: Category::Tls,
        severity: Severity::Low,
        title: "HTTPS answers carry Strict-Transport-Security",
        remediation: "Send Strict-Transport-Security: max-age=31536000 where a browser may reach the server.",
        reference: "RFC 6797",
        check: |seen| {
            if !seen.target.is_https() {
                return Verdict::skip("not an HTTPS target");
            }
            let answered: Vec<_> = seen.exchanges().filter(|a| a.status != 0).collect();
            if answered.is_empty() {
                return Verdict::skip("nothing was answered");
            }
            Verdict::from_check(
                answered
                    .iter()
                    .any(|a| a.header("strict-transport-security").is_some()),
                || "no Strict-Transport-Security header on any answer".into(),
            )
        },
    },
];

fn is_protocol_version(error: &str) -> bool {
    let lower = error.to_ascii_lowercase();
    lower.contains("protocolversion") || lower.contains("protocol version")
}

#[cfg(test)]
mod tests {
    use crate::observe::{Observations, Probe, TargetFacts};
    use crate::rules::fixtures::{assert_rule, ok, seen, with_header};

    fn at(url: &str, loopback: bool) -> Observations {
        Observations {
            target: TargetFacts {
                url: Some(url.parse().unwrap()),
                loopback,
                ..TargetFacts::default()
            },
            ..seen([(Probe::Ping, ok())])
        }
    }

    #[test]
    fn tls_beyond_this_machine() {
        assert_rule(
            "WS-TLS-001",
            &at("https://mcp.example.com/mcp", false),
            &at("http://mcp.example.com/mcp", false),
        );
        assert_rule(
            "WS-TLS-001",
            &at("http://127.0.0.1:8080/mcp", true),
            &at("http://10.0.0.5/mcp", false),
        );
        let mut untrusted = at("https://mcp.example.com/mcp", false);
        untrusted.tls_error =
            Some("connection failed: invalid peer certificate: UnknownIssuer".into());
        assert_rule(
            "WS-TLS-002",
            &at("https://mcp.example.com/mcp", false),
            &untrusted,
        );
        let mut old = at("https://mcp.example.com/mcp", false);
        old.tls_error = Some("connection failed: peer is incompatible: ProtocolVersion".into());
        assert_rule(
            "WS-TLS-003",
            &at("https://mcp.example.com/mcp", false),
            &old,
        );
        let mut hsts = at("https://mcp.example.com/mcp", false);
        hsts.record(
            Probe::Ping,
            with_header(ok(), "strict-transport-security", "max-age=31536000"),
        );
        assert_rule(
            "WS-TLS-004",
            &hsts,
            &at("https://mcp.example.com/mcp", false),
        );
    }
}
