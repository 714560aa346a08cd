//! What the probes observed of a target. Probing is the only part of a scan that does
//! I/O; rules read this and nothing else.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::http::Exchange;

/// The MCP era a server was spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28: stateless, `server/discover`, version and method in headers.
    Modern,
    /// 2025-03-26 to 2025-11-25: `initialize` and a session id.
    Legacy,
}

/// What is being scanned.
#[derive(Debug, Clone, Default)]
pub struct TargetFacts {
    /// The URL scanned (HTTP targets).
    pub url: Option<url::Url>,
    /// The command started (stdio targets), and static ones for supply-chain rules.
    pub command: Vec<String>,
    /// The host is this machine (plain HTTP is fine there).
    pub loopback: bool,
    /// The scan was given credentials (an `Authorization` header).
    pub credentials: bool,
}

impl TargetFacts {
    pub fn is_http(&self) -> bool {
        self.url.is_some()
    }

    pub fn is_https(&self) -> bool {
        self.url.as_ref().is_some_and(|url| url.scheme() == "https")
    }
}

/// A slow-loris connection: a request head sent a few bytes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowLoris {
    /// The server closed it (or answered 408) after this many seconds.
    CutAfter(u64),
    /// Still open when the probe gave up, this many seconds in.
    StillOpen(u64),
}

/// Each single request a scan may send; `Observations::answers` holds what came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// `server/discover` (2026-07-28).
    Discover,
    /// `initialize` (legacy).
    Initialize,
    /// `notifications/initialized`, or another notification in the modern era.
    Notification,
    ToolsList,
    WrongContentType,
    WrongAccept,
    Batch,
    MalformedJson,
    NotJsonrpc,
    UnknownMethod,
    /// A `ping` with a string id.
    Ping,
    NoSession,
    UnknownSession,
    SecondInitialize,
    /// A legacy `initialize` asking for a version no server speaks.
    OddVersionInitialize,
    /// A modern request naming a version no server speaks.
    UnsupportedVersion,
    MethodMismatch,
    NameMismatch,
    /// A method of a capability the server did not declare.
    UndeclaredCapability,
    DeleteSession,
    AfterDelete,
    NoCredentials,
    WrongBearer,
    MalformedAuthorization,
    /// The scan's own credential in the query string, and no header.
    TokenInQuery,
    /// The scan's own credential in the body, and no header.
    TokenInBody,
    ResourceMetadata,
    /// The legacy session's id without the credential that opened it.
    SessionWithoutCredentials,
    Preflight,
    ForeignOrigin,
    /// A CORS preflight from the opaque origin `null`.
    NullOrigin,
    ForeignHost,
    UnknownTool,
    NearMissTool,
    ExtraArgument,
    WrongType,
    MissingRequired,
    HugeString,
    DeepNesting,
    Traversal,
    NulInPath,
    /// A `ping` after the validation probes: the server still answers.
    AliveAfterValidation,
    /// `null` for an argument the schema types.
    NullArgument,
    /// A number written as a string (`"5"`) for an integer or number argument.
    NumericString,
    /// A real tool's name with a zero-width space appended.
    InvisibleToolName,
    /// `tools/call` whose params are an array, not an object.
    ParamsArray,
}

/// Everything the probes saw. A probe that did not run (its category was skipped, the
/// target is not HTTP, a precondition failed) leaves its field empty, and its rules skip.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    pub target: TargetFacts,
    /// Why the target could not be spoken to at all, if it could not.
    pub unreachable: Option<String>,
    /// A TLS failure when connecting (HTTPS targets).
    pub tls_error: Option<String>,

    /// The era calls were made in, and what the server said of itself.
    pub era: Option<Era>,
    pub session_id: Option<String>,
    pub capabilities: Option<Value>,
    pub instructions: Option<String>,
    pub tools: Vec<Value>,
    /// The answer to each single probe that ran.
    pub answers: BTreeMap<Probe, Exchange>,
    /// The tool the validation probes call, and whether it is read-only.
    pub probe_tool: Option<(String, bool)>,
    /// Read-only tools called with arguments their schema accepts (`--allow-calls`), by
    /// name.
    pub tool_calls: Vec<(String, Exchange)>,
    /// Wrong keys, one after the other.
    pub guessing: Vec<Exchange>,
    // Availability.
    pub parallel: Vec<Exchange>,
    pub burst: Vec<Exchange>,
    pub slow_loris: Option<SlowLoris>,

    /// The configuration audited (`warden scan --config`).
    pub config: Option<warden_config::Config>,
    /// Labels of the requests whose answer carried one of the scan's secrets (its
    /// credential, its canary), found before evidence was redacted.
    pub echoed_secrets: Vec<String>,
}

impl Observations {
    /// The answer to `probe`, if it ran.
    pub fn answer(&self, probe: Probe) -> Option<&Exchange> {
        self.answers.get(&probe)
    }

    pub(crate) fn record(&mut self, probe: Probe, exchange: Exchange) {
        self.answers.insert(probe, exchange);
    }

    /// Every exchange, for the rules that read all answers (error hygiene).
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.answers
            .values()
            .chain(&self.guessing)
            .chain(&self.parallel)
            .chain(&self.burst)
            .chain(self.tool_calls.iter().map(|(_, answer)| answer))
    }

    pub(crate) fn exchanges_mut(&mut self) -> impl Iterator<Item = &mut Exchange> {
        self.answers
            .values_mut()
            .chain(self.guessing.iter_mut())
            .chain(self.parallel.iter_mut())
            .chain(self.burst.iter_mut())
            .chain(self.tool_calls.iter_mut().map(|(_, answer)| answer))
    }

    /// Whether the server answered a request that carried no credential: it takes none.
    pub fn is_open(&self) -> bool {
        self.answer(Probe::NoCredentials)
            .is_some_and(Exchange::succeeded)
    }
}
