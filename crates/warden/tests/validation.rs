//! The hallucinated and hostile call corpus: wrong and near-miss tool names, extra and
//! misspelled parameters, every type confusion, oversized and over-deep values,
//! traversal paths in many encodings, broken envelopes and header/body mismatches,
//! in both eras, against Warden fronting the notes server and a stdio server with a
//! loose schema. Each gets its expected status and code; the stdio server records what
//! it receives and sees none of them; the notes store stays empty; Warden keeps serving.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::raw::{Http, MODERN, Reply, meta};
use support::{Warden, fixture_upstream};

const INVALID_PARAMS: i64 = -32602;
const INVALID_REQUEST: i64 = -32600;
const PARSE_ERROR: i64 = -32700;
const METHOD_NOT_FOUND: i64 = -32601;
const HEADER_MISMATCH: i64 = -32020;

/// What a case sends.
enum Send {
    /// `tools/call` of `tool` with `arguments`, in both eras.
    Call { tool: String, arguments: Value },
    /// A whole body, sent as a modern request with these `Mcp-Method`/`Mcp-Name`.
    Raw {
        body: Vec<u8>,
        method: &'static str,
        name: Option<String>,
    },
}

struct Case {
    label: String,
    send: Send,
    /// The HTTP status a 2026-07-28 client gets; a legacy client gets 200 for method
    /// errors, and the same status for refusals made before the era is known.
    status: u16,
    code: i64,
    /// Refused before the body is parsed: the same status in both eras.
    before_parse: bool,
}

fn call(label: impl Into<String>, tool: &str, arguments: Value) -> Case {
    Case {
        label: label.into(),
        send: Send::Call {
            tool: tool.to_owned(),
            arguments,
        },
        status: 400,
        code: INVALID_PARAMS,
        before_parse: false,
    }
}

fn capped(label: impl Into<String>, tool: &str, arguments: Value) -> Case {
    Case {
        before_parse: true,
        ..call(label, tool, arguments)
    }
}

fn raw(label: &str, body: impl Into<Vec<u8>>, status: u16, code: i64) -> Case {
    Case {
        label: label.to_owned(),
        send: Send::Raw {
            body: body.into(),
            method: "tools/call",
            name: Some("fx__echo".into()),
        },
        status,
        code,
        before_parse: true,
    }
}

/// A modern request body for `method` with `params` (plus the required `_meta`).
fn modern(method: &str, mut params: Value) -> Value {
    params["_meta"] = meta();
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("x"), |inner, _| json!({ "mode": inner }))
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();

    // Tool names that do not exist, nearly exist, or exist only for another upstream.
    for name in [
        "create_note",
        "notes__create_notes",
        "notes__createNote",
        "notes__Create_note",
        "notes__create-note",
        "notes__CREATE_NOTE",
        "notes__delete_all_notes",
        "notes__search",
        " notes__search_notes",
        "notes__search_notes ",
        "notes__search_notes\u{0}",
        "notes__s\u{0435}arch_notes",
        "notes/search_notes",
        "../notes.search_notes",
        "fx__echo2",
        "fx__",
        "fx",
        "fx__ECHO",
        "echo",
        "",
        "tools/call",
        &"a".repeat(10_000),
    ] {
        cases.push(call(format!("unknown tool {:.40?}", name), name, json!({})));
    }

    // Extra and misspelled parameters, strict schemas and loose ones alike.
    for (tool, arguments) in [
        ("notes__create_note", json!({"titel": "t", "body": "b"})),
        (
            "notes__create_note",
            json!({"title": "t", "body": "b", "tag": ["x"]}),
        ),
        (
            "notes__create_note",
            json!({"title": "t", "body": "b", "priority": 1}),
        ),
        ("notes__create_note", json!({"title": "t", "Body": "b"})),
        ("notes__search_notes", json!({"q": "x"})),
        ("notes__search_notes", json!({"query": "x", "limits": 5})),
        (
            "notes__search_notes",
            json!({"query": "x", "api_version": "2"}),
        ),
        ("notes__get_note", json!({"note_id": "n_0123456789abcdef"})),
        ("notes__list_notes", json!({"tags": "x"})),
        (
            "notes__delete_note",
            json!({"id": "n_0123456789abcdef", "confirm": true}),
        ),
        ("fx__echo", json!({"txt": "x"})),
        ("fx__echo", json!({"text": "x", "extra": "y"})),
        ("fx__sleep", json!({"ms": 1, "seconds": 1})),
        ("fx__pid", json!({"verbose": true})),
        ("fx__loose", json!({"paths": "a"})),
        ("fx__loose", json!({"Path": "a"})),
        ("fx__loose", json!({"path": "a", "recursive": true})),
        (
            "fx__loose",
            json!({"options": {"mode": "r", "force": true}}),
        ),
        ("fx__loose", json!({"options": {"Mode": "r"}})),
        ("fx__open", json!({"path": "a", "mode": "w"})),
    ] {
        cases.push(call(
            format!("extra parameter {tool} {arguments}"),
            tool,
            arguments,
        ));
    }

    // Every type confusion, for every kind of parameter.
    let wrong_for_string = [
        json!(5),
        json!(1.5),
        json!(true),
        json!(null),
        json!([]),
        json!({}),
        json!(["a"]),
    ];
    let wrong_for_integer = [
        json!("5"),
        json!(1.5),
        json!("true"),
        json!(true),
        json!(null),
        json!([]),
        json!({}),
        json!("1e2"),
    ];
    let complete = |tool: &str, field: &str, value: &Value| -> Value {
        let mut arguments = match tool {
            "notes__create_note" => json!({"title": "t", "body": "b"}),
            "notes__search_notes" => json!({"query": "q"}),
            "fx__echo" => json!({"text": "x"}),
            "fx__sleep" => json!({"ms": 1}),
            _ => json!({}),
        };
        arguments[field] = value.clone();
        arguments
    };
    for (tool, field) in [
        ("notes__create_note", "title"),
        ("notes__create_note", "body"),
        ("notes__search_notes", "query"),
        ("fx__echo", "text"),
        ("fx__loose", "path"),
    ] {
        for value in &wrong_for_string {
            cases.push(call(
                format!("{tool} {field} as {value}"),
                tool,
                complete(tool, field, value),
            ));
        }
    }
    for (tool, field) in [
        ("notes__search_notes", "limit"),
        ("notes__list_notes", "limit"),
        ("fx__sleep", "ms"),
        ("fx__loose", "count"),
    ] {
        for value in &wrong_for_integer {
            cases.push(call(
                format!("{tool} {field} as {value}"),
                tool,
                complete(tool, field, value),
            ));
        }
    }
    for value in [
        json!("a"),
        json!({"0": "a"}),
        json!(null),
        json!([1]),
        json!([null]),
    ] {
        cases.push(call(
            format!("tags as {value}"),
            "notes__create_note",
            complete("notes__create_note", "tags", &value),
        ));
    }
    for value in [json!("r"), json!([]), json!(null)] {
        cases.push(call(
            format!("options as {value}"),
            "fx__loose",
            json!({ "options": value }),
        ));
    }

    // Bounds, patterns, required properties, and arguments that are not an object.
    for (tool, arguments) in [
        ("notes__search_notes", json!({"query": "x", "limit": 0})),
        ("notes__search_notes", json!({"query": "x", "limit": 51})),
        ("notes__search_notes", json!({"query": ""})),
        ("notes__get_note", json!({"id": "n_123"})),
        ("notes__get_note", json!({"id": "../n_0123456789abcdef"})),
        ("notes__create_note", json!({"title": "", "body": "b"})),
        (
            "notes__create_note",
            json!({"title": "t".repeat(201), "body": "b"}),
        ),
        (
            "notes__create_note",
            json!({"title": "t", "body": "b", "tags": vec!["x"; 17]}),
        ),
        (
            "notes__create_note",
            json!({"title": "t", "body": "b", "tags": ["has space"]}),
        ),
        ("fx__sleep", json!({"ms": -1})),
        ("notes__create_note", json!({"title": "t"})),
        ("fx__echo", json!({})),
        ("fx__sleep", json!({})),
        ("notes__get_note", json!({})),
        ("fx__open", json!({})),
    ] {
        cases.push(call(
            format!("rule {tool} {arguments:.60}"),
            tool,
            arguments,
        ));
    }
    for arguments in [json!([]), json!("x"), json!(5), json!(null)] {
        let mut case = call(format!("arguments as {arguments}"), "fx__echo", json!({}));
        case.send = Send::Raw {
            body: modern(
                "tools/call",
                json!({"name": "fx__echo", "arguments": arguments}),
            )
            .to_string()
            .into_bytes(),
            method: "tools/call",
            name: Some("fx__echo".into()),
        };
        cases.push(case);
    }

    // Sizes: refused while the body is scanned, before any parse.
    cases.push(capped(
        "100 KB string",
        "fx__echo",
        json!({"text": "a".repeat(100_000)}),
    ));
    cases.push(capped(
        "2,000 tags",
        "notes__create_note",
        json!({"title": "t", "body": "b", "tags": vec!["x"; 2000]}),
    ));
    let many_keys: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("k{i}"), json!(1))).collect();
    cases.push(capped("300 keys", "fx__loose", Value::Object(many_keys)));
    cases.push(capped(
        "40 levels",
        "fx__loose",
        json!({ "options": nested(40) }),
    ));
    let wide: Vec<Value> = (0..200).map(|_| json!(vec![1; 600])).collect();
    cases.push(capped(
        "120,000 values",
        "fx__loose",
        json!({ "options": wide }),
    ));
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{{\"name\":\"fx__echo\",\"arguments\":{{\"text\":{}x{}}}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    cases.push(raw("100,000 levels", deep, 400, INVALID_PARAMS));
    let mut huge = modern(
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"text": ""}}),
    );
    huge["params"]["arguments"]["text"] = json!("a".repeat(10 * 1024 * 1024));
    cases.push(raw("10 MB string", huge.to_string(), 413, -32000));
    let mut big = modern("tools/call", json!({"name": "fx__loose", "arguments": {}}));
    big["params"]["arguments"]["options"] = json!(
        (0..900)
            .map(|i| json!({"mode": format!("{i:0>1200}")}))
            .collect::<Vec<_>>()
    );
    cases.push(raw("a 1 MB+ body", big.to_string(), 413, -32000));

    // Paths: the schema-declared one is relative to nowhere (no root), the operator's
    // is confined to a root holding a symlink out.
    for path in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../etc",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/etc",
        "%2E%2E%2Fetc",
        "%252e%252e%252fetc",
        "..\\..\\windows",
        "a\u{0}b",
        "\u{FF0E}\u{FF0E}/etc",
        "a\u{2215}..\u{2215}b",
        "~/.ssh/id_rsa",
        "..",
    ] {
        cases.push(call(
            format!("declared path {path:?}"),
            "fx__open",
            json!({ "path": path }),
        ));
    }
    for path in [
        "/etc/passwd",
        "../outside",
        "escape/passwd",
        "/srv/elsewhere",
    ] {
        cases.push(call(
            format!("configured path {path:?}"),
            "fx__loose",
            json!({ "path": path }),
        ));
    }

    // Broken envelopes.
    let echo = |text: &str| {
        modern(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": text}}),
        )
        .to_string()
    };
    cases.push(raw(
        "batch",
        format!("[{}]", echo("x")),
        400,
        INVALID_REQUEST,
    ));
    cases.push(raw("not JSON", "{\"jsonrpc\": ", 400, PARSE_ERROR));
    cases.push(raw(
        "trailing garbage",
        format!("{} x", echo("x")),
        400,
        PARSE_ERROR,
    ));
    cases.push(raw(
        "jsonrpc 1.0",
        echo("x").replace("\"2.0\"", "\"1.0\""),
        400,
        INVALID_REQUEST,
    ));
    cases.push(raw(
        "no jsonrpc",
        echo("x").replace("\"jsonrpc\":\"2.0\",", ""),
        400,
        INVALID_REQUEST,
    ));
    for id in ["null", "1.5", "{}", "[7]", "true"] {
        cases.push(raw(
            &format!("id {id}"),
            echo("x").replace("\"id\":7", &format!("\"id\":{id}")),
            400,
            INVALID_REQUEST,
        ));
    }
    cases.push(raw(
        "method as a number",
        echo("x").replace("\"method\":\"tools/call\"", "\"method\":5"),
        400,
        INVALID_REQUEST,
    ));
    cases.push(raw(
        "duplicate top-level key",
        echo("x").replace("\"id\":7", "\"id\":7,\"id\":8"),
        400,
        INVALID_REQUEST,
    ));
    cases.push(raw(
        "duplicate argument",
        echo("x").replace("\"text\":\"x\"", "\"text\":\"x\",\"text\":\"y\""),
        400,
        INVALID_PARAMS,
    ));
    cases.push(raw(
        "duplicate argument, escaped",
        echo("x").replace("\"text\":\"x\"", "\"text\":\"x\",\"\\u0074ext\":\"y\""),
        400,
        INVALID_PARAMS,
    ));
    cases.push(raw(
        "control character in a string",
        echo("x").replace("\"text\":\"x\"", "\"text\":\"a\u{1}b\""),
        400,
        PARSE_ERROR,
    ));
    for (label, method, params, status, code) in [
        (
            "unknown method",
            "tools/delete",
            json!({}),
            404,
            METHOD_NOT_FOUND,
        ),
        (
            "unknown resource",
            "resources/read",
            json!({"uri": "file:///etc/passwd"}),
            400,
            INVALID_PARAMS,
        ),
        // No upstream here offers prompts or completions: the methods do not exist.
        (
            "a prompt where none are offered",
            "prompts/get",
            json!({"name": "notes__nope"}),
            404,
            METHOD_NOT_FOUND,
        ),
        (
            "a completion where none are offered",
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "nope"}, "argument": {"name": "a", "value": "b"}}),
            404,
            METHOD_NOT_FOUND,
        ),
        (
            "params as an array",
            "tools/list",
            json!([1]),
            400,
            INVALID_PARAMS,
        ),
    ] {
        let name = params
            .get("uri")
            .or_else(|| params.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = if params.is_array() {
            json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
        } else {
            modern(method, params)
        };
        cases.push(Case {
            label: label.into(),
            send: Send::Raw {
                body: body.to_string().into_bytes(),
                method,
                name,
            },
            status,
            code,
            before_parse: true,
        });
    }

    // Headers that disagree with the body.
    for (label, method, name) in [
        (
            "Mcp-Method names another method",
            "tools/list",
            Some("fx__echo"),
        ),
        ("Mcp-Name names another tool", "tools/call", Some("fx__pid")),
        ("Mcp-Name missing", "tools/call", None),
        (
            "Mcp-Name with different case",
            "tools/call",
            Some("FX.ECHO"),
        ),
    ] {
        cases.push(Case {
            label: label.into(),
            send: Send::Raw {
                body: echo("x").into_bytes(),
                method,
                name: name.map(str::to_owned),
            },
            status: 400,
            code: HEADER_MISMATCH,
            before_parse: true,
        });
    }
    cases
}

/// `Mcp-Name` as a client sends it: plain when it can be, base64 otherwise.
fn name_header(name: &str) -> String {
    let plain = name.bytes().all(|b| b.is_ascii_graphic()) && !name.is_empty();
    if plain {
        name.to_owned()
    } else {
        use base64::Engine as _;
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name)
        )
    }
}

/// Checks one answer; returns it as a line of the corpus's snapshot.
fn check(case: &Case, era: &str, reply: &Reply, expected_status: u16) -> String {
    let label = &case.label;
    assert_eq!(
        reply.status, expected_status,
        "{era} {label}: {:.300}",
        reply.text
    );
    let body = reply.json();
    assert_eq!(
        body["error"]["code"], case.code,
        "{era} {label}: {:.300}",
        reply.text
    );
    assert!(
        reply.text.len() < 2048,
        "{era} {label}: an error echoes what was sent ({} bytes)",
        reply.text.len()
    );
    json!([label, era, reply.status, reply.text]).to_string()
}

/// Every answer of the corpus, byte for byte (status and body), is the one committed in
/// `tests/snapshots/validation_corpus.jsonl`: work on the hot path must not change what
/// a refused call is told. `WARDEN_BLESS=1` writes the file anew (review its diff).
fn assert_answers_unchanged(answers: &[String]) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/validation_corpus.jsonl"
    );
    let got = answers.join("\n") + "\n";
    if std::env::var_os("WARDEN_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (WARDEN_BLESS=1 writes it)"));
    for (line, (want, got)) in want.lines().zip(got.lines()).enumerate() {
        assert_eq!(got, want, "answer {} of the corpus changed", line + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "the corpus has a different number of answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_is_refused_and_never_reaches_an_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("received.jsonl");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
    // Hundreds of requests from one key and address: the rate limits are not under test.
    let config = format!(
        "[rate]\nper_key_rpm = 100000\nper_ip_rpm = 100000\n\n[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n\n{}\n[tools.\"fx__loose\"]\npaths = [\"/path\"]\nroot = {:?}\n",
        fixture_upstream(
            "fx",
            &format!(
                "env = {{ FIXTURE_RECORD = {:?} }}\nsandbox_write = [{:?}]",
                record.to_str().unwrap(),
                dir.path().to_str().unwrap()
            )
        ),
        root.to_str().unwrap()
    );
    let warden = Warden::start_config(&config);
    let http = Http::new(&warden);
    let session = http.initialize().await;
    // What reached the upstream before the corpus: its handshake and listings.
    let before = std::fs::read_to_string(&record).unwrap_or_default();

    let cases = corpus();
    let mut sent = 0;
    let mut answers = Vec::new();
    for case in &cases {
        match &case.send {
            Send::Call { tool, arguments } => {
                let params = json!({"name": tool, "arguments": arguments});
                let reply = http
                    .post_modern(
                        &[],
                        "tools/call",
                        Some(&name_header(tool)),
                        &modern("tools/call", params.clone()),
                    )
                    .await;
                answers.push(check(case, "modern", &reply, case.status));
                let body =
                    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params});
                let reply = http.legacy(&session, &body).await;
                let legacy_status = if case.before_parse { case.status } else { 200 };
                answers.push(check(case, "legacy", &reply, legacy_status));
                sent += 2;
            }
            Send::Raw { body, method, name } => {
                let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", *method)];
                if let Some(name) = name {
                    headers.push(("mcp-name", name.as_str()));
                }
                let reply = http.post(&headers, body.clone()).await;
                answers.push(check(case, "modern", &reply, case.status));
                sent += 1;
            }
        }
    }
    assert!(sent >= 150, "only {sent} hostile calls");
    println!("{} cases, {sent} hostile requests", cases.len());
    assert_answers_unchanged(&answers);

    // The stdio server saw no tools/call at all; the notes store holds nothing.
    let after = std::fs::read_to_string(&record).unwrap_or_default();
    let reached: Vec<&str> = after[before.len()..]
        .lines()
        .filter(|line| line.contains("tools/call"))
        .collect();
    assert!(reached.is_empty(), "reached the upstream: {reached:.3?}");
    let listed = http
        .modern(
            "tools/call",
            Some("notes__list_notes"),
            json!({"name": "notes__list_notes", "arguments": {}}),
        )
        .await;
    assert_eq!(
        listed.json()["result"]["structuredContent"]["notes"],
        json!([])
    );

    // Still serving, and a good call does reach the upstream (the record works).
    http.assert_still_serving().await;
    let good = http
        .modern(
            "tools/call",
            Some("fx__loose"),
            json!({"name": "fx__loose", "arguments": {"path": "inside/file.txt", "options": {"mode": "r"}}}),
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.text);
    let after = std::fs::read_to_string(&record).unwrap();
    assert!(after[before.len()..].contains("inside/file.txt"));
    let opened = http
        .modern(
            "tools/call",
            Some("fx__open"),
            json!({"name": "fx__open", "arguments": {"path": "docs/readme.md"}}),
        )
        .await;
    assert_eq!(opened.json()["result"]["content"][0]["text"], "opened");
}

#[tokio::test]
async fn structured_results_that_break_their_output_schema_are_withheld_or_flagged() {
    for (output_check, blocked) in [("block", true), ("warn", false)] {
        let config = fixture_upstream("fx", "")
            + &format!("\n[tools.shaped]\noutput_check = \"{output_check}\"\n");
        let warden = Warden::start_config(&config);
        let http = Http::new(&warden);
        let shaped = |value: Value| {
            let http = &http;
            async move {
                http.modern(
                    "tools/call",
                    Some("shaped"),
                    json!({"name": "shaped", "arguments": {"value": value}}),
                )
                .await
                .json()["result"]
                    .clone()
            }
        };
        let good = shaped(json!(3)).await;
        assert_eq!(good["structuredContent"]["n"], 3);
        let bad = shaped(json!("three")).await;
        if blocked {
            assert_eq!(bad["isError"], true, "{bad}");
            assert!(bad.get("structuredContent").is_none());
            let text = bad["content"][0]["text"].as_str().unwrap();
            assert!(
                text.contains("outputSchema") && text.contains("/n"),
                "{text}"
            );
            assert!(!text.contains("three"), "{text}");
        } else {
            assert_eq!(bad["structuredContent"]["n"], "three");
        }
        assert!(warden.logged("does not match its outputSchema"));
    }
}

/// Numbers reach the upstream with the value the client wrote, digit for digit, and
/// come back the same way; `integer` means what JSON Schema says (a number with no
/// fractional part, whatever its size or notation).
#[tokio::test]
async fn numbers_reach_the_upstream_exactly_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("received.jsonl");
    let config = fixture_upstream(
        "fx",
        &format!(
            "env = {{ FIXTURE_RECORD = {:?} }}\nsandbox_write = [{:?}]",
            record.to_str().unwrap(),
            dir.path().to_str().unwrap()
        ),
    );
    let warden = Warden::start_config(&config);
    let http = Http::new(&warden);
    let call = |tool: &str, arguments: &str| {
        // Written by hand: a JSON library in the test would normalise the numbers.
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        )
    };
    // The digits are kept as written; an exponent is written `e` with its sign (the
    // same value, in serde_json's arbitrary-precision form).
    for (integer, arrives) in [
        ("1e2", "1e+2"),
        ("1E+2", "1e+2"),
        ("1.0", "1.0"),
        ("-0", "-0"),
        ("18446744073709551616", "18446744073709551616"),
        ("9007199254740993", "9007199254740993"),
        (
            "-123456789012345678901234567890",
            "-123456789012345678901234567890",
        ),
    ] {
        let reply = http
            .post(
                &[
                    ("mcp-protocol-version", MODERN),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "loose"),
                ],
                call("loose", &format!(r#"{{"count":{integer}}}"#)),
            )
            .await;
        assert_eq!(reply.status, 200, "{integer}: {}", reply.text);
        assert_eq!(
            reply.json()["result"]["content"][0]["text"],
            "loose",
            "{integer}"
        );
        let received = std::fs::read_to_string(&record).unwrap();
        assert!(
            received.contains(&format!(r#""count":{arrives}}}"#)),
            "{integer} changed on the way: {}",
            received.lines().last().unwrap_or_default()
        );
    }
    for not_integer in ["1.5", "1e-2", "\"5\"", "18446744073709551616.5"] {
        let reply = http
            .post(
                &[
                    ("mcp-protocol-version", MODERN),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "loose"),
                ],
                call("loose", &format!(r#"{{"count":{not_integer}}}"#)),
            )
            .await;
        assert_eq!(reply.status, 400, "{not_integer}: {}", reply.text);
    }
    // The way back: the fixture echoes the number into structuredContent.
    let reply = http
        .post(
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "shaped"),
            ],
            call("shaped", r#"{"value":18446744073709551617}"#),
        )
        .await;
    assert!(
        reply.text.contains(r#""n":18446744073709551617"#),
        "{}",
        reply.text
    );
}

/// `[[upstream]] paths_root` confines every argument of that upstream's tools that the
/// schema marks as a path or names like one; `[tools."fx__*"]` patterns apply to every
/// tool they fit; the most specific rule wins.
#[tokio::test]
async fn upstream_wide_paths_and_pattern_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (root, other) = (dir.path().join("root"), dir.path().join("other"));
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&other).unwrap();
    let config = format!(
        "{}\n[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n\n[tools.\"fx__*\"]\nrpm = 1\n\n[tools.\"fx__open\"]\nroot = {:?}\n",
        fixture_upstream("fx", &format!("paths_root = {:?}", root.to_str().unwrap())),
        other.to_str().unwrap()
    );
    let warden = Warden::start_config(&config);
    let http = Http::new(&warden);
    let call = |tool: &'static str, arguments: Value| {
        let http = &http;
        async move { http.call_tool(tool, arguments).await }
    };
    // `loose` declares a plain string named `path`: the upstream's root confines it.
    let outside = call("fx__loose", json!({"path": "/etc/passwd"})).await;
    assert_eq!(outside.status, 400, "{}", outside.text);
    assert!(
        outside.text.contains("/path"),
        "{}\n{}",
        outside.text,
        warden.stderr()
    );
    let inside = root.join("notes.txt");
    let fine = call("fx__loose", json!({"path": inside.to_str().unwrap()})).await;
    assert_eq!(fine.status, 200, "{}", fine.text);
    // `fx__open` has its own root, which wins over the upstream's.
    let in_root = call("fx__open", json!({"path": inside.to_str().unwrap()})).await;
    assert_eq!(in_root.status, 400, "{}", in_root.text);
    let in_other = other.join("a.txt");
    let opened = call("fx__open", json!({"path": in_other.to_str().unwrap()})).await;
    assert_eq!(opened.status, 200, "{}", opened.text);
    // The pattern's rate holds for each fx tool (the exact fx__open entry replaces it);
    // the notes server's tools are not fx's.
    assert_eq!(call("fx__echo", json!({"text": "a"})).await.status, 200);
    assert_eq!(call("fx__echo", json!({"text": "a"})).await.status, 429);
    assert_eq!(call("fx__pid", json!({})).await.status, 200);
    for _ in 0..3 {
        let listed = call("notes__list_notes", json!({})).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
    }
}

/// `WARDEN_BENCH_SKIP` is read only by a benchmark build (feature `bench-layers`): in
/// the build that ships, and that these tests run, it turns nothing off.
#[tokio::test]
async fn the_benchmark_switch_turns_nothing_off_in_a_shipped_build() {
    let warden = Warden::start_config_with_env(
        "[tools.\"list_notes\"]\nrpm = 1\n",
        &[(
            "WARDEN_BENCH_SKIP",
            "front,scan,validation,policy,auth,limits",
        )],
    );
    let http = Http::new(&warden);
    // Validation: a misspelled parameter is still refused.
    let invalid = http
        .modern(
            "tools/call",
            Some("search_notes"),
            json!({"name": "search_notes", "arguments": {"qeury": "x"}}),
        )
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.text);
    assert_eq!(invalid.json()["error"]["code"], INVALID_PARAMS);
    // The caps scan: a string over the cap is still refused before parsing.
    let long = "x".repeat(100 * 1024);
    let scanned = http
        .modern(
            "tools/call",
            Some("search_notes"),
            json!({"name": "search_notes", "arguments": {"query": long}}),
        )
        .await;
    assert_eq!(scanned.status, 400, "{}", scanned.text);
    assert!(
        scanned.text.contains("max_string_bytes"),
        "{}",
        scanned.text
    );
    // The front door: a foreign Origin is still refused.
    let foreign = http
        .post_modern(
            &[("origin", "https://evil.example.com")],
            "tools/list",
            None,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}}),
        )
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    // Authentication: after a key was accepted, a request without one is still refused.
    let listed = http.call_tool("list_notes", json!({})).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let body =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta()}});
    let keyless = http
        .send(
            reqwest::Method::POST,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
            ],
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(keyless.status, 401, "{}", keyless.text);
    // The limits: the tool's rate of one call a minute still refuses the second.
    let again = http.call_tool("list_notes", json!({})).await;
    assert_eq!(again.status, 429, "{}", again.text);
    assert!(!warden.logged("controls turned off"));
}
