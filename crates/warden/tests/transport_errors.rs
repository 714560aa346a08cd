//! Malformed, oversized and wrong-shape requests over a real socket: each gets the status
//! the spec names and a JSON-RPC error body without internals, and the server keeps
//! serving afterwards.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failed unwrap is a failed test

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::Warden;
use support::raw::{Http, MODERN, Reply, meta, modern_body};

fn assert_error(reply: &Reply, status: u16, code: i64) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["jsonrpc"], "2.0", "{}", reply.text);
    assert_eq!(body["error"]["code"], code, "{}", reply.text);
    let message = body["error"]["message"].as_str().unwrap();
    for internal in ["panicked", "rusqlite", "src/", ".rs:", "Sqlite"] {
        assert!(!message.contains(internal), "internals in {message:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_only_as_bearer() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    let body = modern_body("tools/list", json!({})).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
    ];
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x:{}", warden.admin_key))
    );
    let bare = warden.admin_key.clone();
    let wrong = "Bearer wdn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned();
    // A credential that is not a Bearer token counts as none; a Bearer token that is
    // refused gets `error="invalid_token"` (RFC 6750 §3.1). Each challenge points at
    // the protected-resource metadata (RFC 9728 §5.1), on the Host the client used.
    let metadata = format!(
        "resource_metadata=\"{}\"",
        warden
            .url
            .replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    );
    let plain = format!("Bearer {metadata}");
    let invalid = format!("Bearer {metadata}, error=\"invalid_token\"");
    for (auth, challenge) in [
        (None, plain.as_str()),
        (Some(basic.as_str()), plain.as_str()),
        (Some(bare.as_str()), plain.as_str()),
        (Some(wrong.as_str()), invalid.as_str()),
        (Some("Bearer "), plain.as_str()),
    ] {
        let mut all = headers.to_vec();
        if let Some(auth) = auth {
            all.push(("authorization", auth));
        }
        let reply = http
            .send(reqwest::Method::POST, &all, Some(body.clone().into_bytes()))
            .await;
        assert_error(&reply, 401, -32001);
        assert_eq!(reply.header("www-authenticate"), Some(challenge));
        assert!(!reply.text.contains(&warden.admin_key));
    }
    // GET and DELETE are behind the same door.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let reply = http.send(method, &[("mcp-session-id", "x")], None).await;
        assert_eq!(reply.status, 401);
    }
    http.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_wrong_shape_bodies() {
    let warden = Warden::start();
    let http = Http::new(&warden);

    assert_error(
        &http.post(&[], "{\"jsonrpc\": \"2.0\", ").await,
        400,
        -32700,
    );
    assert_error(&http.post(&[], "\u{0}\u{1}garbage").await, 400, -32700);
    assert_error(&http.post(&[], "").await, 400, -32700);
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}]);
    assert_error(&http.post_json(&[], &batch).await, 400, -32600);
    assert_error(&http.post_json(&[], &json!("ping")).await, 400, -32600);
    assert_error(
        &http
            .post_json(&[], &json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}))
            .await,
        400,
        -32600,
    );
    assert_error(
        &http
            .post_json(&[], &json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}))
            .await,
        400,
        -32600,
    );
    assert_error(
        &http
            .post_json(&[], &json!({"jsonrpc": "2.0", "id": 1, "method": ["ping"]}))
            .await,
        400,
        -32600,
    );
    let reply = http
        .post_json(
            &[],
            &json!({"jsonrpc": "2.0", "id": "abc", "method": "tools/list", "params": [1, 2]}),
        )
        .await;
    assert_error(&reply, 400, -32602);
    assert_eq!(reply.json()["id"], "abc", "the id is answered as sent");

    assert_eq!(
        http.post(&[("content-type", "text/plain")], "{}")
            .await
            .status,
        415
    );
    assert_eq!(
        http.post(
            &[("content-type", "application/x-www-form-urlencoded")],
            "a=b"
        )
        .await
        .status,
        415
    );
    let no_accept = http
        .post(
            &[("accept", "text/html")],
            modern_body("tools/list", json!({})).to_string(),
        )
        .await;
    assert_error(&no_accept, 406, -32000);
    http.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_unread() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    // Just over the 1 MiB default, as one long string argument.
    let huge = "x".repeat(1024 * 1024);
    let body = modern_body(
        "tools/call",
        json!({"name": "create_note", "arguments": {"title": "t", "body": huge}}),
    );
    let reply = http
        .post_json(
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "create_note"),
            ],
            &body,
        )
        .await;
    assert_error(&reply, 413, -32000);
    // The same without a Content-Length: the cap holds while streaming.
    let streamed = http.post_streamed(&vec![b' '; 40 * 64 * 1024]).await;
    // The server may answer 413 or drop the upload once the cap is passed; either way it
    // never reads the rest and stays up.
    if let Some(status) = streamed {
        assert_eq!(status, 413);
    }
    http.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_requests_must_describe_themselves() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    let list = modern_body("tools/list", json!({}));

    // Routing headers must be present and agree with the body.
    assert_error(
        &http
            .post_json(&[("mcp-protocol-version", MODERN)], &list)
            .await,
        400,
        -32020,
    );
    assert_error(
        &http
            .post_json(
                &[
                    ("mcp-protocol-version", MODERN),
                    ("mcp-method", "tools/call"),
                ],
                &list,
            )
            .await,
        400,
        -32020,
    );
    assert_error(
        &http.post_json(&[("mcp-method", "tools/list")], &list).await,
        400,
        -32020,
    );
    let call = |name: &str| json!({"name": name, "arguments": {"query": "x"}});
    assert_error(
        &http.modern("tools/call", None, call("search_notes")).await,
        400,
        -32020,
    );
    assert_error(
        &http
            .modern("tools/call", Some("delete_note"), call("search_notes"))
            .await,
        400,
        -32020,
    );
    assert_eq!(
        http.modern("tools/call", Some("search_notes"), call("search_notes"))
            .await
            .status,
        200
    );
    let encoded = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("search_notes")
    );
    assert_eq!(
        http.modern("tools/call", Some(&encoded), call("search_notes"))
            .await
            .status,
        200
    );
    assert_error(
        &http
            .modern(
                "resources/read",
                Some("notes://other"),
                json!({"uri": "notes://n_0000000000000000"}),
            )
            .await,
        400,
        -32020,
    );

    // The header and _meta must name the same, supported version.
    let mut other = list.clone();
    other["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    assert_error(
        &http
            .post_json(
                &[
                    ("mcp-protocol-version", MODERN),
                    ("mcp-method", "tools/list"),
                ],
                &other,
            )
            .await,
        400,
        -32020,
    );
    let unsupported = http
        .post_json(
            &[
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "tools/list"),
            ],
            &other,
        )
        .await;
    assert_error(&unsupported, 400, -32022);
    let data = &unsupported.json()["error"]["data"];
    assert_eq!(data["requested"], "2099-01-01");
    assert!(
        data["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN))
    );

    // _meta must carry the client capabilities.
    let mut bare = list.clone();
    bare["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    assert_error(
        &http
            .post_json(
                &[
                    ("mcp-protocol-version", MODERN),
                    ("mcp-method", "tools/list"),
                ],
                &bare,
            )
            .await,
        400,
        -32602,
    );

    // Unknown methods are 404 in this era; notifications are accepted; responses are not.
    assert_error(
        &http
            .modern("tools/destroy_everything", None, json!({}))
            .await,
        404,
        -32601,
    );
    assert_error(&http.modern("ping", None, json!({})).await, 404, -32601);
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": meta(), "requestId": 1}});
    let accepted = http
        .post_json(
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "notifications/cancelled"),
            ],
            &notification,
        )
        .await;
    assert_eq!((accepted.status, accepted.text.as_str()), (202, ""));
    let response = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
    assert_error(
        &http
            .post_json(&[("mcp-protocol-version", MODERN)], &response)
            .await,
        400,
        -32600,
    );

    // Results say what they are, and no session is minted.
    let reply = http.modern("tools/list", None, json!({})).await;
    assert_eq!(reply.json()["result"]["resultType"], "complete");
    assert_eq!(reply.json()["result"]["cacheScope"], "private");
    assert!(reply.header("mcp-session-id").is_none());
    let discover = http.modern("server/discover", None, json!({})).await;
    assert_eq!(
        discover.json()["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "warden"
    );
    http.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_checked_against_the_catalogue_and_schema() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    let session = http.initialize().await;
    let call = |name: &str, arguments: Value| json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
    // Secret-like, but not a Warden key: a key is refused before validation (front_door.rs).
    let canary = "sk-CANARYcanaryCANARYcanaryCANARYcanaryCANA";
    let cases = [
        (call("delete_all_notes", json!({})), "Unknown tool"),
        (call("search_note", json!({"query": "x"})), "Unknown tool"),
        (
            call(
                "search_notes",
                json!({"query": "x", "openai_secret": canary}),
            ),
            "unexpected property \"openai_secret\"",
        ),
        (
            call("search_notes", json!({"query": 5})),
            "at /query: wrong type (expected string)",
        ),
        (
            call("search_notes", json!({"query": "x", "limit": "5"})),
            "at /limit: wrong type (expected integer)",
        ),
        (
            call("search_notes", json!({"query": "x", "limit": 1.5})),
            "at /limit: wrong type (expected integer)",
        ),
        (
            call("search_notes", json!({"query": "x", "limit": 5000})),
            "at /limit: number above the maximum",
        ),
        (
            call("search_notes", json!({"query": ["x"]})),
            "at /query: wrong type (expected string)",
        ),
        (
            call("search_notes", json!({})),
            "missing required property \"query\"",
        ),
        (
            call("get_note", json!({"id": canary})),
            "at /id: string does not match the required pattern",
        ),
        (
            call(
                "create_note",
                json!({"title": "t", "body": "b", "tags": ["ok", null]}),
            ),
            "at /tags/1: wrong type",
        ),
        (
            call(
                "create_note",
                json!({"title": "t", "body": "b", "tags": "one"}),
            ),
            "at /tags: wrong type (expected array)",
        ),
        (
            call("create_note", json!({"title": "", "body": "b"})),
            "at /title: string shorter than 1 characters",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search_notes", "arguments": "query=x"}}),
            "params.arguments must be an object",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {}}}),
            "params.name must be a string",
        ),
    ];
    for (body, expected) in cases {
        let reply = http.legacy(&session, &body).await;
        assert_error(&reply, 200, -32602);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(expected), "{body}: {message}");
        assert!(
            !reply.text.contains(canary),
            "the offending value is never echoed: {}",
            reply.text
        );
    }
    // The same refusal in the modern era carries HTTP 400.
    let reply = http
        .modern(
            "tools/call",
            Some("nope"),
            json!({"name": "nope", "arguments": {}}),
        )
        .await;
    assert_error(&reply, 400, -32602);
    // Nothing was created by any of those calls.
    let listed = http.legacy(&session, &call("list_notes", json!({}))).await;
    assert_eq!(
        listed.json()["result"]["structuredContent"]["notes"],
        json!([])
    );
    http.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sessions_follow_the_spec() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    // No session: 400; a made-up session: 404.
    assert_error(&http.post_json(&[], &list).await, 400, -32000);
    assert_error(
        &http
            .post_json(&[("mcp-session-id", "made-up")], &list)
            .await,
        404,
        -32000,
    );

    let session = http.initialize().await;
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)) && session.len() >= 32);
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = http.legacy(&session, &initialized).await;
    assert_eq!((reply.status, reply.text.as_str()), (202, ""));
    assert_eq!(http.legacy(&session, &list).await.status, 200);
    let ping = http
        .legacy(
            &session,
            &json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}),
        )
        .await;
    assert_eq!(
        ping.json(),
        json!({"jsonrpc": "2.0", "id": "p", "result": {}})
    );

    // Method errors travel in a 200 in this era.
    assert_error(
        &http
            .legacy(
                &session,
                &json!({"jsonrpc": "2.0", "id": 2, "method": "nope/nope"}),
            )
            .await,
        200,
        -32601,
    );
    let missing = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "notes://n_0000000000000000"}});
    assert_error(&http.legacy(&session, &missing).await, 200, -32002);

    // A wrong protocol version header is refused.
    let wrong = http
        .post_json(
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2019-01-01"),
            ],
            &list,
        )
        .await;
    assert_error(&wrong, 400, -32022);

    // An event-stream-only client gets its answer as one SSE event.
    let sse = http
        .post_json(
            &[
                ("mcp-session-id", &session),
                ("accept", "text/event-stream"),
            ],
            &list,
        )
        .await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let data = sse
        .text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    assert!(serde_json::from_str::<Value>(data).unwrap()["result"]["tools"].is_array());

    // Another key cannot use this session.
    let (_, other_key) = warden.add_key("default", "other", "write");
    let other = Http {
        key: other_key,
        ..Http::new(&warden)
    };
    assert_error(&other.legacy(&session, &list).await, 404, -32000);

    // GET needs a session and an event-stream Accept; only one stream per session.
    let auth = format!("Bearer {}", warden.admin_key);
    let get = |headers: Vec<(&'static str, String)>| {
        let mut request = http.client.get(&http.url).header("authorization", &auth);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    assert_eq!(
        get(vec![("accept", "text/event-stream".into())])
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        get(vec![
            ("accept", "application/json".into()),
            ("mcp-session-id", session.clone())
        ])
        .await
        .unwrap()
        .status(),
        406
    );
    let open_stream = || {
        get(vec![
            ("accept", "text/event-stream".into()),
            ("mcp-session-id", session.clone()),
        ])
    };
    let stream = open_stream().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_eq!(open_stream().await.unwrap().status(), 409);

    // DELETE ends the session (and its stream); the id then answers 404 everywhere.
    let delete_headers = [
        ("authorization", auth.as_str()),
        ("mcp-session-id", session.as_str()),
    ];
    let delete = || http.send(reqwest::Method::DELETE, &delete_headers, None);
    assert_eq!(delete().await.status, 204);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(5), stream.text()).await;
    assert!(rest.is_ok(), "the open stream ends with its session");
    assert_error(&http.legacy(&session, &list).await, 404, -32000);
    assert_eq!(open_stream().await.unwrap().status(), 404);
    assert_eq!(delete().await.status, 404);
    http.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_and_methods_answer_plainly() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    let base = http.url.trim_end_matches("/mcp").to_owned();
    let reply = http
        .client
        .get(format!("{base}/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let reply = http
        .client
        .put(&http.url)
        .bearer_auth(&http.key)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 405);
    http.assert_still_serving().await;
}
