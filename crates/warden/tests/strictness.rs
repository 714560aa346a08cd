//! Protocol strictness and the refusals around it: credentials in any message a client
//! sends, `initialize` as the spec writes it (and counted like any request), sessions
//! per key, methods of capabilities Warden did not declare, the protected-resource
//! metadata in API-key mode, the admin listener's Host guard and its bind error, and an
//! audit record for every refusal after the body was read.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::raw::Http;
use support::{BIN, Warden, fixture_upstream};

fn initialize_body(params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
}

fn full_initialize() -> Value {
    initialize_body(json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "raw", "version": "1"},
    }))
}

/// An answer to an upstream's question, or a notification, carrying a Warden key is
/// refused before anything reaches the upstream.
#[tokio::test]
async fn credentials_in_answers_and_notifications_never_reach_an_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("received.jsonl");
    let warden = Warden::start_config(&fixture_upstream(
        "fx",
        &format!(
            "env = {{ FIXTURE_RECORD = {:?} }}\nsandbox_write = [{:?}]",
            record.to_str().unwrap(),
            dir.path().to_str().unwrap()
        ),
    ));
    let (_, key) = warden.add_key("default", "planted", "write");
    let http = Http::new(&warden);
    let session = http.initialize_with(json!({"elicitation": {}})).await;
    let mut events = http
        .legacy_streaming(
            &session,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "ask", "arguments": {"question": "Your name?"}}}),
        )
        .await;
    let question = events.next().await;
    assert_eq!(question["method"], "elicitation/create");
    let id = question["id"].clone();
    for carrying in [
        json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"name": key}}}),
        json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"name": "x", "api_key": "y"}}}),
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -1, "message": format!("here: {key}")}}),
        json!({"jsonrpc": "2.0", "method": "notifications/progress",
               "params": {"progressToken": "progress-1", "progress": 1, "message": key}}),
    ] {
        let reply = http.legacy(&session, &carrying).await;
        assert_eq!(reply.status, 400, "{carrying}: {}", reply.text);
        assert_eq!(reply.json()["error"]["code"], -32602, "{}", reply.text);
        assert!(!reply.text.contains(&key));
    }
    // The question is still open: a clean answer completes the call.
    let clean = json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"name": "Ada"}}});
    assert_eq!(http.legacy(&session, &clean).await.status, 202);
    let done = events.next().await;
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("accept:Ada"),
        "{done}"
    );
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(!received.contains(&key), "a key reached the upstream");
    assert!(!received.contains("api_key"));
    // Each refusal is in the audit trail, by rule.
    let refused = warden.audited(4, |row| row["rule"] == "credentials.body");
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        !warden.has_written(&key[4..]),
        "the key was written somewhere"
    );
}

/// `initialize` needs its three fields, cannot re-open a live session, counts against
/// the key's rate, and a key holds at most `max_sessions_per_key` sessions.
#[tokio::test]
async fn initialize_is_strict_counted_and_shared_out_per_key() {
    let warden =
        Warden::start_config("[rate]\nper_key_rpm = 4\n\n[limits]\nmax_sessions_per_key = 2\n");
    let http = Http::new(&warden);
    for missing in ["protocolVersion", "capabilities", "clientInfo"] {
        let mut body = full_initialize();
        body["params"].as_object_mut().unwrap().remove(missing);
        let reply = http.post_json(&[], &body).await;
        assert_eq!(
            reply.json()["error"]["code"],
            -32602,
            "{missing}: {}",
            reply.text
        );
        assert!(reply.header("mcp-session-id").is_none());
    }
    let first = http.initialize().await;
    let second = http.initialize().await;
    // A second initialize on a live session is refused.
    let again = http
        .post_json(&[("mcp-session-id", &first)], &full_initialize())
        .await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert_eq!(again.json()["error"]["code"], -32600);
    // A third session makes room by closing the key's least recently used one.
    let third = http.initialize().await;
    let ping = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
    assert_eq!(http.legacy(&first, &ping(1)).await.status, 404);
    assert_eq!(http.legacy(&third, &ping(2)).await.status, 200);
    let _ = second;
    // Three sessions opened and one ping answered: the key's budget of four a minute is
    // spent (the refusals above came before the count).
    let over = http.post_json(&[], &full_initialize()).await;
    assert_eq!(over.status, 429, "{}", over.text);
    assert_eq!(over.json()["error"]["data"]["layer"], "rate.per_key");
    for rule in [
        "validation.params",
        "transport.reinitialize",
        "rate.per_key",
    ] {
        warden.audited(1, |row| row["rule"] == rule);
    }
}

/// Methods of capabilities Warden did not declare do not exist: the notes server
/// offers no prompts, no completions, no logging and no subscriptions.
#[tokio::test]
async fn methods_of_undeclared_capabilities_are_not_found() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    let session = http.initialize().await;
    for (method, name, params) in [
        ("prompts/list", None, json!({})),
        ("prompts/get", Some("x"), json!({"name": "x"})),
        (
            "completion/complete",
            None,
            json!({"ref": {"type": "ref/prompt", "name": "x"}, "argument": {"name": "a", "value": ""}}),
        ),
        ("logging/setLevel", None, json!({"level": "info"})),
        (
            "resources/subscribe",
            None,
            json!({"uri": "notes://n_0000000000000000"}),
        ),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let reply = http.legacy(&session, &body).await;
        assert_eq!(
            reply.json()["error"]["code"],
            -32601,
            "{method}: {}",
            reply.text
        );
        // The methods the modern era has (it has no subscriptions or log levels).
        if !matches!(method, "logging/setLevel" | "resources/subscribe") {
            let modern = http.modern(method, name, params.clone()).await;
            assert_eq!(modern.status, 404, "{method}: {}", modern.text);
        }
    }
    // What is declared still works.
    let listed = http
        .legacy(
            &session,
            &json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list"}),
        )
        .await;
    assert!(
        listed.json()["result"]["resources"].is_array(),
        "{}",
        listed.text
    );
}

/// Refusals after the body was read leave an audit record like any other refusal.
#[tokio::test]
async fn transport_refusals_are_audited() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    // A key other than the admin key, which sits in its file in the data directory.
    let (_, key) = warden.add_key("default", "planted", "write");
    // Credentials in the body.
    let reply = http
        .modern(
            "tools/call",
            Some("search_notes"),
            json!({"name": "search_notes", "arguments": {"query": key}}),
        )
        .await;
    assert_eq!(reply.status, 400);
    // A routing header that disagrees with the body.
    let body = support::raw::modern_body("tools/list", json!({}));
    let reply = http.post_modern(&[], "tools/call", None, &body).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    // An unknown session.
    let reply = http
        .legacy(
            "no-such-session",
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(reply.status, 404);
    for rule in [
        "credentials.body",
        "transport.header_mismatch",
        "transport.unknown_session",
    ] {
        let row = warden.audited(1, |row| row["rule"] == rule).remove(0);
        assert_eq!(row["decision"], "refused");
        assert!(row["principal"].as_str().unwrap().starts_with("key_"));
    }
    assert!(!warden.has_written(&key[4..]));
}

/// With API keys, the protected-resource metadata says the credential goes in the
/// header, and names no authorization server.
#[tokio::test]
async fn api_key_mode_serves_protected_resource_metadata() {
    let warden = Warden::start();
    let base = warden.url.trim_end_matches("/mcp").to_owned();
    let client = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let reply = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{path}");
        let metadata: Value = reply.json().await.unwrap();
        assert_eq!(metadata["resource"], warden.url, "{metadata}");
        assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
        assert!(metadata.get("authorization_servers").is_none());
    }
    // Behind the Host guard like everything else.
    let reply = client
        .get(format!("{base}/.well-known/oauth-protected-resource"))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
}

/// The admin listener answers loopback names only, and a taken admin port stops the
/// start with a message naming the address and the setting.
#[tokio::test]
async fn the_admin_listener_is_guarded_and_its_port_errors_are_clear() {
    let warden = Warden::start();
    let admin = warden.admin_url();
    let client = reqwest::Client::new();
    let good = client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(good.status(), 200);
    for host in ["evil.example.com", "rebind.attacker.test:9090"] {
        let reply = client
            .get(format!("{admin}/metrics"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 403, "{host}");
    }
    let taken = admin.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", &taken])
        .env_remove("WARDEN_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&taken) && stderr.contains("[admin] listen / --admin-listen"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A session costs the same whatever its `initialize` carried: 100 sessions opened with
/// 700 KB of capabilities and client info each leave Warden's memory about where it
/// was (keeping them would take 70 MB).
#[tokio::test]
async fn sessions_keep_only_what_warden_uses() {
    let warden = Warden::start_config(
        "[rate]\nper_key_rpm = 100000\n\n[limits]\nmax_sessions_per_key = 1000\n",
    );
    let http = Http::new(&warden);
    // Strings under the caps scan's 64 KiB, 350 KB of them on each side.
    let padding: serde_json::Map<String, Value> = (0..6)
        .map(|i| (format!("p{i}"), Value::String("x".repeat(60 * 1024))))
        .collect();
    let mut client_info = padding.clone();
    client_info.insert("name".into(), "raw".into());
    client_info.insert("version".into(), "1".into());
    let body = initialize_body(json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {}, "experimental": padding},
        "clientInfo": client_info,
    }));
    // Warm up the allocator with a few, then measure 100 more.
    for _ in 0..5 {
        assert_eq!(http.post_json(&[], &body).await.status, 200);
    }
    let before = rss_kib(warden.pid());
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let reply = http.post_json(&[], &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        sessions.push(reply.header("mcp-session-id").unwrap().to_owned());
    }
    let grown_mb = rss_kib(warden.pid()).saturating_sub(before) / 1024;
    assert!(grown_mb < 30, "100 sessions grew Warden by {grown_mb} MB");
    // They are all live, and each still relays what its client declared.
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for session in [&sessions[0], &sessions[99]] {
        assert_eq!(http.legacy(session, &ping).await.status, 200);
    }
}
