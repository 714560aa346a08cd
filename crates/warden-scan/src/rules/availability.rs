//! Availability: a fan-out of one user message is served; a runaway loop meets a limit
//! that says when to come back; a client that trickles its request is cut off.

use crate::observe::SlowLoris;
use crate::rule::{Category, Rule, Severity, Verdict};

const DOS: &str = "MCP Security Best Practices; OWASP API4:2023 Unrestricted Resource Consumption";

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-AVL-001",
        category: Category::Availability,
        severity: Severity::Medium,
        title: "15 parallel calls (one user message's fan-out) are all served",
        remediation: "Admit a burst of a minute's worth per key; queue briefly rather than refuse at once.",
        reference: DOS,
        check: |seen| {
            if seen.parallel.is_empty() {
                return Verdict::skip("the probe did not run against this target");
            }
            let failed: Vec<String> = seen
                .parallel
                .iter()
                .filter(|a| !a.succeeded())
                .map(|a| a.summary())
                .collect();
            Verdict::from_check(failed.is_empty(), || {
                format!(
                    "{} of {} failed: {}",
                    failed.len(),
                    seen.parallel.len(),
                    failed.first().cloned().unwrap_or_default()
                )
            })
        },
    },
    Rule {
        id: "WS-AVL-002",
        category: Category::Availability,
        severity: Severity::Medium,
        title: "A burst of 50 calls meets a rate limit (429) at some point",
        remediation: "Limit requests per key (and per address) with token buckets.",
        reference: DOS,
        check: |seen| {
            if seen.burst.is_empty() {
                return Verdict::skip("the probe did not run against this target");
            }
            Verdict::from_check(seen.burst.iter().any(|a| a.status == 429), || {
                format!("{} calls in a row, none limited", seen.burst.len())
            })
        },
    },
    Rule {
        id: "WS-AVL-003",
        category: Category::Availability,
        severity: Severity::Low,
        title: "Every 429 says when to retry (Retry-After)",
        remediation: "Send Retry-After (seconds) with every 429, so that clients back off instead of hammering.",
        reference: "RFC 6585 § 4",
        check: |seen| {
            let limited: Vec<_> = seen.exchanges().filter(|a| a.status == 429).collect();
            if limited.is_empty() {
                return Verdict::skip("no 429 was seen");
            }
            let bare: Vec<String> = limited
                .iter()
                .filter(|a| a.header("retry-after").is_none())
                .map(|a| a.summary())
                .collect();
            Verdict::from_check(bare.is_empty(), || {
                format!("429 without Retry-After: {}", bare.join("; "))
            })
        },
    },
    Rule {
        id: "WS-AVL-004",
        category: Category::Availability,
        severity: Severity::Medium,
        title: "A connection that trickles its request head (slow-loris) is cut within 15 s",
        remediation: "Time the request head (e.g. 10 s) and close connections that do not complete it.",
        reference: "CWE-400; slow-loris",
        check: |seen| match seen.slow_loris {
            None => Verdict::skip("not a plain HTTP target"),
            Some(SlowLoris::CutAfter(_)) => Verdict::Pass,
            Some(SlowLoris::StillOpen(secs)) => {
                Verdict::fail(format!("still open after {secs} s of one byte a second"))
            }
        },
    },
];

#[cfg(test)]
mod tests {
    use crate::observe::{Observations, SlowLoris};
    use crate::rules::fixtures::{assert_rule, ok, rpc_error, with_header};

    #[test]
    fn bursts_limits_and_slow_clients() {
        let good = Observations {
            parallel: vec![ok(); 15],
            burst: vec![
                ok(),
                with_header(rpc_error(429, -32005), "retry-after", "3"),
            ],
            slow_loris: Some(SlowLoris::CutAfter(10)),
            ..Observations::default()
        };
        let bad = Observations {
            parallel: vec![ok(), rpc_error(503, -32603)],
            burst: vec![ok(); 50],
            slow_loris: Some(SlowLoris::StillOpen(15)),
            ..Observations::default()
        };
        for id in ["WS-AVL-001", "WS-AVL-002", "WS-AVL-004"] {
            assert_rule(id, &good, &bad);
        }
        let bare = Observations {
            burst: vec![rpc_error(429, -32005)],
            ..Observations::default()
        };
        assert_rule("WS-AVL-003", &good, &bare);
    }
}
