//! The audit trail and redaction over the real binary: one record per request that
//! reached policy in a mixed run, records surviving `kill -9` once their answer was sent
//! a flush delay earlier, `warden audit verify` catching an edited and a deleted record,
//! and canary secrets planted everywhere a client or upstream can put them never
//! reaching any byte Warden wrote.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::raw::{Http, Reply};
use support::{Warden, fixture_upstream};

fn verify(warden: &Warden) -> (bool, String) {
    let out = warden.cli(&["audit", "verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_that_reaches_policy_has_one_chained_record() {
    let mut warden = Warden::start_config(
        &(fixture_upstream("fx", "call_timeout_ms = 300")
            + "\n[rate]\nper_key_rpm = 12\n\n[tools.pid]\nrpm = 1\n"),
    );
    let http = Http::new(&warden);
    let mut made = 0;
    let mut expect = |reply: Reply, status: u16| {
        assert_eq!(reply.status, status, "{}", reply.text);
        made += 1;
    };
    expect(http.modern("tools/list", None, json!({})).await, 200);
    expect(http.call_tool("echo", json!({"text": "a"})).await, 200);
    expect(
        http.call_tool("echo", json!({"text": "a", "x": 1})).await,
        400,
    );
    expect(http.call_tool("no_such_tool", json!({})).await, 400);
    expect(http.call_tool("pid", json!({})).await, 200);
    expect(http.call_tool("pid", json!({})).await, 429);
    expect(http.call_tool("sleep", json!({"ms": 2000})).await, 503);
    let session = http.initialize().await;
    let echo = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "b"}}});
    expect(http.legacy(&session, &echo).await, 200);
    let unknown = json!({"jsonrpc": "2.0", "id": 4, "method": "nope"});
    expect(http.legacy(&session, &unknown).await, 200);
    // The key's twelfth request a minute is its last (opening the session counted).
    for _ in 0..2 {
        expect(http.modern("tools/list", None, json!({})).await, 200);
    }
    expect(http.modern("tools/list", None, json!({})).await, 429);
    assert!(warden.terminate().success());

    // Requests only: an operator's action (on a PostgreSQL store, the first key is one)
    // has its own record.
    let rows: Vec<_> = warden
        .audit_rows()
        .into_iter()
        .filter(|row| row["era"] != "operator")
        .collect();
    assert_eq!(rows.len(), made, "{rows:#?}");
    let rule_of = |i: usize| rows[i]["rule"].as_str().unwrap_or("-").to_owned();
    assert_eq!(rows[1]["decision"], "allowed");
    assert_eq!(rows[1]["outcome"], "ok");
    assert_eq!(rows[1]["target"], "echo");
    assert_eq!(rows[1]["upstream"], "fx");
    assert_eq!(rows[1]["era"], "modern");
    assert_eq!(rows[1]["client"], "raw-test/1");
    assert_eq!(rule_of(2), "validation.arguments");
    assert_eq!(rule_of(3), "catalogue.unknown_tool");
    assert_eq!(rule_of(5), "rate.per_tool");
    assert_eq!(rows[6]["outcome"], "timeout");
    assert_eq!(rows[7]["era"], "legacy");
    assert_eq!(rows[7]["client"], "raw/1");
    assert_eq!(rule_of(8), "catalogue.unknown_method");
    assert_eq!(rule_of(made - 1), "rate.per_key");
    for row in &rows {
        assert_eq!(row["tenant"], "default");
        assert!(row["principal"].as_str().unwrap().starts_with("key_"));
    }

    let (intact, report) = verify(&warden);
    let records = warden.audit_rows().len();
    assert!(
        intact && report.contains(&format!("{records} records")),
        "{report}"
    );
    // Behind Warden's back, in the store itself: an edited record, then a removed one.
    warden.alter_audit("UPDATE audit SET decision = decision || 'x' WHERE id = 3");
    let (intact, report) = verify(&warden);
    assert!(
        !intact && report.contains("record 3") && report.contains("was changed"),
        "{report}"
    );
    warden.alter_audit(
        "UPDATE audit SET decision = substr(decision, 1, length(decision) - 1) WHERE id = 3",
    );
    assert!(verify(&warden).0);
    warden.alter_audit("DELETE FROM audit WHERE id = 5");
    let (intact, report) = verify(&warden);
    assert!(
        !intact && report.contains("missing before record 6"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_the_record_of_every_answer_it_sent() {
    let mut warden = Warden::start_config(
        &(fixture_upstream("fx", "")
            + "\n[rate]\nper_key_rpm = 1000000\nper_ip_rpm = 1000000\n[audit]\nflush_ms = 100\n"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, stop, answered) = (Http::new(&warden), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .unwrap();
                let http = Http { client, ..http };
                while !stop.load(Ordering::Relaxed) {
                    let reply = http
                        .modern(
                            "tools/call",
                            Some("echo"),
                            json!({"name": "echo", "arguments": {"text": "load"}}),
                        )
                        .await;
                    if reply.status == 200 {
                        answered.lock().unwrap().push(Instant::now());
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    warden.kill_hard();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    // A record is committed within the flush delay and one write of its answer; give
    // that 300 ms.
    let settled = killed_at - Duration::from_millis(300);
    let answered = answered.lock().unwrap();
    let owed = answered.iter().filter(|at| **at < settled).count();
    let recorded = warden
        .audit_rows()
        .iter()
        .filter(|row| row["outcome"] == "ok")
        .count();
    println!(
        "answered {}, owed {owed}, recorded {recorded}",
        answered.len()
    );
    assert!(owed > 50, "too little load to tell: {owed}");
    assert!(recorded >= owed, "{recorded} records for {owed} answers");
    assert!(verify(&warden).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_never_reach_anything_warden_writes() {
    let canaries = [
        "sk-canaryHEADERabcdefghijkl0001",
        "ghp_canaryQUERYabcdefghijklmn0002",
        "xoxb-canary-ARGNAME-0003abcd",
        "AKIACANARYARGVALUE04",
        "sk-canaryURIabcdefghijklmnop0005",
        "ghp_canarySTDERRabcdefghijklm0006",
        "wdn_canaryBEARERabcdefghijklmnopqrstu0007",
        "sk-canaryREFUSEDabcdefghijklmn0008",
    ];
    let mut warden =
        Warden::start_config(&(fixture_upstream("fx", "") + "\n[audit]\nargs_hash = true\n"));
    let http = Http::new(&warden);
    let [
        header,
        query,
        arg_name,
        arg_value,
        uri,
        stderr,
        bearer,
        refused,
    ] = canaries;
    // Headers no one asked for.
    let reply = http
        .post_modern(
            &[
                ("x-api-key", header),
                ("cookie", &format!("session={header}")),
            ],
            "tools/list",
            None,
            &support::raw::modern_body("tools/list", json!({})),
        )
        .await;
    assert_eq!(reply.status, 200);
    // The query string (refused) and a wrong Bearer credential (refused).
    let in_query = Http {
        url: format!("{}?access_token={query}", warden.url),
        ..Http::new(&warden)
    };
    assert_eq!(
        in_query.modern("tools/list", None, json!({})).await.status,
        400
    );
    assert_eq!(
        Http {
            key: bearer.to_owned(),
            ..Http::new(&warden)
        }
        .modern("tools/list", None, json!({}))
        .await
        .status,
        401
    );
    // Arguments: under a secret-looking name (refused), and in an innocent one,
    // allowed and echoed back in the result.
    let secret_named = http
        .call_tool("echo", json!({"text": "x", "client_secret": arg_name}))
        .await;
    assert_eq!(secret_named.status, 400);
    let echoed = http.call_tool("echo", json!({"text": arg_value})).await;
    assert!(
        echoed.text.contains(arg_value),
        "the result is the client's to see"
    );
    // A resource URI (refused as unknown) and an argument of a refused call.
    let read = http
        .modern(
            "resources/read",
            Some(&format!("fixture://fx/{uri}")),
            json!({"uri": format!("fixture://fx/{uri}")}),
        )
        .await;
    assert_eq!(read.status, 400, "{}", read.text);
    let too_many = http
        .call_tool("echo", json!({"text": refused, "more": 1}))
        .await;
    assert_eq!(too_many.status, 400);
    // What the upstream writes to stderr.
    assert_eq!(
        http.call_tool(
            "complain",
            json!({"text": format!("failed with token {stderr}")})
        )
        .await
        .status,
        200
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(warden.terminate().success());
    // Everything it wrote has reached the test once its last line has.
    assert!(warden.logged("stopped"));
    for canary in canaries {
        assert!(!warden.has_written(canary), "{canary} was written");
    }
    // Redaction kept what is not secret: the stderr line and the audit rows are there.
    assert!(
        warden.logged("failed with token [REDACTED]"),
        "{}",
        warden.stderr()
    );
    assert!(warden.audit_rows().len() >= 6);
}

/// Every shape rule of the redaction, with a canary each, planted where an upstream
/// writes (its stderr, a private key over several lines included) and where a client
/// writes (a tool name the audit trail records): none reaches the log or `audit.db`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redaction_rule_holds_over_logs_and_audit() {
    let canaries = [
        (
            "a Warden key",
            "wdn_canaryKEYabcdefghijklmnopqrstuvwxyz0123456",
            "",
        ),
        (
            "a JWT",
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnY2FuYXJ5",
            "",
        ),
        ("an OpenAI key", "sk-canaryOPENAIabcdef0123456789", ""),
        (
            "a key glued to a word",
            "sk-proj-CanaryGLUED0123456789abc",
            "mykey",
        ),
        ("a GitHub token", "ghp_canaryGITHUBabcdefghijklmn0001", ""),
        (
            "a GitHub PAT",
            "github_pat_11CANARYPAT0123456789_abcdef",
            "",
        ),
        ("a Slack token", "xoxb-canary-SLACK-0003abcd", ""),
        ("an AWS key id", "AKIACANARYAWS0000012", ""),
        ("an auth header", "canaryBEARERtoken0123", "Bearer "),
        ("a Stripe key", "sk_live_canarySTRIPE0123456789ab", ""),
        (
            "a Google API key",
            "AIzaSyCanaryGOOGLEabcdefghijklmn0123456",
            "",
        ),
        ("a URL password", "canaryURLpass", "postgres://app:"),
        ("a named secret", "canaryNAMED01", "password="),
        ("a secret in prose", "canaryPROSE02", "the password is "),
    ];
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIcanaryPEMline1\nMIIcanaryPEMline2\n-----END PRIVATE KEY-----";
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let http = Http::new(&warden);
    // Tool names go in a legacy session's body (no header could carry a newline).
    let session = http.initialize().await;
    let unknown_tool = |name: &str| json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}});
    for (what, canary, before) in canaries {
        let planted = if before == "postgres://app:" {
            format!("{before}{canary}@db:5432/x")
        } else {
            format!("{before}{canary}")
        };
        let reply = http
            .call_tool(
                "complain",
                json!({"text": format!("{what}: {planted} end")}),
            )
            .await;
        // A Warden key in a body is refused before it reaches the upstream.
        let expected = if canary.starts_with("wdn_") { 400 } else { 200 };
        assert_eq!(reply.status, expected, "{what}: {}", reply.text);
        let reply = http
            .legacy(&session, &unknown_tool(&format!("t {planted}")))
            .await;
        assert!(reply.text.contains("-32602"), "{what}: {}", reply.text);
    }
    let reply = http
        .call_tool("complain", json!({"text": format!("loaded\n{pem}\nready")}))
        .await;
    assert_eq!(reply.status, 200);
    let reply = http
        .legacy(&session, &unknown_tool(&format!("t {pem}")))
        .await;
    assert!(reply.text.contains("-32602"), "{}", reply.text);
    assert!(warden.logged("ready"));
    warden.audited(canaries.len() + 1, |row| {
        row["target"].as_str().is_some_and(|t| t.starts_with("t "))
    });
    for (what, canary, _) in canaries {
        assert!(!warden.has_written(canary), "{what} ({canary}) was written");
        assert!(
            canary.starts_with("wdn_") || warden.logged(&format!("{what}: ")),
            "{what} not logged at all"
        );
    }
    for line in ["MIIcanaryPEMline1", "MIIcanaryPEMline2"] {
        assert!(!warden.has_written(line), "{line} was written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_admin_listener_only() {
    let warden = Warden::start_config(&(fixture_upstream("fx", "") + "\n[tools.pid]\nrpm = 1\n"));
    let http = Http::new(&warden);
    assert_eq!(
        http.call_tool("echo", json!({"text": "a"})).await.status,
        200
    );
    assert_eq!(http.call_tool("echo", json!({"nope": 1})).await.status, 400);
    assert_eq!(http.call_tool("pid", json!({})).await.status, 200);
    assert_eq!(http.call_tool("pid", json!({})).await.status, 429);
    let canary = "sk-canaryMETRICSabcdefghijkl0009";
    assert_eq!(http.call_tool(canary, json!({})).await.status, 400);

    let admin = warden.admin_url();
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Parse every sample line: name{labels} value.
    let samples: Vec<(String, f64)> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect();
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value(r#"warden_requests_total{method="tools/call",decision="allowed",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        value(r#"warden_requests_total{method="tools/call",decision="refused",outcome="refused"}"#),
        3.0
    );
    assert_eq!(
        value(r#"warden_rate_limit_refusals_total{layer="rate.per_tool"}"#),
        1.0
    );
    assert_eq!(value(r#"warden_http_responses_total{status="429"}"#), 1.0);
    assert_eq!(value(r#"warden_upstream_up{upstream="fx"}"#), 1.0);
    assert_eq!(
        value(r#"warden_upstream_restarts_total{upstream="fx"}"#),
        0.0
    );
    assert!(value("warden_audit_queue_depth") >= 0.0);
    assert_eq!(
        value(r#"warden_upstream_call_seconds_count{upstream="fx"}"#),
        2.0
    );
    assert!(!text.contains(canary) && !text.contains(&warden.admin_key));

    assert_eq!(
        reqwest::get(format!("{admin}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{admin}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // Not on the public port.
    let public = warden.url.trim_end_matches("/mcp");
    for path in ["/metrics", "/healthz"] {
        let reply = reqwest::get(format!("{public}{path}")).await.unwrap();
        assert_eq!(reply.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_request_fields() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let warden = Warden::start_with(
        dir.path(),
        &["--data-dir", data.to_str().unwrap(), "--log-format", "json"],
        &[],
    );
    let http = Http::new(&warden);
    assert_eq!(http.call_tool("no_such_tool", json!({})).await.status, 400);
    assert!(warden.logged("\"mcp.method\":\"tools/call\""));
    let lines: Vec<Value> = warden
        .stderr()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let request = lines
        .iter()
        .find(|line| line["fields"]["mcp.method"] == "tools/call")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(request["level"], "INFO");
    assert_eq!(request["fields"]["http.status"], 400);
    assert_eq!(request["fields"]["rule"], "catalogue.unknown_tool");
    assert_eq!(request["fields"]["tenant"], "default");
    assert!(
        request["fields"]["key_id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
}
