//! `[[upstream]]`: the MCP servers Warden fronts. Each names exactly one source: the
//! embedded notes server, a command run as a stdio child, or a Streamable HTTP URL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::{bounded, raw};

pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// No upstream message may be configured larger than this.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 256 * 1024 * 1024;
/// The upstream used when the configuration names none.
pub const DEFAULT_UPSTREAM_NAME: &str = "notes";

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// Put before each tool and prompt name of this upstream in the merged catalogue:
    /// empty when Warden fronts one upstream, `<name>` and the separator (`notes__`)
    /// otherwise, unless configured.
    pub prefix: String,
    pub source: Source,
    pub call_timeout: Duration,
    pub max_message_bytes: usize,
    /// Prose (result text, descriptions) kept of one message as it streams in, before
    /// hardening cleans it and cuts it at `results.max_result_bytes`:
    /// [`STREAM_PROSE_FACTOR`] times that, so that a 50 MB text costs no more.
    pub stream_prose_bytes: usize,
    /// Calls in flight to this upstream at once; more wait (up to the queue timeout).
    pub max_concurrent: usize,
    /// The operator vouches for this upstream's tool annotations (`readOnlyHint`,
    /// `destructiveHint`): they classify its tools. Otherwise its tools are `write`
    /// unless `[tools."<name>"] kind` says otherwise.
    pub trust_annotations: bool,
    /// What this upstream returns may be hostile (web pages, mail, other people's
    /// documents): its text reaches clients wrapped as data.
    pub untrusted: bool,
    /// The directory every path argument of this upstream's tools stays in (arguments
    /// the schema marks as paths or names like one), unless a `[tools."…"]` rule sets
    /// its own `root`.
    pub paths_root: Option<PathBuf>,
    /// How often the upstream's tools are listed again even when it announces no change
    /// (a server that sends no `list_changed`); `None` for the embedded server.
    pub refresh: Option<Duration>,
}

/// What joins an upstream's name and a tool's in the merged catalogue by default
/// (`[server] prefix_separator`): `notes__delete_note`. Function-calling APIs accept only
/// `[A-Za-z0-9_-]` in tool names, so not a dot; two underscores, because names of tools
/// and upstreams often hold one.
pub const DEFAULT_PREFIX_SEPARATOR: &str = "__";

/// Tools are listed again this often by default (`refresh_secs`).
pub const DEFAULT_REFRESH_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Builtin(Builtin),
    Stdio(Stdio),
    Http(Http),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Notes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stdio {
    pub command: Vec<String>,
    /// Extra environment for the child; `env:NAME` values are resolved at load time.
    pub env: BTreeMap<String, Secret>,
    pub cwd: Option<PathBuf>,
    /// One child per tenant, so that tenants never share a process.
    pub per_tenant: bool,
    pub sandbox: Sandbox,
    /// The SHA-256 (lowercase hex) the file it runs must have (`sha256`): the script an
    /// interpreter runs, or the program itself; checked before every start.
    pub sha256: Option<String>,
}

/// How a stdio child is confined (Linux: Landlock, `no_new_privs`, resource limits, a
/// scrubbed environment, its own process group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub mode: SandboxMode,
    /// Private writable memory (`RLIMIT_DATA`), in MiB.
    pub memory_mb: u64,
    /// `RLIMIT_NPROC`: the kernel counts every process of Warden's user, not only the
    /// child's, and does not apply it to root.
    pub max_processes: u64,
    pub max_open_files: u64,
    /// CPU time over the child's life; past it the kernel ends the child and the
    /// supervisor starts a fresh one.
    pub cpu_seconds: u64,
    /// Extra paths the child may read (beyond the system, its own installation and its
    /// working directory).
    pub read: Vec<PathBuf>,
    /// Extra paths the child may write.
    pub write: Vec<PathBuf>,
    /// UDP sockets are allowed (to any address: the sandbox's address rules are for
    /// TCP). Off by default: children resolve names and reach the network through
    /// their proxy.
    pub udp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// No confinement: the child inherits Warden's environment (the egress proxy is
    /// still set).
    Off,
    /// Every confinement, or the upstream does not start.
    Enforced,
    /// Whatever this kernel supports; what is missing is logged.
    BestEffort,
}

pub const DEFAULT_SANDBOX_MEMORY_MB: u64 = 4096;
pub const DEFAULT_SANDBOX_MAX_PROCESSES: u64 = 4096;
pub const DEFAULT_SANDBOX_MAX_OPEN_FILES: u64 = 1024;
pub const DEFAULT_SANDBOX_CPU_SECONDS: u64 = 3600;

impl Sandbox {
    /// On Linux the sandbox is on unless the operator turns it off.
    fn from_raw(raw: &mut raw::Upstream) -> Result<Self, (&'static str, String)> {
        let mode = match raw.sandbox.take() {
            None if cfg!(target_os = "linux") => SandboxMode::Enforced,
            None => SandboxMode::Off,
            Some(raw::SandboxSetting::Switch(true)) => SandboxMode::Enforced,
            Some(raw::SandboxSetting::Switch(false)) => SandboxMode::Off,
            Some(raw::SandboxSetting::Word(word)) if word == "best-effort" => {
                SandboxMode::BestEffort
            }
            Some(raw::SandboxSetting::Word(_)) => {
                return Err(("sandbox", "must be true, false or \"best-effort\"".into()));
            }
        };
        let limit = |field: &'static str, value: Option<u64>, default: u64, max: u64| {
            bounded(value, default, 1..=max).map_err(|message| (field, message))
        };
        Ok(Self {
            mode,
            memory_mb: limit(
                "sandbox_memory_mb",
                raw.sandbox_memory_mb,
                DEFAULT_SANDBOX_MEMORY_MB,
                1 << 20,
            )?,
            max_processes: limit(
                "sandbox_max_processes",
                raw.sandbox_max_processes,
                DEFAULT_SANDBOX_MAX_PROCESSES,
                1 << 22,
            )?,
            max_open_files: limit(
                "sandbox_max_open_files",
                raw.sandbox_max_open_files,
                DEFAULT_SANDBOX_MAX_OPEN_FILES,
                1 << 20,
            )?,
            cpu_seconds: limit(
                "sandbox_cpu_seconds",
                raw.sandbox_cpu_seconds,
                DEFAULT_SANDBOX_CPU_SECONDS,
                365 * 24 * 3600,
            )?,
            read: absolute_paths("sandbox_read", std::mem::take(&mut raw.sandbox_read))?,
            write: absolute_paths("sandbox_write", std::mem::take(&mut raw.sandbox_write))?,
            udp: raw.sandbox_udp.take().unwrap_or(false),
        })
    }
}

/// Landlock rules are given as absolute paths, so a rule never depends on where Warden
/// was started.
fn absolute_paths(
    field: &'static str,
    paths: Vec<String>,
) -> Result<Vec<PathBuf>, (&'static str, String)> {
    paths
        .into_iter()
        .map(PathBuf::from)
        .map(|path| {
            if path.is_absolute() {
                Ok(path)
            } else {
                Err((field, format!("{} is not an absolute path", path.display())))
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub url: String,
    /// Sent with every request to this upstream; `env:NAME` values resolved at load time.
    pub headers: Vec<(String, Secret)>,
    pub transport: HttpTransport,
    /// SubjectPublicKeyInfo SHA-256 hashes its certificate must have one of
    /// (`pin_sha256`), besides a valid chain.
    pub pins: Vec<[u8; 32]>,
}

/// How an HTTP upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTransport {
    /// Streamable HTTP (2025-03-26 on): a POST per message, answers as JSON or SSE.
    Streamable,
    /// The deprecated HTTP+SSE transport (2024-11-05): one GET event stream carries every
    /// message from the server, and names the URL messages are POSTed to.
    Sse,
}

/// A configured value that may be a credential: it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `value`, or the variable it names as `env:NAME`.
    pub(crate) fn resolve(
        value: String,
        lookup_env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        match value.strip_prefix("env:") {
            Some(var) => lookup_env(var)
                .map(Self)
                .ok_or_else(|| format!("environment variable {var} is not set")),
            None => Ok(Self(value)),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Upstream {
    /// The embedded knowledge base, alone and unprefixed.
    pub fn default_notes() -> Self {
        Self {
            name: DEFAULT_UPSTREAM_NAME.into(),
            prefix: String::new(),
            source: Source::Builtin(Builtin::Notes),
            call_timeout: Duration::from_millis(DEFAULT_CALL_TIMEOUT_MS),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            stream_prose_bytes: stream_prose_bytes(crate::DEFAULT_MAX_RESULT_BYTES),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            trust_annotations: true,
            refresh: None,
            paths_root: None,
            untrusted: false,
        }
    }
}

/// How many times `results.max_result_bytes` of prose a message keeps as it streams in.
/// Hardening cleans before it cuts; the margin keeps what it shows unchanged unless a
/// text hides more markup than that before its visible cut.
pub const STREAM_PROSE_FACTOR: usize = 4;

fn stream_prose_bytes(max_result_bytes: usize) -> usize {
    max_result_bytes.saturating_mul(STREAM_PROSE_FACTOR)
}

/// Validates every `[[upstream]]`; the error is `(field, message)`.
pub(crate) fn validate(
    raw: Vec<raw::Upstream>,
    separator: &str,
    require_pinned: bool,
    max_result_bytes: usize,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Upstream>, (String, String)> {
    if raw.is_empty() {
        return Ok(vec![Upstream {
            stream_prose_bytes: stream_prose_bytes(max_result_bytes),
            ..Upstream::default_notes()
        }]);
    }
    let several = raw.len() > 1;
    let mut upstreams: Vec<Upstream> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("upstream[{index}].{name}");
        let upstream = one(
            raw,
            several.then_some(separator),
            require_pinned,
            max_result_bytes,
            &lookup_env,
            &field,
        )?;
        if upstreams.iter().any(|u| u.name == upstream.name) {
            return Err((field("name"), format!("{:?} is used twice", upstream.name)));
        }
        if upstreams.iter().any(|u| u.prefix == upstream.prefix) {
            return Err((
                field("prefix"),
                format!("{:?} is used by another upstream", upstream.prefix),
            ));
        }
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

/// One `[[upstream]]`; `separator` is what follows its name in its default prefix when
/// there are several upstreams (none when it is alone); `require_pinned` is
/// `[server] require_pinned_upstreams`; `max_result_bytes` is `[results] max_result_bytes`.
fn one(
    mut raw: raw::Upstream,
    separator: Option<&str>,
    require_pinned: bool,
    max_result_bytes: usize,
    lookup_env: &impl Fn(&str) -> Option<String>,
    field: &impl Fn(&str) -> String,
) -> Result<Upstream, (String, String)> {
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 32
        && raw.name.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err((
            field("name"),
            "must be 1 to 32 characters of a-z, 0-9, _ and -, starting with a letter".into(),
        ));
    }
    let prefix = match (raw.prefix.take(), separator) {
        (Some(prefix), _) => prefix,
        (None, Some(separator)) => format!("{}{separator}", raw.name),
        (None, None) => String::new(),
    };
    let prefix_ok = prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !prefix_ok {
        return Err((
            field("prefix"),
            "must be at most 64 characters of A-Z, a-z, 0-9, _, . and -".into(),
        ));
    }
    let resolve = |name: &str, value: String| -> Result<Secret, (String, String)> {
        Secret::resolve(value, &lookup_env).map_err(|message| (field(name), message))
    };
    if raw.transport.is_some() && raw.url.is_none() {
        return Err((field("transport"), "goes with url only".into()));
    }
    let stdio_only = raw.env.is_empty()
        && raw.cwd.is_none()
        && raw.per_tenant.is_none()
        && raw.sandbox.is_none()
        && raw.sandbox_memory_mb.is_none()
        && raw.sandbox_max_processes.is_none()
        && raw.sandbox_max_open_files.is_none()
        && raw.sandbox_cpu_seconds.is_none()
        && raw.sandbox_read.is_empty()
        && raw.sandbox_write.is_empty()
        && raw.sandbox_udp.is_none()
        && raw.require_pinned.is_none()
        && raw.sha256.is_none();
    let sandbox = Sandbox::from_raw(&mut raw).map_err(|(name, message)| (field(name), message))?;
    let source = match (raw.builtin, raw.command, raw.url) {
        (Some(builtin), None, None)
            if stdio_only && raw.headers.is_empty() && raw.pin_sha256.is_empty() =>
        {
            match builtin.as_str() {
                "notes" => Source::Builtin(Builtin::Notes),
                _ => {
                    return Err((
                        field("builtin"),
                        "the only built-in server is \"notes\"".into(),
                    ));
                }
            }
        }
        (None, Some(command), None) if raw.headers.is_empty() && raw.pin_sha256.is_empty() => {
            if command.first().is_none_or(String::is_empty) {
                return Err((field("command"), "must name a program".into()));
            }
            if raw.require_pinned.unwrap_or(require_pinned)
                && let Some(why) = crate::unpinned(&command)
            {
                return Err((
                    field("command"),
                    format!("{why}; require_pinned refuses to start it"),
                ));
            }
            let sha256 = raw
                .sha256
                .map(|hash| {
                    let hash = hash.to_ascii_lowercase();
                    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Ok(hash)
                    } else {
                        Err((
                            field("sha256"),
                            "must be 64 hexadecimal digits (sha256sum FILE)".to_owned(),
                        ))
                    }
                })
                .transpose()?;

            let env = raw
                .env
                .into_iter()
                .map(|(name, value)| {
                    let secret = resolve(&format!("env.{name}"), value)?;
                    Ok::<_, (String, String)>((name, secret))
                })
                .collect::<Result<_, _>>()?;
            Source::Stdio(Stdio {
                command,
                env,
                cwd: raw.cwd.map(PathBuf::from),
                per_tenant: raw.per_tenant.unwrap_or(false),
                sandbox,
                sha256,
            })
        }
        (None, None, Some(url)) if stdio_only => {
            check_url(&url).map_err(|message| (field("url"), message))?;
            let headers = raw
                .headers
                .into_iter()
                .map(|(name, value)| {
                    let ok = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !ok {
                        return Err((field("headers"), format!("{name:?} is not a header name")));
                    }
                    Ok((name.clone(), resolve(&format!("headers.{name}"), value)?))
                })
                .collect::<Result<_, _>>()?;
            let transport = match raw.transport.as_deref() {
                None | Some("streamable-http") => HttpTransport::Streamable,
                Some("sse") => HttpTransport::Sse,
                Some(_) => {
                    return Err((
                        field("transport"),
                        "must be \"streamable-http\" (the default) or \"sse\" (the deprecated HTTP+SSE transport)".into(),
                    ));
                }
            };
            let pins = crate::pinning::spki_pins(std::mem::take(&mut raw.pin_sha256), &url)
                .map_err(|message| (field("pin_sha256"), message))?;
            Source::Http(Http {
                url,
                headers,
                transport,
                pins,
            })
        }
        _ => {
            return Err((
                field("name"),
                "needs exactly one of builtin, command (with env, cwd, per_tenant, sandbox*) or url (with headers)"
                    .into(),
            ));
        }
    };
    let call_timeout_ms = bounded(
        raw.call_timeout_ms,
        DEFAULT_CALL_TIMEOUT_MS,
        100..=3_600_000,
    )
    .map_err(|m| (field("call_timeout_ms"), m))?;
    let max_message_bytes = bounded(
        raw.max_message_bytes,
        DEFAULT_MAX_MESSAGE_BYTES,
        1024..=MAX_MESSAGE_BYTES_CEILING,
    )
    .map_err(|m| (field("max_message_bytes"), m))?;
    let max_concurrent = bounded(raw.max_concurrent, DEFAULT_MAX_CONCURRENT, 1..=10_000)
        .map_err(|m| (field("max_concurrent"), m))?;
    // The embedded server is Warden's own code: its annotations are facts.
    let trust_annotations = raw
        .trust_annotations
        .unwrap_or(matches!(source, Source::Builtin(_)));
    let paths_root = match raw.paths_root.take() {
        None => None,
        Some(root) => Some(
            absolute_paths("paths_root", vec![root])
                .map_err(|(name, message)| (field(name), message))?
                .pop()
                .unwrap_or_default(),
        ),
    };
    let refresh = match source {
        // Warden's own server changes only with Warden.
        Source::Builtin(_) if raw.refresh_secs.is_none() => None,
        _ => Some(Duration::from_secs(
            bounded(raw.refresh_secs, DEFAULT_REFRESH_SECS, 1..=86_400)
                .map_err(|m| (field("refresh_secs"), m))?,
        )),
    };
    Ok(Upstream {
        name: raw.name,
        prefix,
        source,
        call_timeout: Duration::from_millis(call_timeout_ms),
        max_message_bytes,
        stream_prose_bytes: stream_prose_bytes(max_result_bytes),
        max_concurrent,
        trust_annotations,
        untrusted: raw.untrusted.unwrap_or(false),
        refresh,
        paths_root,
    })
}

/// Remote upstreams use https; plain http only to this machine, where no network
/// carries the traffic. Messages never repeat the URL: it may carry credentials.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_owned())?;
    let host = uri.host().ok_or_else(|| "has no host".to_owned())?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        Some("http") => Err("must use https (plain http is allowed only to loopback)".into()),
        _ => Err("must be an http or https URL".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Upstream>, (String, String)> {
        let raw: crate::raw::Config = toml::from_str(text).unwrap();
        validate(
            raw.upstream,
            DEFAULT_PREFIX_SEPARATOR,
            false,
            crate::DEFAULT_MAX_RESULT_BYTES,
            |name| (name == "SET").then(|| "from-env".to_owned()),
        )
    }

    #[test]
    fn no_upstream_means_the_notes_server() {
        assert_eq!(parse("").unwrap(), vec![Upstream::default_notes()]);
    }

    #[test]
    fn sources_and_prefixes() {
        let upstreams = parse(
            r#"
            [[upstream]]
            name = "notes"
            builtin = "notes"
            [[upstream]]
            name = "fs"
            command = ["npx", "server"]
            env = { TOKEN = "env:SET", PLAIN = "x" }
            per_tenant = true
            [[upstream]]
            name = "remote"
            prefix = "r_"
            url = "https://mcp.example.com/mcp"
            headers = { X-Api-Key = "env:SET" }
            "#,
        )
        .unwrap();
        let prefixes: Vec<_> = upstreams.iter().map(|u| u.prefix.as_str()).collect();
        assert_eq!(prefixes, ["notes__", "fs__", "r_"]);
        let Source::Stdio(stdio) = &upstreams[1].source else {
            panic!()
        };
        assert!(stdio.per_tenant);
        assert_eq!(stdio.env["TOKEN"].expose(), "from-env");
        let Source::Http(http) = &upstreams[2].source else {
            panic!()
        };
        assert_eq!(http.headers[0].1.expose(), "from-env");
        assert!(!format!("{upstreams:?}").contains("from-env"));
    }

    #[test]
    fn one_upstream_is_unprefixed() {
        let upstreams = parse("[[upstream]]\nname = \"fs\"\ncommand = [\"x\"]\n").unwrap();
        assert_eq!(upstreams[0].prefix, "");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            ("[[upstream]]\nname = \"a\"\n", "upstream[0].name"),
            (
                "[[upstream]]\nname = \"a\"\nbuiltin = \"notes\"\nurl = \"https://x\"\n",
                "upstream[0].name",
            ),
            (
                "[[upstream]]\nname = \"A b\"\nbuiltin = \"notes\"\n",
                "upstream[0].name",
            ),
            (
                "[[upstream]]\nname = \"a\"\nbuiltin = \"other\"\n",
                "upstream[0].builtin",
            ),
            (
                "[[upstream]]\nname = \"a\"\ncommand = []\n",
                "upstream[0].command",
            ),
            (
                "[[upstream]]\nname = \"a\"\nurl = \"http://example.com/mcp\"\n",
                "upstream[0].url",
            ),
            (
                "[[upstream]]\nname = \"a\"\nurl = \"https://x/mcp\"\nheaders = { A = \"env:UNSET\" }\n",
                "upstream[0].headers.A",
            ),
            (
                "[[upstream]]\nname = \"a\"\nbuiltin = \"notes\"\n[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\n",
                "upstream[1].name",
            ),
            (
                "[[upstream]]\nname = \"a\"\nbuiltin = \"notes\"\nprefix = \"x\"\n[[upstream]]\nname = \"b\"\ncommand = [\"x\"]\nprefix = \"x\"\n",
                "upstream[1].prefix",
            ),
        ];
        for (text, field) in cases {
            let (got, message) = parse(text).unwrap_err();
            assert_eq!(got, field, "{text}: {message}");
        }
        assert!(parse("[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\n").is_ok());
        let (_, message) =
            parse("[[upstream]]\nname = \"a\"\nurl = \"ftp://user:pw-canary@x/mcp\"\n")
                .unwrap_err();
        assert!(!message.contains("pw-canary"), "{message}");
    }
}
