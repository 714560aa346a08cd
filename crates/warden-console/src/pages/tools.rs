//! Tools: the catalogue per upstream with each tool's kind, and the definitions
//! withheld until approved, each with a side-by-side diff against the approved one and
//! an approval by hash (only the definition reviewed is accepted).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;
use similar::{ChangeTag, TextDiff};
use warden_store::AuditRecord;

use crate::Console;
use crate::error::ConsoleError;
use crate::gateway::ToolEntry;
use crate::html::Page;
use crate::operator::{Operator, csrf_field};

/// A stored definition, indented for reading.
fn pretty(form: Option<&str>) -> String {
    form.and_then(|form| serde_json::from_str::<serde_json::Value>(form).ok())
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| "(none)".to_owned())
}

/// One row of a side-by-side diff: the approved line and the waiting one (either may
/// be missing), and whether they differ.
struct DiffRow {
    before: Option<String>,
    after: Option<String>,
    changed: bool,
}

fn side_by_side(before: &str, after: &str) -> Vec<DiffRow> {
    let mut rows = Vec::new();
    let (mut deleted, mut inserted) = (Vec::new(), Vec::new());
    let flush = |rows: &mut Vec<DiffRow>, deleted: &mut Vec<String>, inserted: &mut Vec<String>| {
        let longest = deleted.len().max(inserted.len());
        let (mut d, mut i) = (deleted.drain(..), inserted.drain(..));
        for _ in 0..longest {
            rows.push(DiffRow {
                before: d.next(),
                after: i.next(),
                changed: true,
            });
        }
    };
    for change in TextDiff::from_lines(before, after).iter_all_changes() {
        let line = change.value().trim_end_matches('\n').to_owned();
        match change.tag() {
            ChangeTag::Delete => deleted.push(line),
            ChangeTag::Insert => inserted.push(line),
            ChangeTag::Equal => {
                flush(&mut rows, &mut deleted, &mut inserted);
                rows.push(DiffRow {
                    before: Some(line.clone()),
                    after: Some(line),
                    changed: false,
                });
            }
        }
    }
    flush(&mut rows, &mut deleted, &mut inserted);
    rows
}

fn diff_table(tool: &str, rows: &[DiffRow]) -> Markup {
    html! {
        div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
            table.diff-table {
                caption.note { "Approved definition of " code { (tool) } " beside the waiting one" }
                thead { tr { th scope="col" { "Approved" } th scope="col" { "Waiting" } } }
                tbody {
                    @for row in rows {
                        tr {
                            td.mono.del[row.changed && row.before.is_some()] { pre { (row.before.as_deref().unwrap_or("")) } }
                            td.mono.ins[row.changed && row.after.is_some()] { pre { (row.after.as_deref().unwrap_or("")) } }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, ConsoleError> {
    let mut by_upstream: BTreeMap<String, Vec<ToolEntry>> = BTreeMap::new();
    for tool in console.gateway.tools() {
        by_upstream
            .entry(tool.upstream.clone())
            .or_default()
            .push(tool);
    }
    let waiting = console
        .pins
        .waiting()
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let body = html! {
        h1 { "Tools" }
        section.card aria-labelledby="withheld-h" {
            h2 #withheld-h { "Withheld until approved" }
            @if waiting.is_empty() {
                p.note { "Nothing is waiting: every definition seen is approved." }
            }
            @for pin in &waiting {
                @let hash = pin.pending.as_deref().map(warden_policy::hash_of_form).unwrap_or_default();
                article.withheld data-tool=(pin.tool) {
                    h3 { code { (pin.tool) } }
                    p { "Why: " (warden_redact::escape_controls(pin.pending_why.as_deref().unwrap_or("changed"))) }
                    p { "Hash of the waiting definition: " code.mono { (hash) } }
                    (diff_table(&pin.tool, &side_by_side(&pretty(pin.definition.as_deref()), &pretty(pin.pending.as_deref()))))
                    @if operator.may_act() && pin.pending.is_some() {
                        form.inline method="post" action="/tools/approve" {
                            (csrf_field(&operator))
                            input type="hidden" name="tool" value=(pin.tool);
                            input type="hidden" name="hash" value=(hash);
                            button type="submit" aria-label={ "Approve the waiting definition of " (pin.tool) } { "Approve this definition" }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="catalogue-h" {
            h2 #catalogue-h { "Catalogue" }
            p.note { "Read tools are seen by every key; write and destructive ones by write and admin keys. Destructive tools ask a person first." }
            @for (upstream, tools) in &by_upstream {
                h3 { (upstream) }
                div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                    table {
                        thead { tr { th { "Tool" } th { "Kind" } th { "Kind from" } } }
                        tbody {
                            @for tool in tools {
                                tr {
                                    td.mono { (tool.name) }
                                    td { span.badge.bad[tool.kind == "destructive"].warn[tool.kind == "write"].ok[tool.kind == "read"] { (tool.kind) } }
                                    td { (tool.kind_from) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new("Tools", &operator, "/tools", body)
        .render()
        .into_response())
}

#[derive(Deserialize)]
pub(crate) struct Approval {
    /// Missing counts as wrong: refused as a forged form is.
    #[serde(default)]
    csrf: String,
    tool: String,
    hash: String,
}

pub(crate) async fn approve(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<Approval>,
) -> Result<Response, ConsoleError> {
    operator.check_change(&form.csrf)?;
    let approved = console
        .pins
        .approve(&form.tool, &form.hash, warden_policy::hash_of_form)
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    if !approved {
        return Err(ConsoleError::NotFound(format!(
            "A waiting definition of {} with that hash",
            form.tool
        )));
    }
    console
        .gateway
        .record(AuditRecord::action(
            &operator.actor(),
            "tools/approve",
            "*",
            &format!("{} {}", form.tool, form.hash),
            "approved",
        ))
        .await;
    Ok(Redirect::to("/tools").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_sit_side_by_side() {
        let rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n");
        let pairs: Vec<_> = rows
            .iter()
            .map(|r| (r.before.as_deref(), r.after.as_deref(), r.changed))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (Some("a"), Some("a"), false),
                (Some("b"), Some("B"), true),
                (Some("c"), Some("c"), false),
                (None, Some("d"), true),
            ]
        );
    }
}
