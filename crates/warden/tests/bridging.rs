//! What passes between client and upstream in the middle of a call, across the eras:
//! questions a legacy upstream asks a modern client (as `InputRequiredResult`) and a
//! legacy client (on the call's stream), a modern upstream's `input_required` answered by
//! a legacy client, progress from client to upstream, cancellation both ways, list
//! changes on a GET stream, and paging across upstreams. The upstream is the Python stdio fixture;
//! the modern upstream is a second Warden.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::raw::{Events, Http, Reply};
use support::{ERAS, Warden, connect, fixture_upstream};

const ELICITATION: fn() -> Value = || json!({ "elicitation": {} });

fn text(reply: &Reply) -> String {
    let body = reply.json();
    body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {body}"))
        .to_owned()
}

fn error_code(reply: &Reply) -> i64 {
    reply.json()["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {}", reply.text))
}

async fn ask_modern(http: &Http, arguments: Value, extra: Value, capabilities: Value) -> Reply {
    let mut params = json!({ "name": "ask", "arguments": arguments });
    if let (Some(params), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
        params.extend(extra.clone());
    }
    http.modern_as("tools/call", Some("ask"), params, capabilities)
        .await
}

/// The `requestState` of an `InputRequiredResult` that asks one elicitation question.
fn asked_once(reply: &Reply, question: &str) -> String {
    let result = &reply.json()["result"];
    assert_eq!(result["resultType"], "input_required", "{}", reply.text);
    let asked = result["inputRequests"].as_object().unwrap();
    assert_eq!(asked.len(), 1, "{result}");
    let (_, request) = asked.iter().next().unwrap();
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(request["params"]["message"], question);
    assert!(
        request["params"].get("_meta").is_none(),
        "legacy-only fields stay behind"
    );
    result["requestState"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_legacy_upstream_asks_a_modern_client_with_input_required() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let http = Http::new(&warden);
    let question = json!({ "question": "Your name?" });

    let first = ask_modern(&http, question.clone(), json!({}), ELICITATION()).await;
    let state = asked_once(&first, "Your name?");
    let key = support::raw::first_question(&first.json()["result"]["inputRequests"]);
    let answer = json!({ "action": "accept", "content": { "name": "Ada" } });
    let retry = json!({ "requestState": state, "inputResponses": { key.clone(): answer } });
    let done = ask_modern(&http, question.clone(), retry.clone(), ELICITATION()).await;
    assert_eq!(text(&done), "accept:Ada:progress=0");
    assert_eq!(done.json()["result"]["resultType"], "complete");

    // A handle is good for one retry.
    let replay = ask_modern(&http, question.clone(), retry, ELICITATION()).await;
    assert_eq!(error_code(&replay), -32602, "{}", replay.text);

    // Only for the same arguments: a retry with others ends the call.
    let state = asked_once(
        &ask_modern(&http, question.clone(), json!({}), ELICITATION()).await,
        "Your name?",
    );
    let other = ask_modern(
        &http,
        json!({ "question": "Something else?" }),
        json!({ "requestState": state, "inputResponses": { key.clone(): { "action": "decline" } } }),
        ELICITATION(),
    )
    .await;
    assert_eq!(error_code(&other), -32602, "{}", other.text);

    // Only for the key that started the call.
    let state = asked_once(
        &ask_modern(&http, question.clone(), json!({}), ELICITATION()).await,
        "Your name?",
    );
    let (_, other_key) = warden.add_key("default", "other", "write");
    let stranger = Http {
        key: other_key,
        ..Http::new(&warden)
    };
    let stolen = ask_modern(
        &stranger,
        question.clone(),
        json!({ "requestState": state, "inputResponses": { key.clone(): { "action": "accept", "content": { "name": "Mallory" } } } }),
        ELICITATION(),
    )
    .await;
    assert_eq!(error_code(&stolen), -32602, "{}", stolen.text);

    // A handle Warden never issued.
    let forged = ask_modern(
        &http,
        question.clone(),
        json!({ "requestState": "warden1.AAAA", "inputResponses": {} }),
        ELICITATION(),
    )
    .await;
    assert_eq!(error_code(&forged), -32602, "{}", forged.text);

    // A client that cannot answer is never asked: the upstream hears a refusal.
    let unable = ask_modern(&http, question, json!({}), json!({})).await;
    assert_eq!(text(&unable), "error:-32601");
}

/// A legacy session's call of `ask`, answered on its stream with `name` after one
/// progress notification; returns the call's final message.
async fn ask_legacy(http: &Http, session: &str, name: &str) -> Value {
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "ask", "arguments": {"question": "Who?"}}});
    let mut events: Events = http.legacy_streaming(session, &call).await;
    let request = events.next().await;
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert_eq!(request["params"]["message"], "Who?");
    let id = request["id"].clone();
    let token = request["params"]["_meta"]["progressToken"].clone();
    if !token.is_null() {
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1}});
        assert_eq!(http.legacy(session, &progress).await.status, 202);
    }
    let answer = json!({"jsonrpc": "2.0", "id": id,
        "result": {"action": "accept", "content": {"name": name}}});
    assert_eq!(http.legacy(session, &answer).await.status, 202);
    let done = events.next().await;
    assert_eq!(done["id"], 5, "{done}");
    done
}

#[tokio::test]
async fn a_legacy_client_answers_on_the_stream_and_its_progress_reaches_the_upstream() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let http = Http::new(&warden);
    let session = http.initialize_with(ELICITATION()).await;
    let done = ask_legacy(&http, &session, "Bo").await;
    assert_eq!(
        done["result"]["content"][0]["text"], "accept:Bo:progress=1",
        "{done}"
    );
}

#[tokio::test]
async fn a_question_the_upstream_withdraws_is_withdrawn_from_the_client_under_its_id() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let http = Http::new(&warden);
    let session = http.initialize_with(ELICITATION()).await;
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "withdraw", "arguments": {}}});
    let mut events = http.legacy_streaming(&session, &call).await;
    let asked = events.next().await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    let withdrawn = events.next().await;
    assert_eq!(
        withdrawn["method"], "notifications/cancelled",
        "{withdrawn}"
    );
    assert_eq!(withdrawn["params"]["requestId"], asked["id"], "{withdrawn}");
    let done = events.next().await;
    assert_eq!(done["result"]["content"][0]["text"], "withdrawn", "{done}");
}

#[tokio::test]
async fn a_modern_upstream_asking_for_input_is_answered_by_a_legacy_client() {
    // inner: fronts the legacy fixture and speaks modern to whoever calls it.
    let inner = Warden::start_config(&fixture_upstream("fx", ""));
    let outer = Warden::start_config(&format!(
        "[[upstream]]\nname = \"inner\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {}\" }}\n{}",
        inner.url,
        inner.admin_key,
        support::EGRESS_LOOPBACK
    ));
    let http = Http::new(&outer);
    let session = http.initialize_with(ELICITATION()).await;
    let done = ask_legacy(&http, &session, "Cy").await;
    // The progress token stays with the legacy hop: the outer Warden asks the question
    // itself, from the inner one's `inputRequests`.
    assert_eq!(
        done["result"]["content"][0]["text"], "accept:Cy:progress=0",
        "{done}"
    );
    assert!(done["result"].get("resultType").is_none(), "{done}");

    // A client without the capability is not asked: the inner upstream hears so.
    let unable = http.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
        "params": {"name": "ask", "arguments": {"question": "Who?"}}});
    let reply = http.legacy(&unable, &call).await;
    assert_eq!(text(&reply), "error:-32601");

    // One that has it but takes no stream on this call gets a clear error, not a
    // half-done result.
    let reply = http
        .post_json(
            &[
                ("accept", "application/json"),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            &call,
        )
        .await;
    assert_eq!(error_code(&reply), -32021, "{}", reply.text);
}

#[tokio::test]
async fn cancellation_reaches_the_upstream_in_both_eras() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let http = Http::new(&warden);
    let sleep = json!({"name": "sleep", "arguments": {"ms": 1500}});

    // Legacy: the client says `notifications/cancelled`.
    let session = http.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": sleep});
    let running = {
        let http = Http::new(&warden);
        let session = session.clone();
        tokio::spawn(async move { http.legacy(&session, &call).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 9, "reason": "changed my mind"}});
    assert_eq!(http.legacy(&session, &cancel).await.status, 202);
    let cancelled = running.await.unwrap();
    assert_eq!(error_code(&cancelled), -32004, "{}", cancelled.text);

    // Modern: the client goes away.
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        http.modern("tools/call", Some("sleep"), sleep),
    )
    .await;
    assert!(gone.is_err(), "the call should still have been running");

    // Warden notices the client is gone when its connection closes: ask until the
    // upstream has heard both (or give up after a few seconds).
    let mut ids: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let seen = http
            .modern(
                "tools/call",
                Some("cancelled"),
                json!({"name": "cancelled", "arguments": {}}),
            )
            .await;
        ids = serde_json::from_str(&text(&seen)).unwrap();
        if ids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids.len(), 2, "the upstream heard {ids:?}");
}

#[tokio::test]
async fn list_changes_reach_a_legacy_clients_get_stream() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let http = Http::new(&warden);
    let session = http.initialize().await;
    let mut stream = http.listen(&session).await;
    let grow = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "grow", "arguments": {}}});
    assert_eq!(
        http.legacy(&session, &grow).await.json()["result"]["content"][0]["text"],
        "grown"
    );
    let notice = stream.next().await;
    assert_eq!(notice["method"], "notifications/tools/list_changed");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let tools = http.legacy(&session, &list).await.json();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"grown"), "{names:?}");
}

#[tokio::test]
async fn lists_page_across_upstreams_that_page_themselves() {
    let config = [
        fixture_upstream("fx", "env = { FIXTURE_NAME = \"fx\" }"),
        fixture_upstream("fy", "env = { FIXTURE_NAME = \"fy\" }"),
    ]
    .concat();
    let warden = Warden::start_config(&config);
    let http = Http::new(&warden);
    let mut uris = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(cursor) => json!({ "cursor": cursor }),
            None => json!({}),
        };
        let page = http.modern("resources/list", None, params).await.json();
        pages += 1;
        for resource in page["result"]["resources"].as_array().unwrap() {
            uris.push(resource["uri"].as_str().unwrap().to_owned());
        }
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    let expected: Vec<String> = ["fx", "fy"]
        .iter()
        .flat_map(|name| (1..=3).map(move |i| format!("fixture://{name}/r{i}")))
        .collect();
    assert_eq!(uris, expected);
    assert!(pages >= 4, "each upstream pages twice: {pages} pages");

    // Each resource is read from the upstream that listed it, in both eras.
    for era in ERAS {
        let client = connect(&warden.url, &warden.admin_key, era).await.unwrap();
        for uri in &expected {
            let read = client
                .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
                .await
                .unwrap();
            let contents = serde_json::to_value(&read.contents).unwrap();
            let (name, item) = uri["fixture://".len()..].split_once('/').unwrap();
            assert_eq!(contents[0]["text"], format!("{name} {item}"), "{era:?}");
        }
        client.cancel().await.unwrap();
    }
}
