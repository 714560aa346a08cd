//! A person confirms each call of a destructive tool (or any tool the operator marks
//! `confirm = "elicit"`), so that a model fooled by text it read cannot destroy
//! anything on its own. Warden asks through the client:
//!
//! - a legacy client gets `elicitation/create` on the call's stream and the call runs
//!   only when the answer is `accept`;
//! - a modern client gets an `InputRequiredResult` asking the same, with a
//!   `requestState` handle (`wconfirm1.` + 256 random bits naming server-side state):
//!   good once, for five minutes, only for the key that asked and only with the same
//!   tool and arguments. The retry must answer `accept`.
//!
//! A client that can do neither is refused, never passed through; `confirm = "deny"`
//! refuses the tool outright.
//!
//! With `confirm = "approve"` (for clients that cannot ask a person), the call is held:
//! the client gets a result naming request `apr_…`, an operator decides out of band
//! (`warden approvals approve|deny`), and the same call made again (same key, tool and
//! arguments) then runs, once, or is refused.
//!
//! In a cluster, a confirmation's binding (under its handle's hash) and a held call's
//! request id (under its binding's hash) are also kept in the shared state, so that the
//! retry or the repeated call may land on any replica.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use warden_config::Confirm;
use warden_policy::CatalogueTool;
use warden_proto::{Era, codes};
use warden_store::{Approvals, AuditRecord, Principal};
use warden_upstream::{Event, ServerRequest};

use crate::audit::Auditor;
use crate::error::RpcError;
use crate::input_required::{Binding, client_can_answer, new_handle};
use crate::shared::{ClusterState, handle_name};
use crate::swap::Swap;
use crate::waiting::WaitingList;

const STATE_PREFIX: &str = "wconfirm1.";
const TTL: Duration = Duration::from_secs(300);
/// How much of each argument's value the person is shown.
const VALUE_CHARS: usize = 200;
/// How much of an argument's name the person is shown.
const NAME_CHARS: usize = 64;

/// How long a held call waits for an operator.
const HELD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Confirmations asked of modern clients, by handle; calls held for an operator, by
/// request id. Both lists are shared out by key and tenant.
pub(crate) struct Confirmations {
    waiting: WaitingList<Binding>,
    held: WaitingList<Binding>,
    approvals: Arc<dyn Approvals>,
    /// How long a person may take to answer on the call's stream.
    answer_timeout: Swap<Duration>,
    /// Where the other replicas find handles and held calls, in a cluster.
    shared: Option<Arc<dyn ClusterState>>,
}

/// The shared name of the held call `binding` repeats.
fn held_name(binding: &Binding) -> String {
    handle_name("held", &binding.to_text())
}

/// The shared name of the confirmation asked under `token`.
fn confirm_name(token: &str) -> String {
    handle_name("confirm", token)
}

impl Confirmations {
    /// The store operators decide held calls in.
    pub(crate) fn approvals(&self) -> &Arc<dyn Approvals> {
        &self.approvals
    }

    pub(crate) fn new(
        approvals: Arc<dyn Approvals>,
        shares: &warden_config::Waiting,
        shared: Option<Arc<dyn ClusterState>>,
    ) -> Self {
        Self {
            waiting: WaitingList::new("confirmation", shares, TTL),
            held: WaitingList::new("an operator's approval", shares, HELD_TTL),
            approvals,
            answer_timeout: Swap::new(shares.confirm_timeout),
            shared,
        }
    }

    /// New shares and answer time (a reload), for what asks from now on.
    pub(crate) fn set_shares(&self, shares: &warden_config::Waiting) {
        self.waiting.set_shares(shares);
        self.held.set_shares(shares);
        self.answer_timeout.set(shares.confirm_timeout);
    }

    /// The held request this call repeats, if any. In a cluster the shared state
    /// decides (any replica may have held it, or settled it), and a local entry it no
    /// longer holds is dropped.
    async fn held_for(&self, binding: &Binding) -> Result<Option<String>, RpcError> {
        let local = self.held.find(|held| held == binding);
        let Some(shared) = &self.shared else {
            return Ok(local);
        };
        let id = shared
            .get(&held_name(binding))
            .await
            .map_err(|_| RpcError::shared_unavailable())?;
        if let (None, Some(settled)) = (&id, local) {
            self.held.remove(&settled);
        }
        Ok(id)
    }

    /// Whether `principal` may add to `list`. In a cluster a confirmation is answered,
    /// and a held call settled, on whichever replica the retry lands, so this replica's
    /// list may still count entries the shared state no longer holds: when a share is
    /// full, those are dropped and room is looked for again.
    async fn room(
        &self,
        list: &WaitingList<Binding>,
        principal: &Principal,
        shared_name: impl Fn(&str, &Binding) -> String,
    ) -> Result<(), RpcError> {
        let Err(full) = list.check_room(principal) else {
            return Ok(());
        };
        let Some(shared) = &self.shared else {
            return Err(full);
        };
        let entries = list.named(shared_name);
        let names: Vec<String> = entries.iter().map(|(_, name)| name.clone()).collect();
        let present = shared
            .present(&names)
            .await
            .map_err(|_| RpcError::shared_unavailable())?;
        for ((id, _), present) in entries.iter().zip(present) {
            if !present {
                list.remove(id);
            }
        }
        list.check_room(principal)
    }

    /// The held request is settled: no repeated call finds it again.
    async fn settled(&self, id: &str, binding: &Binding) {
        self.held.remove(id);
        if let Some(shared) = &self.shared {
            let _ = shared.take(&held_name(binding)).await;
        }
    }

    /// Holds a call for an operator; answers the result that tells the client so.
    async fn hold(
        &self,
        principal: &Principal,
        tool: &CatalogueTool,
        summary: &str,
        binding: Binding,
    ) -> Result<Value, RpcError> {
        // Room first, then the record: a full share refuses before anything is stored.
        self.room(&self.held, principal, |_, binding| held_name(binding))
            .await?;
        let id = self
            .approvals
            .hold(&principal.tenant, &principal.key_id, tool.name(), summary)
            .await
            .map_err(|error| {
                tracing::error!(%error, "approval not recorded");
                RpcError::store(&error)
            })?;
        if let Some(shared) = &self.shared {
            shared
                .put(&held_name(&binding), &id, HELD_TTL)
                .await
                .map_err(|_| RpcError::shared_unavailable())?;
        }
        self.held
            .add(id.clone(), principal, binding, |_| false)
            .map_err(|(refused, _)| refused)?;
        Ok(waiting_result(tool, &id, "is waiting"))
    }

    /// A repeated call of a held request: runs once approved, refused once denied.
    async fn decided(
        &self,
        id: &str,
        binding: &Binding,
        tool: &CatalogueTool,
    ) -> Result<Option<Value>, RpcError> {
        let status = self.approvals.status(id).await.map_err(|error| {
            tracing::error!(%error, "approval not read");
            RpcError::store(&error)
        })?;
        match status.as_deref() {
            Some("pending") => Ok(Some(waiting_result(tool, id, "is still waiting"))),
            Some("approved") => {
                self.settled(id, binding).await;
                let first = self.approvals.mark_done(id).await.map_err(|error| {
                    tracing::error!(%error, "approval not updated");
                    RpcError::store(&error)
                })?;
                if first { Ok(None) } else { Err(stale()) }
            }
            Some("denied") => {
                self.settled(id, binding).await;
                Err(RpcError::refusal(
                    codes::NOT_CONFIRMED,
                    format!(
                        "The operator denied request {id}, so the call was not run. Do not try it again unless the person asks you to."
                    ),
                    "confirm.denied",
                ))
            }
            _ => {
                self.settled(id, binding).await;
                Err(stale())
            }
        }
    }

    async fn ask(&self, principal: &Principal, binding: Binding) -> Result<String, RpcError> {
        let token = new_handle(STATE_PREFIX);
        if let Some(shared) = &self.shared {
            self.room(&self.waiting, principal, |token, _| confirm_name(token))
                .await?;
            shared
                .put(&confirm_name(&token), &binding.to_text(), TTL)
                .await
                .map_err(|_| RpcError::shared_unavailable())?;
        }
        self.waiting
            .add(token.clone(), principal, binding, |_| false)
            .map_err(|(refused, _)| refused)?;
        Ok(token)
    }

    /// The binding a confirmation handle was given for, once: asked here or (in a
    /// cluster) by any replica.
    async fn take(&self, token: &str) -> Result<Option<Binding>, RpcError> {
        let local = self.waiting.take(token);
        let Some(shared) = &self.shared else {
            return Ok(local);
        };
        let taken = shared
            .take(&confirm_name(token))
            .await
            .map_err(|_| RpcError::shared_unavailable())?;
        // Good once everywhere: what the shared state no longer holds was used.
        Ok(taken.and_then(|text| Binding::from_text(&text)))
    }
}

/// How often held calls past their day are looked for.
const EXPIRY_SWEEP: Duration = Duration::from_secs(60);

/// Expires held calls: at start every one this replica's predecessor left pending (the
/// calls themselves lived in its memory), then, until `stop`, every one older than a
/// day. Each gets an audit record (`approvals/expire`, outcome `expired`).
pub(crate) async fn expire_held_until(
    approvals: Arc<dyn Approvals>,
    auditor: Arc<Auditor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Until the abandoned calls are expired (the store may be away at start).
    let mut starting = true;
    loop {
        let expired = if starting {
            approvals.expire_abandoned().await
        } else {
            let held_secs = i64::try_from(HELD_TTL.as_secs()).unwrap_or(i64::MAX);
            approvals
                .expire_before(warden_store::now_unix().saturating_sub(held_secs))
                .await
        };
        match expired {
            Ok(expired) => {
                starting = false;
                for held in expired {
                    let record = AuditRecord::action(
                        "warden",
                        "approvals/expire",
                        &held.tenant,
                        &format!("{} {}", held.id, held.tool),
                        "expired",
                    );
                    auditor.record(record).await;
                }
            }
            Err(error) => tracing::error!(%error, "held calls not expired"),
        }
        tokio::select! {
            () = tokio::time::sleep(EXPIRY_SWEEP) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Who asks for a call, and how a person can be reached.
pub(crate) struct Asker<'a> {
    pub principal: &'a Principal,
    pub era: Era,
    /// A legacy session's client capabilities (modern clients send theirs in `_meta`).
    pub session_capabilities: Option<&'a Value>,
    /// The call's stream, when the client takes one.
    pub events: Option<&'a mpsc::Sender<Event>>,
}

/// What a call needs before it may run.
pub(crate) enum Confirmation {
    /// Confirmed (or not needed): run it with these params.
    Go(Map<String, Value>),
    /// Answer the modern client with this `InputRequiredResult`.
    Ask(Value),
    /// Held for an operator: answer with this result, which says so.
    Held(Value),
}

/// Decides whether `tool` may run now with `params`, under confirmation `rule` (the
/// tool's own, or a stronger one a policy asked for).
pub(crate) async fn confirm(
    confirmations: &Confirmations,
    asker: &Asker<'_>,
    (tool, rule): (&CatalogueTool, Confirm),
    upstream: &str,
    mut params: Map<String, Value>,
) -> Result<Confirmation, RpcError> {
    match rule {
        Confirm::Never => return Ok(Confirmation::Go(params)),
        Confirm::Deny => {
            return Err(RpcError::refusal(
                codes::INVALID_PARAMS,
                format!(
                    "{} may not be called: the operator's policy denies it",
                    tool.name()
                ),
                "confirm.denied",
            ));
        }
        Confirm::Approve => {
            let binding = Binding::new(&asker.principal.key_id, "tools/call", &params);
            if let Some(id) = confirmations.held_for(&binding).await? {
                return match confirmations.decided(&id, &binding, tool).await? {
                    Some(waiting) => Ok(Confirmation::Held(waiting)),
                    None => Ok(Confirmation::Go(params)),
                };
            }
            let summary = shown_arguments(params.get("arguments")).join("; ");
            let result = confirmations
                .hold(asker.principal, tool, &summary, binding)
                .await?;
            return Ok(Confirmation::Held(result));
        }
        Confirm::Elicit => {}
    }
    let question = question(tool.name(), upstream, params.get("arguments"));
    match asker.era {
        Era::Legacy => {
            let can = asker.session_capabilities.is_some_and(|capabilities| {
                client_can_answer(capabilities, "elicitation/create", &question)
            });
            let (Some(events), true) = (asker.events, can) else {
                return Err(unsupported(tool.name()));
            };
            let (request, answered) = ServerRequest::local("elicitation/create".into(), question);
            events
                .send(Event::Request(request))
                .await
                .map_err(|_| unsupported(tool.name()))?;
            // A person who never answers does not hold the call (and its connection)
            // for the session's life.
            let answer_timeout = *confirmations.answer_timeout.get();
            match tokio::time::timeout(answer_timeout, answered).await {
                Ok(Ok(Ok(answer))) => accepted(&answer).map(|()| Confirmation::Go(params)),
                Ok(_) => Err(unsupported(tool.name())),
                Err(_) => Err(RpcError::refusal(
                    codes::NOT_CONFIRMED,
                    format!(
                        "No one confirmed the call within {} s; {} was not run",
                        answer_timeout.as_secs(),
                        tool.name()
                    ),
                    "confirm.timeout",
                )),
            }
        }
        Era::Modern => {
            let binding = Binding::new(&asker.principal.key_id, "tools/call", &params);
            let ours = params
                .get("requestState")
                .and_then(Value::as_str)
                .filter(|state| state.starts_with(STATE_PREFIX))
                .map(str::to_owned);
            let Some(token) = ours else {
                let capabilities = params
                    .get("_meta")
                    .and_then(|meta| meta.get(warden_proto::era::CLIENT_CAPABILITIES_META))
                    .cloned()
                    .unwrap_or_default();
                if !client_can_answer(&capabilities, "elicitation/create", &question) {
                    return Err(unsupported(tool.name()));
                }
                let token = confirmations.ask(asker.principal, binding).await?;
                return Ok(Confirmation::Ask(json!({
                    "resultType": "input_required",
                    "inputRequests": {
                        "confirm": {"method": "elicitation/create", "params": question}
                    },
                    "requestState": token,
                })));
            };
            let asked = confirmations.take(&token).await?.ok_or_else(stale)?;
            if asked != binding {
                return Err(RpcError::refusal(
                    codes::INVALID_PARAMS,
                    "The confirmation was given for another call",
                    "confirm.mismatch",
                ));
            }
            let answer = params
                .get("inputResponses")
                .and_then(|responses| responses.get("confirm"))
                .cloned()
                .unwrap_or_default();
            accepted(&answer)?;
            // Warden's own handle and answer go no further.
            params.remove("requestState");
            params.remove("inputResponses");
            Ok(Confirmation::Go(params))
        }
    }
}

/// The arguments as a person is shown them: every name, in a fixed order (not the
/// caller's), each value as JSON, redacted, with anything that could reorder or hide
/// text escaped, and cut to a bounded length that says how much is left out.
fn shown_arguments(arguments: Option<&Value>) -> Vec<String> {
    let mut shown = arguments.cloned().unwrap_or_else(|| json!({}));
    warden_redact::json(&mut shown);
    let Value::Object(arguments) = shown else {
        return vec![cut(&shown.to_string(), VALUE_CHARS)];
    };
    let mut names: Vec<&String> = arguments.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let name_text = cut(&Value::String(name.clone()).to_string(), NAME_CHARS);
            format!(
                "{name_text} = {}",
                cut(&arguments[name].to_string(), VALUE_CHARS)
            )
        })
        .collect()
}

/// `text` escaped and cut to `chars` characters, saying how many bytes were left out.
fn cut(text: &str, chars: usize) -> String {
    let escaped = warden_redact::escape_controls(text);
    match escaped.char_indices().nth(chars) {
        None => escaped.into_owned(),
        Some((at, _)) => format!("{}… ({} more bytes)", &escaped[..at], escaped.len() - at),
    }
}

/// The answer to a held call. It is not the tool's result, so it is an error result:
/// valid whatever `outputSchema` the tool declares (clients check structured content
/// only on results that are not errors), and the model reads why nothing happened.
fn waiting_result(tool: &CatalogueTool, id: &str, state: &str) -> Value {
    let name = tool.name();
    json!({
        "content": [{
            "type": "text",
            "text": format!(
                "Nothing was done yet: {name} needs an operator's approval, and request {id} {state}. Ask the operator to run `warden approvals approve {id}`; then call {name} again with the same arguments to run it."
            ),
        }],
        "isError": true,
    })
}

fn stale() -> RpcError {
    RpcError::refusal(
        codes::INVALID_PARAMS,
        "The confirmation is unknown, used or expired: call the tool again",
        "confirm.stale",
    )
}

/// The elicitation put to the person: Warden's own words first, then, set apart and
/// quoted, what the caller sent.
fn question(tool: &str, upstream: &str, arguments: Option<&Value>) -> Value {
    let shown = shown_arguments(arguments);
    let listing = if shown.is_empty() {
        "  (none)".to_owned()
    } else {
        shown
            .iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    json!({
        "message": format!(
            "Warden asks: allow {tool} on upstream {upstream}? It changes or deletes data, and Warden cannot undo it.\n\nThe arguments below are quoted exactly as the caller sent them (each value cut at {VALUE_CHARS} characters). They are data, not a message from Warden.\n{listing}"
        ),
        "requestedSchema": {"type": "object", "properties": {}},
    })
}

fn accepted(answer: &Value) -> Result<(), RpcError> {
    if answer.get("action").and_then(Value::as_str) == Some("accept") {
        Ok(())
    } else {
        Err(RpcError::refusal(
            codes::NOT_CONFIRMED,
            "The person declined this call, so it was not run. Do not try it again unless they ask you to.",
            "confirm.declined",
        ))
    }
}

fn unsupported(tool: &str) -> RpcError {
    RpcError::refusal(
        codes::INVALID_PARAMS,
        format!(
            "{tool} needs a person's confirmation, and this client cannot ask for one (it declares no elicitation capability, or has no stream open for the call)"
        ),
        "confirm.unsupported",
    )
}
