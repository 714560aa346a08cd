//! The `warden` command: a thin shell over the library crates.

/// Writes a line to stdout. A stdout closed early (`warden audit list | head -3`) ends the
/// command quietly: the error reaches `main`, which exits without a word.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod admin_client;
#[cfg(feature = "count-allocations")]
mod allocations;
mod approvals_cli;
mod audit_cli;
mod console;
mod installation;
mod logging;
mod reload;
mod scan_cli;
mod store_cli;
mod table;
mod tools_cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use installation::Installation;
use table::Table;
use warden_config::{Config, Overrides};
use warden_egress::EgressPolicy;
use warden_gateway::{Auditor, Listener, Metrics, OAuthVerifier, TlsCertificate};
use warden_limits::Limiter;
use warden_store::{DataDir, KeyOptions, Scope};
use warden_upstream::{ChildHost, Upstreams};

/// mimalloc rather than glibc's allocator: a call allocates a few hundred small, short-
/// lived blocks (JSON trees, headers, the audit record), often freed on another worker
/// thread than the one that made them, which glibc's arenas handle with locks and
/// consolidation. With mimalloc's thread-local free lists a call takes 14–15 % less CPU
/// on the echo benchmark (docs/BENCHMARKS.md). Built without its transparent-huge-page
/// advice (feature `no_thp`), which doubled idle memory.
#[cfg(not(feature = "count-allocations"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "A security gateway for MCP servers",
    after_help = "Examples:\n  warden serve\n  warden keys add --tenant acme --name laptop --scope read\n  warden config check warden.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which installation an admin command works on.
#[derive(clap::Args)]
struct Place {
    /// The warden.toml the running Warden uses: the command works on its [store] (its
    /// data_dir, or the PostgreSQL database it names).
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where Warden keeps its keys, notes and secrets (beats the config's data_dir)
    /// [default: the config's data_dir, else ./warden-data].
    #[arg(long, env = "WARDEN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Create the data directory if there is none yet (otherwise a missing one is an
    /// error: it would not be the one a running Warden uses).
    #[arg(long)]
    init: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the MCP endpoint (the embedded notes server unless configured otherwise).
    #[command(
        after_help = "Examples:\n  warden serve\n  warden serve --config warden.toml --log-format json"
    )]
    Serve {
        /// A warden.toml; without one, safe defaults apply.
        #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Address of the admin listener (/metrics, /healthz, /readyz)
        /// [default: 127.0.0.1:9090].
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
        /// Where Warden keeps its keys, notes and secrets (beats the config's data_dir;
        /// created if missing) [default: the config's data_dir, else ./warden-data].
        #[arg(long, env = "WARDEN_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// How log lines are written to stderr: for people, or one JSON object a line.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Manage API keys.
    #[command(
        after_help = "Examples:\n  warden keys add --tenant acme --name alice-laptop --scope read\n  warden keys list\n  warden keys revoke key_3f2a9c0e1b7d4a56"
    )]
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The running Warden's tools, and definitions waiting for approval (changed, or
    /// suspicious on first sight).
    #[command(
        after_help = "Examples:\n  warden tools list --scope read\n  warden tools waiting\n  warden tools diff fs__read_file"
    )]
    Tools {
        #[command(subcommand)]
        command: tools_cli::ToolsCommand,
    },
    /// Calls held for an operator's decision (confirm = "approve").
    #[command(
        after_help = "Examples:\n  warden approvals list\n  warden approvals deny apr_7f3c9a2e51d04b6c8a1e2f3d4c5b6a70"
    )]
    Approvals {
        #[command(subcommand)]
        command: approvals_cli::ApprovalsCommand,
    },
    /// Read and verify the audit trail.
    #[command(
        after_help = "Examples:\n  warden audit list --since 1h\n  warden audit tail -f\n  warden audit verify"
    )]
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Serve a desktop MCP client (one that starts its servers as commands) over stdio,
    /// relaying every message to a Warden: replaces `npx mcp-remote`.
    #[command(
        after_help = "Examples:\n  warden connect http://127.0.0.1:8080/mcp --key-env WARDEN_KEY\n  warden connect https://warden.example.com/mcp --key-file ~/.config/warden/key"
    )]
    Connect {
        /// The Warden MCP endpoint: https, or http to this machine only.
        #[arg(value_name = "URL")]
        url: String,
        /// The environment variable that holds the key.
        #[arg(long, value_name = "NAME", conflicts_with = "key_file")]
        key_env: Option<String>,
        /// A file that holds the key, readable by its owner only [default:
        /// ~/.config/warden/key].
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Grade an MCP server A–F from the outside against the rules Warden keeps (safe
    /// probes only: calls a correct server refuses before acting), or audit a warden.toml.
    #[command(
        after_help = "Examples:\n  warden scan http://127.0.0.1:8080/mcp --header \"Authorization: env:MCP_AUTH\" --fail-under B\n  warden scan --config warden.toml --format sarif --output warden.sarif\n  warden scan --compare http://127.0.0.1:3001/mcp http://127.0.0.1:8080/mcp\n  warden scan --stdio -- npx -y @modelcontextprotocol/server-everything@2025.11.25 stdio\n  warden scan --list-rules"
    )]
    Scan(scan_cli::ScanArgs),
    /// Make the running Warden read its configuration again (as SIGHUP does): what can
    /// change live is applied, upstreams whose definition changed restart, and what
    /// needs a restart is named.
    #[command(
        after_help = "Examples:\n  warden reload --config /etc/warden/warden.toml\n  warden reload --admin 127.0.0.1:9090"
    )]
    Reload {
        /// The admin listener of the running Warden [default: the config's [admin]
        /// listen, else 127.0.0.1:9090].
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// The warden.toml the running Warden uses, to find its admin listener (Warden
        /// reads the file it was started with).
        #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The database behind Warden's durable state ([store]).
    #[command(after_help = "Example:\n  warden store migrate --config /etc/warden/warden.toml")]
    Store {
        #[command(subcommand)]
        command: store_cli::StoreCommand,
    },
    /// Work with configuration files.
    #[command(after_help = "Example:\n  warden config check warden.toml")]
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Policies as code (Cedar).
    #[command(after_help = "Example:\n  warden policy show-builtin > policies/base.cedar")]
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the built-in policies: what Warden allows without policy files, as Cedar
    /// (read keys see and call read tools; write and admin keys every tool).
    #[command(after_help = "Example:\n  warden policy show-builtin")]
    ShowBuiltin,
    /// Print the policy model (Cedar schema): entity types, actions and context.
    #[command(after_help = "Example:\n  warden policy show-schema")]
    ShowSchema,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; the key is printed once, alone on stdout, and never stored.
    #[command(
        after_help = "Example:\n  warden keys add --tenant acme --name alice-laptop --scope read --expires-in 90d --label team=payments"
    )]
    Add {
        /// The tenant the key belongs to: it sees that tenant's data only.
        #[arg(long)]
        tenant: String,
        /// A label for the installation that uses the key (shown in lists and the audit).
        #[arg(long)]
        name: String,
        /// What the key may do: read (read tools only), write (every tool), admin.
        #[arg(long, value_enum, default_value_t = ScopeArg::Write)]
        scope: ScopeArg,
        /// Refuse the key after this long, e.g. 90d, 12h, 30m [default: never].
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<u64>,
        /// This key's own requests-per-minute limit, replacing `[rate] per_key_rpm`
        /// [default: the configured per_key_rpm].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rpm: Option<u32>,
        /// A label policies read as the key's tag (`principal.getTag("team")`), as
        /// name=value; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        place: Place,
    },
    /// Replace a key with a new one (printed once); the old one keeps working for the
    /// grace period, so clients can move over.
    #[command(after_help = "Example:\n  warden keys rotate key_3f2a9c0e1b7d4a56 --grace 1h")]
    Rotate {
        /// The key's id, as `warden keys list` shows it.
        id: String,
        /// How long the old key stays valid, e.g. 24h, 15m, 0s.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        grace: u64,
        #[command(flatten)]
        place: Place,
    },
    /// List keys (never the keys themselves).
    #[command(after_help = "Example:\n  warden keys list --config /etc/warden/warden.toml")]
    List {
        #[command(flatten)]
        place: Place,
    },
    /// Revoke a key by id; it is refused from the next request on.
    #[command(after_help = "Example:\n  warden keys revoke key_3f2a9c0e1b7d4a56")]
    Revoke {
        /// The key's id, as `warden keys list` shows it.
        id: String,
        #[command(flatten)]
        place: Place,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file as a start would, short of starting anything: every
    /// problem is named, and any fails the check (exit status 1).
    #[command(after_help = "Example:\n  warden config check /etc/warden/warden.toml")]
    Check {
        /// The warden.toml to check.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ScopeArg {
    Read,
    Write,
    Admin,
}

impl From<Scope> for ScopeArg {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Read => Self::Read,
            Scope::Write => Self::Write,
            Scope::Admin => Self::Admin,
        }
    }
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Read => Self::Read,
            ScopeArg::Write => Self::Write,
            ScopeArg::Admin => Self::Admin,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    // The sandbox trampoline runs before anything else: no runtime, no threads, no log
    // (its one report goes to stderr, which the parent logs), then it becomes the child.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == warden_upstream::sandbox::SUBCOMMAND)
    {
        return warden_upstream::sandbox::exec(std::env::args_os().skip(2));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            data_dir,
            log_format,
        } => serve(
            config.as_deref(),
            Overrides {
                listen,
                admin_listen,
                data_dir,
            },
            log_format,
        ),
        Command::Keys { command } => keys(command),
        Command::Audit { command } => audit_cli::run(command),
        Command::Approvals { command } => approvals_cli::run(command),
        Command::Tools { command } => tools_cli::run(command),
        Command::Connect {
            url,
            key_env,
            key_file,
        } => connect(&url, key_env.as_deref(), key_file),
        Command::Reload { admin, config } => reload_running(admin, config.as_deref()),
        Command::Scan(args) => scan_cli::run(args),
        Command::Store { command } => store_cli::run(command),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check_config(&file),
        Command::Policy { command } => show_policy(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read the output stopped reading: nothing more to say to anyone.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("warden: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Each stdio upstream whose command fetches a package or image without pinning it, and
/// why (`warden_config::unpinned`).
fn unpinned_upstreams(config: &Config) -> Vec<(&str, String)> {
    config
        .upstreams
        .iter()
        .filter_map(|upstream| match &upstream.source {
            warden_config::Source::Stdio(stdio) => Some((
                upstream.name.as_str(),
                warden_config::unpinned(&stdio.command)?,
            )),
            _ => None,
        })
        .collect()
}

/// `warden policy show-builtin` (the built-in policies, and the shipped session policy)
/// and `show-schema` (the model, with one action per tool of the embedded server).
fn show_policy(command: &PolicyCommand) -> Result<(), Failure> {
    let text = match command {
        PolicyCommand::ShowBuiltin => format!(
            "{}\n\n{}\n{}",
            warden_policy::rules::BUILTIN.trim_end(),
            warden_policy::rules::after_untrusted(warden_config::Confirm::Elicit),
            warden_policy::rules::NO_OUTBOUND
        ),
        PolicyCommand::ShowSchema => {
            let config = Config::load(None, &Overrides::default())?;
            let definitions = warden_notes::tool_definitions();
            let named = embedded_tools(&config, &definitions);
            warden_policy::rules::schema_text(&tool_facts(&named), &[])
        }
    };
    say!("{}", text.trim_end());
    Ok(())
}

/// `warden config check`: everything start-up checks, short of spawning children and
/// connecting anywhere: the file itself; each upstream's address against the egress
/// rules, its command on PATH, its sandbox on this kernel; the TLS pair; the OAuth key
/// set when it is a file (a URL is checked against the egress rules, not fetched); and
/// `[tools."…"]` entries that match no tool of a server whose tools are known without
/// starting it (the embedded one) or that fit no upstream's prefix. Every problem is
/// named; any fails the check.
fn check_config(file: &Path) -> Result<(), Failure> {
    let config = Config::load(Some(file), &Overrides::default())?;
    let egress = EgressPolicy::new(&config.egress_allow);
    let mut problems = warden_upstream::preflight(&config.upstreams, &egress);
    if let Err(problem) = installation::check(&config.store) {
        problems.push(problem.to_string());
    }
    if let Some(tls) = &config.tls
        && let Err(error) = TlsCertificate::load(tls)
    {
        problems.push(error.to_string());
    }
    if let Some(oauth) = &config.auth.oauth {
        let checked = match &oauth.jwks {
            warden_config::JwksSource::File(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(OAuthVerifier::start(oauth, &egress))
                .map(|_| ())
                .map_err(|error| error.to_string()),
            warden_config::JwksSource::Url(url) => url::Url::parse(url)
                .map_err(|_| "auth.oauth.jwks_url is not a URL".to_owned())
                .and_then(|url| {
                    egress
                        .check_url(&url)
                        .map_err(|error| format!("auth.oauth.jwks_url: {error}"))
                }),
        };
        if let Err(problem) = checked {
            problems.push(problem);
        }
    }
    let notes: std::collections::HashSet<String> = warden_notes::tool_definitions()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let upstreams: Vec<(&str, Option<std::collections::HashSet<String>>)> = config
        .upstreams
        .iter()
        .map(|upstream| {
            let tools =
                matches!(upstream.source, warden_config::Source::Builtin(_)).then(|| notes.clone());
            (upstream.prefix.as_str(), tools)
        })
        .collect();
    problems.extend(
        warden_upstream::unmatched_rules(config.tools.keys().map(String::as_str), &upstreams)
            .iter()
            .map(unmatched_message),
    );
    let (policy_errors, policy_warnings) = checked_policies(&config);
    problems.extend(policy_errors);
    for warning in policy_warnings {
        eprintln!("{}: warning: {warning}", file.display());
    }
    for (upstream, why) in unpinned_upstreams(&config) {
        eprintln!(
            "{}: warning: upstream {upstream:?} {why} (pin it, or set require_pinned = true to refuse it)",
            file.display()
        );
    }
    if problems.is_empty() {
        say!("{}: ok", file.display());
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{}: {problem}", file.display());
    }
    Err(format!(
        "{} problem(s); Warden would not start as configured",
        problems.len()
    )
    .into())
}

/// `[policy]` compiled and checked as start-up would, against the tools known without
/// starting any upstream (the embedded server's): the problems, then the warnings,
/// each with its file, line and Cedar's words.
fn checked_policies(config: &Config) -> (Vec<String>, Vec<String>) {
    let definitions = warden_notes::tool_definitions();
    let named = embedded_tools(config, &definitions);
    let tools = tool_facts(&named);
    let lines = |problems: Vec<warden_policy::rules::PolicyProblem>| {
        problems.iter().map(ToString::to_string).collect()
    };
    match warden_policy::rules::Policies::compile(&config.policy, &tools) {
        Ok((_, warnings)) => (Vec::new(), lines(warnings)),
        Err(problems) => (lines(problems), Vec::new()),
    }
}

/// The embedded server's tools under each upstream that runs it: catalogue name,
/// definition, upstream name.
fn embedded_tools<'a>(
    config: &'a Config,
    definitions: &'a [serde_json::Value],
) -> Vec<(String, &'a serde_json::Value, &'a str)> {
    config
        .upstreams
        .iter()
        .filter(|upstream| matches!(upstream.source, warden_config::Source::Builtin(_)))
        .flat_map(|upstream| {
            definitions.iter().map(move |definition| {
                let own = definition["name"].as_str().unwrap_or_default();
                (
                    format!("{}{own}", upstream.prefix),
                    definition,
                    upstream.name.as_str(),
                )
            })
        })
        .collect()
}

fn tool_facts<'a>(
    named: &'a [(String, &'a serde_json::Value, &'a str)],
) -> Vec<warden_policy::rules::ToolFacts<'a>> {
    named
        .iter()
        .map(
            |(name, definition, upstream)| warden_policy::rules::ToolFacts {
                name,
                upstream,
                kind: warden_policy::ToolKind::from_trusted_annotations(definition),
                untrusted: false,
                input_schema: &definition["inputSchema"],
                annotations: definition.get("annotations"),
            },
        )
        .collect()
}

/// `[policy]` compiled against the catalogue the upstreams offer now: warnings are
/// logged, a problem refuses the start.
fn load_policies(
    config: &Config,
    upstreams: &Upstreams,
    flows: Option<Arc<dyn warden_gateway::FlowStore>>,
) -> Result<warden_gateway::PolicyEngine, Failure> {
    match warden_gateway::compile_policies(&config.policy, upstreams) {
        Ok((policies, warnings)) => {
            for warning in warnings {
                tracing::warn!("policy: {warning}");
            }
            tracing::info!(
                files = config.policy.files.len(),
                "policies in force: {}",
                if policies.from_files() {
                    "the operator's files"
                } else {
                    "the built-in ones (no [policy] files)"
                }
            );
            Ok(warden_gateway::PolicyEngine::new(
                policies,
                &config.sessions,
                flows,
            ))
        }
        Err(problems) => Err(Failure::from(format!(
            "the policies do not load:\n{}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ))),
    }
}

/// What an operator is told of a `[tools."…"]` entry that matches no tool.
fn unmatched_message(rule: &warden_upstream::UnmatchedRule) -> String {
    let name = warden_redact::escape_controls(&rule.rule);
    match &rule.meant {
        Some(meant) => format!(
            "[tools.\"{name}\"] matches no tool, so its rules apply to nothing; the tool is named \"{meant}\""
        ),
        None => format!("[tools.\"{name}\"] matches no tool, so its rules apply to nothing"),
    }
}

/// `warden reload`: asks the running Warden to read its configuration again, and says
/// what it applied, restarted, and what waits for a restart.
fn reload_running(admin: Option<String>, config: Option<&Path>) -> Result<(), Failure> {
    let address = admin_client::target(admin, config)?;
    let (status, body) = admin_client::request(&address, "POST", "/reload")?;
    let report: serde_json::Value = serde_json::from_str(&body).map_err(|_| {
        format!(
            "the admin listener at {address} answered {status}: {}",
            body.trim()
        )
    })?;
    if report["ok"] != true {
        let error = report["error"].as_str().unwrap_or("refused");
        return Err(format!("not reloaded; the running configuration stays: {error}").into());
    }
    let names = |field: &str| -> Vec<String> {
        report[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let (applied, restarted, waiting) =
        (names("applied"), names("restarted"), names("needs_restart"));
    if applied.is_empty() && restarted.is_empty() && waiting.is_empty() {
        say!("reloaded: nothing changed");
    }
    if !applied.is_empty() {
        say!("applied: {}", applied.join(", "));
    }
    if !restarted.is_empty() {
        say!("restarted upstreams: {}", restarted.join(", "));
    }
    if !waiting.is_empty() {
        say!("needs a restart to take effect: {}", waiting.join(", "));
    }
    if let Some(certificate) = report["certificate"].as_str() {
        say!("TLS certificate: {certificate}");
    }
    let failed: Vec<String> = report["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} ({})",
                f["upstream"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!("upstreams not restarted: {}", failed.join(", ")).into());
    }
    Ok(())
}

/// `warden connect`: the key from the environment or a private file, then the relay.
fn connect(url: &str, key_env: Option<&str>, key_file: Option<PathBuf>) -> Result<(), Failure> {
    let key = match key_env {
        Some(name) => std::env::var(name)
            .map_err(|_| format!("the environment variable {name} holding the key is not set"))?,
        None => {
            let path = key_file.or_else(default_key_file).ok_or(
                "no key: give --key-env NAME or --key-file FILE (or put the key in ~/.config/warden/key)",
            )?;
            read_private_key(&path)?
        }
    };
    let target = warden_connect::Target::new(url, key.trim())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(warden_connect::run(
        target,
        tokio::io::stdin(),
        tokio::io::stdout(),
    ))?;
    Ok(())
}

/// `$XDG_CONFIG_HOME/warden/key`, else `~/.config/warden/key`.
fn default_key_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("warden").join("key"))
}

/// A key file that no one but its owner can read.
fn read_private_key(path: &Path) -> Result<String, Failure> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "the key file {} can be read by others; chmod 600 it",
            path.display()
        )
        .into());
    }
    Ok(std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?)
}

fn keys(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Add {
            tenant,
            name,
            scope,
            expires_in,
            rpm,
            labels,
            place,
        } => {
            let options = KeyOptions {
                expires_at: expires_in
                    .map(|secs| warden_store::now_unix().saturating_add_unsigned(secs)),
                rpm,
                labels: labels.into_iter().collect(),
            };
            let at = Installation::open(place)?;
            let new = at.run(at.stores.keys.add(&tenant, &name, scope.into(), options))?;
            at.audit_action("keys/add", &tenant, &new.record.id, "ok")?;
            eprintln!(
                "created {} for tenant {} ({}); the key is shown once:",
                new.record.id, tenant, new.record.scope
            );
            say!("{}", new.key);
        }
        KeysCommand::Rotate { id, grace, place } => {
            let grace_secs = i64::try_from(grace).unwrap_or(i64::MAX);
            let at = Installation::open(place)?;
            let Some(new) = at.run(at.stores.keys.rotate(&id, grace_secs))? else {
                return Err(format!("no active key with id {id}").into());
            };
            let target = format!("{id} -> {}", new.record.id);
            at.audit_action("keys/rotate", &new.record.tenant, &target, "ok")?;
            eprintln!(
                "created {} to replace {id}, which stays valid for {grace} s; the key is shown once:",
                new.record.id
            );
            say!("{}", new.key);
        }
        KeysCommand::List { place } => {
            let mut table = Table::new(&[
                "ID",
                "TENANT",
                "NAME",
                "SCOPE",
                "RPM",
                "CREATED",
                "LAST USED",
                "EXPIRES",
                "STATUS",
                "LABELS",
            ]);
            let now = warden_store::now_unix();
            let at = Installation::open(place)?;
            for key in at.run(at.stores.keys.list())? {
                table.row([
                    key.id.clone(),
                    key.tenant.clone(),
                    key.name.clone(),
                    key.scope.to_string(),
                    key.options
                        .rpm
                        .map_or("-".to_owned(), |rpm| rpm.to_string()),
                    warden_store::format_time(key.created_at),
                    key.last_used
                        .map_or("never".to_owned(), warden_store::format_time),
                    key.options
                        .expires_at
                        .map_or("never".to_owned(), warden_store::format_time),
                    key.status(now).to_string(),
                    if key.options.labels.is_empty() {
                        "-".to_owned()
                    } else {
                        key.options
                            .labels
                            .iter()
                            .map(|(name, value)| format!("{name}={value}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                ]);
            }
            table.print(true)?;
        }
        KeysCommand::Revoke { id, place } => {
            let at = Installation::open(place)?;
            let tenant = at
                .run(at.stores.keys.list())?
                .into_iter()
                .find(|key| key.id == id)
                .map(|key| key.tenant);
            if !at.run(at.stores.keys.revoke(&id))? {
                return Err(format!("no active key with id {id}").into());
            }
            at.audit_action("keys/revoke", tenant.as_deref().unwrap_or("*"), &id, "ok")?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

/// `--label name=value`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

/// Seconds in a duration written as a number and a unit: `90s`, `15m`, `12h`, `30d`.
fn parse_duration(text: &str) -> Result<u64, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: s, m, h or d"))?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number and a unit, e.g. 12h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Key of the audit's arguments hash, beside the data.
const AUDIT_ARGS_SECRET: &str = "audit-args.secret";

/// Drops audit records past their retention (at each start).
async fn prune_audit(stores: &warden_store::Stores, retain_days: u64) -> Result<(), Failure> {
    let retain_ms = i64::try_from(retain_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    let now_ms = warden_store::now_unix().saturating_mul(1000);
    let cut = stores.audit.prune(now_ms.saturating_sub(retain_ms)).await?;
    if cut > 0 {
        tracing::info!(records = cut, retain_days, "old audit records removed");
    }
    Ok(())
}

/// Connections the admin listener holds at once (operators, probes, scrapers).
const ADMIN_CONNECTIONS: usize = 64;

/// The admin listener's TLS (`[admin] tls`): the `[server]` certificate and handshake
/// time.
type AdminTls = Option<(Arc<TlsCertificate>, Duration)>;

/// The admin listener's connections: TLS when `tls` says so, or plain.
fn admin_listener(tcp: tokio::net::TcpListener, tls: AdminTls) -> Result<Listener, Failure> {
    Ok(match tls {
        Some((certificate, handshake)) => {
            Listener::tls(tcp, ADMIN_CONNECTIONS, certificate, handshake)?
        }
        None => Listener::plain(tcp, ADMIN_CONNECTIONS)?,
    })
}

/// Answers `/healthz` (200) and `/readyz` (503) on the admin listener while the start
/// waits (for PostgreSQL), until the returned sender fires; the listener itself is
/// handed back for the admin routes.
fn answer_not_ready(
    admin: tokio::net::TcpListener,
    tls: AdminTls,
    connections: &warden_config::Connections,
) -> Result<(tokio::net::TcpListener, tokio::sync::oneshot::Sender<()>), Failure> {
    let socket = admin.into_std()?;
    let interim = admin_listener(tokio::net::TcpListener::from_std(socket.try_clone()?)?, tls)?;
    let (done, waiting) = tokio::sync::oneshot::channel::<()>();
    let routes = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "store unavailable\n",
                )
            }),
        );
    let header_read_timeout = connections.header_read_timeout;
    tokio::spawn(warden_gateway::serve_routes(
        interim,
        routes,
        header_read_timeout,
        async move {
            let _ = waiting.await;
        },
    ));
    Ok((tokio::net::TcpListener::from_std(socket)?, done))
}

/// Reload requests from the admin listener waiting their turn.
const RELOAD_QUEUE: usize = 4;

/// How long a start waits for the upstreams' catalogues before it listens anyway.
const CATALOGUE_WAIT: Duration = Duration::from_secs(30);

/// File the first admin key is written to, readable by the owner only.
const ADMIN_KEY_FILE: &str = "admin.key";

/// On an empty key store, mints an admin key for tenant `default`, prints it once and
/// saves it beside the data. A later start finds keys and does nothing. A shared
/// PostgreSQL store gets its first key from the operator (`warden keys add`), not from
/// whichever replica starts first.
async fn ensure_first_key(
    stores: &warden_store::Stores,
    store: &warden_config::Store,
    dir: &DataDir,
) -> Result<(), Failure> {
    if stores.keys.has_keys().await? {
        return Ok(());
    }
    if matches!(store, warden_config::Store::Postgres(_)) {
        tracing::warn!(
            "the store holds no keys yet: create one with `warden keys add --config FILE --tenant NAME --name CLIENT --scope admin`"
        );
        return Ok(());
    }
    let new = stores
        .keys
        .add("default", "admin", Scope::Admin, KeyOptions::default())
        .await?;
    let path = dir.file(ADMIN_KEY_FILE);
    warden_store::write_private_file(&path, format!("{}\n", new.key).as_bytes())?;
    // Printed once for whoever started Warden; with no one reading, the file has it.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{}\n", new.key).as_bytes());
    tracing::info!(key_id = %new.record.id, file = %path.display(), "created the first admin key (tenant \"default\"); it is printed above once and saved to the file");
    Ok(())
}

/// While the first admin key still lies in its file, each start says how to use it:
/// an operator who has moved the key elsewhere and deleted the file is past the first day.
fn log_next_steps(dir: &DataDir, url: &str) {
    let path = dir.file(ADMIN_KEY_FILE);
    if !path.exists() {
        return;
    }
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    tracing::info!(
        "next steps: a client sends the key in {file} to {url} in its Authorization header, after the word Bearer; a desktop client runs `warden connect {url} --key-file {file}`; more keys: `warden keys add --tenant NAME --name CLIENT --scope read`; delete {file} once the key is kept elsewhere",
        file = path.display()
    );
}

fn serve(
    config_path: Option<&Path>,
    overrides: Overrides,
    log_format: LogFormat,
) -> Result<(), Failure> {
    let config = Config::load(config_path, &overrides)?;
    // Declared before the runtime, so dropped after it: every line is written out.
    let _log = logging::init(log_format);
    let dir = DataDir::open(&config.data_dir)?;
    // Warden's own outbound requests reach public addresses, and what [egress] opens.
    let egress = EgressPolicy::new(&config.egress_allow);
    if !config.audit.enabled {
        tracing::warn!(
            "the audit trail is off ([audit] enabled = false): requests are not recorded"
        );
    }
    if !config.listen.ip().is_loopback() && config.tls.is_none() {
        tracing::warn!(listen = %config.listen, "listening beyond loopback without TLS (allow_plaintext = true): keys cross the network unencrypted");
    }
    for (upstream, why) in unpinned_upstreams(&config) {
        tracing::warn!(
            upstream,
            "{why} (pin it, or set require_pinned = true to refuse it)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Signals are watched from here on: a stop asked for during the start is clean.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let signal = shutdown_signal();
        tokio::spawn(async move {
            signal.await;
            let _ = stop_tx.send(true);
        });
        let hangups = reload::Reloader::watch_hangups();
        // Both listeners are bound before anything starts, so that a taken port stops the
        // start at once and names the address and the setting.
        let tcp = bind(config.listen, "[server] listen / --listen").await?;
        let admin = bind(config.admin_listen, "[admin] listen / --admin-listen").await?;
        // The certificate before anything waits: a bad file stops the start at once.
        let certificate = match &config.tls {
            Some(tls) => Some(TlsCertificate::load(tls).map_err(|e| Failure::from(e.to_string()))?),
            None => None,
        };
        let admin_tls: AdminTls = match (&config.tls, &certificate) {
            (Some(tls), Some(certificate)) if config.admin_tls => Some((certificate.clone(), tls.handshake_timeout)),
            _ => None,
        };
        // The store (PostgreSQL is waited for; /readyz says 503 meanwhile).
        let (admin, waiting) = answer_not_ready(admin, admin_tls.clone(), &config.connections)?;
        let opened = installation::open_for_serving(&config.store, &dir, AUDIT_ARGS_SECRET, stop.clone()).await;
        let _ = waiting.send(());
        let (stores, args_key) = opened?;
        prune_audit(&stores, config.audit.retain_days).await?;
        let metrics = Metrics::new();
        let auditor = Auditor::new(stores.audit.clone(), &config.audit, args_key, metrics.clone());
        ensure_first_key(&stores, &config.store, &dir).await?;
        let oauth = match &config.auth.oauth {
            Some(oauth) => Some(
                OAuthVerifier::start(oauth, &egress)
                    .await
                    .map_err(|e| Failure::from(e.to_string()))?,
            ),
            None => None,
        };
        let children = ChildHost {
            workdirs: dir.path().join("upstreams"),
            trampoline: std::env::current_exe().ok(),
            protected: std::iter::once(dir.path().to_path_buf())
                .chain(config_path.map(Path::to_path_buf))
                .collect(),
        };
        let upstreams = Upstreams::start(&config.upstreams, &config.tools, &stores.notes, Some(stores.pins.clone()), &egress, &children).map_err(|(name, error)| {
            Failure::from(format!("upstream {name:?}: {error}"))
        })?;
        // Tools the pins withhold are audited from the first catalogue on.
        tokio::spawn(auditor.clone().record_withheld(upstreams.withheld()));
        upstreams.load(CATALOGUE_WAIT).await;
        for rule in upstreams.unmatched_rules() {
            tracing::warn!("{}", unmatched_message(&rule));
        }
        log_tool_kinds(&upstreams);
        let (shared, cluster, flows) = match &config.cluster {
            Some(cluster) => {
                let (limits, state, flows) = shared_state(cluster, &config.sessions)?;
                (Some(limits), Some(state), Some(flows))
            }
            None => (None, None, None),
        };
        let policy = Arc::new(load_policies(&config, &upstreams, flows)?);
        let addr = tcp.local_addr()?;
        let listener = match (&config.tls, &certificate) {
            (Some(tls), Some(certificate)) => {
                Listener::tls(tcp, config.connections.max, certificate.clone(), tls.handshake_timeout)?
            }
            _ => Listener::plain(tcp, config.connections.max)?,
        };
        let scheme = if listener.is_tls() { "https" } else { "http" };
        tracing::info!(data_dir = %dir.path().display(), "listening on {scheme}://{addr}{}", warden_gateway::MCP_PATH);
        let upstream_slots: Vec<usize> = config.upstreams.iter().map(|u| u.max_concurrent).collect();
        let limiter = Arc::new(Limiter::new(
            &config.rate,
            &config.tools,
            &upstream_slots,
            Some(stores.costs.clone()),
            shared,
        ).await?);
        metrics.watch(limiter.clone(), auditor.clone(), upstreams.clone());
        #[cfg(feature = "count-allocations")]
        metrics.add_collector(Box::new(allocations::Allocations));
        let telemetry = match &config.telemetry {
            Some(settings) => {
                let telemetry = warden_telemetry::Telemetry::start(settings, tokio::runtime::Handle::current())
                    .map_err(|error| Failure::from(error.to_string()))?;
                // The URL holds no credential (the config refuses one); headers are not named.
                tracing::info!(
                    traces_url = %settings.traces_url,
                    service_name = %settings.service_name,
                    sampling_ratio = settings.sampling_ratio,
                    "traces go to the OpenTelemetry collector over OTLP/HTTP"
                );
                telemetry
            }
            None => warden_telemetry::Telemetry::off(),
        };
        let parts = warden_gateway::Parts {
            telemetry: telemetry.clone(),
            keys: stores.keys.clone(),
            upstreams: upstreams.clone(),
            oauth,
            limiter: limiter.clone(),
            auditor,
            metrics,
            approvals: stores.approvals.clone(),
            cluster,
            policy,
        };
        let state = warden_gateway::AppState::new(&config, parts);
        // The admin listener: the console, metrics, health and reloads, never on the
        // public port.
        let admin_addr = admin.local_addr()?;
        let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
        tracing::info!("admin endpoint at {admin_scheme}://{admin_addr} (the console at /, /metrics, /healthz, /readyz)");
        log_next_steps(&dir, &format!("{scheme}://{addr}{}", warden_gateway::MCP_PATH));
        let (reload_requests, reloads) = tokio::sync::mpsc::channel(RELOAD_QUEUE);
        let admin_routes = warden_console::router(warden_console::Parts {
            gateway: Arc::new(console::GatewayView(state.clone())),
            keys: stores.keys.clone(),
            audit: stores.audit.clone(),
            approvals: stores.approvals.clone(),
            pins: stores.pins.clone(),
            health: stores.health.clone(),
            reload: reload_requests,
            tls: admin_tls.is_some(),
        });
        let admin = admin_listener(admin, admin_tls)?;
        let header_read_timeout = config.connections.header_read_timeout;
        tokio::spawn(warden_gateway::serve_routes(admin, admin_routes, header_read_timeout, std::future::pending()));
        // SIGHUP and `warden reload` read the configuration again.
        let reloader = reload::Reloader {
            path: config_path.map(Path::to_path_buf),
            overrides,
            running: config.clone(),
            state: state.clone(),
            limiter,
            upstreams: upstreams.clone(),
            egress: egress.clone(),
            certificate,
            audit: stores.audit.clone(),
        };
        tokio::spawn(reloader.run(hangups, reloads));
        let shutdown = async move {
            let mut stop = stop;
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let served = warden_gateway::serve(listener, state, &config.connections, shutdown).await;
        upstreams.shutdown().await;
        telemetry.shutdown().await;
        served?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Binds `address`; a failure names the address and the setting that chose it.
async fn bind(address: SocketAddr, setting: &str) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address} (set by {setting}): {error}").into())
}

/// The limits, the gateway's sessions, handles and bus, and the sessions' flow states.
type SharedParts = (
    warden_limits::Shared,
    Arc<dyn warden_gateway::ClusterState>,
    Arc<dyn warden_gateway::FlowStore>,
);

/// What the replicas share in Redis (`[cluster]`): the limits, the sessions, handles
/// and bus of the gateway, and the sessions' flow states.
fn shared_state(
    cluster: &warden_config::Cluster,
    sessions: &warden_config::Sessions,
) -> Result<SharedParts, Failure> {
    let redis = warden_cluster::Redis::new(cluster).map_err(|e| Failure::from(e.to_string()))?;
    tracing::info!(
        replica_id = redis.replica_id(),
        key_prefix = %cluster.key_prefix,
        on_redis_down = ?cluster.on_redis_down,
        "limits, legacy sessions, flow states and waiting calls are shared through Redis"
    );
    let limits = warden_limits::Shared {
        counters: warden_cluster::RedisCounters::start(redis.clone(), cluster.lease),
        on_down: cluster.on_redis_down,
        expected_replicas: cluster.expected_replicas,
    };
    let flows = warden_cluster::RedisFlows::new(redis.clone(), sessions);
    Ok((limits, warden_cluster::RedisState::start(redis), flows))
}

/// One line per upstream: how many of its tools are of each kind, and a word on those
/// no one classified (they count as `write`, so read keys do not see them).
fn log_tool_kinds(upstreams: &Upstreams) {
    let kinds = upstreams.tool_kinds();
    for upstream in upstreams.all() {
        let of: Vec<_> = kinds
            .iter()
            .filter(|t| t.upstream == upstream.name())
            .collect();
        let count = |kind| of.iter().filter(|t| t.kind == kind).count();
        let unclassified = of
            .iter()
            .filter(|t| t.source == warden_upstream::KindSource::Unclassified)
            .count();
        tracing::info!(
            upstream = upstream.name(),
            read = count(warden_policy::ToolKind::Read),
            write = count(warden_policy::ToolKind::Write),
            destructive = count(warden_policy::ToolKind::Destructive),
            unclassified,
            "tools by kind"
        );
        if unclassified > 0 {
            // The documented default, not a fault: said once, at info.
            tracing::info!(
                upstream = upstream.name(),
                "{unclassified} tool(s) are unclassified and count as write: read keys do not see them (warden tools list shows each; classify with [tools.\"<name>\"] kind, or set trust_annotations = true on the upstream)"
            );
        }
    }
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM that arrives right after "listening on" is logged
/// must stop Warden cleanly, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
        tracing::info!("shutting down");
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, parse_duration};

    /// The documents whose examples must keep working.
    const DOCUMENTS: [(&str, &str); 2] = [
        ("README.md", include_str!("../../../README.md")),
        (
            "docs/ARCHITECTURE.md",
            include_str!("../../../docs/ARCHITECTURE.md"),
        ),
    ];

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `--help` is the operator's manual: every command and argument says what it is,
    /// and every command shows an example that parses as that command.
    #[test]
    fn every_command_and_argument_is_described_and_every_command_has_an_example() {
        fn walk(command: &clap::Command, path: &str) {
            assert!(command.get_about().is_some(), "`{path}` has no description");
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`{path}`: argument {id} has no description"
                );
            }
            let after = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            let examples = commands_in(&after);
            assert!(!examples.is_empty(), "`{path} --help` shows no example");
            for example in examples {
                assert!(
                    example.join(" ").starts_with(path),
                    "`{path} --help` shows an example of another command: {example:?}"
                );
                if let Err(error) = Cli::try_parse_from(&example) {
                    panic!(
                        "`{path} --help` shows an example that does not parse: {example:?}\n{error}"
                    );
                }
            }
            for sub in command.get_subcommands() {
                if !sub.is_hide_set() && sub.get_name() != "help" {
                    walk(sub, &format!("{path} {}", sub.get_name()));
                }
            }
        }
        walk(&Cli::command(), "warden");
    }

    /// Every `warden …` line in a shell block of the documents is a command this binary
    /// accepts: a renamed flag or command breaks the build, not the reader.
    #[test]
    fn every_command_in_the_documents_parses() {
        let mut seen = 0;
        for (name, text) in DOCUMENTS {
            for block in fenced_blocks(text, &["sh", "bash", "console"]) {
                for command in commands_in(&block) {
                    seen += 1;
                    if let Err(error) = Cli::try_parse_from(&command) {
                        panic!("{name}: {command:?} does not parse:\n{error}");
                    }
                }
            }
        }
        assert!(seen >= 10, "only {seen} commands found in the documents");
    }

    /// A value for each `env:` variable an example names, shaped as its field wants.
    fn example_environment(name: &str) -> Option<String> {
        Some(if name.contains("POSTGRES") {
            "postgres://warden@db.example.com:5432/warden".into()
        } else if name.contains("REDIS") {
            "redis://redis.example.com:6379".into()
        } else {
            "set".into()
        })
    }

    /// Every TOML block of the documents is a configuration Warden accepts: no field
    /// the parser refuses, no value out of range (secrets named by `env:` count as set).
    #[test]
    fn every_configuration_in_the_documents_is_accepted() {
        let mut seen = 0;
        for (name, text) in DOCUMENTS {
            for block in fenced_blocks(text, &["toml"]) {
                seen += 1;
                // Where the document is: the files an example names are beside it.
                let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(name);
                if let Err(error) =
                    warden_config::Config::from_text(&block, &source, example_environment)
                {
                    panic!("{name}: a TOML example is refused: {error}\n{block}");
                }
            }
        }
        assert!(seen >= 3, "only {seen} TOML blocks found in the documents");
    }

    /// Each section of `warden.toml` as the README's examples name it, and a file that
    /// opens it with a key no section has.
    const SECTIONS: [(&str, &str); 17] = [
        ("", "warden_probe = 1\n"),
        ("server", "[server]\nwarden_probe = 1\n"),
        ("limits", "[limits]\nwarden_probe = 1\n"),
        ("sessions", "[sessions]\nwarden_probe = 1\n"),
        ("auth", "[auth]\nwarden_probe = 1\n"),
        ("auth.oauth", "[auth.oauth]\nwarden_probe = 1\n"),
        ("upstream", "[[upstream]]\nname = \"x\"\nwarden_probe = 1\n"),
        ("tools.*", "[tools.x]\nwarden_probe = 1\n"),
        ("rate", "[rate]\nwarden_probe = 1\n"),
        ("tenants.*", "[tenants.x]\nwarden_probe = 1\n"),
        ("audit", "[audit]\nwarden_probe = 1\n"),
        ("admin", "[admin]\nwarden_probe = 1\n"),
        ("results", "[results]\nwarden_probe = 1\n"),
        ("egress", "[egress]\nwarden_probe = 1\n"),
        ("cluster", "[cluster]\nwarden_probe = 1\n"),
        ("policy", "[policy]\nwarden_probe = 1\n"),
        ("telemetry", "[telemetry]\nwarden_probe = 1\n"),
    ];

    /// The keys a section takes, as the parser lists them when it refuses one it does
    /// not know.
    fn keys_of(probe: &str) -> Vec<String> {
        let refused = warden_config::Config::from_text(probe, std::path::Path::new("p"), |_| None)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        let listed = refused
            .split_once("expected one of ")
            .or_else(|| refused.split_once("expected "))
            .map(|(_, keys)| keys)
            .unwrap_or_else(|| panic!("no key list in {refused:?}"));
        listed
            .replace(" or ", ", ")
            .split(", ")
            .map(|key| key.trim().trim_matches('`').to_owned())
            .collect()
    }

    /// The example policies pass the check `warden config check` makes, against the model
    /// Warden derives and against the copy beside them.
    #[test]
    fn the_example_policies_pass_the_check() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
        for schema in ["", "schema = \"model.cedarschema\"\n"] {
            let text = format!("[policy]\nfiles = [\"*.cedar\"]\n{schema}");
            let source = std::path::Path::new(examples).join("warden.toml");
            let config = warden_config::Config::from_text(&text, &source, |_| None).unwrap();
            assert_eq!(config.policy.files.len(), 1);
            let (problems, warnings) = super::checked_policies(&config);
            assert_eq!((problems, warnings), (Vec::<String>::new(), Vec::new()));
        }
    }

    /// The README's rule table is `warden scan --list-rules`, exactly.
    #[test]
    fn the_readme_lists_every_scan_rule() {
        let table = warden_scan::report::rule_table();
        assert!(
            DOCUMENTS[0].1.contains(table.trim_end()),
            "README.md's rule table differs from `warden scan --list-rules`:\n{table}"
        );
    }

    /// Every setting Warden takes is shown in a TOML example of the README, and every
    /// `[section] key` the prose names is one Warden takes.
    #[test]
    fn the_readme_shows_every_setting_and_names_none_that_is_not() {
        let readme = DOCUMENTS[0].1;
        let mut shown: std::collections::BTreeSet<(String, String)> = Default::default();
        for block in fenced_blocks(readme, &["toml"]) {
            let table: toml::Table = block.parse().unwrap_or_else(|e| panic!("{e}\n{block}"));
            collect_keys("", &toml::Value::Table(table), &mut shown);
        }
        let mut missing = Vec::new();
        for (section, probe) in SECTIONS {
            for key in keys_of(probe) {
                if !shown.contains(&(section.to_owned(), key.clone())) {
                    missing.push(format!("[{section}] {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "settings no TOML example of the README shows: {missing:?}"
        );
        for (section, key) in named_settings(readme) {
            let probe = SECTIONS
                .iter()
                .find(|(name, _)| *name == section)
                .map(|(_, probe)| *probe)
                .unwrap_or_else(|| panic!("the README names a section [{section}] Warden has not"));
            assert!(
                keys_of(probe).contains(&key),
                "the README names `[{section}] {key}`, which Warden does not take"
            );
        }
    }

    /// `(section, key)` of every key in a TOML tree; tables under `tools` and `tenants`
    /// are one section each (`tools.*`), the `upstream` array another.
    fn collect_keys(
        section: &str,
        value: &toml::Value,
        shown: &mut std::collections::BTreeSet<(String, String)>,
    ) {
        let toml::Value::Table(table) = value else {
            if let toml::Value::Array(items) = value {
                for item in items {
                    collect_keys(section, item, shown);
                }
            }
            return;
        };
        for (key, inner) in table {
            shown.insert((section.to_owned(), key.clone()));
            let nested = match section {
                "" => key.clone(),
                "tools" | "tenants" => format!("{section}.*"),
                _ => format!("{section}.{key}"),
            };
            let is_table = matches!(inner, toml::Value::Table(_))
                || matches!(inner, toml::Value::Array(items) if items.iter().all(toml::Value::is_table) && !items.is_empty());
            if is_table && !(section.ends_with(".*") || section == "upstream") {
                collect_keys(&nested, inner, shown);
            }
        }
    }

    /// `(section, key)` for each `` `[section] key` `` the prose names.
    fn named_settings(text: &str) -> Vec<(String, String)> {
        let mut named = Vec::new();
        for span in text.split('`').skip(1).step_by(2) {
            let Some(rest) = span.strip_prefix('[') else {
                continue;
            };
            let rest = rest.trim_start_matches('[');
            let Some((section, key)) = rest.split_once("] ") else {
                continue;
            };
            let section = section.trim_end_matches(']');
            let key: String = key
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if key.is_empty() {
                continue;
            }
            let section = match section.split_once('.') {
                Some(("tools", _)) => "tools.*".to_owned(),
                Some(("tenants", _)) => "tenants.*".to_owned(),
                _ => section.to_owned(),
            };
            named.push((section, key));
        }
        named
    }

    /// The contents of the fenced blocks of `text` in one of `languages` (a block inside
    /// a list item is indented; the indentation goes).
    fn fenced_blocks(text: &str, languages: &[&str]) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut open: Option<(usize, String)> = None;
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim_start();
            match &mut open {
                None => {
                    if let Some(language) = trimmed.strip_prefix("```") {
                        let wanted = languages.contains(&language.trim());
                        open = Some((indent, String::new()));
                        if !wanted {
                            // Skipped, but tracked so that its closing fence is not
                            // taken for an opening one.
                            open = Some((usize::MAX, String::new()));
                        }
                    }
                }
                Some((block_indent, body)) => {
                    if trimmed.starts_with("```") {
                        if *block_indent != usize::MAX {
                            blocks.push(std::mem::take(body));
                        }
                        open = None;
                    } else if *block_indent != usize::MAX {
                        body.push_str(line.get(*block_indent..).unwrap_or(trimmed));
                        body.push('\n');
                    }
                }
            }
        }
        blocks
    }

    /// The `warden …` commands in shell text, as argument lists: a line's command up to
    /// a comment, a pipe or a redirection; environment assignments before it dropped;
    /// `cargo run --release --` and paths to the binary read as `warden`.
    fn commands_in(text: &str) -> Vec<Vec<String>> {
        let mut commands = Vec::new();
        for line in text.replace("\\\n", " ").lines() {
            let words = shell_words(line);
            let mut words = words
                .iter()
                .skip_while(|word| word.contains('=') && !word.starts_with('-'))
                .peekable();
            let first = words.peek().map(|word| word.as_str());
            let is_warden = first.is_some_and(|word| word == "warden" || word.ends_with("/warden"));
            let is_cargo = first == Some("cargo");
            if !is_warden && !is_cargo {
                continue;
            }
            let mut command = vec!["warden".to_owned()];
            if is_cargo {
                let rest: Vec<&String> = words.collect();
                if rest.get(1).map(|word| word.as_str()) != Some("run") {
                    continue;
                }
                if rest
                    .iter()
                    .any(|word| *word == "-p" || *word == "--package")
                {
                    continue; // another binary of the workspace
                }
                let Some(at) = rest.iter().position(|word| *word == "--") else {
                    continue;
                };
                command.extend(rest[at + 1..].iter().map(|word| (*word).clone()));
            } else {
                command.extend(words.skip(1).cloned());
            }
            commands.push(command);
        }
        commands
    }

    /// A line split as a shell would (quotes, no expansion), up to the first comment,
    /// pipe, list operator or redirection.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => word.push(c),
                None => match c {
                    '\'' | '"' => {
                        quote = Some(c);
                        in_word = true;
                    }
                    '#' if !in_word => break,
                    '|' | '&' | ';' | '>' | '<' => break,
                    c if c.is_whitespace() => {
                        if in_word {
                            words.push(std::mem::take(&mut word));
                            in_word = false;
                        }
                    }
                    c => {
                        word.push(c);
                        in_word = true;
                    }
                },
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    #[test]
    fn durations_need_a_number_and_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30d"), Ok(2_592_000));
        for bad in ["", "12", "h", "1.5h", "3w", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
