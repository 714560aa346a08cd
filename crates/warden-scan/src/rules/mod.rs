//! Every rule, by family. A rule's check reads the observations only.

mod auth;
mod availability;
mod browser;
mod config;
mod definitions;
mod hygiene;
mod supply;
mod tls;
mod transport;
mod validation;

pub(crate) use config::audit as audit_config;

use crate::http::Exchange;
use crate::observe::{Observations, Probe};
use crate::rule::{Rule, Verdict};

/// The rules that read what tools return to valid calls (`--allow-calls`).
pub(crate) const READING_RESULTS: [&str; 3] = ["WS-VAL-015", "WS-DEF-016", "WS-DEF-017"];

/// All rules, in the order reports list them.
pub fn all() -> impl Iterator<Item = &'static Rule> {
    transport::RULES
        .iter()
        .chain(auth::RULES)
        .chain(browser::RULES)
        .chain(tls::RULES)
        .chain(validation::RULES)
        .chain(availability::RULES)
        .chain(hygiene::RULES)
        .chain(definitions::RULES)
        .chain(supply::RULES)
        .chain(config::RULES)
}

/// The answer to `probe`, or the verdict a rule gives when the probe did not run or
/// was rate-limited before the server judged it (a 429 says nothing of what the probe
/// asked about).
fn answered(seen: &Observations, probe: Probe) -> Result<&Exchange, Verdict> {
    match seen.answer(probe) {
        None => Err(Verdict::skip("the probe did not run against this target")),
        Some(answer) if answer.status == 429 => Err(Verdict::skip(
            "the server rate-limited the probe (429) before judging it",
        )),
        Some(answer) => Ok(answer),
    }
}

/// A probe's answer must be a refusal before acting (4xx, a JSON-RPC error or a tool
/// error), never a success nor a server fault.
fn refused_before_acting(seen: &Observations, probe: Probe) -> Verdict {
    match answered(seen, probe) {
        Err(skip) => skip,
        Ok(answer) if answer.refused() && !answer.broke() => Verdict::Pass,
        Ok(answer) if answer.succeeded() => {
            Verdict::fail(format!("acted on invalid input: {}", answer.summary()))
        }
        Ok(answer) => Verdict::fail(answer.summary()),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Observations for the rules' tests: answers shaped like a correct server's and a
    //! careless one's.

    use serde_json::{Value, json};

    use crate::http::Exchange;
    use crate::observe::{Observations, Probe};

    pub fn answer(status: u16, message: Value) -> Exchange {
        Exchange {
            request: "test".into(),
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: if message.is_null() {
                String::new()
            } else {
                message.to_string()
            },
            error: None,
            message: (!message.is_null()).then_some(message),
        }
    }

    pub fn ok() -> Exchange {
        answer(200, json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
    }

    pub fn rpc_error(status: u16, code: i64) -> Exchange {
        answer(
            status,
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "no"}}),
        )
    }

    pub fn with_header(mut exchange: Exchange, name: &str, value: &str) -> Exchange {
        exchange.headers.push((name.into(), value.into()));
        exchange
    }

    pub fn seen(answers: impl IntoIterator<Item = (Probe, Exchange)>) -> Observations {
        let mut seen = Observations::default();
        for (probe, exchange) in answers {
            seen.record(probe, exchange);
        }
        seen
    }

    /// Checks that `rule` passes `good`, fails `bad`, and skips when nothing ran.
    pub fn assert_rule(id: &str, good: &Observations, bad: &Observations) {
        let rule = super::all()
            .find(|rule| rule.id == id)
            .unwrap_or_else(|| panic!("no rule {id}"));
        assert_eq!(
            (rule.check)(good),
            crate::rule::Verdict::Pass,
            "{id} on the good fixture"
        );
        assert!(
            matches!((rule.check)(bad), crate::rule::Verdict::Fail(_)),
            "{id} on the bad fixture: {:?}",
            (rule.check)(bad)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_every_rule_is_documented() {
        let mut ids = HashSet::new();
        for rule in super::all() {
            assert!(ids.insert(rule.id), "{} twice", rule.id);
            assert!(
                !rule.title.is_empty()
                    && !rule.remediation.is_empty()
                    && !rule.reference.is_empty(),
                "{} lacks words",
                rule.id
            );
        }
    }
}
