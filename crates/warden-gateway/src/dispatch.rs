//! What each MCP method does, once the transport has settled who is calling and in
//! which era. Warden answers the protocol's own methods; everything else is checked
//! (catalogue, scope, argument schema) and routed to the upstream that owns it.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use warden_config::{Confirm, OutputCheck};
use warden_limits::Call;
use warden_policy::rules::{RequestFacts, Target, Verdict};

use crate::bench_layers::{Layer, skipped};
use warden_policy::{CatalogueTool, Hardening, PolicyError, ToolKind, harden_message};
use warden_proto::era::{CLIENT_CAPABILITIES_META, SERVER_INFO_META};
use warden_proto::{Era, ProtocolVersion, Request, codes};
use warden_store::Principal;
use warden_telemetry::{MetaInjector, Trace};
use warden_upstream::{Caller, Event, ListError, Offered, Upstream, UriRoute};

use crate::answer::{hardening, never_reached, unavailable, upstream_failed, upstream_result};
use crate::audit::{PendingCell, PolicyCell, UpstreamUsed};
use crate::confirm::{self, Confirmation};
use crate::error::RpcError;
use crate::input_required;
use crate::policy;
use crate::session::{KEPT_CAPABILITIES, Session};
use crate::state::AppState;

const SERVER_NAME: &str = "warden";

fn server_info() -> Value {
    json!({ "name": SERVER_NAME, "title": "Warden", "version": env!("CARGO_PKG_VERSION") })
}

/// The `initialize` result for a legacy session.
pub(crate) fn initialize_result(state: &AppState, version: ProtocolVersion) -> Value {
    let mut result = json!({
        "protocolVersion": version.as_str(),
        "capabilities": state.upstreams().capabilities(),
        "serverInfo": server_info(),
    });
    if let Some(instructions) = instructions(state) {
        result["instructions"] = instructions.into();
    }
    result
}

/// The upstreams' instructions, each hardened like anything else its upstream says.
fn instructions(state: &AppState) -> Option<String> {
    state.upstreams().instructions(|upstream, text| {
        if let Some(hardening) = hardening(&state.results(), upstream, None) {
            let mut message = json!({ "instructions": std::mem::take(text) });
            harden_message(&mut message, &hardening);
            if let Value::String(hardened) = message["instructions"].take() {
                *text = hardened;
            }
        }
    })
}

fn discover_result(state: &AppState) -> Value {
    let mut result = json!({
        "supportedVersions": ProtocolVersion::ALL.map(ProtocolVersion::as_str),
        "capabilities": state.upstreams().capabilities(),
    });
    if let Some(instructions) = instructions(state) {
        result["instructions"] = instructions.into();
    }
    result
}

/// Who is asking, in which era, and where messages sent mid-call should go.
pub(crate) struct Context<'a> {
    pub principal: &'a Principal,
    /// The client's address, when the listener knows it, and its name: for policies.
    pub address: Option<std::net::IpAddr>,
    pub client: String,
    /// The legacy session, or the modern client (key and client name), that per-session
    /// call limits count against.
    pub instance: String,
    /// Set to the upstream's name when a call is sent to it (for the audit record).
    pub upstream_used: UpstreamUsed,
    /// Set when the call waits for a person instead of running (for the audit record).
    pub pending: PendingCell,
    /// Set to the policies that allowed a call (for the audit record and the log).
    pub allowed_by: PolicyCell,
    /// The request's trace: the layers below record their spans in it.
    pub trace: Trace,
    pub era: Era,
    pub session: Option<&'a Arc<Session>>,
    pub events: Option<mpsc::Sender<Event>>,
}

impl Context<'_> {
    fn caller(&self) -> Caller<'_> {
        Caller {
            tenant: &self.principal.tenant,
            author: &self.principal.key_id,
        }
    }

    /// The request as policies see it, with what this session has met so far. Where
    /// that cannot be known (Redis away), the session counts as having read untrusted
    /// text and private data: reads go on, writes need a person.
    async fn request_facts(&self, state: &AppState) -> RequestFacts {
        let session = state
            .policy()
            .session(&self.principal.tenant, &self.instance)
            .await;
        policy::request_facts(self.era, &self.client, self.address, session)
    }

    /// Records that what `upstream` (or its tool) returned reached this session. A
    /// result carrying untrusted text or private data whose reading cannot be recorded
    /// is withheld: the session's next call would be decided as if it had not been
    /// read. (Counting calls and tools is not worth a refusal.)
    async fn record_flow(
        &self,
        state: &AppState,
        tool: Option<&str>,
        returns: warden_config::Returns,
    ) -> Result<(), RpcError> {
        let recorded = state
            .policy()
            .record(&self.principal.tenant, &self.instance, tool, returns)
            .await;
        match recorded {
            Err(_) if returns.untrusted || returns.private => Err(RpcError::flow_unrecorded()),
            _ => Ok(()),
        }
    }

    /// Records what a result brought into this session: what `upstream` (or its tool)
    /// returns, and untrusted text wherever the upstream marked another's text. The
    /// mark is taken off here, before the client sees the result.
    async fn record_result(
        &self,
        state: &AppState,
        (upstream, tool): (&Upstream, Option<&str>),
        mut returns: warden_config::Returns,
        result: &mut Value,
    ) -> Result<(), RpcError> {
        returns.untrusted |= upstream.take_foreign_mark(result);
        self.record_flow(state, tool, returns).await
    }
}

/// Runs one request and returns its `result`, shaped for the caller's era.
pub(crate) async fn handle(
    state: &AppState,
    context: Context<'_>,
    request: &Request,
) -> Result<Value, RpcError> {
    let params = &request.params;
    let era = context.era;
    let upstreams = state.upstreams();
    // A method of a capability Warden did not declare does not exist here.
    if let Some(capability) = capability_of(&request.method)
        && !declared(&upstreams.capabilities(), capability)
    {
        return Err(RpcError::method_not_found());
    }
    let result = match (request.method.as_str(), era) {
        ("ping", Era::Legacy) => return Ok(json!({})),
        // Log levels are per client here; a shared upstream is not reconfigured by one.
        ("logging/setLevel", Era::Legacy) => {
            let level = required_str(params, "level")?;
            if let Some(session) = context.session {
                session.set_log_level(&level);
            }
            return Ok(json!({}));
        }
        ("server/discover", Era::Modern) => discover_result(state),
        ("tools/list", _) => {
            no_cursor(params)?;
            // A list shows what the policies could permit this caller to call.
            let catalogue = upstreams.catalogue();
            let policies = state.policy().current();
            let principal = policy::principal_facts(context.principal);
            let request = context.request_facts(state).await;
            let tools: Vec<&Value> = catalogue
                .visible(ToolKind::Destructive)
                .filter(|tool| {
                    upstreams
                        .get(tool.origin().upstream)
                        .is_some_and(|upstream| {
                            policies.could_call(
                                &principal,
                                &policy::tool_facts(tool, &upstream),
                                &request,
                            )
                        })
                })
                .map(|t| t.definition())
                .collect();
            json!({ "tools": tools })
        }
        // Boxed, as the upstream exchange in `forward`: a future holds all it awaits, and
        // one built on the stack is copied into its caller's; unboxed, this one and those
        // around it came to tens of kilobytes copied several times a call.
        ("tools/call", _) => Box::pin(call_tool(state, &context, params)).await?,
        ("prompts/list" | "resources/list" | "resources/templates/list", _) => {
            let cursor = optional_str(params, "cursor")?;
            let page = upstreams
                .list(context.caller(), &request.method, cursor.as_deref())
                .await
                .map_err(|error| match error {
                    ListError::Cursor => RpcError::invalid_params("Invalid cursor"),
                    ListError::Upstream(error) => unavailable(&error),
                })?;
            let mut result = page.result;
            let from = page.from.and_then(|index| upstreams.get(index));
            if let Some(upstream) = &from {
                listed_by_policy(state, &context, &request.method, upstream, &mut result).await?;
                // Another key's note titles are text this session did not write.
                if upstream.take_foreign_mark(&mut result) {
                    let returns = warden_config::Returns {
                        untrusted: true,
                        private: false,
                    };
                    context.record_flow(state, None, returns).await?;
                }
            }
            if let Some(hardening) = from.and_then(|u| hardening(&state.results(), &u, None)) {
                harden_message(&mut result, &hardening);
            }
            result
        }
        ("prompts/get", _) => {
            let listed = required_str(params, "name")?;
            let (index, name) = upstreams.route_name(&listed).ok_or_else(unknown_prompt)?;
            prompt_offered(state, &context, index, &name).await?;
            let upstream = upstreams.get(index).ok_or_else(RpcError::internal)?;
            let prompt = Target::Prompt {
                name: &listed,
                upstream: upstream.name(),
            };
            allowed_by_policy(state, &context, "get_prompt", &prompt, unknown_prompt).await?;
            let mut params = params.clone();
            params.insert("name".into(), name.into());
            let result = forward(state, &context, index, &request.method, params, None).await?;
            context
                .record_flow(state, None, returns_of_upstream(&upstream))
                .await?;
            result
        }
        ("resources/read", _) | ("resources/subscribe" | "resources/unsubscribe", Era::Legacy) => {
            let uri = required_str(params, "uri")?;
            // A URI goes only to the one upstream that listed it for this tenant or
            // whose template it fits.
            let index = owner_of(state, &context, &uri, era).await?;
            let upstream = upstreams.get(index).ok_or_else(RpcError::internal)?;
            let resource = Target::Resource {
                uri: &uri,
                upstream: upstream.name(),
            };
            allowed_by_policy(state, &context, "read_resource", &resource, || {
                resource_not_found(era)
            })
            .await?;
            let mut result = forward(
                state,
                &context,
                index,
                &request.method,
                params.clone(),
                None,
            )
            .await?;
            if request.method == "resources/read" {
                let returns = returns_of_upstream(&upstream);
                context
                    .record_result(state, (&upstream, None), returns, &mut result)
                    .await?;
            }
            if let Some(session) = context.session {
                match request.method.as_str() {
                    "resources/subscribe" => session.subscribe(&uri),
                    "resources/unsubscribe" => session.unsubscribe(&uri),
                    _ => {}
                }
            }
            result
        }
        ("completion/complete", _) => {
            let mut params = params.clone();
            let index = route_completion(state, &context, &mut params).await?;
            let prompt = params
                .get("ref")
                .filter(|r| r["type"] == "ref/prompt")
                .and_then(|r| r["name"].as_str());
            if let Some(prompt) = prompt {
                prompt_offered(state, &context, index, prompt).await?;
            }
            let upstream = upstreams.get(index).ok_or_else(RpcError::internal)?;
            let target = match prompt {
                Some(name) => Target::Prompt {
                    name,
                    upstream: upstream.name(),
                },
                None => Target::Resource {
                    uri: params
                        .get("ref")
                        .and_then(|r| r.get("uri"))
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    upstream: upstream.name(),
                },
            };
            allowed_by_policy(state, &context, "complete", &target, || {
                RpcError::refusal(
                    codes::INVALID_PARAMS,
                    "Unknown reference",
                    "policy.no_permit",
                )
            })
            .await?;
            forward(state, &context, index, &request.method, params, None).await?
        }
        _ => return Err(RpcError::method_not_found()),
    };
    Ok(shape_for_era(era, &request.method, result))
}

/// The server capability (and the flag within it, if any) a method belongs to.
fn capability_of(method: &str) -> Option<(&'static str, Option<&'static str>)> {
    match method {
        "prompts/list" | "prompts/get" => Some(("prompts", None)),
        "resources/list" | "resources/templates/list" | "resources/read" => {
            Some(("resources", None))
        }
        "resources/subscribe" | "resources/unsubscribe" => Some(("resources", Some("subscribe"))),
        "completion/complete" => Some(("completions", None)),
        "logging/setLevel" => Some(("logging", None)),
        _ => None,
    }
}

fn declared(capabilities: &Value, (name, flag): (&str, Option<&str>)) -> bool {
    let Some(capability) = capabilities.get(name) else {
        return false;
    };
    flag.is_none_or(|flag| capability.get(flag) == Some(&Value::Bool(true)))
}

/// Results travel in the caller's era. Modern results say they are complete, how long
/// they may be cached (not at all: upstream data changes) and by whom (this caller
/// only), and who answered; legacy results carry none of that.
fn shape_for_era(era: Era, method: &str, mut result: Value) -> Value {
    let Some(object) = result.as_object_mut() else {
        return result;
    };
    match era {
        Era::Modern => {
            object
                .entry("resultType")
                .or_insert_with(|| "complete".into());
            if matches!(
                method,
                "server/discover"
                    | "tools/list"
                    | "prompts/list"
                    | "resources/list"
                    | "resources/templates/list"
                    | "resources/read"
            ) {
                object.entry("ttlMs").or_insert_with(|| 0.into());
                object
                    .entry("cacheScope")
                    .or_insert_with(|| "private".into());
            }
            let meta = object
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(SERVER_INFO_META.into(), server_info());
            }
        }
        Era::Legacy => {
            for field in ["resultType", "ttlMs", "cacheScope"] {
                object.remove(field);
            }
            if let Some(Value::Object(meta)) = object.get_mut("_meta") {
                meta.remove(SERVER_INFO_META);
                if meta.is_empty() {
                    object.remove("_meta");
                }
            }
        }
    }
    result
}

fn unknown_prompt() -> RpcError {
    RpcError::refusal(
        codes::INVALID_PARAMS,
        "Unknown prompt",
        "catalogue.unknown_prompt",
    )
}

/// A prompt the upstream does not list is refused without reaching it.
async fn prompt_offered(
    state: &AppState,
    context: &Context<'_>,
    index: usize,
    name: &str,
) -> Result<(), RpcError> {
    let offered = state
        .upstreams()
        .offers(index, context.caller(), Offered::Prompt, name)
        .await
        .map_err(|error| unavailable(&error))?;
    if offered {
        Ok(())
    } else {
        Err(unknown_prompt())
    }
}

/// The upstream that owns `uri` for the caller's tenant.
async fn owner_of(
    state: &AppState,
    context: &Context<'_>,
    uri: &str,
    era: Era,
) -> Result<usize, RpcError> {
    match state
        .upstreams()
        .route_uri(context.caller(), uri)
        .await
        .map_err(|error| unavailable(&error))?
    {
        UriRoute::Owner(index) => Ok(index),
        UriRoute::Unknown => Err(resource_not_found(era)),
        UriRoute::Contested => Err(RpcError::refusal(
            codes::INVALID_PARAMS,
            "Resource not available: more than one upstream claims it",
            "catalogue.contested_resource",
        )),
    }
}

fn resource_not_found(era: Era) -> RpcError {
    let code = match era {
        Era::Legacy => codes::RESOURCE_NOT_FOUND,
        Era::Modern => codes::INVALID_PARAMS,
    };
    RpcError::refusal(code, "Resource not found", "catalogue.unknown_resource")
}

async fn call_tool(
    state: &AppState,
    context: &Context<'_>,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let name = required_str(params, "name")?;
    let catalogue = state.upstreams().catalogue();
    // The tool, its arguments against its schema, and the policies' decision: the
    // trace's `warden.validate` span.
    let mut span = context.trace.span("warden.validate");
    let no_arguments = Value::Object(Map::new());
    let decided = async {
        let arguments = match params.get("arguments") {
            None => &no_arguments,
            Some(arguments @ Value::Object(_)) => arguments,
            Some(_) => {
                return Err(RpcError::invalid_params(
                    "params.arguments must be an object",
                ));
            }
        };
        let tool = catalogue
            .lookup(&name, ToolKind::Destructive)
            .map_err(policy_error)?;
        let upstream = state
            .upstreams()
            .get(tool.origin().upstream)
            .ok_or_else(RpcError::internal)?;
        let policies = state.policy().current();
        let (principal, facts, request) = (
            policy::principal_facts(context.principal),
            policy::tool_facts(tool, &upstream),
            context.request_facts(state).await,
        );
        // A tool no arguments could unlock is refused as if its arguments had not been
        // looked at: by the forbids that hide it, or, when nothing permits it, as unknown
        // as one that does not exist (not even an argument error reveals it). Asked only
        // when the call is invalid or refused: an allowed call can be made.
        let unless_uncallable = || {
            if policies.could_call(&principal, &facts, &request) {
                return Ok(());
            }
            let mut verdict = policies.decide_call(&principal, &facts, &Map::new(), &request);
            if verdict.allowed {
                verdict.policies.clear();
            }
            Err(refused_by_policy(&verdict, "Unknown tool"))
        };
        // The policies decide on the validated arguments; what they allow may still need a
        // person (`@confirm`) and cost more (`@cost`).
        let valid = if skipped(Layer::Validation) {
            Ok(())
        } else {
            tool.validate(arguments).map(drop)
        };
        let verdict = match valid {
            Ok(()) if skipped(Layer::Policy) => Verdict {
                allowed: true,
                policies: Vec::new(),
                confirm: None,
                cost: 0,
            },
            Ok(()) => policies.decide_call(
                &principal,
                &facts,
                arguments.as_object().unwrap_or(&Map::new()),
                &request,
            ),
            Err(invalid) => {
                unless_uncallable()?;
                return Err(policy_error(invalid));
            }
        };
        if !verdict.allowed {
            unless_uncallable()?;
            return Err(refused_by_policy(&verdict, "Unknown tool"));
        }
        Ok((tool, upstream, verdict))
    }
    .await;
    let (tool, upstream, verdict) = match decided {
        Ok(decided) => decided,
        Err(error) => {
            if let Some(rule) = error.rule {
                span.refuse(crate::error::layer_of(rule), rule);
            }
            return Err(error);
        }
    };
    drop(span);
    let origin = tool.origin().clone();
    let upstream_name = upstream.name().to_owned();
    let _ = context.allowed_by.set(verdict.policies.join(","));
    // A person confirms destructive calls before they run.
    let asker = confirm::Asker {
        principal: context.principal,
        era: context.era,
        session_capabilities: context.session.map(|s| &s.client.capabilities),
        events: context.events.as_ref(),
    };
    let rule = stronger(tool.confirm(), verdict.confirm);
    // Waiting for a person: the trace's `warden.confirm` span.
    let span = (rule != Confirm::Never).then(|| context.trace.span("warden.confirm"));
    let confirmed = confirm::confirm(
        state.confirmations(),
        &asker,
        (tool, rule),
        &upstream_name,
        params.clone(),
    )
    .await;
    drop(span);
    let mut params = match confirmed? {
        Confirmation::Go(params) => params,
        Confirmation::Ask(answer) => {
            let _ = context.pending.set("awaiting_confirmation");
            return Ok(answer);
        }
        Confirmation::Held(answer) => {
            let _ = context.pending.set("held");
            return Ok(answer);
        }
    };
    // Everything else the client sent (its `_meta`, unknown fields) goes on unchanged.
    params.insert("name".into(), origin.name.into());
    let mut result = forward(
        state,
        context,
        origin.upstream,
        "tools/call",
        params,
        Some((&name, verdict.cost)),
    )
    .await?;
    // A result still waiting for the client's input has not reached it yet.
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        let returns = policy::returns_of(tool, &upstream);
        context
            .record_result(state, (&upstream, Some(&name)), returns, &mut result)
            .await?;
    }
    Ok(checked_output(tool, result))
}

/// A result whose structured content does not match the tool's `outputSchema` is
/// replaced by an error result (`block`, the default) or passed on (`warn`); either
/// way the mismatch is logged. Results still waiting for input are not results yet.
fn checked_output(tool: &CatalogueTool, result: Value) -> Value {
    if result.get("resultType").and_then(Value::as_str) == Some("input_required") {
        return result;
    }
    let Err(mismatch) = tool.check_output(&result) else {
        return result;
    };
    tracing::warn!(tool = tool.name(), %mismatch, "tool result does not match its outputSchema");
    match tool.output_check() {
        OutputCheck::Warn => result,
        OutputCheck::Block => json!({
            "content": [{
                "type": "text",
                "text": format!("Warden withheld this tool's result: {mismatch}."),
            }],
            "isError": true,
        }),
    }
}

/// `completion/complete` names a prompt or a resource; it goes where that one lives.
async fn route_completion(
    state: &AppState,
    context: &Context<'_>,
    params: &mut Map<String, Value>,
) -> Result<usize, RpcError> {
    let reference = params
        .get_mut("ref")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| RpcError::invalid_params("params.ref must be an object"))?;
    let upstreams = state.upstreams();
    match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => {
            let name = reference
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (index, name) = upstreams.route_name(name).ok_or_else(unknown_prompt)?;
            reference.insert("name".into(), name.into());
            Ok(index)
        }
        Some("ref/resource") => {
            let uri = reference
                .get("uri")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            owner_of(state, context, &uri, context.era).await
        }
        _ => Err(RpcError::invalid_params(
            "params.ref.type must be ref/prompt or ref/resource",
        )),
    }
}

/// Sends a call to upstream `index` once the rate limits admit it (`call` is the
/// catalogue name of a `tools/call` and what policies add to its cost); the call's
/// slots are held until it is done.
async fn forward(
    state: &AppState,
    context: &Context<'_>,
    index: usize,
    method: &str,
    params: Map<String, Value>,
    call: Option<(&str, u64)>,
) -> Result<Value, RpcError> {
    let tool = call.map(|(name, _)| name);
    let upstream: Arc<Upstream> = state
        .upstreams()
        .get(index)
        .ok_or_else(RpcError::internal)?;
    let call = Call {
        key_id: &context.principal.key_id,
        tenant: &context.principal.tenant,
        session: &context.instance,
        tool,
        policy_cost: call.map_or(0, |(_, cost)| cost),
    };
    let _ = context.upstream_used.set(upstream.clone());
    // The call's limits, queue included: the trace's `warden.limits` span.
    let permit = if skipped(Layer::Limits) {
        None
    } else {
        let mut span = context.trace.span("warden.limits");
        let admitted = std::time::Instant::now();
        let permit = state.limiter().admit_call(call, index).await;
        span.set("warden.limits.layer", "call");
        span.set(
            "warden.limits.wait_us",
            i64::try_from(admitted.elapsed().as_micros()).unwrap_or(i64::MAX),
        );
        Some(permit.map_err(|refusal| {
            let error = RpcError::rate_limited(&refusal);
            if let Some(rule) = error.rule {
                span.refuse("limits", rule);
            }
            error
        })?)
    };
    let started = std::time::Instant::now();
    let hardening = hardening(&state.results(), &upstream, tool);
    // The upstream call (kind client, per the MCP conventions): the upstream is told
    // this span is its parent, in `_meta` (and, over HTTP, in headers).
    let mut span = if context.trace.is_recording() {
        let mut span = context.trace.client_span(match tool {
            Some(tool) => format!("{method} {tool}"),
            None => method.to_owned(),
        });
        span.set("mcp.method.name", method.to_owned());
        span.set("warden.upstream", upstream.name().to_owned());
        if let Some(tool) = tool {
            span.set("gen_ai.tool.name", tool.to_owned());
        }
        span
    } else {
        // Not recorded: only its id matters, as the parent the upstream is told.
        context.trace.client_span("")
    };
    let mut params = params;
    if context.trace.is_on()
        && let Some(meta) = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    {
        context.trace.propagate(&span, &mut MetaInjector(meta));
    }
    // Boxed (see `handle`): the exchange's future is the largest part of every caller's.
    let result = Box::pin(call_upstream(
        state,
        context,
        &upstream,
        (method, tool),
        params,
        hardening.as_ref(),
    ))
    .await;
    if let Err(error) = &result
        && span.is_recording()
    {
        span.fail(&error.code.to_string());
    }
    drop(span);
    // A call that never reached its upstream gives its cost back; every call gives
    // back its slots.
    match (&result, permit) {
        (Err(error), Some(permit)) if never_reached(error) => permit.refund(),
        (_, permit) => drop(permit),
    }
    state
        .metrics()
        .upstream_call(upstream.name(), started.elapsed());
    let mut result = result?;
    if let Some(hardening) = &hardening {
        let _span = context.trace.span("warden.harden");
        harden_message(&mut result, hardening);
    }
    Ok(result)
}

/// Sends a request to one upstream and turns its answer into ours. Calls that may need
/// the client's input mid-way are bridged between the eras (see `input_required`).
async fn call_upstream(
    state: &AppState,
    context: &Context<'_>,
    upstream: &Arc<Upstream>,
    (method, tool): (&str, Option<&str>),
    mut params: Map<String, Value>,
    hardening: Option<&Hardening>,
) -> Result<Value, RpcError> {
    let events = context.events.as_ref();
    if !input_required::applies(method) {
        let answer = upstream
            .request(context.caller(), method, params, events.cloned())
            .await
            .map_err(|error| upstream_failed(upstream, &error, method))?;
        return upstream_result(answer, context.era, hardening);
    }
    match context.era {
        Era::Modern => {
            // A retry of a call another replica parked goes there.
            if let Some(cluster) = state.cluster()
                && let Some(holder) = params
                    .get("requestState")
                    .and_then(Value::as_str)
                    .and_then(input_required::holder_of_state)
                    .filter(|holder| *holder != cluster.replica_id())
            {
                let holder = holder.to_owned();
                return crate::remote::resume_elsewhere(
                    state,
                    &holder,
                    context.principal,
                    upstream.name(),
                    tool,
                    method,
                    params,
                )
                .await;
            }
            input_required::call_for_modern_client(
                state.input_lot(),
                hardening,
                upstream,
                context.principal,
                method,
                params,
                events,
            )
            .await
        }
        Era::Legacy => {
            // A modern upstream learns what this client can answer, as a modern client
            // would have told it.
            let capabilities: Map<String, Value> = context
                .session
                .and_then(|s| s.client.capabilities.as_object())
                .into_iter()
                .flatten()
                .filter(|(name, _)| KEPT_CAPABILITIES.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            if let Some(meta) = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
            {
                meta.insert(CLIENT_CAPABILITIES_META.into(), capabilities.into());
            }
            input_required::call_for_legacy_client(
                upstream,
                hardening,
                context.caller(),
                method,
                params,
                events,
            )
            .await
        }
    }
}

/// The stronger of a tool's own confirmation rule and one a policy asks for.
fn stronger(rule: Confirm, asked: Option<Confirm>) -> Confirm {
    let rank = |rule: Confirm| match rule {
        Confirm::Never => 0,
        Confirm::Elicit => 1,
        Confirm::Approve => 2,
        Confirm::Deny => 3,
    };
    match asked {
        Some(asked) if rank(asked) > rank(rule) => asked,
        _ => rule,
    }
}

/// A refusal by policies. When a forbid decided, it names the policies (message,
/// `data.policy`, audit record and log); when nothing permitted, the thing is as unknown
/// as one that does not exist (`unknown`), and the audit record says why.
fn refused_by_policy(verdict: &Verdict, unknown: &str) -> RpcError {
    if verdict.policies.is_empty() {
        return RpcError::refusal(codes::INVALID_PARAMS, unknown, "policy.no_permit");
    }
    let ids = verdict.policies.join(",");
    RpcError {
        data: Some(json!({ "policy": ids })),
        ..RpcError::refusal(
            codes::INVALID_PARAMS,
            format!("Refused by policy {ids:?}"),
            "policy.forbid",
        )
    }
}

/// Refuses `action` on `target` unless the policies allow it (`unknown` is what a
/// caller nothing permits is told).
async fn allowed_by_policy(
    state: &AppState,
    context: &Context<'_>,
    action: &str,
    target: &Target<'_>,
    unknown: impl FnOnce() -> RpcError,
) -> Result<(), RpcError> {
    let request = context.request_facts(state).await;
    let verdict = state.policy().current().decide_other(
        &policy::principal_facts(context.principal),
        action,
        target,
        &request,
    );
    if verdict.allowed {
        let _ = context.allowed_by.set(verdict.policies.join(","));
        return Ok(());
    }
    if verdict.policies.is_empty() {
        return Err(RpcError {
            rule: Some("policy.no_permit"),
            ..unknown()
        });
    }
    Err(refused_by_policy(&verdict, ""))
}

/// Drops from a prompt or resource list what the policies would not let the caller
/// get or read.
async fn listed_by_policy(
    state: &AppState,
    context: &Context<'_>,
    method: &str,
    upstream: &Upstream,
    result: &mut Value,
) -> Result<(), RpcError> {
    let (field, key, action) = match method {
        "prompts/list" => ("prompts", "name", "get_prompt"),
        "resources/list" => ("resources", "uri", "read_resource"),
        _ => return Ok(()),
    };
    let request = context.request_facts(state).await;
    let Some(Value::Array(items)) = result.get_mut(field) else {
        return Ok(());
    };
    let policies = state.policy().current();
    let principal = policy::principal_facts(context.principal);
    items.retain(|item| {
        let id = item.get(key).and_then(Value::as_str).unwrap_or_default();
        let target = match action {
            "get_prompt" => Target::Prompt {
                name: id,
                upstream: upstream.name(),
            },
            _ => Target::Resource {
                uri: id,
                upstream: upstream.name(),
            },
        };
        policies
            .decide_other(&principal, action, &target, &request)
            .allowed
    });
    Ok(())
}

/// What anything an `untrusted` upstream returns carries.
fn returns_of_upstream(upstream: &Upstream) -> warden_config::Returns {
    warden_config::Returns {
        untrusted: upstream.is_untrusted(),
        private: false,
    }
}

fn policy_error(error: PolicyError) -> RpcError {
    let message = match &error {
        PolicyError::UnknownTool => "Unknown tool".to_owned(),
        invalid => invalid.to_string(),
    };
    RpcError::refusal(codes::INVALID_PARAMS, message, error.rule())
}

fn required_str(params: &Map<String, Value>, field: &'static str) -> Result<String, RpcError> {
    params
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| RpcError::invalid_params(format!("params.{field} must be a string")))
}

fn optional_str(
    params: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, RpcError> {
    match params.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "params.{field} must be a string"
        ))),
    }
}

/// Lists that fit on one page issue no cursor, so any cursor is not ours.
fn no_cursor(params: &Map<String, Value>) -> Result<(), RpcError> {
    match optional_str(params, "cursor")? {
        None => Ok(()),
        Some(_) => Err(RpcError::invalid_params("Invalid cursor")),
    }
}
