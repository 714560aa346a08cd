//! The operator's first day (issue 17): the admin commands find the running Warden's
//! data, a taken port stops the start before any child runs, and commands piped into
//! `head` end quietly.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};

use serde_json::json;
use support::raw::Http;
use support::{BIN, Warden, fixture_upstream};

fn warden_in(cwd: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(cwd)
        .env_remove("WARDEN_DATA_DIR")
        .env_remove("WARDEN_CONFIG");
    command
}

/// In a folder whose warden.toml names the data directory, `keys add` without saying
/// which installation refuses to make a fresh one; with `--config` or `WARDEN_CONFIG` it
/// adds the key the running Warden accepts; `--init` creates a new directory on purpose.
#[tokio::test]
async fn admin_commands_work_on_the_running_wardens_data() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("warden.toml"), "data_dir = \"mydata\"\n").unwrap();
    let warden = Warden::start_with(cwd.path(), &["--config", "warden.toml"], &[]);
    assert!(cwd.path().join("mydata/admin.key").exists());

    let add = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = warden_in(cwd.path());
        command
            .args(["keys", "add", "--tenant", "acme", "--name", "ci"])
            .args(extra);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    let lost = add(&[], &[]);
    assert!(!lost.status.success());
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert!(
        stderr.contains("no Warden data directory at warden-data") && stderr.contains("--init"),
        "{stderr}"
    );
    assert!(!cwd.path().join("warden-data").exists());

    for (extra, env) in [
        (vec!["--config", "warden.toml"], vec![]),
        (vec![], vec![("WARDEN_CONFIG", "warden.toml")]),
    ] {
        let added = add(&extra, &env);
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        let key = String::from_utf8(added.stdout).unwrap().trim().to_owned();
        let reply = Http::with_key(&warden, &key)
            .modern("tools/list", None, json!({}))
            .await;
        assert_eq!(reply.status, 200, "the running Warden refused the new key");
    }

    let fresh = warden_in(cwd.path())
        .args(["keys", "list", "--data-dir", "elsewhere", "--init"])
        .output()
        .unwrap();
    assert!(fresh.status.success());
    assert!(cwd.path().join("elsewhere").is_dir());
}

/// Both listeners are bound before any upstream starts: a taken port stops the start
/// at once, names the address and the setting, and no child was ever spawned.
#[test]
fn a_taken_port_stops_the_start_before_any_child_runs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("spawned.jsonl");
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        fixture_upstream(
            "fx",
            &format!(
                "env = {{ FIXTURE_RECORD = {:?} }}\nsandbox_write = [{:?}]",
                record.to_str().unwrap(),
                dir.path().to_str().unwrap()
            ),
        ),
    )
    .unwrap();
    for (flag, setting) in [
        ("--listen", "[server] listen / --listen"),
        ("--admin-listen", "[admin] listen / --admin-listen"),
    ] {
        let (listen, admin) = if flag == "--listen" {
            (address.as_str(), "127.0.0.1:0")
        } else {
            ("127.0.0.1:0", address.as_str())
        };
        let out = warden_in(dir.path())
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--listen", listen, "--admin-listen", admin])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&address) && stderr.contains(setting),
            "{stderr}"
        );
        assert!(!stderr.contains("listening on"), "{stderr}");
        assert!(
            !record.exists(),
            "a child was spawned before the ports were bound"
        );
    }
}

/// `warden audit list | head -3`: a reader that goes away ends the command quietly.
#[test]
fn commands_end_quietly_when_their_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["keys", "list"],
        vec!["audit", "list"],
        vec!["audit", "list", "--json"],
        vec!["tools", "waiting"],
        vec!["approvals", "list"],
    ] {
        let mut child = warden_in(dir.path())
            .args(&args)
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes a line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The audit trail tells a held call from one that ran, and records what operators do:
/// keys added, rotated and revoked, a held call approved, a tool approved; a held call
/// that no one decided before a restart is recorded as expired.
#[tokio::test]
async fn held_calls_and_operator_actions_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("warden.toml"),
        "[tools.delete_note]\nconfirm = \"approve\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        "warden.toml",
    ];
    let mut warden = Warden::start_with(dir.path(), &args, &[]);
    let http = Http::new(&warden);
    let note = |title: &'static str| {
        let http = &http;
        async move {
            http.call_tool("create_note", json!({"title": title, "body": "x"}))
                .await
                .json()["result"]["structuredContent"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (first, second) = (note("first").await, note("second").await);
    let held_id = |reply: support::raw::Reply| {
        let text = reply.json()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        text.split_whitespace()
            .find(|w| w.starts_with("apr_"))
            .unwrap()
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_owned()
    };
    let approved = held_id(http.call_tool("delete_note", json!({"id": first})).await);
    let forgotten = held_id(http.call_tool("delete_note", json!({"id": second})).await);
    let held = warden.audited(2, |row| row["outcome"] == "held");
    assert!(
        held.iter().all(|row| row["decision"] == "pending"),
        "{held:?}"
    );

    assert!(
        warden
            .cli(&["approvals", "approve", &approved])
            .status
            .success()
    );
    let (key_id, _) = warden.add_key("acme", "ci", "read");
    let rotated = warden.cli(&["keys", "rotate", &key_id, "--grace", "0s"]);
    assert!(rotated.status.success());
    warden.revoke(&key_id);
    let done = http.call_tool("delete_note", json!({"id": first})).await;
    assert_eq!(done.json()["result"]["structuredContent"]["deleted"], true);

    for (method, outcome, target) in [
        ("approvals/approve", "approved", approved.as_str()),
        ("keys/add", "ok", key_id.as_str()),
        ("keys/rotate", "ok", key_id.as_str()),
        ("keys/revoke", "ok", key_id.as_str()),
    ] {
        let rows = warden.audited(1, |row| {
            row["method"] == method
                && row["outcome"] == outcome
                && row["target"].as_str().unwrap_or_default().contains(target)
        });
        assert!(
            rows[0]["principal"]
                .as_str()
                .unwrap()
                .starts_with("operator:"),
            "{rows:?}"
        );
    }
    warden.audited(1, |row| {
        row["target"] == "delete_note" && row["outcome"] == "ok"
    });

    // A restart forgets held calls: the one no one decided is recorded as expired, and
    // the operator no longer sees it waiting.
    warden.terminate();
    let warden = Warden::start_with(dir.path(), &args, &[]);
    let expired = warden.audited(1, |row| {
        row["method"] == "approvals/expire"
            && row["outcome"] == "expired"
            && row["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&forgotten)
    });
    assert_eq!(expired[0]["principal"], "warden");
    let listed = String::from_utf8(warden.cli(&["approvals", "list"]).stdout).unwrap();
    assert!(!listed.contains(&forgotten), "{listed}");
    let verified = warden.cli(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// `config check` runs what start-up runs short of spawning and connecting: a loopback
/// URL the egress rules close and a command that is not there fail it, each named; at
/// start-up a missing command is logged clearly and not retried in a tight loop.
#[test]
fn config_check_finds_what_would_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = warden_in(dir.path())
            .args(["config", "check", config.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let broken = "[[upstream]]\nname = \"remote\"\nurl = \"http://127.0.0.1:9/mcp\"\n\n[[upstream]]\nname = \"gone\"\ncommand = [\"/nonexistent/mcp-server\", \"--stdio\"]\n";
    let (ok, stderr) = check(broken);
    assert!(!ok);
    assert!(
        stderr.contains("upstream \"remote\"") && stderr.contains("[egress] allow"),
        "{stderr}"
    );
    assert!(
        stderr.contains("upstream \"gone\"")
            && stderr.contains("/nonexistent/mcp-server was not found"),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    let fixed = format!(
        "{}\n[egress]\nallow = [\"127.0.0.1\"]\n",
        broken.replace("/nonexistent/mcp-server", "/bin/cat")
    );
    let (ok, stderr) = check(&fixed);
    assert!(ok, "{stderr}");

    // At start-up: one clear line, then a long wait before the next attempt.
    let warden = Warden::start_config(
        "[[upstream]]\nname = \"gone\"\ncommand = [\"/nonexistent/mcp-server\"]\n",
    );
    assert!(warden.logged("retry_secs=300"), "{}", warden.stderr());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let attempts = warden
        .stderr()
        .lines()
        .filter(|line| line.contains("cannot start the upstream"))
        .count();
    assert_eq!(attempts, 1, "{}", warden.stderr());
}

/// `warden tools list` shows what each scope sees, each tool's kind and where the kind
/// came from; the start log sums the kinds per upstream and says why read keys see none
/// of another server's tools.
#[test]
fn tools_list_says_what_each_scope_sees_and_why() {
    let warden = Warden::start_config(
        &(fixture_upstream("fx", "")
            + "\n[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n\n[tools.\"fx__pid\"]\nkind = \"read\"\n"),
    );
    assert!(warden.logged("tools by kind"));
    assert!(warden.logged("are unclassified and count as write"));
    let admin = warden.admin_url();
    let admin = admin.trim_start_matches("http://");
    let list = |extra: &[&str]| {
        let out = warden.cli(&[&["tools", "list", "--admin", admin], extra].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let row = |text: &str, tool: &str| {
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(tool))
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let (all, note) = list(&[]);
    assert_eq!(
        row(&all, "notes__get_note").as_deref(),
        Some("notes__get_note notes read annotations read, write, admin"),
        "{all}"
    );
    assert_eq!(
        row(&all, "fx__echo").as_deref(),
        Some("fx__echo fx write unclassified write, admin"),
        "{all}"
    );
    assert_eq!(
        row(&all, "fx__pid").as_deref(),
        Some("fx__pid fx read config read, write, admin"),
        "{all}"
    );
    assert!(note.contains("unclassified and count as write"), "{note}");
    let (read, _) = list(&["--scope", "read"]);
    assert!(
        row(&read, "fx__echo").is_none() && row(&read, "fx__pid").is_some(),
        "{read}"
    );
    assert!(row(&read, "notes__delete_note").is_none(), "{read}");
    let (id, _) = warden.add_key("default", "reader", "read");
    let (by_key, _) = list(&["--key", &id]);
    assert_eq!(by_key, read);
}

/// What the operator reads says what is true: nothing waiting is said in words.
#[test]
fn an_empty_waiting_list_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = warden_in(dir.path())
        .args([
            "tools",
            "waiting",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "nothing is waiting: every tool definition seen is approved"
    );
}

/// Tool names every function-calling API accepts: the default separator is `__`, another
/// may be configured, and one those APIs would refuse is not accepted.
#[tokio::test]
async fn tool_names_fit_function_calling_apis() {
    let two =
        fixture_upstream("fx", "") + "\n[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n";
    let warden = Warden::start_config(&two);
    let names = Http::new(&warden)
        .modern("tools/list", None, json!({}))
        .await
        .tool_names();
    assert!(names.contains(&"fx__echo".to_owned()), "{names:?}");
    for name in &names {
        assert!(
            name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name}"
        );
    }
    drop(warden);
    let dashed = Warden::start_config(&format!("[server]\nprefix_separator = \"-\"\n\n{two}"));
    let http = Http::new(&dashed);
    let echoed = http.call_tool("fx-echo", json!({"text": "hi"})).await;
    assert_eq!(echoed.status, 200, "{}", echoed.text);
    let (ok, stderr) =
        support::serve_to_exit(&format!("[server]\nprefix_separator = \".\"\n\n{two}"));
    assert!(!ok);
    assert!(stderr.contains("server.prefix_separator"), "{stderr}");
}

/// `warden policy show-builtin` and `show-schema` print Cedar: the policies name
/// themselves, and the model declares the per-tool actions' parent.
#[test]
fn the_built_in_policies_and_the_model_are_printed() {
    let show = |what: &str| {
        let out = Command::new(BIN).args(["policy", what]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let builtin = show("show-builtin");
    assert!(builtin.contains("@id(\"builtin.read-tools\")"), "{builtin}");
    assert!(builtin.contains("permit ("), "{builtin}");
    let schema = show("show-schema");
    assert!(schema.contains("action call_tool;"), "{schema}");
    assert!(schema.contains("entity Key in [Group]"), "{schema}");
    assert!(
        schema.contains("action \"call_tool:delete_note\" in [call_tool]"),
        "{schema}"
    );
    assert!(
        builtin.contains("builtin.confirm-after-untrusted"),
        "{builtin}"
    );
}
