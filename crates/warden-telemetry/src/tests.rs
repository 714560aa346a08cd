use std::collections::HashMap;

use warden_proto::trace_context::is_traceparent;

use super::*;

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn telemetry(ratio: f64) -> Telemetry {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = warden_config::Telemetry {
        // Nothing listens there: these tests look at ids and decisions, not exports.
        traces_url: "http://127.0.0.1:9/v1/traces".into(),
        service_name: "warden".into(),
        sampling_ratio: ratio,
        headers: Vec::new(),
        export_timeout: std::time::Duration::from_millis(100),
        max_queued_spans: 64,
    };
    let telemetry = Telemetry::start(&config, runtime.handle().clone()).unwrap();
    // The runtime only has to outlive the exports these tests never wait for.
    std::mem::forget(runtime);
    telemetry
}

fn headers(traceparent: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(TRACEPARENT, traceparent.parse().unwrap());
    headers
}

fn meta(traceparent: &str) -> Map<String, Value> {
    let Value::Object(params) =
        serde_json::json!({ "name": "echo", "_meta": { "traceparent": traceparent } })
    else {
        unreachable!()
    };
    params
}

fn propagated(trace: &Trace, span: &Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    trace.propagate(span, &mut carrier);
    carrier
}

#[test]
fn off_records_nothing_and_has_no_id() {
    let trace = Telemetry::off().begin(
        &headers(&format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01")),
        "POST",
    );
    trace.adopt_meta(None);
    assert_eq!(trace.trace_id(), None);
    assert!(!trace.is_sampled());
    assert!(propagated(&trace, &trace.span("warden.authenticate")).is_empty());
}

#[test]
fn a_header_parent_is_kept_and_a_meta_parent_does_not_replace_it() {
    let trace = telemetry(0.0).begin(
        &headers(&format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01")),
        "POST",
    );
    trace.adopt_meta(Some(&meta(
        "00-11111111111111111111111111111111-2222222222222222-01",
    )));
    assert_eq!(trace.trace_id().as_deref(), Some(PARENT_TRACE));
    // Ratio 0, but the parent was sampled: parent-based keeps it.
    assert!(trace.is_sampled());
}

#[test]
fn a_meta_parent_is_adopted_when_the_headers_name_none() {
    let trace = telemetry(1.0).begin(&http::HeaderMap::new(), "POST");
    trace.adopt_meta(Some(&meta(&format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00"))));
    assert_eq!(trace.trace_id().as_deref(), Some(PARENT_TRACE));
    // Ratio 1, but the parent was not sampled: parent-based follows it.
    assert!(!trace.is_sampled());
    let span = trace.client_span("tools/call");
    let carrier = propagated(&trace, &span);
    let traceparent = &carrier[TRACEPARENT];
    assert!(is_traceparent(traceparent), "{traceparent}");
    assert!(traceparent.starts_with(&format!("00-{PARENT_TRACE}-")));
    assert!(
        traceparent.ends_with("-00"),
        "the decision goes on: {traceparent}"
    );
    assert!(
        !traceparent.contains(PARENT_SPAN),
        "the upstream's parent is Warden's span"
    );
    assert!(
        !carrier.contains_key(TRACESTATE),
        "no empty tracestate: {carrier:?}"
    );
}

#[test]
fn without_a_parent_a_trace_starts_here_by_the_ratio() {
    let sampled = telemetry(1.0).begin(&http::HeaderMap::new(), "POST");
    sampled.adopt_meta(Some(&meta("garbage")));
    let id = sampled.trace_id().unwrap();
    assert_eq!(id.len(), 32);
    assert!(sampled.is_sampled());
    let span = sampled.span("warden.validate");
    assert!(propagated(&sampled, &span)[TRACEPARENT].ends_with("-01"));
    assert_ne!(
        telemetry(1.0)
            .begin(&http::HeaderMap::new(), "POST")
            .trace_id()
            .unwrap(),
        id,
        "each request its own trace"
    );
    let unsampled = telemetry(0.0).begin(&http::HeaderMap::new(), "POST");
    unsampled.adopt_meta(None);
    assert!(!unsampled.is_sampled());
    assert_eq!(
        unsampled.trace_id().unwrap().len(),
        32,
        "logs still join on it"
    );
}

#[test]
fn tracestate_goes_on_with_the_parent() {
    let mut headers = headers(&format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"));
    headers.insert(TRACESTATE, "vendor=abc".parse().unwrap());
    let trace = telemetry(1.0).begin(&headers, "POST");
    trace.adopt_meta(None);
    let mut meta = Map::new();
    trace.propagate(
        &trace.client_span("tools/call"),
        &mut MetaInjector(&mut meta),
    );
    assert_eq!(meta[TRACESTATE], "vendor=abc");
    assert!(is_traceparent(meta[TRACEPARENT].as_str().unwrap()));
}
