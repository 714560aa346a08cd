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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use warden_config::Confirm;
use warden_policy::CatalogueTool;
use warden_proto::{Era, codes};
use warden_store::ApprovalStore;
use warden_upstream::{Event, ServerRequest};

use crate::dispatch::Context;
use crate::error::RpcError;
use crate::input_required::{Binding, client_can_answer, new_handle};

const STATE_PREFIX: &str = "wconfirm1.";
const TTL: Duration = Duration::from_secs(300);
/// Confirmations waiting for an answer at once, across all clients.
const MAX_WAITING: usize = 1024;
/// How much of the arguments the person is shown.
const SUMMARY_CHARS: usize = 600;

/// How long a held call waits for an operator.
const HELD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Confirmations asked of modern clients, by handle; calls held for an operator, by
/// request id.
pub(crate) struct Confirmations {
    waiting: Mutex<HashMap<String, (Binding, Instant)>>,
    held: Mutex<HashMap<String, (Binding, Instant)>>,
    approvals: Arc<ApprovalStore>,
}

impl Confirmations {
    pub(crate) fn new(approvals: Arc<ApprovalStore>) -> Self {
        Self {
            waiting: Mutex::default(),
            held: Mutex::default(),
            approvals,
        }
    }

    /// The held request this call repeats, if any.
    fn held_for(&self, binding: &Binding) -> Option<String> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, (_, since)| since.elapsed() < HELD_TTL);
        held.iter()
            .find(|(_, (held, _))| held == binding)
            .map(|(id, _)| id.clone())
    }

    fn release(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Holds a call for an operator; answers the result that tells the client so.
    fn hold(
        &self,
        context: &Context<'_>,
        tool: &str,
        summary: &str,
        binding: Binding,
    ) -> Result<Value, RpcError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= MAX_WAITING {
            held.retain(|_, (_, since)| since.elapsed() < HELD_TTL);
            if held.len() >= MAX_WAITING {
                return Err(RpcError::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    "Too many calls are waiting for approval; try again later",
                ));
            }
        }
        let id = self
            .approvals
            .hold(
                &context.principal.tenant,
                &context.principal.key_id,
                tool,
                summary,
            )
            .map_err(|error| {
                tracing::error!(%error, "approval not recorded");
                RpcError::internal()
            })?;
        held.insert(id.clone(), (binding, Instant::now()));
        Ok(waiting_result(tool, &id, "is waiting"))
    }

    /// A repeated call of a held request: runs once approved, refused once denied.
    fn decided(&self, id: &str, tool: &str) -> Result<Option<Value>, RpcError> {
        let status = self.approvals.status(id).map_err(|error| {
            tracing::error!(%error, "approval not read");
            RpcError::internal()
        })?;
        match status.as_deref() {
            Some("pending") => Ok(Some(waiting_result(tool, id, "is still waiting"))),
            Some("approved") => {
                self.release(id);
                let first = self.approvals.mark_done(id).map_err(|error| {
                    tracing::error!(%error, "approval not updated");
                    RpcError::internal()
                })?;
                if first { Ok(None) } else { Err(stale()) }
            }
            Some("denied") => {
                self.release(id);
                Err(RpcError::refusal(
                    codes::INVALID_PARAMS,
                    format!("The operator denied request {id}; the call was not run"),
                    "confirm.denied",
                ))
            }
            _ => {
                self.release(id);
                Err(stale())
            }
        }
    }
    fn ask(&self, binding: Binding) -> Result<String, RpcError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.len() >= MAX_WAITING {
            waiting.retain(|_, (_, since)| since.elapsed() < TTL);
        }
        if waiting.len() >= MAX_WAITING {
            return Err(RpcError::new(
                codes::UPSTREAM_UNAVAILABLE,
                "Too many calls are waiting for confirmation; try again later",
            ));
        }
        let token = new_handle(STATE_PREFIX);
        waiting.insert(token.clone(), (binding, Instant::now()));
        Ok(token)
    }

    fn take(&self, token: &str) -> Option<Binding> {
        let (binding, since) = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token)?;
        (since.elapsed() < TTL).then_some(binding)
    }
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

/// Decides whether `tool` may run now with `params`.
pub(crate) async fn confirm(
    confirmations: &Confirmations,
    context: &Context<'_>,
    tool: &CatalogueTool,
    upstream: &str,
    mut params: Map<String, Value>,
) -> Result<Confirmation, RpcError> {
    match tool.confirm() {
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
            let binding = Binding::new(&context.principal.key_id, "tools/call", &params);
            if let Some(id) = confirmations.held_for(&binding) {
                return match confirmations.decided(&id, tool.name())? {
                    Some(waiting) => Ok(Confirmation::Held(waiting)),
                    None => Ok(Confirmation::Go(params)),
                };
            }
            let summary = summary(params.get("arguments"));
            let result = confirmations.hold(context, tool.name(), &summary, binding)?;
            return Ok(Confirmation::Held(result));
        }
        Confirm::Elicit => {}
    }
    let question = question(tool.name(), upstream, params.get("arguments"));
    match context.era {
        Era::Legacy => {
            let can = context.session.is_some_and(|s| {
                client_can_answer(&s.client.capabilities, "elicitation/create", &question)
            });
            let (Some(events), true) = (context.events.as_ref(), can) else {
                return Err(unsupported(tool.name()));
            };
            let (request, answered) = ServerRequest::local("elicitation/create".into(), question);
            events
                .send(Event::Request(request))
                .await
                .map_err(|_| unsupported(tool.name()))?;
            match answered.await {
                Ok(Ok(answer)) => accepted(&answer).map(|()| Confirmation::Go(params)),
                _ => Err(unsupported(tool.name())),
            }
        }
        Era::Modern => {
            let binding = Binding::new(&context.principal.key_id, "tools/call", &params);
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
                let token = confirmations.ask(binding)?;
                return Ok(Confirmation::Ask(json!({
                    "resultType": "input_required",
                    "inputRequests": {
                        "confirm": {"method": "elicitation/create", "params": question}
                    },
                    "requestState": token,
                })));
            };
            let asked = confirmations.take(&token).ok_or_else(stale)?;
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

/// The arguments as a person is shown them: redacted and cut.
fn summary(arguments: Option<&Value>) -> String {
    let mut shown = arguments.cloned().unwrap_or_else(|| json!({}));
    warden_redact::json(&mut shown);
    let text = shown.to_string();
    let mut summary: String = text.chars().take(SUMMARY_CHARS).collect();
    if summary.len() < text.len() {
        summary.push('…');
    }
    summary
}

/// The tool result of a held call.
fn waiting_result(tool: &str, id: &str, state: &str) -> Value {
    json!({
        "content": [{
            "type": "text",
            "text": format!(
                "Nothing was done yet: {tool} needs an operator's approval, and request {id} {state}. Ask the operator to run `warden approvals approve {id}`; then call {tool} again with the same arguments to run it."
            ),
        }],
        "isError": false,
    })
}

fn stale() -> RpcError {
    RpcError::refusal(
        codes::INVALID_PARAMS,
        "The confirmation is unknown, used or expired: call the tool again",
        "confirm.stale",
    )
}

/// The elicitation put to the person: which tool, where, with what.
fn question(tool: &str, upstream: &str, arguments: Option<&Value>) -> Value {
    let summary = summary(arguments);
    json!({
        "message": format!(
            "Allow {tool} on {upstream}? It changes or deletes data and cannot be undone by Warden. Arguments: {summary}"
        ),
        "requestedSchema": {"type": "object", "properties": {}},
    })
}

fn accepted(answer: &Value) -> Result<(), RpcError> {
    if answer.get("action").and_then(Value::as_str) == Some("accept") {
        Ok(())
    } else {
        Err(RpcError::refusal(
            codes::INVALID_PARAMS,
            "The call was not confirmed: the person declined or cancelled it",
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
