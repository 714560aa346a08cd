//! `warden scan`: grades an MCP server from the outside against the rules Warden keeps,
//! or audits a Warden configuration, and reports as a table, JSON or SARIF.
//!
//! The path of a scan: `probe` talks to the target and fills `Observations` (the only
//! I/O); every selected `Rule` checks them (pure functions, each tested against a
//! passing and a failing fixture); `grade` scores the findings; `report` renders them.
//! The probes never call a tool with arguments a correct server would act on, except a
//! read-only tool given one argument too many, and (with `--allow-calls`) each read-only
//! tool once with arguments its schema accepts.

mod grade;
mod http;
mod observe;
mod probe;
pub mod report;
mod rule;
mod rules;
mod stdio;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use grade::{Grade, Scored};
pub use observe::{Era, Observations};
pub use rule::{Category, Finding, Rule, Severity, Verdict};

/// Which rules run: `--only` and `--skip`, each a list of rule ids, id prefixes
/// (`WS-AUTH`) or category names (`authentication`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl Selection {
    fn names(pattern: &str, rule: &Rule) -> bool {
        let pattern = pattern.trim();
        rule.id.eq_ignore_ascii_case(pattern)
            || rule.category.name().eq_ignore_ascii_case(pattern)
            || (pattern.len() >= 4
                && rule
                    .id
                    .to_ascii_uppercase()
                    .starts_with(&pattern.to_ascii_uppercase()))
    }

    pub fn wants(&self, rule: &Rule) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| Self::names(p, rule)))
            && !self.skip.iter().any(|p| Self::names(p, rule))
    }

    /// Whether the rule with this id is wanted (a probe only one rule reads).
    pub fn wants_id(&self, id: &str) -> bool {
        rules::all().any(|rule| rule.id == id && self.wants(rule))
    }

    /// Whether any wanted rule is of `category` (its probes are worth running).
    pub fn wants_category(&self, category: Category) -> bool {
        rules::all().any(|rule| rule.category == category && self.wants(rule))
    }

    /// Patterns that name no rule: a typo would otherwise select nothing silently.
    pub fn unknown(&self) -> Vec<&str> {
        self.only
            .iter()
            .chain(&self.skip)
            .filter(|p| !rules::all().any(|rule| Self::names(p, rule)))
            .map(String::as_str)
            .collect()
    }
}

/// Every rule, in report order.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    rules::all()
}

/// Told the label of each request as the scan sends it (a progress line).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// How a server is scanned.
#[derive(Clone, Default)]
pub struct ScanOptions {
    /// Sent with every request that carries credentials (values already resolved).
    pub headers: Vec<(String, String)>,
    /// For each request.
    pub timeout: Duration,
    pub selection: Selection,
    /// Call each read-only tool once with arguments its schema accepts (`--allow-calls`);
    /// tools that may change anything are never called with valid arguments.
    pub allow_calls: bool,
    /// CA certificates (PEM) trusted besides the system's, for servers whose chain a
    /// private CA signed (`--ca-cert`).
    pub ca_pem: Option<Vec<u8>>,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers hold credentials: only their names are shown.
        f.debug_struct("ScanOptions")
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("selection", &self.selection)
            .field("allow_calls", &self.allow_calls)
            .finish_non_exhaustive()
    }
}

/// The outcome of a scan.
#[derive(Debug, Clone)]
pub struct Report {
    /// The URL, command or configuration file scanned.
    pub target: String,
    pub findings: Vec<Finding>,
    pub scored: Scored,
    pub era: Option<Era>,
    pub tools: usize,
    pub took: Duration,
    /// Why the target could not be scanned, if it could not be spoken to.
    pub unreachable: Option<String>,
}

impl Report {
    fn of(target: String, seen: &Observations, selection: &Selection, took: Duration) -> Self {
        let findings: Vec<Finding> = rules::all()
            .filter(|rule| selection.wants(rule) && applies(rule.category, seen))
            .map(|rule| Finding {
                rule,
                verdict: (rule.check)(seen),
            })
            .collect();
        // A target that could not be spoken to is not graded on the rules that skipped.
        let scored = match seen.unreachable {
            Some(_) => Scored {
                score: 0,
                grade: Grade::F,
                capped: false,
            },
            None => grade::grade(&findings),
        };
        Self {
            target,
            scored,
            findings,
            era: seen.era,
            tools: seen.tools.len(),
            took,
            unreachable: seen.unreachable.clone(),
        }
    }

    /// The failed rules, worst first.
    pub fn failures(&self) -> Vec<&Finding> {
        let mut failed: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Fail(_)))
            .collect();
        failed.sort_by_key(|f| std::cmp::Reverse(f.rule.severity));
        failed
    }
}

/// Whether a family applies to what was observed: configuration rules to a configuration,
/// supply-chain rules to a command, the rest to a server spoken to.
fn applies(category: Category, seen: &Observations) -> bool {
    let over_stdio = !seen.target.command.is_empty();
    match category {
        Category::Configuration => seen.config.is_some(),
        Category::SupplyChain => over_stdio,
        // Nothing on the network to authenticate, guard against browsers, encrypt or
        // flood: a stdio server is reached only by the process that started it.
        Category::Authentication | Category::Browser | Category::Tls | Category::Availability => {
            seen.config.is_none() && !over_stdio
        }
        _ => seen.config.is_none(),
    }
}

/// Scans an MCP server over HTTP.
pub async fn scan_http(url: &url::Url, options: &ScanOptions) -> Result<Report, reqwest::Error> {
    let started = Instant::now();
    let client = http::HttpClient::new(url.clone(), options)?;
    let seen = probe::observe_http(&client, options).await;
    Ok(Report::of(
        url.to_string(),
        &seen,
        &options.selection,
        started.elapsed(),
    ))
}

/// Scans an MCP server over stdio: `command` is started, spoken to and stopped. The
/// network families (authentication, browser, TLS, availability) do not apply; the
/// supply-chain rules read the command.
pub async fn scan_stdio(command: &[String], options: &ScanOptions) -> Report {
    let started = Instant::now();
    let seen = probe::observe_stdio(command, options).await;
    Report::of(
        command.join(" "),
        &seen,
        &options.selection,
        started.elapsed(),
    )
}

/// Audits a Warden configuration without starting anything.
pub fn audit_config(config: warden_config::Config, source: &str, selection: &Selection) -> Report {
    let started = Instant::now();
    let seen = rules::audit_config(config);
    Report::of(source.to_owned(), &seen, selection, started.elapsed())
}
