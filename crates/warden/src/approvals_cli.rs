//! `warden approvals`: calls held for an operator (`confirm = "approve"`): list them,
//! approve or deny one. The client's next identical call then runs once, or is refused.

use clap::Subcommand;
use warden_store::{ApprovalStore, DataDir};

use crate::table::Table;
use crate::{DataDirArg, Failure, data_dir_of};

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Calls waiting for a decision.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Lets a held call run (once, when its client makes it again).
    Approve {
        id: String,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Refuses a held call.
    Deny {
        id: String,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
}

fn open(data_dir: DataDirArg) -> Result<ApprovalStore, Failure> {
    Ok(ApprovalStore::open(&DataDir::open(data_dir_of(
        data_dir,
    )?)?)?)
}

pub(crate) fn run(command: ApprovalsCommand) -> Result<(), Failure> {
    match command {
        ApprovalsCommand::List { data_dir } => {
            let mut table = Table::new(&["ID", "ASKED", "TENANT", "KEY", "TOOL", "ARGUMENTS"]);
            for held in open(data_dir)?.pending()? {
                table.row([
                    held.id,
                    warden_store::format_time(held.created_at),
                    held.tenant,
                    held.principal,
                    held.tool,
                    held.summary,
                ]);
            }
            table.print(true)?;
        }
        ApprovalsCommand::Approve { id, data_dir } => decide(&id, data_dir, true)?,
        ApprovalsCommand::Deny { id, data_dir } => decide(&id, data_dir, false)?,
    }
    Ok(())
}

fn decide(id: &str, data_dir: DataDirArg, approve: bool) -> Result<(), Failure> {
    if !open(data_dir)?.decide(id, approve)? {
        return Err(format!("no call {id} is waiting for a decision").into());
    }
    eprintln!("{} {id}", if approve { "approved" } else { "denied" });
    Ok(())
}
