//! `warden store migrate` against a real PostgreSQL (see the store's test support for
//! which server): the schema is applied once and the runtime role granted data access;
//! without an owner role, `serve` needs a migrated database and says so; a password in
//! the URL never reaches an error.

#![allow(clippy::unwrap_used)]

#[path = "../../warden-store/tests/support/postgres.rs"]
mod postgres;

use std::process::Command;

use postgres::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// `warden ARGS` with `env`; (success, stdout, stderr).
fn warden(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &std::path::Path, owner: bool) -> String {
    let path = dir.join(if owner { "owner.toml" } else { "plain.toml" });
    let owner_url = if owner {
        "owner_url = \"env:PG_OWNER\"\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"env:PG_URL\"\n{owner_url}server_secret = \"env:WARDEN_SERVER_SECRET\"\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn migrate_applies_the_schema_once_and_grants_data_access_only() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let secret = "5a".repeat(32);
    let (runtime, owner) = (db.runtime_url(), db.owner_url());
    let env = [
        ("PG_URL", runtime.as_str()),
        ("PG_OWNER", owner.as_str()),
        ("WARDEN_SERVER_SECRET", secret.as_str()),
    ];
    let with_owner = config(dir.path(), true);
    let (ok, out, err) = warden(&["store", "migrate", "--config", &with_owner], &env);
    assert!(ok, "{err}");
    assert!(out.contains("from version 0 to"), "{out}");
    assert!(
        out.contains(&format!("granted {} data access", db.runtime)),
        "{out}"
    );
    let (ok, out, err) = warden(&["store", "migrate", "--config", &with_owner], &env);
    assert!(ok && out.contains("up to date"), "{out}{err}");

    // Without an owner role the operator must say that the runtime role owns the schema.
    let plain = config(dir.path(), false);
    let (ok, _, err) = warden(&["store", "migrate", "--config", &plain], &env);
    assert!(!ok && err.contains("--as-owner"), "{err}");

    let (ok, out, err) = warden(&["config", "check", &with_owner], &env);
    assert!(ok, "{out}{err}");
}

#[test]
fn serve_without_an_owner_role_needs_a_migrated_database() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let secret = "5a".repeat(32);
    let runtime = db.runtime_url();
    let env = [
        ("PG_URL", runtime.as_str()),
        ("WARDEN_SERVER_SECRET", secret.as_str()),
    ];
    let plain = config(dir.path(), false);
    let data = dir.path().join("data");
    let (ok, _, err) = warden(
        &[
            "serve",
            "--config",
            &plain,
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &env,
    );
    assert!(!ok && err.contains("warden store migrate"), "{err}");
    // A secret that is not 64 hex digits is named by `config check`.
    let short = [
        ("PG_URL", runtime.as_str()),
        ("WARDEN_SERVER_SECRET", "abcd"),
    ];
    let (ok, out, err) = warden(&["config", "check", &plain], &short);
    assert!(
        !ok && format!("{out}{err}").contains("server_secret"),
        "{out}{err}"
    );
}

#[test]
fn a_password_in_the_url_never_reaches_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "5a".repeat(32);
    let canary = "pw-canary-7c1e";
    // Nothing listens on port 9: the connection fails, and the message must not carry
    // the URL's password.
    let url = format!("postgres://warden:{canary}@127.0.0.1:9/warden");
    let env = [
        ("PG_URL", url.as_str()),
        ("PG_OWNER", url.as_str()),
        ("WARDEN_SERVER_SECRET", secret.as_str()),
    ];
    let path = config(dir.path(), true);
    let (ok, out, err) = warden(&["store", "migrate", "--config", &path], &env);
    assert!(!ok, "{out}");
    assert!(err.contains("warden: "), "{err}");
    assert!(!out.contains(canary) && !err.contains(canary), "{err}");
}

/// `warden store copy` refuses what it cannot use with a message naming it, and never
/// shows the URL's password: no data directory, an unset variable, a bad replica name,
/// an unreachable server, a database without Warden's schema.
#[test]
fn store_copy_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let canary = "pw-canary-91ab";
    let unreachable = format!("postgres://warden:{canary}@127.0.0.1:9/warden");
    let db = TestDb::create();
    let empty = db.owner_url();
    for (args, env, expected) in [
        (
            vec!["--from", "/nonexistent/warden-data", "--to", "env:PG_URL"],
            vec![("PG_URL", empty.as_str())],
            "no Warden data directory at /nonexistent/warden-data",
        ),
        (
            vec!["--from", &data, "--to", "env:WARDEN_UNSET_URL"],
            vec![],
            "WARDEN_UNSET_URL",
        ),
        (
            vec![
                "--from",
                &data,
                "--to",
                "env:PG_URL",
                "--replica",
                "bad name!",
            ],
            vec![("PG_URL", empty.as_str())],
            "--replica must be",
        ),
        (
            vec!["--from", &data, "--to", "env:PG_URL"],
            vec![("PG_URL", unreachable.as_str())],
            "warden: ",
        ),
        (
            vec!["--from", &data, "--to", "env:PG_URL"],
            vec![("PG_URL", empty.as_str())],
            "warden store migrate",
        ),
    ] {
        let mut command = vec!["store", "copy"];
        command.extend(args.iter().copied());
        let (ok, out, err) = warden(&command, &env);
        assert!(!ok, "{command:?}: {out}");
        assert!(err.contains(expected), "{command:?}: {err}");
        assert!(!out.contains(canary) && !err.contains(canary), "{err}");
    }
}
