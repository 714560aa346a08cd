//! Reports: a table for people, JSON for scripts, SARIF 2.1.0 for code-scanning
//! uploads. Everything a target said (evidence) is untrusted text: the table escapes
//! control characters, so a server cannot write to the operator's terminal.

use serde_json::{Value, json};
use warden_redact::escape_controls;

use crate::rule::{Finding, Severity, Verdict};
use crate::{Report, Rule};

const INFORMATION_URI: &str = "https://github.com/warden-mcp/warden";

fn result_word(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail(_) => "FAIL",
        Verdict::Skip(_) => "skip",
    }
}

fn detail(verdict: &Verdict) -> Option<&str> {
    match verdict {
        Verdict::Pass => None,
        Verdict::Fail(evidence) => Some(evidence),
        Verdict::Skip(why) => Some(why),
    }
}

/// The headline: target, grade, score and counts.
pub fn headline(report: &Report) -> String {
    let count = |word| {
        report
            .findings
            .iter()
            .filter(|f| result_word(&f.verdict) == word)
            .count()
    };
    let capped = if report.scored.capped {
        ", capped at C by a critical finding"
    } else {
        ""
    };
    format!(
        "{}: grade {} (score {}{capped}); {} passed, {} failed, {} skipped",
        escape_controls(&report.target),
        report.scored.grade.letter(),
        report.scored.score,
        count("pass"),
        count("FAIL"),
        count("skip"),
    )
}

/// The table: failures first (worst first), then passes, then skips; `verbose` adds
/// the skip reasons.
pub fn table(report: &Report, verbose: bool) -> String {
    let mut out = String::new();
    out.push_str(&headline(report));
    out.push('\n');
    if let Some(why) = &report.unreachable {
        out.push_str(&format!("could not scan: {}\n", escape_controls(why)));
    }
    let mut findings: Vec<&Finding> = report.findings.iter().collect();
    findings.sort_by_key(|f| {
        let order = match f.verdict {
            Verdict::Fail(_) => 0,
            Verdict::Pass => 1,
            Verdict::Skip(_) => 2,
        };
        (order, std::cmp::Reverse(f.rule.severity), f.rule.id)
    });
    out.push_str(&format!(
        "{:<6} {:<8} {:<11} {}\n",
        "RESULT", "SEVERITY", "RULE", "WHAT"
    ));
    for finding in findings {
        let rule = finding.rule;
        out.push_str(&format!(
            "{:<6} {:<8} {:<11} {}\n",
            result_word(&finding.verdict),
            rule.severity.name(),
            rule.id,
            rule.title
        ));
        let shown = match &finding.verdict {
            Verdict::Fail(_) => true,
            Verdict::Skip(_) => verbose,
            Verdict::Pass => false,
        };
        if shown && let Some(detail) = detail(&finding.verdict) {
            out.push_str(&format!("{:28}{}\n", "", escape_controls(detail)));
            if matches!(finding.verdict, Verdict::Fail(_)) {
                out.push_str(&format!("{:28}fix: {}\n", "", rule.remediation));
            }
        }
    }
    out
}

/// One JSON document: the grade and every finding.
pub fn json(report: &Report) -> Value {
    json!({
        "target": report.target,
        "grade": report.scored.grade.letter().to_string(),
        "score": report.scored.score,
        "capped": report.scored.capped,
        "era": report.era.map(|era| match era {
            crate::Era::Modern => "2026-07-28",
            crate::Era::Legacy => "legacy",
        }),
        "tools": report.tools,
        "seconds": report.took.as_secs_f64(),
        "unreachable": report.unreachable,
        "findings": report.findings.iter().map(|f| json!({
            "id": f.rule.id,
            "category": f.rule.category.name(),
            "severity": f.rule.severity.name(),
            "weight": f.rule.severity.weight(),
            "title": f.rule.title,
            "result": match f.verdict { Verdict::Pass => "pass", Verdict::Fail(_) => "fail", Verdict::Skip(_) => "skip" },
            "detail": detail(&f.verdict),
            "remediation": f.rule.remediation,
            "reference": f.rule.reference,
        })).collect::<Vec<_>>(),
    })
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub's `security-severity` scale (0–10).
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn sarif_rule(rule: &Rule) -> Value {
    json!({
        "id": rule.id,
        "name": rule.id.replace('-', ""),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": format!("{} Reference: {}.", rule.title, rule.reference)},
        "help": {"text": rule.remediation},
        "defaultConfiguration": {"level": level(rule.severity)},
        "properties": {
            "category": rule.category.name(),
            "severity": rule.severity.name(),
            "security-severity": security_severity(rule.severity),
            "tags": ["security", "mcp", rule.category.name()],
        },
    })
}

/// SARIF 2.1.0: one run, the rules that ran as the driver's rules, a result per failure.
pub fn sarif(report: &Report) -> Value {
    let rules: Vec<&Rule> = report.findings.iter().map(|f| f.rule).collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .enumerate()
        .filter_map(|(index, finding)| match &finding.verdict {
            Verdict::Fail(evidence) => Some(json!({
                "ruleId": finding.rule.id,
                "ruleIndex": index,
                "level": level(finding.rule.severity),
                "message": {"text": format!("{} — {}", finding.rule.title, evidence)},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": report.target}}}],
            })),
            _ => None,
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "warden scan",
                "informationUri": INFORMATION_URI,
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|rule| sarif_rule(rule)).collect::<Vec<_>>(),
            }},
            "results": results,
            "properties": {
                "grade": report.scored.grade.letter().to_string(),
                "score": report.scored.score,
            },
        }],
    })
}

/// `--list-rules`: every rule with its family, severity and weight, as a Markdown table
/// (the README's rule table is this output).
pub fn rule_table() -> String {
    let mut out = String::from(
        "| rule | family | severity | weight | what a server must do |\n|---|---|---|---:|---|\n",
    );
    for rule in crate::all_rules() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            rule.id,
            rule.category.name(),
            rule.severity.name(),
            rule.severity.weight(),
            rule.title.replace('|', "\\|")
        ));
    }
    out
}

/// Two reports side by side: the grade of each and the rules that differ.
pub fn compare(direct: &Report, through: &Report) -> String {
    let mut out = format!(
        "direct:         grade {} (score {})  {}\nthrough Warden: grade {} (score {})  {}\n\n",
        direct.scored.grade.letter(),
        direct.scored.score,
        escape_controls(&direct.target),
        through.scored.grade.letter(),
        through.scored.score,
        escape_controls(&through.target),
    );
    out.push_str("| rule | severity | direct | through Warden | what a server must do |\n|---|---|---|---|---|\n");
    for (before, after) in direct.findings.iter().zip(&through.findings) {
        let (b, a) = (result_word(&before.verdict), result_word(&after.verdict));
        if b != a {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                before.rule.id,
                before.rule.severity.name(),
                b.to_ascii_lowercase(),
                a.to_ascii_lowercase(),
                before.rule.title.replace('|', "\\|")
            ));
        }
    }
    out
}
