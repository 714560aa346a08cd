//! Overview: each upstream up or down with its restarts, requests and refusals by
//! layer over the last hour, and the latest errors.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::Response;
use maud::html;
use warden_store::AuditFilter;

use crate::Console;
use crate::chart;
use crate::html::{Page, time_ms};
use crate::operator::Operator;
use crate::traffic::this_minute;

/// Records looked through for the latest errors, and errors shown.
const LOOK_BACK: usize = 500;
const ERRORS_SHOWN: usize = 10;

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let minute = this_minute();
    let now = console.gateway.totals();
    console.traffic.observe(minute, now.clone());
    let hour = console.traffic.last_hour(minute, &now);
    let requests = vec![(
        "requests".to_owned(),
        hour.iter().map(|m| m.requests).collect::<Vec<_>>(),
    )];
    let layers: BTreeSet<&String> = hour.iter().flat_map(|m| m.refusals.keys()).collect();
    let refusals: Vec<(String, Vec<u64>)> = layers
        .into_iter()
        .map(|layer| {
            let counts = hour
                .iter()
                .map(|m| m.refusals.get(layer).copied().unwrap_or(0))
                .collect();
            (layer.clone(), counts)
        })
        .collect();
    let upstreams = console.gateway.upstreams();
    let errors = match console
        .audit
        .query(&AuditFilter {
            limit: LOOK_BACK,
            ..AuditFilter::default()
        })
        .await
    {
        Ok(records) => Some(
            records
                .into_iter()
                .rev()
                .filter(|(_, r)| {
                    r.decision == "refused"
                        || matches!(
                            r.outcome.as_str(),
                            "protocol_error" | "timeout" | "unavailable"
                        )
                })
                .take(ERRORS_SHOWN)
                .collect::<Vec<_>>(),
        ),
        Err(error) => {
            tracing::error!(%error, "console: audit not read");
            None
        }
    };
    let body = html! {
        h1 { "Overview" }
        section.card aria-labelledby="upstreams-h" {
            h2 #upstreams-h { "Upstreams" }
            div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                table {
                    thead { tr { th { "Upstream" } th { "State" } th { "Restarts" } } }
                    tbody {
                        @for upstream in &upstreams {
                            tr {
                                td.mono { (upstream.name) }
                                td {
                                    @if upstream.up { span.badge.up { "up" } } @else { span.badge.down { "down" } }
                                }
                                td { (upstream.restarts) }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="traffic-h" {
            h2 #traffic-h { "The last hour" }
            div.charts {
                (chart::stacked("requests", "Requests per minute", &requests))
                @if refusals.is_empty() {
                    (chart::stacked("refusals", "Refusals per minute", &[("refusals".to_owned(), vec![0; hour.len()])]))
                } @else {
                    (chart::stacked("refusals", "Refusals per minute, by layer", &refusals))
                }
            }
        }
        section.card aria-labelledby="errors-h" {
            h2 #errors-h { "Latest errors" }
            @match &errors {
                None => p.problem { "The audit trail could not be read; see Warden's log." },
                Some(errors) if errors.is_empty() => p.note { "No refusals or failures in the latest " (LOOK_BACK) " records." },
                Some(errors) => div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                    table {
                        thead { tr { th { "When" } th { "Tenant" } th { "Key" } th { "Method" } th { "Target" } th { "Rule or outcome" } } }
                        tbody {
                            @for (_, record) in errors {
                                tr {
                                    td { (time_ms(record.at_ms)) }
                                    td { (record.tenant) }
                                    td.mono { (record.principal) }
                                    td.mono { (record.method) }
                                    td.mono { (record.target.as_deref().unwrap_or("")) }
                                    td.mono { (record.rule.as_deref().unwrap_or(&record.outcome)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Page::new("Overview", &operator, "/", body)
        .render()
        .into_response()
}
