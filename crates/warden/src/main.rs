//! The `warden` command: a thin shell over the library crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use warden_config::{Config, Overrides};
use warden_store::{DataDir, KeyStore, NotesStore, Scope};
use warden_upstream::Upstreams;

#[derive(Parser)]
#[command(name = "warden", version, about = "A security gateway for MCP servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DataDirArg {
    /// Where Warden keeps its keys, notes and server secret.
    #[arg(long, env = "WARDEN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the MCP endpoint (the embedded notes server unless configured otherwise).
    Serve {
        /// A warden.toml; without one, safe defaults apply.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; the key is printed once, alone on stdout, and never stored.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = ScopeArg::Write)]
        scope: ScopeArg,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Revoke a key by id; it is refused from the next request on.
    Revoke {
        id: String,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and report the first problem.
    Check { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Read,
    Write,
    Admin,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            log_format,
        } => serve(
            config.as_deref(),
            Overrides {
                listen,
                data_dir: data_dir.data_dir,
            },
            log_format,
        ),
        Command::Keys { command } => keys(command),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Config::load(Some(&file), &Overrides::default())
            .map(|_| println!("{}: ok", file.display()))
            .map_err(Failure::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("warden: {error}");
            ExitCode::FAILURE
        }
    }
}

fn open_keys(data_dir: DataDirArg) -> Result<KeyStore, Failure> {
    let config = Config::load(
        None,
        &Overrides {
            data_dir: data_dir.data_dir,
            ..Overrides::default()
        },
    )?;
    Ok(KeyStore::open(&DataDir::open(config.data_dir)?)?)
}

fn keys(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Add {
            tenant,
            name,
            scope,
            data_dir,
        } => {
            let new = open_keys(data_dir)?.add(&tenant, &name, scope.into())?;
            eprintln!(
                "created {} for tenant {} ({}); the key is shown once:",
                new.record.id, tenant, new.record.scope
            );
            println!("{}", new.key);
        }
        KeysCommand::List { data_dir } => {
            println!(
                "{:<22} {:<16} {:<16} {:<6} {:<21} {:<21} STATUS",
                "ID", "TENANT", "NAME", "SCOPE", "CREATED", "LAST USED"
            );
            for key in open_keys(data_dir)?.list()? {
                let status = key.revoked_at.map_or("active".to_owned(), |t| {
                    format!("revoked {}", warden_store::format_time(t))
                });
                println!(
                    "{:<22} {:<16} {:<16} {:<6} {:<21} {:<21} {}",
                    key.id,
                    key.tenant,
                    key.name,
                    key.scope,
                    warden_store::format_time(key.created_at),
                    key.last_used
                        .map_or("never".to_owned(), warden_store::format_time),
                    status
                );
            }
        }
        KeysCommand::Revoke { id, data_dir } => {
            if !open_keys(data_dir)?.revoke(&id)? {
                return Err(format!("no active key with id {id}").into());
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How long a start waits for the upstreams' catalogues before it listens anyway.
const CATALOGUE_WAIT: Duration = Duration::from_secs(30);

/// File the first admin key is written to, readable by the owner only.
const ADMIN_KEY_FILE: &str = "admin.key";

/// On an empty key store, mints an admin key for tenant `default`, prints it once and
/// saves it beside the data. A later start finds keys and does nothing.
fn ensure_first_key(keys: &KeyStore, dir: &DataDir) -> Result<(), Failure> {
    if keys.has_keys()? {
        return Ok(());
    }
    let new = keys.add("default", "admin", Scope::Admin)?;
    let path = dir.file(ADMIN_KEY_FILE);
    warden_store::write_private_file(&path, format!("{}\n", new.key).as_bytes())?;
    println!("{}", new.key);
    tracing::info!(key_id = %new.record.id, file = %path.display(), "created the first admin key (tenant \"default\"); it is printed above once and saved to the file");
    Ok(())
}

fn serve(
    config_path: Option<&Path>,
    overrides: Overrides,
    log_format: LogFormat,
) -> Result<(), Failure> {
    let config = Config::load(config_path, &overrides)?;
    init_logging(log_format);
    let dir = DataDir::open(&config.data_dir)?;
    let keys = Arc::new(KeyStore::open(&dir)?);
    let notes = Arc::new(NotesStore::open(&dir)?);
    ensure_first_key(&keys, &dir)?;
    if !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "listening beyond loopback without TLS");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let upstreams = Upstreams::start(&config.upstreams, &notes).map_err(|(name, error)| {
            Failure::from(format!("upstream {name:?}: {error}"))
        })?;
        upstreams.load(CATALOGUE_WAIT).await;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(data_dir = %dir.path().display(), "listening on http://{addr}{}", warden_gateway::MCP_PATH);
        let state = warden_gateway::AppState::new(&config, keys, upstreams.clone());
        let served = warden_gateway::serve(listener, state, shutdown_signal()).await;
        upstreams.shutdown().await;
        served?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
