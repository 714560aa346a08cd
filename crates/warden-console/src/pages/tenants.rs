//! Tenants: today's cost against each tenant's daily cap.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::Console;
use crate::html::Page;
use crate::operator::Operator;

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let costs = console.gateway.costs();
    let body = html! {
        h1 { "Tenants" }
        section.card {
            p.note { "Spending today (UTC) against each tenant's daily cap: a call costs its tool's cost; a tenant at its cap is refused until midnight." }
            div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                table #tenants {
                    thead { tr { th { "Tenant" } th { "Spent today" } th { "Cap" } th { "Used" } } }
                    tbody {
                        @if costs.is_empty() { tr { td colspan="4" { "No tenant has spent anything today." } } }
                        @for cost in &costs {
                            @let percent = cost.spent.saturating_mul(100).checked_div(cost.cap).unwrap_or(100).min(100);
                            tr data-tenant=(cost.tenant) {
                                td { (cost.tenant) }
                                td { (cost.spent) }
                                td { (cost.cap) }
                                td {
                                    meter.meter min="0" max="100" value=(percent) aria-label={ (cost.tenant) ": " (percent) "% of the cap" } { (percent) "%" }
                                    " " (percent) "%"
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Page::new("Tenants", &operator, "/tenants", body)
        .render()
        .into_response()
}
