//! Warden in front of real stdio child processes (a Python MCP server): prefixes and
//! routing with several upstreams, a child killed mid-call, one child per tenant, and
//! children stopped with Warden.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    ERAS, Era, Warden, call, call_is_tool_error, call_ok, call_text, connect, fixture_upstream,
    process_alive,
};

#[tokio::test]
async fn several_upstreams_are_prefixed_and_routed_back() {
    let config = format!(
        "[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n{}",
        fixture_upstream("fx", "")
    );
    let warden = Warden::start_config(&config);
    for era in ERAS {
        let client = connect(&warden.url, &warden.admin_key, era).await.unwrap();
        let tools = client.list_all_tools().await.unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        for expected in [
            "notes__search_notes",
            "notes__delete_note",
            "fx__pid",
            "fx__echo",
        ] {
            assert!(names.contains(&expected), "{era:?}: {names:?}");
        }
        assert!(!names.contains(&"echo"), "{names:?}");
        assert_eq!(
            call_text(&client, "fx__echo", json!({"text": "through the prefix"})).await,
            "through the prefix"
        );
        let note = call_ok(
            &client,
            "notes__create_note",
            json!({"title": "routed", "body": "to the notes upstream"}),
        )
        .await;
        assert!(note["id"].is_string());
        // The unprefixed name is not a tool here, and never reaches an upstream.
        assert!(call(&client, "echo", json!({"text": "x"})).await.is_err());
        // Arguments are checked against the upstream's schema before forwarding.
        assert!(call(&client, "fx__echo", json!({"text": 5})).await.is_err());
        assert!(
            call(&client, "fx__echo", json!({"text": "x", "extra": 1}))
                .await
                .is_err()
        );
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn a_child_killed_mid_call_fails_the_call_at_once_and_is_restarted() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    for era in ERAS {
        let client = connect(&warden.url, &warden.admin_key, era).await.unwrap();
        let first: u32 = call_text(&client, "pid", json!({})).await.parse().unwrap();
        let slow = {
            let client_url = warden.url.clone();
            let key = warden.admin_key.clone();
            tokio::spawn(async move {
                let client = connect(&client_url, &key, era).await.unwrap();
                let started = Instant::now();
                let outcome = call(&client, "sleep", json!({"ms": 20_000})).await;
                (outcome.is_err(), started)
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_at = Instant::now();
        std::process::Command::new("kill")
            .args(["-KILL", &first.to_string()])
            .status()
            .unwrap();
        let (failed, _) = slow.await.unwrap();
        let waited = killed_at.elapsed();
        assert!(failed, "{era:?}: the call on the killed child must fail");
        assert!(
            waited < Duration::from_secs(1),
            "{era:?}: the error took {waited:?}"
        );
        let second: u32 = call_text(&client, "pid", json!({})).await.parse().unwrap();
        assert_ne!(first, second, "{era:?}: a new child answers");
        client.cancel().await.unwrap();
    }
    assert!(warden.logged("upstream stopped; restarting"));
}

#[tokio::test]
async fn per_tenant_children_are_never_shared() {
    let warden = Warden::start_config(&fixture_upstream("fx", "per_tenant = true"));
    let (_, key_a) = warden.add_key("tenant-a", "a", "write");
    let (_, key_b) = warden.add_key("tenant-b", "b", "write");
    let a = connect(&warden.url, &key_a, Era::Legacy).await.unwrap();
    let b = connect(&warden.url, &key_b, Era::Modern).await.unwrap();
    let pid_a: u32 = call_text(&a, "pid", json!({})).await.parse().unwrap();
    let pid_b: u32 = call_text(&b, "pid", json!({})).await.parse().unwrap();
    assert_ne!(pid_a, pid_b, "two tenants, two processes");
    let again: u32 = call_text(&a, "pid", json!({})).await.parse().unwrap();
    assert_eq!(pid_a, again, "one tenant keeps its process");
    let a_modern = connect(&warden.url, &key_a, Era::Modern).await.unwrap();
    let same: u32 = call_text(&a_modern, "pid", json!({}))
        .await
        .parse()
        .unwrap();
    assert_eq!(pid_a, same, "whatever the era");
    assert!(process_alive(pid_a) && process_alive(pid_b));
    let _ = (a.cancel().await, b.cancel().await, a_modern.cancel().await);
    warden.stop();
    // Stopping Warden stops its children.
    assert!(!process_alive(pid_a) && !process_alive(pid_b));
}

#[tokio::test]
async fn read_keys_see_no_unclassified_tools() {
    // Tools of other servers are writes until classified (fail closed).
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let (_, reader) = warden.add_key("default", "reader", "read");
    let client = connect(&warden.url, &reader, Era::Legacy).await.unwrap();
    assert!(client.list_all_tools().await.unwrap().is_empty());
    assert!(call(&client, "echo", json!({"text": "x"})).await.is_err());
    assert!(
        !call_is_tool_error(
            &connect(&warden.url, &warden.admin_key, Era::Modern)
                .await
                .unwrap(),
            "echo",
            json!({"text": "x"})
        )
        .await
    );
}

#[tokio::test]
async fn an_http_upstream_gets_the_configured_headers_never_the_clients_key() {
    let (child, url) = support::start_http_fixture::<&str>(&[]);
    let _upstream = support::KilledOnDrop(child);
    let config = format!(
        "[[upstream]]\nname = \"remote\"\nurl = \"{}\"\nheaders = {{ X-Upstream-Token = \"configured-canary-4417\" }}\nrefresh_secs = 1\n{}",
        url.trim(),
        support::EGRESS_LOOPBACK
    );
    let warden = Warden::start_config(&config);
    for era in ERAS {
        let client = connect(&warden.url, &warden.admin_key, era).await.unwrap();
        let seen: serde_json::Value =
            serde_json::from_str(&call_text(&client, "headers", json!({})).await).unwrap();
        assert_eq!(
            seen["x-upstream-token"], "configured-canary-4417",
            "{era:?}"
        );
        assert!(seen.get("authorization").is_none(), "{era:?}: {seen}");
        assert!(!seen.to_string().contains(&warden.admin_key), "{era:?}");
        client.cancel().await.unwrap();
    }
    // The configured header value is a secret too: never in the log.
    assert!(!warden.stderr().contains("configured-canary-4417"));

    // A tool the server adds without a list_changed appears at the next refresh.
    let client = connect(&warden.url, &warden.admin_key, Era::Legacy)
        .await
        .unwrap();
    assert_eq!(call_text(&client, "grow", json!({})).await, "grown");
    let mut names = Vec::new();
    for _ in 0..50 {
        names = client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        if names.contains(&"grown".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(names.contains(&"grown".to_owned()), "{names:?}");
}
