//! Running one client request. Dispatch runs as a future owned by the answer, so a
//! client that goes away (or sends `notifications/cancelled`) drops it, and with it the
//! upstream call. What an upstream sends in the middle of the call (progress, log lines,
//! elicitation and sampling requests) turns the answer into an SSE stream that carries
//! those messages first and the response last; a call with nothing to relay is answered
//! plainly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warden_config::Results;
use warden_policy::{Hardening, harden_message};
use warden_proto::envelope::{request_body, result_body};
use warden_proto::{Era, Request, RequestId, codes};
use warden_store::Principal;
use warden_upstream::{Event, ServerRequest};

use crate::answer;
use crate::audit::{Draft, UpstreamUsed};
use crate::dispatch::{self, Context};
use crate::error::{GatewayError, RpcError};
use crate::input_required::client_can_answer;
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
    /// The client's address, when the listener knows it.
    pub address: Option<std::net::IpAddr>,
    /// The client's name (`clientInfo`), as it chose it.
    pub client: String,
    pub era: Era,
    pub session: Option<Arc<Session>>,
    /// What per-session limits count against (see `dispatch::Context`).
    pub instance: String,
    pub request: Request,
    /// Whether the client accepts an SSE answer.
    pub can_stream: bool,
    /// The request's audit record, finished with its outcome (or, if the work is
    /// dropped, as cancelled).
    pub audit: Draft,
}

type Work = Pin<Box<Abortable<Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>>>>;

pub(crate) async fn run(run: Run) -> Answer {
    let Run {
        state,
        principal,
        address,
        client,
        era,
        session,
        instance,
        request,
        can_stream,
        audit,
    } = run;
    let (events, received) = match can_stream {
        true => {
            let (events, received) = mpsc::channel(EVENT_QUEUE);
            (Some(events), Some(received))
        }
        false => (None, None),
    };
    let id = request.id.clone();
    let upstream_used = audit.upstream.clone();
    let results = state.results();
    let dispatch: Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>> = Box::pin({
        let session = session.clone();
        async move {
            let context = Context {
                principal: &principal,
                address,
                client,
                instance,
                upstream_used: audit.upstream.clone(),
                pending: audit.pending.clone(),
                allowed_by: audit.allowed_by.clone(),
                trace: audit.trace.clone(),
                era,
                session: session.as_ref(),
                events,
            };
            let result = dispatch::handle(&state, context, &request).await;
            // The record is queued before the answer can leave.
            audit.finish(&result).await;
            result
        }
    });
    let (abort, registration) = AbortHandle::new_pair();
    let mut work: Work = Box::pin(Abortable::new(dispatch, registration));
    let tracked = Tracked::new(session.clone(), id.key(), abort);
    let Some(mut received) = received else {
        return Answer::Done(outcome(work.await));
    };
    // The channel closes when dispatch is done and no upstream call holds it.
    let first = tokio::select! {
        biased;
        event = received.recv() => event,
        result = &mut work => return Answer::Done(outcome(result)),
    };
    let Some(first) = first else {
        return Answer::Done(outcome(work.await));
    };
    let streaming = Streaming {
        first: Some(first),
        received,
        received_closed: false,
        work: Some(work),
        result: None,
        _tracked: tracked,
        session,
        era,
        id,
        asked: Vec::new(),
        upstream_used,
        results,
    };
    Answer::Stream(Box::pin(futures_util::stream::unfold(
        streaming,
        |mut streaming| async move {
            let message = streaming.next().await?;
            Some((message, streaming))
        },
    )))
}

fn outcome(result: Result<Result<Value, RpcError>, Aborted>) -> Result<Value, RpcError> {
    result
        .unwrap_or_else(|Aborted| Err(RpcError::new(codes::REQUEST_CANCELLED, "Request cancelled")))
}

/// A request the session can cancel while it runs.
struct Tracked {
    session: Option<Arc<Session>>,
    key: String,
}

impl Tracked {
    fn new(session: Option<Arc<Session>>, key: String, abort: AbortHandle) -> Self {
        if let Some(session) = &session {
            session.track(key.clone(), abort);
        }
        Self { session, key }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            session.untrack(&self.key);
        }
    }
}

struct Streaming {
    first: Option<Event>,
    received: mpsc::Receiver<Event>,
    received_closed: bool,
    work: Option<Work>,
    result: Option<Result<Value, RpcError>>,
    _tracked: Tracked,
    session: Option<Arc<Session>>,
    era: Era,
    id: RequestId,
    /// Requests relayed to the client on this stream: the upstream's id, then ours.
    asked: Vec<(Value, String)>,
    /// Who is sending what this stream relays, once the call reached an upstream
    /// (before that, only Warden's own questions travel here).
    upstream_used: UpstreamUsed,
    results: Arc<Results>,
}

impl Streaming {
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(event) = self.first.take() {
                if let Some(message) = self.relay(event) {
                    return Some(message);
                }
                continue;
            }
            let Some(work) = self.work.as_mut() else {
                // Done: what was sent before the answer goes first, then the answer.
                if let Ok(event) = self.received.try_recv() {
                    self.first = Some(event);
                    continue;
                }
                let result = self.result.take()?;
                return Some(response_body(&self.id, self.era, result));
            };
            if self.received_closed {
                let result = outcome(work.await);
                (self.work, self.result) = (None, Some(result));
                continue;
            }
            tokio::select! {
                biased;
                event = self.received.recv() => match event {
                    Some(event) => self.first = Some(event),
                    None => self.received_closed = true,
                },
                result = work => (self.work, self.result) = (None, Some(outcome(result))),
            }
        }
    }

    /// The message for the client, hardened like anything else its upstream says, or
    /// `None` when the client cannot take it (the upstream then hears a refusal).
    fn relay(&mut self, event: Event) -> Option<Value> {
        let mut message = self.relayable(event)?;
        let hardening = match self.upstream_used.get() {
            Some(upstream) => answer::hardening(&self.results, upstream, None),
            None => self.results.harden.then_some(Hardening {
                max_result_bytes: self.results.max_result_bytes,
                untrusted_origin: None,
            }),
        };
        if let Some(hardening) = hardening {
            harden_message(&mut message, &hardening);
        }
        Some(message)
    }

    fn relayable(&mut self, event: Event) -> Option<Value> {
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
            Event::Withdrawn(upstream_id) => self.withdraw(&upstream_id),
        }
    }

    /// The upstream withdrew a request: the client hears so, under the id it was given.
    fn withdraw(&mut self, upstream_id: &Value) -> Option<Value> {
        let at = self.asked.iter().position(|(id, _)| id == upstream_id)?;
        let (_, ours) = self.asked.swap_remove(at);
        let held = self.session.as_ref()?.take_request(&ours)?;
        held.forget();
        Some(json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": ours, "reason": "The server withdrew the request" },
        }))
    }

    /// Server requests reach a legacy client that declared the capability; the id it
    /// sees is ours, and its answer comes back by that id.
    fn relay_request(&mut self, request: ServerRequest) -> Option<Value> {
        let session = self
            .session
            .as_ref()
            .filter(|_| self.era == Era::Legacy)
            .filter(|s| {
                client_can_answer(&s.client.capabilities, &request.method, &request.params)
            });
        let Some(session) = session else {
            request.respond(Err(json!({
                "code": codes::METHOD_NOT_FOUND,
                "message": "The client does not support this request",
            })));
            return None;
        };
        let (method, params) = (request.method.clone(), request.params.clone());
        let upstream_id = request.upstream_id().cloned();
        match session.hold_request(request) {
            Ok(id) => {
                if let Some(upstream_id) = upstream_id {
                    self.asked.push((upstream_id, id.clone()));
                }
                Some(request_body(Some(id.into()), &method, params))
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
        Ok(result) => result_body(id, result),
        Err(error) => GatewayError::Rpc {
            id: id.clone(),
            era,
            error: Box::new(error),
        }
        .body(),
    }
}
