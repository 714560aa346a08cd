//! Memory bounds that are not timings (issue 23): a 50 MB upstream result is cut as it
//! streams in, from a stdio child and from an HTTP upstream answering in JSON or in
//! Server-Sent Events, and a 50 MB request body is refused at the cap. Neither raises
//! Warden's peak resident memory (`VmHWM`) by more than 16 MiB above the cut, and the
//! upstream keeps serving. 10,000 idle legacy sessions add at most 50 MB.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::raw::{Http, MODERN, modern_body};
use support::{Era, Warden, call, call_text, connect, fixture_upstream};

const FLOOD_MB: usize = 50;
/// What a 50 MB message may add to Warden's peak, beyond what it shows of it.
const ALLOWED_RISE: u64 = 16 * 1024 * 1024;
/// `[results] max_result_bytes` in these tests: the cut the client sees.
const MAX_RESULT_BYTES: u64 = 256 * 1024;

/// A memory figure of the process from /proc/PID/status (`VmHWM:`, `VmRSS:`), in bytes.
fn memory_figure(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
    kib * 1024
}

/// The process's peak resident memory so far, in bytes.
fn peak_resident(pid: u32) -> u64 {
    memory_figure(pid, "VmHWM:")
}

fn assert_rise_within_bound(what: &str, before: u64, after: u64) {
    let rise = after.saturating_sub(before);
    eprintln!("{what}: peak resident memory rose by {} KiB", rise / 1024);
    assert!(
        rise <= ALLOWED_RISE + MAX_RESULT_BYTES,
        "{what}: Warden's peak resident memory rose by {} KiB (allowed {} KiB)",
        rise / 1024,
        (ALLOWED_RISE + MAX_RESULT_BYTES) / 1024
    );
}

/// The text a flood call came back with: the first 256 KiB, then the marker counting
/// everything else.
fn assert_cut(what: &str, text: &str) {
    let (shown, marker) = text
        .split_once("\n[truncated by Warden: ")
        .unwrap_or_else(|| panic!("{what}: no cut marker in {} bytes", text.len()));
    assert_eq!(shown.len() as u64, MAX_RESULT_BYTES, "{what}");
    assert!(shown.bytes().all(|b| b == b'x'), "{what}");
    let omitted: usize = marker
        .strip_suffix(" more bytes not shown]")
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{what}: marker {marker:?}"));
    assert_eq!(
        omitted + shown.len(),
        FLOOD_MB * 1_000_000,
        "{what}: the marker counts every byte left out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_result_from_a_stdio_child_is_cut_as_it_streams() {
    // Structured content is never cut, so a message of it is held up to the message
    // limit before it is refused: 8 MiB here, half the default, keeps that within bound.
    let warden = Warden::start_config(&fixture_upstream(
        "fx",
        "env = { FIXTURE_FLOOD = \"1\" }\nmax_message_bytes = 8388608",
    ));
    let client = connect(&warden.url, &warden.admin_key, Era::Legacy)
        .await
        .unwrap();
    let child = call_text(&client, "pid", json!({})).await;
    // A small flood first: what any first call allocates is not the 50 MB's doing.
    call(&client, "flood", json!({"mb": 1})).await.unwrap();
    let before = peak_resident(warden.pid());

    let text = call_text(&client, "flood", json!({"mb": FLOOD_MB})).await;
    assert_cut("stdio", &text);
    assert_rise_within_bound("stdio text", before, peak_resident(warden.pid()));

    // 50 MB of structured content is over the message limit, and only that call fails. The child read to the end of the line and stays.
    let before = peak_resident(warden.pid());
    let refused = call(
        &client,
        "flood",
        json!({"mb": FLOOD_MB, "structured": true}),
    )
    .await;
    let refused = format!("{refused:?}");
    assert!(refused.contains("too large to pass on"), "{refused}");
    assert!(warden.logged("upstream wrote a message over the size limit"));
    assert_rise_within_bound("stdio structured", before, peak_resident(warden.pid()));
    assert_eq!(
        call_text(&client, "pid", json!({})).await,
        child,
        "the child was not restarted"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_result_from_an_http_upstream_is_cut_as_it_streams() {
    let (child, url) = support::start_http_fixture(&["--flood"]);
    let _upstream = support::KilledOnDrop(child);
    let warden = Warden::start_config(&format!(
        "[[upstream]]\nname = \"remote\"\nurl = \"{url}\"\n{}",
        support::EGRESS_LOOPBACK
    ));
    let client = connect(&warden.url, &warden.admin_key, Era::Modern)
        .await
        .unwrap();
    for sse in [false, true] {
        call(&client, "flood", json!({"mb": 1, "sse": sse}))
            .await
            .unwrap();
        let before = peak_resident(warden.pid());
        let text = call_text(&client, "flood", json!({"mb": FLOOD_MB, "sse": sse})).await;
        let what = if sse { "HTTP, SSE" } else { "HTTP, JSON" };
        assert_cut(what, &text);
        assert_rise_within_bound(what, before, peak_resident(warden.pid()));
    }
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_body_is_refused_at_the_cap_without_being_held() {
    let warden = Warden::start();
    let http = Http::new(&warden);
    // A first refusal: what any first request allocates is not the body's doing.
    let small = vec![b' '; 2 * 1024 * 1024];
    let _ = http.post_streamed(&small).await;
    let before = peak_resident(warden.pid());

    // Streamed without a Content-Length: the cap holds as it arrives.
    let status = http.post_streamed(&vec![b' '; FLOOD_MB * 1_000_000]).await;
    assert!(matches!(status, None | Some(413)), "{status:?}");
    // Declared: refused before it is read.
    let huge = "x".repeat(FLOOD_MB * 1_000_000);
    let body = modern_body(
        "tools/call",
        json!({"name": "create_note", "arguments": {"title": "t", "body": huge}}),
    );
    let declared = http
        .client
        .post(&http.url)
        .bearer_auth(&http.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "create_note")
        .body(body.to_string())
        .send()
        .await;
    if let Ok(response) = declared {
        assert_eq!(response.status().as_u16(), 413);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], -32000, "{answer}");
    }
    assert_rise_within_bound("request body", before, peak_resident(warden.pid()));
    http.assert_still_serving().await;
}

/// Resident memory now, in bytes.
fn resident(pid: u32) -> u64 {
    memory_figure(pid, "VmRSS:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_sessions_cost_at_most_50_mb() {
    const SESSIONS: usize = 10_000;
    // One key from one address opens them all: the limits would (rightly) refuse that.
    let warden = Warden::start_config(&format!(
        "[limits]\nmax_sessions_per_key = {SESSIONS}\n\n[sessions]\nmax_sessions = {SESSIONS}\n\n[rate]\nper_key_rpm = 1000000\nper_ip_rpm = 10000000\n"
    ));
    let http = std::sync::Arc::new(Http::new(&warden));
    http.initialize().await;
    let before = resident(warden.pid());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, next) = (http.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < SESSIONS {
                    http.initialize().await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let added = resident(warden.pid()).saturating_sub(before);
    eprintln!(
        "{SESSIONS} idle sessions: resident memory rose by {} KiB",
        added / 1024
    );
    assert!(
        added <= 50 * 1024 * 1024,
        "{SESSIONS} idle legacy sessions added {} MiB (issue 23's bound: 50 MB)",
        added / (1024 * 1024)
    );
    http.assert_still_serving().await;
}
