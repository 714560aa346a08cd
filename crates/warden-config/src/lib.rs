//! Configuration in two stages: `raw` mirrors the TOML file and rejects unknown fields
//! (with the field's name and line); [`Config`] is the validated, typed result with every
//! default filled in. Command-line flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;
mod oauth;
mod pinning;
mod policy;
mod reload;
mod store;
mod telemetry;
mod tools;
mod upstream;

pub use cluster::{Cluster, OnRedisDown};
pub use oauth::{JwksSource, OAuth, ScopeNames};
pub use pinning::unpinned;
pub use policy::{Policy, PolicyFile};
pub use reload::{ReloadPlan, plan_reload};
pub use store::{
    DEFAULT_CONNECT_TIMEOUT_MS, Postgres as PostgresStore, ServerSecret, Store, host_replica_name,
    is_replica_name,
};
pub use telemetry::{TRACES_PATH, Telemetry};
pub use tools::{
    Confirm, DEFAULT_TOOL_COST, JsonLimits, OutputCheck, Returns, ToolClass, ToolRules,
    glob_matches, rules_for,
};
pub use upstream::{
    Builtin, DEFAULT_UPSTREAM_NAME, Http, HttpTransport, Sandbox, SandboxMode, Secret, Source,
    Stdio, Upstream,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_DATA_DIR: &str = "warden-data";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Prose shown of one result, after cleaning.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 256 * 1024;
/// No configuration may raise the body cap past this.
pub const MAX_BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 3600;
/// Wrong credentials one IP may present per window before it is refused outright.
pub const DEFAULT_MAX_AUTH_FAILURES: u32 = 10;
pub const DEFAULT_AUTH_FAILURE_WINDOW_SECS: u64 = 60;
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
    /// A setting whose name is built from the file (an upstream's index, a tool's name).
    #[error("{path}: {field}: {message}")]
    InvalidNamed {
        path: PathBuf,
        field: String,
        message: String,
    },
}

mod raw {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub data_dir: Option<String>,
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub sessions: Sessions,
        #[serde(default)]
        pub auth: Auth,
        #[serde(default)]
        pub upstream: Vec<Upstream>,
        #[serde(default)]
        pub tools: std::collections::BTreeMap<String, Tool>,
        #[serde(default)]
        pub rate: Rate,
        #[serde(default)]
        pub audit: Audit,
        #[serde(default)]
        pub admin: Admin,
        #[serde(default)]
        pub results: Results,
        #[serde(default)]
        pub egress: Egress,
        #[serde(default)]
        pub tenants: std::collections::BTreeMap<String, Tenant>,
        #[serde(default)]
        pub store: crate::store::raw::Store,
        #[serde(default)]
        pub cluster: crate::cluster::raw::Cluster,
        #[serde(default)]
        pub policy: crate::policy::raw::Policy,
        #[serde(default)]
        pub telemetry: crate::telemetry::raw::Telemetry,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rate {
        pub per_key_rpm: Option<u32>,
        pub per_ip_rpm: Option<u32>,
        pub max_concurrent_per_key: Option<usize>,
        pub max_concurrent_total: Option<usize>,
        pub queue_depth: Option<usize>,
        pub queue_timeout_ms: Option<u64>,
        pub per_session_calls: Option<u64>,
        pub daily_cost_cap: Option<u64>,
        pub max_streams_per_key: Option<usize>,
        pub ipv4_prefix: Option<u8>,
        pub ipv6_prefix: Option<u8>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Egress {
        #[serde(default)]
        pub allow: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Results {
        pub harden: Option<bool>,
        pub max_result_bytes: Option<usize>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub listen: Option<String>,
        pub tls: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Audit {
        pub enabled: Option<bool>,
        pub flush_ms: Option<u64>,
        pub retain_days: Option<u64>,
        pub args_hash: Option<bool>,
        pub queue: Option<usize>,
        pub wait_for_write: Option<bool>,
        pub write_wait_ms: Option<u64>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tenant {
        pub daily_cost_cap: Option<u64>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tool {
        pub max_depth: Option<usize>,
        pub max_string_bytes: Option<usize>,
        pub max_array_items: Option<usize>,
        pub max_object_keys: Option<usize>,
        pub max_total_nodes: Option<usize>,
        pub allow_extra_properties: Option<bool>,
        #[serde(default)]
        pub paths: Vec<String>,
        pub root: Option<String>,
        pub output_check: Option<String>,
        pub rpm: Option<u32>,
        pub cost: Option<u64>,
        pub kind: Option<String>,
        pub confirm: Option<String>,
        pub returns: Option<OneOrMany>,
    }

    /// A value written as one string or a list of them.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(untagged)]
    pub enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub name: String,
        pub prefix: Option<String>,
        pub builtin: Option<String>,
        pub command: Option<Vec<String>>,
        #[serde(default)]
        pub env: std::collections::BTreeMap<String, String>,
        pub cwd: Option<String>,
        pub per_tenant: Option<bool>,
        pub sandbox: Option<SandboxSetting>,
        pub sandbox_memory_mb: Option<u64>,
        pub sandbox_max_processes: Option<u64>,
        pub sandbox_max_open_files: Option<u64>,
        pub sandbox_cpu_seconds: Option<u64>,
        #[serde(default)]
        pub sandbox_read: Vec<String>,
        #[serde(default)]
        pub sandbox_write: Vec<String>,
        pub sandbox_udp: Option<bool>,
        pub url: Option<String>,
        #[serde(default)]
        pub headers: std::collections::BTreeMap<String, String>,
        pub call_timeout_ms: Option<u64>,
        pub max_message_bytes: Option<usize>,
        pub max_concurrent: Option<usize>,
        pub trust_annotations: Option<bool>,
        pub untrusted: Option<bool>,
        pub refresh_secs: Option<u64>,
        pub transport: Option<String>,
        pub paths_root: Option<String>,
        pub require_pinned: Option<bool>,
        pub sha256: Option<String>,
        #[serde(default)]
        pub pin_sha256: Vec<String>,
    }

    /// `sandbox = true | false | "best-effort"`.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum SandboxSetting {
        Switch(bool),
        Word(String),
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: Option<String>,
        #[serde(default)]
        pub allowed_hosts: Vec<String>,
        #[serde(default)]
        pub allowed_origins: Vec<String>,
        #[serde(default)]
        pub allow_plaintext: bool,
        pub tls_cert: Option<String>,
        pub tls_key: Option<String>,
        pub tls_handshake_timeout_ms: Option<u64>,
        pub max_connections: Option<usize>,
        pub header_read_timeout_ms: Option<u64>,
        pub body_read_timeout_ms: Option<u64>,
        pub shutdown_grace_ms: Option<u64>,
        #[serde(default)]
        pub trusted_proxies: Vec<String>,
        pub prefix_separator: Option<String>,
        pub require_pinned_upstreams: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Auth {
        pub max_failures_per_ip: Option<u32>,
        pub failure_window_secs: Option<u64>,
        pub api_keys: Option<bool>,
        pub oauth: Option<OAuth>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct OAuth {
        pub issuer: Option<String>,
        pub resource: Option<String>,
        #[serde(default)]
        pub authorization_servers: Vec<String>,
        pub jwks_file: Option<String>,
        pub jwks_url: Option<String>,
        pub jwks_refresh_secs: Option<u64>,
        pub leeway_secs: Option<u64>,
        pub tenant_claim: Option<String>,
        pub default_tenant: Option<String>,
        pub scope_claim: Option<String>,
        pub groups_claim: Option<String>,
        pub scopes: Option<OAuthScopes>,
        #[serde(default)]
        pub pin_sha256: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct OAuthScopes {
        pub read: Option<String>,
        pub write: Option<String>,
        pub admin: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub max_body_bytes: Option<usize>,
        pub max_depth: Option<usize>,
        pub max_string_bytes: Option<usize>,
        pub max_array_items: Option<usize>,
        pub max_object_keys: Option<usize>,
        pub max_total_nodes: Option<usize>,
        pub max_sessions_per_key: Option<usize>,
        pub confirm_timeout_ms: Option<u64>,
        pub max_waiting: Option<usize>,
        pub max_waiting_per_tenant: Option<usize>,
        pub max_waiting_per_key: Option<usize>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sessions {
        pub max_sessions: Option<usize>,
        pub idle_timeout_secs: Option<u64>,
    }
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// `Host` values accepted besides loopback names on a loopback listener; lowercase,
    /// each a name (any port) or `name:port`. Empty: loopback names only on a loopback
    /// listener, any Host elsewhere.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`, lowercase) allowed to call. Empty: origins
    /// on this machine for a loopback listener, the Host's own origin elsewhere.
    pub allowed_origins: Vec<String>,
    /// The operator accepts plain HTTP on a non-loopback address (e.g. behind a
    /// TLS-terminating proxy on the same host).
    pub allow_plaintext: bool,
    /// HTTPS instead of HTTP, when configured.
    pub tls: Option<Tls>,
    /// Reverse proxies (networks) whose `X-Forwarded-For` / `Forwarded` header names
    /// the client's address; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    /// The shares of the lists where calls wait for a person or a client's answer.
    pub waiting: Waiting,
    pub connections: Connections,
    pub auth: Auth,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub sessions: Sessions,
    pub upstreams: Vec<Upstream>,
    /// Rules for single tools, by catalogue name.
    pub tools: std::collections::BTreeMap<String, ToolRules>,
    pub rate: Rate,
    pub audit: Audit,
    /// The admin listener (the console, `/metrics`, `/healthz`, `/readyz`), never the
    /// public port.
    pub admin_listen: SocketAddr,
    /// The admin listener speaks TLS with the `[server]` certificate (`[admin] tls`).
    pub admin_tls: bool,
    pub results: Results,
    /// Hosts and networks Warden's own requests may reach besides public addresses.
    pub egress_allow: Vec<EgressRule>,
    /// Where durable state lives.
    pub store: Store,
    /// What replicas share beyond the store (Redis), if configured.
    pub cluster: Option<Cluster>,
    /// Policies as code (`[policy]`).
    pub policy: Policy,
    /// Traces to an OpenTelemetry collector (`[telemetry]`), if configured.
    pub telemetry: Option<Telemetry>,
}

/// A destination the operator opens to Warden's outbound requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// A host name or address, as written in URLs (lowercase).
    Host(String),
    /// A network: address and prefix length.
    Network(std::net::IpAddr, u8),
}

/// `10.0.0.0/8`, `fd00::/8`, `127.0.0.1`, `internal.example.com`.
fn egress_rule(entry: &str) -> Result<EgressRule, String> {
    let entry = entry.trim().to_ascii_lowercase();
    if entry.is_empty() || entry.contains('*') {
        return Err(format!(
            "{entry:?} is not a host, address or network (no wildcards)"
        ));
    }
    if entry.contains('/') {
        let (ip, prefix) = network(&entry)?;
        return Ok(EgressRule::Network(ip, prefix));
    }
    let bare = entry.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(EgressRule::Host(bare.to_owned()));
    }
    allowed_host(&entry).map(EgressRule::Host)
}

/// Hardening of what upstreams return (see `warden_policy::harden_result`).
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// On by default; off leaves results exactly as the upstream sent them.
    pub harden: bool,
    /// Text content beyond this many bytes in one result is cut, with a marker.
    pub max_result_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Checked on every body before it is parsed.
    pub json: JsonLimits,
}

/// The listener's certificate chain and key (PEM files, read at start and on SIGHUP).
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A connection that has not finished its handshake by then is closed.
    pub handshake_timeout: Duration,
}

/// What one client connection may hold, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Connections {
    /// Open connections (TLS handshakes included); past it, new ones wait in the
    /// kernel's backlog until one closes.
    pub max: usize,
    /// Time a connection may take to send a complete request head: from its opening, and
    /// again after each response while it is kept alive (slow-loris and idle keep-alive
    /// connections are closed by the same clock).
    pub header_read_timeout: Duration,
    /// Time a request may take to deliver its whole body (408 after it).
    pub body_read_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish before their
    /// connections are closed.
    pub shutdown_grace: Duration,
}

/// Layered rate limits. Every refusal is a 429 with `Retry-After`, before the call
/// reaches an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// Requests per minute of one key (a key's own `rpm` replaces it); bursts up to a
    /// minute's worth.
    pub per_key_rpm: u32,
    /// Requests per minute of one client address, counted before authentication.
    pub per_ip_rpm: u32,
    pub max_concurrent_per_key: usize,
    pub max_concurrent_total: usize,
    /// Calls of one key (and in all) that may wait for a slot; past it, refused at once.
    pub queue_depth: usize,
    /// The longest a queued call waits for a slot.
    pub queue_timeout: Duration,
    /// Calls one legacy session (or one modern client of a key) may make in all.
    pub per_session_calls: u64,
    /// Cost one tenant may spend per UTC day, unless `[tenants."<id>"]` says otherwise.
    pub daily_cost_cap: u64,
    pub tenant_caps: std::collections::BTreeMap<String, u64>,
    /// Open GET streams of one key.
    pub max_streams_per_key: usize,
    /// Per-address limits count addresses in networks of this size: an IPv4 client is
    /// one address (/32), an IPv6 client one /64 (a host owns the whole /64).
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

/// The audit trail: one record per request that reached policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    /// On unless the operator turns it off (logged as a warning at start).
    pub enabled: bool,
    /// A record is committed at most this long after its response was sent.
    pub flush: Duration,
    pub retain_days: u64,
    /// Records carry a keyed hash of the canonical arguments (never the arguments).
    pub args_hash: bool,
    /// Records waiting for the writer; when full, requests wait for room (none is lost).
    pub queue: usize,
    /// An answer leaves only once its record is written (at most this long after the
    /// call; past it the answer goes anyway, and the log says so): a replica killed
    /// outright loses no record of a call its client was answered. `None`: records are
    /// queued before the answer and written within `flush`. On by default with
    /// PostgreSQL (several replicas), off with SQLite.
    pub wait_for_write: Option<Duration>,
}

/// Brute-force resistance: an IP that presents this many wrong credentials within the
/// window is refused (429) until the window ends, before any key lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    pub max_failures_per_ip: u32,
    pub failure_window: Duration,
    /// Warden's own API keys are accepted (default); off only when OAuth is on.
    pub api_keys: bool,
    /// JWT access tokens from an authorization server, beside or instead of API keys.
    pub oauth: Option<OAuth>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sessions {
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    /// Legacy sessions one key may hold; past it, its least recently used idle session
    /// is closed to make room.
    pub max_per_key: usize,
}

/// Calls waiting for a person (confirmations, held approvals) or for a client's answers
/// (parked mid-call questions): each list is shared by key, then by tenant, then in all,
/// so that one tenant cannot fill it for the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub per_key: usize,
    pub per_tenant: usize,
    pub total: usize,
    /// The longest a call waits for a person's answer on its stream before it is
    /// refused.
    pub confirm_timeout: Duration,
}

pub const DEFAULT_MAX_SESSIONS_PER_KEY: usize = 32;
pub const DEFAULT_CONFIRM_TIMEOUT_MS: u64 = 120_000;
pub const DEFAULT_MAX_WAITING: usize = 1024;
pub const DEFAULT_MAX_WAITING_PER_TENANT: usize = 256;
pub const DEFAULT_MAX_WAITING_PER_KEY: usize = 32;

/// Values given on the command line or in the environment; they beat the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads `path` if given, otherwise starts from the defaults, then applies overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (mut config, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let environment = |name: &str| std::env::var(name).ok();
                (Self::from_text(&text, path, environment)?, path.to_owned())
            }
            None => {
                let source = PathBuf::from("<defaults>");
                let environment = |name: &str| std::env::var(name).ok();
                (
                    validate(raw::Config::default(), &source, environment)?,
                    source,
                )
            }
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(admin) = overrides.admin_listen {
            config.admin_listen = admin;
        }
        if config.admin_listen == config.listen && config.listen.port() != 0 {
            return Err(ConfigError::Invalid {
                path: source.clone(),
                field: "admin.listen",
                message: "must not be the public listen address: metrics stay off the public port"
                    .into(),
            });
        }
        // Checked after the overrides: `--listen 0.0.0.0:8080` needs the same consent.
        plaintext_consented(&config, &source)?;
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

impl Config {
    /// A configuration from its text, before any command-line override: `source` names
    /// it in errors, `lookup_env` resolves `env:NAME` values.
    pub fn from_text(
        text: &str,
        source: &Path,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        validate(parse(text, source)?, source, lookup_env)
    }
}

/// Where a configuration puts an installation's data and its admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Locations {
    pub data_dir: PathBuf,
    pub admin_listen: String,
    /// With `[admin] tls`: the certificate the admin listener presents (the `[server]`
    /// one), which the admin commands expect to see.
    pub admin_certificate: Option<PathBuf>,
    path: PathBuf,
    store: store::raw::Store,
}

impl Locations {
    /// Where the durable state is (`[store]`, its `env:` values resolved now: only the
    /// commands that open the store need them).
    pub fn store(&self) -> Result<Store, ConfigError> {
        store::validate(self.store.clone(), &|name| std::env::var(name).ok()).map_err(
            |(field, message)| ConfigError::Invalid {
                path: self.path.clone(),
                field,
                message,
            },
        )
    }
}

/// A tenant or key name: 1-64 letters, digits, '-', '_' or '.' (tenants also name
/// directories). Kept here, beside the settings that name tenants, for every crate
/// that judges one (the key store, OAuth tokens' tenant claims).
pub fn is_valid_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The data directory, admin listener and store a configuration file names (or the defaults),
/// read without validating the rest: an admin command needs only these, and must not
/// fail for want of an upstream's `env:` secret in the operator's shell.
pub fn locations_in(path: &Path) -> Result<Locations, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Admin {
        listen: Option<String>,
        tls: Option<bool>,
    }
    #[derive(serde::Deserialize)]
    struct Server {
        tls_cert: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Only {
        data_dir: Option<String>,
        admin: Option<Admin>,
        server: Option<Server>,
        store: Option<store::raw::Store>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let only: Only = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let admin_tls = only.admin.as_ref().and_then(|admin| admin.tls) == Some(true);
    let admin_certificate = only
        .server
        .and_then(|server| server.tls_cert)
        .filter(|_| admin_tls)
        .map(PathBuf::from);
    Ok(Locations {
        data_dir: only
            .data_dir
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
        admin_listen: only
            .admin
            .and_then(|admin| admin.listen)
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned()),
        admin_certificate,
        path: path.to_owned(),
        store: only.store.unwrap_or_default(),
    })
}

/// A configured number, or its default; one outside `range` is refused with the bounds.
pub(crate) fn bounded<T: PartialOrd + Copy + std::fmt::Display>(
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, String> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "must be between {} and {}",
            range.start(),
            range.end()
        ))
    }
}

/// Plain HTTP beyond loopback sends keys across the network in the clear: only with the
/// operator's explicit `allow_plaintext`.
fn plaintext_consented(config: &Config, path: &Path) -> Result<(), ConfigError> {
    if config.listen.ip().is_loopback() || config.allow_plaintext || config.tls.is_some() {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        path: path.to_owned(),
        field: "server.listen",
        message: format!(
            "{} is not loopback: Warden serves plain HTTP there only with [server] allow_plaintext = true (keys would cross the network unencrypted)",
            config.listen
        ),
    })
}

fn parse(text: &str, path: &Path) -> Result<raw::Config, ConfigError> {
    // toml's message names the unknown field, the line and the column.
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: plain_words(&e.to_string()),
    })
}

/// The TOML library's message in an operator's words: what a setting needs (`a whole
/// number ≥ 0`, `true or false`, `a list`), never Rust's type names (`usize`,
/// `untagged enum SandboxSetting`).
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 14] = [
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected u16", "expected a whole number ≥ 0"),
        ("expected u8", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        (
            "expected a sequence",
            "expected a list, e.g. [\"a\", \"b\"]",
        ),
        ("expected a map", "expected a table"),
        ("invalid type: ", "wrong kind of value: "),
        ("invalid value: ", "value not allowed: "),
        ("floating point", "decimal number"),
        (
            "data did not match any variant of untagged enum SandboxSetting",
            "expected true, false or \"best-effort\"",
        ),
    ];
    let mut plain = message.to_owned();
    for (jargon, words) in WORDS {
        plain = plain.replace(jargon, words);
    }
    // `expected struct Limits`: the name is ours, not the operator's.
    while let Some(at) = plain.find("expected struct ") {
        let name_at = at + "expected struct ".len();
        let end = plain[name_at..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(plain.len(), |len| name_at + len);
        plain.replace_range(at..end, "expected a table");
    }
    plain
}

fn validate(
    raw: raw::Config,
    path: &Path,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let invalid = |field, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        field,
        message,
    };
    let listen = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("{listen:?} is not an IP address and port, e.g. {DEFAULT_LISTEN}"),
        )
    })?;
    let allowed_hosts = raw
        .server
        .allowed_hosts
        .iter()
        .map(|host| allowed_host(host).map_err(|m| invalid("server.allowed_hosts", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let allowed_origins = raw
        .server
        .allowed_origins
        .iter()
        .map(|origin| allowed_origin(origin).map_err(|m| invalid("server.allowed_origins", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let connections = connections(&raw.server).map_err(|(field, m)| invalid(field, m))?;
    let tls = match (raw.server.tls_cert, raw.server.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let timeout = bounded(
                raw.server.tls_handshake_timeout_ms,
                DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
                100..=60_000,
            )
            .map_err(|m| invalid("server.tls_handshake_timeout_ms", m))?;
            Some(Tls {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                handshake_timeout: Duration::from_millis(timeout),
            })
        }
        _ => {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key go together".into(),
            ));
        }
    };
    let max_failures_per_ip = bounded(
        raw.auth.max_failures_per_ip,
        DEFAULT_MAX_AUTH_FAILURES,
        1..=100_000,
    )
    .map_err(|m| invalid("auth.max_failures_per_ip", m))?;
    let failure_window = bounded(
        raw.auth.failure_window_secs,
        DEFAULT_AUTH_FAILURE_WINDOW_SECS,
        1..=86_400,
    )
    .map_err(|m| invalid("auth.failure_window_secs", m))?;
    let oauth = raw
        .auth
        .oauth
        .map(oauth::validate)
        .transpose()
        .map_err(|(field, m)| invalid(field, m))?;
    let api_keys = raw.auth.api_keys.unwrap_or(true);
    if !api_keys && oauth.is_none() {
        return Err(invalid(
            "auth.api_keys",
            "can be false only with [auth.oauth]: nothing could authenticate".into(),
        ));
    }
    let max_body_bytes = bounded(
        raw.limits.max_body_bytes,
        DEFAULT_MAX_BODY_BYTES,
        1024..=MAX_BODY_BYTES_CEILING,
    )
    .map_err(|m| invalid("limits.max_body_bytes", m))?;
    let json =
        tools::body_caps(&raw.limits).map_err(|(field, message)| ConfigError::InvalidNamed {
            path: path.to_owned(),
            field,
            message,
        })?;
    let tools = tools::validate(raw.tools, &json).map_err(|(field, message)| {
        ConfigError::InvalidNamed {
            path: path.to_owned(),
            field,
            message,
        }
    })?;
    let rate = tools::rate(&raw.rate, &raw.tenants).map_err(|(field, message)| {
        ConfigError::InvalidNamed {
            path: path.to_owned(),
            field,
            message,
        }
    })?;
    let store = store::validate(raw.store, &lookup_env).map_err(|(field, m)| invalid(field, m))?;
    let cluster =
        cluster::validate(raw.cluster, &lookup_env).map_err(|(field, m)| invalid(field, m))?;
    let telemetry =
        telemetry::validate(raw.telemetry, &lookup_env).map_err(|(field, m)| invalid(field, m))?;
    // Policy files are named relative to the configuration file.
    let policy = policy::validate(raw.policy, path.parent().unwrap_or(Path::new(".")))
        .map_err(|(field, m)| invalid(field, m))?;
    let audit = Audit {
        enabled: raw.audit.enabled.unwrap_or(true),
        flush: Duration::from_millis(
            bounded(raw.audit.flush_ms, 100, 1..=10_000)
                .map_err(|m| invalid("audit.flush_ms", m))?,
        ),
        retain_days: bounded(raw.audit.retain_days, 90, 1..=36_500)
            .map_err(|m| invalid("audit.retain_days", m))?,
        args_hash: raw.audit.args_hash.unwrap_or(false),
        queue: bounded(raw.audit.queue, 10_000, 16..=1_000_000)
            .map_err(|m| invalid("audit.queue", m))?,
        wait_for_write: match raw
            .audit
            .wait_for_write
            .unwrap_or(matches!(store, Store::Postgres(_)))
        {
            true => Some(Duration::from_millis(
                bounded(raw.audit.write_wait_ms, 10_000, 100..=600_000)
                    .map_err(|m| invalid("audit.write_wait_ms", m))?,
            )),
            false => None,
        },
    };
    let admin = raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let admin_listen: SocketAddr = admin.parse().map_err(|_| {
        invalid(
            "admin.listen",
            format!("{admin:?} is not an IP address and port, e.g. {DEFAULT_ADMIN_LISTEN}"),
        )
    })?;
    let admin_tls = raw.admin.tls.unwrap_or(false);
    if admin_tls && tls.is_none() {
        return Err(invalid(
            "admin.tls",
            "the admin listener uses the [server] certificate: set tls_cert and tls_key".into(),
        ));
    }
    let results = Results {
        harden: raw.results.harden.unwrap_or(true),
        max_result_bytes: bounded(
            raw.results.max_result_bytes,
            DEFAULT_MAX_RESULT_BYTES,
            1024..=64 * 1024 * 1024,
        )
        .map_err(|m| invalid("results.max_result_bytes", m))?,
    };
    let egress_allow = raw
        .egress
        .allow
        .iter()
        .map(|entry| egress_rule(entry).map_err(|m| invalid("egress.allow", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let max_sessions = bounded(
        raw.sessions.max_sessions,
        DEFAULT_MAX_SESSIONS,
        1..=1_000_000,
    )
    .map_err(|m| invalid("sessions.max_sessions", m))?;
    let idle = bounded(
        raw.sessions.idle_timeout_secs,
        DEFAULT_SESSION_IDLE_SECS,
        10..=7 * 24 * 3600,
    )
    .map_err(|m| invalid("sessions.idle_timeout_secs", m))?;
    let max_per_key = bounded(
        raw.limits.max_sessions_per_key,
        DEFAULT_MAX_SESSIONS_PER_KEY,
        1..=100_000,
    )
    .map_err(|m| invalid("limits.max_sessions_per_key", m))?;
    let waiting = waiting(&raw.limits).map_err(|(field, m)| invalid(field, m))?;
    let trusted_proxies = raw
        .server
        .trusted_proxies
        .iter()
        .map(|entry| network(entry).map_err(|m| invalid("server.trusted_proxies", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let data_dir = raw
        .data_dir
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "must not be empty".into()));
    }
    let separator = raw
        .server
        .prefix_separator
        .as_deref()
        .unwrap_or(upstream::DEFAULT_PREFIX_SEPARATOR);
    let separator_ok = separator.len() <= 4
        && separator
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !separator_ok {
        return Err(invalid(
            "server.prefix_separator",
            "must be at most 4 characters of A-Z, a-z, 0-9, _ and - (function-calling APIs accept no others in tool names)".into(),
        ));
    }
    let upstreams = upstream::validate(
        raw.upstream,
        separator,
        raw.server.require_pinned_upstreams.unwrap_or(false),
        results.max_result_bytes,
        lookup_env,
    )
    .map_err(|(field, message)| ConfigError::InvalidNamed {
        path: path.to_owned(),
        field,
        message,
    })?;
    Ok(Config {
        upstreams,
        listen,
        allowed_hosts,
        allowed_origins,
        allow_plaintext: raw.server.allow_plaintext,
        tls,
        connections,
        auth: Auth {
            max_failures_per_ip,
            failure_window: Duration::from_secs(failure_window),
            api_keys,
            oauth,
        },
        data_dir,
        limits: Limits {
            max_body_bytes,
            json,
        },
        tools,
        rate,
        audit,
        admin_listen,
        admin_tls,
        results,
        egress_allow,
        sessions: Sessions {
            max_sessions,
            idle_timeout: Duration::from_secs(idle),
            max_per_key,
        },
        trusted_proxies,
        waiting,
        store,
        cluster,
        policy,
        telemetry,
    })
}

fn waiting(limits: &raw::Limits) -> Result<Waiting, (&'static str, String)> {
    let total = bounded(limits.max_waiting, DEFAULT_MAX_WAITING, 1..=1_000_000)
        .map_err(|m| ("limits.max_waiting", m))?;
    let per_tenant = bounded(
        limits.max_waiting_per_tenant,
        DEFAULT_MAX_WAITING_PER_TENANT.min(total),
        1..=total,
    )
    .map_err(|m| ("limits.max_waiting_per_tenant", m))?;
    let per_key = bounded(
        limits.max_waiting_per_key,
        DEFAULT_MAX_WAITING_PER_KEY.min(per_tenant),
        1..=per_tenant,
    )
    .map_err(|m| ("limits.max_waiting_per_key", m))?;
    let confirm_timeout = bounded(
        limits.confirm_timeout_ms,
        DEFAULT_CONFIRM_TIMEOUT_MS,
        1_000..=3_600_000,
    )
    .map_err(|m| ("limits.confirm_timeout_ms", m))?;
    Ok(Waiting {
        per_key,
        per_tenant,
        total,
        confirm_timeout: Duration::from_millis(confirm_timeout),
    })
}

/// `10.0.0.0/8`, `fd00::/8`, or one address (a network of one).
fn network(entry: &str) -> Result<(std::net::IpAddr, u8), String> {
    let entry = entry.trim();
    let (ip, prefix) = entry.split_once('/').unwrap_or((entry, ""));
    let ip: std::net::IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{entry:?} is not an address or a network such as 10.0.0.0/8"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        max
    } else {
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{entry:?} has a prefix length outside 0..={max}"))?
    };
    Ok((ip, prefix))
}

fn connections(server: &raw::Server) -> Result<Connections, (&'static str, String)> {
    let millis = |value, default, field| {
        bounded(value, default, 100..=600_000)
            .map(Duration::from_millis)
            .map_err(|m| (field, m))
    };
    Ok(Connections {
        max: bounded(
            server.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1..=1_000_000,
        )
        .map_err(|m| ("server.max_connections", m))?,
        header_read_timeout: millis(
            server.header_read_timeout_ms,
            DEFAULT_HEADER_READ_TIMEOUT_MS,
            "server.header_read_timeout_ms",
        )?,
        body_read_timeout: millis(
            server.body_read_timeout_ms,
            DEFAULT_BODY_READ_TIMEOUT_MS,
            "server.body_read_timeout_ms",
        )?,
        shutdown_grace: millis(
            server.shutdown_grace_ms,
            DEFAULT_SHUTDOWN_GRACE_MS,
            "server.shutdown_grace_ms",
        )?,
    })
}

/// A Host entry: a DNS name or IP, optionally with a port; never a wildcard.
fn allowed_host(entry: &str) -> Result<String, String> {
    let entry = entry.trim().to_ascii_lowercase();
    if entry.contains('*') {
        return Err("\"*\" is not allowed: list each host".into());
    }
    let valid = !entry.is_empty()
        && entry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return Err(format!("{entry:?} is not a host name or host:port"));
    }
    Ok(entry)
}

/// An Origin entry: `http(s)://host[:port]`, with no path; never a wildcard or `null`.
fn allowed_origin(entry: &str) -> Result<String, String> {
    let entry = entry.trim().trim_end_matches('/').to_ascii_lowercase();
    if entry.contains('*') {
        return Err("\"*\" is not allowed: list each origin".into());
    }
    let authority = entry
        .strip_prefix("https://")
        .or_else(|| entry.strip_prefix("http://"))
        .ok_or_else(|| format!("{entry:?} is not an origin such as https://app.example.com"))?;
    if authority.contains('/') || allowed_host(authority).is_err() {
        return Err(format!(
            "{entry:?} is not an origin such as https://app.example.com"
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod plain_tests {
    use super::*;

    #[test]
    fn config_errors_speak_the_operators_language() {
        for (toml, words) in [
            (
                "[limits]\nmax_body_bytes = \"big\"\n",
                "expected a whole number ≥ 0",
            ),
            (
                "[limits]\nmax_body_bytes = -1\n",
                "expected a whole number ≥ 0",
            ),
            ("[rate]\nper_key_rpm = 1.5\n", "decimal number"),
            ("[audit]\nenabled = \"yes\"\n", "expected true or false"),
            ("[server]\nallowed_hosts = \"a\"\n", "expected a list"),
            (
                "[[upstream]]\nname = \"x\"\ncommand = [\"/bin/cat\"]\nsandbox = 3\n",
                "expected true, false or \"best-effort\"",
            ),
        ] {
            let message = parse(toml, Path::new("w.toml")).unwrap_err().to_string();
            assert!(message.contains(words), "{message}");
            for jargon in [
                "usize",
                "u32",
                "untagged",
                "SandboxSetting",
                "sequence",
                "invalid type",
            ] {
                assert!(!message.contains(jargon), "{message}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_loopback_needs_consent() {
        let path = Path::new("w.toml");
        let public = load("[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        let err = plaintext_consented(&public, path).unwrap_err().to_string();
        assert!(err.contains("allow_plaintext"), "{err}");
        let consented =
            load("[server]\nlisten = \"0.0.0.0:8080\"\nallow_plaintext = true\n").unwrap();
        assert!(plaintext_consented(&consented, path).is_ok());
        let overridden = Config::load(
            None,
            &Overrides {
                listen: Some("0.0.0.0:9".parse().unwrap()),
                ..Overrides::default()
            },
        );
        assert!(overridden.is_err());
    }

    #[test]
    fn hosts_and_origins_are_listed_never_wildcards() {
        let config = load(
            "[server]\nallowed_hosts = [\"MCP.example.com\", \"10.0.0.5:8443\"]\nallowed_origins = [\"https://App.example.com/\"]\n",
        )
        .unwrap();
        assert_eq!(config.allowed_hosts, ["mcp.example.com", "10.0.0.5:8443"]);
        assert_eq!(config.allowed_origins, ["https://app.example.com"]);
        for bad in [
            "[server]\nallowed_hosts = [\"*\"]\n",
            "[server]\nallowed_hosts = [\"*.example.com\"]\n",
            "[server]\nallowed_origins = [\"*\"]\n",
            "[server]\nallowed_origins = [\"null\"]\n",
            "[server]\nallowed_origins = [\"https://a.example.com/path\"]\n",
        ] {
            assert!(load(bad).is_err(), "{bad}");
        }
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(text, Path::new("w.toml"), |name| std::env::var(name).ok())
    }

    #[test]
    fn defaults_are_safe() {
        let config = load("").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.limits.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = load("[srever]\n").unwrap_err().to_string();
        assert!(err.contains("srever"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = load("[server]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = load("[limits]\nmax_body_bytes = 1000000000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_body_bytes"), "{err}");
        let err = load("[limits]\nmax_body_bytes = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
    }

    #[test]
    fn overrides_win() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:9".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
            admin_listen: Some("127.0.0.1:10".parse().unwrap()),
        };
        let config = Config::load(None, &overrides).unwrap();
        assert_eq!(config.listen.port(), 9);
        assert_eq!(config.admin_listen.port(), 10);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        let same = Overrides {
            listen: Some("127.0.0.1:9".parse().unwrap()),
            admin_listen: Some("127.0.0.1:9".parse().unwrap()),
            data_dir: None,
        };
        let error = Config::load(None, &same).unwrap_err().to_string();
        assert!(error.contains("admin.listen"), "{error}");
    }
}
