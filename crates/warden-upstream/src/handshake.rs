//! Learning which MCP era an upstream speaks: `server/discover` first (2026-07-28), and
//! `initialize` when that fails. The answer is cached per upstream, so a restarted child
//! is not probed again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};
use warden_proto::ProtocolVersion;
use warden_proto::era::{CLIENT_CAPABILITIES_META, PROTOCOL_VERSION_META};

use crate::UpstreamError;
use crate::link::Link;

/// A legacy server that ignores an unknown first request costs at most this at start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The protocol Warden speaks with one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEra {
    /// 2026-07-28: stateless, every request carries its version and capabilities.
    Modern,
    /// An `initialize` session at the negotiated version.
    Legacy(String),
}

impl UpstreamEra {
    pub fn is_modern(&self) -> bool {
        matches!(self, Self::Modern)
    }

    /// Puts a request's params into this era's form. Modern requests must carry the
    /// protocol version and client capabilities in `_meta` (the client's own, when it is
    /// modern too); legacy ones must not.
    pub fn prepare(&self, params: &mut Map<String, Value>) {
        match self {
            Self::Modern => {
                let meta = params
                    .entry("_meta")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert(
                        PROTOCOL_VERSION_META.into(),
                        ProtocolVersion::V2026_07_28.as_str().into(),
                    );
                    meta.entry(CLIENT_CAPABILITIES_META)
                        .or_insert_with(warden_capabilities);
                }
            }
            Self::Legacy(_) => {
                if let Some(Value::Object(meta)) = params.get_mut("_meta") {
                    meta.remove(PROTOCOL_VERSION_META);
                    meta.remove(CLIENT_CAPABILITIES_META);
                    if meta.is_empty() {
                        params.remove("_meta");
                    }
                }
            }
        }
    }
}

/// What Warden, as a client, can relay: questions for the human and sampling requests
/// reach the client when it supports them.
fn warden_capabilities() -> Value {
    json!({ "elicitation": {}, "sampling": {} })
}

/// What the upstream told us about itself.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub era: UpstreamEra,
    pub capabilities: Value,
    pub instructions: Option<String>,
}

impl ServerFacts {
    /// Whether the upstream declared `capability` (e.g. `prompts`); `null` declares nothing.
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities
            .get(capability)
            .is_some_and(|c| !c.is_null())
    }
}

/// The era learned from the first successful handshake of an upstream.
#[derive(Debug, Default, Clone)]
pub(crate) struct EraCache(Arc<Mutex<Option<UpstreamEra>>>);

impl EraCache {
    fn get(&self) -> Option<UpstreamEra> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, era: &UpstreamEra) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(era.clone());
    }
}

/// Runs the handshake over a fresh link.
pub(crate) async fn handshake(link: &Link, cache: &EraCache) -> Result<ServerFacts, UpstreamError> {
    if cache.get().is_none_or(|era| era.is_modern())
        && let Some(facts) = discover(link).await?
    {
        cache.set(&facts.era);
        return Ok(facts);
    }
    let facts = initialize(link).await?;
    cache.set(&facts.era);
    Ok(facts)
}

/// `server/discover`; `None` when the upstream does not speak 2026-07-28.
async fn discover(link: &Link) -> Result<Option<ServerFacts>, UpstreamError> {
    let mut params = Map::new();
    UpstreamEra::Modern.prepare(&mut params);
    let answer =
        match tokio::time::timeout(PROBE_TIMEOUT, link.request("server/discover", params, None))
            .await
        {
            Ok(Ok(answer)) => answer,
            // Silence, or an HTTP refusal of the unknown method: a legacy server.
            Err(_) | Ok(Err(UpstreamError::Status(_))) => return Ok(None),
            Ok(Err(error)) => return Err(error),
        };
    let Some(result) = answer.get("result") else {
        return Ok(None);
    };
    let modern = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|versions| {
            versions
                .iter()
                .any(|v| v.as_str() == Some(ProtocolVersion::V2026_07_28.as_str()))
        });
    Ok(modern.then(|| ServerFacts {
        era: UpstreamEra::Modern,
        capabilities: result.get("capabilities").cloned().unwrap_or_default(),
        instructions: instructions(result),
    }))
}

async fn initialize(link: &Link) -> Result<ServerFacts, UpstreamError> {
    let mut params = Map::new();
    params.insert(
        "protocolVersion".into(),
        ProtocolVersion::LATEST_LEGACY.as_str().into(),
    );
    params.insert("capabilities".into(), warden_capabilities());
    params.insert(
        "clientInfo".into(),
        json!({ "name": "warden", "version": env!("CARGO_PKG_VERSION") }),
    );
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, link.request("initialize", params, None))
        .await
        .map_err(|_| UpstreamError::Handshake("no answer to initialize".into()))??;
    let result = answer
        .get("result")
        .ok_or_else(|| UpstreamError::Handshake("initialize was refused".into()))?;
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .filter(|v| ProtocolVersion::parse(v).is_some())
        .ok_or_else(|| UpstreamError::Handshake("unsupported protocol version".into()))?
        .to_owned();
    link.notify("notifications/initialized", Map::new());
    Ok(ServerFacts {
        era: UpstreamEra::Legacy(version),
        capabilities: result.get("capabilities").cloned().unwrap_or_default(),
        instructions: instructions(result),
    })
}

fn instructions(result: &Value) -> Option<String> {
    result
        .get("instructions")
        .and_then(Value::as_str)
        .map(str::to_owned)
}
