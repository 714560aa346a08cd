//! `warden audit`: read the audit trail (a table or JSON lines), follow it, and verify
//! its chain.

use std::time::Duration;

use clap::Subcommand;
use warden_store::{AuditFilter, AuditRecord, Verdict};

use crate::installation::Installation;
use crate::table::Table;
use crate::{Failure, Place, parse_duration};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Records, oldest first, filtered.
    #[command(
        after_help = "Example:\n  warden audit list --tenant acme --decision refused --since 1h"
    )]
    List {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// A key id (or `oauth:<subject>`).
        #[arg(long)]
        key: Option<String>,
        /// A tool, prompt or resource.
        #[arg(long)]
        tool: Option<String>,
        /// Only records with this decision (pending: held for a person's answer).
        #[arg(long, value_parser = ["allowed", "refused", "pending"])]
        decision: Option<String>,
        /// Only records newer than this, e.g. 1h, 30m, 7d.
        #[arg(long, value_parser = parse_duration)]
        since: Option<u64>,
        /// Only the records of this OpenTelemetry trace (32 hex digits, as in a span or a
        /// log line's trace_id).
        #[arg(long, value_parser = parse_trace_id)]
        trace: Option<String>,
        /// The newest this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: Place,
    },
    /// The last records, and with -f the new ones as they are written.
    #[command(after_help = "Example:\n  warden audit tail -f --json | jq .")]
    Tail {
        /// Keep watching and print new records as they are written (Ctrl-C ends).
        #[arg(short = 'f', long)]
        follow: bool,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Checks the chain: an edited or deleted record is reported.
    #[command(after_help = "Example:\n  warden audit verify --config /etc/warden/warden.toml")]
    Verify {
        #[command(flatten)]
        place: Place,
    },
}

fn open(place: Place) -> Result<Installation, Failure> {
    Installation::open(place)
}

pub(crate) fn run(command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::List {
            tenant,
            key,
            tool,
            decision,
            since,
            trace,
            limit,
            json,
            place,
        } => {
            let since_ms = since.map(|secs| {
                (warden_store::now_unix() - i64::try_from(secs).unwrap_or(i64::MAX / 2)) * 1000
            });
            let filter = AuditFilter {
                tenant,
                principal: key,
                target: tool,
                decision,
                since_ms,
                trace_id: trace,
                limit,
                ..AuditFilter::default()
            };
            let at = open(place)?;
            print_rows(&at.run(at.stores.audit.query(&filter))?, json, true)
        }
        AuditCommand::Tail {
            follow,
            json,
            place,
        } => {
            let at = open(place)?;
            let mut filter = AuditFilter {
                limit: 20,
                ..AuditFilter::default()
            };
            let mut header = true;
            loop {
                let rows = at.run(at.stores.audit.query(&filter))?;
                print_rows(&rows, json, header)?;
                header = false;
                if !follow {
                    return Ok(());
                }
                if let Some((last, _)) = rows.last() {
                    filter.after_id = Some(*last);
                }
                filter.limit = 1_000;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        AuditCommand::Verify { place } => {
            let at = open(place)?;
            let chains = at.run(at.stores.audit.verify())?;
            let mut broken = Vec::new();
            let mut total = 0;
            for (replica, verdict) in &chains {
                // A data directory has one chain; PostgreSQL one per replica, named.
                let chain = if replica.is_empty() {
                    String::new()
                } else {
                    format!(" of replica {}", warden_redact::escape_controls(replica))
                };
                match verdict {
                    Verdict::Intact { rows } => {
                        total += rows;
                        if !replica.is_empty() {
                            say!("chain{chain} intact: {rows} records");
                        }
                    }
                    Verdict::Edited { id } => {
                        broken.push(format!("audit record {id}{chain} was changed"));
                    }
                    Verdict::Missing { before_id } => broken.push(format!(
                        "audit records{chain} are missing before record {before_id}"
                    )),
                }
            }
            if broken.is_empty() {
                say!("audit trail intact: {total} records");
                Ok(())
            } else {
                Err(broken.join("; ").into())
            }
        }
    }
}

/// A trace id as W3C writes it: 32 lowercase hex digits (upper case is accepted and
/// lowered), not all zero.
fn parse_trace_id(value: &str) -> Result<String, String> {
    let id = value.to_ascii_lowercase();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')
    {
        Ok(id)
    } else {
        Err("a trace id is 32 hex digits, not all zero".into())
    }
}

fn print_rows(rows: &[(i64, AuditRecord)], json: bool, header: bool) -> Result<(), Failure> {
    if json {
        for (id, record) in rows {
            let mut line = serde_json::to_value(record)?;
            line["id"] = (*id).into();
            say!("{line}");
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID", "TIME", "TENANT", "KEY", "METHOD", "TARGET", "DECISION", "RULE", "OUTCOME", "LATENCY",
    ]);
    for (id, r) in rows {
        table.row([
            id.to_string(),
            warden_store::format_time(r.at_ms / 1000),
            r.tenant.clone(),
            r.principal.clone(),
            r.method.clone(),
            r.target.clone().unwrap_or_else(|| "-".into()),
            r.decision.clone(),
            r.rule.clone().unwrap_or_else(|| "-".into()),
            r.outcome.clone(),
            format!("{}ms", r.latency_us / 1000),
        ]);
    }
    table.print(header)?;
    Ok(())
}
