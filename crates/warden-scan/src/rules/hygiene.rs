//! Error hygiene: what a refusal says names the problem, never the server's insides
//! (stack traces, paths, SQL, versions) or what it was sent (a secret).

use std::sync::LazyLock;

use regex::Regex;

use super::answered;
use crate::observe::{Observations, Probe};
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

static INTERNAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:10\.\d{1,3}|172\.(?:1[6-9]|2\d|3[01])|192\.168)\.\d{1,3}\.\d{1,3}\b|\b[\w-]+(?:\.[\w-]+)*\.(?:internal|svc\.cluster\.local|corp|lan)\b")
        .expect("compiles")
});
/// Two or more well-known variables of a process environment (or their JSON form).
static ENVIRONMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?s)\b(?:PATH|HOME|USER|SHELL|PWD|HOSTNAME|AWS_SECRET_ACCESS_KEY|DATABASE_URL|OPENAI_API_KEY)\\?"?\s*[=:]\s*\\?"?[^\s,"\\]+.{0,400}?\b(?:PATH|HOME|USER|SHELL|PWD|HOSTNAME|AWS_SECRET_ACCESS_KEY|DATABASE_URL|OPENAI_API_KEY)\\?"?\s*[=:]"#)
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
    Rule {
        id: "WS-ERR-006",
        category: Category::ErrorHygiene,
        severity: Severity::Low,
        title: "A refused 1 MiB value is not echoed back",
        remediation: "Say which argument was too long and its limit, not its value: an echo doubles the traffic and floods logs.",
        reference: "CWE-400; OWASP API4:2023 Unrestricted Resource Consumption",
        check: |seen| match answered(seen, Probe::HugeString) {
            Err(skip) => skip,
            // A tool that took the value may well return it (an echo tool): that the
            // value was taken at all is WS-VAL-006's finding.
            Ok(answer) if !answer.refused() && !answer.broke() => {
                Verdict::skip("the value was not refused (see WS-VAL-006)")
            }
            Ok(answer) => Verdict::from_check(!answer.body.contains(&"w".repeat(4096)), || {
                format!(
                    "{} bytes came back, the value among them: {}",
                    answer.body.len(),
                    answer.summary()
                )
            }),
        },
    },
    Rule {
        id: "WS-ERR-007",
        category: Category::ErrorHygiene,
        severity: Severity::Low,
        title: "No internal network addresses or names in answers",
        remediation: "Keep private addresses and internal host names (10.x, 192.168.x, *.internal, *.svc.cluster.local) out of errors.",
        reference: "CWE-200; OWASP WSTG-INFO-05",
        check: |seen| leaks(seen, "an internal address", |text| INTERNAL.is_match(text)),
    },
    Rule {
        id: "WS-ERR-008",
        category: Category::ErrorHygiene,
        severity: Severity::High,
        title: "No environment or configuration dumps in answers",
        remediation: "Never return the process environment or configuration; it holds the server's own credentials.",
        reference: "CWE-526 (exposure of environment variables); CWE-209",
        check: |seen| {
            leaks(seen, "an environment dump", |text| {
                ENVIRONMENT.is_match(text)
            })
        },
    },
];

/// Fails with the first refusal or fault whose body `matches` (what a tool returns on
/// success is its data, not an error's insides).
fn leaks(seen: &Observations, what: &str, matches: impl Fn(&str) -> bool) -> Verdict {
    if seen.answers.is_empty() {
        return Verdict::skip("nothing was answered");
    }
    let errors = seen
        .exchanges()
        .filter(|answer| answer.refused() || answer.broke());
    match errors.into_iter().find(|answer| matches(&answer.body)) {
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
        for (id, leak) in [
            (
                "WS-ERR-007",
                "upstream 10.2.3.4:5432 refused the connection",
            ),
            ("WS-ERR-007", "cannot reach notes-db.prod.svc.cluster.local"),
            (
                "WS-ERR-008",
                "{\"env\": {\"PATH\": \"/usr/bin\", \"HOME\": \"/root\"}}",
            ),
            ("WS-ERR-008", "HOME=/root\nPATH=/usr/bin:/bin\n"),
        ] {
            assert_rule(id, &clean, &seen([(Probe::UnknownTool, body(leak))]));
        }
        let echo = "w".repeat(1 << 20);
        assert_rule(
            "WS-ERR-006",
            &seen([(Probe::HugeString, rpc_error(400, -32602))]),
            &seen([(Probe::HugeString, body(&format!("invalid value {echo}")))]),
        );
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
