//! `warden connect URL`: a stdio MCP server that relays every message to a Warden over
//! Streamable HTTP, for desktop clients that start their servers as child processes
//! (Claude Desktop and the like). It replaces a generic bridge (`npx mcp-remote`) with
//! one that knows Warden:
//!
//! - the key goes in the `Authorization` header, and nowhere else: a URL with a user,
//!   a password or a query is refused, and plain HTTP only to this machine;
//! - both eras pass through: `initialize` opens a legacy session (its id and version go
//!   on every later message, and its GET stream is relayed), a request whose `_meta`
//!   names 2026-07-28 goes with the modern headers (`MCP-Protocol-Version`, `Mcp-Method`,
//!   `Mcp-Name`);
//! - answers come back as JSON or as an SSE stream whose every event is relayed (an
//!   upstream's questions mid-call included); the client's answers go back by POST;
//! - it reconnects: a request that could not be sent is tried again with backoff, a
//!   session Warden no longer knows (a restart) is opened again with the client's own
//!   `initialize` and the request sent once more, and the GET stream is reopened;
//! - what cannot be delivered comes back to the client as a JSON-RPC error naming why.
//!
//! Diagnostics go to stderr (desktop clients show them in their server log); they never
//! carry the key.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;
use warden_proto::era::PROTOCOL_VERSION_META;
use warden_proto::headers::{self as mcp, encode_header_value, name_field};
use warden_proto::sse::SseParser;

/// Attempts to send one message when Warden cannot be reached.
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest message relayed either way.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// After the client closes stdin, calls still running get this long to finish.
const DRAIN: Duration = Duration::from_secs(10);
/// JSON-RPC code of a message Warden could not be reached for.
const UNREACHABLE: i64 = -32003;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Url(String),
    #[error("the key is not a valid header value")]
    Key,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("reading the client's messages failed: {0}")]
    Input(std::io::Error),
}

/// The Warden endpoint and the key that opens it.
#[derive(Debug)]
pub struct Target {
    url: reqwest::Url,
    authorization: HeaderValue,
}

impl Target {
    /// `url` must be https, or http to this machine, and carry no credential of any kind
    /// (no user, password or query): the key goes in the header.
    pub fn new(url: &str, key: &str) -> Result<Self, ConnectError> {
        let url = reqwest::Url::parse(url)
            .map_err(|_| ConnectError::Url(format!("{url:?} is not a URL")))?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(ConnectError::Url(
                "the URL must carry no user, password or query: the key goes in the Authorization header".into(),
            ));
        }
        let local = url.host().is_some_and(|host| match host {
            url::Host::Domain(name) => name == "localhost",
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        });
        match url.scheme() {
            "https" => {}
            "http" if local => {}
            _ => {
                return Err(ConnectError::Url(
                    "the URL must be https (plain http only to this machine): the key would cross the network in the clear".into(),
                ));
            }
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ConnectError::Key)?;
        authorization.set_sensitive(true);
        Ok(Self { url, authorization })
    }
}

/// A legacy session: its id, and the version `initialize` settled.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    version: String,
}

struct Bridge {
    client: reqwest::Client,
    target: Target,
    /// The client's own `initialize`, to open the session again after a restart.
    initialize: Mutex<Option<Value>>,
    session: Mutex<Option<Session>>,
    /// The last modern version seen, for notifications that name none.
    modern_version: Mutex<Option<String>>,
    out: mpsc::Sender<Value>,
}

/// Relays between `input`/`output` (newline-delimited JSON-RPC, the stdio transport) and
/// the Warden at `target`, until the input ends.
pub async fn run(
    target: Target,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
) -> Result<(), ConnectError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| ConnectError::Client(error.to_string()))?;
    let (out, outgoing) = mpsc::channel(256);
    let writer = tokio::spawn(write_messages(output, outgoing));
    let bridge = Arc::new(Bridge {
        client,
        target,
        initialize: Mutex::new(None),
        session: Mutex::new(None),
        modern_version: Mutex::new(None),
        out,
    });
    let mut running = tokio::task::JoinSet::new();
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await.map_err(ConnectError::Input)? {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_MESSAGE_BYTES {
            eprintln!("warden connect: a message over {MAX_MESSAGE_BYTES} bytes was dropped");
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            eprintln!("warden connect: a line that is not JSON was dropped");
            continue;
        };
        if message["method"] == "initialize" {
            // Everything after it needs the session it opens.
            bridge.clone().initialize(message).await;
        } else {
            running.spawn(bridge.clone().forward(message));
        }
    }
    // The client is done: let running calls finish, then end the session.
    let _ = tokio::time::timeout(DRAIN, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    bridge.end_session().await;
    drop(bridge);
    let _ = writer.await;
    Ok(())
}

async fn write_messages(mut output: impl AsyncWrite + Unpin, mut messages: mpsc::Receiver<Value>) {
    while let Some(message) = messages.recv().await {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}

/// What became of one POST.
enum Sent {
    Answered(reqwest::Response),
    /// Warden could not be reached, after every attempt.
    Unreachable(String),
}

impl Bridge {
    fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn emit(&self, message: Value) {
        let _ = self.out.send(message).await;
    }

    /// A JSON-RPC error for the client's request `id`, when it had one.
    async fn refuse(&self, id: Option<&Value>, code: i64, message: String) {
        eprintln!("warden connect: {message}");
        if let Some(id) = id {
            self.emit(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
            )
            .await;
        }
    }

    /// `initialize`: opens the session, relays Warden's answer, and starts the session's
    /// GET stream.
    async fn initialize(self: Arc<Self>, message: Value) {
        *self
            .initialize
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message.clone());
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let id = message.get("id").cloned();
        match self.post(&message).await {
            Sent::Answered(response) => {
                let opened = self.note_session(&response);
                self.relay(response, id.as_ref()).await;
                if opened {
                    tokio::spawn(self.clone().listen());
                }
            }
            Sent::Unreachable(why) => self.refuse(id.as_ref(), UNREACHABLE, why).await,
        }
    }

    /// Keeps the session id an `initialize` answer carries; whether there was one.
    fn note_session(&self, response: &reqwest::Response) -> bool {
        let id = response
            .headers()
            .get(&mcp::SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(id) = id else { return false };
        // The version comes in the body; until it is read, the latest legacy one.
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(Session {
            id,
            version: String::new(),
        });
        true
    }

    /// Any message but `initialize`.
    async fn forward(self: Arc<Self>, message: Value) {
        let id = message
            .get("id")
            .filter(|_| message.get("method").is_some())
            .cloned();
        let first_session = self.session().map(|s| s.id);
        match self.post(&message).await {
            Sent::Answered(response)
                if response.status() == reqwest::StatusCode::NOT_FOUND
                    && first_session.is_some() =>
            {
                // Warden forgot the session (it restarted): open it again and try once more.
                if self.reopen(first_session.as_deref()).await {
                    match self.post(&message).await {
                        Sent::Answered(response) => self.relay(response, id.as_ref()).await,
                        Sent::Unreachable(why) => self.refuse(id.as_ref(), UNREACHABLE, why).await,
                    }
                } else {
                    self.relay(response, id.as_ref()).await;
                }
            }
            Sent::Answered(response) => self.relay(response, id.as_ref()).await,
            Sent::Unreachable(why) => self.refuse(id.as_ref(), UNREACHABLE, why).await,
        }
    }

    /// Opens the session again with the client's `initialize` (once per lost session:
    /// calls that lost it together share the new one).
    async fn reopen(self: &Arc<Self>, lost: Option<&str>) -> bool {
        if self.session().map(|s| s.id).as_deref() != lost {
            return true; // another call already reopened it
        }
        let Some(initialize) = self
            .initialize
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return false;
        };
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Sent::Answered(response) = self.post(&initialize).await else {
            return false;
        };
        if !self.note_session(&response) {
            return false;
        }
        let answer: Value = response.json().await.unwrap_or_default();
        self.note_version(&answer);
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let _ = self.post(&initialized).await;
        eprintln!("warden connect: Warden had lost the session; a new one is open");
        tokio::spawn(self.clone().listen());
        true
    }

    fn note_version(&self, answer: &Value) {
        if let Some(version) = answer["result"]["protocolVersion"].as_str()
            && let Some(session) = self
                .session
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
        {
            session.version = version.to_owned();
        }
    }

    /// POSTs one message with the headers its era needs, trying again while Warden
    /// cannot be reached (nothing was sent then, so nothing runs twice).
    async fn post(&self, message: &Value) -> Sent {
        let mut delay = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let request = self
                .client
                .post(self.target.url.clone())
                .header(AUTHORIZATION, self.target.authorization.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream")
                .headers(self.headers_for(message))
                .body(message.to_string());
            match request.send().await {
                Ok(response) => return Sent::Answered(response),
                Err(error) if error.is_connect() && attempt < ATTEMPTS => {
                    last = describe(error);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    last = describe(error);
                    break;
                }
            }
        }
        Sent::Unreachable(format!(
            "Warden at {} could not be reached: {last}",
            self.target.url
        ))
    }

    /// The era's headers: a modern request names its version, method and name; anything
    /// in a legacy session names the session and its version.
    fn headers_for(&self, message: &Value) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        let method = message["method"].as_str();
        let params = message.get("params").and_then(Value::as_object);
        let modern = params
            .and_then(|p| p.get("_meta"))
            .and_then(|meta| meta.get(PROTOCOL_VERSION_META))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(version) = &modern {
            *self
                .modern_version
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(version.clone());
        }
        match (modern, self.session()) {
            (Some(version), _) => {
                put(mcp::PROTOCOL_VERSION, &version);
                if let Some(method) = method {
                    put(mcp::METHOD, &encode_header_value(method));
                    if let Some(value) = name_field(method)
                        .and_then(|field| params.and_then(|p| p.get(field)))
                        .and_then(Value::as_str)
                    {
                        put(mcp::NAME, &encode_header_value(value));
                    }
                }
            }
            (None, Some(session)) => {
                put(mcp::SESSION_ID, &session.id);
                if !session.version.is_empty() {
                    put(mcp::PROTOCOL_VERSION, &session.version);
                }
            }
            (None, None) => {
                let version = self
                    .modern_version
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(version) = version {
                    put(mcp::PROTOCOL_VERSION, &version);
                }
            }
        }
        headers
    }

    /// Relays Warden's answer: nothing for `202`, the body for JSON, every event for an
    /// SSE stream; an answer that is neither becomes an error for the request.
    async fn relay(&self, response: reqwest::Response, id: Option<&Value>) {
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            return;
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            eprintln!(
                "warden connect: Warden refused the key (401); check the key this command was given"
            );
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_stream {
            self.relay_events(response).await;
            return;
        }
        match response
            .bytes()
            .await
            .map(|body| serde_json::from_slice::<Value>(&body))
        {
            Ok(Ok(message)) => {
                if message.get("result").is_some() {
                    self.note_version(&message);
                }
                self.emit(message).await;
            }
            _ => {
                let message = format!(
                    "Warden answered HTTP {} with no JSON-RPC message",
                    status.as_u16()
                );
                self.refuse(id, UNREACHABLE, message).await;
            }
        }
    }

    async fn relay_events(&self, response: reqwest::Response) {
        let mut parser = SseParser::new(MAX_MESSAGE_BYTES);
        let mut chunks = response.bytes_stream();
        while let Some(Ok(chunk)) = chunks.next().await {
            let Ok(events) = parser.push(&chunk) else {
                eprintln!(
                    "warden connect: an event over {MAX_MESSAGE_BYTES} bytes ended the stream"
                );
                return;
            };
            for event in events {
                if let Ok(message) = serde_json::from_slice::<Value>(&event.data) {
                    self.emit(message).await;
                }
            }
        }
    }

    /// The legacy session's GET stream (list changes, resource updates), reopened when it
    /// ends, for as long as the session lasts.
    async fn listen(self: Arc<Self>) {
        let mut delay = FIRST_RETRY;
        while let Some(session) = self.session() {
            let response = self
                .client
                .get(self.target.url.clone())
                .header(AUTHORIZATION, self.target.authorization.clone())
                .header(ACCEPT, "text/event-stream")
                .header(mcp::SESSION_ID, session.id.as_str())
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    delay = FIRST_RETRY;
                    self.relay_events(response).await;
                }
                // The session is gone or has no stream to give: nothing to listen to.
                Ok(response) if response.status().is_client_error() => return,
                _ => {}
            }
            if self.session().map(|s| s.id) != Some(session.id) {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Ends the legacy session, if there is one.
    async fn end_session(&self) {
        let Some(session) = self.session() else {
            return;
        };
        let _ = self
            .client
            .delete(self.target.url.clone())
            .header(AUTHORIZATION, self.target.authorization.clone())
            .header(mcp::SESSION_ID, session.id.as_str())
            .send()
            .await;
    }
}

/// Why a request failed, down to its cause, without the URL.
fn describe(error: reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        causes.push(inner.to_string());
        source = inner.source();
    }
    let mut text = error.without_url().to_string();
    for cause in causes {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_keeps_the_key_out_of_the_url_and_off_plain_networks() {
        assert!(Target::new("http://127.0.0.1:8080/mcp", "wdn_x").is_ok());
        assert!(Target::new("https://mcp.example.com/mcp", "wdn_x").is_ok());
        for bad in [
            "http://mcp.example.com/mcp",
            "https://mcp.example.com/mcp?api_key=wdn_x",
            "https://user:pw@mcp.example.com/mcp",
            "ftp://127.0.0.1/mcp",
            "not a url",
        ] {
            assert!(Target::new(bad, "wdn_x").is_err(), "{bad}");
        }
        assert!(Target::new("https://mcp.example.com/mcp", "wdn_x\nInjected: 1").is_err());
    }

    #[test]
    fn each_era_gets_its_headers() {
        let (out, _) = mpsc::channel(1);
        let bridge = Bridge {
            client: reqwest::Client::new(),
            target: Target::new("http://127.0.0.1:1/mcp", "wdn_x").unwrap(),
            initialize: Mutex::new(None),
            session: Mutex::new(None),
            modern_version: Mutex::new(None),
            out,
        };
        let modern = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "naïve tool", "_meta": {PROTOCOL_VERSION_META: "2026-07-28"}}});
        let headers = bridge.headers_for(&modern);
        assert_eq!(headers["mcp-protocol-version"], "2026-07-28");
        assert_eq!(headers["mcp-method"], "tools/call");
        assert_eq!(
            warden_proto::headers::decode_header_value(headers["mcp-name"].to_str().unwrap())
                .unwrap(),
            modern["params"]["name"]
        );
        *bridge.session.lock().unwrap() = Some(Session {
            id: "s1".into(),
            version: "2025-11-25".into(),
        });
        let legacy = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let headers = bridge.headers_for(&legacy);
        assert_eq!(headers["mcp-session-id"], "s1");
        assert_eq!(headers["mcp-protocol-version"], "2025-11-25");
        assert!(headers.get("mcp-method").is_none());
    }
}
