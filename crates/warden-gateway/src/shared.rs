//! What the gateway shares with the other replicas of its cluster, behind one trait
//! ([`ClusterState`]; Redis in `warden-cluster`): legacy session records, the handles
//! a call waits under (confirmations, held calls), and a bus on which replicas tell
//! each other what concerns a call or a session another replica holds. Without a
//! cluster, all of it is this process's own.
//!
//! Everything on the bus comes from a replica of the same cluster (Redis is trusted
//! infrastructure); it is still checked like a client's message where it matters: an
//! answer reaches a call only if it comes from the key that made the call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};
use warden_store::Principal;

use crate::error::RpcError;

/// The shared state could not be reached in time; the same as the shared limits'.
pub use warden_limits::{SharedFuture, Unreachable};

/// A legacy session as every replica sees it: what Warden uses of the client's
/// `initialize`, and the key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub key_id: String,
    /// The negotiated protocol version.
    pub version: String,
    /// `name/version` of the client, cut and cleaned.
    pub client_name: String,
    /// The capabilities Warden relays requests by, as JSON text.
    pub capabilities: String,
}

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMessage {
    /// The session ended (DELETE, eviction): every replica closes its copy.
    Closed { session: String },
    /// A message for the session's GET stream, wherever it is open.
    Push { session: String, message: Value },
    /// An upstream's list changed on replica `from`: every stream open elsewhere hears
    /// it too.
    ListChanged { from: String, message: Value },
    /// A legacy client's answer to a request that replica `to` holds.
    Answer {
        to: String,
        session: String,
        key_id: String,
        request: String,
        outcome: Result<Value, Value>,
    },
    /// A modern client's retry of a call that replica `to` has parked: run it there and
    /// answer `from` under `ticket`.
    Resume {
        to: String,
        from: String,
        ticket: u64,
        principal: BusPrincipal,
        upstream: String,
        tool: Option<String>,
        method: String,
        params: serde_json::Map<String, Value>,
    },
    /// Replica `to`'s [`BusMessage::Resume`] reached the call's holder, which runs it.
    Accepted { to: String, ticket: u64 },
    /// The outcome of a [`BusMessage::Resume`].
    Resumed {
        to: String,
        ticket: u64,
        outcome: Result<Value, BusError>,
    },
}

/// A principal as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusPrincipal {
    pub key_id: String,
    pub tenant: String,
    pub scope: String,
}

impl BusPrincipal {
    pub(crate) fn of(principal: &Principal) -> Self {
        Self {
            key_id: principal.key_id.clone(),
            tenant: principal.tenant.clone(),
            scope: principal.scope.as_str().to_owned(),
        }
    }

    pub(crate) fn principal(&self) -> Option<Principal> {
        Some(Principal {
            key_id: self.key_id.clone(),
            tenant: self.tenant.clone(),
            scope: warden_store::Scope::parse(&self.scope)?,
            rpm: None,
            name: String::new(),
            labels: Default::default(),
            groups: Vec::new(),
        })
    }
}

/// A JSON-RPC error as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub rule: Option<String>,
}

impl From<RpcError> for BusError {
    fn from(error: RpcError) -> Self {
        Self {
            code: error.code,
            message: error.message,
            data: error.data,
            rule: error.rule.map(str::to_owned),
        }
    }
}

/// The rules a parked call's retry can be refused under (a rule crosses the bus as
/// text and comes back as one of these, or as none).
const REMOTE_RULES: [&str; 4] = [
    "validation.params",
    "limits.waiting",
    "confirm.declined",
    "confirm.mismatch",
];

impl From<BusError> for RpcError {
    fn from(error: BusError) -> Self {
        Self {
            code: error.code,
            message: error.message,
            data: error.data,
            rule: error
                .rule
                .and_then(|rule| REMOTE_RULES.iter().find(|r| **r == rule).copied()),
        }
    }
}

/// The state several replicas share.
pub trait ClusterState: Send + Sync + 'static {
    /// This replica's name in the cluster.
    fn replica_id(&self) -> &str;

    /// Records a new session (idle expiry `idle`). A key over `max_per_key` sessions
    /// loses its least recently used ones: their ids are returned.
    fn open_session<'a>(
        &'a self,
        id: &'a str,
        record: &'a SessionRecord,
        idle: Duration,
        max_per_key: usize,
    ) -> SharedFuture<'a, Vec<String>>;

    /// The session's record, if it lives; with `idle`, it counts as its use (its idle
    /// clock restarts at `idle`).
    fn session<'a>(
        &'a self,
        id: &'a str,
        idle: Option<Duration>,
    ) -> SharedFuture<'a, Option<SessionRecord>>;

    /// Ends the session everywhere; whether it lived.
    fn close_session<'a>(&'a self, id: &'a str) -> SharedFuture<'a, bool>;

    /// Keeps `value` under `name` for `ttl`.
    fn put<'a>(&'a self, name: &'a str, value: &'a str, ttl: Duration) -> SharedFuture<'a, ()>;

    /// The value under `name`, if any.
    fn get<'a>(&'a self, name: &'a str) -> SharedFuture<'a, Option<String>>;

    /// The value under `name`, removed: good once.
    fn take<'a>(&'a self, name: &'a str) -> SharedFuture<'a, Option<String>>;

    /// Whether each of `names` still holds a value, in one round trip.
    fn present<'a>(&'a self, names: &'a [String]) -> SharedFuture<'a, Vec<bool>>;

    /// Tells every replica (this one included).
    fn publish(&self, message: &BusMessage) -> SharedFuture<'_, ()>;

    /// What the replicas say, from now on.
    fn messages(&self) -> broadcast::Receiver<BusMessage>;
}

/// Parked calls this replica asked another to resume, by ticket. Tickets start at a
/// random number, so that a restarted replica under the same name is never handed an
/// outcome meant for its predecessor.
pub(crate) struct Tickets {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl Default for Tickets {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(rand::random()),
            waiting: Mutex::default(),
        }
    }
}

/// Who waits under a ticket: first for the holder to accept, then for the outcome.
struct Waiting {
    accepted: Option<oneshot::Sender<()>>,
    outcome: oneshot::Sender<Result<Value, RpcError>>,
}

/// Where a ticket's news arrives.
pub(crate) struct Ticket {
    pub number: u64,
    pub accepted: oneshot::Receiver<()>,
    pub outcome: oneshot::Receiver<Result<Value, RpcError>>,
}

impl Tickets {
    /// A new ticket.
    pub(crate) fn issue(&self) -> Ticket {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let (accepted_sender, accepted) = oneshot::channel();
        let (outcome_sender, outcome) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                number,
                Waiting {
                    accepted: Some(accepted_sender),
                    outcome: outcome_sender,
                },
            );
        Ticket {
            number,
            accepted,
            outcome,
        }
    }

    /// The holder accepted the ticket's call.
    pub(crate) fn accepted(&self, ticket: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(accepted) = waiting.get_mut(&ticket).and_then(|w| w.accepted.take()) {
            let _ = accepted.send(());
        }
    }

    /// Hands an outcome to whoever waits under `ticket`.
    pub(crate) fn settle(&self, ticket: u64, outcome: Result<Value, RpcError>) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ticket);
        if let Some(waiting) = waiting {
            let _ = waiting.outcome.send(outcome);
        }
    }

    /// Gives up on `ticket` (its deadline passed, or its caller went away).
    pub(crate) fn forget(&self, ticket: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ticket);
    }
}

/// How long a replica waits for the holder of a parked call to accept its retry (a
/// holder that is gone, or a message lost, ends the wait), and then for the outcome.
pub(crate) const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const RESUME_TIMEOUT: Duration = Duration::from_secs(600);

/// The name a handle is stored under in the shared state: its SHA-256, so that Redis's
/// keys never hold the handle itself. (A parked call's retry does carry its handle over
/// the bus to the replica that holds the call; only replicas listen there.)
pub(crate) fn handle_name(kind: &str, handle: &str) -> String {
    use sha2::Digest as _;
    format!(
        "{kind}:{}",
        hex::encode(sha2::Sha256::digest(handle.as_bytes()))
    )
}
