//! The MCP servers Warden fronts. Each configured upstream is the embedded notes server,
//! a stdio child (shared, or one per tenant) or a Streamable HTTP server; whichever it is,
//! a request goes in and the upstream's JSON-RPC answer comes out, with what the upstream
//! sent the caller on the way delivered as [`Event`]s.
//!
//! [`Upstreams`] merges their catalogues (names prefixed when there are several), routes
//! calls back by name or URI, and keeps the catalogue fresh on `list_changed`.

mod connections;
mod handshake;
mod http;
mod link;
mod merge;
mod notes;
pub mod outbound;
pub mod sandbox;
mod sse_upstream;
#[cfg(test)]
mod ssrf_tests;
mod stdio;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, watch};
use warden_config::{Builtin, HttpTransport, Source};
use warden_notes::NotesServer;
use warden_proto::cut::MessageLimits;
use warden_store::Notes;

pub use handshake::{ServerFacts, UpstreamEra};
pub use link::{Event, ServerRequest};
pub use merge::{
    KindSource, ListError, ListPage, Offered, ToolKindInfo, UnmatchedRule, Upstreams, UriRoute,
    Withheld, unmatched_rules,
};
pub use stdio::ChildHost;

/// Why an upstream could not answer. Shown to clients only as "upstream unavailable" and
/// the like; details go to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream is not available")]
    Unavailable,
    #[error("the upstream process exited")]
    Exited,
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("the upstream sent a message over the size limit")]
    Oversized,
    #[error("the upstream answered with HTTP status {0}")]
    Status(u16),
    #[error("the upstream could not be reached")]
    Connect,
    #[error("the upstream broke the protocol")]
    Protocol,
    #[error("handshake with the upstream failed: {0}")]
    Handshake(String),
    #[error("cannot start the upstream: {0}")]
    Spawn(String),
    #[error(
        "cannot start the upstream: the command {0} was not found, or is not executable (searched the working directory and PATH)"
    )]
    CommandNotFound(String),
}

/// What start-up would refuse, or fail on, for these upstreams, found without starting
/// anything: an HTTP upstream's address closed by the egress rules, a command that is
/// not there, an enforced sandbox this kernel cannot give. One message per problem,
/// naming the upstream.
pub fn preflight(
    configs: &[warden_config::Upstream],
    egress: &warden_egress::EgressPolicy,
) -> Vec<String> {
    let mut problems = Vec::new();
    for config in configs {
        let problem = match &config.source {
            Source::Builtin(_) => None,
            Source::Http(http) => match reqwest::Url::parse(&http.url) {
                Err(_) => Some("its url is not a URL".to_owned()),
                Ok(url) => egress.check_url(&url).err().map(|error| error.to_string()),
            },
            Source::Stdio(stdio) => {
                let cwd = stdio
                    .cwd
                    .clone()
                    .or_else(|| std::env::current_dir().ok())
                    .unwrap_or_default();
                let program = stdio
                    .command
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default();
                if sandbox::locate(program, &cwd).is_none() {
                    Some(UpstreamError::CommandNotFound(program.to_owned()).to_string())
                } else if stdio.sandbox.mode == warden_config::SandboxMode::Enforced {
                    sandbox::probe()
                        .missing()
                        .map(|missing| format!("its sandbox needs {missing}, which this kernel lacks (sandbox = \"best-effort\" runs it with what the kernel has)"))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            problems.push(format!("upstream {:?}: {problem}", config.name));
        }
    }
    problems
}

enum Backend {
    /// The embedded server, and what its `import_url` fetches with.
    Notes(NotesServer, notes::Fetcher),
    Stdio(Box<stdio::Children>),
    Http(http::HttpUpstream),
    /// The deprecated HTTP+SSE transport.
    Sse(sse_upstream::SseUpstream),
}

/// One configured upstream.
pub struct Upstream {
    name: Arc<str>,
    prefix: String,
    call_timeout: Duration,
    backend: Backend,
    unsolicited: broadcast::Sender<Value>,
    facts: Mutex<Option<Arc<ServerFacts>>>,
    restarts: Arc<AtomicU64>,
    trust_annotations: bool,
    untrusted: bool,
    refresh: Option<Duration>,
    paths_root: Option<std::path::PathBuf>,
    /// What it was started from: a reload restarts it only when this changes.
    config: warden_config::Upstream,
    /// Turns true to stop it: at shutdown, or when a reload replaces it.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Whoever a request comes from, as far as an upstream is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub tenant: &'a str,
    /// The key id (or `oauth:<subject>`) asking: the embedded notes record it as the
    /// author of what it writes, and mark results showing another's text.
    pub author: &'a str,
}

impl Upstream {
    fn start(
        config: &warden_config::Upstream,
        notes: &Arc<dyn Notes>,
        egress: &Arc<warden_egress::EgressPolicy>,
        host: &ChildHost,
    ) -> Result<Self, UpstreamError> {
        let (stop, shutdown) = watch::channel(false);
        let name: Arc<str> = config.name.as_str().into();
        let unsolicited = link::Link::unsolicited_channel();
        let restarts = Arc::new(AtomicU64::new(0));
        let limits = MessageLimits {
            max_bytes: config.max_message_bytes,
            prose_bytes: config.stream_prose_bytes,
        };
        let backend = match &config.source {
            Source::Builtin(Builtin::Notes) => Backend::Notes(
                NotesServer::new(notes.clone()),
                notes::Fetcher::new(egress)?,
            ),
            Source::Stdio(stdio) => {
                Backend::Stdio(Box::new(stdio::Children::start(stdio::Launcher {
                    name: name.clone(),
                    config: stdio.clone(),
                    limits,
                    eras: handshake::EraCache::default(),
                    unsolicited: unsolicited.clone(),
                    shutdown,
                    restarts: restarts.clone(),
                    egress: egress.for_children(),
                    host: host.clone(),
                })))
            }
            Source::Http(http) if http.transport == HttpTransport::Sse => {
                Backend::Sse(sse_upstream::SseUpstream::start(
                    name.clone(),
                    http,
                    limits,
                    unsolicited.clone(),
                    egress,
                    shutdown,
                    restarts.clone(),
                )?)
            }
            Source::Http(http) => Backend::Http(http::HttpUpstream::new(
                name.clone(),
                http,
                limits,
                unsolicited.clone(),
                egress,
                shutdown,
            )?),
        };
        Ok(Self {
            name,
            prefix: config.prefix.clone(),
            call_timeout: config.call_timeout,
            backend,
            unsolicited,
            facts: Mutex::new(None),
            restarts,
            trust_annotations: config.trust_annotations,
            untrusted: config.untrusted,
            refresh: config.refresh,
            paths_root: config.paths_root.clone(),
            config: config.clone(),
            stop,
        })
    }

    /// The configuration it was started from.
    pub fn config(&self) -> &warden_config::Upstream {
        &self.config
    }

    /// Times a child of this upstream stopped and was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this is Warden's own embedded server.
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Notes(..))
    }

    /// Whether the upstream's tool annotations classify its tools (Warden's own server,
    /// or one the operator vouches for with `trust_annotations`).
    pub fn trusts_annotations(&self) -> bool {
        self.trust_annotations
    }

    /// The directory its tools' path arguments stay in, unless a tool rule says another.
    pub fn paths_root(&self) -> Option<&std::path::Path> {
        self.paths_root.as_deref()
    }

    /// How often its tools are listed again without a change notice.
    pub fn refresh(&self) -> Option<Duration> {
        self.refresh
    }

    /// Whether what this upstream returns is wrapped as untrusted data.
    pub fn is_untrusted(&self) -> bool {
        self.untrusted
    }

    /// What the upstream said about itself in its last handshake.
    pub fn facts(&self) -> Option<Arc<ServerFacts>> {
        self.facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Process ids of this upstream's running children (none for other kinds).
    pub fn child_pids(&self) -> Vec<u32> {
        match &self.backend {
            Backend::Stdio(children) => children.pids(),
            _ => Vec::new(),
        }
    }

    /// Takes the embedded server's mark (`warden_notes::FOREIGN_TEXT`) off a result and
    /// says whether it was there: the result shows text someone other than the caller
    /// wrote. Only the embedded server is believed; other upstreams are untrusted or
    /// not by configuration alone, and their `_meta` is theirs.
    pub fn take_foreign_mark(&self, result: &mut Value) -> bool {
        if !self.is_embedded() {
            return false;
        }
        let Some(meta) = result.get_mut("_meta").and_then(Value::as_object_mut) else {
            return false;
        };
        let marked = meta.remove(warden_notes::FOREIGN_TEXT).is_some();
        if meta.is_empty()
            && let Some(result) = result.as_object_mut()
        {
            result.remove("_meta");
        }
        marked
    }

    /// Sends one request and returns the upstream's JSON-RPC response message (with
    /// `result` or `error`). Messages sent on the way go to `events` when given. The call
    /// is bounded by the upstream's `call_timeout`; dropping the future, or the timeout,
    /// cancels it upstream.
    pub async fn request(
        &self,
        caller: Caller<'_>,
        method: &str,
        params: Map<String, Value>,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Value, UpstreamError> {
        tokio::time::timeout(
            self.call_timeout,
            self.request_unbounded(caller, method, params, events),
        )
        .await
        .unwrap_or(Err(UpstreamError::Timeout))
    }

    async fn request_unbounded(
        &self,
        caller: Caller<'_>,
        method: &str,
        mut params: Map<String, Value>,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Value, UpstreamError> {
        let (link, facts, http) = match &self.backend {
            Backend::Notes(server, fetcher) => {
                if self.facts().is_none() {
                    self.remember(Arc::new(ServerFacts {
                        era: UpstreamEra::Modern,
                        capabilities: notes::facts_capabilities(),
                        instructions: Some(notes::INSTRUCTIONS.into()),
                    }));
                }
                let asker = warden_notes::Asker {
                    tenant: caller.tenant,
                    author: caller.author,
                };
                return notes::request(server, fetcher, asker, method, params).await;
            }
            Backend::Stdio(children) => {
                let ready = children.ready(caller.tenant, self.call_timeout).await?;
                (ready.link, ready.facts, None)
            }
            Backend::Http(http) => {
                let (link, facts) = http.ready().await?;
                (link, facts, Some(http))
            }
            Backend::Sse(sse) => {
                let ready = sse.ready(self.call_timeout).await?;
                (ready.link, ready.facts, None)
            }
        };
        facts.era.prepare(&mut params);
        if self
            .facts()
            .is_none_or(|known| !Arc::ptr_eq(&known, &facts))
        {
            self.remember(facts);
        }
        match http {
            Some(http) => http.request(&link, method, params, events).await,
            None => link.request(method, params, events).await,
        }
    }

    fn remember(&self, facts: Arc<ServerFacts>) {
        *self.facts.lock().unwrap_or_else(PoisonError::into_inner) = Some(facts);
    }

    /// Stops it (children: stdin closed, a grace period, then a kill) and waits until
    /// it has stopped. Calls still in flight fail as unavailable.
    async fn stop(&self) {
        self.stop.send_replace(true);
        if let Backend::Stdio(children) = &self.backend {
            children.stopped().await;
        }
    }

    /// Turns true once it is stopped.
    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn unsolicited(&self) -> broadcast::Receiver<Value> {
        self.unsolicited.subscribe()
    }
}
