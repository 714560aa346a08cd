//! `warden-bench validate`: what validation costs a call, on the path a `tools/call`
//! takes: the body scan (caps, duplicate keys) over the whole request, then the tool's
//! compiled, closed input schema over its arguments. Arguments are a typical ~1 KB
//! `create_note` (title, a paragraph of body, tags); the parse between the two steps is
//! serde_json's and is timed apart, as the baseline every request pays anyway.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_config::JsonLimits;
use warden_policy::{Catalogue, Origin, ToolKind};

use crate::{Failure, percentile};

const LIMITS: JsonLimits = JsonLimits {
    max_depth: 32,
    max_string_bytes: 64 * 1024,
    max_array_items: 1_000,
    max_object_keys: 256,
    max_total_nodes: 100_000,
};

fn nanos(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

pub fn run(calls: usize) -> Result<(), Failure> {
    let definitions = warden_notes::tool_definitions()
        .into_iter()
        .map(|definition| {
            let name = definition["name"].as_str().unwrap_or_default().to_owned();
            (definition, Origin { upstream: 0, name })
        })
        .collect();
    let (catalogue, _) = Catalogue::build(
        definitions,
        |_, _| warden_config::ToolRules::default(),
        |_, _| ToolKind::Write,
    );
    let tool = catalogue
        .lookup("create_note", ToolKind::Write)
        .map_err(|e| e.to_string())?;
    let body_text = "Warden validates every argument an LLM sends before it reaches the \
        upstream server. "
        .repeat(9);
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "create_note",
            "arguments": {"title": "Meeting notes, 21 November", "body": body_text,
                          "tags": ["meeting", "warden", "validation"]},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
        }
    })
    .to_string()
    .into_bytes();
    let arguments_bytes =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&body)?["params"]["arguments"])?.len();

    let (mut scans, mut parses, mut validations) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..calls {
        let started = Instant::now();
        warden_proto::scan::scan(&body, &LIMITS).map_err(|e| format!("{:?}", e.fault))?;
        let scanned = Instant::now();
        let value: Value = serde_json::from_slice(&body)?;
        let parsed = Instant::now();
        tool.validate(&value["params"]["arguments"])
            .map_err(|e| e.to_string())?;
        let validated = Instant::now();
        scans.push(scanned - started);
        parses.push(parsed - scanned);
        validations.push(validated - parsed);
    }
    println!(
        "{calls} calls; request body {} bytes, arguments {arguments_bytes} bytes",
        body.len()
    );
    println!("step                     p50        p90        p99");
    for (step, times) in [
        ("scan (caps, dup keys)", &mut scans),
        ("parse (serde_json)", &mut parses),
        ("schema (closed, linear)", &mut validations),
    ] {
        times.sort();
        println!(
            "{step:24} {:10} {:10} {:10}",
            nanos(percentile(times, 0.5)),
            nanos(percentile(times, 0.9)),
            nanos(percentile(times, 0.99))
        );
    }
    let validation_p50 = percentile(&scans, 0.5) + percentile(&validations, 0.5);
    println!(
        "validation (scan + schema) p50: {}; ratio to the parse every request pays: {:.2}",
        nanos(validation_p50),
        validation_p50.as_secs_f64() / percentile(&parses, 0.5).as_secs_f64()
    );
    Ok(())
}
