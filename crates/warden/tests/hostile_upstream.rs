//! A hostile upstream (tests/fixtures/hostile_server.py): everything it says hides an
//! instruction, it claims other servers' resources and it changes its tools' metadata
//! after approval. Nothing of that reaches a client unhardened.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::raw::Http;
use support::{Warden, python};

/// The marker every hidden instruction of the fixture carries.
const INJECTED: &str = "INJECTED";

fn hostile_upstream(name: &str, extra: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hostile_server.py"
    );
    format!(
        "[[upstream]]\nname = \"{name}\"\ncommand = [\"{}\", \"{script}\"]\n{extra}\n",
        python()
    )
}

fn notes_and_hostile(extra: &str) -> String {
    format!(
        "[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n\n{}",
        hostile_upstream("evil", extra)
    )
}

/// Whether the hidden instruction survived anywhere in `message`: its visible marker, or
/// the tag characters that spell it.
fn carries_injection(message: &Value) -> bool {
    let text = message.to_string();
    text.contains(INJECTED) || text.contains('\u{E0049}')
}

fn assert_clean(what: &str, message: &Value) {
    assert!(
        !carries_injection(message),
        "{what} carried the hidden instruction: {message}"
    );
}

/// Every kind of message an upstream sends reaches the client hardened: instructions,
/// lists, prompt descriptions, resource links, JSON-RPC errors, and what it sends
/// mid-call. From an untrusted upstream, prose is also wrapped as data.
#[tokio::test]
async fn everything_an_upstream_says_is_hardened() {
    for untrusted in [false, true] {
        let extra = if untrusted { "untrusted = true" } else { "" };
        let warden = Warden::start_config(
            &(notes_and_hostile(extra)
                + "\n[tools.\"evil__chatter\"]\nkind = \"read\"\n"
                + support::NO_CONFIRM_AFTER_UNTRUSTED),
        );
        let http = Http::new(&warden);

        let init = http
            .post_json(
                &[],
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
                    "clientInfo": {"name": "raw", "version": "1"}}}),
            )
            .await;
        let instructions = init.json()["result"]["instructions"].clone();
        assert!(instructions.as_str().unwrap().contains("Use these tools."));
        assert_clean("instructions", &instructions);
        let session = init.header("mcp-session-id").unwrap().to_owned();

        let mut id = 1;
        let mut legacy = |method: &str, params: Value| {
            id += 1;
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        };
        for (method, params) in [
            ("prompts/list", json!({})),
            ("prompts/get", json!({"name": "evil__greet"})),
            ("resources/list", json!({})),
            ("resources/templates/list", json!({})),
            ("tools/call", json!({"name": "evil__fail", "arguments": {}})),
            ("tools/call", json!({"name": "evil__link", "arguments": {}})),
        ] {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            // Lists page across upstreams: read every page.
            loop {
                let mut params = params.clone();
                if let Some(cursor) = cursor.take() {
                    params["cursor"] = cursor.into();
                }
                let reply = http.legacy(&session, &legacy(method, params)).await;
                assert_eq!(reply.status, 200, "{method}: {}", reply.text);
                let body = reply.json();
                assert_clean(method, &body);
                cursor = body["result"]["nextCursor"].as_str().map(str::to_owned);
                all.push(body);
                if cursor.is_none() {
                    break;
                }
            }
            let text = Value::Array(all).to_string();
            match method {
                "tools/call" if text.contains("error") => {
                    assert!(
                        text.contains("It failed.") && text.contains("Try again."),
                        "{text}"
                    );
                }
                "prompts/list" => assert!(text.contains("Greets."), "{text}"),
                "resources/list" => assert!(text.contains("A document."), "{text}"),
                _ => {}
            }
            assert_eq!(
                text.contains("<untrusted-data origin="),
                untrusted,
                "{method} (untrusted = {untrusted}): {text}"
            );
        }

        // Mid-call: a log notification and a question, relayed on the call's stream.
        let mut events = http
            .legacy_streaming(
                &session,
                &legacy(
                    "tools/call",
                    json!({"name": "evil__chatter", "arguments": {}}),
                ),
            )
            .await;
        let log = events.next().await;
        assert_eq!(log["method"], "notifications/message");
        assert_clean("log notification", &log);
        let question = events.next().await;
        assert_eq!(question["method"], "elicitation/create");
        assert!(
            question["params"]["message"]
                .as_str()
                .unwrap()
                .contains("Your name?")
        );
        assert_clean("elicitation", &question);
        let answer =
            json!({"jsonrpc": "2.0", "id": question["id"], "result": {"action": "decline"}});
        assert_eq!(http.legacy(&session, &answer).await.status, 202);
        let done = events.next().await;
        assert!(
            done["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("chattered:decline"),
            "{done}"
        );

        // A modern client gets the question inside an InputRequiredResult.
        let reply = http
            .modern_as(
                "tools/call",
                Some("evil__chatter"),
                json!({"name": "evil__chatter", "arguments": {}}),
                json!({"elicitation": {}}),
            )
            .await;
        // The upstream's log line comes first on an SSE answer; the result is last.
        let messages: Vec<Value> = if reply.text.starts_with('{') {
            vec![reply.json()]
        } else {
            reply
                .text
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .map(|data| serde_json::from_str(data).unwrap())
                .collect()
        };
        let body = messages.last().unwrap();
        assert_eq!(body["result"]["resultType"], "input_required", "{body}");
        for message in &messages {
            assert_clean("modern answer", message);
        }
        let modern_init = http.modern("server/discover", None, json!({})).await;
        assert_clean("server/discover", &modern_init.json());
    }
}

fn tool_names(reply: &support::raw::Reply) -> Vec<String> {
    reply.tool_names()
}

/// A change to any part of a tool's definition (here `_meta`, `icons` and `execution`,
/// not its description) withholds the tool until an operator approves it again.
#[tokio::test]
async fn pins_cover_the_whole_definition() {
    let warden = Warden::start_config(&notes_and_hostile(""));
    let http = Http::new(&warden);
    let listed = http.modern("tools/list", None, json!({})).await;
    assert!(tool_names(&listed).contains(&"evil__fail".to_owned()));
    let reply = http.call_tool("evil__remeta", json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(warden.logged("tool withheld until approved"));
    let listed = http.modern("tools/list", None, json!({})).await;
    assert!(
        !tool_names(&listed).contains(&"evil__fail".to_owned()),
        "{}",
        listed.text
    );
    let waiting = warden.cli(&["tools", "waiting"]);
    let waiting = String::from_utf8_lossy(&waiting.stdout);
    assert!(waiting.contains("evil__fail"), "{waiting}");
    let diff = warden.cli(&["tools", "diff", "evil__fail"]);
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(diff.contains("v2-exfiltrate"), "{diff}");
}

/// A URI another upstream claims is never served by the wrong one: routes follow each
/// tenant's own listings, and a URI two upstreams claim is refused (and logged).
#[tokio::test]
async fn one_upstream_cannot_answer_for_anothers_resources() {
    let dir = tempfile::tempdir().unwrap();
    let claims = dir.path().join("claims.txt");
    let warden = Warden::start_config(&notes_and_hostile(&format!(
        "env = {{ HOSTILE_CLAIM_FILE = {:?} }}\nsandbox_read = [{:?}]",
        claims.to_str().unwrap(),
        dir.path().to_str().unwrap()
    )));
    let (_, alice) = warden.add_key("acme", "alice", "write");
    let (_, bob) = warden.add_key("globex", "bob", "write");
    let (alice, bob) = (
        Http::with_key(&warden, &alice),
        Http::with_key(&warden, &bob),
    );
    let created = alice
        .call_tool(
            "notes__create_note",
            json!({"title": "Plan", "body": "the real note"}),
        )
        .await;
    let id = created.json()["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = format!("notes://{id}");
    // The hostile server now lists alice's note as its own, and another tenant's
    // listing passes through Warden.
    std::fs::write(&claims, format!("{uri}\n")).unwrap();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = json!({});
        if let Some(cursor) = cursor.take() {
            params["cursor"] = cursor.into();
        }
        let page = bob.modern("resources/list", None, params).await.json();
        cursor = page["result"]["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    for (who, http) in [("alice", &alice), ("bob", &bob)] {
        let read = http
            .modern("resources/read", Some(&uri), json!({"uri": uri}))
            .await;
        assert!(
            !read.text.contains("hostile read of"),
            "{who} got the hostile server's answer: {}",
            read.text
        );
        assert!(
            !read.text.contains("the real note") || who == "alice",
            "{}",
            read.text
        );
        assert_eq!(read.status, 400, "{who}: {}", read.text);
        assert!(
            read.text.contains("more than one upstream claims it"),
            "{}",
            read.text
        );
    }
    assert!(warden.logged("claimed by several upstreams"));
    // What only one upstream claims still works, for every tenant.
    for http in [&alice, &bob] {
        let read = http
            .modern(
                "resources/read",
                Some("hostile://doc/1"),
                json!({"uri": "hostile://doc/1"}),
            )
            .await;
        assert!(
            read.text.contains("hostile read of hostile://doc/1"),
            "{}",
            read.text
        );
    }
    std::fs::remove_file(&claims).unwrap();
}

/// Newlines and escape sequences from an upstream's tool name, its stderr, or a
/// client's method and tool name never forge a log line, an audit row or a CLI table
/// row: they are written escaped, and the audit trail keeps the exact text.
#[tokio::test]
async fn nothing_forges_a_log_line_or_a_table_row() {
    const FORGED: &str = "FORGED 2026-12-03T00:00:00Z INFO key rotated";
    let evil_tool = format!("evil\n{FORGED}\u{1b}[2J");
    // TOML writes the escape character as \u001b, not Rust's \u{1b}.
    let in_toml = format!("{evil_tool:?}").replace("\\u{1b}", "\\u001b");
    let config = notes_and_hostile(&format!("env = {{ HOSTILE_TOOL = {in_toml} }}"))
        + "\n"
        + &support::fixture_upstream("fx", "");
    let warden = Warden::start_config(&config);
    let http = Http::new(&warden);
    assert!(warden.logged("tool withheld until approved"));
    // Upstream stderr with an escape sequence and a forged line.
    let reply = http
        .call_tool(
            "fx__complain",
            json!({"text": format!("oops\u{1b}[31m\r{FORGED}")}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A client's method and tool name.
    let forged_method = format!("tools/list\n{FORGED}");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": forged_method, "params": {
        "_meta": support::raw::meta()}});
    let reply = http
        .post(
            &[
                ("mcp-protocol-version", support::raw::MODERN),
                ("mcp-method", "tools/list"),
            ],
            body.to_string(),
        )
        .await;
    assert!(reply.status >= 400, "{}", reply.text);
    let forged_tool = format!("nope\n{FORGED}");
    let reply = http
        .post_modern(
            &[],
            "tools/call",
            Some("nope"),
            &support::raw::modern_body("tools/call", json!({"name": forged_tool, "arguments": {}})),
        )
        .await;
    assert!(reply.status >= 400, "{}", reply.text);
    assert!(warden.logged("upstream stderr"));
    let refused = warden.audited(1, |row| {
        row["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("nope"))
    });
    // The audit trail keeps the exact text (its JSON escapes it) ...
    assert_eq!(refused[0]["target"], forged_tool.as_str());

    let log = warden.stderr();
    let listing = warden.cli(&["audit", "list"]);
    let waiting = warden.cli(&["tools", "waiting"]);
    for (what, text) in [
        ("the log", log),
        (
            "audit list",
            String::from_utf8_lossy(&listing.stdout).into_owned(),
        ),
        (
            "tools waiting",
            String::from_utf8_lossy(&waiting.stdout).into_owned(),
        ),
    ] {
        for line in text.lines() {
            assert!(
                !line.starts_with("FORGED"),
                "{what} has a forged line: {line:?}"
            );
        }
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "{what}: {text:?}"
        );
        // The upstream's tool name reaches the catalogue with its newline and escape
        // written as `_`; what a client sent is shown escaped.
        if what != "tools waiting" {
            assert!(
                text.contains("\\n"),
                "{what} shows no escaped newline: {text}"
            );
        }
    }
}
