//! Reloading a running Warden (SIGHUP, `warden reload`): live settings change without a
//! restart, an upstream restarts only when its own definition changed, what needs a
//! restart is named and kept as it was, and a file that does not load changes nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::raw::Http;
use support::{EGRESS_LOOPBACK, NO_CONFIRM_AFTER_UNTRUSTED, Warden, fixture_upstream};

/// Two stdio upstreams and the notes server; the one rule is changed by the reload
/// (which may make `fb` untrusted: its calls then follow one another unconfirmed).
fn config(extra_b: &str, rest: &str) -> String {
    format!(
        "{NO_CONFIRM_AFTER_UNTRUSTED}{}{}[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n{rest}",
        fixture_upstream("fa", ""),
        fixture_upstream("fb", extra_b),
    )
}

/// A page on loopback for `import_url`, which the egress guard refuses until opened.
async fn page() -> String {
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(|| async { ([("content-type", "text/plain")], "reloaded egress") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/page")
}

/// Waits until `needle` is in the log `count` times.
async fn logged_times(warden: &Warden, needle: &str, count: usize) {
    for _ in 0..100 {
        if warden.stderr().matches(needle).count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{needle:?} not logged {count} times:\n{}", warden.stderr());
}

async fn pid(http: &Http, tool: &str) -> String {
    let reply = http.call_tool(tool, json!({})).await.json();
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned()
}

async fn origin_status(http: &Http) -> u16 {
    http.post_json(
        &[("origin", "https://app.example.com")],
        &support::raw::modern_body("tools/list", json!({})),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_what_it_can_restarts_what_changed_and_names_the_rest() {
    let url = page().await;
    let warden = Warden::start_config(&config("", ""));
    let config_path = warden.data_dir.parent().unwrap().join("warden.toml");
    let admin = Http::new(&warden);
    let (_, read_key) = warden.add_key("default", "reader", "read");
    let reader = Http::with_key(&warden, &read_key);
    let (pid_a, pid_b) = (pid(&admin, "fa__pid").await, pid(&admin, "fb__pid").await);
    let reader_tools = reader.modern("tools/list", None, json!({})).await;
    assert!(
        !reader_tools
            .tool_names()
            .iter()
            .any(|t| t.starts_with("fa__")),
        "unclassified tools are write: {}",
        reader_tools.text
    );
    assert_eq!(origin_status(&admin).await, 403);
    let import = admin
        .call_tool("notes__import_url", json!({ "url": url }))
        .await
        .json();
    assert_eq!(import["result"]["isError"], true, "{import}");

    // The new file: fa's tools are read and echo is limited to one call a minute; fb's
    // environment changed; a browser origin is allowed; loopback is opened; sessions
    // (which need a restart) are changed.
    std::fs::write(
        &config_path,
        config(
            "env = { MARK = \"2\" }",
            &format!(
                "[tools.\"fa__*\"]\nkind = \"read\"\n[tools.\"fa__echo\"]\nkind = \"read\"\nrpm = 1\n\
                 [server]\nallowed_origins = [\"https://app.example.com\"]\n\
                 [sessions]\nidle_timeout_secs = 60\n{EGRESS_LOOPBACK}"
            ),
        ),
    )
    .unwrap();
    let out = warden.cli(&[
        "reload",
        "--admin",
        warden.admin_url().trim_start_matches("http://"),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "applied: [server] allowed_origins, [tools], [egress]",
        "restarted upstreams: fb",
        "needs a restart to take effect: [sessions] and [limits] max_sessions_per_key",
    ] {
        assert!(said.contains(expected), "{expected:?} in {said}");
    }

    // Only the changed upstream restarted.
    assert_eq!(
        pid(&admin, "fa__pid").await,
        pid_a,
        "fa's definition did not change"
    );
    let new_b = pid(&admin, "fb__pid").await;
    assert_ne!(new_b, pid_b, "fb's definition changed");
    assert!(!support::process_alive(pid_b.parse().unwrap()));
    // Tool rules: kinds and rates.
    let reader_tools = reader.modern("tools/list", None, json!({})).await;
    assert!(
        reader_tools.tool_names().contains(&"fa__pid".to_owned()),
        "{}",
        reader_tools.text
    );
    let first = admin
        .call_tool("fa__echo", json!({"text": "one"}))
        .await
        .json();
    assert_eq!(first["result"]["content"][0]["text"], "one", "{first}");
    let second = admin.call_tool("fa__echo", json!({"text": "two"})).await;
    assert_eq!(second.status, 429, "{}", second.text);
    // Hosts and origins, and egress.
    assert_ne!(origin_status(&admin).await, 403);
    let import = admin
        .call_tool("notes__import_url", json!({ "url": url }))
        .await
        .json();
    assert_eq!(
        import["result"]["structuredContent"]["body"], "reloaded egress",
        "{import}"
    );
    assert!(warden.logged("configuration reloaded"));

    // A file that does not load changes nothing, by SIGHUP or by the command.
    std::fs::write(&config_path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    warden.signal("-HUP");
    logged_times(&warden, "configuration not reloaded", 1).await;
    let out = warden.cli(&[
        "reload",
        "--admin",
        warden.admin_url().trim_start_matches("http://"),
    ]);
    assert!(!out.status.success());
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(
        told.contains("not reloaded; the running configuration stays")
            && told.contains("server.listen"),
        "{told}"
    );
    assert_eq!(pid(&admin, "fb__pid").await, new_b);
    assert_ne!(origin_status(&admin).await, 403);

    // The same file again: nothing restarts, and what waits for a restart still does.
    std::fs::write(
        &config_path,
        config(
            "env = { MARK = \"2\" }",
            &format!(
                "[tools.\"fa__*\"]\nkind = \"read\"\n[tools.\"fa__echo\"]\nkind = \"read\"\nrpm = 1\n\
                 [server]\nallowed_origins = [\"https://app.example.com\"]\n\
                 [sessions]\nidle_timeout_secs = 60\n{EGRESS_LOOPBACK}"
            ),
        ),
    )
    .unwrap();
    warden.signal("-HUP");
    logged_times(&warden, "configuration reloaded", 2).await;
    assert_eq!(pid(&admin, "fb__pid").await, new_b);
    let log = warden.stderr();
    let last = log
        .lines()
        .rfind(|line| line.contains("configuration reloaded"))
        .unwrap();
    assert!(
        last.contains("needs_restart=[\"[sessions] and [limits] max_sessions_per_key\"]")
            && last.contains("restarted=[]"),
        "{last}"
    );
    // Every reload is an operator's record in the audit trail.
    let reloads: Vec<String> = warden
        .audit_rows()
        .into_iter()
        .filter(|row| row["method"] == "config/reload")
        .map(|row| row["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reloads, ["ok", "refused", "refused", "ok"], "{reloads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_refused_to_peers_beyond_this_machine_and_to_other_hosts() {
    let warden = Warden::start();
    let admin = warden.admin_url();
    let client = reqwest::Client::new();
    // A page rebound to 127.0.0.1 sends its own Host: the guard refuses it.
    let rebound = client
        .post(format!("{admin}/reload"))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let cross_site = client
        .post(format!("{admin}/reload"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let local = client.post(format!("{admin}/reload")).send().await.unwrap();
    assert_eq!(local.status(), 200);
    let report: serde_json::Value = local.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["applied"], json!([]), "{report}");
}
