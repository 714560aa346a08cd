//! Test support: runs the real `warden` binary on 127.0.0.1 with a private data
//! directory, and connects real clients to it.

#![allow(dead_code)] // each test file uses a different part of this module
#![allow(clippy::unwrap_used)] // test support: a failed unwrap is a failed test

#[path = "../../../warden-store/tests/support/postgres.rs"]
pub mod postgres;
pub mod raw;
#[path = "../../../warden-cluster/tests/support/redis.rs"]
pub mod redis;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_warden");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Modern,
}

pub const ERAS: [Era; 2] = [Era::Legacy, Era::Modern];

/// A running `warden serve`, killed on drop.
pub struct Warden {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub admin_key: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// With `WARDEN_TEST_STORE=postgres`: the database this Warden keeps its state in.
    store: Option<PgStore>,
    _tmp: Option<tempfile::TempDir>,
}

/// A Warden's state in PostgreSQL: the suites that run with `WARDEN_TEST_STORE=postgres`
/// (see scripts/test.sh) exercise the gateway on that store as they do on SQLite. Each
/// data directory gets its own database (a Warden restarted on it, while the first is
/// still held, finds its state there); the configuration gains a `[store]` section.
#[derive(Clone)]
struct PgStore {
    db: Arc<postgres::TestDb>,
    config: PathBuf,
    /// The first admin key, made (as an operator would) before the first start.
    admin_key: String,
}

const STORE_SECRET: &str = "9f3c1e7a5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";

fn on_postgres() -> bool {
    match std::env::var("WARDEN_TEST_STORE").as_deref() {
        Err(_) | Ok("sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("WARDEN_TEST_STORE={other}: \"sqlite\" or \"postgres\""),
    }
}

impl PgStore {
    /// The database of `data_dir`, and the configuration (the test's own, or a new one
    /// in `cwd`) that names it; `args` gain `--config` when they had none.
    fn prepare(cwd: &Path, data_dir: &Path, args: &mut Vec<String>) -> Self {
        static DATABASES: std::sync::LazyLock<
            Mutex<std::collections::HashMap<PathBuf, std::sync::Weak<postgres::TestDb>>>,
        > = std::sync::LazyLock::new(Mutex::default);
        let (db, fresh) = {
            let mut databases = DATABASES.lock().unwrap();
            match databases.get(data_dir).and_then(std::sync::Weak::upgrade) {
                Some(db) => (db, false),
                None => {
                    let db = Arc::new(postgres::TestDb::create());
                    databases.insert(data_dir.to_owned(), Arc::downgrade(&db));
                    (db, true)
                }
            }
        };
        let config = match args.iter().position(|a| a == "--config") {
            Some(i) => cwd.join(&args[i + 1]),
            None => {
                let path = cwd.join(format!(
                    "warden-store-{}.toml",
                    data_dir.file_name().unwrap().to_string_lossy()
                ));
                args.extend(["--config".to_owned(), path.to_str().unwrap().to_owned()]);
                path
            }
        };
        let mut text = std::fs::read_to_string(&config).unwrap_or_default();
        if !text.contains("[store]") {
            text.push_str(
                "\n[store]\nbackend = \"postgres\"\nurl = \"env:WARDEN_TEST_PG_URL\"\n\
                 owner_url = \"env:WARDEN_TEST_PG_OWNER\"\n\
                 server_secret = \"env:WARDEN_TEST_PG_SECRET\"\n",
            );
            std::fs::write(&config, text).unwrap();
        }
        let mut store = Self {
            db,
            config,
            admin_key: String::new(),
        };
        if fresh {
            store.admin_key = store.prepare_database();
        }
        store
    }

    /// Migrates the fresh database and makes the first admin key, as an operator
    /// following the README would before the first `warden serve`.
    fn prepare_database(&self) -> String {
        let run = |args: &[&str]| {
            let out = Command::new(BIN)
                .args(args)
                .arg("--config")
                .arg(&self.config)
                .env_remove("WARDEN_DATA_DIR")
                .envs(self.env())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "warden {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        run(&["store", "migrate"]);
        run(&[
            "keys", "add", "--tenant", "default", "--name", "admin", "--scope", "admin",
        ])
    }

    fn env(&self) -> [(&'static str, String); 3] {
        [
            ("WARDEN_TEST_PG_URL", self.db.runtime_url()),
            ("WARDEN_TEST_PG_OWNER", self.db.owner_url()),
            ("WARDEN_TEST_PG_SECRET", STORE_SECRET.to_owned()),
        ]
    }

    /// Runs `sql` as the database's owner.
    fn run(&self, sql: &str) {
        let sql = sql.to_owned();
        on_database(self.db.owner_url(), |client| async move {
            client.batch_execute(&sql).await.unwrap();
        });
    }

    /// Every row of every table of Warden's schema, as text.
    fn dump(&self) -> String {
        on_database(self.db.admin_url(), |client| async move {
            let tables = client
                .query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'warden'",
                    &[],
                )
                .await
                .unwrap();
            let mut all = String::new();
            for table in tables {
                let name: String = table.get(0);
                for row in client
                    .query(&format!("SELECT t::text FROM warden.\"{name}\" t"), &[])
                    .await
                    .unwrap()
                {
                    all.push_str(row.get::<_, &str>(0));
                    all.push('\n');
                }
            }
            all
        })
    }
}

/// Runs `work` on a connection to `url`, on a thread of its own (callers may be inside
/// a runtime already).
fn on_database<T, F, Fut>(url: String, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                work(client).await
            })
    })
    .join()
    .unwrap()
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(ready) = &ready
                && let Some(at) = line.find("listening on http")
            {
                // Human or JSON logs: the URL ends at a space or a quote.
                let url = line[at + "listening on ".len()..]
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or_default();
                let _ = ready.send(url.to_owned());
            }
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
}

impl Warden {
    /// A fresh server with its own data directory.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut warden =
            Self::start_with(tmp.path(), &["--data-dir", data_dir.to_str().unwrap()], &[]);
        warden._tmp = Some(tmp);
        warden
    }

    /// A fresh server with its own data directory and `config` as its warden.toml.
    pub fn start_config(config: &str) -> Self {
        Self::start_config_with_env(config, &[])
    }

    /// [`Warden::start_config`], with `env` added to Warden's own environment.
    pub fn start_config_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let config_path = tmp.path().join("warden.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut warden = Self::start_with(
            tmp.path(),
            &[
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--config",
                config_path.to_str().unwrap(),
            ],
            env,
        );
        warden._tmp = Some(tmp);
        warden
    }

    /// `warden serve --listen 127.0.0.1:0 <args>` in `cwd`.
    pub fn start_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = args
            .iter()
            .position(|a| *a == "--data-dir")
            .map(|i| PathBuf::from(args[i + 1]))
            .or_else(|| {
                env.iter()
                    .find(|(n, _)| *n == "WARDEN_DATA_DIR")
                    .map(|(_, v)| PathBuf::from(v))
            })
            .unwrap_or_else(|| cwd.join("warden-data"));
        let mut args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        let store = on_postgres().then(|| PgStore::prepare(cwd, &data_dir, &mut args));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = serve_command(cwd, &args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some(store) = &store {
            command.envs(store.env());
        }
        let mut child = command.spawn().expect("spawn warden");
        let (stdout, stderr) = (
            Arc::new(Mutex::new(String::new())),
            Arc::new(Mutex::new(String::new())),
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        collect(child.stdout.take().unwrap(), stdout.clone(), None);
        collect(child.stderr.take().unwrap(), stderr.clone(), Some(ready_tx));
        let url = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("warden did not start:\n{}", stderr.lock().unwrap());
            }
        };
        let mut warden = Self {
            child,
            url,
            data_dir,
            admin_key: String::new(),
            stdout,
            stderr,
            store,
            _tmp: None,
        };
        let key_file = warden.data_dir.join("admin.key");
        if let Some(store) = &warden.store
            && !store.admin_key.is_empty()
            && !key_file.exists()
        {
            std::fs::write(&key_file, format!("{}\n", store.admin_key)).unwrap();
        }
        warden.admin_key = std::fs::read_to_string(key_file)
            .unwrap_or_default()
            .trim()
            .to_owned();
        warden
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Whether `needle` shows up in the log within five seconds (lines reach the test
    /// through a pipe, a little after they are written).
    pub fn logged(&self, needle: &str) -> bool {
        for _ in 0..50 {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops the server the way an operator's service manager would (SIGTERM) and waits.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// SIGTERM and wait, keeping the data directory for a look afterwards.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("warden did not stop on SIGTERM within 10 s");
    }

    /// SIGKILL: no shutdown at all, as in a crash or the OOM killer.
    pub fn kill_hard(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Sends `signal` (`-HUP`, `-TERM`, …) to the Warden process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status();
    }

    /// `warden keys add`; returns (key id, key).
    pub fn add_key(&self, tenant: &str, name: &str, scope: &str) -> (String, String) {
        let out = self.cli(&[
            "keys", "add", "--tenant", tenant, "--name", name, "--scope", scope,
        ]);
        assert!(
            out.status.success(),
            "keys add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let id = stderr
            .split_whitespace()
            .find(|w| w.starts_with("key_"))
            .unwrap()
            .to_owned();
        (id, key)
    }

    pub fn revoke(&self, id: &str) {
        let out = self.cli(&["keys", "revoke", id]);
        assert!(
            out.status.success(),
            "revoke failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `needle` is anywhere Warden wrote: its stdout and stderr, and every file
    /// under its data dir.
    pub fn has_written(&self, needle: &str) -> bool {
        fn walk(dir: &Path, into: &mut Vec<u8>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, into);
                } else {
                    into.extend_from_slice(&std::fs::read(&path).unwrap());
                }
            }
        }
        let mut all = Vec::new();
        all.extend_from_slice(self.stdout().as_bytes());
        all.extend_from_slice(self.stderr().as_bytes());
        walk(&self.data_dir, &mut all);
        if let Some(store) = &self.store {
            all.extend_from_slice(store.dump().as_bytes());
        }
        all.windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    /// The admin listener's base URL, from the log.
    pub fn admin_url(&self) -> String {
        assert!(
            self.logged("admin endpoint at "),
            "admin endpoint not logged"
        );
        let log = self.stderr();
        let at = log
            .find("admin endpoint at ")
            .expect("admin endpoint logged");
        log[at + "admin endpoint at ".len()..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_owned()
    }

    /// `warden audit list --json`: every record of the audit trail, oldest first.
    pub fn audit_rows(&self) -> Vec<Value> {
        let out = self.cli(&["audit", "list", "--json", "--limit", "1000000"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The audit records that satisfy `wanted`, once there are at least `count` of them
    /// (records reach the file a flush delay after their answer); panics after 10 s.
    pub fn audited(&self, count: usize, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
        for _ in 0..100 {
            let found: Vec<Value> = self
                .audit_rows()
                .into_iter()
                .filter(|r| wanted(r))
                .collect();
            if found.len() >= count {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "fewer than {count} matching audit records: {:?}",
            self.audit_rows()
        );
    }

    /// Runs `sql` on the audit trail's table in the store itself (`audit.db`, or the
    /// PostgreSQL database as its owner), behind Warden's back, as a tamperer would.
    pub fn alter_audit(&self, sql: &str) {
        match &self.store {
            None => {
                let db = self.data_dir.join("audit.db");
                let status = Command::new("python3")
                    .args([
                        "-c",
                        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()",
                        db.to_str().unwrap(),
                        sql,
                    ])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            Some(store) => store.run(&format!("SET search_path = warden; {sql}")),
        }
    }

    /// Runs a `warden` subcommand against this server's store (its data directory, or
    /// its configuration's PostgreSQL).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(BIN);
        command.args(args);
        match &self.store {
            None => command.env("WARDEN_DATA_DIR", &self.data_dir),
            Some(store) => command
                .env_remove("WARDEN_DATA_DIR")
                .env("WARDEN_CONFIG", &store.config)
                .envs(store.env()),
        };
        command.output().unwrap()
    }
}

/// `warden serve` on loopback ports of the system's choosing, in `cwd`, with `args`.
fn serve_command(cwd: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd).arg("serve");
    // Ports of the system's choosing, unless the test names its own.
    for flag in ["--listen", "--admin-listen"] {
        if !args.contains(&flag) {
            command.args([flag, "127.0.0.1:0"]);
        }
    }
    command
        .args(args)
        .env_remove("WARDEN_DATA_DIR")
        .env("WARDEN_LOG", "info");
    command
}

/// Runs `warden serve` with `config` for a server expected to stop on its own (a
/// refused configuration); returns whether it exited successfully, and its stderr.
pub fn serve_to_exit(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config).unwrap();
    let data = dir.path().join("data");
    let out = serve_command(
        dir.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            path.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Client = RunningService<RoleClient, ()>;

/// An rmcp client in the given era, authenticated with `key`.
pub async fn connect(
    url: &str,
    key: &str,
    era: Era,
) -> Result<Client, rmcp::service::ClientInitializeError> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned());
    let transport = StreamableHttpClientTransport::from_config(config);
    let lifecycle = match era {
        Era::Legacy => ClientLifecycleMode::Initialize,
        Era::Modern => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    };
    ().serve_with_lifecycle(transport, lifecycle).await
}

pub async fn call(
    client: &Client,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
}

/// The structured content of a successful call.
pub async fn call_ok(client: &Client, tool: &str, arguments: Value) -> Value {
    let result = call(client, tool, arguments)
        .await
        .unwrap_or_else(|e| panic!("{tool} failed: {e}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} returned a tool error: {result:?}"
    );
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("{tool}: no structured content"))
}

/// The text of a successful call's first content block.
pub async fn call_text(client: &Client, tool: &str, arguments: Value) -> String {
    let result = call(client, tool, arguments)
        .await
        .unwrap_or_else(|e| panic!("{tool} failed: {e}"));
    let content = serde_json::to_value(&result.content).unwrap();
    content[0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{tool}: no text in {content}"))
        .to_owned()
}

/// Opens loopback to Warden's own outbound requests (HTTP upstreams and key sets that
/// tests run on 127.0.0.1); by default the egress guard refuses it.
pub const EGRESS_LOOPBACK: &str = "\n[egress]\nallow = [\"127.0.0.1\"]\n";

/// Turns off the confirmation of writes after untrusted text, for suites about other
/// things that read untrusted text and then write (policies.rs tests the confirmation).
pub const NO_CONFIRM_AFTER_UNTRUSTED: &str = "\n[policy]\nafter_untrusted = \"off\"\n";

/// An `[[upstream]]` running the Python stdio fixture (tests/fixtures/stdio_server.py).
pub fn fixture_upstream(name: &str, extra: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_server.py"
    );
    let python = python();
    format!("[[upstream]]\nname = \"{name}\"\ncommand = [\"{python}\", \"{script}\"]\n{extra}\n")
}

/// A child process killed however the test ends.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The HTTP fixture (`fixtures/http_server.py`) started with `args`: the child, and
/// the URL it printed.
pub fn start_http_fixture<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Child, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/http_server.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    (child, url.trim().to_owned())
}

/// The Python interpreter itself, not a launcher on `PATH` (a pyenv shim is a shell
/// script that reads its own tree, which a sandboxed child may not).
pub fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    })
}

/// Whether a process with this id exists.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// True when the call came back as a tool error (`isError: true`).
pub async fn call_is_tool_error(client: &Client, tool: &str, arguments: Value) -> bool {
    call(client, tool, arguments)
        .await
        .unwrap_or_else(|e| panic!("{tool} failed: {e}"))
        .is_error
        == Some(true)
}
