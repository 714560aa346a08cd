//! `warden store`: the database behind Warden's durable state.

use std::path::Path;

use clap::Subcommand;
use warden_config::{Config, Overrides, Store};
use warden_store::Verdict;

use crate::Failure;

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Bring the PostgreSQL schema up to date (migrations are versioned, each applied
    /// once, under an advisory lock so that replicas starting at once do not race), as
    /// the [store] owner_url role, and grant the runtime role (url) data access only.
    #[command(
        after_help = "Examples:\n  warden store migrate --config /etc/warden/warden.toml\n  warden store migrate --config warden.toml --as-owner"
    )]
    Migrate {
        /// The warden.toml whose [store] names the database.
        #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
        config: std::path::PathBuf,
        /// Migrate as the runtime role itself (one role owns the schema and runs Warden:
        /// simpler, but that role may then alter the schema) when no owner_url is set.
        #[arg(long)]
        as_owner: bool,
    },
    /// Copy an installation's SQLite data directory into a PostgreSQL store: keys, notes
    /// and their versions, pins, held calls, daily costs, and the audit trail as one
    /// replica's chain (verifiable as before). Running it again adds only what is new.
    /// Stop the Warden that uses the data directory first.
    #[command(after_help = "Example:
  warden store copy --from /var/lib/warden --to env:WARDEN_POSTGRES_URL

Keys are stored as hashes keyed by the data directory's server.secret: give every
replica that file ([store] server_secret = \"file:/path/to/server.secret\").")]
    Copy {
        /// The data directory to copy from.
        #[arg(long, value_name = "DATA_DIR")]
        from: std::path::PathBuf,
        /// The database: postgres://USER@HOST/DATABASE, or env:NAME to read it from the
        /// environment (keeping a password off the command line). Its schema must be
        /// current (`warden store migrate`).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The replica whose audit chain, held calls and costs the copy becomes (default:
        /// this machine's host name, the name `warden serve` here takes, so that it
        /// continues the chain).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
    },
}

pub(crate) fn run(command: StoreCommand) -> Result<(), Failure> {
    match command {
        StoreCommand::Migrate { config, as_owner } => migrate(&config, as_owner),
        StoreCommand::Copy { from, to, replica } => copy(&from, &to, replica),
    }
}

fn copy(from: &Path, to: &str, replica: Option<String>) -> Result<(), Failure> {
    let url = match to.strip_prefix("env:") {
        Some(name) => std::env::var(name)
            .map_err(|_| format!("--to env:{name}: the environment variable is not set"))?,
        None => to.to_owned(),
    };
    let replica = match replica {
        Some(name) if warden_config::is_replica_name(&name) => name,
        Some(_) => return Err("--replica must be 1-64 letters, digits, '-', '_' or '.'".into()),
        None => crate::installation::host_replica_name()?,
    };
    let settings = warden_store::postgres::PgSettings {
        url,
        pool_size: 1,
        statement_timeout: std::time::Duration::from_secs(600),
        connect_timeout: std::time::Duration::from_millis(
            warden_config::DEFAULT_CONNECT_TIMEOUT_MS,
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let db = warden_store::postgres::Postgres::new(&settings)?;
        warden_store::copy::sqlite_to_postgres(from, &db, &replica).await
    })?;
    say!("copied {} into PostgreSQL:", from.display());
    for copied in &report.copied {
        say!(
            "  {:<14} {:>9} found {:>9} added",
            copied.what,
            copied.found,
            copied.added
        );
    }
    match report.chain {
        Verdict::Intact { rows } => {
            say!("audit chain of replica {replica} intact: {rows} records");
        }
        Verdict::Edited { id } => {
            return Err(format!("audit record {id} of replica {replica} does not match its hash: the copy is not the trail").into());
        }
        Verdict::Missing { before_id } => {
            return Err(format!("audit records of replica {replica} are missing before record {before_id}: was the data directory's trail intact? (`warden audit verify --data-dir DIR`)").into());
        }
    }
    if report
        .copied
        .iter()
        .any(|c| c.what == "keys" && c.found > 0)
    {
        say!(
            "keys are stored as hashes keyed by {}: every replica needs that file ([store] server_secret = \"file:/path/to/server.secret\"), or no copied key will match",
            from.join("server.secret").display()
        );
    }
    Ok(())
}

fn migrate(path: &Path, as_owner: bool) -> Result<(), Failure> {
    let config = Config::load(Some(path), &Overrides::default())?;
    let Store::Postgres(store) = &config.store else {
        return Err(format!(
            "{}: [store] backend is \"sqlite\": its files migrate themselves when Warden opens them",
            path.display()
        )
        .into());
    };
    let runtime_role = warden_store::postgres::role_of(store.url.expose())?;
    let (owner_url, grantee) = match (&store.owner_url, as_owner) {
        (Some(owner), false) => (owner.expose(), Some(runtime_role.as_str())),
        (None, true) => (store.url.expose(), None),
        (Some(_), true) => {
            return Err("--as-owner migrates as the runtime role: leave it out when [store] owner_url is set".into());
        }
        (None, false) => {
            return Err("[store] has no owner_url: set one (the role that owns the schema), or pass --as-owner to migrate as the runtime role".into());
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let migrated = runtime.block_on(warden_store::postgres::migrate(
        owner_url,
        grantee,
        store.connect_timeout,
    ))?;
    if migrated.from == migrated.to {
        say!("the schema is up to date (version {})", migrated.to);
    } else {
        say!(
            "migrated the schema from version {} to {}",
            migrated.from,
            migrated.to
        );
    }
    if grantee.is_some() {
        say!("granted {runtime_role} data access to schema warden (no DDL)");
    }
    Ok(())
}
