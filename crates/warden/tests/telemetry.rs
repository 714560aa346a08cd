//! Traces (`[telemetry]`): a real OTLP/HTTP receiver in the test decodes what Warden
//! exports with the `opentelemetry-proto` types; the official Python SDK client starts
//! the trace; the HTTP fixture reports the trace context it received.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use serde_json::{Value, json};
use support::Warden;
use support::raw::Http;

/// An OTLP/HTTP traces receiver: keeps every export's body as it came.
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body.to_vec());
                    // An empty ExportTraceServiceResponse: everything accepted.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, bodies }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| {
                ExportTraceServiceRequest::decode(body.as_slice())
                    .expect("an OTLP protobuf export")
                    .resource_spans
            })
            .flat_map(|resource| {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| string_of(a.value.as_ref()?.value.as_ref()?));
                assert_eq!(service.as_deref(), Some("warden-under-test"));
                resource.scope_spans
            })
            .flat_map(|scope| scope.spans)
            .collect()
    }

    /// The spans of trace `trace_id` once `done` holds for them.
    async fn trace(&self, trace_id: &[u8], done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let of_trace = |spans: Vec<Span>| -> Vec<Span> {
            spans
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect()
        };
        of_trace(self.received(|spans| done(&of_trace(spans.to_vec()))).await)
    }

    /// The spans of the trace of one request, once its own (server) span arrived (it is
    /// exported after its layers' spans), and that span.
    async fn request(&self, trace_id: &[u8]) -> (Vec<Span>, Span) {
        let is_request = |s: &Span| s.kind == SpanKind::Server as i32;
        let spans = self
            .trace(trace_id, |spans| spans.iter().any(is_request))
            .await;
        let root = spans.iter().find(|s| is_request(s)).cloned().unwrap();
        (spans, root)
    }

    /// Every span received, once `done` holds for them (within 20 s: the exporter
    /// sends a batch every second).
    async fn received(&self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        for _ in 0..200 {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the trace never completed; spans received: {:#?}",
            self.spans()
                .iter()
                .map(|s| (&s.name, hex(&s.trace_id)))
                .collect::<Vec<_>>()
        );
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }
}

fn string_of(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(text) => Some(text.clone()),
        AnyValue::IntValue(number) => Some(number.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| string_of(a.value.as_ref()?.value.as_ref()?))
}

/// The layer and rule a refused request's span names.
fn refusal(span: &Span) -> (Option<String>, Option<String>) {
    (
        attribute(span, "warden.refusal.layer"),
        attribute(span, "warden.refusal.rule"),
    )
}

fn named(layer: &str, rule: &str) -> (Option<String>, Option<String>) {
    (Some(layer.to_owned()), Some(rule.to_owned()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// What the fixture's `trace` tool reported, from a modern `tools/call` answer.
fn tool_text(reply: &support::raw::Reply) -> Value {
    let answer = reply.json();
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    serde_json::from_str(text).unwrap()
}

fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
}

/// Warden in front of the HTTP fixture (with its `trace` tool), exporting to
/// `collector` with the given sampling ratio.
fn traced_warden(collector: &Collector, ratio: &str) -> (support::KilledOnDrop, Warden) {
    let (child, url) = support::start_http_fixture(&["--trace"]);
    let config = format!(
        "[[upstream]]\nname = \"remote\"\nurl = \"{url}\"\n{}{}\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"warden-under-test\"\nsampling_ratio = {ratio}\n",
        support::EGRESS_LOOPBACK,
        support::NO_CONFIRM_AFTER_UNTRUSTED,
        collector.url,
    );
    (support::KilledOnDrop(child), Warden::start_config(&config))
}

const CANARY: &str = "canary-argument-5b1e0c";
const CALLER_TRACE: &str = "5af7183fb1d4cf5f4ab52c8e0f1d2e3a";
const CALLER_SPAN: &str = "a1b2c3d4e5f60718";

/// The end-to-end case: the official Python client, inside a span of its own,
/// calls through Warden; the collector gets one trace with a span per layer under the
/// client's span, the upstream is told the same trace (header and `_meta`), a refused
/// call names its layer and rule, and the argument's canary is in no span, log line or
/// audit row. The sampling ratio is 0: the client's sampled flag alone keeps the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_call_is_one_trace_from_the_caller_into_the_upstream() {
    let collector = Collector::start().await;
    let (_fixture, warden) = traced_warden(&collector, "0.0");
    let run = concat!(env!("CARGO_MANIFEST_DIR"), "/../../interop/run.sh");
    let out = std::process::Command::new(run)
        .arg("python")
        .env("WARDEN_URL", &warden.url)
        .env("WARDEN_KEY", &warden.admin_key)
        .env("WARDEN_SCENARIO", "traced")
        .env(
            "WARDEN_TRACEPARENT",
            format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        )
        .env("WARDEN_CANARY", CANARY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = said
        .lines()
        .find_map(|line| line.strip_prefix("TRACED "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("no TRACED line: {said}"));

    let trace_id = unhex(CALLER_TRACE);
    // The SDK lists the tools inside the span too; the two calls are what this test
    // follows. A request's span is exported after its layers' spans.
    let roots = |spans: &[Span]| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server as i32 && s.name == "tools/call trace")
            .cloned()
            .collect()
    };
    let spans = collector
        .trace(&trace_id, |spans| roots(spans).len() == 2)
        .await;
    let roots = roots(&spans);
    let (allowed, refused): (Vec<&Span>, Vec<&Span>) = roots.iter().partition(|s| !is_error(s));
    let (allowed, refused) = (allowed[0], refused[0]);

    // The allowed call: Warden's span is the caller's child and names the call.
    assert_eq!(allowed.name, "tools/call trace");
    assert_eq!(hex(&allowed.parent_span_id), CALLER_SPAN);
    for (key, value) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "trace"),
        ("gen_ai.operation.name", "execute_tool"),
        ("mcp.protocol.version", "2026-07-28"),
        ("http.response.status_code", "200"),
        ("warden.tenant", "default"),
        ("warden.decision", "allowed"),
        ("warden.outcome", "ok"),
        ("warden.upstream", "remote"),
    ] {
        assert_eq!(
            attribute(allowed, key).as_deref(),
            Some(value),
            "{key} on {allowed:#?}"
        );
    }
    assert!(attribute(allowed, "warden.key_id").is_some());
    // One span per layer, each a child of the request's span.
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == allowed.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for layer in [
        "warden.authenticate",
        "warden.transport",
        "warden.validate",
        "warden.limits",
        "tools/call trace",
        "warden.harden",
        "warden.audit",
    ] {
        assert!(names.contains(&layer), "no {layer} span in {names:?}");
    }
    let upstream_call = children
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("a client span for the upstream call");
    assert_eq!(upstream_call.name, "tools/call trace");
    assert!(attribute(upstream_call, "warden.limits.wait_us").is_none());
    // Two limit layers: the client's address before authentication, the call's
    // (with its time in the queue) before the upstream.
    let layers: Vec<String> = children
        .iter()
        .filter(|s| s.name == "warden.limits")
        .filter_map(|s| attribute(s, "warden.limits.layer"))
        .collect();
    assert_eq!(layers, ["address", "call"]);
    let call_limits = children
        .iter()
        .find(|s| attribute(s, "warden.limits.layer").as_deref() == Some("call"))
        .unwrap();
    assert!(attribute(call_limits, "warden.limits.wait_us").is_some());
    // Each span lies within the request's.
    for child in &children {
        assert!(child.start_time_unix_nano >= allowed.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= allowed.end_time_unix_nano);
    }

    // The upstream was told the same trace, with Warden's upstream-call span as parent.
    let expected = format!("00-{CALLER_TRACE}-{}-01", hex(&upstream_call.span_id));
    assert_eq!(seen["headers"]["traceparent"], expected, "{seen}");
    assert_eq!(seen["meta"]["traceparent"], expected, "{seen}");
    assert!(seen["meta"].get("tracestate").is_none(), "{seen}");

    // The refused call: its span and its validation span name the layer and the rule.
    assert_eq!(
        refusal(refused),
        named("validation", "validation.arguments")
    );
    assert_eq!(
        attribute(refused, "rpc.response.status_code").as_deref(),
        Some("-32602")
    );
    let validate = spans
        .iter()
        .find(|s| s.parent_span_id == refused.span_id && s.name == "warden.validate")
        .expect("the refused call's validation span");
    assert!(is_error(validate), "{validate:#?}");
    assert!(
        !spans
            .iter()
            .any(|s| s.parent_span_id == refused.span_id && s.kind == SpanKind::Client as i32),
        "a refused call never reaches the upstream"
    );

    // The argument's canary is in no span, and the client's own calls outside its span
    // (discovery, listing) were not sampled at ratio 0.
    let raw = collector.raw();
    assert!(!raw.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
    assert!(
        collector.spans().iter().all(|s| s.trace_id == trace_id),
        "only the caller's trace is sampled"
    );

    // The log line and the audit records carry the trace id; `audit list --trace`
    // finds both calls.
    assert!(
        warden.logged(&format!("trace_id=\"{CALLER_TRACE}\"")),
        "{}",
        warden.stderr()
    );
    assert!(!warden.stderr().contains(CANARY));
    let listed = warden.cli(&["audit", "list", "--json", "--trace", CALLER_TRACE]);
    assert!(listed.status.success(), "{listed:?}");
    let rows: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The two calls, and the listing the SDK made between them in the same span.
    let methods: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| {
            (
                row["method"].as_str().unwrap(),
                row["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            ("tools/call", "allowed"),
            ("tools/list", "allowed"),
            ("tools/call", "refused")
        ],
        "{rows:?}"
    );
    assert!(rows.iter().all(|row| row["trace_id"] == CALLER_TRACE));
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(CANARY));
    let bad = warden.cli(&["audit", "list", "--trace", "not-a-trace"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("32 hex digits"));
}

/// A client that sends no trace context: Warden starts the trace (ratio 1), and the
/// upstream joins it. A request refused before authentication is traced too, with its
/// layer and rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_caller_trace_warden_starts_one() {
    let collector = Collector::start().await;
    let (_fixture, warden) = traced_warden(&collector, "1.0");
    let seen = tool_text(&Http::new(&warden).call_tool("trace", json!({})).await);
    let traceparent = seen["headers"]["traceparent"].as_str().unwrap().to_owned();
    assert_eq!(seen["meta"]["traceparent"], traceparent.as_str());
    let trace_id = unhex(&traceparent[3..35]);
    let (spans, root) = collector.request(&trace_id).await;
    assert!(root.parent_span_id.is_empty(), "a new trace has no parent");
    let upstream_call = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(&traceparent[36..52], hex(&upstream_call.span_id));

    // A tool name shaped like a secret (a client's mistake) is redacted in the span's
    // name and attributes, as in the log and the audit record.
    let secret_name = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let unknown = Http::new(&warden).call_tool(secret_name, json!({})).await;
    assert!(unknown.text.contains("Unknown tool"), "{}", unknown.text);
    collector
        .received(|spans| {
            spans
                .iter()
                .any(|s| refusal(s) == named("catalogue", "catalogue.unknown_tool"))
        })
        .await;
    let raw = collector.raw();
    assert!(raw.windows(10).any(|w| w == b"[REDACTED]"));
    assert!(
        !raw.windows(secret_name.len())
            .any(|w| w == secret_name.as_bytes())
    );

    // A wrong key: refused by authentication, and the trace says so.
    let wrong = Http::with_key(&warden, "wdn_live_wrongwrongwrongwrongwrongwrong");
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let refused = wrong
        .post_json(
            &[("traceparent", traceparent)],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        )
        .await;
    assert_eq!(refused.status, 401);
    let (spans, root) = collector
        .request(&unhex("0af7651916cd43dd8448eb211c80319c"))
        .await;
    assert!(is_error(&root));
    assert_eq!(refusal(&root), named("authentication", "auth.credential"));
    let authenticate = spans
        .iter()
        .find(|s| s.name == "warden.authenticate")
        .unwrap();
    assert!(is_error(authenticate));
    assert!(!collector.raw().windows(9).any(|w| w == b"wrongwron"));
}

/// Tracing off (the default): nothing is added to what the upstream gets, and the log
/// line has no trace id. A client's own `_meta` trace context still passes through, and
/// an HTTP upstream gets it as headers too (well-formed values only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_adds_nothing_and_passes_the_clients_context_on() {
    let (child, url) = support::start_http_fixture(&["--trace"]);
    let _fixture = support::KilledOnDrop(child);
    let warden = Warden::start_config(&format!(
        "[[upstream]]\nname = \"remote\"\nurl = \"{url}\"\n{}",
        support::EGRESS_LOOPBACK
    ));
    let http = Http::new(&warden);
    let seen = tool_text(&http.call_tool("trace", json!({})).await);
    assert!(seen["meta"].get("traceparent").is_none(), "{seen}");
    assert!(seen["headers"].get("traceparent").is_none(), "{seen}");
    assert!(!warden.stderr().contains("trace_id"));

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut body =
        support::raw::modern_body("tools/call", json!({"name": "trace", "arguments": {}}));
    body["params"]["_meta"]["traceparent"] = traceparent.into();
    body["params"]["_meta"]["tracestate"] = "vendor=1\r\nx-injected: yes".into();
    let seen = tool_text(
        &http
            .post_modern(&[], "tools/call", Some("trace"), &body)
            .await,
    );
    assert_eq!(seen["headers"]["traceparent"], traceparent, "{seen}");
    assert!(seen["headers"].get("tracestate").is_none(), "{seen}");
    assert!(seen["headers"].get("x-injected").is_none(), "{seen}");
    assert_eq!(seen["meta"]["traceparent"], traceparent, "{seen}");
}
