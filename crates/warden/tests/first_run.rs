//! Zero-config first run, restarts, configuration files and the keys CLI, through the
//! real binary.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::json;
use support::{BIN, Era, Warden, call_ok, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_mints_an_admin_key_and_a_restart_reuses_everything() {
    let cwd = tempfile::tempdir().unwrap();
    let warden = Warden::start_with(cwd.path(), &[], &[]);
    let data = cwd.path().join("warden-data");
    assert!(data.is_dir(), "./warden-data is created");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let key_file = data.join("admin.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(data.join("server.secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let key = warden.admin_key.clone();
    assert!(key.starts_with("wdn_"));
    assert_eq!(
        warden.stdout().trim(),
        key,
        "the key is printed once, alone on stdout"
    );
    assert!(
        !warden.stderr().contains(&key),
        "the log never holds the key"
    );

    let client = connect(&warden.url, &key, Era::Modern).await.unwrap();
    let note = call_ok(
        &client,
        "create_note",
        json!({"title": "kept", "body": "survives restarts"}),
    )
    .await;
    drop(client);
    assert!(warden.stop().success(), "SIGTERM stops cleanly");

    let again = Warden::start_with(cwd.path(), &[], &[]);
    assert_eq!(again.stdout().trim(), "", "no new key on a second start");
    assert_eq!(again.admin_key, key);
    let client = connect(&again.url, &key, Era::Legacy).await.unwrap();
    let fetched = call_ok(&client, "get_note", json!({"id": note["id"]})).await;
    assert_eq!(fetched["body"], "survives restarts");
    let listed = String::from_utf8(again.cli(&["keys", "list"]).stdout).unwrap();
    assert_eq!(
        listed.lines().count(),
        2,
        "one header and one key: {listed}"
    );
    assert!(listed.contains("default") && listed.contains("admin"));
    assert!(
        again.logged("next steps: a client sends the key in ")
            && again
                .stderr()
                .contains("in its Authorization header, after the word Bearer;")
            && again.stderr().contains("warden connect http://127.0.0.1:"),
        "while admin.key lies in the data directory, a start says how to use it"
    );
    assert!(again.stop().success());

    std::fs::remove_file(&key_file).unwrap();
    let mut third = Warden::start_with(cwd.path(), &[], &[]);
    assert!(third.terminate().success());
    let log = third.stderr();
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("next steps"),
        "an operator who took the key away hears no more of it: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_comes_from_the_environment_or_the_config_file() {
    let cwd = tempfile::tempdir().unwrap();
    let env_dir = cwd.path().join("from-env");
    let warden = Warden::start_with(
        cwd.path(),
        &[],
        &[("WARDEN_DATA_DIR", env_dir.to_str().unwrap())],
    );
    assert!(env_dir.join("admin.key").is_file());
    assert!(!cwd.path().join("warden-data").exists());
    drop(warden);

    let config = cwd.path().join("warden.toml");
    let config_dir = cwd.path().join("from-config");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[limits]\nmax_body_bytes = 4096\n",
            config_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let warden = Warden::start_with(cwd.path(), &["--config", config.to_str().unwrap()], &[]);
    let admin_key = std::fs::read_to_string(config_dir.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    // The configured body cap is in force.
    let reply = reqwest::Client::new()
        .post(&warden.url)
        .bearer_auth(&admin_key)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(vec![b' '; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 413);
}

#[test]
fn config_check_names_the_unknown_field_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = \"127.0.0.1:9000\"\n[sessions]\nmax_sessions = 10\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:9000\"\nlisten_addr = \"x\"\n",
    )
    .unwrap();
    for args in [
        vec!["config", "check", bad.to_str().unwrap()],
        vec!["serve", "--config", bad.to_str().unwrap()],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("listen_addr") && stderr.contains("line 3"),
            "{stderr}"
        );
    }
    assert!(
        !dir.path().join("warden-data").exists(),
        "a bad config starts nothing"
    );

    let wrong_value = dir.path().join("value.toml");
    std::fs::write(&wrong_value, "[limits]\nmax_body_bytes = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", wrong_value.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("limits.max_body_bytes")
    );
}

#[test]
fn keys_cli_validates_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("WARDEN_DATA_DIR", dir.path())
            .output()
            .unwrap()
    };
    assert!(
        !run(&["keys", "add", "--tenant", "a b", "--name", "x"])
            .status
            .success()
    );
    assert!(
        !run(&[
            "keys", "add", "--tenant", "a", "--name", "x", "--scope", "root"
        ])
        .status
        .success()
    );
    assert!(
        !run(&["keys", "revoke", "key_doesnotexist"])
            .status
            .success()
    );
    let out = run(&[
        "keys", "add", "--tenant", "acme", "--name", "ci", "--scope", "read",
    ]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1);
    assert!(key.trim().starts_with("wdn_") && key.trim().len() >= 47);
    let listed = String::from_utf8(run(&["keys", "list"]).stdout).unwrap();
    assert!(listed.contains("acme") && listed.contains("read") && !listed.contains(key.trim()));
}

/// A `[tools."…"]` entry under a name no tool has (the bare name where the catalogue
/// prefixes it) fails `config check` and is named at start-up, with the right name.
#[test]
fn tool_rules_by_the_wrong_name_are_named_with_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    let rules = "\n[tools.delete_note]\nconfirm = \"deny\"\n\n[tools.\"notes__delete_note\"]\nconfirm = \"deny\"\n";
    std::fs::write(
        &config,
        support::fixture_upstream("fx", "")
            + "\n[[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n"
            + rules,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[tools.\"delete_note\"] matches no tool")
            && stderr.contains("the tool is named \"notes__delete_note\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("[tools.\"notes__delete_note\"]"),
        "{stderr}"
    );
    // At start-up, once the catalogue is known.
    let warden = support::Warden::start_config(
        &(support::fixture_upstream("fx", "")
            + "\n[tools.echoo]\nrpm = 1\n[tools.echo]\nrpm = 1\n"),
    );
    assert!(
        warden.logged("[tools.\"echoo\"] matches no tool"),
        "{}",
        warden.stderr()
    );
    assert!(!warden.stderr().contains("[tools.\"echo\"]"));
}
