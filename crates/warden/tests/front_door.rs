//! The front door over a real socket: Host/Origin guard, CORS answered before
//! authentication, credentials only in the `Authorization: Bearer` header, and
//! brute-force refusal.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::Warden;
use support::raw::{Http, Reply, modern_body};

const LOCAL_ORIGIN: &str = "http://localhost:6274";

fn list() -> serde_json::Value {
    modern_body("tools/list", json!({}))
}

fn preflight_headers<'a>(origin: &'a str, asked: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", asked),
    ]
}

async fn preflight(http: &Http, origin: &str) -> Reply {
    http.send(
        reqwest::Method::OPTIONS,
        &preflight_headers(origin, "authorization, content-type, mcp-param-region"),
        None,
    )
    .await
}

fn cors_headers(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

/// Nothing on a refusal tells a prober what runs here.
fn assert_no_banner(reply: &Reply) {
    for name in ["server", "x-powered-by", "via"] {
        assert!(
            reply.header(name).is_none(),
            "{name} header on {}",
            reply.status
        );
    }
}

#[tokio::test]
async fn preflight_needs_no_credentials_and_names_only_the_allowed_origin() {
    let warden = Warden::start();
    let http = Http::new(&warden);

    let ok = preflight(&http, LOCAL_ORIGIN).await;
    assert_eq!(ok.status, 204);
    assert!(ok.text.is_empty());
    assert_eq!(ok.header("access-control-allow-origin"), Some(LOCAL_ORIGIN));
    assert_eq!(ok.header("access-control-max-age"), Some("86400"));
    let allowed = ok.header("access-control-allow-headers").unwrap();
    for name in [
        "authorization",
        "content-type",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
        "mcp-param-region",
    ] {
        assert!(
            allowed.split(", ").any(|n| n == name),
            "{name} in {allowed}"
        );
    }
    let exposed = ok.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"));
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_no_banner(&ok);

    let bad = preflight(&http, "https://evil.example.com").await;
    assert_eq!(bad.status, 403);
    assert!(cors_headers(&bad).is_empty(), "{:?}", cors_headers(&bad));
    assert_no_banner(&bad);

    // An allowed origin can read the answers, refusals included.
    let unauthorized = http
        .send(reqwest::Method::POST, &[("origin", LOCAL_ORIGIN)], None)
        .await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        unauthorized.header("access-control-allow-origin"),
        Some(LOCAL_ORIGIN)
    );
    assert_no_banner(&unauthorized);
    let listed = http
        .post_modern(&[("origin", LOCAL_ORIGIN)], "tools/list", None, &list())
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some(LOCAL_ORIGIN)
    );
}

#[tokio::test]
async fn bad_origin_and_bad_host_are_refused_before_anything_else() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    for (name, value) in [
        ("origin", "https://evil.example.com"),
        ("host", "evil.example.com"),
    ] {
        let refused = http
            .post_modern(&[(name, value)], "tools/list", None, &list())
            .await;
        assert_eq!(refused.status, 403, "{name}: {}", refused.text);
        let body = refused.json();
        assert_eq!(body["jsonrpc"], "2.0");
        assert!(body["error"]["code"].is_i64());
        assert!(
            body.get("id").is_none_or(serde_json::Value::is_null),
            "{body}"
        );
        assert!(cors_headers(&refused).is_empty());
        assert_no_banner(&refused);
    }
}

#[tokio::test]
async fn configured_hosts_and_origins_replace_the_defaults() {
    let warden = Warden::start_config(
        "[server]\nallowed_hosts = [\"mcp.example.com\"]\nallowed_origins = [\"https://app.example.com\"]\n",
    );
    let http = Http::new(&warden);
    assert_eq!(
        preflight(&http, "https://app.example.com").await.status,
        204
    );
    // Configured origins are the only ones: even this machine's pages are refused.
    assert_eq!(preflight(&http, LOCAL_ORIGIN).await.status, 403);
    let named = http
        .post_modern(&[("host", "mcp.example.com")], "tools/list", None, &list())
        .await;
    assert_eq!(named.status, 200, "{}", named.text);
}

#[tokio::test]
async fn credentials_anywhere_but_the_header_are_refused_and_never_written() {
    let warden = Warden::start();
    // A real, valid key as the canary: refused all the same, and never recorded.
    let (_, canary) = warden.add_key("default", "canary", "write");
    let http = Http::new(&warden);
    let base = warden.url.clone();
    for query in [
        format!("api_key={canary}"),
        format!("token={canary}"),
        format!("access_token={canary}"),
        format!("q={canary}"),
        "key=anything".to_owned(),
    ] {
        let in_url = Http {
            url: format!("{base}?{query}"),
            ..Http::new(&warden)
        };
        let refused = in_url.modern("tools/list", None, json!({})).await;
        assert_eq!(refused.status, 400, "{}", refused.text);
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("Authorization"), "{message}");
        assert!(!refused.text.contains(&canary));
        // Even without a header, and on another path: the URL is looked at first.
        let keyless = Http {
            key: String::new(),
            url: format!("{base}/elsewhere?{query}"),
            ..Http::new(&warden)
        };
        assert_eq!(keyless.post_json(&[], &list()).await.status, 400);
    }

    // Each body is a valid call but for the planted key, so only the credential check
    // can refuse it.
    let plant: [fn(&mut serde_json::Value, &str); 3] = [
        |params, canary| params["api_key"] = json!(canary),
        |params, canary| params["_meta"]["authorization"] = json!(format!("Bearer {canary}")),
        |params, canary| params["arguments"]["query"] = json!(canary),
    ];
    for plant in plant {
        let mut body = modern_body(
            "tools/call",
            json!({ "name": "search_notes", "arguments": { "query": "x" } }),
        );
        plant(&mut body["params"], &canary);
        let refused = http
            .post_modern(&[], "tools/call", Some("search_notes"), &body)
            .await;
        assert_eq!(refused.status, 400, "{}", refused.text);
        assert_eq!(refused.json()["error"]["code"], -32602);
        let message = refused.json()["error"]["message"].to_string();
        assert!(message.contains("Authorization"), "{message}");
        assert_eq!(refused.json()["id"], 7);
        assert!(!refused.text.contains(&canary));
    }

    // Only the Bearer scheme.
    let basic = http
        .send(
            reqwest::Method::POST,
            &[("authorization", &format!("Basic {canary}"))],
            Some(list().to_string().into_bytes()),
        )
        .await;
    assert_eq!(basic.status, 401);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !warden.has_written(&canary),
        "the canary key was written somewhere"
    );
}

#[tokio::test]
async fn guessing_keys_gets_an_address_refused_before_any_lookup() {
    let warden =
        Warden::start_config("[auth]\nmax_failures_per_ip = 3\nfailure_window_secs = 60\n");
    let (revoked_id, revoked) = warden.add_key("default", "old", "write");
    warden.revoke(&revoked_id);
    let list_as = |key: &str| {
        let http = Http {
            key: key.to_owned(),
            ..Http::new(&warden)
        };
        async move { http.modern("tools/list", None, json!({})).await }
    };
    // Unknown and revoked keys get the same answer.
    let unknown = list_as("wdn_0000000000000000000000000000000000000000000").await;
    let was_revoked = list_as(&revoked).await;
    assert_eq!(unknown.status, 401);
    assert_eq!(was_revoked.status, unknown.status);
    assert_eq!(was_revoked.text, unknown.text);
    assert_eq!(
        was_revoked.header("www-authenticate"),
        unknown.header("www-authenticate")
    );
    assert_eq!(list_as("wdn_guess").await.status, 401);

    // Three failures: now even the right key waits.
    let refused = list_as(&warden.admin_key).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(!refused.text.contains(&warden.admin_key));
}

#[tokio::test]
async fn keys_expire_and_rotate_with_a_grace_period() {
    let warden = Warden::start();
    let status = |key: String| {
        let http = Http {
            key,
            ..Http::new(&warden)
        };
        async move { http.modern("tools/list", None, json!({})).await.status }
    };
    let created = |args: &[&str]| {
        let out = warden.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };

    let brief = created(&[
        "keys",
        "add",
        "--tenant",
        "default",
        "--name",
        "brief",
        "--expires-in",
        "4s",
    ]);
    // Long enough that a loaded machine still sees it valid first.
    assert_eq!(status(brief.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(status(brief).await, 401);

    let (id, old) = warden.add_key("default", "laptop", "write");
    let rotated = created(&["keys", "rotate", &id]);
    assert_eq!(
        status(old.clone()).await,
        200,
        "the old key keeps its grace"
    );
    assert_eq!(status(rotated.clone()).await, 200);
    let listing = String::from_utf8(warden.cli(&["keys", "list"]).stdout).unwrap();
    assert!(!listing.contains(&rotated) && !listing.contains(&old));
    let rotated_id = listing
        .lines()
        .filter(|line| line.contains(" laptop ") && !line.starts_with(&id))
        .find_map(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let last = created(&["keys", "rotate", &rotated_id, "--grace", "0s"]);
    assert_eq!(status(rotated).await, 401, "no grace: refused at once");
    assert_eq!(status(last).await, 200);
    let bad = warden.cli(&["keys", "rotate", &rotated_id]);
    assert!(!bad.status.success(), "an expired key cannot be rotated");
}
