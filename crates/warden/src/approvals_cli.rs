//! `warden approvals`: calls held for an operator (`confirm = "approve"`): list them,
//! approve or deny one. The client's next identical call then runs once, or is refused.

use clap::Subcommand;

use crate::installation::Installation;
use crate::table::Table;
use crate::{Failure, Place};

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Calls waiting for a decision.
    #[command(after_help = "Example:\n  warden approvals list")]
    List {
        #[command(flatten)]
        place: Place,
    },
    /// Lets a held call run (once, when its client makes it again).
    #[command(
        after_help = "Example:\n  warden approvals approve apr_7f3c9a2e51d04b6c8a1e2f3d4c5b6a70"
    )]
    Approve {
        /// The held call's id, as `warden approvals list` shows it.
        id: String,
        #[command(flatten)]
        place: Place,
    },
    /// Refuses a held call.
    #[command(
        after_help = "Example:\n  warden approvals deny apr_7f3c9a2e51d04b6c8a1e2f3d4c5b6a70"
    )]
    Deny {
        /// The held call's id, as `warden approvals list` shows it.
        id: String,
        #[command(flatten)]
        place: Place,
    },
}

pub(crate) fn run(command: ApprovalsCommand) -> Result<(), Failure> {
    match command {
        ApprovalsCommand::List { place } => {
            let mut table = Table::new(&["ID", "ASKED", "TENANT", "KEY", "TOOL", "ARGUMENTS"]);
            let at = Installation::open(place)?;
            for held in at.run(at.stores.approvals.pending())? {
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
        ApprovalsCommand::Approve { id, place } => decide(&id, place, true)?,
        ApprovalsCommand::Deny { id, place } => decide(&id, place, false)?,
    }
    Ok(())
}

fn decide(id: &str, place: Place, approve: bool) -> Result<(), Failure> {
    let at = Installation::open(place)?;
    let Some(held) = at.run(at.stores.approvals.decide(id, approve))? else {
        return Err(format!("no call {id} is waiting for a decision").into());
    };
    let (method, outcome) = if approve {
        ("approvals/approve", "approved")
    } else {
        ("approvals/deny", "denied")
    };
    let target = format!("{id} {}", held.tool);
    at.audit_action(method, &held.tenant, &target, outcome)?;
    eprintln!("{outcome} {id}");
    Ok(())
}
