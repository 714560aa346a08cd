//! Error hygiene: what a refusal says names the problem, never the server's insides
//! (stack traces, paths, SQL, versions) or what it was sent (a secret).

use std::sync::LazyLock;

use regex::Regex;

use crate::observe::Observations;
use crate::rule::{Category, Rule, Severity, Verdict};

const LEAKS: &str = "OWASP Top 10 A05:2021 Security Misconfiguration (verbose errors); CWE-209";

static STACK_TRACE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"Traceback \(most recent call last\)|\n\s+at [\w.$<>]+\(.*:\d+:\d+\)|\n\s+at [\w.$]+\([\w]+\.java:\d+\)|panicked at |goroutine \d+ \[|File "[^"]+", line \d+|Exception in thread"#)
        .expect("compiles")
});
static FILE_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:/home/|/Users/|/usr/lib/|/usr/local/lib/|/var/www/|/opt/|/srv/|[A-Z]:\\)[\w./\\-]+\.(?:py|js|ts|mjs|rs|go|java|rb|php)\b|site-packages/|node_modules/"#)
        .expect("compiles")
});
static SQL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|\bUPDATE\b.+\bSET\b|sqlite3?\.|syntax error at or near|SQLSTATE|psycopg|ORA-\d{5}")
        .expect("compiles")
});
static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:python|node(?:\.js)?|express|uvicorn|gunicorn|werkzeug|flask|django|fastapi|starlette|nginx|apache|jetty|tomcat|php|openssl)[/ ]v?\d+\.\d+")
        .expect("compiles")
});

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-ERR-001",
        category: Category::ErrorHygiene,
        severity: Severity::Medium,
        title: "No stack traces in answers",
        remediation: "Catch failures and answer a JSON-RPC error with a short message; log the trace instead.",
        reference: LEAKS,
        check: |seen| leaks(seen, "a stack trace", |text| STACK_TRACE.is_match(text)),
    },
    Rule {
        id: "WS-ERR-002",
        category: Category::ErrorHygiene,
        severity: Severity::Low,
        title: "No source file paths in answers",
        remediation: "Keep file paths out of error messages.",
        reference: LEAKS,
        check: |seen| leaks(seen, "a source file path", |text| FILE_PATH.is_match(text)),
    },
    Rule {
        id: "WS-ERR-003",
        category: Category::ErrorHygiene,
        severity: Severity::Medium,
        title: "No SQL or database errors in answers",
        remediation: "Map database failures to a generic error; never return the statement or the driver's message.",
        reference: "CWE-209; OWASP SQL Injection Prevention",
        check: |seen| leaks(seen, "SQL or a database error", |text| SQL.is_match(text)),
    },
    Rule {
        id: "WS-ERR-004",
        category: Category::ErrorHygiene,
        severity: Severity::Low,
        title: "No software versions in answers or in the Server header",
        remediation: "Drop the Server banner and version strings from errors.",
        reference: "CWE-200; OWASP WSTG-INFO-02",
        check: |seen| {
            let banner: Vec<String> = seen
                .exchanges()
                .filter_map(|a| {
                    a.header("server")
                        .filter(|s| VERSION.is_match(s) || s.chars().any(|c| c.is_ascii_digit()))
                        .map(|s| format!("Server: {s}"))
                })
                .collect();
            if let Some(banner) = banner.first() {
                return Verdict::fail(banner.clone());
            }
            leaks(seen, "a software version", |text| VERSION.is_match(text))
        },
    },
    Rule {
        id: "WS-ERR-005",
        category: Category::ErrorHygiene,
        severity: Severity::High,
        title: "Answers never echo a secret they were sent",
        remediation: "Name what was wrong (the field, the rule), never the value: it may be a key or a password.",
        reference: "CWE-209; CWE-532",
        check: |seen| {
            if seen.answers.is_empty() {
                return Verdict::skip("nothing was answered");
            }
            Verdict::from_check(seen.echoed_secrets.is_empty(), || {
                format!("a secret came back in: {}", seen.echoed_secrets.join("; "))
            })
        },
    },
];

/// Fails with the first answer whose body `matches`.
fn leaks(seen: &Observations, what: &str, matches: impl Fn(&str) -> bool) -> Verdict {
    if seen.answers.is_empty() {
        return Verdict::skip("nothing was answered");
    }
    match seen.exchanges().find(|answer| matches(&answer.body)) {
        Some(answer) => Verdict::fail(format!("{what} in: {}", answer.summary())),
        None => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use crate::observe::Probe;
    use crate::rules::fixtures::{assert_rule, rpc_error, seen, with_header};

    fn body(text: &str) -> crate::http::Exchange {
        crate::http::Exchange {
            body: text.into(),
            ..rpc_error(500, -32603)
        }
    }

    #[test]
    fn errors_keep_the_insides_in() {
        let clean = seen([(Probe::UnknownTool, rpc_error(400, -32602))]);
        for (id, leak) in [
            (
                "WS-ERR-001",
                "Traceback (most recent call last):\n  File \"/srv/app.py\", line 3",
            ),
            ("WS-ERR-002", "failed in /home/dev/server/handlers.py"),
            (
                "WS-ERR-003",
                "sqlite3.OperationalError: near \"SELECT\": syntax error",
            ),
            ("WS-ERR-004", "powered by Werkzeug/2.3.7 Python/3.11.4"),
        ] {
            assert_rule(id, &clean, &seen([(Probe::UnknownTool, body(leak))]));
        }
        let banner = seen([(
            Probe::Ping,
            with_header(rpc_error(400, -32600), "server", "uvicorn/0.30.1"),
        )]);
        assert_rule("WS-ERR-004", &clean, &banner);
        let mut echoed = clean.clone();
        echoed.echoed_secrets = vec!["tools/list with the key in the URL".into()];
        assert_rule("WS-ERR-005", &clean, &echoed);
    }
}
