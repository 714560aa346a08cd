//! Approvals: calls held for an operator (`confirm = "approve"`), live. Approving lets
//! the client's next identical call run once; denying refuses it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use futures_util::Stream;
use maud::{Markup, html};
use serde::Deserialize;
use warden_store::{Approval, AuditRecord};

use crate::Console;
use crate::error::ConsoleError;
use crate::html::{Page, time};
use crate::operator::{Operator, csrf_field};

/// How often a live page's list is looked at again.
const POLL: Duration = Duration::from_secs(1);

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, ConsoleError> {
    let pending = console
        .approvals
        .pending()
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let body = html! {
        h1 { "Approvals" }
        section.card {
            p.note {
                "Calls held for an operator. Approve one and the client's next identical call runs, once; deny it and that call is refused. This list updates by itself."
            }
            div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                table {
                    thead {
                        tr {
                            th { "Request" } th { "Asked" } th { "Tenant" } th { "Key" } th { "Tool" } th { "Arguments (redacted)" } th { "Decision" }
                        }
                    }
                    tbody #pending aria-live="polite" { (rows(&pending, &operator)) }
                }
            }
        }
    };
    Ok(Page::new("Approvals", &operator, "/approvals", body)
        .render()
        .into_response())
}

fn rows(pending: &[Approval], operator: &Operator) -> Markup {
    html! {
        @if pending.is_empty() {
            tr { td colspan="7" { "Nothing is waiting." } }
        }
        @for held in pending {
            tr data-request=(held.id) {
                td.mono { (held.id) }
                td { (time(held.created_at)) }
                td { (held.tenant) }
                td.mono { (held.principal) }
                td.mono { (held.tool) }
                td.mono { (held.summary) }
                td {
                    @if operator.may_act() {
                        form.inline method="post" action="/approvals/decide" {
                            (csrf_field(operator))
                            input type="hidden" name="id" value=(held.id);
                            button type="submit" name="decision" value="approve" aria-label={ "Approve " (held.id) } { "Approve" }
                            button.danger type="submit" name="decision" value="deny" aria-label={ "Deny " (held.id) } { "Deny" }
                        }
                    } @else {
                        span.note { "read only" }
                    }
                }
            }
        }
    }
}

/// The pending list as HTML, sent again whenever it changes.
pub(crate) async fn events(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    // Each live page holds a place until it is closed; the page itself still works
    // (reload it) when none is left.
    let place = console
        .live_pages
        .clone()
        .try_acquire_owned()
        .map_err(|_| ConsoleError::Busy)?;
    let stream = futures_util::stream::unfold(
        (console, operator, None::<Vec<String>>, place),
        |(console, operator, shown, place)| async move {
            let mut first = shown.is_none();
            loop {
                if !first {
                    tokio::time::sleep(POLL).await;
                }
                first = false;
                // Signed out, or the key revoked: the live page ends.
                if !console.operators.signed_in(&operator.key_id) {
                    return None;
                }
                let Ok(pending) = console.approvals.pending().await else {
                    continue;
                };
                let ids: Vec<String> = pending.iter().map(|held| held.id.clone()).collect();
                if shown.as_ref() == Some(&ids) {
                    continue;
                }
                let event = Event::default()
                    .event("pending")
                    .data(rows(&pending, &operator).into_string());
                return Some((Ok(event), (console, operator, Some(ids), place)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
pub(crate) struct Decision {
    /// Missing counts as wrong: refused as a forged form is.
    #[serde(default)]
    csrf: String,
    id: String,
    decision: String,
}

pub(crate) async fn decide(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<Decision>,
) -> Result<Response, ConsoleError> {
    operator.check_change(&form.csrf)?;
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(ConsoleError::Invalid("Choose approve or deny.".to_owned())),
    };
    let held = console
        .approvals
        .decide(&form.id, approve)
        .await
        .map_err(|e| ConsoleError::store(&e))?
        .ok_or_else(|| ConsoleError::NotFound(format!("Request {}", form.id)))?;
    let (method, outcome) = if approve {
        ("approvals/approve", "approved")
    } else {
        ("approvals/deny", "denied")
    };
    console
        .gateway
        .record(AuditRecord::action(
            &operator.actor(),
            method,
            &held.tenant,
            &format!("{} {}", held.id, held.tool),
            outcome,
        ))
        .await;
    Ok(Redirect::to("/approvals").into_response())
}
