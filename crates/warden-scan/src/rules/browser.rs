//! Browser-facing: a page in someone's browser must not reach the server, whether it
//! sends its own Origin or rebinds a name of its own to the server's address.

use super::answered;
use crate::observe::Probe;
use crate::rule::{Category, Rule, Severity, Verdict};

const ORIGIN: &str = "MCP 2025-11-25, Transports › Security Warning (servers MUST validate Origin)";
const EVIL: &str = "https://evil.example.com";

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-WEB-001",
        category: Category::Browser,
        severity: Severity::Low,
        title: "A CORS preflight is answered before authentication (never 401)",
        remediation: "Answer OPTIONS preflights without requiring credentials (browsers send none).",
        reference: "Fetch Standard › CORS protocol (preflights carry no credentials)",
        check: |seen| match answered(seen, Probe::Preflight) {
            Err(skip) => skip,
            Ok(answer) => {
                Verdict::from_check(answer.status != 401 && !answer.broke(), || answer.summary())
            }
        },
    },
    Rule {
        id: "WS-WEB-002",
        category: Category::Browser,
        severity: Severity::High,
        title: "No wildcard Access-Control-Allow-Origin",
        remediation: "Name allowed origins one by one; never answer `*`.",
        reference: ORIGIN,
        check: |seen| {
            let wildcard: Vec<String> = [Probe::Preflight, Probe::ForeignOrigin]
                .iter()
                .filter_map(|probe| seen.answer(*probe))
                .filter(|answer| answer.header("access-control-allow-origin") == Some("*"))
                .map(|answer| answer.summary())
                .collect();
            if seen.answer(Probe::Preflight).is_none()
                && seen.answer(Probe::ForeignOrigin).is_none()
            {
                return Verdict::skip("the probe did not run against this target");
            }
            Verdict::from_check(wildcard.is_empty(), || {
                format!("Access-Control-Allow-Origin: * on {}", wildcard.join("; "))
            })
        },
    },
    Rule {
        id: "WS-WEB-003",
        category: Category::Browser,
        severity: Severity::High,
        title: "A foreign origin is not reflected in Access-Control-Allow-Origin",
        remediation: "Allow only configured origins; do not copy the request's Origin into the answer.",
        reference: ORIGIN,
        check: |seen| {
            let reflected: Vec<String> = [Probe::Preflight, Probe::ForeignOrigin]
                .iter()
                .filter_map(|probe| seen.answer(*probe))
                .filter(|answer| answer.header("access-control-allow-origin") == Some(EVIL))
                .map(|answer| answer.summary())
                .collect();
            if seen.answer(Probe::Preflight).is_none()
                && seen.answer(Probe::ForeignOrigin).is_none()
            {
                return Verdict::skip("the probe did not run against this target");
            }
            Verdict::from_check(reflected.is_empty(), || {
                format!("{EVIL} allowed on {}", reflected.join("; "))
            })
        },
    },
    Rule {
        id: "WS-WEB-004",
        category: Category::Browser,
        severity: Severity::High,
        title: "A request from a foreign Origin is refused (403)",
        remediation: "Validate Origin on every request and refuse origins you do not serve with 403.",
        reference: ORIGIN,
        check: |seen| match answered(seen, Probe::ForeignOrigin) {
            Err(skip) => skip,
            Ok(answer) => Verdict::from_check(
                answer.status == 403
                    || (answer.refused() && !answer.succeeded() && answer.status >= 400),
                || format!("a page on {EVIL} was answered: {}", answer.summary()),
            ),
        },
    },
    Rule {
        id: "WS-WEB-005",
        category: Category::Browser,
        severity: Severity::High,
        title: "A request with a foreign Host is refused (DNS rebinding)",
        remediation: "Answer only the Host names you serve (loopback names on a loopback listener).",
        reference: "MCP 2025-11-25, Transports › Security Warning (bind to localhost, validate Origin); DNS rebinding",
        check: |seen| match answered(seen, Probe::ForeignHost) {
            Err(skip) => skip,
            Ok(answer) => Verdict::from_check((400..500).contains(&answer.status), || {
                format!("Host: evil.example.com was answered: {}", answer.summary())
            }),
        },
    },
    Rule {
        id: "WS-WEB-006",
        category: Category::Browser,
        severity: Severity::High,
        title: "A foreign origin is never granted credentials (Access-Control-Allow-Credentials)",
        remediation: "Send Access-Control-Allow-Credentials only with an allowed, named origin.",
        reference: "Fetch Standard › CORS protocol and credentials; PortSwigger, CORS misconfigurations",
        check: |seen| {
            let probes = [Probe::Preflight, Probe::ForeignOrigin, Probe::NullOrigin];
            if probes.iter().all(|probe| seen.answer(*probe).is_none()) {
                return Verdict::skip("the probe did not run against this target");
            }
            let granted: Vec<String> = probes
                .iter()
                .filter_map(|probe| seen.answer(*probe))
                .filter(|answer| {
                    answer
                        .header("access-control-allow-credentials")
                        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
                })
                .map(|answer| answer.summary())
                .collect();
            Verdict::from_check(granted.is_empty(), || {
                format!(
                    "Access-Control-Allow-Credentials: true on {}",
                    granted.join("; ")
                )
            })
        },
    },
    Rule {
        id: "WS-WEB-007",
        category: Category::Browser,
        severity: Severity::High,
        title: "Origin `null` (sandboxed frames, file:// pages) is not allowed",
        remediation: "Never allow the origin \"null\": any page can send it from a sandboxed iframe.",
        reference: "Fetch Standard › Origin header (opaque origins serialize as null); PortSwigger, CORS null origin",
        check: |seen| match answered(seen, Probe::NullOrigin) {
            Err(skip) => skip,
            Ok(answer) => Verdict::from_check(
                answer
                    .header("access-control-allow-origin")
                    .is_none_or(|origin| origin.trim() != "null"),
                || format!("Access-Control-Allow-Origin: null on {}", answer.summary()),
            ),
        },
    },
];

#[cfg(test)]
mod tests {
    use crate::observe::Probe;
    use crate::rules::fixtures::{assert_rule, ok, rpc_error, seen, with_header};

    #[test]
    fn pages_elsewhere_are_kept_out() {
        assert_rule(
            "WS-WEB-001",
            &seen([(Probe::Preflight, rpc_error(403, -32600))]),
            &seen([(Probe::Preflight, rpc_error(401, -32001))]),
        );
        let star = with_header(ok(), "access-control-allow-origin", "*");
        let reflected = with_header(
            ok(),
            "access-control-allow-origin",
            "https://evil.example.com",
        );
        assert_rule(
            "WS-WEB-002",
            &seen([(Probe::ForeignOrigin, rpc_error(403, -32600))]),
            &seen([(Probe::ForeignOrigin, star)]),
        );
        assert_rule(
            "WS-WEB-003",
            &seen([(Probe::Preflight, rpc_error(403, -32600))]),
            &seen([(Probe::Preflight, reflected)]),
        );
        assert_rule(
            "WS-WEB-004",
            &seen([(Probe::ForeignOrigin, rpc_error(403, -32600))]),
            &seen([(Probe::ForeignOrigin, ok())]),
        );
        let credentials = with_header(
            with_header(
                ok(),
                "access-control-allow-origin",
                "https://evil.example.com",
            ),
            "access-control-allow-credentials",
            "true",
        );
        assert_rule(
            "WS-WEB-006",
            &seen([(Probe::Preflight, rpc_error(403, -32600))]),
            &seen([(Probe::Preflight, credentials)]),
        );
        assert_rule(
            "WS-WEB-007",
            &seen([(Probe::NullOrigin, rpc_error(403, -32600))]),
            &seen([(
                Probe::NullOrigin,
                with_header(ok(), "access-control-allow-origin", "null"),
            )]),
        );
        assert_rule(
            "WS-WEB-005",
            &seen([(Probe::ForeignHost, rpc_error(403, -32600))]),
            &seen([(Probe::ForeignHost, ok())]),
        );
    }
}
