//! `warden connect`: a desktop client's stdio relayed to Warden, the key in the header
//! only; a Warden that restarts is reconnected to, its lost session opened again.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{BIN, Warden};

/// A `warden connect` child: lines in, lines out.
struct Bridge {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Bridge {
    fn start(url: &str, key: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["connect", url, "--key-env", "TEST_WARDEN_KEY"])
            .env("TEST_WARDEN_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("an answer through warden connect");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_legacy_session_survives_a_warden_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--listen",
        listen.as_str(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut warden = Warden::start_with(dir.path(), &args, &[]);
    let mut bridge = Bridge::start(&warden.url, &warden.admin_key);
    bridge.send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "desktop", "version": "1"}}}),
    );
    let init = bridge.next();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    bridge.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    bridge.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let listed = bridge.next();
    assert!(
        listed["result"]["tools"].as_array().unwrap().len() > 3,
        "{listed}"
    );

    // Warden restarts on the same address: it no longer knows the session.
    warden.terminate();
    let warden = Warden::start_with(dir.path(), &args, &[]);
    bridge.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "create_note", "arguments": {"title": "after", "body": "restart"}}}));
    let created = bridge.next();
    assert_eq!(created["id"], 3, "{created}");
    assert_eq!(
        created["result"]["structuredContent"]["title"], "after",
        "{created}"
    );
    // The key never reached the log or the bridge's arguments.
    assert!(!warden.stderr().contains(&warden.admin_key));
}

#[test]
fn a_modern_client_goes_through_and_an_unreachable_warden_is_an_error() {
    let warden = Warden::start();
    let mut bridge = Bridge::start(&warden.url, &warden.admin_key);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    bridge.send(&json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call",
        "params": {"name": "list_notes", "arguments": {}, "_meta": meta}}));
    let listed = bridge.next();
    assert_eq!(listed["result"]["resultType"], "complete", "{listed}");
    drop(warden);
    bridge.send(&json!({"jsonrpc": "2.0", "id": "b", "method": "tools/call",
        "params": {"name": "list_notes", "arguments": {}, "_meta": meta}}));
    let refused = bridge.next();
    assert_eq!(refused["id"], "b", "{refused}");
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{refused}"
    );
}

#[test]
fn a_key_in_the_url_or_over_plain_http_is_refused() {
    for url in [
        "http://127.0.0.1:1/mcp?api_key=wdn_x",
        "http://mcp.example.com/mcp",
    ] {
        let out = Command::new(BIN)
            .args(["connect", url, "--key-env", "TEST_WARDEN_KEY"])
            .env("TEST_WARDEN_KEY", "wdn_x")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("warden:"), "{stderr}");
    }
}
