//! Keys: every key (never the key itself, never its hash); add one (shown once, with a
//! copy button), revoke, rotate; each with its own rate and expiry.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;
use warden_store::keys::is_valid_label;
use warden_store::{AuditRecord, KeyOptions, NewKey, Scope, now_unix};

use crate::Console;
use crate::error::ConsoleError;
use crate::html::{Page, time};
use crate::operator::{Operator, csrf_field};

/// The longest expiry and grace the forms take.
const MAX_DAYS: u64 = 3650;
const MAX_GRACE_SECS: u64 = 30 * 24 * 3600;

async fn listing(
    console: &Console,
    operator: &Operator,
    shown_once: Option<Markup>,
) -> Result<Response, ConsoleError> {
    let keys = console
        .keys
        .list()
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let now = now_unix();
    let body = html! {
        h1 { "Keys" }
        @if let Some(shown) = shown_once { (shown) }
        section.card {
            div.table-wrap tabindex="0" role="region" aria-label="Table, scrolls sideways on narrow screens" {
                table #keys {
                    thead {
                        tr { th { "Id" } th { "Tenant" } th { "Name" } th { "Scope" } th { "Requests/min" } th { "Expires" } th { "Last used" } th { "Status" } th { "Actions" } }
                    }
                    tbody {
                        @for key in &keys {
                            @let active = key.revoked_at.is_none() && key.options.expires_at.is_none_or(|at| at > now);
                            tr data-key=(key.id) {
                                td.mono { (key.id) }
                                td { (key.tenant) }
                                td { (key.name) }
                                td { (key.scope.as_str()) }
                                td { @if let Some(rpm) = key.options.rpm { (rpm) } @else { span.note { "default" } } }
                                td { @if let Some(at) = key.options.expires_at { (time(at)) } @else { span.note { "never" } } }
                                td { @if let Some(at) = key.last_used { (time(at)) } @else { span.note { "never" } } }
                                td.ok[active].bad[!active] { (key.status(now)) }
                                td {
                                    @if operator.may_act() && active {
                                        form.inline method="post" action="/keys/rotate" {
                                            (csrf_field(operator))
                                            input type="hidden" name="id" value=(key.id);
                                            label.visually-hidden for={ "grace-" (key.id) } { "Old key valid for (seconds)" }
                                            input id={ "grace-" (key.id) } type="number" name="grace_secs" value="3600" min="0" max=(MAX_GRACE_SECS);
                                            button.secondary type="submit" aria-label={ "Rotate " (key.id) } { "Rotate" }
                                        }
                                        form.inline method="post" action="/keys/revoke" {
                                            (csrf_field(operator))
                                            input type="hidden" name="id" value=(key.id);
                                            button.danger type="submit" aria-label={ "Revoke " (key.id) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if operator.may_act() {
            section.card aria-labelledby="add-h" {
                h2 #add-h { "Add a key" }
                form #add-key method="post" action="/keys/add" {
                    (csrf_field(operator))
                    label for="k-tenant" { "Tenant" }
                    input #k-tenant type="text" name="tenant" required maxlength="64" pattern="[A-Za-z0-9._-]+";
                    label for="k-name" { "Name (the client installation)" }
                    input #k-name type="text" name="name" required maxlength="64" pattern="[A-Za-z0-9._-]+";
                    label for="k-scope" { "Scope" }
                    select #k-scope name="scope" {
                        option value="read" { "read: read tools only" }
                        option value="write" selected { "write: every tool" }
                        option value="admin" { "admin: every tool, and the console" }
                    }
                    label for="k-rpm" { "Requests per minute (empty: the configured default)" }
                    input #k-rpm type="number" name="rpm" min="1" max="1000000";
                    label for="k-expires" { "Expires in days (empty: never)" }
                    input #k-expires type="number" name="expires_days" min="1" max=(MAX_DAYS);
                    p { button type="submit" { "Add key" } }
                }
            }
        }
    };
    Ok(Page::new("Keys", operator, "/keys", body)
        .render()
        .into_response())
}

/// The new key, shown this once.
fn shown_once(what: &str, new: &NewKey) -> Markup {
    html! {
        section.card.once role="status" {
            h2 { (what) }
            p { "Key " code { (new.record.id) } " for " strong { (new.record.tenant) } "/" (new.record.name) ". This is the only time it is shown: copy it now." }
            label for="new-key" { "The key" }
            input #new-key type="text" readonly value=(new.key) size="60";
            " "
            button.secondary type="button" data-copy="new-key" hidden { "Copy" }
        }
    }
}

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, ConsoleError> {
    listing(&console, &operator, None).await
}

/// An empty field, or a number in `range`.
fn optional_number(
    value: &str,
    what: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConsoleError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .map(Some)
        .ok_or_else(|| {
            ConsoleError::Invalid(format!(
                "{what} is a whole number from {} to {}.",
                range.start(),
                range.end()
            ))
        })
}

#[derive(Deserialize)]
pub(crate) struct AddForm {
    /// Missing counts as wrong: refused as a forged form is.
    #[serde(default)]
    csrf: String,
    tenant: String,
    name: String,
    scope: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    expires_days: String,
}

pub(crate) async fn add(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<AddForm>,
) -> Result<Response, ConsoleError> {
    operator.check_change(&form.csrf)?;
    let (tenant, name) = (form.tenant.trim(), form.name.trim());
    if !is_valid_label(tenant) || !is_valid_label(name) {
        return Err(ConsoleError::Invalid(
            "The tenant and the name are 1 to 64 letters, digits, '.', '-' or '_'.".to_owned(),
        ));
    }
    let scope = match form.scope.as_str() {
        "read" => Scope::Read,
        "write" => Scope::Write,
        "admin" => Scope::Admin,
        _ => {
            return Err(ConsoleError::Invalid(
                "The scope is read, write or admin.".to_owned(),
            ));
        }
    };
    let rpm = optional_number(&form.rpm, "Requests per minute", 1..=1_000_000)?
        .map(|rpm| u32::try_from(rpm).unwrap_or(u32::MAX));
    let expires_at = optional_number(&form.expires_days, "Expires in days", 1..=MAX_DAYS)?
        .map(|days| now_unix().saturating_add(i64::try_from(days * 86_400).unwrap_or(i64::MAX)));
    let new = console
        .keys
        .add(
            tenant,
            name,
            scope,
            KeyOptions {
                expires_at,
                rpm,
                ..KeyOptions::default()
            },
        )
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    console
        .gateway
        .record(AuditRecord::action(
            &operator.actor(),
            "keys/add",
            tenant,
            &new.record.id,
            "ok",
        ))
        .await;
    listing(&console, &operator, Some(shown_once("Key added", &new))).await
}

#[derive(Deserialize)]
pub(crate) struct KeyForm {
    /// Missing counts as wrong: refused as a forged form is.
    #[serde(default)]
    csrf: String,
    id: String,
    #[serde(default)]
    grace_secs: String,
}

pub(crate) async fn revoke(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<KeyForm>,
) -> Result<Response, ConsoleError> {
    operator.check_change(&form.csrf)?;
    let tenant = tenant_of(&console, &form.id).await?;
    let revoked = console
        .keys
        .revoke(&form.id)
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    if !revoked {
        return Err(ConsoleError::NotFound(format!("Active key {}", form.id)));
    }
    // A console session opened with it ends too.
    console.operators.close_key(&form.id);
    console
        .gateway
        .record(AuditRecord::action(
            &operator.actor(),
            "keys/revoke",
            &tenant,
            &form.id,
            "ok",
        ))
        .await;
    listing(&console, &operator, None).await
}

pub(crate) async fn rotate(
    State(console): State<Arc<Console>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<KeyForm>,
) -> Result<Response, ConsoleError> {
    operator.check_change(&form.csrf)?;
    let grace =
        optional_number(&form.grace_secs, "The old key's grace", 0..=MAX_GRACE_SECS)?.unwrap_or(0);
    let new = console
        .keys
        .rotate(&form.id, i64::try_from(grace).unwrap_or(i64::MAX))
        .await
        .map_err(|e| ConsoleError::store(&e))?
        .ok_or_else(|| ConsoleError::NotFound(format!("Active key {}", form.id)))?;
    console
        .gateway
        .record(AuditRecord::action(
            &operator.actor(),
            "keys/rotate",
            &new.record.tenant,
            &format!("{} -> {}", form.id, new.record.id),
            "ok",
        ))
        .await;
    listing(&console, &operator, Some(shown_once("Key rotated", &new))).await
}

async fn tenant_of(console: &Console, id: &str) -> Result<String, ConsoleError> {
    console
        .keys
        .list()
        .await
        .map_err(|e| ConsoleError::store(&e))?
        .into_iter()
        .find(|key| key.id == id)
        .map(|key| key.tenant)
        .ok_or_else(|| ConsoleError::NotFound(format!("Key {id}")))
}
