//! The probes against an HTTP target: the conversation a client would have (in the
//! modern era if the server speaks it, else the legacy one), then requests a correct
//! server refuses before acting. Nothing here calls a tool with arguments that could
//! be valid, except a read-only tool given an extra argument, which a correct server
//! refuses; a server that acts on it has already failed the rule.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::ScanOptions;
use crate::http::{Exchange, HttpClient, Request};
use crate::observe::{Era, Observations, Probe, SlowLoris, TargetFacts};
use crate::rule::Category;
use crate::stdio::StdioPeer;

const MODERN: &str = "2026-07-28";
const LEGACY: &str = "2025-11-25";
/// A key no server issued: the answer to it must be a refusal.
const WRONG_KEY: &str = "wdn_scan_not_a_key_000000000000000000000000000";
/// Planted in probes: an answer that carries it back echoes what it was sent.
pub(crate) const CANARY: &str = "warden-scan-canary-7f3a9c";
/// Parallel calls a fan-out of one user message makes.
const PARALLEL: usize = 15;
/// Calls of the burst a rate limit should meet.
const BURST: usize = 50;
/// Wrong keys sent one after another.
const GUESSES: usize = 25;
/// The one rule the guessing probe is for (it gets the scanning address throttled for a
/// while on a careful server, so it runs only when wanted).
const GUESSING_RULE: &str = "WS-AUTH-009";
/// How long the slow-loris probe keeps a connection open at most.
const SLOW_LORIS_LIMIT: Duration = Duration::from_secs(15);

/// What a scan sends with every request, and which probes it runs.
impl ScanOptions {
    fn wants(&self, category: Category) -> bool {
        self.selection.wants_category(category)
    }

    /// Whether tools are called with valid arguments: only when allowed, and when a rule
    /// that reads their results is wanted.
    fn wants_results(&self) -> bool {
        self.allow_calls
            && crate::rules::READING_RESULTS
                .iter()
                .any(|id| self.selection.wants_id(id))
    }

    /// The bearer token among the operator's headers, if one was given.
    fn token(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| value.strip_prefix("Bearer "))
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .headers
            .iter()
            .map(|(_, value)| value.clone())
            .chain(self.token().map(str::to_owned))
            .filter(|secret| secret.len() >= 8)
            .collect();
        secrets.push(CANARY.to_owned());
        secrets
    }
}

/// Where requests go: an HTTP endpoint, or a child process's stdin.
#[derive(Clone, Copy)]
enum Channel<'a> {
    Http(&'a HttpClient),
    Stdio(&'a StdioPeer),
}

impl Channel<'_> {
    async fn send(&self, request: &Request) -> Exchange {
        match self {
            Self::Http(http) => http.send(request).await,
            Self::Stdio(peer) => peer.send(request).await,
        }
    }
}

/// A conversation with the target in one era.
struct Conversation<'a> {
    http: Channel<'a>,
    probing: &'a ScanOptions,
    era: Era,
    session: Option<String>,
    version: String,
    next_id: u64,
}

impl Conversation<'_> {
    fn headers(
        &self,
        method: &str,
        name: Option<&str>,
        credentials: bool,
    ) -> Vec<(String, String)> {
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "accept".to_owned(),
                "application/json, text/event-stream".to_owned(),
            ),
        ];
        if credentials {
            headers.extend(self.probing.headers.iter().cloned());
        }
        headers.push(("mcp-protocol-version".to_owned(), self.version.clone()));
        match self.era {
            Era::Modern => {
                headers.push(("mcp-method".to_owned(), method.to_owned()));
                if let Some(name) = name {
                    headers.push(("mcp-name".to_owned(), name.to_owned()));
                }
            }
            Era::Legacy => {
                if let Some(session) = &self.session {
                    headers.push(("mcp-session-id".to_owned(), session.clone()));
                }
            }
        }
        headers
    }

    fn body(&mut self, method: &str, mut params: Value) -> Value {
        if self.era == Era::Modern {
            params["_meta"] = modern_meta();
        }
        self.next_id += 1;
        json!({"jsonrpc": "2.0", "id": format!("scan-{}", self.next_id), "method": method, "params": params})
    }

    /// A request as a client in this era sends it.
    fn request(&mut self, method: &str, params: Value) -> Request {
        let name = match method {
            "tools/call" | "prompts/get" => params.get("name").and_then(Value::as_str),
            "resources/read" => params.get("uri").and_then(Value::as_str),
            _ => None,
        }
        .map(str::to_owned);
        let headers = self.headers(method, name.as_deref(), true);
        let body = self.body(method, params);
        Request::post(method, body.to_string(), headers)
    }

    async fn call(&mut self, method: &str, params: Value) -> Exchange {
        let request = self.request(method, params);
        self.http.send(&request).await
    }
}

fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "warden-scan", "version": env!("CARGO_PKG_VERSION")},
    })
}

fn initialize_body(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": "scan-init", "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "warden-scan", "version": env!("CARGO_PKG_VERSION")},
    }})
}

fn json_headers(probing: &ScanOptions, credentials: bool) -> Vec<(String, String)> {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
    ];
    if credentials {
        headers.extend(probing.headers.iter().cloned());
    }
    headers
}

/// Runs every wanted probe against `http`.
pub async fn observe_http(http: &HttpClient, probing: &ScanOptions) -> Observations {
    let url = http.url.clone();
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let mut seen = Observations {
        target: TargetFacts {
            url: Some(url),
            command: Vec::new(),
            loopback,
            credentials: probing.token().is_some(),
        },
        ..Observations::default()
    };
    // The slow-loris probe waits on the server's clock: it runs beside the others.
    let slow_loris = probing
        .wants(Category::Availability)
        .then(|| tokio::spawn(slow_loris(http.url.clone())));

    // The conversation: the modern era if the server speaks it, else the legacy one.
    let discover = {
        let mut modern = Conversation {
            http: Channel::Http(http),
            probing,
            era: Era::Modern,
            session: None,
            version: MODERN.to_owned(),
            next_id: 0,
        };
        modern.call("server/discover", json!({})).await
    };
    if discover.error.is_some() && discover.status == 0 {
        let error = discover.error.clone().unwrap_or_default();
        if error.contains("certificate")
            || error.contains("tls")
            || error.contains("TLS")
            || error.contains("Protocol")
        {
            seen.tls_error = Some(error.clone());
        }
        seen.unreachable = Some(error);
        seen.record(Probe::Discover, discover);
        return seen;
    }
    if discover.status == 429 {
        seen.unreachable = Some(
            "the server is rate-limiting this address (429); scan again once it lets go".into(),
        );
        seen.record(Probe::Discover, discover);
        return seen;
    }
    let initialize = http
        .send(&Request::post(
            "initialize",
            initialize_body(LEGACY).to_string(),
            json_headers(probing, true),
        ))
        .await;
    let modern_ok = discover.succeeded();
    let legacy_ok = initialize.succeeded();
    let session = initialize.header("mcp-session-id").map(str::to_owned);
    let legacy_version = initialize
        .result()
        .and_then(|r| r.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or(LEGACY)
        .to_owned();
    let (era, facts) = if modern_ok {
        (Some(Era::Modern), discover.result().cloned())
    } else if legacy_ok {
        (Some(Era::Legacy), initialize.result().cloned())
    } else {
        (None, None)
    };
    seen.era = era;
    seen.session_id = session.clone();
    learn(&mut seen, facts.as_ref());
    seen.record(Probe::Discover, discover);
    seen.record(Probe::Initialize, initialize);

    let mut talk = Conversation {
        http: Channel::Http(http),
        probing,
        era: era.unwrap_or(Era::Legacy),
        session: if era == Some(Era::Legacy) {
            session.clone()
        } else {
            None
        },
        version: if era == Some(Era::Modern) {
            MODERN.to_owned()
        } else {
            legacy_version.clone()
        },
        next_id: 0,
    };
    // The legacy session, whatever era the calls go in: its lifecycle is probed too.
    let mut legacy = session
        .clone()
        .filter(|_| legacy_ok)
        .map(|id| Conversation {
            http: Channel::Http(http),
            probing,
            era: Era::Legacy,
            session: Some(id),
            version: legacy_version.clone(),
            next_id: 1000,
        });
    if let Some(legacy) = &legacy {
        let headers = legacy.headers("notifications/initialized", None, true);
        let body = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = http
            .send(&Request::post(
                "notifications/initialized",
                body.to_string(),
                headers,
            ))
            .await;
        if era == Some(Era::Legacy) {
            seen.record(Probe::Notification, answer);
        }
    }
    if era == Some(Era::Modern) {
        let mut headers = talk.headers("notifications/cancelled", None, true);
        headers.retain(|(name, _)| name != "mcp-name");
        let body = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "scan-none", "_meta": modern_meta()}});
        seen.record(
            Probe::Notification,
            http.send(&Request::post(
                "notifications/cancelled",
                body.to_string(),
                headers,
            ))
            .await,
        );
    }
    if era.is_some() {
        list_tools(&mut talk, &mut seen).await;
    }

    if probing.wants(Category::Transport) {
        transport_probes(&mut talk, legacy.as_mut(), &mut seen, probing).await;
    }
    if probing.wants(Category::Authentication) {
        auth_probes(&mut talk, legacy.as_mut(), &mut seen, probing).await;
    }
    if probing.wants(Category::Browser) {
        browser_probes(&mut talk, &mut seen).await;
    }
    if probing.wants(Category::Validation) && era.is_some() {
        validation_probes(&mut talk, &mut seen).await;
    }
    if probing.wants_results() && era.is_some() {
        allowed_calls(&mut talk, &mut seen).await;
    }
    // A legacy session is ended (and its end checked) before the burst, whose rate
    // limit would refuse what follows it.
    if probing.wants(Category::Transport)
        && let Some(legacy) = legacy.as_mut()
    {
        let headers = legacy.headers("", None, true);
        let delete = Request {
            method: Method::DELETE,
            query: None,
            headers,
            body: None,
            label: "DELETE session".into(),
        };
        seen.record(Probe::DeleteSession, http.send(&delete).await);
        seen.record(Probe::AfterDelete, legacy.call("ping", json!({})).await);
        talk.session = None;
    }
    if probing.wants(Category::Availability) && era.is_some() {
        if era == Some(Era::Legacy) {
            // A fresh session for the calls that follow.
            let reopened = http
                .send(&Request::post(
                    "initialize",
                    initialize_body(LEGACY).to_string(),
                    json_headers(probing, true),
                ))
                .await;
            talk.session = reopened.header("mcp-session-id").map(str::to_owned);
        }
        availability_probes(&mut talk, &mut seen).await;
    }
    // Last: wrong keys, which a careful server answers by refusing this address for a
    // while, right keys included.
    if probing.selection.wants_id(GUESSING_RULE) {
        guessing_probe(&mut talk, &mut seen).await;
    }
    if let Some(task) = slow_loris {
        seen.slow_loris = task.await.ok().flatten();
    }
    redact(&mut seen, &probing.secrets());
    seen
}

/// Runs the probes that apply to a stdio server: the handshake, the tool list, and the
/// validation probes; the command itself is what supply-chain rules read.
pub async fn observe_stdio(command: &[String], probing: &ScanOptions) -> Observations {
    let mut seen = Observations {
        target: TargetFacts {
            command: command.to_vec(),
            ..TargetFacts::default()
        },
        ..Observations::default()
    };
    let peer = match StdioPeer::start(command, probing.timeout, probing.progress.clone()) {
        Ok(peer) => peer,
        Err(error) => {
            seen.unreachable = Some(format!("cannot start the command: {error}"));
            return seen;
        }
    };
    let initialize = peer
        .send(&Request::post(
            "initialize",
            initialize_body(LEGACY).to_string(),
            Vec::new(),
        ))
        .await;
    if !initialize.succeeded() {
        seen.unreachable = Some(format!(
            "the server did not complete initialize: {}",
            initialize.summary()
        ));
        seen.record(Probe::Initialize, initialize);
        return seen;
    }
    let facts = initialize.result().cloned().unwrap_or_default();
    seen.era = Some(Era::Legacy);
    learn(&mut seen, Some(&facts));
    seen.record(Probe::Initialize, initialize);
    let version = facts
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(LEGACY)
        .to_owned();
    let mut talk = Conversation {
        http: Channel::Stdio(&peer),
        probing,
        era: Era::Legacy,
        session: None,
        version,
        next_id: 0,
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    peer.send(&Request::post(
        "notifications/initialized",
        initialized.to_string(),
        Vec::new(),
    ))
    .await;
    list_tools(&mut talk, &mut seen).await;
    if probing.wants(Category::Transport) {
        seen.record(
            Probe::UnknownMethod,
            talk.call("warden_scan/no_such_method", json!({})).await,
        );
        seen.record(Probe::Ping, talk.call("ping", json!({})).await);
    }
    if probing.wants(Category::Validation) {
        validation_probes(&mut talk, &mut seen).await;
    }
    if probing.wants_results() {
        allowed_calls(&mut talk, &mut seen).await;
    }
    redact(&mut seen, &probing.secrets());
    seen
}

/// What the handshake's result says of the server.
fn learn(seen: &mut Observations, facts: Option<&Value>) {
    seen.capabilities = facts.and_then(|f| f.get("capabilities").cloned());
    seen.instructions = facts
        .and_then(|f| f.get("instructions"))
        .and_then(Value::as_str)
        .map(str::to_owned);
}

/// The server's tools, as `tools/list` gives them (the first page).
async fn list_tools(talk: &mut Conversation<'_>, seen: &mut Observations) {
    let listed = talk.call("tools/list", json!({})).await;
    seen.tools = listed
        .result()
        .and_then(|r| r.get("tools"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    seen.record(Probe::ToolsList, listed);
}

async fn transport_probes(
    talk: &mut Conversation<'_>,
    legacy: Option<&mut Conversation<'_>>,
    seen: &mut Observations,
    probing: &ScanOptions,
) {
    let http = talk.http;
    let ping = talk.body("ping", json!({})).to_string();
    let mut headers = talk.headers("ping", None, true);
    set(&mut headers, "content-type", "text/plain");
    seen.record(
        Probe::WrongContentType,
        http.send(&Request::post("ping as text/plain", ping.clone(), headers))
            .await,
    );
    let mut headers = talk.headers("ping", None, true);
    set(&mut headers, "accept", "text/html");
    seen.record(
        Probe::WrongAccept,
        http.send(&Request::post(
            "ping accepting only text/html",
            ping.clone(),
            headers,
        ))
        .await,
    );
    let batch = format!("[{ping}, {ping}]");
    seen.record(
        Probe::Batch,
        http.send(&Request::post(
            "a batch of two pings",
            batch,
            talk.headers("ping", None, true),
        ))
        .await,
    );
    seen.record(
        Probe::MalformedJson,
        http.send(&Request::post(
            "malformed JSON",
            "{\"jsonrpc\": \"2.0\", \"id\": 1,".into(),
            talk.headers("ping", None, true),
        ))
        .await,
    );
    seen.record(
        Probe::NotJsonrpc,
        http.send(&Request::post(
            "JSON that is not JSON-RPC",
            json!({"hello": "world"}).to_string(),
            talk.headers("ping", None, true),
        ))
        .await,
    );
    let unknown = "warden_scan/no_such_method";
    let request = talk.request(unknown, json!({}));
    seen.record(Probe::UnknownMethod, http.send(&request).await);
    seen.record(Probe::Ping, talk.call("ping", json!({})).await);

    if let Some(talk) = legacy {
        let ping = talk.body("ping", json!({})).to_string();
        {
            let mut headers = talk.headers("ping", None, true);
            headers.retain(|(name, _)| name != "mcp-session-id");
            seen.record(
                Probe::NoSession,
                http.send(&Request::post(
                    "ping without a session id",
                    ping.clone(),
                    headers,
                ))
                .await,
            );
            let mut headers = talk.headers("ping", None, true);
            set(
                &mut headers,
                "mcp-session-id",
                "scan-unknown-session-0000000000000000",
            );
            seen.record(
                Probe::UnknownSession,
                http.send(&Request::post(
                    "ping with an unknown session id",
                    ping.clone(),
                    headers,
                ))
                .await,
            );
            let headers = talk.headers("initialize", None, true);
            seen.record(
                Probe::SecondInitialize,
                http.send(&Request::post(
                    "initialize on an open session",
                    initialize_body(LEGACY).to_string(),
                    headers,
                ))
                .await,
            );
            seen.record(
                Probe::OddVersionInitialize,
                http.send(&Request::post(
                    "initialize asking for version 1999-01-01",
                    initialize_body("1999-01-01").to_string(),
                    json_headers(probing, true),
                ))
                .await,
            );
        }
    }
    match talk.era {
        Era::Modern => {
            let mut headers = talk.headers("ping", None, true);
            set(&mut headers, "mcp-protocol-version", "1999-01-01");
            let mut body = talk.body("ping", json!({}));
            body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] =
                json!("1999-01-01");
            seen.record(
                Probe::UnsupportedVersion,
                http.send(&Request::post(
                    "ping in version 1999-01-01",
                    body.to_string(),
                    headers,
                ))
                .await,
            );
            let mut headers = talk.headers("tools/list", None, true);
            let body = talk.body("ping", json!({}));
            set(&mut headers, "mcp-method", "tools/list");
            seen.record(
                Probe::MethodMismatch,
                http.send(&Request::post(
                    "ping with Mcp-Method: tools/list",
                    body.to_string(),
                    headers,
                ))
                .await,
            );
            if let Some(tool) = seen
                .tools
                .first()
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
            {
                let params = json!({"name": "warden_scan_other_tool", "arguments": {}});
                let mut headers = talk.headers("tools/call", Some(tool), true);
                let body = talk.body("tools/call", params);
                set(&mut headers, "mcp-name", tool);
                seen.record(
                    Probe::NameMismatch,
                    http.send(&Request::post(
                        "tools/call of one tool with Mcp-Name of another",
                        body.to_string(),
                        headers,
                    ))
                    .await,
                );
            }
        }
        Era::Legacy => {}
    }
    let offered = |capability: &str| {
        seen.capabilities
            .as_ref()
            .is_some_and(|c| c.get(capability).is_some())
    };
    let undeclared = if !offered("prompts") {
        Some(("prompts/list", json!({})))
    } else if !offered("completions") {
        Some((
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "x"}, "argument": {"name": "a", "value": ""}}),
        ))
    } else {
        None
    };
    if let Some((method, params)) = undeclared {
        seen.record(Probe::UndeclaredCapability, talk.call(method, params).await);
    }
}

async fn auth_probes(
    talk: &mut Conversation<'_>,
    legacy: Option<&mut Conversation<'_>>,
    seen: &mut Observations,
    probing: &ScanOptions,
) {
    let http = talk.http;
    let without = |talk: &mut Conversation<'_>, method: &str| {
        let body = talk.body(method, json!({})).to_string();
        let mut headers = talk.headers(method, None, false);
        headers.retain(|(name, _)| name != "mcp-session-id");
        (body, headers)
    };
    // A client without credentials: a legacy one starts with initialize.
    let unauthenticated = match talk.era {
        Era::Modern => {
            let (body, headers) = without(talk, "tools/list");
            Request::post("tools/list without credentials", body, headers)
        }
        Era::Legacy => Request::post(
            "initialize without credentials",
            initialize_body(LEGACY).to_string(),
            json_headers(probing, false),
        ),
    };
    seen.record(Probe::NoCredentials, http.send(&unauthenticated).await);
    let (body, mut headers) = without(talk, "tools/list");
    headers.push(("authorization".into(), format!("Bearer {WRONG_KEY}")));
    seen.record(
        Probe::WrongBearer,
        http.send(&Request::post(
            "tools/list with a key no one issued",
            body,
            headers,
        ))
        .await,
    );
    let (body, mut headers) = without(talk, "tools/list");
    headers.push(("authorization".into(), "Basic d2FyZGVuOnNjYW4=".into()));
    seen.record(
        Probe::MalformedAuthorization,
        http.send(&Request::post(
            "tools/list with Basic credentials",
            body,
            headers,
        ))
        .await,
    );
    if let Some(token) = probing.token() {
        let (body, headers) = without(talk, "tools/list");
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("access_token", token)
            .finish();
        let request = Request {
            method: Method::POST,
            query: Some(query),
            headers,
            body: Some(body),
            label: "tools/list with the key in the URL and no header".into(),
        };
        seen.record(Probe::TokenInQuery, http.send(&request).await);
        let (_, headers) = without(talk, "tools/list");
        let mut body = talk.body("tools/list", json!({}));
        body["params"]["api_key"] = json!(token);
        body["params"]["access_token"] = json!(token);
        seen.record(
            Probe::TokenInBody,
            http.send(&Request::post(
                "tools/list with the key in the body and no header",
                body.to_string(),
                headers,
            ))
            .await,
        );
    }
    if let Channel::Http(endpoint) = http {
        let mut metadata_url = endpoint.url.clone();
        metadata_url.set_path("/.well-known/oauth-protected-resource");
        metadata_url.set_query(None);
        if let Ok(metadata) = HttpClient::new(metadata_url, probing) {
            let request = Request {
                method: Method::GET,
                query: None,
                headers: Vec::new(),
                body: None,
                label: "well-known metadata".into(),
            };
            seen.record(Probe::ResourceMetadata, metadata.send(&request).await);
        }
    }
    if let Some(talk) = legacy
        && let Some(session) = talk.session.clone()
    {
        let body = talk.body("tools/list", json!({})).to_string();
        let mut headers = talk.headers("tools/list", None, false);
        set(&mut headers, "mcp-session-id", &session);
        seen.record(
            Probe::SessionWithoutCredentials,
            http.send(&Request::post(
                "tools/list with the session id and no credentials",
                body,
                headers,
            ))
            .await,
        );
    }
}

/// Wrong keys one after another, until the server throttles them or the probe's budget
/// is spent.
async fn guessing_probe(talk: &mut Conversation<'_>, seen: &mut Observations) {
    let http = talk.http;
    for attempt in 0..GUESSES {
        let body = talk.body("ping", json!({})).to_string();
        let mut headers = talk.headers("ping", None, false);
        headers.retain(|(name, _)| name != "mcp-session-id");
        headers.push((
            "authorization".into(),
            format!("Bearer wdn_scan_guess_{attempt:040}"),
        ));
        let answer = http
            .send(&Request::post("ping with a guessed key", body, headers))
            .await;
        let throttled = answer.status == 429;
        seen.guessing.push(answer);
        if throttled {
            break;
        }
    }
}

async fn browser_probes(talk: &mut Conversation<'_>, seen: &mut Observations) {
    let http = talk.http;
    let evil = "https://evil.example.com";
    let preflight = Request {
        method: Method::OPTIONS,
        query: None,
        headers: vec![
            ("origin".into(), evil.into()),
            ("access-control-request-method".into(), "POST".into()),
            (
                "access-control-request-headers".into(),
                "authorization, content-type, mcp-protocol-version".into(),
            ),
        ],
        body: None,
        label: "CORS preflight from a foreign origin".into(),
    };
    seen.record(Probe::Preflight, http.send(&preflight).await);
    let mut opaque = preflight.clone();
    opaque.headers[0].1 = "null".into();
    opaque.label = "CORS preflight from origin null".into();
    seen.record(Probe::NullOrigin, http.send(&opaque).await);
    let body = talk.body("ping", json!({})).to_string();
    let mut headers = talk.headers("ping", None, true);
    headers.push(("origin".into(), evil.into()));
    seen.record(
        Probe::ForeignOrigin,
        http.send(&Request::post("ping from a foreign origin", body, headers))
            .await,
    );
    let body = talk.body("ping", json!({})).to_string();
    let mut headers = talk.headers("ping", None, true);
    headers.push(("host".into(), "evil.example.com".into()));
    seen.record(
        Probe::ForeignHost,
        http.send(&Request::post(
            "ping with a foreign Host (DNS rebinding)",
            body,
            headers,
        ))
        .await,
    );
}

/// A tool to aim the validation probes at: a read-only one if there is one, else one
/// that does not say it destroys (a careless server may act on what it should refuse).
fn probe_tool(tools: &[Value]) -> Option<(&Value, bool)> {
    let read_only = |tool: &&Value| tool["annotations"]["readOnlyHint"] == true;
    tools
        .iter()
        .find(read_only)
        .map(|tool| (tool, true))
        .or_else(|| {
            tools
                .iter()
                .find(|t| !sounds_destructive(t))
                .map(|tool| (tool, false))
        })
}

/// A string property of the schema named or marked like a path, else any string one.
fn string_property(schema: &Value, path_like: bool) -> Option<String> {
    let properties = schema.get("properties")?.as_object()?;
    properties
        .iter()
        .filter(|(_, s)| s.get("type") == Some(&json!("string")))
        .find(|(name, s)| {
            !path_like
                || s.get("format") == Some(&json!("path"))
                || ["path", "file", "dir", "directory", "filename", "uri"]
                    .iter()
                    .any(|word| name.to_ascii_lowercase().contains(word))
        })
        .map(|(name, _)| name.clone())
}

async fn validation_probes(talk: &mut Conversation<'_>, seen: &mut Observations) {
    let call = |name: &str, arguments: Value| json!({"name": name, "arguments": arguments});
    seen.record(
        Probe::UnknownTool,
        talk.call("tools/call", call("warden_scan_no_such_tool", json!({})))
            .await,
    );
    let Some((tool, read_only)) = probe_tool(&seen.tools) else {
        return;
    };
    let tool = tool.clone();
    let name = tool["name"].as_str().unwrap_or_default().to_owned();
    seen.probe_tool = Some((name.clone(), read_only));
    let schema = tool.get("inputSchema").cloned().unwrap_or(json!({}));
    let near_miss = near_miss(&name);
    seen.record(
        Probe::NearMissTool,
        talk.call("tools/call", call(&near_miss, json!({}))).await,
    );
    if read_only {
        // Valid arguments plus one the schema does not declare.
        let mut arguments = sample_arguments(&schema);
        arguments["warden_scan_extra"] = json!(CANARY);
        seen.record(
            Probe::ExtraArgument,
            talk.call("tools/call", call(&name, arguments)).await,
        );
    }
    let first = schema
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|p| p.iter().find(|(_, s)| s.get("type").is_some()))
        .map(|(name, s)| (name.clone(), s.get("type").cloned().unwrap_or_default()));
    if let Some((property, kind)) = first {
        let wrong = if kind == json!("string") {
            json!(12345)
        } else {
            json!(CANARY)
        };
        seen.record(
            Probe::WrongType,
            talk.call("tools/call", call(&name, json!({ property: wrong })))
                .await,
        );
    }
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if required {
        seen.record(
            Probe::MissingRequired,
            talk.call("tools/call", call(&name, json!({}))).await,
        );
    }
    if let Some(property) = string_property(&schema, false) {
        let huge = "w".repeat(1 << 20);
        seen.record(
            Probe::HugeString,
            talk.call("tools/call", call(&name, json!({ property: huge })))
                .await,
        );
    }
    let mut deep = json!(CANARY);
    for _ in 0..1000 {
        deep = json!([deep]);
    }
    let property = string_property(&schema, false).unwrap_or_else(|| "warden_scan_deep".into());
    seen.record(
        Probe::DeepNesting,
        talk.call("tools/call", call(&name, json!({ property: deep })))
            .await,
    );
    // Paths go to a tool that takes one and does not say it destroys (a careless server
    // may act on them): a read-only one first.
    let path_tool = seen
        .tools
        .iter()
        .filter(|t| !sounds_destructive(t))
        .filter_map(|t| Some((t, string_property(t.get("inputSchema")?, true)?)))
        .min_by_key(|(t, _)| t["annotations"]["readOnlyHint"] != true)
        .map(|(t, path)| (t["name"].as_str().unwrap_or_default().to_owned(), path));
    if let Some((tool, path)) = path_tool {
        seen.record(
            Probe::Traversal,
            talk.call(
                "tools/call",
                call(
                    &tool,
                    json!({ path.clone(): "../../../../../../etc/passwd" }),
                ),
            )
            .await,
        );
        seen.record(
            Probe::NulInPath,
            talk.call("tools/call", call(&tool, json!({ path: "notes\u{0}.txt" })))
                .await,
        );
    }
    // Coercions a lenient server makes: null for a typed argument, a number as a string.
    let typed = |wanted: &[&str]| {
        schema
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|p| {
                p.iter().find(|(_, s)| {
                    s.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| wanted.contains(&t))
                })
            })
            .map(|(name, _)| name.clone())
    };
    if let Some(property) = typed(&["string", "integer", "number", "boolean", "array", "object"]) {
        seen.record(
            Probe::NullArgument,
            talk.call("tools/call", call(&name, json!({ property: null })))
                .await,
        );
    }
    if let Some(property) = typed(&["integer", "number"]) {
        seen.record(
            Probe::NumericString,
            talk.call("tools/call", call(&name, json!({ property: "5" })))
                .await,
        );
    }
    let invisible = format!("{name}\u{200b}");
    seen.record(
        Probe::InvisibleToolName,
        talk.call("tools/call", call(&invisible, json!({}))).await,
    );
    let mut shapeless = talk.request("tools/call", call(&name, json!({})));
    if let Some(body) = &shapeless.body
        && let Ok(mut message) = serde_json::from_str::<Value>(body)
    {
        message["params"] = json!([name, {}]);
        shapeless.body = Some(message.to_string());
        shapeless.label = "tools/call with params as an array".into();
        seen.record(Probe::ParamsArray, talk.http.send(&shapeless).await);
    }
    seen.record(
        Probe::AliveAfterValidation,
        talk.call("ping", json!({})).await,
    );
}

/// Whether a tool's name or annotations say it destroys things.
fn sounds_destructive(tool: &Value) -> bool {
    let name = tool["name"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    tool["annotations"]["destructiveHint"] == true
        || [
            "delete", "remove", "drop", "destroy", "purge", "wipe", "kill", "write", "move",
        ]
        .iter()
        .any(|word| name.contains(word))
}

/// A name one letter away from `name` (a hallucinated tool name).
fn near_miss(name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    match chars.last_mut() {
        Some(last) if last.is_ascii_alphabetic() => {
            *last = if *last == 's' { 'z' } else { 's' };
            chars.into_iter().collect()
        }
        _ => format!("{name}s"),
    }
}

/// Arguments for a call: each required property of `schema`, with a value its schema
/// accepts where one can be made up (see [`sample_value`]).
fn sample_arguments(schema: &Value) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let arguments = required
        .into_iter()
        .map(|name| (name.to_owned(), sample_value(&schema["properties"][name])))
        .collect();
    Value::Object(arguments)
}

/// A value `schema` accepts: its default, const, first example or enum value, else one
/// made from its type and bounds. Patterns and formats beyond a few are not solved;
/// the caller checks the result against the schema before sending it.
fn sample_value(schema: &Value) -> Value {
    for given in [
        &schema["default"],
        &schema["const"],
        &schema["examples"][0],
        &schema["enum"][0],
    ] {
        if !given.is_null() {
            return given.clone();
        }
    }
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .find(|k| *k != "null")
            .cloned()
            .unwrap_or_default(),
        kind => kind.clone(),
    };
    match kind.as_str() {
        Some("integer" | "number") => {
            let low = number("minimum")
                .or_else(|| number("exclusiveMinimum").map(|m| m.floor() + 1.0))
                .unwrap_or(1.0);
            let high =
                number("maximum").or_else(|| number("exclusiveMaximum").map(|m| m.ceil() - 1.0));
            let value = high.map_or(low, |high| low.min(high)).ceil();
            // Whole numbers fit both types; `as` saturates, and the caller validates.
            json!(value as i64)
        }
        Some("boolean") => json!(false),
        Some("array") => {
            let items =
                usize::try_from(schema.get("minItems").and_then(Value::as_u64).unwrap_or(0))
                    .unwrap_or(0);
            Value::Array(vec![sample_value(&schema["items"]); items.min(8)])
        }
        Some("object") => sample_arguments(schema),
        _ => {
            let text = match schema.get("format").and_then(Value::as_str) {
                Some("uri" | "url") => "https://example.com/".to_owned(),
                Some("email") => "warden@example.com".to_owned(),
                Some("date") => "2026-01-01".to_owned(),
                Some("date-time") => "2026-01-01T00:00:00Z".to_owned(),
                _ => {
                    let shortest = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                    let longest = schema
                        .get("maxLength")
                        .and_then(Value::as_u64)
                        .unwrap_or(64);
                    let length =
                        usize::try_from(shortest.max(6).min(longest).min(256)).unwrap_or(6);
                    "warden".chars().cycle().take(length).collect()
                }
            };
            json!(text)
        }
    }
}

/// Calls `--allow-calls` may make: at most this many tools, each once.
const MAX_ALLOWED_CALLS: usize = 20;

/// With `--allow-calls`: each read-only tool that does not sound destructive, once, with
/// arguments its own input schema accepts (checked before sending; a tool whose schema
/// no made-up value satisfies is not called).
async fn allowed_calls(talk: &mut Conversation<'_>, seen: &mut Observations) {
    let callable: Vec<(String, Value)> = seen
        .tools
        .iter()
        .filter(|tool| tool["annotations"]["readOnlyHint"] == true && !sounds_destructive(tool))
        .filter_map(|tool| {
            let schema = tool.get("inputSchema")?;
            let arguments = sample_arguments(schema);
            let accepted = jsonschema::validator_for(schema).is_ok_and(|v| v.is_valid(&arguments));
            accepted.then(|| {
                (
                    tool["name"].as_str().unwrap_or_default().to_owned(),
                    arguments,
                )
            })
        })
        .take(MAX_ALLOWED_CALLS)
        .collect();
    for (name, arguments) in callable {
        let answer = talk
            .call("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        seen.tool_calls.push((name, answer));
    }
}

async fn availability_probes(talk: &mut Conversation<'_>, seen: &mut Observations) {
    let requests: Vec<Request> = (0..PARALLEL)
        .map(|_| talk.request("tools/list", json!({})))
        .collect();
    let http = talk.http;
    seen.parallel = futures_util::future::join_all(requests.iter().map(|r| http.send(r))).await;
    // The burst goes last among the calls: a limit it meets would refuse what follows.
    for _ in 0..BURST {
        let answer = talk.call("ping", json!({})).await;
        let limited = answer.status == 429;
        seen.burst.push(answer);
        if limited {
            break;
        }
    }
}

/// Opens a connection and sends a request head one byte every second; a server that
/// keeps it open past [`SLOW_LORIS_LIMIT`] can be held by a few such clients.
async fn slow_loris(url: url::Url) -> Option<SlowLoris> {
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?.to_owned();
    let port = url.port_or_known_default()?;
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .ok()?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nX-Warden-Scan: ",
        url.path()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    while started.elapsed() < SLOW_LORIS_LIMIT {
        if stream.write_all(b"a").await.is_err() {
            return Some(SlowLoris::CutAfter(started.elapsed().as_secs()));
        }
        // Closed, or answered (a 408): either way the server let go.
        if let Ok(Ok(_) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await
        {
            return Some(SlowLoris::CutAfter(started.elapsed().as_secs()));
        }
    }
    Some(SlowLoris::StillOpen(started.elapsed().as_secs()))
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
}

/// Notes which answers echoed a secret, then takes the secrets (and anything shaped
/// like one) out of every answer kept as evidence.
fn redact(seen: &mut Observations, secrets: &[String]) {
    let mut echoed = Vec::new();
    let scrub = |exchange: &mut Exchange, echoed: &mut Vec<String>| {
        if secrets
            .iter()
            .any(|secret| exchange.body.contains(secret.as_str()))
        {
            echoed.push(exchange.request.clone());
        }
        for secret in secrets {
            if exchange.body.contains(secret.as_str()) {
                exchange.body = exchange.body.replace(secret.as_str(), "[REDACTED]");
            }
            for (_, value) in &mut exchange.headers {
                if value.contains(secret.as_str()) {
                    *value = value.replace(secret.as_str(), "[REDACTED]");
                }
            }
        }
        exchange.body = warden_redact::text(&exchange.body).into_owned();
        if let Some(message) = &mut exchange.message {
            warden_redact::json(message);
        }
    };
    for exchange in seen.exchanges_mut() {
        scrub(exchange, &mut echoed);
    }
    seen.echoed_secrets = echoed;
}
