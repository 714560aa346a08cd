//! A rule is data: an id, a family, a severity, what it checks, how to fix a failure
//! and where the requirement comes from, and a check over what the probes observed.
//! Checks do no I/O, so that each is tested against observations that pass it and
//! observations that fail it.

use crate::observe::Observations;

/// The family a rule belongs to (`--only` and `--skip` take these too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Transport,
    Authentication,
    Browser,
    Tls,
    Validation,
    Availability,
    ErrorHygiene,
    ToolDefinitions,
    SupplyChain,
    Configuration,
}

impl Category {
    pub const ALL: [Self; 10] = [
        Self::Transport,
        Self::Authentication,
        Self::Browser,
        Self::Tls,
        Self::Validation,
        Self::Availability,
        Self::ErrorHygiene,
        Self::ToolDefinitions,
        Self::SupplyChain,
        Self::Configuration,
    ];

    /// The name `--only`/`--skip` and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Authentication => "authentication",
            Self::Browser => "browser",
            Self::Tls => "tls",
            Self::Validation => "validation",
            Self::Availability => "availability",
            Self::ErrorHygiene => "error-hygiene",
            Self::ToolDefinitions => "tool-definitions",
            Self::SupplyChain => "supply-chain",
            Self::Configuration => "configuration",
        }
    }
}

/// How much a failure matters; it sets the rule's weight in the grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// The points a rule of this severity weighs in the score.
    pub fn weight(self) -> u32 {
        match self {
            Self::Info => 0,
            Self::Low => 1,
            Self::Medium => 3,
            Self::High => 6,
            Self::Critical => 10,
        }
    }

    /// Whether a failure is a security finding (the rest are robustness and hygiene).
    pub fn is_security(self) -> bool {
        self >= Self::Medium
    }
}

/// What a check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The rule is broken; the evidence says how (excerpts, secrets redacted).
    Fail(String),
    /// The rule does not apply to this target, or its probe could not run; says why.
    Skip(String),
}

impl Verdict {
    pub(crate) fn fail(evidence: impl Into<String>) -> Self {
        Self::Fail(evidence.into())
    }

    pub(crate) fn skip(why: impl Into<String>) -> Self {
        Self::Skip(why.into())
    }

    /// Pass when `ok`, else fail with `evidence`.
    pub(crate) fn from_check(ok: bool, evidence: impl FnOnce() -> String) -> Self {
        if ok {
            Self::Pass
        } else {
            Self::Fail(evidence())
        }
    }
}

pub struct Rule {
    /// Stable, e.g. `WS-AUTH-001`.
    pub id: &'static str,
    pub category: Category,
    pub severity: Severity,
    /// What a server must do, in one sentence.
    pub title: &'static str,
    /// How to fix a failure.
    pub remediation: &'static str,
    /// The spec section or checklist item the rule comes from.
    pub reference: &'static str,
    pub check: fn(&Observations) -> Verdict,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One rule's result in a scan.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: &'static Rule,
    pub verdict: Verdict,
}
