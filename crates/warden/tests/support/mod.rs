//! Test support: runs the real `warden` binary on 127.0.0.1 with a private data
//! directory, and connects real clients to it.

#![allow(dead_code)] // each test file uses a different part of this module
#![allow(clippy::unwrap_used)] // test support: a failed unwrap is a failed test

pub mod raw;

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
    _tmp: Option<tempfile::TempDir>,
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
        let mut command = serve_command(cwd, args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
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
        let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            child,
            url,
            data_dir,
            admin_key,
            stdout,
            stderr,
            _tmp: None,
        }
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

    /// Runs a `warden` subcommand against this server's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env("WARDEN_DATA_DIR", &self.data_dir)
            .output()
            .unwrap()
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

/// An `[[upstream]]` running the Python stdio fixture (tests/fixtures/stdio_server.py).
pub fn fixture_upstream(name: &str, extra: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_server.py"
    );
    let python = python();
    format!("[[upstream]]\nname = \"{name}\"\ncommand = [\"{python}\", \"{script}\"]\n{extra}\n")
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
