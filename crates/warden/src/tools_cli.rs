//! `warden tools`: what each scope sees of the running Warden's catalogue, and the tool
//! definitions waiting for an operator: list them, see what changed, approve one. A
//! running Warden picks an approval up within a second.

use clap::Subcommand;

use crate::installation::Installation;
use crate::table::Table;
use crate::{Failure, Place, ScopeArg, admin_client};

#[derive(Subcommand)]
pub(crate) enum ToolsCommand {
    /// Every tool of the running Warden's catalogue: its upstream, its kind, where the
    /// kind came from, and which scopes see it (asked of the admin listener).
    #[command(after_help = "Examples:\n  warden tools list\n  warden tools list --scope read")]
    List {
        /// Only the tools a key of this scope sees.
        #[arg(long, value_enum)]
        scope: Option<ScopeArg>,
        /// Only the tools this key sees (its scope, read from the data directory).
        #[arg(long, value_name = "ID", conflicts_with = "scope")]
        key: Option<String>,
        /// The admin listener to ask [default: the config's [admin] listen, else
        /// 127.0.0.1:9090].
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// Tools withheld until approved, and why.
    #[command(after_help = "Example:\n  warden tools waiting")]
    Waiting {
        #[command(flatten)]
        place: Place,
    },
    /// The approved definition and the waiting one, as a line diff.
    #[command(after_help = "Example:\n  warden tools diff fs__read_file")]
    Diff {
        /// The tool's name as clients see it (with its upstream's prefix, if any).
        tool: String,
        #[command(flatten)]
        place: Place,
    },
    /// Accepts a tool's waiting definition; clients see the tool again. The hash is the
    /// one `diff` shows, so that only the definition reviewed is accepted.
    #[command(
        after_help = "Example:\n  warden tools approve fs__read_file 3b1f9c0e  # the hash warden tools diff printed"
    )]
    Approve {
        /// The tool's name as clients see it.
        tool: String,
        /// The waiting definition's hash, as `warden tools diff` shows it.
        hash: String,
        #[command(flatten)]
        place: Place,
    },
}

fn pretty(form: Option<&str>) -> String {
    form.and_then(|form| serde_json::from_str::<serde_json::Value>(form).ok())
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| "(none)".to_owned())
}

/// Which scopes see a tool of `kind`.
fn seen_by(kind: &str) -> &'static str {
    if kind == "read" {
        "read, write, admin"
    } else {
        "write, admin"
    }
}

fn list(
    scope: Option<ScopeArg>,
    key: Option<String>,
    admin: Option<String>,
    place: Place,
) -> Result<(), Failure> {
    let admin = admin_client::target(admin, place.config.as_deref())?;
    let scope = match key {
        Some(id) => {
            let at = Installation::open(place)?;
            let found = at
                .run(at.stores.keys.list())?
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| format!("no key with id {id}"))?;
            Some(found.scope.into())
        }
        None => scope,
    };
    show(&admin_client::get(&admin, "/api/tools")?, scope)
}

fn show(body: &str, scope: Option<ScopeArg>) -> Result<(), Failure> {
    let listing: serde_json::Value = serde_json::from_str(body)?;
    let mut table = Table::new(&["TOOL", "UPSTREAM", "KIND", "KIND FROM", "SEEN BY"]);
    let mut unclassified = 0;
    for tool in listing["tools"].as_array().into_iter().flatten() {
        let field = |name: &str| tool[name].as_str().unwrap_or_default().to_owned();
        let kind = field("kind");
        let visible = match scope {
            Some(ScopeArg::Read) => kind == "read",
            _ => true,
        };
        if !visible {
            continue;
        }
        if tool["kind_from"] == "unclassified" {
            unclassified += 1;
        }
        table.row([
            field("name"),
            field("upstream"),
            kind.clone(),
            field("kind_from"),
            seen_by(&kind).to_owned(),
        ]);
    }
    table.print(true)?;
    if unclassified > 0 {
        eprintln!(
            "{unclassified} tool(s) of other servers are unclassified and count as write: read keys do not see them. Classify one with [tools.\"<name>\"] kind = \"read\", or vouch for a server's annotations with trust_annotations = true in its [[upstream]]."
        );
    }
    Ok(())
}

pub(crate) fn run(command: ToolsCommand) -> Result<(), Failure> {
    match command {
        ToolsCommand::List {
            scope,
            key,
            admin,
            place,
        } => list(scope, key, admin, place)?,
        ToolsCommand::Waiting { place } => {
            let at = Installation::open(place)?;
            let waiting = at.run(at.stores.pins.waiting())?;
            if waiting.is_empty() {
                say!("nothing is waiting: every tool definition seen is approved");
                return Ok(());
            }
            let mut table = Table::new(&["TOOL", "HASH", "WHY"]);
            for pin in waiting {
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
            let at = Installation::open(place)?;
            let Some(pin) = at.run(at.stores.pins.get(&tool))? else {
                return Err(format!("no tool {tool} has been seen").into());
            };
            let why = pin.pending_why.as_deref().unwrap_or("nothing waits");
            say!(
                "--- approved\n+++ waiting ({})",
                warden_redact::escape_controls(why)
            );
            let (before, after) = (
                pretty(pin.definition.as_deref()),
                pretty(pin.pending.as_deref()),
            );
            // A line diff of the two definitions: what changed stands out.
            let diff = similar::TextDiff::from_lines(&before, &after);
            for change in diff.iter_all_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                say!("{sign}{}", change.value().trim_end_matches('\n'));
            }
            if let Some(pending) = &pin.pending {
                say!(
                    "to accept it: warden tools approve {} {}",
                    warden_redact::escape_controls(&tool),
                    warden_policy::hash_of_form(pending)
                );
            }
        }
        ToolsCommand::Approve { tool, hash, place } => {
            let at = Installation::open(place)?;
            if !at.run(
                at.stores
                    .pins
                    .approve(&tool, &hash, warden_policy::hash_of_form),
            )? {
                return Err(format!(
                    "no definition of {tool} with hash {hash} is waiting for approval (see warden tools diff {tool})"
                )
                .into());
            }
            at.audit_action("tools/approve", "*", &format!("{tool} {hash}"), "approved")?;
            eprintln!("approved {tool}");
        }
    }
    Ok(())
}
