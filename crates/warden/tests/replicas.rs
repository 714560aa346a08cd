//! Several `warden serve` replicas on one PostgreSQL (see the store's test support for
//! which server): three started at once on an empty database all come up (they take
//! turns migrating); they share keys, notes and held calls; a key revoked through one
//! is refused by the others; each keeps its own audit chain and `warden audit verify`
//! checks all of them; no secret reaches their output. And an outage: PostgreSQL
//! stopped under load gives clients clean 503s and flips `/readyz`; started again,
//! service resumes and every acknowledged call has its audit record.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::Warden;
use support::postgres::{OwnServer, TestDb};
use support::raw::Http;

const SECRET: &str = "3c1f9e0a7b2d4c6e8f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c0d2e";

/// A replica's configuration file: the shared store under its own name.
fn replica_config(dir: &Path, replica: &str) -> PathBuf {
    let path = dir.join(format!("{replica}.toml"));
    std::fs::write(
        &path,
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"env:PG_URL\"\nowner_url = \"env:PG_OWNER\"\n\
             server_secret = \"env:WARDEN_SERVER_SECRET\"\nreplica = \"{replica}\"\n\n\
             [rate]\nper_key_rpm = 1000000\nper_ip_rpm = 1000000\n"
        ),
    )
    .unwrap();
    path
}

struct Cluster {
    _db: TestDb,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    replicas: Vec<Warden>,
}

impl Cluster {
    /// `count` replicas started at the same moment on `db`, fresh and empty.
    fn start(db: TestDb, count: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("PG_URL".to_owned(), db.runtime_url()),
            ("PG_OWNER".to_owned(), db.owner_url()),
            ("WARDEN_SERVER_SECRET".to_owned(), SECRET.to_owned()),
        ];
        let replicas = std::thread::scope(|scope| {
            let started: Vec<_> = (1..=count)
                .map(|n| {
                    let (dir, env) = (dir.path(), &env);
                    scope.spawn(move || {
                        let name = format!("r{n}");
                        let config = replica_config(dir, &name);
                        let data = dir.join(format!("{name}-data"));
                        let env: Vec<(&str, &str)> =
                            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                        Warden::start_with(
                            dir,
                            &[
                                "--config",
                                config.to_str().unwrap(),
                                "--data-dir",
                                data.to_str().unwrap(),
                            ],
                            &env,
                        )
                    })
                })
                .collect();
            started
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        Self {
            _db: db,
            dir,
            env,
            replicas,
        }
    }

    /// `warden ARGS --config <r1's file>`: an admin command on the shared store.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let config = self.dir.path().join("r1.toml");
        let out = Command::new(support::BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("WARDEN_DATA_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A new key through the CLI: (id, key).
    fn add_key(&self, tenant: &str) -> (String, String) {
        let (ok, out, err) = self.cli(&[
            "keys", "add", "--tenant", tenant, "--name", "laptop", "--scope", "write",
        ]);
        assert!(ok, "{err}");
        let id = err
            .split_whitespace()
            .find(|w| w.starts_with("key_"))
            .unwrap()
            .to_owned();
        (id, out.trim().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_start_together_and_share_keys_notes_and_revocations() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(TestDb::create(), 3))
        .await
        .unwrap();
    let (id, key) = cluster.add_key("acme");
    let (_, other_key) = cluster.add_key("globex");
    let [one, two, three] = &cluster.replicas[..] else {
        panic!("three replicas")
    };

    // A note made through one replica is found through another, and only by its tenant.
    let made = Http::with_key(one, &key)
        .call_tool(
            "create_note",
            json!({"title": "replicated", "body": "written through replica one"}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let found = Http::with_key(two, &key)
        .call_tool("search_notes", json!({"query": "replicated"}))
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert!(found.text.contains("replicated"), "{}", found.text);
    let elsewhere = Http::with_key(two, &other_key)
        .call_tool("search_notes", json!({"query": "replicated"}))
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text);
    assert!(
        !elsewhere.text.contains("replica one"),
        "{}",
        elsewhere.text
    );

    // A revocation through the CLI holds on every replica from the next request.
    let before = Http::with_key(three, &key)
        .call_tool("search_notes", json!({"query": "x"}))
        .await;
    assert_eq!(before.status, 200, "{}", before.text);
    let (ok, _, err) = cluster.cli(&["keys", "revoke", &id]);
    assert!(ok, "{err}");
    for replica in [one, two, three] {
        let after = Http::with_key(replica, &key)
            .call_tool("search_notes", json!({"query": "x"}))
            .await;
        assert_eq!(after.status, 401, "{}", after.text);
    }

    // Every replica keeps its own chain, and verify checks each.
    let verified = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            let (ok, out, err) = cluster.cli(&["audit", "verify"]);
            assert!(ok, "{out}{err}");
            if ["r1", "r2", "r3"]
                .iter()
                .all(|r| out.contains(&format!("chain of replica {r} intact")))
            {
                let (ok, listed, err) = cluster.cli(&["audit", "list", "--json"]);
                assert!(ok, "{err}");
                for replica in &cluster.replicas {
                    assert!(!replica.stderr().contains(SECRET));
                    assert!(!replica.stderr().contains(&key));
                }
                assert!(!listed.contains(&key) && !listed.contains(SECRET));
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("not every replica's chain was written");
    })
    .await
    .unwrap();
    assert!(verified.contains("audit trail intact"), "{verified}");
}

/// A JSON-RPC error code in a reply body, if any.
fn error_code(text: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(text).ok()?["error"]["code"].as_i64()
}

async fn ready(admin: &str) -> u16 {
    reqwest::get(format!("{admin}/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Whether `/readyz` answers `status` within ten seconds.
async fn readiness_becomes(admin: &str, status: u16) -> bool {
    for _ in 0..100 {
        if ready(admin).await == status {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_gives_clean_503s_and_loses_no_acknowledged_record() {
    let cluster = tokio::task::spawn_blocking(|| {
        let server = OwnServer::start();
        let db = server.database();
        (Cluster::start(db, 1), server)
    })
    .await
    .unwrap();
    let (cluster, server) = cluster;
    let (_, key) = cluster.add_key("acme");
    let warden = &cluster.replicas[0];
    let admin = warden.admin_url();
    assert_eq!(ready(&admin).await, 200);

    // Load: four clients writing notes until told to stop; each counts what it was
    // told (an acknowledged write, a 503 with the store's code, anything else).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..4 {
        let http = Http::with_key(warden, &key);
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut acknowledged, mut unavailable, mut other) = (0u32, 0u32, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let reply = http
                    .call_tool(
                        "create_note",
                        json!({"title": format!("load {n} {i}"), "body": "outage"}),
                    )
                    .await;
                match (reply.status, error_code(&reply.text)) {
                    (200, None) => acknowledged += 1,
                    (503, Some(-32007)) => {
                        assert_eq!(reply.header("retry-after"), Some("5"));
                        unavailable += 1;
                    }
                    (status, code) => other.push(format!("{status} {code:?} {}", reply.text)),
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (acknowledged, unavailable, other)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // The database goes away: clients get 503s, and /readyz says so.
    let server = tokio::task::spawn_blocking(move || {
        server.halt();
        server
    })
    .await
    .unwrap();
    assert!(
        readiness_becomes(&admin, 503).await,
        "/readyz stayed ready with the store away"
    );
    // Probed again and again (as a load balancer does), it says so in the log once.
    for _ in 0..3 {
        assert_eq!(ready(&admin).await, 503);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // It comes back: service resumes, and /readyz says so.
    let server = tokio::task::spawn_blocking(move || {
        server.resume();
        server
    })
    .await
    .unwrap();
    assert!(
        readiness_becomes(&admin, 200).await,
        "/readyz did not recover"
    );
    let log = warden.stderr();
    assert_eq!(
        log.matches("not ready: the store does not answer").count(),
        1,
        "{log}"
    );
    assert!(log.contains("the store answers again"), "{log}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, mut unavailable) = (0, 0);
    for client in clients {
        let (ok, refused, other) = client.await.unwrap();
        assert!(other.is_empty(), "unclean answers: {other:?}");
        acknowledged += ok;
        unavailable += refused;
    }
    assert!(unavailable > 0, "no call met the outage");
    let after = Http::with_key(warden, &key)
        .call_tool("search_notes", json!({"query": "outage"}))
        .await;
    assert_eq!(after.status, 200, "{}", after.text);

    // Every acknowledged write has its record (the writer kept them through the
    // outage), and the chain verifies.
    let audited = tokio::task::spawn_blocking(move || {
        let wanted = |rows: &str| {
            rows.lines()
                .filter(|line| {
                    line.contains("\"target\":\"create_note\"")
                        && line.contains("\"outcome\":\"ok\"")
                })
                .count()
        };
        for _ in 0..100 {
            let (ok, rows, err) = cluster.cli(&["audit", "list", "--json", "--limit", "1000000"]);
            assert!(ok, "{err}");
            if wanted(&rows) >= acknowledged as usize {
                let (ok, out, err) = cluster.cli(&["audit", "verify"]);
                assert!(ok, "{out}{err}");
                drop(server);
                return wanted(&rows);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("acknowledged writes without their audit records");
    })
    .await
    .unwrap();
    assert!(audited >= acknowledged as usize);
    assert!(acknowledged > 0);
}

/// The `NAME  found  added` counts `warden store copy` printed, by name.
fn copy_counts(out: &str) -> std::collections::HashMap<String, (u64, u64)> {
    out.lines()
        .filter_map(|line| {
            let (what, numbers) = line.trim().split_once("  ")?;
            let numbers: Vec<u64> = numbers
                .split_whitespace()
                .filter_map(|word| word.parse().ok())
                .collect();
            match numbers[..] {
                [found, added] => Some((what.to_owned(), (found, added))),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_installation_copied_into_postgres_keeps_keys_notes_and_its_audit_chain() {
    // A SQLite installation in use: keys, notes with an earlier version, an audit trail.
    let mut old = Warden::start();
    let (_, key) = old.add_key("acme", "laptop", "write");
    let http = Http::with_key(&old, &key);
    let made = http
        .call_tool(
            "create_note",
            json!({"title": "before the move", "body": "kept in sqlite", "tags": ["moved"]}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let id = made.json()["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let updated = http
        .call_tool("update_note", json!({"id": id, "body": "edited in sqlite"}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    old.terminate();
    let data = old.data_dir.clone();
    let verify = Command::new(support::BIN)
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let verified = String::from_utf8_lossy(&verify.stdout).into_owned();
    let records: u64 = verified
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap();

    // Copied into a migrated database, twice: the second run adds nothing.
    let db = tokio::task::spawn_blocking(TestDb::create).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pg.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"env:PG_URL\"\nowner_url = \"env:PG_OWNER\"\n\
             server_secret = \"file:{}\"\nreplica = \"moved\"\n",
            data.join("server.secret").display()
        ),
    )
    .unwrap();
    let env = [("PG_URL", db.runtime_url()), ("PG_OWNER", db.owner_url())];
    let run = |args: &[&str]| {
        let out = Command::new(support::BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("WARDEN_DATA_DIR")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        stdout
    };
    run(&["store", "migrate", "--config", config.to_str().unwrap()]);
    let copy = [
        "store",
        "copy",
        "--from",
        data.to_str().unwrap(),
        "--to",
        "env:PG_URL",
        "--replica",
        "moved",
    ];
    let first = run(&copy);
    let counts = copy_counts(&first);
    assert_eq!(counts["keys"], (2, 2), "{first}");
    assert_eq!(counts["notes"], (1, 1), "{first}");
    assert_eq!(counts["note versions"], (1, 1), "{first}");
    assert_eq!(counts["audit records"], (records, records), "{first}");
    for (what, (found, added)) in &counts {
        assert_eq!(found, added, "{what}: {first}");
    }
    assert!(
        first.contains(&format!(
            "audit chain of replica moved intact: {records} records"
        )),
        "{first}"
    );
    assert!(first.contains("server.secret"), "{first}");
    let again = copy_counts(&run(&copy));
    for (what, (found, added)) in &again {
        assert_eq!((*found, *added), (counts[what].0, 0), "{what}");
    }
    let verified = run(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert!(
        verified.contains(&format!("chain of replica moved intact: {records} records")),
        "{verified}"
    );

    // Served from PostgreSQL with the data directory's secret: the old key works, the
    // note and its version are there, and the replica of that name continues the chain.
    let new = Warden::start_with(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[("PG_URL", &env[0].1), ("PG_OWNER", &env[1].1)],
    );
    let http = Http::with_key(&new, &key);
    let found = http
        .call_tool("search_notes", json!({"query": "edited"}))
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert!(found.text.contains("before the move"), "{}", found.text);
    let restored = http.call_tool("restore_note", json!({"id": id})).await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert!(
        restored.text.contains("kept in sqlite"),
        "{}",
        restored.text
    );
    for _ in 0..50 {
        let verified = run(&["audit", "verify", "--config", config.to_str().unwrap()]);
        let continued = verified
            .lines()
            .find(|line| line.contains("chain of replica moved intact"))
            .and_then(|line| line.split_whitespace().find_map(|w| w.parse::<u64>().ok()));
        if continued.is_some_and(|rows| rows > records) {
            assert!(!new.stderr().contains(&key));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the replica named like the copy did not continue its chain");
}
