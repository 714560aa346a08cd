//! `warden tools`: the tool definitions waiting for an operator: list them, see what
//! changed, approve one. A running Warden picks an approval up within a second.

use clap::Subcommand;
use warden_store::PinStore;

use crate::table::Table;
use crate::{Failure, Place, open_place};

#[derive(Subcommand)]
pub(crate) enum ToolsCommand {
    /// Tools withheld until approved, and why.
    Waiting {
        #[command(flatten)]
        place: Place,
    },
    /// The approved definition and the waiting one, one after the other.
    Diff {
        /// The tool's name as clients see it (with its upstream's prefix, if any).
        tool: String,
        #[command(flatten)]
        place: Place,
    },
    /// Accepts a tool's waiting definition; clients see the tool again. The hash is the
    /// one `diff` shows, so that only the definition reviewed is accepted.
    Approve {
        tool: String,
        hash: String,
        #[command(flatten)]
        place: Place,
    },
}

fn open(place: Place) -> Result<PinStore, Failure> {
    Ok(PinStore::open(&open_place(place)?)?)
}

fn pretty(form: Option<&str>) -> String {
    form.and_then(|form| serde_json::from_str::<serde_json::Value>(form).ok())
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| "(none)".to_owned())
}

pub(crate) fn run(command: ToolsCommand) -> Result<(), Failure> {
    match command {
        ToolsCommand::Waiting { place } => {
            let mut table = Table::new(&["TOOL", "HASH", "WHY"]);
            for pin in open(place)?.waiting()? {
                table.row([
                    pin.tool.clone(),
                    pin.pending
                        .as_deref()
                        .map(warden_policy::hash_of_form)
                        .unwrap_or_default(),
                    pin.pending_why.clone().unwrap_or_default(),
                ]);
            }
            table.print(true)?;
        }
        ToolsCommand::Diff { tool, place } => {
            let Some(pin) = open(place)?.get(&tool)? else {
                return Err(format!("no tool {tool} has been seen").into());
            };
            say!("--- approved\n{}", pretty(pin.definition.as_deref()));
            say!(
                "+++ waiting ({})\n{}",
                pin.pending_why.as_deref().unwrap_or("nothing waits"),
                pretty(pin.pending.as_deref())
            );
            if let Some(pending) = &pin.pending {
                say!(
                    "to accept it: warden tools approve {} {}",
                    warden_redact::escape_controls(&tool),
                    warden_policy::hash_of_form(pending)
                );
            }
        }
        ToolsCommand::Approve { tool, hash, place } => {
            let dir = open_place(place)?;
            if !PinStore::open(&dir)?.approve(&tool, &hash, warden_policy::hash_of_form)? {
                return Err(format!(
                    "no definition of {tool} with hash {hash} is waiting for approval (see warden tools diff {tool})"
                )
                .into());
            }
            crate::audit_action(
                &dir,
                "tools/approve",
                "*",
                &format!("{tool} {hash}"),
                "approved",
            )?;
            eprintln!("approved {tool}");
        }
    }
    Ok(())
}
