//! `warden-bench policy`: what a Cedar decision costs a call (issue 22's target: at most
//! 20 µs at p99 with 100 policies). The catalogue is 50 tools with typed arguments; the
//! policy set is 100 policies: per-tenant allow-lists, label forbids, argument
//! conditions on paths and e-mail domains, and group permits. The baseline, measured in
//! the same run, is the three built-in policies. A call builds its request as the
//! gateway does; the entities of a (key, tool) and what the policies that read no
//! context decide on them are prepared once, so the first call of each key and tool is
//! measured apart.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use warden_policy::ToolKind;
use warden_policy::rules::{PrincipalFacts, RequestFacts, Rules, SessionFacts, ToolFacts};

use crate::{Failure, percentile};

const TOOLS: usize = 50;
const POLICIES: usize = 100;

fn input_schema() -> Value {
    json!({"type": "object", "properties": {
        "path": {"type": "string"}, "to": {"type": "string"}, "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}}
    }, "required": ["path"]})
}

/// 100 policies over the 50 tools.
fn policies() -> String {
    let mut text = String::new();
    for n in 0..POLICIES {
        let tool = format!("up__tool_{}", n % TOOLS);
        let policy = match n % 4 {
            0 => format!(
                "@id(\"tenant-{n}\") permit (principal, action == Action::\"call_tool:{tool}\", resource) when {{ principal.tenant == \"tenant{}\" }};",
                n % 10
            ),
            1 => format!(
                "@id(\"paths-{n}\") permit (principal, action == Action::\"call_tool:{tool}\", resource) when {{ context.arguments.path like \"/srv/data{}/*\" }};",
                n % 5
            ),
            2 => format!(
                "@id(\"mail-{n}\") @confirm(\"approve\") permit (principal in Group::\"ops{}\", action == Action::\"call_tool:{tool}\", resource) when {{ context.arguments has to && context.arguments.to like \"*@example.com\" }};",
                n % 3
            ),
            _ => format!(
                "@id(\"label-{n}\") forbid (principal, action in Action::\"call_tool\", resource) when {{ principal.hasTag(\"team\") && principal.getTag(\"team\") == \"t{n}\" }};"
            ),
        };
        text.push_str(&policy);
        text.push('\n');
    }
    text
}

/// Decision times of `rules` over `calls` calls spread over the tools; with `fresh_keys`
/// every call comes from a key never seen before, so nothing prepared for an earlier
/// call helps (the first call of each key and tool).
fn measure(
    rules: &Rules,
    schema_input: &Value,
    calls: usize,
    fresh_keys: bool,
) -> Result<Vec<Duration>, Failure> {
    let names: Vec<String> = (0..TOOLS).map(|n| format!("up__tool_{n}")).collect();
    let tools: Vec<ToolFacts<'_>> = names
        .iter()
        .map(|name| ToolFacts {
            name,
            upstream: "up",
            kind: ToolKind::Write,
            untrusted: false,
            input_schema: schema_input,
            annotations: None,
        })
        .collect();
    rules
        .validate(&tools, None)
        .map_err(|problems| format!("{problems:?}"))?;
    let mut principal = PrincipalFacts {
        id: "key_1".into(),
        tenant: "tenant3".into(),
        scope: "write".into(),
        name: "laptop".into(),
        tags: [("team".to_owned(), "payments".to_owned())].into(),
        groups: vec!["ops1".into()],
    };
    let request = RequestFacts {
        client_name: "bench".into(),
        era: "modern",
        address: "127.0.0.1".parse()?,
        time: 1_796_336_274,
        session: SessionFacts::default(),
    };
    let arguments: Map<String, Value> = json!({
        "path": "/srv/data1/reports/q3.txt", "to": "bob@example.com", "count": 3,
        "tags": ["a", "b"]
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let mut times = Vec::with_capacity(calls);
    let mut allowed = 0usize;
    for call in 0..calls {
        let tool = &tools[call % TOOLS];
        if fresh_keys {
            principal.id = format!("key_{call}");
        }
        let started = Instant::now();
        let verdict = rules.decide_call(&principal, tool, &arguments, &request);
        times.push(started.elapsed());
        allowed += usize::from(verdict.allowed);
    }
    std::hint::black_box(allowed);
    times.sort();
    Ok(times)
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn run(calls: usize) -> Result<(), Failure> {
    let schema_input = input_schema();
    let builtin = Rules::builtin().map_err(|problems| format!("{problems:?}"))?;
    let hundred = Rules::parse(&[("bench.cedar".to_owned(), policies())])
        .map_err(|problems| format!("{problems:?}"))?;
    let baseline = measure(&builtin, &schema_input, calls, false)?;
    let measured = measure(&hundred, &schema_input, calls, false)?;
    let cold = measure(&hundred, &schema_input, calls, true)?;
    println!("policy decisions: {calls} calls over {TOOLS} tools");
    println!(
        "  built-in (3 policies, baseline): p50 {} p99 {}",
        micros(percentile(&baseline, 0.5)),
        micros(percentile(&baseline, 0.99))
    );
    println!(
        "  {POLICIES} policies: p50 {} p99 {} (p99 ratio to the baseline {:.2})",
        micros(percentile(&measured, 0.5)),
        micros(percentile(&measured, 0.99)),
        percentile(&measured, 0.99).as_secs_f64()
            / percentile(&baseline, 0.99).as_secs_f64().max(1e-9)
    );
    println!(
        "  {POLICIES} policies, every call from a new key (nothing prepared): p50 {} p99 {}",
        micros(percentile(&cold, 0.5)),
        micros(percentile(&cold, 0.99)),
    );
    Ok(())
}
