//! One JSON-RPC conversation with an upstream, shared by every caller: Warden's own ids
//! go upstream (so callers from different sessions never collide) and each answer finds
//! the call that waits for it. Messages the upstream sends in the middle of a call
//! (progress, log lines, elicitation and sampling requests) reach that call's caller.
//!
//! The transport (a child's stdin/stdout, HTTP POSTs) drains [`Outbound`] and feeds what
//! comes back into [`Link::receive`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

use warden_proto::envelope::request_body;

use crate::UpstreamError;

/// Messages waiting for the transport; a full queue makes callers wait.
const OUTBOUND_QUEUE: usize = 256;
/// Notifications not tied to a call (list changes, resource updates) kept for slow
/// listeners before the oldest are dropped.
const UNSOLICITED_QUEUE: usize = 64;
const PROGRESS_TOKEN_PREFIX: &str = "warden-";

/// A message for the transport to deliver. `call` is set when it is a request whose
/// answer some caller awaits, so a transport can tie what comes back to it.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub message: Value,
    pub call: Option<u64>,
}

/// Something the upstream sent a caller in the middle of its call.
#[derive(Debug)]
pub enum Event {
    Notification(Value),
    Request(ServerRequest),
    /// The upstream withdrew the request it sent with this id (its own id space).
    Withdrawn(Value),
}

/// A request from the upstream to the client (elicitation, sampling, roots). It must be
/// answered; if it is dropped unanswered the upstream hears that it failed.
#[derive(Debug)]
pub struct ServerRequest {
    pub method: String,
    pub params: Value,
    responder: Responder,
}

impl ServerRequest {
    /// A request Warden itself puts to the client on an upstream's behalf (a modern
    /// upstream's `inputRequests`); the answer comes out of the receiver, which sees the
    /// sender dropped when the client gave none.
    pub fn local(method: String, params: Value) -> (Self, oneshot::Receiver<Result<Value, Value>>) {
        let (answer, answered) = oneshot::channel();
        let request = Self {
            method,
            params,
            responder: Responder::Local(Some(answer)),
        };
        (request, answered)
    }

    /// Answers with a result, or with a JSON-RPC error object.
    pub fn respond(mut self, outcome: Result<Value, Value>) {
        self.responder.send(outcome);
    }

    /// Whether no one waits for the answer any more (Warden's own question, given up on
    /// after its deadline).
    pub fn abandoned(&self) -> bool {
        match &self.responder {
            Responder::Local(Some(answer)) => answer.is_closed(),
            Responder::Local(None) => true,
            Responder::Upstream { .. } => false,
        }
    }

    /// The id the upstream gave this request; none for Warden's own questions.
    pub fn upstream_id(&self) -> Option<&Value> {
        match &self.responder {
            Responder::Upstream { id, .. } => id.as_ref(),
            Responder::Local(_) => None,
        }
    }

    /// Drops a request the upstream withdrew, without answering it.
    pub fn forget(mut self) {
        if let Responder::Upstream { id, .. } = &mut self.responder {
            id.take();
        }
    }

    /// The token the upstream asked progress on this request to carry, if any.
    pub fn progress_token(&self) -> Option<&Value> {
        self.params.get("_meta")?.get("progressToken")
    }

    /// Passes the client's progress on this request to the upstream that asked.
    pub fn progress(&self, params: Map<String, Value>) {
        if let Responder::Upstream { outbound, .. } = &self.responder {
            let message =
                json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": params });
            // Progress is advisory: a full queue drops it rather than wait.
            let _ = outbound.try_send(Outbound {
                message,
                call: None,
            });
        }
    }
}

#[derive(Debug)]
enum Responder {
    /// The upstream's own request, answered by its id over the link.
    Upstream {
        outbound: mpsc::Sender<Outbound>,
        id: Option<Value>,
    },
    Local(Option<oneshot::Sender<Result<Value, Value>>>),
}

impl Responder {
    fn send(&mut self, outcome: Result<Value, Value>) {
        match self {
            Self::Upstream { outbound, id } => {
                let Some(id) = id.take() else { return };
                let message = match outcome {
                    Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
                    Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error }),
                };
                // The queue is bounded; a full one means the upstream is not reading and
                // the answer would not help it.
                let _ = outbound.try_send(Outbound {
                    message,
                    call: None,
                });
            }
            Self::Local(answer) => {
                if let Some(answer) = answer.take() {
                    let _ = answer.send(outcome);
                }
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Self::Upstream { id: Some(_), .. } = self {
            self.send(Err(
                json!({ "code": -32603, "message": "The client did not answer the request" }),
            ));
        }
    }
}

struct Slot {
    reply: oneshot::Sender<Result<Value, UpstreamError>>,
    events: Option<mpsc::Sender<Event>>,
    /// The caller's own progress token, restored on the way back.
    progress_token: Option<Value>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    calls: HashMap<u64, Slot>,
    closed: Option<UpstreamError>,
}

pub(crate) struct Link {
    upstream: Arc<str>,
    outbound: mpsc::Sender<Outbound>,
    state: Mutex<State>,
    unsolicited: broadcast::Sender<Value>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link and the queue its transport must drain.
    pub fn new(
        upstream: Arc<str>,
        unsolicited: broadcast::Sender<Value>,
    ) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let link = Arc::new(Self {
            upstream,
            outbound,
            state: Mutex::new(State::default()),
            unsolicited,
        });
        (link, queue)
    }

    /// The upstream this link talks to, by name.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn unsolicited_channel() -> broadcast::Sender<Value> {
        broadcast::channel(UNSOLICITED_QUEUE).0
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a request and waits for its answer: the upstream's whole response message
    /// (with `result` or `error`). Dropping the future cancels the call upstream.
    pub async fn request(
        &self,
        method: &str,
        params: Map<String, Value>,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Value, UpstreamError> {
        let (call, outbound) = self.start(method, params, events)?;
        self.outbound
            .send(outbound)
            .await
            .map_err(|_| UpstreamError::Unavailable)?;
        call.answer().await
    }

    /// Registers a call and returns it with the message that carries it, for a transport
    /// that sends it itself (an HTTP POST made by the caller's own task).
    pub fn start(
        &self,
        method: &str,
        mut params: Map<String, Value>,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<(Call<'_>, Outbound), UpstreamError> {
        let (reply, answer) = oneshot::channel();
        let id = {
            let mut state = self.state();
            if let Some(error) = &state.closed {
                return Err(error.clone());
            }
            state.next_id += 1;
            let id = state.next_id;
            let progress_token = swap_progress_token(&mut params, id);
            state.calls.insert(
                id,
                Slot {
                    reply,
                    events,
                    progress_token,
                },
            );
            id
        };
        let call = Call {
            pending: Pending {
                link: self,
                id,
                cancel_upstream: method != "initialize",
            },
            answer,
        };
        let message = request_body(Some(id.into()), method, Value::Object(params));
        Ok((
            call,
            Outbound {
                message,
                call: Some(id),
            },
        ))
    }

    /// Sends a notification; it is dropped if the transport's queue is full.
    pub fn notify(&self, method: &str, params: Map<String, Value>) {
        let message = request_body(None, method, Value::Object(params));
        if self
            .outbound
            .try_send(Outbound {
                message,
                call: None,
            })
            .is_err()
        {
            tracing::debug!(upstream = %self.upstream, method, "notification dropped: queue full");
        }
    }

    /// Fails one call, e.g. when the HTTP request that carried it failed.
    pub fn fail(&self, id: u64, error: UpstreamError) {
        if let Some(slot) = self.state().calls.remove(&id) {
            let _ = slot.reply.send(Err(error));
        }
    }

    /// Fails every waiting call at once and refuses new ones: the upstream is gone.
    pub fn close(&self, error: UpstreamError) {
        let calls = {
            let mut state = self.state();
            state.closed = Some(error.clone());
            std::mem::take(&mut state.calls)
        };
        for (_, slot) in calls {
            let _ = slot.reply.send(Err(error.clone()));
        }
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.state().calls.len()
    }

    /// Takes one message from the upstream. `related` is the call it arrived for when the
    /// transport knows (an HTTP response stream); otherwise a message is tied to a call
    /// only when exactly one is in flight, and never guessed among several.
    pub fn receive(&self, message: Value, related: Option<u64>) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method, id) {
            (None, Some(id)) => self.answer(&id, message),
            (Some(method), Some(id)) => self.server_request(method, id, message, related),
            (Some(method), None) => self.notification(&method, message, related),
            (None, None) => {
                tracing::warn!(upstream = %self.upstream, "upstream sent a message that is not JSON-RPC");
            }
        }
    }

    fn answer(&self, id: &Value, message: Value) {
        let slot = id.as_u64().and_then(|id| self.state().calls.remove(&id));
        match slot {
            Some(slot) => {
                let _ = slot.reply.send(Ok(message));
            }
            None => tracing::debug!(upstream = %self.upstream, "answer for no waiting call"),
        }
    }

    /// The events channel of the call a message belongs to.
    fn events_for(&self, related: Option<u64>) -> Option<mpsc::Sender<Event>> {
        let state = self.state();
        let slot = match related {
            Some(id) => state.calls.get(&id),
            None if state.calls.len() == 1 => state.calls.values().next(),
            None => None,
        };
        slot.and_then(|slot| slot.events.clone())
    }

    fn server_request(&self, method: String, id: Value, message: Value, related: Option<u64>) {
        let responder = Responder::Upstream {
            outbound: self.outbound.clone(),
            id: Some(id),
        };
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        if method == "ping" {
            let mut responder = responder;
            responder.send(Ok(json!({})));
            return;
        }
        let request = ServerRequest {
            method,
            params,
            responder,
        };
        match self.events_for(related) {
            Some(events) => {
                if let Err(error) = events.try_send(Event::Request(request)) {
                    // Dropping the request answers it with an error.
                    tracing::debug!(upstream = %self.upstream, "server request refused: {error}");
                }
            }
            None => {
                tracing::debug!(upstream = %self.upstream, method = %request.method,
                    "server request with no client to receive it");
                let mut request = request;
                request.responder.send(Err(json!({
                    "code": -32601,
                    "message": "The client cannot receive this request",
                })));
            }
        }
    }

    fn notification(&self, method: &str, mut message: Value, related: Option<u64>) {
        match method {
            "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/resources/updated" => {
                let _ = self.unsolicited.send(message);
            }
            "notifications/cancelled" => {
                let withdrawn = message["params"]["requestId"].clone();
                if let Some(events) = self.events_for(related) {
                    let _ = events.try_send(Event::Withdrawn(withdrawn));
                }
            }
            "notifications/progress" => {
                let events = self.restore_progress_token(&mut message);
                if let Some(events) = events {
                    let _ = events.try_send(Event::Notification(message));
                }
            }
            _ => {
                if let Some(events) = self.events_for(related) {
                    let _ = events.try_send(Event::Notification(message));
                }
            }
        }
    }

    /// Puts the caller's progress token back into a progress notification; returns the
    /// events channel of the call it belongs to.
    fn restore_progress_token(&self, message: &mut Value) -> Option<mpsc::Sender<Event>> {
        let params = message.get_mut("params")?.as_object_mut()?;
        let id: u64 = params
            .get("progressToken")?
            .as_str()?
            .strip_prefix(PROGRESS_TOKEN_PREFIX)?
            .parse()
            .ok()?;
        let state = self.state();
        let slot = state.calls.get(&id)?;
        params.insert("progressToken".into(), slot.progress_token.clone()?);
        slot.events.clone()
    }
}

/// Replaces the caller's progress token with one naming this call, so tokens from
/// different clients never collide upstream. Returns the caller's token.
fn swap_progress_token(params: &mut Map<String, Value>, id: u64) -> Option<Value> {
    let meta = params.get_mut("_meta")?.as_object_mut()?;
    let token = meta.get_mut("progressToken")?;
    Some(std::mem::replace(
        token,
        Value::String(format!("{PROGRESS_TOKEN_PREFIX}{id}")),
    ))
}

/// A registered call, waiting for its answer.
pub(crate) struct Call<'l> {
    pending: Pending<'l>,
    answer: oneshot::Receiver<Result<Value, UpstreamError>>,
}

impl Call<'_> {
    pub async fn answer(mut self) -> Result<Value, UpstreamError> {
        let answer = (&mut self.answer)
            .await
            .unwrap_or(Err(UpstreamError::Unavailable));
        self.pending.cancel_upstream = false;
        answer
    }

    /// Gives up on a call whose message never reached the upstream: nothing to cancel.
    pub fn abandon(mut self) {
        self.pending.cancel_upstream = false;
    }
}

/// A call in flight; dropped early, it tells the upstream to stop.
struct Pending<'l> {
    link: &'l Link,
    id: u64,
    cancel_upstream: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let was_waiting = self.link.state().calls.remove(&self.id).is_some();
        if self.cancel_upstream && was_waiting {
            let mut params = Map::new();
            params.insert("requestId".into(), self.id.into());
            params.insert("reason".into(), "The client cancelled the request".into());
            self.link.notify("notifications/cancelled", params);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> (Arc<Link>, mpsc::Receiver<Outbound>) {
        Link::new("test".into(), Link::unsolicited_channel())
    }

    /// A caller waiting on `method` in a task of its own.
    fn spawn_call(
        link: &Arc<Link>,
        method: &'static str,
        params: Map<String, Value>,
        events: Option<mpsc::Sender<Event>>,
    ) -> tokio::task::JoinHandle<Result<Value, UpstreamError>> {
        let link = link.clone();
        tokio::spawn(async move { link.request(method, params, events).await })
    }

    #[tokio::test]
    async fn answers_find_their_call_and_ids_are_ours() {
        let (link, mut queue) = link();
        let caller = spawn_call(&link, "tools/list", Map::new(), None);
        let sent = queue.recv().await.unwrap();
        assert_eq!(sent.call, Some(1));
        assert_eq!(sent.message["id"], 1);
        link.receive(
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}),
            None,
        );
        let answer = caller.await.unwrap().unwrap();
        assert_eq!(answer["result"]["tools"], json!([]));
    }

    #[tokio::test]
    async fn closing_fails_waiting_calls_at_once() {
        let (link, mut queue) = link();
        let caller = spawn_call(&link, "tools/call", Map::new(), None);
        queue.recv().await.unwrap();
        link.close(UpstreamError::Exited);
        assert!(matches!(caller.await.unwrap(), Err(UpstreamError::Exited)));
        assert!(matches!(
            link.request("tools/call", Map::new(), None).await,
            Err(UpstreamError::Exited)
        ));
    }

    #[tokio::test]
    async fn dropping_a_call_cancels_it_upstream() {
        let (link, mut queue) = link();
        let caller = spawn_call(&link, "tools/call", Map::new(), None);
        queue.recv().await.unwrap();
        caller.abort();
        let cancelled = queue.recv().await.unwrap();
        assert_eq!(cancelled.message["method"], "notifications/cancelled");
        assert_eq!(cancelled.message["params"]["requestId"], 1);
        assert_eq!(link.in_flight(), 0);
    }

    #[tokio::test]
    async fn progress_and_requests_reach_the_caller_with_its_token() {
        let (link, mut queue) = link();
        let (events_tx, mut events) = mpsc::channel(8);
        let mut params = Map::new();
        params.insert("_meta".into(), json!({"progressToken": "client-token"}));
        let caller = spawn_call(&link, "tools/call", params, Some(events_tx));
        let sent = queue.recv().await.unwrap();
        let token = sent.message["params"]["_meta"]["progressToken"].clone();
        assert_eq!(token, "warden-1");
        link.receive(
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}}),
            None,
        );
        let Some(Event::Notification(progress)) = events.recv().await else {
            panic!()
        };
        assert_eq!(progress["params"]["progressToken"], "client-token");
        link.receive(
            json!({"jsonrpc": "2.0", "id": "u1", "method": "elicitation/create", "params": {}}),
            None,
        );
        let Some(Event::Request(request)) = events.recv().await else {
            panic!()
        };
        request.respond(Ok(json!({"action": "accept"})));
        let answer = queue.recv().await.unwrap();
        assert_eq!(answer.message["id"], "u1");
        assert_eq!(answer.message["result"]["action"], "accept");
        link.receive(json!({"jsonrpc": "2.0", "id": 1, "result": {}}), None);
        caller.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn requests_with_no_caller_to_take_them_are_refused() {
        let (link, mut queue) = link();
        link.receive(
            json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage", "params": {}}),
            None,
        );
        let refusal = queue.recv().await.unwrap();
        assert_eq!(refusal.message["id"], 7);
        assert_eq!(refusal.message["error"]["code"], -32601);
    }
}
