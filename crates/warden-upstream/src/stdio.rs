//! MCP servers run as child processes: newline-delimited JSON-RPC on stdin/stdout, stderr
//! to the log. A supervisor restarts a child that dies (with backoff) and fails its
//! in-flight calls at once; shutdown closes stdin, waits briefly, then kills the child's
//! whole process group.
//!
//! Every child gets its own egress proxy (`HTTP_PROXY` and friends) and, unless its
//! upstream says `sandbox = false`, a scrubbed environment, a working directory of its
//! own under the data directory, and the confinement of [`crate::sandbox`].

use sha2::Digest as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio as ProcessStdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, mpsc, watch};
use warden_config::{SandboxMode, Stdio};
use warden_proto::cut::{CutError, MessageCutter, MessageLimits};

use crate::UpstreamError;
use crate::handshake::{EraCache, ServerFacts, handshake};
use crate::link::{Link, Outbound};
use crate::sandbox;
use warden_egress::EgressPolicy;
use warden_egress::proxy::EgressProxy;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A command that is not there will not appear in a second: look again this rarely.
const NOT_FOUND_BACKOFF: Duration = Duration::from_secs(300);
/// A child that ran this long is healthy again: its next restart is immediate.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long a closed stdin may take to end a child before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Longest stderr line kept for the log.
const MAX_STDERR_LINE: usize = 4096;
/// What a sandboxed child keeps of Warden's environment (besides its configured `env`):
/// enough to find programs and speak the locale, nothing that might be a credential.
const ENV_KEPT: [&str; 12] = [
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "LC_TIME",
    "TZ",
    "TERM",
    "USER",
    "LOGNAME",
];
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Where stdio children are started from, the same for every stdio upstream.
#[derive(Debug, Clone)]
pub struct ChildHost {
    /// Working directories: `<this>/<upstream>` (`/tenants/<tenant>` with `per_tenant`).
    pub workdirs: PathBuf,
    /// Warden's own binary, whose `sandbox-exec` subcommand confines a child; without
    /// it an enforced sandbox cannot start.
    pub trampoline: Option<PathBuf>,
    /// What no sandbox rule may reach: the data directory, the configuration file.
    pub protected: Vec<PathBuf>,
}

/// A running child, ready for calls.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    pub link: Arc<Link>,
    pub facts: Arc<ServerFacts>,
}

/// One supervised child (or, when it is down, the wait for the next one).
#[derive(Debug)]
pub(crate) struct Supervised {
    ready: watch::Receiver<Option<Ready>>,
    /// True while the child cannot be started at all (its command is missing): callers
    /// are told at once instead of waiting for a child that will not come.
    missing: watch::Receiver<bool>,
    pid: watch::Receiver<Option<u32>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Supervised {
    /// The running child, waiting for a restart up to `wait`.
    pub async fn ready(&self, wait: Duration) -> Result<Ready, UpstreamError> {
        let mut ready = self.ready.clone();
        let mut missing = self.missing.clone();
        tokio::select! {
            found = tokio::time::timeout(wait, ready.wait_for(Option::is_some)) => match found {
                Ok(Ok(ready)) => ready.clone().ok_or(UpstreamError::Unavailable),
                // The supervisor is gone, or no child came up in time.
                Ok(Err(_)) | Err(_) => Err(UpstreamError::Unavailable),
            },
            _ = missing.wait_for(|missing| *missing) => Err(UpstreamError::Unavailable),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }

    /// Waits for the supervisor to finish (after shutdown was signalled).
    async fn stopped(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Programs that run the script named by their first operand: `sha256` pins the
/// script rather than the interpreter.
const INTERPRETERS: [&str; 12] = [
    "python", "python3", "node", "nodejs", "bash", "sh", "dash", "deno", "bun", "ruby", "perl",
    "php",
];

/// The file `[[upstream]] sha256` pins: the script an interpreter runs, else the
/// program itself (found as the child would find it).
fn pinned_file(
    program: &str,
    args: &[String],
    base: &std::path::Path,
) -> Option<std::path::PathBuf> {
    let name = program.rsplit('/').next().unwrap_or(program);
    let interpreter = INTERPRETERS.contains(&name)
        || name
            .strip_prefix("python3.")
            .is_some_and(|minor| minor.bytes().all(|b| b.is_ascii_digit()));
    if interpreter && let Some(script) = args.iter().find(|arg| !arg.starts_with('-')) {
        let script = base.join(script);
        if script.is_file() {
            return Some(script);
        }
    }
    sandbox::locate(program, base)
}

/// Refuses to start a child whose pinned file does not have the configured hash.
async fn check_pin(
    program: &str,
    args: &[String],
    base: &std::path::Path,
    expected: &str,
) -> Result<(), UpstreamError> {
    let Some(file) = pinned_file(program, args, base) else {
        return Err(UpstreamError::CommandNotFound(program.to_owned()));
    };
    let bytes = tokio::fs::read(&file).await.map_err(|e| {
        UpstreamError::Spawn(format!(
            "cannot read {} to check its sha256: {}",
            file.display(),
            e.kind()
        ))
    })?;
    let found = hex::encode(sha2::Sha256::digest(&bytes));
    if found == expected {
        Ok(())
    } else {
        Err(UpstreamError::Spawn(format!(
            "the sha256 of {} is {found}, not the pinned {expected}: not started (if the change is yours, put the new hash in [[upstream]] sha256)",
            file.display()
        )))
    }
}

/// Everything needed to start (and restart) one kind of child.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    pub name: Arc<str>,
    pub config: Stdio,
    pub limits: MessageLimits,
    pub eras: EraCache,
    pub unsolicited: broadcast::Sender<Value>,
    pub shutdown: watch::Receiver<bool>,
    /// Counts restarts, for metrics.
    pub restarts: Arc<std::sync::atomic::AtomicU64>,
    pub egress: Arc<EgressPolicy>,
    pub host: ChildHost,
}

impl Launcher {
    /// Starts the supervisor of one child; `tenant` only labels its log lines.
    pub fn supervise(&self, tenant: Option<&str>) -> Supervised {
        let (ready_tx, ready) = watch::channel(None);
        let (missing_tx, missing) = watch::channel(false);
        let (pid_tx, pid) = watch::channel(None);
        let launcher = self.clone();
        let label = tenant.map(str::to_owned);
        let task = tokio::spawn(async move {
            launcher.run(label, ready_tx, missing_tx, pid_tx).await;
        });
        Supervised {
            ready,
            missing,
            pid,
            task: Mutex::new(Some(task)),
        }
    }

    async fn run(
        self,
        tenant: Option<String>,
        ready: watch::Sender<Option<Ready>>,
        missing: watch::Sender<bool>,
        pid: watch::Sender<Option<u32>>,
    ) {
        let mut shutdown = self.shutdown.clone();
        let mut backoff = FIRST_BACKOFF;
        if let Err(reason) = self.can_confine() {
            // Fail closed: dropping `ready` tells every caller at once.
            tracing::error!(upstream = %self.name, tenant, %reason, "refusing to start the upstream without its sandbox; set sandbox = \"best-effort\" to run it with what this system supports");
            return;
        }
        while !*shutdown.borrow() {
            let started = Instant::now();
            let mut not_found = false;
            let spawned = self.spawn(tenant.as_deref()).await;
            missing.send_replace(matches!(spawned, Err(UpstreamError::CommandNotFound(_))));
            match spawned {
                Ok(running) => {
                    pid.send_replace(running.child.id());
                    self.serve(running, &ready, &mut shutdown).await;
                    pid.send_replace(None);
                }
                Err(error @ UpstreamError::CommandNotFound(_)) => {
                    tracing::error!(upstream = %self.name, %error, retry_secs = NOT_FOUND_BACKOFF.as_secs(), "cannot start the upstream: fix its command in the configuration (warden config check names it too)");
                    not_found = true;
                }
                Err(error) => {
                    tracing::error!(upstream = %self.name, %error, "cannot start the upstream");
                }
            }
            if *shutdown.borrow() {
                break;
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = FIRST_BACKOFF;
            }
            let delay = if not_found {
                NOT_FOUND_BACKOFF
            } else {
                backoff
            };
            tracing::warn!(upstream = %self.name, delay_ms = delay.as_millis() as u64, "upstream stopped; restarting");
            self.restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Why an enforced sandbox cannot be had here, if it cannot.
    fn can_confine(&self) -> Result<(), String> {
        if self.config.sandbox.mode != SandboxMode::Enforced {
            return Ok(());
        }
        if let Some(missing) = sandbox::probe().missing() {
            return Err(format!("this kernel lacks {missing}"));
        }
        if self.host.trampoline.is_none() {
            return Err("Warden's own binary, which confines children, was not found".into());
        }
        Ok(())
    }

    async fn spawn(&self, tenant: Option<&str>) -> Result<Running, UpstreamError> {
        let (program, args) = self
            .config
            .command
            .split_first()
            .ok_or_else(|| UpstreamError::Spawn("empty command".into()))?;
        let proxy = EgressProxy::start(self.egress.clone(), self.name.clone(), tenant)
            .await
            .map_err(|e| UpstreamError::Spawn(format!("egress proxy: {}", e.kind())))?;
        let sandboxed = match (self.config.sandbox.mode, &self.host.trampoline) {
            (SandboxMode::Off, _) | (SandboxMode::BestEffort, None) => None,
            (_, Some(trampoline)) => Some(trampoline),
            (SandboxMode::Enforced, None) => {
                return Err(UpstreamError::Spawn("no sandbox trampoline".into()));
            }
        };
        if let Some(expected) = &self.config.sha256 {
            // Where the child resolves relative paths: its configured directory, its
            // sandbox's working directory, or Warden's own.
            let base = match (&self.config.cwd, sandboxed) {
                (Some(cwd), _) => cwd.clone(),
                (None, Some(_)) => self.workdir(tenant)?,
                (None, None) => std::env::current_dir().map_err(|e| {
                    UpstreamError::Spawn(format!("working directory: {}", e.kind()))
                })?,
            };
            check_pin(program, args, &base, expected).await?;
        }
        let mut command = match sandboxed {
            Some(trampoline) => {
                let workdir = self.workdir(tenant)?;
                // Landlock rules are paths the trampoline opens after moving into `cwd`:
                // all of them absolute.
                let cwd = match &self.config.cwd {
                    Some(cwd) => std::path::absolute(cwd)
                        .map_err(|e| UpstreamError::Spawn(format!("cwd: {}", e.kind())))?,
                    None => workdir.clone(),
                };
                let program = sandbox::locate(program, &cwd)
                    .ok_or_else(|| UpstreamError::CommandNotFound(program.clone()))?;
                let spec = sandbox::Spec::new(
                    &self.config.sandbox,
                    &program,
                    args,
                    &cwd,
                    &workdir,
                    proxy.port(),
                    &self.host.protected,
                );
                let mut command = Command::new(trampoline);
                command
                    .args(spec.to_args(&program, args))
                    .env_clear()
                    .envs(
                        ENV_KEPT
                            .iter()
                            .filter_map(|name| Some((name, std::env::var_os(name)?))),
                    )
                    .env("HOME", &workdir)
                    .env("TMPDIR", &workdir)
                    .current_dir(&cwd);
                command
            }
            None => {
                let mut command = Command::new(program);
                // The sandbox starts a session of its own; here, a process group.
                command.args(args).process_group(0);
                if let Some(cwd) = &self.config.cwd {
                    command.current_dir(cwd);
                }
                command
            }
        };
        command
            .envs(self.config.env.iter().map(|(k, v)| (k, v.expose())))
            // After the configured environment: the proxy is Warden's, not the child's.
            .envs(PROXY_VARS.iter().map(|name| (name, proxy.url())))
            .env("NO_PROXY", "")
            .env("no_proxy", "")
            .stdin(ProcessStdio::piped())
            .stdout(ProcessStdio::piped())
            .stderr(ProcessStdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound if sandboxed.is_none() => {
                UpstreamError::CommandNotFound(program.clone())
            }
            kind => UpstreamError::Spawn(kind.to_string()),
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Spawn("no pipes".into()));
        };
        tracing::info!(upstream = %self.name, tenant, pid = child.id(), sandboxed = sandboxed.is_some(), proxy_port = proxy.port(), "upstream started");
        let (link, queue) = Link::new(self.name.clone(), self.unsolicited.clone());
        let writer = tokio::spawn(write_lines(stdin, queue));
        let reader = tokio::spawn(read_lines(
            BufReader::new(stdout),
            link.clone(),
            self.limits,
            self.name.clone(),
        ));
        tokio::spawn(log_stderr(BufReader::new(stderr), self.name.clone()));
        Ok(Running {
            group: child.id(),
            child,
            link,
            writer,
            reader,
            _proxy: proxy,
        })
    }

    /// The child's own directory under the data directory, created private.
    fn workdir(&self, tenant: Option<&str>) -> Result<PathBuf, UpstreamError> {
        let mut dir = std::path::absolute(self.host.workdirs.join(&*self.name))
            .map_err(|e| UpstreamError::Spawn(format!("working directory: {}", e.kind())))?;
        if let Some(tenant) = tenant {
            dir = dir.join("tenants").join(directory_name(tenant));
        }
        create_private_dir(&dir)
            .map_err(|e| UpstreamError::Spawn(format!("working directory: {}", e.kind())))?;
        Ok(dir)
    }

    /// Handshakes, publishes the child, and waits until it ends or Warden stops.
    async fn serve(
        &self,
        mut running: Running,
        ready: &watch::Sender<Option<Ready>>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let outcome = tokio::select! {
            facts = handshake(&running.link, &self.eras) => Some(facts),
            _ = running.child.wait() => None,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        match outcome {
            Some(Ok(facts)) => {
                ready.send_replace(Some(Ready {
                    link: running.link.clone(),
                    facts: Arc::new(facts),
                }));
                tokio::select! {
                    status = running.child.wait() => {
                        tracing::warn!(upstream = %self.name, status = ?status.ok(), "upstream exited");
                    }
                    _ = &mut running.reader => {
                        tracing::warn!(upstream = %self.name, "upstream output ended or broke the protocol");
                    }
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            }
            Some(Err(error)) => {
                tracing::error!(upstream = %self.name, %error, "upstream handshake failed");
            }
            None => {}
        }
        ready.send_replace(None);
        running.link.close(UpstreamError::Exited);
        running.stop().await;
    }
}

/// A tenant name as a directory name: itself when plainly safe, else hex.
fn directory_name(tenant: &str) -> String {
    let plain = !tenant.is_empty()
        && tenant.len() <= 64
        && !tenant.starts_with('.')
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if plain {
        tenant.to_owned()
    } else {
        format!("x-{}", hex::encode(tenant))
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

struct Running {
    child: Child,
    /// The child's process group (its own pid): grandchildren end with it.
    group: Option<u32>,
    link: Arc<Link>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    /// Closed when the child is gone.
    _proxy: EgressProxy,
}

impl Running {
    /// Closing stdin is how an MCP client asks a stdio server to exit.
    async fn stop(mut self) {
        self.writer.abort();
        let _ = (&mut self.writer).await;
        if tokio::time::timeout(EXIT_GRACE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if let Some(group) = self.group {
            kill_group(group);
        }
        self.reader.abort();
    }
}

/// Whatever the child left running in its group goes too.
#[cfg(target_os = "linux")]
fn kill_group(group: u32) {
    use rustix::process::{Pid, Signal, kill_process_group};
    if let Some(pid) = i32::try_from(group).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_group(_group: u32) {}

async fn write_lines(mut stdin: ChildStdin, mut queue: mpsc::Receiver<Outbound>) {
    while let Some(outbound) = queue.recv().await {
        let mut line = outbound.message.to_string().into_bytes();
        line.push(b'\n');
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Reads one line in the pieces the reader holds, handing each to `piece` without the
/// newline: a long line is never held here. `false` at the end of the stream, with
/// nothing read.
async fn read_line_in_pieces(
    reader: &mut (impl AsyncBufRead + Unpin),
    mut piece: impl FnMut(&[u8]),
) -> std::io::Result<bool> {
    let mut started = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(started);
        }
        started = true;
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], Some(at + 1)),
            None => (buffer, None),
        };
        piece(chunk);
        let used = done.unwrap_or(buffer.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(true);
        }
    }
}

/// Reads one line of at most `max` bytes. A longer line is consumed and refused.
async fn read_line_capped(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut fits = true;
    let read = read_line_in_pieces(reader, |chunk| {
        if fits && line.len() + chunk.len() <= max {
            line.extend_from_slice(chunk);
        } else {
            fits = false;
            line.clear();
        }
    })
    .await?;
    Ok(read.then_some(fits))
}

/// Reads one line as a message, cut as it streams in (`warden_proto::cut`): a 50 MB
/// line is never held whole. `None` at the end of the stream.
async fn read_message_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    limits: MessageLimits,
) -> std::io::Result<Option<Result<Vec<u8>, CutError>>> {
    let mut cutter = MessageCutter::new(limits);
    let read = read_line_in_pieces(reader, |chunk| cutter.push(chunk)).await?;
    Ok(read.then(|| cutter.finish()))
}

/// Feeds the child's stdout to the link. A message over the size limit even once cut
/// fails the call it answers (or is dropped, if it answers none): the line was read to
/// its end, so the stream is still in step. A non-JSON line breaks the protocol: the
/// calls it might have answered cannot be known, so the child is restarted.
async fn read_lines(
    mut stdout: impl AsyncBufRead + Unpin,
    link: Arc<Link>,
    limits: MessageLimits,
    name: Arc<str>,
) {
    loop {
        let line = match read_message_line(&mut stdout, limits).await {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(CutError::Oversized { id }))) => {
                tracing::error!(upstream = %name, max = limits.max_bytes, "upstream wrote a message over the size limit");
                if let Some(id) = id {
                    link.fail(id, UpstreamError::Oversized);
                }
                continue;
            }
            Ok(Some(Err(CutError::TooDeep))) => {
                tracing::error!(upstream = %name, "upstream wrote a message nested too deep");
                link.close(UpstreamError::Protocol);
                return;
            }
            Ok(None) | Err(_) => return,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(message) => link.receive(message, None),
            Err(_) => {
                tracing::error!(upstream = %name, "upstream wrote a line that is not JSON");
                link.close(UpstreamError::Protocol);
                return;
            }
        }
    }
}

/// Logs a child's stderr line by line; a secret that spans lines (a private key block)
/// is dropped whole (the log writer redacts what fits on one line).
async fn log_stderr(mut stderr: impl AsyncBufRead + Unpin, name: Arc<str>) {
    let mut line = Vec::new();
    let mut redactor = warden_redact::LineRedactor::default();
    while let Ok(Some(_)) = read_line_capped(&mut stderr, &mut line, MAX_STDERR_LINE).await {
        let text = String::from_utf8_lossy(&line);
        let Some(text) = redactor.line(text.trim_end()) else {
            continue;
        };
        if !text.is_empty() {
            tracing::info!(upstream = %name, stderr = %text, "upstream stderr");
        }
    }
}

/// The children of one stdio upstream: one shared, or one per tenant.
#[derive(Debug)]
pub(crate) struct Children {
    launcher: Launcher,
    shared: Option<Supervised>,
    per_tenant: Mutex<HashMap<String, Arc<Supervised>>>,
}

impl Children {
    pub fn start(launcher: Launcher) -> Self {
        let support = sandbox::probe();
        tracing::info!(
            upstream = %launcher.name,
            mode = ?launcher.config.sandbox.mode,
            landlock_filesystem = support.filesystem,
            landlock_network = support.network,
            landlock_scopes = support.scopes,
            "sandbox"
        );
        let shared = (!launcher.config.per_tenant).then(|| launcher.supervise(None));
        Self {
            launcher,
            shared,
            per_tenant: Mutex::new(HashMap::new()),
        }
    }

    /// The child serving `tenant`, started on first use when children are per tenant.
    pub async fn ready(&self, tenant: &str, wait: Duration) -> Result<Ready, UpstreamError> {
        match &self.shared {
            Some(shared) => shared.ready(wait).await,
            None => self.tenant_child(tenant).ready(wait).await,
        }
    }

    fn tenant_child(&self, tenant: &str) -> Arc<Supervised> {
        self.per_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(self.launcher.supervise(Some(tenant))))
            .clone()
    }

    /// Waits until every child has stopped (after shutdown was signalled).
    pub async fn stopped(&self) {
        if let Some(shared) = &self.shared {
            shared.stopped().await;
        }
        let tenants: Vec<Arc<Supervised>> = self
            .per_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for child in tenants {
            child.stopped().await;
        }
    }

    /// Process ids of the running children, for operators and tests.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.shared.iter().filter_map(Supervised::pid).collect();
        pids.extend(
            self.per_tenant
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .filter_map(|s| s.pid()),
        );
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_consumed_and_refused() {
        let input: &[u8] = b"short\n0123456789abcdef\nnext\ntail";
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        while let Some(fits) = read_line_capped(&mut reader, &mut line, 8).await.unwrap() {
            seen.push((fits, String::from_utf8(line.clone()).unwrap()));
        }
        assert_eq!(
            seen,
            [
                (true, "short".to_owned()),
                (false, String::new()),
                (true, "next".to_owned()),
                (true, "tail".to_owned()),
            ]
        );
    }
}
