//! Audit: the trail filtered by tenant, key, tool, decision and time, newest first, a
//! page at a time; the chains verified; the filtered records exported as JSON lines.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use warden_store::{AuditFilter, AuditRecord, Verdict};

use crate::Console;
use crate::error::ConsoleError;
use crate::html::{Page, time_ms};
use crate::operator::Operator;

/// Records on a page.
const PAGE: usize = 50;
/// Records read from the store at a time while exporting.
const EXPORT_BATCH: usize = 1000;

/// The filters, as the form sends them (empty fields mean "any").
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    decision: String,
    /// `YYYY-MM-DDTHH:MM` (UTC), as a `datetime-local` field sends it.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Records older than this one (the next page).
    before: Option<i64>,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// `YYYY-MM-DDTHH:MM[:SS]` in UTC as milliseconds since the epoch.
fn parse_time(value: &str) -> Result<Option<i64>, ConsoleError> {
    let Some(value) = given(value) else {
        return Ok(None);
    };
    let invalid = || {
        ConsoleError::Invalid(format!(
            "{value:?} is not a time like 2026-12-03T14:30 (UTC)"
        ))
    };
    const MINUTES: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    const SECONDS: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let parsed = time::PrimitiveDateTime::parse(&value, MINUTES)
        .or_else(|_| time::PrimitiveDateTime::parse(&value, SECONDS))
        .map_err(|_| invalid())?;
    if parsed.year() < 1970 {
        return Err(invalid());
    }
    Ok(Some(parsed.assume_utc().unix_timestamp() * 1000))
}

impl Filters {
    fn to_store(&self, limit: usize) -> Result<AuditFilter, ConsoleError> {
        let decision = given(&self.decision);
        if decision
            .as_deref()
            .is_some_and(|d| d != "allowed" && d != "refused" && d != "pending")
        {
            return Err(ConsoleError::Invalid(
                "The decision is allowed, refused or pending.".to_owned(),
            ));
        }
        Ok(AuditFilter {
            tenant: given(&self.tenant),
            principal: given(&self.key),
            target: given(&self.tool),
            decision,
            since_ms: parse_time(&self.since)?,
            until_ms: parse_time(&self.until)?,
            before_id: self.before,
            limit,
            ..AuditFilter::default()
        })
    }

    /// The query string of these filters, `before` aside, for links.
    fn query(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("tenant", &self.tenant)
            .append_pair("key", &self.key)
            .append_pair("tool", &self.tool)
            .append_pair("decision", &self.decision)
            .append_pair("since", &self.since)
            .append_pair("until", &self.until)
            .finish()
    }
}

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
    Query(filters): Query<Filters>,
) -> Result<Response, ConsoleError> {
    // One more than a page: whether an older page exists.
    let found = console
        .audit
        .query(&filters.to_store(PAGE + 1)?)
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let more = found.len() > PAGE;
    let records: Vec<&(i64, AuditRecord)> = found.iter().rev().take(PAGE).collect();
    let older = records.last().filter(|_| more).map(|(id, _)| *id);
    let query = filters.query();
    let decisions = [
        ("", "any"),
        ("allowed", "allowed"),
        ("refused", "refused"),
        ("pending", "pending"),
    ];
    let body = html! {
        h1 { "Audit" }
        section.card {
            form.filters method="get" action="/audit" {
                div { label for="f-tenant" { "Tenant" } input #f-tenant type="text" name="tenant" value=(filters.tenant); }
                div { label for="f-key" { "Key id" } input #f-key type="text" name="key" value=(filters.key); }
                div { label for="f-tool" { "Tool" } input #f-tool type="text" name="tool" value=(filters.tool); }
                div {
                    label for="f-decision" { "Decision" }
                    select #f-decision name="decision" {
                        @for (value, name) in decisions {
                            option value=(value) selected[filters.decision == value] { (name) }
                        }
                    }
                }
                div { label for="f-since" { "Since (UTC)" } input #f-since type="datetime-local" name="since" value=(filters.since); }
                div { label for="f-until" { "Until (UTC)" } input #f-until type="datetime-local" name="until" value=(filters.until); }
                div { button type="submit" { "Filter" } }
            }
            p {
                a href={ "/audit/export?" (query) } download="audit.jsonl" { "Export these records (JSON lines)" }
                " · "
                a href="/audit/verify" { "Verify the chain" }
            }
        }
        section.card {
            div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                table #records {
                    thead {
                        tr { th { "When (UTC)" } th { "Tenant" } th { "Key" } th { "Client" } th { "Method" } th { "Target" } th { "Decision" } th { "Rule" } th { "Outcome" } th { "ms" } }
                    }
                    tbody {
                        @if records.is_empty() { tr { td colspan="10" { "No records match." } } }
                        @for (_, record) in &records {
                            tr {
                                td { (time_ms(record.at_ms)) }
                                td { (record.tenant) }
                                td.mono { (record.principal) }
                                td { (record.client) }
                                td.mono { (record.method) }
                                td.mono { (record.target.as_deref().unwrap_or("")) }
                                td.ok[record.decision == "allowed"].bad[record.decision == "refused"] { (record.decision) }
                                td.mono { (record.rule.as_deref().unwrap_or("")) }
                                td { (record.outcome) }
                                td { (record.latency_us / 1000) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if filters.before.is_some() { a href={ "/audit?" (query) } { "Newest" } }
                @if let Some(older) = older { a href={ "/audit?" (query) "&before=" (older) } { "Older" } }
            }
        }
    };
    Ok(Page::new("Audit", &operator, "/audit", body)
        .render()
        .into_response())
}

/// Every matching record, newest first, one JSON object a line; read from the store a
/// batch at a time while the download runs.
pub(crate) async fn export(
    State(console): State<Arc<Console>>,
    Query(filters): Query<Filters>,
) -> Result<Response, ConsoleError> {
    let first = filters.to_store(EXPORT_BATCH)?;
    let batches = futures_util::stream::unfold(Some(first), move |filter| {
        let console = console.clone();
        async move {
            let mut filter = filter?;
            let found = match console.audit.query(&filter).await {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(%error, "console: audit export stopped");
                    return Some((
                        Err(std::io::Error::other("the audit trail could not be read")),
                        None,
                    ));
                }
            };
            if found.is_empty() {
                return None;
            }
            let mut lines = String::new();
            for (id, record) in found.iter().rev() {
                lines.push_str(&line(*id, record));
                lines.push('\n');
            }
            let next = (found.len() == filter.limit).then(|| {
                filter.before_id = found.first().map(|(id, _)| *id);
                filter
            });
            Some((Ok::<_, std::io::Error>(lines), next))
        }
    });
    let mut response = Body::from_stream(batches).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.jsonl\""),
    );
    Ok(response)
}

/// One record as a JSON line, with the fields `warden audit list --json` prints.
fn line(id: i64, record: &AuditRecord) -> String {
    serde_json::json!({
        "id": id,
        "at_ms": record.at_ms,
        "tenant": record.tenant,
        "principal": record.principal,
        "client": record.client,
        "instance": record.instance,
        "era": record.era,
        "method": record.method,
        "target": record.target,
        "upstream": record.upstream,
        "decision": record.decision,
        "rule": record.rule,
        "outcome": record.outcome,
        "latency_us": record.latency_us,
        "request_bytes": record.request_bytes,
        "result_bytes": record.result_bytes,
    })
    .to_string()
}

pub(crate) async fn verify(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, ConsoleError> {
    let chains = console
        .audit
        .verify()
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let body = html! {
        h1 { "Audit chain" }
        section.card {
            ul #verdicts {
                @for (chain, verdict) in &chains {
                    @let name = if chain.is_empty() { "this data directory" } else { chain.as_str() };
                    li {
                        @match verdict {
                            Verdict::Intact { rows } => span.ok { "Intact: " (name) ", " (rows) " records." },
                            Verdict::Edited { id } => span.bad { "Edited: " (name) ", record " (id) " does not match its hash." },
                            Verdict::Missing { before_id } => span.bad { "Records removed: " (name) ", the chain breaks before record " (before_id) "." },
                        }
                    }
                }
            }
            p { a href="/audit" { "Back to the records" } }
        }
    };
    Ok(Page::new("Audit chain", &operator, "/audit", body)
        .render()
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc() {
        assert_eq!(parse_time("1970-01-01T00:00").unwrap(), Some(0));
        assert_eq!(
            parse_time("2026-12-03T22:17:54").unwrap(),
            Some(1_796_336_274_000)
        );
        assert_eq!(parse_time(" ").unwrap(), None);
        for bad in [
            "2026-13-01T00:00",
            "yesterday",
            "2026-12-03",
            "2026-12-03T25:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
