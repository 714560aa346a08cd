//! Authentication: nothing answers without a credential, and a credential counts only
//! in the Authorization header.

use super::answered;
use crate::observe::{Observations, Probe};
use crate::rule::{Category, Rule, Severity, Verdict};

const AUTHORIZATION: &str = "MCP 2025-11-25, Basic › Authorization";
const BEST_PRACTICES: &str = "MCP Security Best Practices";

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-AUTH-001",
        category: Category::Authentication,
        severity: Severity::Critical,
        title: "A request without credentials is refused (401)",
        remediation: "Require a credential on every request (put Warden in front: one key per client installation).",
        reference: AUTHORIZATION,
        check: |seen| match answered(seen, Probe::NoCredentials) {
            Err(skip) => skip,
            Ok(answer) => Verdict::from_check(answer.status == 401, || {
                format!("answered without any credential: {}", answer.summary())
            }),
        },
    },
    Rule {
        id: "WS-AUTH-002",
        category: Category::Authentication,
        severity: Severity::Medium,
        title: "A 401 names the scheme: WWW-Authenticate: Bearer",
        remediation: "Send WWW-Authenticate: Bearer (with resource_metadata) on every 401.",
        reference: "RFC 6750 § 3; RFC 9728 § 5.1",
        check: |seen| match answered(seen, Probe::NoCredentials) {
            Err(skip) => skip,
            Ok(answer) if answer.status != 401 => Verdict::skip("no 401 to look at"),
            Ok(answer) => Verdict::from_check(
                answer
                    .header("www-authenticate")
                    .is_some_and(|v| v.to_ascii_lowercase().starts_with("bearer")),
                || answer.summary(),
            ),
        },
    },
    Rule {
        id: "WS-AUTH-003",
        category: Category::Authentication,
        severity: Severity::Critical,
        title: "A bearer key no one issued is refused (401)",
        remediation: "Look every key up (hashed) and refuse unknown, expired and revoked ones.",
        reference: AUTHORIZATION,
        check: |seen| unless_open(seen, Probe::WrongBearer, |answer| answer.status == 401),
    },
    Rule {
        id: "WS-AUTH-004",
        category: Category::Authentication,
        severity: Severity::High,
        title: "A credential in another scheme (Basic) is refused",
        remediation: "Accept only the Bearer scheme; refuse others with 401.",
        reference: "MCP 2025-11-25, Authorization › Access Token Usage",
        check: |seen| {
            unless_open(seen, Probe::MalformedAuthorization, |answer| {
                matches!(answer.status, 400 | 401)
            })
        },
    },
    Rule {
        id: "WS-AUTH-005",
        category: Category::Authentication,
        severity: Severity::High,
        title: "A credential in the URL (and no header) is refused",
        remediation: "Never read credentials from the query string: they end up in logs, histories and Referer headers.",
        reference: "MCP 2025-11-25, Authorization › Access Token Usage (MUST NOT be in the query string)",
        check: |seen| unless_open(seen, Probe::TokenInQuery, |answer| !answer.succeeded()),
    },
    Rule {
        id: "WS-AUTH-006",
        category: Category::Authentication,
        severity: Severity::High,
        title: "A credential in the JSON body (and no header) is refused",
        remediation: "Take credentials from the Authorization header only.",
        reference: AUTHORIZATION,
        check: |seen| unless_open(seen, Probe::TokenInBody, |answer| !answer.succeeded()),
    },
    Rule {
        id: "WS-AUTH-007",
        category: Category::Authentication,
        severity: Severity::Low,
        title: "Protected-resource metadata is served (RFC 9728)",
        remediation: "Serve /.well-known/oauth-protected-resource naming the resource and how the credential is sent.",
        reference: "RFC 9728; MCP 2025-11-25, Authorization › Authorization Server Discovery",
        check: |seen| {
            if seen.is_open() {
                return Verdict::skip("the server takes no credentials at all (see WS-AUTH-001)");
            }
            match answered(seen, Probe::ResourceMetadata) {
                Err(skip) => skip,
                Ok(answer) => Verdict::from_check(
                    answer.status == 200
                        && answer
                            .message
                            .as_ref()
                            .is_some_and(|m| m.get("resource").is_some()),
                    || answer.summary(),
                ),
            }
        },
    },
    Rule {
        id: "WS-AUTH-008",
        category: Category::Authentication,
        severity: Severity::Critical,
        title: "A session id is never taken as authentication",
        remediation: "Authenticate every request; bind sessions to the credential that opened them.",
        reference: "MCP Security Best Practices › Session Hijacking (sessions MUST NOT be used for authentication)",
        check: |seen| {
            unless_open(seen, Probe::SessionWithoutCredentials, |answer| {
                answer.status == 401
            })
        },
    },
    Rule {
        id: "WS-AUTH-009",
        category: Category::Authentication,
        severity: Severity::Medium,
        title: "Guessing keys is throttled (429 within 25 wrong keys)",
        remediation: "Count wrong credentials per client address and refuse with 429 past a small budget.",
        reference: BEST_PRACTICES,
        check: |seen| {
            if seen.is_open() {
                return Verdict::skip("the server takes no credentials at all (see WS-AUTH-001)");
            }
            if seen.guessing.is_empty() {
                return Verdict::skip("the probe did not run against this target");
            }
            Verdict::from_check(seen.guessing.iter().any(|a| a.status == 429), || {
                format!("{} wrong keys, none throttled", seen.guessing.len())
            })
        },
    },
    Rule {
        id: "WS-AUTH-010",
        category: Category::Authentication,
        severity: Severity::Low,
        title: "A 401 points at the protected-resource metadata (resource_metadata)",
        remediation: "Add resource_metadata=\"https://…/.well-known/oauth-protected-resource\" to the WWW-Authenticate challenge.",
        reference: "RFC 9728 § 5.1; MCP 2025-11-25, Authorization › Protected Resource Metadata Discovery",
        check: |seen| {
            unless_open(seen, Probe::NoCredentials, |answer| {
                answer
                    .header("www-authenticate")
                    .is_some_and(|challenge| challenge.contains("resource_metadata="))
            })
        },
    },
    Rule {
        id: "WS-AUTH-011",
        category: Category::Authentication,
        severity: Severity::Medium,
        title: "The protected-resource metadata offers the header only (bearer_methods_supported)",
        remediation: "Offer bearer_methods_supported = [\"header\"]: a token in a query string or a form body leaks into logs and histories.",
        reference: "RFC 9728 § 2; RFC 6750 § 2.3; OAuth 2.0 Security BCP",
        check: |seen| {
            unless_open(seen, Probe::ResourceMetadata, |answer| {
                answer
                    .message
                    .as_ref()
                    .and_then(|m| m.get("bearer_methods_supported"))
                    .and_then(serde_json::Value::as_array)
                    .is_none_or(|methods| methods.iter().all(|m| m == "header"))
            })
        },
    },
];

/// A credential probe's verdict; on a server that takes no credential at all the probe
/// says nothing more than WS-AUTH-001 did.
fn unless_open(
    seen: &Observations,
    probe: Probe,
    ok: fn(&crate::http::Exchange) -> bool,
) -> Verdict {
    if seen.is_open() {
        return Verdict::skip("the server takes no credentials at all (see WS-AUTH-001)");
    }
    match answered(seen, probe) {
        Err(skip) => skip,
        Ok(answer) => Verdict::from_check(ok(answer), || answer.summary()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::observe::Probe;
    use crate::rules::fixtures::{answer, assert_rule, ok, rpc_error, seen, with_header};

    fn closed() -> crate::http::Exchange {
        with_header(
            rpc_error(401, -32001),
            "www-authenticate",
            "Bearer resource_metadata=\"x\"",
        )
    }

    #[test]
    fn credentials_are_required_and_only_in_the_header() {
        assert_rule(
            "WS-AUTH-001",
            &seen([(Probe::NoCredentials, closed())]),
            &seen([(Probe::NoCredentials, ok())]),
        );
        assert_rule(
            "WS-AUTH-002",
            &seen([(Probe::NoCredentials, closed())]),
            &seen([(Probe::NoCredentials, rpc_error(401, -32001))]),
        );
        for (id, probe) in [
            ("WS-AUTH-003", Probe::WrongBearer),
            ("WS-AUTH-004", Probe::MalformedAuthorization),
            ("WS-AUTH-005", Probe::TokenInQuery),
            ("WS-AUTH-006", Probe::TokenInBody),
            ("WS-AUTH-008", Probe::SessionWithoutCredentials),
        ] {
            let good = seen([(Probe::NoCredentials, closed()), (probe, closed())]);
            let bad = seen([(Probe::NoCredentials, closed()), (probe, ok())]);
            assert_rule(id, &good, &bad);
            // On an open server the finding is WS-AUTH-001's alone.
            let open = seen([(Probe::NoCredentials, ok()), (probe, ok())]);
            let rule = crate::rules::all().find(|r| r.id == id).unwrap();
            assert!(
                matches!((rule.check)(&open), crate::rule::Verdict::Skip(_)),
                "{id}"
            );
        }
    }

    #[test]
    fn metadata_and_throttling() {
        let metadata = answer(
            200,
            json!({"resource": "https://mcp.example.com/mcp", "bearer_methods_supported": ["header"]}),
        );
        assert_rule(
            "WS-AUTH-007",
            &seen([
                (Probe::NoCredentials, closed()),
                (Probe::ResourceMetadata, metadata),
            ]),
            &seen([
                (Probe::NoCredentials, closed()),
                (Probe::ResourceMetadata, rpc_error(404, -32601)),
            ]),
        );
        assert_rule(
            "WS-AUTH-010",
            &seen([(Probe::NoCredentials, closed())]),
            &seen([(
                Probe::NoCredentials,
                with_header(rpc_error(401, -32001), "www-authenticate", "Bearer"),
            )]),
        );
        let offering = |methods| {
            answer(
                200,
                json!({"resource": "https://mcp.example.com/mcp", "bearer_methods_supported": methods}),
            )
        };
        assert_rule(
            "WS-AUTH-011",
            &seen([
                (Probe::NoCredentials, closed()),
                (Probe::ResourceMetadata, offering(json!(["header"]))),
            ]),
            &seen([
                (Probe::NoCredentials, closed()),
                (
                    Probe::ResourceMetadata,
                    offering(json!(["header", "query"])),
                ),
            ]),
        );
        let mut good = seen([(Probe::NoCredentials, closed())]);
        good.guessing = vec![closed(), closed(), rpc_error(429, -32005)];
        let mut bad = seen([(Probe::NoCredentials, closed())]);
        bad.guessing = vec![closed(); 25];
        assert_rule("WS-AUTH-009", &good, &bad);
    }
}
