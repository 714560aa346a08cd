//! `warden store`: the database behind Warden's durable state.

use std::path::Path;

use clap::Subcommand;
use warden_config::{Config, Overrides, Store};

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
}

pub(crate) fn run(command: StoreCommand) -> Result<(), Failure> {
    match command {
        StoreCommand::Migrate { config, as_owner } => migrate(&config, as_owner),
    }
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
