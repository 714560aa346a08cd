//! Remote MCP servers over Streamable HTTP. Every message is a POST; answers come back as
//! JSON or as an SSE stream that may carry progress, log lines and server requests first.
//! The client's credentials never travel here: only the headers the operator configured.
//! TLS certificates are always verified (rustls with the platform's roots).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::Method;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;
use warden_config::Http;
use warden_proto::era::PROTOCOL_VERSION_META;
use warden_proto::trace_context::{TRACEPARENT, TRACESTATE, is_traceparent, is_tracestate};

use crate::UpstreamError;
use crate::connections::{Answer, Connections};
use crate::handshake::{EraCache, ServerFacts, handshake};
use crate::link::{Link, Outbound};
use crate::outbound;
use warden_egress::EgressPolicy;
use warden_proto::cut::{CutError, MessageCutter, MessageLimits};
use warden_proto::headers as mcp;
use warden_proto::sse::SseParser;

// Header names made once, at compile time: made from text at run time, each is first
// looked up among the standard ones.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);
/// A notification or answer POST that takes longer is given up.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The GET stream of a legacy upstream is reopened this long after it ends.
const STREAM_REOPEN_DELAY: Duration = Duration::from_secs(2);

/// What a legacy upstream's session needs on every request.
#[derive(Debug, Default)]
struct LegacySession {
    version: Option<String>,
    id: Option<String>,
}

#[derive(Debug)]
struct Endpoint {
    name: Arc<str>,
    connections: Connections,
    /// The URL as logs show it: no user, password, query or fragment (they may carry
    /// credentials).
    shown_url: String,
    headers: HeaderMap,
    limits: MessageLimits,
    session: Mutex<LegacySession>,
}

/// One remote upstream: a link whose transport is a POST per message.
#[derive(Debug)]
pub(crate) struct HttpUpstream {
    endpoint: Arc<Endpoint>,
    link: Arc<Link>,
    eras: EraCache,
    facts: tokio::sync::Mutex<Option<Arc<ServerFacts>>>,
    /// Turns true when the upstream is shut down or replaced: its tasks end.
    stop: watch::Receiver<bool>,
}

impl HttpUpstream {
    pub fn new(
        name: Arc<str>,
        config: &Http,
        limits: MessageLimits,
        unsolicited: broadcast::Sender<Value>,
        egress: &Arc<EgressPolicy>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, UpstreamError> {
        let url =
            url::Url::parse(&config.url).map_err(|_| UpstreamError::Spawn("invalid url".into()))?;
        // An address in the URL is checked here; a name, each time it is resolved.
        egress
            .check_url(&url)
            .map_err(|error| UpstreamError::Spawn(error.to_string()))?;
        let mut headers = HeaderMap::new();
        for (header, value) in &config.headers {
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| UpstreamError::Spawn("invalid header name".into()))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| UpstreamError::Spawn("invalid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let pins = (!config.pins.is_empty()).then(|| outbound::SpkiPins {
            who: format!("upstream {name:?}"),
            hashes: config.pins.clone(),
        });
        let connections =
            Connections::new(&url, pins.as_ref(), egress.clone()).map_err(UpstreamError::Spawn)?;
        let (link, queue) = Link::new(name.clone(), unsolicited);
        let endpoint = Arc::new(Endpoint {
            name,
            connections,
            shown_url: outbound::shown_url(&url),
            headers,
            limits,
            session: Mutex::new(LegacySession::default()),
        });
        tokio::spawn(until_stopped(
            stop.clone(),
            deliver(endpoint.clone(), link.clone(), queue),
        ));
        Ok(Self {
            endpoint,
            link,
            stop,
            eras: EraCache::default(),
            facts: tokio::sync::Mutex::new(None),
        })
    }

    /// Sends one request in the caller's own task: the POST is made here, and dropping
    /// the future drops the connection (which is how a 2026-07-28 server learns of
    /// cancellation; a legacy one also gets `notifications/cancelled`).
    pub async fn request(
        &self,
        link: &Link,
        method: &str,
        params: serde_json::Map<String, Value>,
        events: Option<mpsc::Sender<crate::Event>>,
    ) -> Result<Value, UpstreamError> {
        let (call, outbound) = link.start(method, params, events)?;
        if let Err(error) = post(&self.endpoint, link, &outbound).await {
            call.abandon();
            return Err(error);
        }
        call.answer().await
    }

    /// The link, after a handshake if none holds (first use, or the session expired).
    pub async fn ready(&self) -> Result<(Arc<Link>, Arc<ServerFacts>), UpstreamError> {
        let mut facts = self.facts.lock().await;
        if let Some(facts) = facts.as_ref()
            && (facts.era.is_modern() || self.endpoint.session().version.is_some())
        {
            return Ok((self.link.clone(), facts.clone()));
        }
        *self.endpoint.session() = LegacySession::default();
        let learned = handshake(&self.link, &self.eras).await?;
        if !learned.era.is_modern() {
            tokio::spawn(until_stopped(
                self.stop.clone(),
                listen(self.endpoint.clone(), self.link.clone()),
            ));
        }
        let learned = Arc::new(learned);
        *facts = Some(learned.clone());
        Ok((self.link.clone(), learned))
    }
}

impl Endpoint {
    /// Every request of the session carries the version `initialize` settled on.
    fn note_version(&self, answer: &Value) {
        if let Some(version) = answer["result"]["protocolVersion"].as_str() {
            self.session().version = Some(version.to_owned());
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, LegacySession> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Headers for one message: the operator's, then the protocol's.
    fn headers_for(&self, message: &Value) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let params = message.get("params");
        let meta = params.and_then(|p| p.get("_meta"));
        let meta_text = |name: &str| meta.and_then(|m| m.get(name)).and_then(Value::as_str);
        let method = message.get("method").and_then(Value::as_str);
        if let Some(version) = meta_text(PROTOCOL_VERSION_META) {
            insert_text(&mut headers, mcp::PROTOCOL_VERSION, version);
            if let Some(method) = method {
                insert_text(&mut headers, mcp::METHOD, method);
                // The field a server checks `Mcp-Name` against: the same rule Warden
                // holds its own clients to.
                let name = mcp::name_field(method)
                    .and_then(|field| params.and_then(|p| p.get(field)))
                    .and_then(Value::as_str);
                if let Some(name) = name {
                    insert_text(&mut headers, mcp::NAME, name);
                }
            }
        } else if method != Some("initialize") {
            let session = self.session();
            if let Some(version) = &session.version {
                insert_text(&mut headers, mcp::PROTOCOL_VERSION, version);
            }
            if let Some(id) = &session.id {
                insert_text(&mut headers, mcp::SESSION_ID, id);
            }
        }
        // The trace context a message carries in `_meta` goes in headers too, so that
        // the server's HTTP instrumentation joins the same trace. Well-formed values only.
        if let Some(traceparent) = meta_text(TRACEPARENT).filter(|v| is_traceparent(v)) {
            insert_text(&mut headers, TRACEPARENT_HEADER, traceparent);
            if let Some(tracestate) = meta_text(TRACESTATE).filter(|v| is_tracestate(v)) {
                insert_text(&mut headers, TRACESTATE_HEADER, tracestate);
            }
        }
        headers
    }
}

/// A message's JSON. Written straight into bytes: `to_string` goes through a formatter
/// token by token, about twice the instructions.
fn encode(message: &Value) -> Vec<u8> {
    // A `Value` always serializes (its keys are strings); an empty body would be refused
    // by the upstream, never sent as something else.
    serde_json::to_vec(message).unwrap_or_default()
}

/// Header values must be visible ASCII; anything else travels base64-encoded, as the
/// 2026-07-28 transport defines (and as Warden decodes what its own clients send).
fn insert_text(headers: &mut HeaderMap, name: HeaderName, text: &str) {
    // The encoding is visible ASCII by construction, so the value is always accepted.
    if let Ok(value) = HeaderValue::try_from(mcp::encode_header_value(text)) {
        headers.insert(name, value);
    }
}

/// Runs `task` until the upstream is stopped (shut down, or replaced by a reload).
async fn until_stopped(mut stop: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    tokio::select! {
        () = task => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// Drains the link's queue: one POST task per message. A cancelled call's POST is
/// aborted, which closes its stream (how a 2026-07-28 server learns of cancellation).
async fn deliver(endpoint: Arc<Endpoint>, link: Arc<Link>, mut queue: mpsc::Receiver<Outbound>) {
    let posts: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    while let Some(outbound) = queue.recv().await {
        if outbound.message.get("method").and_then(Value::as_str) == Some("notifications/cancelled")
            && let Some(id) = outbound.message["params"]["requestId"].as_u64()
            && let Some(post) = posts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id)
        {
            post.abort();
        }
        let Some(id) = outbound.call else {
            // Notifications and answers go out in order, before anything queued after
            // them (`notifications/initialized` must precede the first request).
            if tokio::time::timeout(NOTIFY_TIMEOUT, post(&endpoint, &link, &outbound))
                .await
                .is_err()
            {
                tracing::warn!(upstream = %endpoint.name, "upstream did not take a notification in time");
            }
            continue;
        };
        let task = tokio::spawn({
            let endpoint = endpoint.clone();
            let link = link.clone();
            let posts = posts.clone();
            async move {
                if let Err(error) = post(&endpoint, &link, &outbound).await {
                    link.fail(id, error);
                }
                posts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            }
        });
        posts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, task.abort_handle());
    }
}

async fn post(endpoint: &Endpoint, link: &Link, outbound: &Outbound) -> Result<(), UpstreamError> {
    let is_initialize =
        outbound.message.get("method").and_then(Value::as_str) == Some("initialize");
    let mut response = endpoint
        .connections
        .send(
            Method::POST,
            endpoint.headers_for(&outbound.message),
            Bytes::from(encode(&outbound.message)),
        )
        .await
        .map_err(|error| {
            tracing::warn!(upstream = %endpoint.name, url = %endpoint.shown_url, %error, "upstream request failed");
            UpstreamError::Connect
        })?;
    let status = response.head.status;
    if is_initialize {
        let mut session = endpoint.session();
        session.id = response
            .head
            .headers
            .get(&mcp::SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    if status == hyper::StatusCode::NOT_FOUND && endpoint.session().id.is_some() {
        // The upstream forgot our session; the next call starts a new one.
        *endpoint.session() = LegacySession::default();
        return Err(UpstreamError::Unavailable);
    }
    let is_stream = response
        .head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_stream && status.is_success() {
        return read_stream(endpoint, link, response, outbound.call, is_initialize).await;
    }
    let body = read_message(&mut response, endpoint.limits).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return match (status.is_success(), outbound.call) {
            (true, None) => Ok(()),
            (true, Some(_)) => Err(UpstreamError::Protocol),
            (false, _) => Err(UpstreamError::Status(status.as_u16())),
        };
    }
    match serde_json::from_slice::<Value>(&body) {
        // A JSON-RPC answer to our request, whatever the status (2026-07-28 sends
        // errors with 4xx statuses), is the answer.
        Ok(message) if outbound.call.is_some() && answers(&message, outbound.call) => {
            if is_initialize {
                endpoint.note_version(&message);
            }
            link.receive(message, outbound.call);
            Ok(())
        }
        _ if status.is_success() && outbound.call.is_none() => Ok(()),
        _ if status.is_success() => Err(UpstreamError::Protocol),
        _ => Err(UpstreamError::Status(status.as_u16())),
    }
}

fn answers(message: &Value, call: Option<u64>) -> bool {
    call.is_some_and(|id| message.get("id").and_then(Value::as_u64) == Some(id))
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// Reads one upstream message, cut as it streams in (`warden_proto::cut`): an answer
/// over the size limit is given up as soon as that is known.
async fn read_message(
    response: &mut Answer<'_>,
    limits: MessageLimits,
) -> Result<Vec<u8>, UpstreamError> {
    let mut cutter = MessageCutter::new(limits);
    while let Some(chunk) = response.chunk().await {
        cutter.push(&chunk.map_err(|_| UpstreamError::Connect)?);
        if cutter.is_over() {
            return Err(UpstreamError::Oversized);
        }
    }
    cutter.finish().map_err(|error| match error {
        CutError::Oversized { .. } => UpstreamError::Oversized,
        CutError::TooDeep => UpstreamError::Protocol,
    })
}

/// Feeds every message of an SSE answer to the link, tied to the call it answers.
async fn read_stream(
    endpoint: &Endpoint,
    link: &Link,
    mut response: Answer<'_>,
    call: Option<u64>,
    is_initialize: bool,
) -> Result<(), UpstreamError> {
    let mut parser = SseParser::cutting(endpoint.limits);
    while let Some(chunk) = response.chunk().await {
        let chunk = chunk.map_err(|_| UpstreamError::Connect)?;
        for event in parser.push(&chunk).map_err(|_| UpstreamError::Oversized)? {
            if event.data.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message: Value =
                serde_json::from_slice(&event.data).map_err(|_| UpstreamError::Protocol)?;
            let done = answers(&message, call);
            if done && is_initialize {
                endpoint.note_version(&message);
            }
            link.receive(message, call);
            if done {
                return Ok(());
            }
        }
    }
    // The stream ended without the answer.
    match call {
        Some(_) => Err(UpstreamError::Protocol),
        None => Ok(()),
    }
}

/// A legacy upstream's GET stream carries what is tied to no call (list changes,
/// resource updates). Kept open while the session lives; a 405 means there is none.
async fn listen(endpoint: Arc<Endpoint>, link: Arc<Link>) {
    loop {
        let session = endpoint.session().id.clone();
        let mut headers = endpoint.headers_for(&Value::Null);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.remove(CONTENT_TYPE);
        let Ok(response) = endpoint
            .connections
            .send(Method::GET, headers, Bytes::new())
            .await
        else {
            return;
        };
        if !response.head.status.is_success() {
            return;
        }
        // A change announced while no stream was open went nowhere (servers that add
        // tools once the session is initialized do exactly that): list again.
        link.receive(
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            None,
        );
        let _ = read_stream(&endpoint, &link, response, None, false).await;
        tokio::time::sleep(STREAM_REOPEN_DELAY).await;
        if endpoint.session().id != session {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use warden_config::EgressRule;

    use super::*;

    fn endpoint() -> Endpoint {
        let url = url::Url::parse("http://127.0.0.1:9/mcp").unwrap();
        let egress = EgressPolicy::new(&[EgressRule::Host("127.0.0.1".into())]);
        Endpoint {
            name: "up".into(),
            connections: Connections::new(&url, None, egress).unwrap(),
            shown_url: outbound::shown_url(&url),
            headers: HeaderMap::new(),
            limits: MessageLimits::whole(1 << 20),
            session: Mutex::new(LegacySession::default()),
        }
    }

    /// A 2026-07-28 request, as the link sends it.
    fn modern(method: &str, params: Value) -> Value {
        let mut params = params;
        params["_meta"] = json!({ PROTOCOL_VERSION_META: "2026-07-28" });
        json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
    }

    fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
        headers.get(name).map(|value| value.to_str().unwrap())
    }

    #[test]
    fn a_modern_request_names_what_the_server_checks_mcp_name_against() {
        let endpoint = endpoint();
        for (method, params, name) in [
            ("tools/call", json!({ "name": "echo" }), Some("echo")),
            ("prompts/get", json!({ "name": "greet" }), Some("greet")),
            (
                "resources/read",
                json!({ "uri": "note://1" }),
                Some("note://1"),
            ),
            (
                "resources/subscribe",
                json!({ "uri": "note://2" }),
                Some("note://2"),
            ),
            (
                "resources/unsubscribe",
                json!({ "uri": "note://3" }),
                Some("note://3"),
            ),
            ("tools/list", json!({}), None),
        ] {
            let headers = endpoint.headers_for(&modern(method, params.clone()));
            assert_eq!(header(&headers, &mcp::METHOD), Some(method));
            assert_eq!(header(&headers, &mcp::NAME), name, "{method}");
            // What Warden sends passes the check Warden makes of its own clients.
            mcp::check(
                header(&headers, &mcp::METHOD),
                header(&headers, &mcp::NAME),
                method,
                params.as_object().unwrap(),
            )
            .unwrap();
        }
    }

    #[test]
    fn names_that_are_no_visible_ascii_travel_base64_encoded_and_decode_back() {
        let endpoint = endpoint();
        for name in ["notizen/über", " padded ", "", "tab\there"] {
            let params = json!({ "name": name });
            let headers = endpoint.headers_for(&modern("tools/call", params.clone()));
            let sent = header(&headers, &mcp::NAME).unwrap();
            assert!(sent.starts_with("=?base64?"), "{name:?} sent as {sent:?}");
            assert_eq!(mcp::decode_header_value(sent).unwrap(), name);
            mcp::check(
                header(&headers, &mcp::METHOD),
                Some(sent),
                "tools/call",
                params.as_object().unwrap(),
            )
            .unwrap();
        }
    }
}
