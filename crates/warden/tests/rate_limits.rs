//! Layered rate limits over real sockets: the field outage (fifteen parallel calls
//! against a slow upstream) passes untouched with default limits; a burst of 200 is
//! absorbed as far as the slots and queue go and refused cleanly beyond; each layer
//! (address, key, tool, session, streams, daily cost) refuses with 429, `Retry-After`
//! and its own name; the daily cap survives a restart; tenants do not touch each other.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::raw::{Http, Reply};
use support::{Era, Warden, call, connect, fixture_upstream};

/// A 429 that names `layer` and says when to come back.
fn assert_refused_by(reply: &Reply, layer: &str) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["error"]["code"], -32005, "{}", reply.text);
    assert_eq!(body["error"]["data"]["layer"], layer, "{}", reply.text);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(body["error"]["data"]["retryAfter"], retry);
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_parallel_calls_to_a_slow_upstream_all_pass_with_default_limits() {
    let warden = Warden::start_config(&fixture_upstream("fx", ""));
    let client = connect(&warden.url, &warden.admin_key, Era::Modern)
        .await
        .unwrap();
    let calls = (0..15).map(|_| call(&client, "sleep", json!({"ms": 200})));
    let results = join_all(calls).await;
    for result in results {
        let result = result.expect("refused or failed");
        assert_ne!(result.is_error, Some(true));
    }
    let log = warden.stderr();
    assert!(
        !log.contains(" WARN ") && !log.contains(" ERROR "),
        "the log has warnings or errors:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_is_absorbed_as_far_as_it_fits_and_refused_cleanly_beyond() {
    // The key's own rate is raised so that the burst meets the concurrency layer.
    let warden = Warden::start_config(
        &(fixture_upstream("fx", "") + "\n[rate]\nper_key_rpm = 10000\nper_ip_rpm = 10000\n"),
    );
    let http = Http::new(&warden);
    let before = peak_rss_kib(warden.pid());
    let replies = join_all((0..200).map(|_| http.call_tool("sleep", json!({"ms": 300})))).await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    let mut refused = 0;
    for reply in &replies {
        assert!(reply.status < 500, "{}: {}", reply.status, reply.text);
        if reply.status == 429 {
            assert_refused_by(reply, "rate.concurrency");
            refused += 1;
        }
    }
    assert_eq!(served + refused, 200);
    assert!(
        served >= 20 && refused >= 1,
        "{served} served, {refused} refused"
    );
    // Never more than the key's twenty slots reached the upstream at once.
    let peak = http.call_tool("peak", json!({})).await.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse::<usize>()
        .unwrap();
    assert_eq!(peak, 20, "calls running at once upstream");
    let after = peak_rss_kib(warden.pid());
    println!(
        "burst of 200: {served} served, {refused} refused; peak RSS {before} KiB before, {after} KiB after"
    );
    assert!(
        after < before + 64 * 1024,
        "peak RSS grew from {before} to {after} KiB"
    );
    let next = http.call_tool("echo", json!({"text": "after"})).await;
    assert_eq!(next.status, 200, "{}", next.text);
}

#[tokio::test]
async fn a_key_over_its_rate_is_refused_and_another_tenant_is_not() {
    let warden = Warden::start_config("[rate]\nper_key_rpm = 3\n");
    let out = warden.cli(&[
        "keys", "add", "--tenant", "acme", "--name", "ci", "--scope", "read", "--rpm", "5",
    ]);
    let own_rate = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (_, other_tenant) = warden.add_key("beta", "laptop", "read");
    let list = |key: &str| {
        let http = Http::with_key(&warden, key);
        async move { http.modern("tools/list", None, json!({})).await }
    };
    for _ in 0..3 {
        assert_eq!(list(&warden.admin_key).await.status, 200);
    }
    for _ in 0..3 {
        assert_refused_by(&list(&warden.admin_key).await, "rate.per_key");
    }
    // Another key, of another tenant, still has its own minute.
    for _ in 0..3 {
        assert_eq!(list(&other_tenant).await.status, 200);
    }
    // A key's own rpm replaces the default.
    for _ in 0..5 {
        assert_eq!(list(&own_rate).await.status, 200);
    }
    assert_refused_by(&list(&own_rate).await, "rate.per_key");
    // Refusals are counted, and logged once per key and layer a minute: four refusals
    // of two keys, two lines (read from the pipe as they come).
    let refusal_lines = || {
        warden
            .stderr()
            .lines()
            .filter(|l| l.contains("rate limit refusal") && l.contains("rate.per_key"))
            .count()
    };
    for _ in 0..50 {
        if refusal_lines() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(refusal_lines(), 2, "{}", warden.stderr());
}

#[tokio::test]
async fn an_address_is_limited_before_authentication() {
    let warden = Warden::start_config("[rate]\nper_ip_rpm = 4\n");
    let anonymous = Http::with_key(&warden, "");
    for _ in 0..4 {
        assert_eq!(anonymous.post_json(&[], &json!({})).await.status, 401);
    }
    let refused = anonymous.post_json(&[], &json!({})).await;
    assert_refused_by(&refused, "rate.per_ip");
    // The right key does not help: the address is over.
    let keyed = Http::new(&warden)
        .modern("tools/list", None, json!({}))
        .await;
    assert_refused_by(&keyed, "rate.per_ip");
}

/// An IPv6 client counts by its /64 (it owns them all); behind a trusted reverse proxy
/// the forwarded address counts, and from anyone else the forwarding headers mean
/// nothing.
#[tokio::test]
async fn addresses_count_by_network_and_only_trusted_proxies_forward() {
    let warden = Warden::start_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[rate]\nper_ip_rpm = 2\n",
    );
    let http = Http::new(&warden);
    let from = |forwarded: &'static str| {
        let http = &http;
        async move {
            http.post_modern(
                &[("x-forwarded-for", forwarded)],
                "tools/list",
                None,
                &support::raw::modern_body("tools/list", json!({})),
            )
            .await
        }
    };
    assert_eq!(from("2001:db8::1").await.status, 200);
    assert_eq!(from("2001:db8::2").await.status, 200);
    // Another address of the same /64: the same client, over its budget.
    assert_refused_by(&from("2001:db8::ffff:3").await, "rate.per_ip");
    // The next /64 and an IPv4 client are others.
    assert_eq!(from("2001:db8:0:1::1").await.status, 200);
    assert_eq!(from("198.51.100.7").await.status, 200);

    // Without trust in the proxy, every request is the peer's.
    let direct = Warden::start_config("[rate]\nper_ip_rpm = 2\n");
    let http = Http::new(&direct);
    for (forwarded, status) in [
        ("198.51.100.1", 200),
        ("198.51.100.2", 200),
        ("198.51.100.3", 429),
    ] {
        let reply = http
            .post_modern(
                &[("x-forwarded-for", forwarded)],
                "tools/list",
                None,
                &support::raw::modern_body("tools/list", json!({})),
            )
            .await;
        assert_eq!(reply.status, status, "{forwarded}");
    }
}

#[tokio::test]
async fn a_tool_has_its_own_rate_beside_cheap_tools() {
    let warden = Warden::start_config(&(fixture_upstream("fx", "") + "\n[tools.echo]\nrpm = 2\n"));
    let http = Http::new(&warden);
    for _ in 0..2 {
        assert_eq!(
            http.call_tool("echo", json!({"text": "x"})).await.status,
            200
        );
    }
    assert_refused_by(
        &http.call_tool("echo", json!({"text": "x"})).await,
        "rate.per_tool",
    );
    assert_eq!(http.call_tool("pid", json!({})).await.status, 200);
}

#[tokio::test]
async fn a_session_has_a_call_budget_and_a_key_a_stream_budget() {
    let warden = Warden::start_config(
        &(fixture_upstream("fx", "")
            + "\n[rate]\nper_session_calls = 2\nmax_streams_per_key = 1\n"),
    );
    let http = Http::new(&warden);
    let session = http.initialize().await;
    let echo = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "x"}}});
    for _ in 0..2 {
        assert_eq!(http.legacy(&session, &echo).await.status, 200);
    }
    assert_refused_by(&http.legacy(&session, &echo).await, "rate.per_session");
    // A new session starts a new budget.
    let fresh = http.initialize().await;
    assert_eq!(http.legacy(&fresh, &echo).await.status, 200);

    let _open = http.listen(&session).await;
    let second = http
        .send(
            reqwest::Method::GET,
            &[
                ("authorization", &format!("Bearer {}", warden.admin_key)),
                ("accept", "text/event-stream"),
                ("mcp-session-id", &fresh),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            None,
        )
        .await;
    assert_refused_by(&second, "rate.streams");
}

/// Starts Warden on `dir`'s data and config, the same each time.
fn start_in(dir: &Path) -> Warden {
    let data = dir.join("data");
    let config = dir.join("warden.toml");
    Warden::start_with(
        dir,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    )
}

#[tokio::test]
async fn the_daily_cost_cap_holds_across_a_restart_and_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("warden.toml"),
        fixture_upstream("fx", "")
            + "\n[tools.echo]\ncost = 5\n\n[tenants.acme]\ndaily_cost_cap = 10\n",
    )
    .unwrap();
    // Kept (stopped) until the end: on a PostgreSQL store, its database is the state
    // the restarted Warden must find.
    let mut first = start_in(dir.path());
    let (_, acme) = first.add_key("acme", "laptop", "write");
    let (_, beta) = first.add_key("beta", "laptop", "write");
    let echo = |key: String| {
        let http = Http::with_key(&first, &key);
        async move { http.call_tool("echo", json!({"text": "x"})).await }
    };
    for _ in 0..2 {
        assert_eq!(echo(acme.clone()).await.status, 200);
    }
    let refused = echo(acme.clone()).await;
    assert_refused_by(&refused, "rate.daily_cost");
    assert!(refused.text.contains("00:00 UTC"), "{}", refused.text);
    // Another tenant spends from its own (default) cap.
    assert_eq!(echo(beta.clone()).await.status, 200);
    assert!(first.terminate().success());

    let warden = start_in(dir.path());
    let http = Http::with_key(&warden, &acme);
    assert_refused_by(
        &http.call_tool("echo", json!({"text": "x"})).await,
        "rate.daily_cost",
    );
    assert_eq!(
        Http::with_key(&warden, &beta)
            .call_tool("echo", json!({"text": "x"}))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_is_protected_by_its_own_cap_and_timeout() {
    let warden = Warden::start_config(&fixture_upstream(
        "fx",
        "max_concurrent = 3\ncall_timeout_ms = 1500",
    ));
    let http = Http::new(&warden);
    // Ten calls, three at a time upstream; each waits its turn in the queue.
    let replies = join_all((0..10).map(|_| http.call_tool("sleep", json!({"ms": 100})))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    let peak =
        http.call_tool("peak", json!({})).await.json()["result"]["content"][0]["text"].clone();
    assert_eq!(peak, "3");
    // A call past the upstream's timeout fails retryably, and the upstream is told.
    let slow = http.call_tool("sleep", json!({"ms": 5000})).await;
    assert_eq!(slow.status, 503, "{}", slow.text);
    assert_eq!(slow.json()["error"]["code"], -32003);
    let cancelled =
        http.call_tool("cancelled", json!({})).await.json()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
    let cancelled: Vec<Value> = serde_json::from_str(&cancelled).unwrap();
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
}
