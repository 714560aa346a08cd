//! Transport and lifecycle, both eras.

use super::{answered, refused_before_acting};
use crate::observe::{Era, Observations, Probe};
use crate::rule::{Category, Rule, Severity, Verdict};

const STREAMABLE: &str = "MCP 2025-11-25, Basic › Transports › Streamable HTTP";
const LIFECYCLE: &str = "MCP 2025-11-25, Basic › Lifecycle";
const JSONRPC: &str = "JSON-RPC 2.0 § 5.1 Error object";
const MODERN: &str =
    "MCP 2026-07-28, Basic › Transports (stateless requests, Mcp-Method / Mcp-Name)";

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-TRN-001",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A POST whose Content-Type is not application/json is refused (415)",
        remediation: "Check Content-Type before parsing; answer 415.",
        reference: STREAMABLE,
        check: |seen| refused_status(seen, Probe::WrongContentType, &[415, 400]),
    },
    Rule {
        id: "WS-TRN-002",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A POST whose Accept allows neither JSON nor SSE is refused (406)",
        remediation: "Check that Accept allows application/json or text/event-stream; answer 406.",
        reference: STREAMABLE,
        check: |seen| refused_status(seen, Probe::WrongAccept, &[406, 400]),
    },
    Rule {
        id: "WS-TRN-003",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A notification is accepted with 202 and no body",
        remediation: "Answer notifications with 202 Accepted and an empty body.",
        reference: STREAMABLE,
        check: |seen| match answered(seen, Probe::Notification) {
            Err(skip) => skip,
            Ok(answer) => Verdict::from_check(
                answer.status == 202 && answer.body.trim().is_empty(),
                || answer.summary(),
            ),
        },
    },
    Rule {
        id: "WS-TRN-004",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A JSON-RPC batch is refused (batching was removed from MCP)",
        remediation: "Refuse a JSON array body with 400 and -32600.",
        reference: "MCP 2025-06-18 changelog: JSON-RPC batching removed",
        check: |seen| refused_status(seen, Probe::Batch, &[400]),
    },
    Rule {
        id: "WS-TRN-005",
        category: Category::Transport,
        severity: Severity::Low,
        title: "Malformed JSON gets 400 and the parse error -32700",
        remediation: "Answer a body that does not parse with 400 and error -32700.",
        reference: JSONRPC,
        check: |seen| rpc_code(seen, Probe::MalformedJson, -32700),
    },
    Rule {
        id: "WS-TRN-006",
        category: Category::Transport,
        severity: Severity::Low,
        title: "JSON that is not a JSON-RPC message gets -32600",
        remediation: "Validate the envelope (jsonrpc, id, method) and answer -32600.",
        reference: JSONRPC,
        check: |seen| rpc_code(seen, Probe::NotJsonrpc, -32600),
    },
    Rule {
        id: "WS-TRN-007",
        category: Category::Transport,
        severity: Severity::Low,
        title: "An unknown method gets -32601",
        remediation: "Answer methods the server does not implement with -32601.",
        reference: JSONRPC,
        check: |seen| rpc_code(seen, Probe::UnknownMethod, -32601),
    },
    Rule {
        id: "WS-TRN-008",
        category: Category::Transport,
        severity: Severity::Low,
        title: "The response carries the request's id unchanged (a string id)",
        remediation: "Echo the id exactly as sent, whatever its type.",
        reference: "JSON-RPC 2.0 § 5 Response object",
        check: |seen| match answered(seen, Probe::Ping) {
            Err(skip) => skip,
            Ok(answer) => {
                let id = answer
                    .message
                    .as_ref()
                    .and_then(|m| m.get("id"))
                    .and_then(|id| id.as_str());
                Verdict::from_check(id.is_some_and(|id| id.starts_with("scan-")), || {
                    format!("id not echoed: {}", answer.summary())
                })
            }
        },
    },
    Rule {
        id: "WS-TRN-009",
        category: Category::Transport,
        severity: Severity::High,
        title: "Session ids carry at least 128 bits of entropy and only visible ASCII",
        remediation: "Mint session ids from a CSPRNG (e.g. 32 random bytes, base64url).",
        reference: "MCP 2025-11-25, Transports › Session Management; Security Best Practices › Session Hijacking",
        check: |seen| match (&seen.era, &seen.session_id) {
            (_, Some(id)) => {
                let visible = id.bytes().all(|b| (0x21..=0x7e).contains(&b));
                let distinct: std::collections::HashSet<char> = id.chars().collect();
                Verdict::from_check(visible && id.len() >= 22 && distinct.len() >= 10, || {
                    format!("session id of {} characters", id.len())
                })
            }
            (Some(_), None) => Verdict::skip("the server keeps no sessions"),
            (None, None) => Verdict::skip("the server could not be spoken to"),
        },
    },
    Rule {
        id: "WS-TRN-010",
        category: Category::Transport,
        severity: Severity::Medium,
        title: "After initialize, a request without the session id is refused (400)",
        remediation: "Require Mcp-Session-Id on every request after initialize.",
        reference: "MCP 2025-11-25, Transports › Session Management",
        check: |seen| refused_status(seen, Probe::NoSession, &[400]),
    },
    Rule {
        id: "WS-TRN-011",
        category: Category::Transport,
        severity: Severity::Medium,
        title: "An unknown session id gets 404",
        remediation: "Answer 404 for a session id the server does not hold, so the client starts a new one.",
        reference: "MCP 2025-11-25, Transports › Session Management",
        check: |seen| refused_status(seen, Probe::UnknownSession, &[404]),
    },
    Rule {
        id: "WS-TRN-012",
        category: Category::Transport,
        severity: Severity::Low,
        title: "DELETE ends the session (or is refused with 405); the ended session gets 404",
        remediation: "Honour DELETE with the session id, and answer 404 for the session afterwards.",
        reference: "MCP 2025-11-25, Transports › Session Management",
        check: |seen| match (
            seen.answer(Probe::DeleteSession),
            seen.answer(Probe::AfterDelete),
        ) {
            (Some(delete), _) if delete.status == 405 => Verdict::Pass,
            (Some(delete), Some(after)) => Verdict::from_check(
                (200..300).contains(&delete.status) && after.status == 404,
                || format!("{}; then {}", delete.summary(), after.summary()),
            ),
            _ => Verdict::skip("not spoken to with a session"),
        },
    },
    Rule {
        id: "WS-TRN-013",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A second initialize on an open session is refused",
        remediation: "Refuse initialize on a session that is already initialized.",
        reference: LIFECYCLE,
        check: |seen| refused_before_acting(seen, Probe::SecondInitialize),
    },
    Rule {
        id: "WS-TRN-014",
        category: Category::Transport,
        severity: Severity::Low,
        title: "initialize with an unknown version is answered with a version the server supports",
        remediation: "Negotiate: answer with the latest version you support when the client's is unknown.",
        reference: "MCP 2025-11-25, Lifecycle › Version Negotiation",
        check: |seen| match answered(seen, Probe::OddVersionInitialize) {
            Err(skip) => skip,
            Ok(answer) => {
                let version = answer
                    .result()
                    .and_then(|r| r.get("protocolVersion"))
                    .and_then(|v| v.as_str());
                Verdict::from_check(
                    answer.refused() || version.is_some_and(|v| v != "1999-01-01"),
                    || answer.summary(),
                )
            }
        },
    },
    Rule {
        id: "WS-TRN-015",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A 2026-07-28 request naming an unsupported version gets 400 and -32022",
        remediation: "Refuse unsupported versions with -32022 and the list of supported ones.",
        reference: MODERN,
        check: |seen| rpc_code(seen, Probe::UnsupportedVersion, -32022),
    },
    Rule {
        id: "WS-TRN-016",
        category: Category::Transport,
        severity: Severity::Medium,
        title: "An Mcp-Method header that disagrees with the body is refused (-32020)",
        remediation: "Compare Mcp-Method with the body's method; a proxy that routes by header must not be fooled.",
        reference: MODERN,
        check: |seen| rpc_code(seen, Probe::MethodMismatch, -32020),
    },
    Rule {
        id: "WS-TRN-017",
        category: Category::Transport,
        severity: Severity::Medium,
        title: "An Mcp-Name header that disagrees with the body is refused (-32020)",
        remediation: "Compare Mcp-Name with the tool name in the body.",
        reference: MODERN,
        check: |seen| rpc_code(seen, Probe::NameMismatch, -32020),
    },
    Rule {
        id: "WS-TRN-018",
        category: Category::Transport,
        severity: Severity::Low,
        title: "A method of a capability the server did not declare gets -32601",
        remediation: "Answer only the methods of the capabilities you declared.",
        reference: "MCP 2025-11-25, Lifecycle › Capability Negotiation",
        check: |seen| rpc_code(seen, Probe::UndeclaredCapability, -32601),
    },
    Rule {
        id: "WS-TRN-019",
        category: Category::Transport,
        severity: Severity::Low,
        title: "Refusals are JSON-RPC error objects: an integer code and a message",
        remediation: "Send {\"jsonrpc\":\"2.0\",\"id\":…,\"error\":{\"code\":…,\"message\":…}} for every refusal with a body.",
        reference: JSONRPC,
        check: |seen| {
            let malformed: Vec<String> = seen
                .exchanges()
                .filter(|answer| {
                    answer.status >= 400 && answer.status != 405 && !answer.body.trim().is_empty()
                })
                .filter(|answer| {
                    let error = answer.message.as_ref().and_then(|m| m.get("error"));
                    !error.is_some_and(|e| {
                        e.get("code").is_some_and(|c| c.is_i64())
                            && e.get("message").is_some_and(|m| m.is_string())
                    })
                })
                .map(|answer| answer.summary())
                .collect();
            if seen.answers.is_empty() {
                return Verdict::skip("nothing was answered");
            }
            Verdict::from_check(malformed.is_empty(), || malformed.join("; "))
        },
    },
    Rule {
        id: "WS-TRN-020",
        category: Category::Transport,
        severity: Severity::Info,
        title: "The server speaks the 2026-07-28 era (server/discover)",
        remediation: "Support server/discover and stateless requests.",
        reference: MODERN,
        check: |seen| match answered(seen, Probe::Discover) {
            Err(skip) => skip,
            Ok(answer) => Verdict::from_check(answer.succeeded(), || answer.summary()),
        },
    },
    Rule {
        id: "WS-TRN-021",
        category: Category::Transport,
        severity: Severity::Low,
        title: "The handshake's result is well formed (versions, capabilities, server info)",
        remediation: "Answer initialize with protocolVersion, a capabilities object and serverInfo.name; server/discover with supportedVersions and capabilities.",
        reference: LIFECYCLE,
        check: |seen| {
            let (probe, fields): (Probe, &[&str]) = match seen.era {
                None => return Verdict::skip("no handshake succeeded"),
                Some(Era::Modern) => (Probe::Discover, &["supportedVersions", "capabilities"]),
                Some(Era::Legacy) => (
                    Probe::Initialize,
                    &["protocolVersion", "capabilities", "serverInfo"],
                ),
            };
            match answered(seen, probe) {
                Err(skip) => skip,
                Ok(answer) => {
                    let missing: Vec<&str> = fields
                        .iter()
                        .filter(|field| !well_formed(answer.result(), field))
                        .copied()
                        .collect();
                    Verdict::from_check(missing.is_empty(), || {
                        format!(
                            "missing or malformed: {} in {}",
                            missing.join(", "),
                            answer.summary()
                        )
                    })
                }
            }
        },
    },
    Rule {
        id: "WS-TRN-022",
        category: Category::Transport,
        severity: Severity::Low,
        title: "Answers with a body say it is application/json or text/event-stream",
        remediation: "Send Content-Type: application/json (or text/event-stream for a stream) on every answer that carries a message.",
        reference: STREAMABLE,
        check: |seen| {
            if seen.answers.is_empty() {
                return Verdict::skip("nothing was answered");
            }
            let mislabelled = seen.exchanges().find(|answer| {
                (200..300).contains(&answer.status)
                    && !answer.body.trim().is_empty()
                    && !answer.header("content-type").is_some_and(|kind| {
                        let kind = kind.to_ascii_lowercase();
                        kind.starts_with("application/json")
                            || kind.starts_with("text/event-stream")
                    })
            });
            match mislabelled {
                Some(answer) => Verdict::fail(format!(
                    "Content-Type {:?} on {}",
                    answer.header("content-type").unwrap_or("(none)"),
                    answer.summary()
                )),
                None => Verdict::Pass,
            }
        },
    },
];

/// Whether the handshake result's `field` has the shape MCP gives it.
fn well_formed(result: Option<&serde_json::Value>, field: &str) -> bool {
    let Some(value) = result.and_then(|r| r.get(field)) else {
        return false;
    };
    match field {
        "protocolVersion" => value.is_string(),
        "capabilities" => value.is_object(),
        "serverInfo" => value.get("name").is_some_and(serde_json::Value::is_string),
        "supportedVersions" => value.as_array().is_some_and(|versions| {
            !versions.is_empty() && versions.iter().all(serde_json::Value::is_string)
        }),
        _ => false,
    }
}

/// The probe was refused with one of `statuses`.
fn refused_status(seen: &Observations, probe: Probe, statuses: &[u16]) -> Verdict {
    match answered(seen, probe) {
        Err(skip) => skip,
        Ok(answer) => Verdict::from_check(statuses.contains(&answer.status), || answer.summary()),
    }
}

/// The probe was answered with JSON-RPC error `code`.
fn rpc_code(seen: &Observations, probe: Probe, code: i64) -> Verdict {
    match answered(seen, probe) {
        Err(skip) => skip,
        Ok(answer) => Verdict::from_check(answer.error_code() == Some(code), || answer.summary()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::observe::{Era, Probe};
    use crate::rules::fixtures::{answer, assert_rule, ok, rpc_error, seen};

    #[test]
    fn status_rules() {
        for (id, probe, good) in [
            ("WS-TRN-001", Probe::WrongContentType, 415),
            ("WS-TRN-002", Probe::WrongAccept, 406),
            ("WS-TRN-004", Probe::Batch, 400),
            ("WS-TRN-010", Probe::NoSession, 400),
            ("WS-TRN-011", Probe::UnknownSession, 404),
        ] {
            assert_rule(
                id,
                &seen([(probe, rpc_error(good, -32600))]),
                &seen([(probe, ok())]),
            );
        }
    }

    #[test]
    fn code_rules() {
        for (id, probe, code) in [
            ("WS-TRN-005", Probe::MalformedJson, -32700),
            ("WS-TRN-006", Probe::NotJsonrpc, -32600),
            ("WS-TRN-007", Probe::UnknownMethod, -32601),
            ("WS-TRN-015", Probe::UnsupportedVersion, -32022),
            ("WS-TRN-016", Probe::MethodMismatch, -32020),
            ("WS-TRN-017", Probe::NameMismatch, -32020),
            ("WS-TRN-018", Probe::UndeclaredCapability, -32601),
        ] {
            assert_rule(
                id,
                &seen([(probe, rpc_error(400, code))]),
                &seen([(probe, rpc_error(500, -32603))]),
            );
        }
    }

    #[test]
    fn lifecycle_rules() {
        let accepted = answer(202, serde_json::Value::Null);
        assert_rule(
            "WS-TRN-003",
            &seen([(Probe::Notification, accepted)]),
            &seen([(Probe::Notification, ok())]),
        );
        let echoed = answer(200, json!({"jsonrpc": "2.0", "id": "scan-3", "result": {}}));
        assert_rule(
            "WS-TRN-008",
            &seen([(Probe::Ping, echoed)]),
            &seen([(Probe::Ping, ok())]),
        );
        let mut good = seen([]);
        good.era = Some(Era::Legacy);
        good.session_id = Some("q3Jk9xZ_2mPa7LwT4nBv8cRd1sEf6gHy0uIo".into());
        let mut bad = good.clone();
        bad.session_id = Some("1".into());
        assert_rule("WS-TRN-009", &good, &bad);
        let deleted = seen([
            (Probe::DeleteSession, answer(204, serde_json::Value::Null)),
            (Probe::AfterDelete, rpc_error(404, -32001)),
        ]);
        let kept = seen([
            (Probe::DeleteSession, answer(204, serde_json::Value::Null)),
            (Probe::AfterDelete, ok()),
        ]);
        assert_rule("WS-TRN-012", &deleted, &kept);
        assert_rule(
            "WS-TRN-013",
            &seen([(Probe::SecondInitialize, rpc_error(400, -32600))]),
            &seen([(Probe::SecondInitialize, ok())]),
        );
        let negotiated = answer(
            200,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25"}}),
        );
        let parroted = answer(
            200,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "1999-01-01"}}),
        );
        assert_rule(
            "WS-TRN-014",
            &seen([(Probe::OddVersionInitialize, negotiated)]),
            &seen([(Probe::OddVersionInitialize, parroted)]),
        );
        let plain = answer(400, serde_json::Value::Null);
        let plain = crate::http::Exchange {
            body: "Bad Request".into(),
            ..plain
        };
        assert_rule(
            "WS-TRN-019",
            &seen([(Probe::Batch, rpc_error(400, -32600))]),
            &seen([(Probe::Batch, plain)]),
        );
        assert_rule(
            "WS-TRN-020",
            &seen([(Probe::Discover, ok())]),
            &seen([(Probe::Discover, rpc_error(404, -32601))]),
        );
    }

    #[test]
    fn shape_rules() {
        let result = |result| answer(200, json!({"jsonrpc": "2.0", "id": 1, "result": result}));
        let mut good = seen([(
            Probe::Initialize,
            result(
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "s"}}),
            ),
        )]);
        good.era = Some(Era::Legacy);
        let mut bad = seen([(
            Probe::Initialize,
            result(json!({"protocolVersion": "2025-11-25", "capabilities": []})),
        )]);
        bad.era = Some(Era::Legacy);
        assert_rule("WS-TRN-021", &good, &bad);
        let mut good = seen([(
            Probe::Discover,
            result(json!({"supportedVersions": ["2026-07-28"], "capabilities": {}})),
        )]);
        good.era = Some(Era::Modern);
        let mut bad = seen([(Probe::Discover, result(json!({"supportedVersions": []})))]);
        bad.era = Some(Era::Modern);
        assert_rule("WS-TRN-021", &good, &bad);
        let mut html = ok();
        html.headers = vec![("content-type".into(), "text/html".into())];
        assert_rule(
            "WS-TRN-022",
            &seen([(Probe::Ping, ok())]),
            &seen([(Probe::Ping, html)]),
        );
    }
}
