//! Pinned upstream commands (issue 25): `npx`, `uvx`, `pipx run` and `docker run`
//! without an exact version or digest are named by `warden config check` and at start,
//! and refused with `require_pinned`; `sha256` pins a local script, checked before every
//! start and restart, and a changed script keeps its upstream down.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::raw::Http;
use support::{BIN, Warden};

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `warden config check` of `config`: whether it passed, and what it said on stderr.
fn config_check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NPX: &str = "[[upstream]]\nname = \"everything\"\ncommand = [\"npx\", \"-y\", \"@modelcontextprotocol/server-everything\"]\n";

#[test]
fn unpinned_commands_are_named_and_refused_when_pinning_is_required() {
    let (ok, said) = config_check(NPX);
    assert!(ok, "a warning, not a failure: {said}");
    assert!(
        said.contains("warning") && said.contains("without an exact version"),
        "{said}"
    );
    let (ok, said) = config_check(&format!("{NPX}require_pinned = true\n"));
    assert!(!ok);
    assert!(
        said.contains("require_pinned refuses to start it"),
        "{said}"
    );
    let (ok, said) = support::serve_to_exit(&format!(
        "[server]\nrequire_pinned_upstreams = true\n\n{NPX}"
    ));
    assert!(!ok);
    assert!(
        said.contains("require_pinned refuses to start it"),
        "{said}"
    );
    // Pinned: no warning.
    let pinned = NPX.replace("server-everything\"", "server-everything@2025.11.25\"");
    let (ok, said) = config_check(&pinned);
    assert!(ok && !said.contains("warning"), "{said}");
    let (ok, said) = config_check(&format!("{pinned}sha256 = \"abc\"\n"));
    assert!(!ok);
    assert!(said.contains("64 hexadecimal digits"), "{said}");
}

#[tokio::test]
async fn a_script_pinned_by_its_hash_runs_and_once_changed_stays_down() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.py");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stdio_server.py"
        ),
        &script,
    )
    .unwrap();
    let config = format!(
        "[[upstream]]\nname = \"fx\"\ncommand = [\"{}\", \"{}\"]\nsha256 = \"{}\"\ncall_timeout_ms = 2000\n",
        support::python(),
        script.display(),
        sha256_of(&script)
    );
    let warden = Warden::start_config(&config);
    let http = Http::new(&warden);
    let pid = http.call_tool("pid", json!({})).await;
    let pid = pid.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", pid.text))
        .to_owned();

    // The script changes under it, and the child dies: the restart checks the hash.
    std::fs::write(
        &script,
        std::fs::read_to_string(&script).unwrap() + "\n# changed\n",
    )
    .unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut refused = false;
    for _ in 0..100 {
        if warden.logged("not the pinned") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "{}", warden.stderr());
    let down = http.call_tool("pid", json!({})).await;
    assert_ne!(down.status, 200, "{}", down.text);
}
