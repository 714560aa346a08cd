//! Bridging the two eras' ways for a server to ask the client something in the middle
//! of a call (elicitation, sampling, roots).
//!
//! A legacy upstream asks with a JSON-RPC request of its own and waits for the answer.
//! A modern client takes no such request: it expects an `InputRequiredResult` and
//! retries with `inputResponses` (MRTR). So for a modern client Warden runs the upstream
//! call in a task of its own; when the upstream asks, the task is parked under a
//! `requestState` handle and the client gets the questions. The retry hands the answers
//! to the waiting upstream and picks the call up again.
//!
//! The other way round, a modern upstream answers a legacy client's call with
//! `input_required`: Warden puts each question to the client on the call's stream and
//! retries the upstream with the answers.
//!
//! A handle is 256 random bits that name server-side state: it cannot be forged, it is
//! good for one retry, only by the key that started the call, only with the same method
//! and arguments, and only while the upstream call lives. In a cluster it also names
//! the replica that holds the call (`warden1.<replica>.<random>`), so that a retry
//! landing elsewhere is passed there (see `remote`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use warden_policy::Hardening;
use warden_proto::{Era, canonical, codes};
use warden_store::Principal;
use warden_upstream::{Caller, Event, ServerRequest, Upstream, UpstreamError};

use crate::answer::{upstream_failed, upstream_result};
use crate::error::RpcError;
use crate::session::KEPT_CAPABILITIES;
use crate::waiting::WaitingList;

/// The only requests a server may answer with `InputRequiredResult`.
const INPUT_METHODS: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];
/// Marks a `requestState` as Warden's own; any other passes to a modern upstream.
const STATE_PREFIX: &str = "warden1.";
const STATE_BYTES: usize = 32;
/// A parked call outlives neither its upstream timeout nor this.
const PARKED_TTL: Duration = Duration::from_secs(600);
/// Rounds of questions a modern upstream may ask a legacy client in one call.
const MAX_ROUNDS: usize = 16;
/// Messages an upstream may send one running call before they are read.
const EVENT_QUEUE: usize = 64;

/// Whether `method` may come back with questions for the client.
pub(crate) fn applies(method: &str) -> bool {
    INPUT_METHODS.contains(&method)
}

/// Whether a client that declared `capabilities` can answer a server's `method`.
/// URL-mode elicitation needs `elicitation.url`; an empty `elicitation` means form.
/// Whether the client declared anything an upstream may ask it: [`client_can_answer`]
/// is false for every request otherwise.
fn can_be_asked(capabilities: &Value) -> bool {
    KEPT_CAPABILITIES
        .iter()
        .any(|name| capabilities.get(*name).is_some_and(Value::is_object))
}

pub(crate) fn client_can_answer(capabilities: &Value, method: &str, params: &Value) -> bool {
    let declared = |name: &str| capabilities.get(name).is_some_and(Value::is_object);
    match method {
        "elicitation/create" => match params.get("mode").and_then(Value::as_str) {
            Some("url") => capabilities["elicitation"]
                .get("url")
                .is_some_and(Value::is_object),
            _ => declared("elicitation"),
        },
        "sampling/createMessage" => declared("sampling"),
        "roots/list" => declared("roots"),
        _ => false,
    }
}

/// Calls parked until their client answers, by handle; shared out by key and tenant.
pub(crate) struct InputLot {
    parked: WaitingList<Parked>,
    /// The handle's prefix: `warden1.`, and in a cluster this replica's name.
    prefix: String,
}

/// The replica that parked the call a `requestState` handle names (in a cluster).
pub(crate) fn holder_of_state(state: &str) -> Option<&str> {
    let (replica, _) = state.strip_prefix(STATE_PREFIX)?.rsplit_once('.')?;
    Some(replica)
}

struct Parked {
    binding: Binding,
    call: RunningCall,
    asked: BTreeMap<String, ServerRequest>,
}

/// What a retry must match to resume a parked call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    key_id: String,
    method: String,
    params_digest: [u8; 32],
}

impl Binding {
    pub(crate) fn new(key_id: &str, method: &str, params: &Map<String, Value>) -> Self {
        let mut bytes = Vec::new();
        for (name, value) in canonical::sorted(params) {
            if matches!(name, "_meta" | "inputResponses" | "requestState") {
                continue;
            }
            canonical::write(&mut bytes, &Value::String(name.to_owned()));
            canonical::write(&mut bytes, value);
        }
        Self {
            key_id: key_id.to_owned(),
            method: method.to_owned(),
            params_digest: Sha256::digest(&bytes).into(),
        }
    }
}

impl Binding {
    /// As the cluster's shared state keeps it.
    pub(crate) fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.key_id,
            self.method,
            hex::encode(self.params_digest)
        )
    }

    pub(crate) fn from_text(text: &str) -> Option<Self> {
        let mut parts = text.split('\n');
        let (key_id, method, digest) = (parts.next()?, parts.next()?, parts.next()?);
        let mut params_digest = [0u8; 32];
        hex::decode_to_slice(digest, &mut params_digest).ok()?;
        Some(Self {
            key_id: key_id.to_owned(),
            method: method.to_owned(),
            params_digest,
        })
    }
}

/// A `requestState` handle: `prefix` and 256 random bits naming server-side state.
pub(crate) fn new_handle(prefix: &str) -> String {
    let mut bytes = [0u8; STATE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl InputLot {
    /// `replica`: this replica's name in a cluster.
    pub(crate) fn new(shares: &warden_config::Waiting, replica: Option<&str>) -> Self {
        Self {
            parked: WaitingList::new("answers", shares, PARKED_TTL),
            prefix: match replica {
                Some(replica) => format!("{STATE_PREFIX}{replica}."),
                None => STATE_PREFIX.to_owned(),
            },
        }
    }

    /// New shares (a reload), for calls parked from now on.
    pub(crate) fn set_shares(&self, shares: &warden_config::Waiting) {
        self.parked.set_shares(shares);
    }

    /// Parks a call and returns its handle, or refuses when its shares are full
    /// (dropping the call, which cancels it upstream). A call whose upstream has
    /// answered meanwhile makes room.
    fn park(&self, principal: &Principal, parked: Parked) -> Result<String, RpcError> {
        let token = new_handle(&self.prefix);
        self.parked
            .add(token.clone(), principal, parked, |p| {
                p.call.answer.is_finished()
            })
            .map_err(|(refused, _)| refused)?;
        Ok(token)
    }

    fn take(&self, token: &str) -> Option<Parked> {
        self.parked.take(token)
    }
}

/// An upstream call running in a task of its own, so that it can outlive the client
/// request that started it. Dropping it cancels the call.
struct RunningCall {
    events: mpsc::Receiver<Event>,
    answer: JoinHandle<Result<Value, UpstreamError>>,
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.answer.abort();
    }
}

enum Step {
    Answered(Result<Value, UpstreamError>),
    Asked(RunningCall, Vec<ServerRequest>),
}

impl RunningCall {
    fn start(
        upstream: Arc<Upstream>,
        (tenant, author): (String, String),
        method: String,
        params: Map<String, Value>,
    ) -> Self {
        let (events, received) = mpsc::channel(EVENT_QUEUE);
        // Under `repolled` like a client connection's task: the upstream connection it
        // drives hands it work by waking it. Boxed: a task keeps its future inline, and
        // copies that whole cell when the future finishes and again when its output is
        // read; with the upstream exchange inline that was about 11 KB, three times a
        // call, and as much again building it.
        let answer = tokio::spawn(crate::repoll::repolled(Box::pin(async move {
            let caller = Caller {
                tenant: &tenant,
                author: &author,
            };
            upstream
                .request(caller, &method, params, Some(events))
                .await
        })));
        Self {
            events: received,
            answer,
        }
    }

    /// Runs until the upstream answers or asks something the client can answer.
    /// Notifications go to `client` as they come; questions the client cannot answer
    /// are refused to the upstream, which decides what that means for the call.
    async fn next_step(
        mut self,
        capabilities: &Value,
        client: Option<&mpsc::Sender<Event>>,
    ) -> Step {
        let relay = |message: Value| {
            if let Some(client) = client {
                // Progress and log lines are advisory: a client that reads slowly loses
                // some rather than stall the call.
                let _ = client.try_send(Event::Notification(message));
            }
        };
        let mut asked = Vec::new();
        loop {
            // A closed channel answers `None` at once, so no flag is needed to skip it.
            let event = if asked.is_empty() {
                tokio::select! {
                    biased;
                    event = self.events.recv() => event,
                    answer = &mut self.answer => return Step::Answered(joined(answer)),
                }
            } else {
                // Questions sent together are asked together.
                match self.events.try_recv() {
                    Ok(event) => Some(event),
                    Err(_) => return Step::Asked(self, asked),
                }
            };
            match event {
                Some(Event::Notification(message)) => relay(message),
                Some(Event::Request(request)) => {
                    if client_can_answer(capabilities, &request.method, &request.params) {
                        asked.push(request);
                    } else {
                        refuse(request);
                    }
                }
                Some(Event::Withdrawn(id)) => {
                    if let Some(at) = asked.iter().position(|r| r.upstream_id() == Some(&id)) {
                        asked.swap_remove(at).forget();
                    }
                }
                None if asked.is_empty() => {
                    return Step::Answered(joined((&mut self.answer).await));
                }
                None => return Step::Asked(self, asked),
            }
        }
    }
}

fn joined(
    answer: Result<Result<Value, UpstreamError>, tokio::task::JoinError>,
) -> Result<Value, UpstreamError> {
    answer.unwrap_or(Err(UpstreamError::Unavailable))
}

fn refuse(request: ServerRequest) {
    request.respond(Err(json!({
        "code": codes::METHOD_NOT_FOUND,
        "message": "The client does not support this request",
    })));
}

/// A modern client's call: the upstream's result, or an `InputRequiredResult` when the
/// upstream asks the client something.
pub(crate) async fn call_for_modern_client(
    lot: &InputLot,
    hardening: Option<&Hardening>,
    upstream: &Arc<Upstream>,
    principal: &Principal,
    method: &str,
    params: Map<String, Value>,
    client: Option<&mpsc::Sender<Event>>,
) -> Result<Value, RpcError> {
    let capabilities = params
        .get("_meta")
        .and_then(|meta| meta.get(warden_proto::era::CLIENT_CAPABILITIES_META))
        .cloned()
        .unwrap_or_default();
    let ours = params
        .get("requestState")
        .and_then(Value::as_str)
        .filter(|state| state.starts_with(STATE_PREFIX));
    // What a retry must match (a digest of the params), worked out only for a call that
    // resumes one or that can park: a client that declared nothing it can be asked is
    // never asked, and its calls never park.
    let binding = (ours.is_some() || can_be_asked(&capabilities))
        .then(|| Binding::new(&principal.key_id, method, &params));
    let call = match ours {
        None => RunningCall::start(
            upstream.clone(),
            (principal.tenant.clone(), principal.key_id.clone()),
            method.into(),
            params,
        ),
        Some(token) => {
            let parked = lot.take(token).ok_or_else(|| {
                RpcError::invalid_params(
                    "params.requestState is unknown or expired: send the request again without it",
                )
            })?;
            if binding.as_ref() != Some(&parked.binding) {
                return Err(RpcError::invalid_params(
                    "params.requestState belongs to another request",
                ));
            }
            match resume(parked, params.get("inputResponses")) {
                Ok(call) => call,
                // Some questions are still open: ask them again.
                Err(parked) => return park(lot, principal, *parked),
            }
        }
    };
    match call.next_step(&capabilities, client).await {
        Step::Answered(answer) => {
            let answer = answer.map_err(|error| upstream_failed(upstream, &error, method))?;
            upstream_result(answer, Era::Modern, hardening)
        }
        Step::Asked(call, asked) => {
            // Only questions the client declared it can answer are asked, and then the
            // binding was worked out; fail closed all the same.
            let Some(binding) = binding else {
                return Err(RpcError::internal());
            };
            let asked = asked
                .into_iter()
                .enumerate()
                .map(|(index, request)| (format!("q{}", index + 1), request))
                .collect();
            park(
                lot,
                principal,
                Parked {
                    binding,
                    call,
                    asked,
                },
            )
        }
    }
}

/// Hands each answered question's answer to the upstream. The call goes on when every
/// question has its answer; otherwise it stays parked with those still open.
fn resume(mut parked: Parked, responses: Option<&Value>) -> Result<RunningCall, Box<Parked>> {
    let responses = responses.and_then(Value::as_object);
    let asked = std::mem::take(&mut parked.asked);
    for (key, request) in asked {
        match responses.and_then(|r| r.get(&key)) {
            Some(response) => request.respond(Ok(response.clone())),
            None => {
                parked.asked.insert(key, request);
            }
        }
    }
    if parked.asked.is_empty() {
        Ok(parked.call)
    } else {
        Err(Box::new(parked))
    }
}

fn park(lot: &InputLot, principal: &Principal, parked: Parked) -> Result<Value, RpcError> {
    let input_requests: Map<String, Value> = parked
        .asked
        .iter()
        .map(|(key, request)| (key.clone(), input_request(request)))
        .collect();
    let token = lot.park(principal, parked)?;
    Ok(json!({
        "resultType": "input_required",
        "inputRequests": input_requests,
        "requestState": token,
    }))
}

/// A legacy server request as a modern `InputRequest`: method and params only, without
/// the legacy-only fields (`elicitationId`, task augmentation, `_meta`).
fn input_request(request: &ServerRequest) -> Value {
    let mut params = request.params.clone();
    if let Some(params) = params.as_object_mut() {
        for legacy_only in ["elicitationId", "task", "_meta"] {
            params.remove(legacy_only);
        }
    }
    json!({ "method": request.method, "params": params })
}

/// A legacy client's call to an upstream that may answer `input_required`: each
/// question goes to the client on the call's stream, and the upstream is asked again
/// with the answers until it completes.
pub(crate) async fn call_for_legacy_client(
    upstream: &Upstream,
    hardening: Option<&Hardening>,
    caller: Caller<'_>,
    method: &str,
    mut params: Map<String, Value>,
    client: Option<&mpsc::Sender<Event>>,
) -> Result<Value, RpcError> {
    for _ in 0..MAX_ROUNDS {
        let answer = upstream
            .request(caller, method, params.clone(), client.cloned())
            .await
            .map_err(|error| upstream_failed(upstream, &error, method))?;
        let result = upstream_result(answer, Era::Legacy, hardening)?;
        if !asks_for_input(&result) {
            return Ok(result);
        }
        let mut responses = Map::new();
        if let Some(requests) = result.get("inputRequests").and_then(Value::as_object) {
            let client = client.ok_or_else(|| cannot_answer(method))?;
            let mut waiting = Vec::new();
            for (key, request) in requests {
                let Some(asked) = request.get("method").and_then(Value::as_str) else {
                    return Err(upstream_broke_protocol());
                };
                let params = request.get("params").cloned().unwrap_or(json!({}));
                let (request, answered) = ServerRequest::local(asked.to_owned(), params);
                client
                    .send(Event::Request(request))
                    .await
                    .map_err(|_| cannot_answer(method))?;
                waiting.push((key.clone(), answered));
            }
            for (key, answered) in waiting {
                match answered.await {
                    Ok(Ok(response)) => {
                        responses.insert(key, response);
                    }
                    Ok(Err(_)) | Err(_) => return Err(cannot_answer(method)),
                }
            }
        }
        params.remove("inputResponses");
        params.remove("requestState");
        if !responses.is_empty() {
            params.insert("inputResponses".into(), Value::Object(responses));
        }
        if let Some(state) = result.get("requestState") {
            params.insert("requestState".into(), state.clone());
        }
    }
    Err(RpcError::new(
        codes::INTERNAL_ERROR,
        "The upstream kept asking for input; the call was stopped",
    ))
}

/// `incomplete` is the name early drafts gave `input_required`; some peers still use it.
fn asks_for_input(result: &Value) -> bool {
    matches!(
        result.get("resultType").and_then(Value::as_str),
        Some("input_required" | "incomplete")
    )
}

fn cannot_answer(method: &str) -> RpcError {
    RpcError::new(
        codes::MISSING_CLIENT_CAPABILITY,
        format!(
            "The upstream needs input from the client to finish {method}, and the client did not give it"
        ),
    )
}

fn upstream_broke_protocol() -> RpcError {
    RpcError::new(
        codes::UPSTREAM_UNAVAILABLE,
        "The upstream sent a malformed input request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_ignore_key_order_and_meta_but_not_arguments() {
        let params = |text: &str| -> Map<String, Value> { serde_json::from_str(text).unwrap() };
        let first = Binding::new(
            "k1",
            "tools/call",
            &params(r#"{"name":"t","arguments":{"a":1,"b":[1,{"x":"y"}]},"_meta":{"m":1}}"#),
        );
        let reordered = Binding::new(
            "k1",
            "tools/call",
            &params(
                r#"{"arguments":{"b":[1,{"x":"y"}],"a":1},"name":"t","requestState":"s","inputResponses":{}}"#,
            ),
        );
        assert_eq!(first, reordered);
        let other_arguments = Binding::new(
            "k1",
            "tools/call",
            &params(r#"{"name":"t","arguments":{"a":2,"b":[1,{"x":"y"}]}}"#),
        );
        assert_ne!(first, other_arguments);
        let other_key = Binding::new(
            "k2",
            "tools/call",
            &params(r#"{"name":"t","arguments":{"a":1,"b":[1,{"x":"y"}]}}"#),
        );
        assert_ne!(first, other_key);
    }

    #[test]
    fn capabilities_decide_what_a_client_is_asked() {
        let form_only = json!({ "elicitation": {} });
        assert!(client_can_answer(
            &form_only,
            "elicitation/create",
            &json!({"message": "?"})
        ));
        assert!(!client_can_answer(
            &form_only,
            "elicitation/create",
            &json!({"mode": "url"})
        ));
        assert!(!client_can_answer(
            &form_only,
            "sampling/createMessage",
            &json!({})
        ));
        let both = json!({ "elicitation": { "url": {} }, "sampling": {} });
        assert!(client_can_answer(
            &both,
            "elicitation/create",
            &json!({"mode": "url"})
        ));
        assert!(client_can_answer(
            &both,
            "sampling/createMessage",
            &json!({})
        ));
        assert!(!client_can_answer(&both, "roots/list", &json!({})));
        assert!(!client_can_answer(
            &json!({ "sampling": null }),
            "sampling/createMessage",
            &json!({})
        ));
    }

    /// A call skips its binding when its client can be asked nothing; that is sound
    /// only if such a client is never asked anything.
    #[test]
    fn a_client_that_can_be_asked_nothing_answers_no_request() {
        let requests = [
            ("elicitation/create", json!({"message": "?"})),
            ("elicitation/create", json!({"mode": "url"})),
            ("sampling/createMessage", json!({})),
            ("roots/list", json!({})),
            ("other/method", json!({})),
        ];
        for capabilities in [
            Value::Null,
            json!({}),
            json!({ "sampling": null, "roots": true, "elicitation": "yes" }),
            json!({ "experimental": {}, "tasks": {} }),
        ] {
            assert!(!can_be_asked(&capabilities), "{capabilities}");
            for (method, params) in &requests {
                assert!(
                    !client_can_answer(&capabilities, method, params),
                    "{capabilities} {method}"
                );
            }
        }
        for capabilities in [
            json!({ "elicitation": {} }),
            json!({ "sampling": {} }),
            json!({ "roots": {} }),
        ] {
            assert!(can_be_asked(&capabilities), "{capabilities}");
        }
    }

    #[test]
    fn questions_lose_legacy_only_fields() {
        let (request, _answered) = ServerRequest::local(
            "elicitation/create".into(),
            json!({"mode": "url", "url": "https://x", "message": "m", "elicitationId": "e", "_meta": {"progressToken": 1}}),
        );
        assert_eq!(
            input_request(&request),
            json!({"method": "elicitation/create", "params": {"mode": "url", "url": "https://x", "message": "m"}})
        );
    }
}
