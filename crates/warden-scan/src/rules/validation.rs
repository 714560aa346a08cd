//! Input validation: what a model gets wrong (names, types, sizes, paths) is refused
//! before anything acts on it, with -32602 or a tool error, never a crash.

use super::{answered, refused_before_acting};
use crate::observe::Probe;
use crate::rule::{Category, Rule, Severity, Verdict};

const TOOLS: &str = "MCP 2025-11-25, Server Features › Tools › Error Handling; Security Considerations (validate all inputs)";

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-VAL-001",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "A call of an unknown tool is refused",
        remediation: "Answer unknown tool names with -32602 (\"Unknown tool\").",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::UnknownTool),
    },
    Rule {
        id: "WS-VAL-002",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "A near-miss of a real tool's name (one letter off) is refused",
        remediation: "Match tool names exactly; never fuzzy-match a hallucinated name to a real tool.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::NearMissTool),
    },
    Rule {
        id: "WS-VAL-003",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "An argument the schema does not declare is refused",
        remediation: "Validate arguments against the inputSchema with additionalProperties: false.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::ExtraArgument),
    },
    Rule {
        id: "WS-VAL-004",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "An argument of the wrong type is refused, not coerced",
        remediation: "Validate types strictly: \"5\" is not an integer.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::WrongType),
    },
    Rule {
        id: "WS-VAL-005",
        category: Category::Validation,
        severity: Severity::Low,
        title: "A call missing a required argument is refused",
        remediation: "Check `required` before acting.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::MissingRequired),
    },
    Rule {
        id: "WS-VAL-006",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "A 1 MiB string argument is refused, without a server fault",
        remediation: "Bound string arguments (maxLength) and the request body.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::HugeString),
    },
    Rule {
        id: "WS-VAL-007",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "Arguments nested 1,000 deep are refused, without a server fault",
        remediation: "Cap JSON nesting depth before building a tree (a recursive parser can overflow its stack).",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::DeepNesting),
    },
    Rule {
        id: "WS-VAL-008",
        category: Category::Validation,
        severity: Severity::High,
        title: "A path argument with `../` is refused",
        remediation: "Confine path arguments to a root: refuse `..` segments and resolve symlinks before checking.",
        reference: "OWASP Path Traversal; MCP Security Best Practices",
        check: |seen| refused_before_acting(seen, Probe::Traversal),
    },
    Rule {
        id: "WS-VAL-009",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "A path argument with a NUL byte is refused",
        remediation: "Refuse control characters, NUL first, in path arguments.",
        reference: "CWE-158 (NUL byte injection)",
        check: |seen| refused_before_acting(seen, Probe::NulInPath),
    },
    Rule {
        id: "WS-VAL-011",
        category: Category::Validation,
        severity: Severity::Low,
        title: "`null` for a typed argument is refused, not read as absent",
        remediation: "Validate types strictly: null is not a string, a number or an object unless the schema says so.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::NullArgument),
    },
    Rule {
        id: "WS-VAL-012",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "A number written as a string (\"5\") is refused for an integer argument",
        remediation: "Do not coerce: a string is not a number, whatever it spells.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::NumericString),
    },
    Rule {
        id: "WS-VAL-013",
        category: Category::Validation,
        severity: Severity::Medium,
        title: "A real tool's name with an invisible character appended is refused",
        remediation: "Compare tool names byte for byte; never strip or normalise what the client sent.",
        reference: TOOLS,
        check: |seen| refused_before_acting(seen, Probe::InvisibleToolName),
    },
    Rule {
        id: "WS-VAL-014",
        category: Category::Validation,
        severity: Severity::Low,
        title: "tools/call whose params are an array (not an object) is refused",
        remediation: "Check the shape of params before reading it; MCP params are an object.",
        reference: "JSON-RPC 2.0 › Parameter Structures; MCP 2025-11-25 › Tools › Calling Tools",
        check: |seen| refused_before_acting(seen, Probe::ParamsArray),
    },
    Rule {
        id: "WS-VAL-015",
        category: Category::Validation,
        severity: Severity::Low,
        title: "Read-only tools answer valid arguments with a result (--allow-calls)",
        remediation: "Answer a call that matches the tool's own inputSchema with a result (a tool error is a result), never a protocol error or a fault.",
        reference: TOOLS,
        check: |seen| {
            if seen.tool_calls.is_empty() {
                return Verdict::skip("no read-only tool was called (see --allow-calls)");
            }
            // A tool that works longer than --timeout (or a 429) says nothing either way.
            let judged: Vec<&(String, crate::http::Exchange)> = seen
                .tool_calls
                .iter()
                .filter(|(_, answer)| answer.status != 429 && !answer.timed_out())
                .collect();
            if judged.is_empty() {
                return Verdict::skip("every call was rate-limited or outlasted --timeout");
            }
            let failed: Vec<String> = judged
                .into_iter()
                .filter(|(_, answer)| answer.result().is_none() || answer.broke())
                .map(|(name, answer)| format!("{name}: {}", answer.summary()))
                .collect();
            Verdict::from_check(failed.is_empty(), || failed.join("; "))
        },
    },
    Rule {
        id: "WS-VAL-010",
        category: Category::Validation,
        severity: Severity::High,
        title: "Invalid input never faults the server (no 5xx, no dropped connection; it still answers)",
        remediation: "Validate before acting, and map every failure to a JSON-RPC error.",
        reference: TOOLS,
        check: |seen| {
            let probes = [
                Probe::UnknownTool,
                Probe::NearMissTool,
                Probe::ExtraArgument,
                Probe::WrongType,
                Probe::MissingRequired,
                Probe::HugeString,
                Probe::DeepNesting,
                Probe::Traversal,
                Probe::NulInPath,
                Probe::NullArgument,
                Probe::NumericString,
                Probe::InvisibleToolName,
                Probe::ParamsArray,
            ];
            let faults: Vec<String> = probes
                .iter()
                .filter_map(|probe| seen.answer(*probe))
                .filter(|answer| answer.broke())
                .map(|answer| answer.summary())
                .collect();
            match answered(seen, Probe::AliveAfterValidation) {
                Err(skip) => skip,
                Ok(alive) if !faults.is_empty() || alive.broke() => Verdict::fail(format!(
                    "{}; afterwards: {}",
                    faults.join("; "),
                    alive.summary()
                )),
                Ok(_) => Verdict::Pass,
            }
        },
    },
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::observe::Probe;
    use crate::rules::fixtures::{answer, assert_rule, ok, rpc_error, seen};

    #[test]
    fn invalid_calls_are_refused_before_acting() {
        let tool_error = answer(
            200,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"isError": true, "content": []}}),
        );
        for (id, probe) in [
            ("WS-VAL-001", Probe::UnknownTool),
            ("WS-VAL-002", Probe::NearMissTool),
            ("WS-VAL-003", Probe::ExtraArgument),
            ("WS-VAL-004", Probe::WrongType),
            ("WS-VAL-005", Probe::MissingRequired),
            ("WS-VAL-006", Probe::HugeString),
            ("WS-VAL-007", Probe::DeepNesting),
            ("WS-VAL-008", Probe::Traversal),
            ("WS-VAL-009", Probe::NulInPath),
            ("WS-VAL-011", Probe::NullArgument),
            ("WS-VAL-012", Probe::NumericString),
            ("WS-VAL-013", Probe::InvisibleToolName),
            ("WS-VAL-014", Probe::ParamsArray),
        ] {
            assert_rule(
                id,
                &seen([(probe, rpc_error(400, -32602))]),
                &seen([(probe, ok())]),
            );
            assert_rule(
                id,
                &seen([(probe, tool_error.clone())]),
                &seen([(probe, rpc_error(500, -32603))]),
            );
        }
        let mut called = seen([]);
        called.tool_calls = vec![("search".into(), tool_error.clone()), ("get".into(), ok())];
        let mut faulted = seen([]);
        faulted.tool_calls = vec![("search".into(), rpc_error(500, -32603))];
        let mut slow = seen([]);
        slow.tool_calls = vec![(
            "wait".into(),
            crate::http::Exchange {
                error: Some("timed out: operation timed out".into()),
                ..answer(200, serde_json::Value::Null)
            },
        )];
        let rule = crate::rules::all().find(|r| r.id == "WS-VAL-015").unwrap();
        assert!(matches!((rule.check)(&slow), crate::rule::Verdict::Skip(_)));
        assert_rule("WS-VAL-015", &called, &faulted);
        let alive = (Probe::AliveAfterValidation, ok());
        assert_rule(
            "WS-VAL-010",
            &seen([(Probe::DeepNesting, rpc_error(400, -32602)), alive.clone()]),
            &seen([(Probe::DeepNesting, rpc_error(500, -32603)), alive]),
        );
    }
}
