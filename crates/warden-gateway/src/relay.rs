//! Running one client request. Dispatch runs in a task of its own, so a client that goes
//! away (or sends `notifications/cancelled`) stops it, and with it the upstream call.
//! What an upstream sends in the middle of the call (progress, log lines, elicitation and
//! sampling requests) turns the answer into an SSE stream that carries those messages
//! first and the response last; a call with nothing to relay is answered plainly.

use std::sync::Arc;

use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use warden_proto::{Era, Request, RequestId, codes};
use warden_store::Principal;
use warden_upstream::{Event, ServerRequest};

use crate::dispatch::{self, Context};
use crate::error::{GatewayError, RpcError};
use crate::session::Session;
use crate::state::AppState;

/// Messages an upstream may send one call before the client has read them.
const EVENT_QUEUE: usize = 64;

pub(crate) enum Answer {
    Done(Result<Value, RpcError>),
    /// JSON-RPC messages; the last is the response.
    Stream(BoxStream<'static, Value>),
}

/// Everything a request needs to run on its own.
pub(crate) struct Run {
    pub state: AppState,
    pub principal: Principal,
    pub era: Era,
    pub session: Option<Arc<Session>>,
    pub request: Request,
    /// Whether the client accepts an SSE answer.
    pub can_stream: bool,
}

pub(crate) async fn run(run: Run) -> Answer {
    let Run {
        state,
        principal,
        era,
        session,
        request,
        can_stream,
    } = run;
    let (events, received) = match can_stream {
        true => {
            let (events, received) = mpsc::channel(EVENT_QUEUE);
            (Some(events), Some(received))
        }
        false => (None, None),
    };
    let id = request.id.clone();
    let handle = tokio::spawn({
        let session = session.clone();
        async move {
            let context = Context {
                principal: &principal,
                era,
                session: session.as_ref(),
                events,
            };
            dispatch::handle(&state, context, &request).await
        }
    });
    let task = Task {
        handle,
        session: session.clone(),
        key: id.key(),
    };
    if let Some(session) = &session {
        session.track(task.key.clone(), task.handle.abort_handle());
    }
    let Some(mut received) = received else {
        return Answer::Done(task.join().await);
    };
    // The channel closes when dispatch is done and no upstream call holds it.
    match received.recv().await {
        None => Answer::Done(task.join().await),
        Some(first) => {
            let streaming = Streaming {
                first: Some(first),
                received,
                task: Some(task),
                session,
                era,
                id,
            };
            Answer::Stream(Box::pin(futures_util::stream::unfold(
                streaming,
                |mut streaming| async move {
                    let message = streaming.next().await?;
                    Some((message, streaming))
                },
            )))
        }
    }
}

/// The dispatch task; dropped, it stops.
struct Task {
    handle: JoinHandle<Result<Value, RpcError>>,
    session: Option<Arc<Session>>,
    key: String,
}

impl Task {
    async fn join(mut self) -> Result<Value, RpcError> {
        match (&mut self.handle).await {
            Ok(result) => result,
            Err(error) if error.is_cancelled() => {
                Err(RpcError::new(codes::REQUEST_CANCELLED, "Request cancelled"))
            }
            Err(_) => Err(RpcError::internal()),
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
        if let Some(session) = &self.session {
            session.untrack(&self.key);
        }
    }
}

struct Streaming {
    first: Option<Event>,
    received: mpsc::Receiver<Event>,
    task: Option<Task>,
    session: Option<Arc<Session>>,
    era: Era,
    id: RequestId,
}

impl Streaming {
    async fn next(&mut self) -> Option<Value> {
        loop {
            let event = match self.first.take() {
                Some(event) => Some(event),
                None => self.received.recv().await,
            };
            match event {
                Some(event) => {
                    if let Some(message) = self.relay(event) {
                        return Some(message);
                    }
                }
                None => {
                    let result = self.task.take()?.join().await;
                    return Some(response_body(&self.id, self.era, result));
                }
            }
        }
    }

    /// The message for the client, or `None` when it cannot take it (the upstream then
    /// hears a refusal).
    fn relay(&self, event: Event) -> Option<Value> {
        match event {
            Event::Notification(message) => {
                let wanted = message["method"] != "notifications/message"
                    || self
                        .session
                        .as_ref()
                        .is_none_or(|s| s.wants_log(message["params"]["level"].as_str()));
                wanted.then_some(message)
            }
            Event::Request(request) => self.relay_request(request),
        }
    }

    /// Server requests reach a legacy client that declared the capability; the id it
    /// sees is ours, and its answer comes back by that id.
    fn relay_request(&self, request: ServerRequest) -> Option<Value> {
        let capability = match request.method.as_str() {
            "elicitation/create" => Some("elicitation"),
            "sampling/createMessage" => Some("sampling"),
            "roots/list" => Some("roots"),
            _ => None,
        };
        let session = self
            .session
            .as_ref()
            .filter(|_| self.era == Era::Legacy)
            .filter(|s| capability.is_some_and(|c| s.client_supports(c)));
        let Some(session) = session else {
            request.respond(Err(json!({
                "code": codes::METHOD_NOT_FOUND,
                "message": "The client does not support this request",
            })));
            return None;
        };
        let (method, params) = (request.method.clone(), request.params.clone());
        match session.hold_request(request) {
            Ok(id) => {
                Some(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            }
            Err(request) => {
                request.respond(Err(json!({
                    "code": codes::INTERNAL_ERROR,
                    "message": "Too many requests are waiting for the client",
                })));
                None
            }
        }
    }
}

pub(crate) fn response_body(id: &RequestId, era: Era, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => warden_proto::envelope::result_body(id, result),
        Err(error) => GatewayError::Rpc {
            id: id.clone(),
            era,
            error: Box::new(error),
        }
        .body(),
    }
}
