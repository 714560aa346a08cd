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

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{Map, Value, json};
use warden_config::Confirm;
use warden_policy::CatalogueTool;
use warden_proto::{Era, codes};
use warden_upstream::{Event, ServerRequest};

use crate::dispatch::Context;
use crate::error::RpcError;
use crate::input_required::{Binding, client_can_answer};

const STATE_PREFIX: &str = "wconfirm1.";
const STATE_BYTES: usize = 32;
const TTL: Duration = Duration::from_secs(300);
/// Confirmations waiting for an answer at once, across all clients.
const MAX_WAITING: usize = 1024;
/// How much of the arguments the person is shown.
const SUMMARY_CHARS: usize = 600;

/// Confirmations asked of modern clients, by handle.
#[derive(Default)]
pub(crate) struct Confirmations {
    waiting: Mutex<HashMap<String, (Binding, Instant)>>,
}

impl Confirmations {
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
        let mut bytes = [0u8; STATE_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!(
            "{STATE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
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
        Confirm::Elicit => {}
    }
    let question = question(tool.name(), upstream, params.get("arguments"));
    match context.era {
        Era::Legacy => {
            let can = context.session.is_some_and(|s| {
                client_can_answer(&s.client_capabilities, "elicitation/create", &question)
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
            let asked = confirmations.take(&token).ok_or_else(|| {
                RpcError::refusal(
                    codes::INVALID_PARAMS,
                    "The confirmation is unknown, used or expired: call the tool again",
                    "confirm.stale",
                )
            })?;
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

/// The elicitation put to the person: which tool, where, with what.
fn question(tool: &str, upstream: &str, arguments: Option<&Value>) -> Value {
    let mut shown = arguments.cloned().unwrap_or_else(|| json!({}));
    warden_redact::json(&mut shown);
    let mut summary: String = shown.to_string().chars().take(SUMMARY_CHARS).collect();
    if summary.len() < shown.to_string().len() {
        summary.push('…');
    }
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
