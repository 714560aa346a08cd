//! Streamable HTTP, both eras on one endpoint. This module turns an HTTP request into a
//! decoded JSON-RPC message with its era settled (and, for the legacy era, its session),
//! and turns the outcome back into HTTP. What a method does is `dispatch`'s business.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde_json::{Map, Value};
use sha2::Digest as _;
use warden_proto::era::{
    CLIENT_CAPABILITIES_META, CLIENT_INFO_META, PROTOCOL_VERSION_META, meta_protocol_version,
};
use warden_proto::{EnvelopeError, Era, Message, ProtocolVersion, Request, RequestId, headers};
use warden_store::Principal;
use warden_telemetry::Trace;

use crate::audit::{AuditedNames, Draft, VerdictCell};
use crate::auth::Caller;
use crate::bench_layers::{Layer, skipped};
use crate::client_addr::ClientNetwork;
use crate::credentials;
use crate::dispatch;
use crate::error::{GatewayError, RpcError};
use crate::log::McpFacts;
use crate::relay;
use crate::session::{ClientFacts, Session, client_name};
use crate::state::AppState;

const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How a successful answer is framed, from what the client's `Accept` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyFormat {
    Json,
    EventStream,
}

/// Media ranges the client accepts, lower-cased, parameters and q=0 entries dropped.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next()?.to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.replace(' ', "").starts_with("q=0")
                    && !p.contains(|c: char| ('1'..='9').contains(&c))
            });
            (!media.is_empty() && !refused).then_some(media)
        })
        .collect()
}

fn allows(accepted: &[String], media: &str) -> bool {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    accepted
        .iter()
        .any(|a| a == media || a == "*/*" || *a == format!("{kind}/*"))
}

impl ReplyFormat {
    /// JSON when allowed, else an event stream; `None` when the client takes neither.
    fn negotiate(accepted: &[String]) -> Option<Self> {
        if allows(accepted, "application/json") {
            Some(Self::Json)
        } else if allows(accepted, "text/event-stream") {
            Some(Self::EventStream)
        } else {
            None
        }
    }

    fn encode(self, status: StatusCode, body: &Value) -> Response {
        match self {
            Self::Json => (status, axum::Json(body)).into_response(),
            Self::EventStream => (
                status,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        HeaderName::from_static("x-accel-buffering"),
                        HeaderValue::from_static("no"),
                    ),
                ],
                format!("event: message\ndata: {body}\n\n"),
            )
                .into_response(),
        }
    }
}

fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A refused upload is read and thrown away up to this much, so the client can see the
/// 413 instead of a reset connection; past it (or after `DRAIN_TIME`) the connection is cut.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads at most `limit` bytes. A body declared or found to be larger is refused without
/// being buffered.
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, GatewayError> {
    let declared = header_str(headers, &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|len| len <= limit as u64) {
        let mut buffer = Vec::with_capacity(declared.map_or(0, |len| len as usize));
        let mut fits = true;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| GatewayError::BodyRead)?.into_data() else {
                continue;
            };
            if buffer.len() + data.len() > limit {
                fits = false;
                break;
            }
            buffer.extend_from_slice(&data);
        }
        if fits {
            return Ok(buffer.into());
        }
    }
    discard(body).await;
    Err(GatewayError::PayloadTooLarge { limit })
}

async fn discard(mut body: Body) {
    let mut discarded = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            discarded += frame.data_ref().map_or(0, |d| d.len());
            if discarded > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// What a POST came to.
enum Outcome {
    /// A notification or a client's response: nothing to send back.
    Accepted,
    Reply {
        body: Value,
        session_id: Option<String>,
    },
    /// Messages relayed from upstream mid-call, then the response.
    Stream(futures_util::stream::BoxStream<'static, Value>),
}

pub(crate) async fn post(
    State(state): State<AppState>,
    axum::Extension(principal): Caller,
    network: Option<axum::Extension<ClientNetwork>>,
    trace: Option<axum::Extension<Trace>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let accepted = accepted(&headers);
    let Some(format) = ReplyFormat::negotiate(&accepted) else {
        return GatewayError::NotAcceptable.into_response();
    };
    let can_stream = allows(&accepted, "text/event-stream");
    let asker = Asker {
        principal: &principal,
        address: network.map(|axum::Extension(ClientNetwork(address))| address),
        trace: trace
            .map(|axum::Extension(trace)| trace)
            .unwrap_or_default(),
    };
    let (outcome, facts) = handle_post(&state, &asker, &headers, body, can_stream).await;
    let mut response = match outcome {
        Ok(Outcome::Accepted) => StatusCode::ACCEPTED.into_response(),
        Ok(Outcome::Reply { body, session_id }) => {
            let mut response = format.encode(StatusCode::OK, &body);
            if let Some(id) = session_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                response.headers_mut().insert(headers::SESSION_ID, id);
            }
            response
        }
        Ok(Outcome::Stream(messages)) => event_stream(messages),
        // A legacy method error travels in a 200 and is framed like any answer; every
        // other refusal is plain JSON with its own status.
        Err(error) if error.status() == StatusCode::OK => {
            format.encode(StatusCode::OK, &error.body())
        }
        Err(error) => error.into_response(),
    };
    if let Some(facts) = facts {
        response.extensions_mut().insert(facts);
    }
    response
}

/// An SSE answer to one POST: each message an event, the connection closed after the last.
fn event_stream(messages: futures_util::stream::BoxStream<'static, Value>) -> Response {
    use futures_util::StreamExt as _;
    let events = messages.map(|message| {
        Ok::<_, Infallible>(
            axum::response::sse::Event::default()
                .event("message")
                .data(message.to_string()),
        )
    });
    let mut response = Sse::new(events).into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

/// Who sends a request, and from where; the request's trace (empty when off).
struct Asker<'a> {
    principal: &'a Principal,
    address: Option<IpAddr>,
    trace: Trace,
}

async fn handle_post(
    state: &AppState,
    asker: &Asker<'_>,
    headers: &HeaderMap,
    body: Body,
    can_stream: bool,
) -> (Result<Outcome, GatewayError>, Option<McpFacts>) {
    let trace = &asker.trace;
    let mut span = trace.span("warden.transport");
    let (message, bytes) = match decode(state, headers, body).await {
        Ok(decoded) => decoded,
        Err(error) => {
            span.refuse("transport", error.rule());
            return (Err(error), None);
        }
    };
    span.set(
        "warden.request_bytes",
        i64::try_from(bytes).unwrap_or(i64::MAX),
    );
    drop(span);
    let era = era_of(headers, &message);
    describe_in_trace(trace, headers, &message, era);
    let verdict = VerdictCell::default();
    let facts = match &message {
        Message::Request(req) => Some(McpFacts {
            method: req.method.clone(),
            era: era.as_str(),
            verdict: verdict.clone(),
        }),
        Message::Notification { method, .. } => Some(McpFacts {
            method: method.clone(),
            era: era.as_str(),
            verdict: verdict.clone(),
        }),
        Message::Response(_) => None,
    };
    // From here on every message has an audit record when it is refused, and every
    // request when it runs.
    let principal = asker.principal;
    let draft = state
        .auditor()
        .begin(principal, era, &message, bytes)
        .reporting_to(verdict)
        .traced(trace);
    // Credentials belong in the header, in no message a client sends: not a request,
    // nor a notification, nor an answer that would go on to an upstream.
    if credentials::in_message(&message) {
        let id = match &message {
            Message::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        return (
            refuse(draft, GatewayError::CredentialsInBody { id }).await,
            facts,
        );
    }
    // The store has been away long enough to fill the audit queue: nothing runs
    // unaudited. (This refusal cannot be queued either; the log counts it.)
    if state.auditor().is_backed_up() {
        draft.discard();
        tracing::warn!("request refused: the audit queue is full while the store is away");
        return (Err(GatewayError::StoreUnavailable), facts);
    }
    let outcome = match era {
        Era::Modern => modern(state, asker, headers, message, can_stream, draft).await,
        Era::Legacy => legacy(state, asker, headers, message, can_stream, draft).await,
    };
    (outcome, facts)
}

/// The request's span learns what the message is: its parent from `params._meta` if
/// the headers named none, and the MCP conventions' name and attributes (method,
/// target, request id, protocol version, session). Never its arguments.
fn describe_in_trace(trace: &Trace, headers: &HeaderMap, message: &Message, era: Era) {
    let (method, params, id) = match message {
        Message::Request(request) => (&request.method, Some(&request.params), Some(&request.id)),
        Message::Notification { method, params } => (method, Some(params), None),
        Message::Response(_) => {
            trace.adopt_meta(None);
            return;
        }
    };
    trace.adopt_meta(params);
    if !trace.is_sampled() {
        return;
    }
    // What the client chose is cut short and redacted, as in the audit record.
    let chosen =
        |text: &str| warden_redact::text(&text.chars().take(128).collect::<String>()).into_owned();
    let target = params
        .and_then(|params| params.get("name"))
        .and_then(Value::as_str)
        .filter(|_| matches!(method.as_str(), "tools/call" | "prompts/get"))
        .map(chosen);
    let method_name = chosen(method);
    trace.rename(match &target {
        Some(target) => format!("{method_name} {target}"),
        None => method_name.clone(),
    });
    trace.set("mcp.method.name", method_name);
    match id {
        Some(RequestId::Number(id)) => trace.set("jsonrpc.request.id", id.to_string()),
        Some(RequestId::String(id)) => trace.set("jsonrpc.request.id", chosen(id)),
        None => {}
    }
    let version = params
        .and_then(meta_protocol_version)
        .and_then(Value::as_str)
        .or_else(|| header_str(headers, &headers::PROTOCOL_VERSION))
        .and_then(ProtocolVersion::parse);
    if let Some(version) = version {
        trace.set("mcp.protocol.version", version.as_str());
    }
    trace.set("warden.era", era.as_str());
    if let Some(session) = header_str(headers, &headers::SESSION_ID) {
        // A digest: the id itself opens the session to whoever also holds the key.
        let digest = sha2::Sha256::digest(session.as_bytes());
        trace.set("mcp.session.id", hex::encode(&digest[..8]));
    }
    match (method.as_str(), target) {
        ("tools/call", Some(tool)) => {
            trace.set("gen_ai.operation.name", "execute_tool");
            trace.set("gen_ai.tool.name", tool);
        }
        ("prompts/get", Some(prompt)) => trace.set("gen_ai.prompt.name", prompt),
        _ => {}
    }
}

/// A refusal of the transport, recorded like any other.
async fn refuse(draft: Draft, error: GatewayError) -> Result<Outcome, GatewayError> {
    draft.refuse(&error).await;
    Err(error)
}

/// The message, and the size of the body it came in.
async fn decode(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Message, usize), GatewayError> {
    if !is_json_content(headers) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    // A body trickled in a byte at a time would hold a worker and the connection.
    let timeout = state.body_read_timeout();
    let caps = state.body_caps();
    let bytes = tokio::time::timeout(timeout, read_body(headers, body, caps.max_bytes))
        .await
        .map_err(|_| GatewayError::BodyTimeout {
            limit_ms: timeout.as_millis(),
        })??;
    // Caps on depth, sizes and duplicate keys hold before any tree is built.
    if !skipped(Layer::Scan) {
        warden_proto::scan::scan(&bytes, &caps.json).map_err(|scanned| GatewayError::Envelope {
            id: EnvelopeError::scanned_id(&bytes, &scanned),
            error: EnvelopeError::Caps {
                fault: scanned.fault,
                in_params: scanned.in_params,
            },
        })?;
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| GatewayError::Envelope {
        error: EnvelopeError::Parse,
        id: None,
    })?;
    let id = EnvelopeError::answer_id(&value);
    let message =
        Message::from_value(value).map_err(|error| GatewayError::Envelope { error, id })?;
    Ok((message, bytes.len()))
}

/// A request is modern when its `_meta` names a protocol version, or when its
/// `MCP-Protocol-Version` header names one that is not a legacy revision. `initialize`
/// always selects the legacy era.
fn era_of(headers: &HeaderMap, message: &Message) -> Era {
    let params = match message {
        Message::Request(req) if req.method == "initialize" => return Era::Legacy,
        Message::Request(req) => Some(&req.params),
        Message::Notification { params, .. } => Some(params),
        Message::Response(_) => None,
    };
    if params.and_then(meta_protocol_version).is_some() {
        return Era::Modern;
    }
    match header_str(headers, &headers::PROTOCOL_VERSION) {
        Some(version) if ProtocolVersion::parse(version).is_none_or(|v| v.era() == Era::Modern) => {
            Era::Modern
        }
        _ => Era::Legacy,
    }
}

// ---- the 2026-07-28 era: stateless, every request describes itself ----

async fn modern(
    state: &AppState,
    asker: &Asker<'_>,
    headers: &HeaderMap,
    message: Message,
    can_stream: bool,
    draft: Draft,
) -> Result<Outcome, GatewayError> {
    let request = match message {
        // Notifications are acknowledged; this revision defines none that need action.
        Message::Notification { .. } => {
            draft.discard();
            return Ok(Outcome::Accepted);
        }
        Message::Response(_) => return refuse(draft, GatewayError::ResponseNotAccepted).await,
        Message::Request(request) => request,
    };
    if let Err(error) = check_modern_request(headers, &request) {
        return refuse(draft, error).await;
    }
    let call = Call {
        era: Era::Modern,
        session: None,
        request,
        can_stream,
        draft,
    };
    execute(state, asker, call).await
}

/// A request on its way to `execute`.
struct Call {
    era: Era,
    session: Option<Arc<Session>>,
    request: Request,
    can_stream: bool,
    /// Its audit record, finished with its outcome.
    draft: Draft,
}

/// Runs a request (see `relay`) and frames its answer.
async fn execute(state: &AppState, asker: &Asker<'_>, call: Call) -> Result<Outcome, GatewayError> {
    let principal = asker.principal;
    let Call {
        era,
        session,
        request,
        can_stream,
        mut draft,
    } = call;
    let id = request.id.clone();
    let client = match &session {
        Some(session) => session.client.name.clone(),
        None => client_name(
            request
                .params
                .get("_meta")
                .and_then(|meta| meta.get(CLIENT_INFO_META)),
        ),
    };
    let instance = match &session {
        Some(session) => session.id.clone(),
        None => format!("{}/{client}", principal.key_id),
    };
    match &session {
        Some(session) => draft.identify(session.audited_names()),
        None => draft.identify(&AuditedNames::of(&instance, &client)),
    }
    // Rate limit per key: every request counts, notifications and answers do not.
    if let Err(refusal) = crate::limits::admit_request(state.limiter(), principal).await {
        let error = RpcError::rate_limited(&refusal);
        let refused = Err(error);
        draft.finish(&refused).await;
        return finish(id, era, refused, None);
    }
    let run = relay::Run {
        state: state.clone(),
        principal: principal.clone(),
        address: asker.address,
        client,
        era,
        session,
        instance,
        request,
        can_stream,
        audit: draft,
    };
    match relay::run(run).await {
        relay::Answer::Done(result) => finish(id, era, result, None),
        relay::Answer::Stream(messages) => Ok(Outcome::Stream(messages)),
    }
}

/// The transport rules of a modern request, in the order the spec lists them: version
/// header present and supported, `_meta` complete and agreeing with it, routing headers
/// agreeing with the body.
fn check_modern_request(headers: &HeaderMap, request: &Request) -> Result<(), GatewayError> {
    let id = Some(request.id.clone());
    let mismatch = |mismatch| GatewayError::HeaderMismatch {
        id: id.clone(),
        mismatch,
    };
    let header_version = header_str(headers, &headers::PROTOCOL_VERSION)
        .ok_or_else(|| mismatch(headers::HeaderMismatch::MissingVersion))?;
    if ProtocolVersion::parse(header_version).is_none_or(|v| v.era() != Era::Modern) {
        return Err(GatewayError::UnsupportedVersion {
            id: id.clone(),
            requested: header_version.to_owned(),
        });
    }
    let invalid = |message: &str| GatewayError::Rpc {
        id: request.id.clone(),
        era: Era::Modern,
        error: Box::new(RpcError::invalid_params(message)),
    };
    let meta: &Map<String, Value> = request
        .params
        .get("_meta")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("params._meta is required in protocol 2026-07-28"))?;
    let meta_version = meta
        .get(PROTOCOL_VERSION_META)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("params._meta must name io.modelcontextprotocol/protocolVersion"))?;
    if meta_version != header_version {
        return Err(mismatch(headers::HeaderMismatch::Version));
    }
    if !meta
        .get(CLIENT_CAPABILITIES_META)
        .is_some_and(Value::is_object)
    {
        return Err(invalid(
            "params._meta must carry io.modelcontextprotocol/clientCapabilities",
        ));
    }
    headers::check(
        header_str(headers, &headers::METHOD),
        header_str(headers, &headers::NAME),
        &request.method,
        &request.params,
    )
    .map_err(mismatch)
}

// ---- the legacy eras: initialize, then a session ----

async fn legacy(
    state: &AppState,
    asker: &Asker<'_>,
    headers: &HeaderMap,
    message: Message,
    can_stream: bool,
    draft: Draft,
) -> Result<Outcome, GatewayError> {
    let principal = asker.principal;
    if let Message::Request(request) = &message
        && request.method == "initialize"
    {
        return initialize(state, principal, headers, request, draft).await;
    }
    let request_id = match &message {
        Message::Request(request) => Some(request.id.clone()),
        _ => None,
    };
    let session = match header_str(headers, &headers::SESSION_ID) {
        Some(id) => state.sessions().get(id, &principal.key_id).await,
        None => Err(GatewayError::MissingSession),
    };
    let session = match session {
        Ok(session) => session,
        Err(error) => return refuse(draft, error).await,
    };
    // Any legacy revision is accepted on a session (clients probe with older ones); a
    // 2026-07-28 header never reaches here.
    if let Some(version) = header_str(headers, &headers::PROTOCOL_VERSION)
        && ProtocolVersion::parse(version).is_none_or(|v| v.era() != Era::Legacy)
    {
        return refuse(draft, GatewayError::LegacyVersionHeader { id: request_id }).await;
    }
    match message {
        Message::Notification { method, params } => {
            draft.discard();
            match method.as_str() {
                "notifications/cancelled" => {
                    if let Some(id) = params.get("requestId").and_then(request_id_key) {
                        session.cancel(&id);
                    }
                }
                "notifications/progress" => session.forward_progress(params),
                _ => {}
            }
            Ok(Outcome::Accepted)
        }
        Message::Response(response) => {
            draft.discard();
            // The client's answer to a request an upstream sent it, held here or (in a
            // cluster) by the replica its id names.
            if let RequestId::String(id) = &response.id {
                match session.take_request(id) {
                    Some(request) => request.respond(response.outcome),
                    None => {
                        crate::remote::pass_answer(
                            state,
                            &session,
                            principal,
                            id,
                            response.outcome,
                        )
                        .await;
                    }
                }
            }
            Ok(Outcome::Accepted)
        }
        Message::Request(request) => {
            let call = Call {
                era: Era::Legacy,
                session: Some(session),
                request,
                can_stream,
                draft,
            };
            execute(state, asker, call).await
        }
    }
}

/// A request id from a `notifications/cancelled`, as the key its request is tracked by.
fn request_id_key(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) => n.as_i64().map(|n| RequestId::Number(n).key()),
        Value::String(s) => Some(RequestId::String(s.clone()).key()),
        _ => None,
    }
}

async fn initialize(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    request: &Request,
    draft: Draft,
) -> Result<Outcome, GatewayError> {
    let id = request.id.clone();
    let rpc = |error: RpcError| GatewayError::Rpc {
        id: id.clone(),
        era: Era::Legacy,
        error: Box::new(error),
    };
    // An open session is not initialized again (that would mint a second one under the
    // first one's name); an unknown or expired id is a client starting afresh.
    if let Some(existing) = header_str(headers, &headers::SESSION_ID) {
        match state.sessions().is_open(existing, &principal.key_id).await {
            Ok(true) => return refuse(draft, GatewayError::AlreadyInitialized { id }).await,
            Ok(false) => {}
            Err(error) => return refuse(draft, error).await,
        }
    }
    let params = &request.params;
    let (Some(requested), Some(capabilities), Some(client_info)) = (
        params.get("protocolVersion").and_then(Value::as_str),
        params.get("capabilities").filter(|c| c.is_object()),
        params.get("clientInfo").filter(|c| c.is_object()),
    ) else {
        let error = RpcError::invalid_params(
            "initialize needs params.protocolVersion (a string), params.capabilities and params.clientInfo (objects)",
        );
        return refuse(draft, rpc(error)).await;
    };
    // Opening a session counts against the key's rate like any other request.
    if let Err(refusal) = crate::limits::admit_request(state.limiter(), principal).await {
        return refuse(draft, rpc(RpcError::rate_limited(&refusal))).await;
    }
    let version = ProtocolVersion::negotiate_legacy(Some(requested));
    let client = ClientFacts::from_initialize(capabilities, client_info);
    let session = match state
        .sessions()
        .create(&principal.key_id, client, version.as_str())
        .await
    {
        Ok(session) => session,
        Err(error) => return refuse(draft, error).await,
    };
    draft.discard();
    tracing::debug!(version = version.as_str(), "session opened");
    let result = dispatch::initialize_result(state, version);
    finish(
        request.id.clone(),
        Era::Legacy,
        Ok(result),
        Some(session.id.clone()),
    )
}

fn finish(
    id: RequestId,
    era: Era,
    result: Result<Value, RpcError>,
    session_id: Option<String>,
) -> Result<Outcome, GatewayError> {
    match result {
        Ok(result) => Ok(Outcome::Reply {
            body: warden_proto::envelope::result_body(&id, result),
            session_id,
        }),
        Err(error) => Err(GatewayError::Rpc {
            id,
            era,
            error: Box::new(error),
        }),
    }
}

/// GET opens a legacy session's stream for server-to-client messages. The
/// 2026-07-28 protocol has no such stream, so a GET without a session is refused with 405.
pub(crate) async fn get(
    State(state): State<AppState>,
    axum::Extension(principal): Caller,
    headers: HeaderMap,
) -> Response {
    let stream = async {
        if !allows(&accepted(&headers), "text/event-stream") {
            return Err(GatewayError::StreamNotAcceptable);
        }
        let session_id =
            header_str(&headers, &headers::SESSION_ID).ok_or(GatewayError::StreamWithoutSession)?;
        let session = state.sessions().get(session_id, &principal.key_id).await?;
        let slot = state
            .limiter()
            .open_stream(&principal.key_id)
            .map_err(crate::limits::refused)?;
        let claim = session.open_stream()?;
        // List changes and resource updates arrive here; the stream stays open (with
        // keep-alives) until the session ends or the client goes away.
        // The key's stream slot lives as long as the stream.
        let events = futures_util::stream::unfold((claim, slot), |(mut claim, slot)| async move {
            let message = claim.next().await?;
            let event = axum::response::sse::Event::default()
                .event("message")
                .data(message.to_string());
            Some((Ok::<_, Infallible>(event), (claim, slot)))
        });
        Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE)))
    };
    match stream.await {
        Ok(sse) => sse.into_response(),
        Err(error) => error.into_response(),
    }
}

/// DELETE ends a legacy session; its id then answers 404.
pub(crate) async fn delete(
    State(state): State<AppState>,
    axum::Extension(principal): Caller,
    headers: HeaderMap,
) -> Response {
    let result = match header_str(&headers, &headers::SESSION_ID) {
        Some(id) => state.sessions().remove(id, &principal.key_id).await,
        None => Err(GatewayError::MissingSession),
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn accept_negotiation() {
        let format =
            |accept: &str| ReplyFormat::negotiate(&accepted(&headers(&[("accept", accept)])));
        assert_eq!(
            format("application/json, text/event-stream"),
            Some(ReplyFormat::Json)
        );
        assert_eq!(format("text/event-stream"), Some(ReplyFormat::EventStream));
        assert_eq!(format("*/*"), Some(ReplyFormat::Json));
        assert_eq!(
            format("application/json;q=0, text/event-stream"),
            Some(ReplyFormat::EventStream)
        );
        assert_eq!(format("text/html"), None);
        assert_eq!(ReplyFormat::negotiate(&accepted(&HeaderMap::new())), None);
    }

    #[test]
    fn era_follows_meta_and_header() {
        let request = |params: Value| {
            Message::from_value(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}),
            )
            .unwrap()
        };
        let modern_meta = json!({"_meta": {PROTOCOL_VERSION_META: "2026-07-28"}});
        assert_eq!(
            era_of(&HeaderMap::new(), &request(modern_meta)),
            Era::Modern
        );
        assert_eq!(
            era_of(
                &headers(&[("mcp-protocol-version", "2026-07-28")]),
                &request(json!({}))
            ),
            Era::Modern
        );
        assert_eq!(
            era_of(
                &headers(&[("mcp-protocol-version", "2031-01-01")]),
                &request(json!({}))
            ),
            Era::Modern
        );
        assert_eq!(
            era_of(
                &headers(&[("mcp-protocol-version", "2025-11-25")]),
                &request(json!({}))
            ),
            Era::Legacy
        );
        assert_eq!(era_of(&HeaderMap::new(), &request(json!({}))), Era::Legacy);
        let init = Message::from_value(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}))
            .unwrap();
        assert_eq!(
            era_of(&headers(&[("mcp-protocol-version", "2026-07-28")]), &init),
            Era::Legacy
        );
    }
}
