//! The grade. Every rule that applied weighs its severity's points (critical 10, high 6,
//! medium 3, low 1, info 0); the score is the share of those points whose rules passed,
//! 0–100. A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, F below. A failed critical rule caps the
//! grade at C, whatever the score: one open door is not made up for by many locks.

use crate::rule::{Finding, Severity, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grade {
    // Ordered best first, so that `Grade::A < Grade::B` reads "A is better".
    A,
    B,
    C,
    D,
    F,
}

impl Grade {
    pub fn letter(self) -> char {
        match self {
            Self::A => 'A',
            Self::B => 'B',
            Self::C => 'C',
            Self::D => 'D',
            Self::F => 'F',
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "A" => Some(Self::A),
            "B" => Some(Self::B),
            "C" => Some(Self::C),
            "D" => Some(Self::D),
            "F" => Some(Self::F),
            _ => None,
        }
    }

    fn of_score(score: u32) -> Self {
        match score {
            90.. => Self::A,
            80..=89 => Self::B,
            70..=79 => Self::C,
            60..=69 => Self::D,
            _ => Self::F,
        }
    }
}

/// The score (0–100) and the grade of a set of findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scored {
    pub score: u32,
    pub grade: Grade,
    /// Whether a critical failure capped the grade at C.
    pub capped: bool,
}

pub fn grade(findings: &[Finding]) -> Scored {
    let (mut applicable, mut passed) = (0u32, 0u32);
    let mut critical_failed = false;
    for finding in findings {
        let weight = finding.rule.severity.weight();
        match finding.verdict {
            Verdict::Pass => {
                applicable += weight;
                passed += weight;
            }
            Verdict::Fail(_) => {
                applicable += weight;
                critical_failed |= finding.rule.severity == Severity::Critical;
            }
            Verdict::Skip(_) => {}
        }
    }
    // Rounded down: 89.9 is a B. Nothing applicable scores full marks.
    let score = (passed * 100).checked_div(applicable).unwrap_or(100);
    let by_score = Grade::of_score(score);
    let capped = critical_failed && by_score < Grade::C;
    Scored {
        score,
        grade: if capped { Grade::C } else { by_score },
        capped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Category, Rule};

    fn rule(severity: Severity) -> &'static Rule {
        Box::leak(Box::new(Rule {
            id: "T",
            category: Category::Transport,
            severity,
            title: "",
            remediation: "",
            reference: "",
            check: |_| Verdict::Pass,
        }))
    }

    fn finding(severity: Severity, verdict: Verdict) -> Finding {
        Finding {
            rule: rule(severity),
            verdict,
        }
    }

    #[test]
    fn the_score_is_the_share_of_weight_passed_and_a_critical_failure_caps_at_c() {
        let all_pass = [finding(Severity::High, Verdict::Pass)];
        assert_eq!(grade(&all_pass).grade, Grade::A);
        assert_eq!(grade(&[]).score, 100);
        // 6 of 9 points: 66 → D.
        let some = [
            finding(Severity::High, Verdict::Pass),
            finding(Severity::Medium, Verdict::fail("x")),
            finding(Severity::Low, Verdict::skip("n/a")),
        ];
        assert_eq!(
            grade(&some),
            Scored {
                score: 66,
                grade: Grade::D,
                capped: false
            }
        );
        // 60 points passed of 70: 85 would be B, but a critical failed: C.
        let mut many: Vec<Finding> = (0..10)
            .map(|_| finding(Severity::High, Verdict::Pass))
            .collect();
        many.push(finding(Severity::Critical, Verdict::fail("open")));
        let scored = grade(&many);
        assert_eq!(
            (scored.score, scored.grade, scored.capped),
            (85, Grade::C, true)
        );
        // Info rules weigh nothing.
        assert_eq!(
            grade(&[finding(Severity::Info, Verdict::fail("x"))]).grade,
            Grade::A
        );
        assert!(Grade::A < Grade::B && Grade::parse("b") == Some(Grade::B));
    }
}
