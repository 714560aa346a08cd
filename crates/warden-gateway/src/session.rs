//! Legacy-era sessions: minted by `initialize`, bound to the key that opened them,
//! bounded in number, expired when idle.
//!
//! In a cluster, the session's record (its key, version and what Warden uses of the
//! client) lives in the shared state: any replica continues a session another opened
//! (it adopts a copy on first sight), each request checks that the session still
//! lives, and DELETE ends it on every replica. What runs lives where it runs: a GET
//! stream on the replica it was opened on (others reach it through the bus), a
//! server's request on the replica of the call that asked it (its id names that
//! replica, so the client's answer finds it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::future::AbortHandle;
use rand::RngCore as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use warden_upstream::ServerRequest;

use crate::audit::AuditedNames;
use crate::error::GatewayError;
use crate::shared::{BusMessage, ClusterState, SessionRecord, Unreachable};

/// Bytes of OS randomness in a session id (256 bits): unguessable, and visible ASCII
/// once base64url-encoded, as the spec requires.
const SESSION_ID_BYTES: usize = 32;
/// The longest wait between two looks for idle sessions.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Messages queued for a session's GET stream before new ones are dropped.
const STREAM_QUEUE: usize = 64;
/// Server requests (elicitation, sampling) a session may leave unanswered at once.
const MAX_PENDING_REQUESTS: usize = 32;
/// Resource subscriptions one session may hold.
const MAX_SUBSCRIPTIONS: usize = 1024;
/// Client requests of one session in flight (and cancellable) at once.
const MAX_IN_FLIGHT: usize = 1024;

/// Per-session state that changes while the session lives.
#[derive(Debug, Default)]
struct Live {
    /// The open GET stream's queue.
    stream: Option<mpsc::Sender<Value>>,
    /// Requests from upstreams waiting for the client's answer, by the id we gave them.
    pending: HashMap<String, ServerRequest>,
    subscriptions: HashSet<String>,
    /// The client's requests in flight, by their id as JSON text, for cancellation.
    in_flight: HashMap<String, AbortHandle>,
    log_level: Option<String>,
}

/// Client capabilities Warden acts on (it relays these requests to the client).
pub(crate) const KEPT_CAPABILITIES: [&str; 3] = ["elicitation", "sampling", "roots"];
/// A kept capability's details larger than this are dropped (the capability stays).
const MAX_CAPABILITY_BYTES: usize = 1024;
/// Characters of the client's name and version kept.
const MAX_CLIENT_NAME_CHARS: usize = 64;

/// What Warden keeps of a client's `initialize`: only what it uses, size-capped, so a
/// session costs the same whatever the client sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientFacts {
    /// The capabilities Warden relays requests by (`elicitation`, `sampling`, `roots`).
    pub capabilities: Value,
    /// `name/version`, control characters dropped.
    pub name: String,
}

impl ClientFacts {
    pub(crate) fn from_initialize(capabilities: &Value, client_info: &Value) -> Self {
        let kept: serde_json::Map<String, Value> = KEPT_CAPABILITIES
            .iter()
            .filter_map(|name| {
                let declared = capabilities.get(*name).filter(|c| c.is_object())?;
                let details = if declared.to_string().len() <= MAX_CAPABILITY_BYTES {
                    declared.clone()
                } else {
                    Value::Object(serde_json::Map::new())
                };
                Some(((*name).to_owned(), details))
            })
            .collect();
        Self {
            capabilities: Value::Object(kept),
            name: client_name(Some(client_info)),
        }
    }
}

/// A client's `clientInfo` as `name/version`, cut and without control characters.
pub(crate) fn client_name(info: Option<&Value>) -> String {
    let field = |name| {
        info.and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_CLIENT_NAME_CHARS)
            .collect::<String>()
    };
    let (name, version) = (field("name"), field("version"));
    if version.is_empty() {
        name
    } else {
        format!("{name}/{version}")
    }
}

pub(crate) struct Session {
    pub id: String,
    key_id: String,
    /// What the client said of itself in `initialize`, as far as Warden uses it.
    pub client: ClientFacts,
    /// The ids of the server requests it holds start with this (in a cluster, it names
    /// the replica).
    request_prefix: String,
    next_request: AtomicU64,
    /// Where messages for a stream open on another replica go.
    shared: Option<Arc<dyn ClusterState>>,
    live: Mutex<Live>,
    last_seen: Mutex<Instant>,
    closed: watch::Sender<bool>,
    stream_open: AtomicBool,
    /// Its id and client name as its calls' audit records carry them, redacted on the
    /// first call.
    audited_names: OnceLock<AuditedNames>,
}

impl Session {
    pub fn audited_names(&self) -> &AuditedNames {
        self.audited_names
            .get_or_init(|| AuditedNames::of(&self.id, &self.client.name))
    }

    /// Whether a call of this session runs here, or a server's request waits here for
    /// its answer.
    fn is_busy(&self) -> bool {
        let live = self.live();
        !live.in_flight.is_empty() || !live.pending.is_empty()
    }

    /// Whether `key_id` owns this session.
    pub fn belongs_to(&self, key_id: &str) -> bool {
        self.key_id == key_id
    }

    fn touch(&self) {
        *self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(
            *self
                .last_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn close(&self) {
        self.closed.send_replace(true);
        let mut live = self.live();
        for (_, handle) in live.in_flight.drain() {
            handle.abort();
        }
        live.pending.clear();
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the session's one GET stream; the claim ends when the guard drops.
    pub fn open_stream(self: &Arc<Self>) -> Result<StreamClaim, GatewayError> {
        if self.stream_open.swap(true, Ordering::AcqRel) {
            return Err(GatewayError::StreamAlreadyOpen);
        }
        let (sender, messages) = mpsc::channel(STREAM_QUEUE);
        self.live().stream = Some(sender);
        Ok(StreamClaim {
            session: self.clone(),
            closed: self.closed.subscribe(),
            messages,
        })
    }

    /// Queues a message on the GET stream, if one is open here; dropped when it is
    /// full. `anywhere`: in a cluster, a stream open on another replica gets it too.
    pub fn push(&self, message: &Value, anywhere: bool) {
        let live = self.live();
        if let Some(stream) = &live.stream {
            let _ = stream.try_send(message.clone());
            return;
        }
        drop(live);
        if let (true, Some(shared)) = (anywhere, &self.shared) {
            let (shared, message) = (
                shared.clone(),
                BusMessage::Push {
                    session: self.id.clone(),
                    message: message.clone(),
                },
            );
            tokio::spawn(async move {
                let _ = shared.publish(&message).await;
            });
        }
    }

    /// Keeps an upstream's request until the client answers it; returns the id the
    /// client sees, or hands the request back when too many are waiting.
    pub fn hold_request(&self, request: ServerRequest) -> Result<String, Box<ServerRequest>> {
        let mut live = self.live();
        // Questions no one waits for any more (a confirmation past its deadline) go.
        live.pending.retain(|_, request| !request.abandoned());
        if live.pending.len() >= MAX_PENDING_REQUESTS {
            return Err(Box::new(request));
        }
        let id = format!(
            "{}{}",
            self.request_prefix,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        );
        live.pending.insert(id.clone(), request);
        Ok(id)
    }

    /// The upstream request a client's answer (by id) belongs to.
    pub fn take_request(&self, id: &str) -> Option<ServerRequest> {
        self.live().pending.remove(id)
    }

    /// Passes the client's progress on an upstream's request to that upstream; progress
    /// for no waiting request is dropped.
    pub fn forward_progress(&self, params: serde_json::Map<String, Value>) {
        let live = self.live();
        let Some(token) = params.get("progressToken") else {
            return;
        };
        if let Some(request) = live
            .pending
            .values()
            .find(|request| request.progress_token() == Some(token))
        {
            request.progress(params);
        }
    }

    pub fn set_log_level(&self, level: &str) {
        self.live().log_level = Some(level.to_owned());
    }

    /// Whether a log message of `level` passes the level the client set (all do until
    /// it sets one).
    pub fn wants_log(&self, level: Option<&str>) -> bool {
        const LEVELS: [&str; 8] = [
            "debug",
            "info",
            "notice",
            "warning",
            "error",
            "critical",
            "alert",
            "emergency",
        ];
        let rank = |level: &str| LEVELS.iter().position(|l| *l == level);
        match (
            self.live().log_level.as_deref().and_then(rank),
            level.and_then(rank),
        ) {
            (Some(threshold), Some(level)) => level >= threshold,
            _ => true,
        }
    }

    pub fn subscribe(&self, uri: &str) {
        let mut live = self.live();
        if live.subscriptions.len() < MAX_SUBSCRIPTIONS {
            live.subscriptions.insert(uri.to_owned());
        }
    }

    pub fn unsubscribe(&self, uri: &str) {
        self.live().subscriptions.remove(uri);
    }

    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.live().subscriptions.contains(uri)
    }

    /// Registers a client request in flight so `notifications/cancelled` can stop it.
    pub fn track(&self, request_id: String, handle: AbortHandle) {
        let mut live = self.live();
        if live.in_flight.len() < MAX_IN_FLIGHT {
            live.in_flight.insert(request_id, handle);
        }
    }

    pub fn untrack(&self, request_id: &str) {
        self.live().in_flight.remove(request_id);
    }

    /// Stops a request the client cancelled.
    pub fn cancel(&self, request_id: &str) {
        if let Some(handle) = self.live().in_flight.remove(request_id) {
            handle.abort();
        }
    }
}

/// Held by an open GET stream: keeps the session alive and learns when it closes.
#[derive(Debug)]
pub(crate) struct StreamClaim {
    session: Arc<Session>,
    closed: watch::Receiver<bool>,
    messages: mpsc::Receiver<Value>,
}

impl StreamClaim {
    /// The next message for the stream; `None` once the session is deleted, expires or
    /// the server shuts down.
    pub async fn next(&mut self) -> Option<Value> {
        tokio::select! {
            message = self.messages.recv() => message,
            _ = self.closed.wait_for(|closed| *closed) => None,
        }
    }
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        self.session.live().stream = None;
        self.session.touch();
        self.session.stream_open.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// The prefix of a server request's id held in a cluster: `warden:<replica>:`.
const CLUSTER_REQUEST_PREFIX: &str = "warden:";

/// The replica that holds the server request `id` (in a cluster).
pub(crate) fn holder_of(id: &str) -> Option<&str> {
    let (replica, _) = id.strip_prefix(CLUSTER_REQUEST_PREFIX)?.rsplit_once(':')?;
    Some(replica)
}

pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    max: usize,
    max_per_key: usize,
    idle_timeout: Duration,
    shared: Option<Arc<dyn ClusterState>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn unreachable(_: Unreachable) -> GatewayError {
    GatewayError::SharedUnavailable
}

impl Sessions {
    pub fn new(config: &warden_config::Sessions, shared: Option<Arc<dyn ClusterState>>) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max: config.max_sessions,
            max_per_key: config.max_per_key,
            idle_timeout: config.idle_timeout,
            shared,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session object for this replica.
    fn session(&self, id: String, key_id: &str, client: ClientFacts) -> Arc<Session> {
        let request_prefix = match &self.shared {
            Some(shared) => format!("{CLUSTER_REQUEST_PREFIX}{}:", shared.replica_id()),
            None => "warden-".to_owned(),
        };
        Arc::new(Session {
            id,
            key_id: key_id.to_owned(),
            client,
            request_prefix,
            next_request: AtomicU64::new(0),
            shared: self.shared.clone(),
            live: Mutex::new(Live::default()),
            last_seen: Mutex::new(Instant::now()),
            closed: watch::channel(false).0,
            stream_open: AtomicBool::new(false),
            audited_names: OnceLock::new(),
        })
    }

    /// Opens a session for `key_id`. A key at its share loses its least recently used
    /// session (without an open stream, on one replica); with none to lose, or with the
    /// server full, the new one is refused.
    pub async fn create(
        &self,
        key_id: &str,
        client: ClientFacts,
        version: &str,
    ) -> Result<Arc<Session>, GatewayError> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let record = SessionRecord {
            key_id: key_id.to_owned(),
            version: version.to_owned(),
            client_name: client.name.clone(),
            capabilities: client.capabilities.to_string(),
        };
        let session = self.session(id, key_id, client);
        if let Some(shared) = &self.shared {
            // Room here first: a replica that is full evicts nothing anywhere.
            {
                let mut map = self.map();
                if map.len() >= self.max {
                    Self::expire(&mut map, self.idle_timeout);
                    if map.len() >= self.max {
                        return Err(GatewayError::SessionLimit);
                    }
                }
            }
            let evicted = shared
                .open_session(&session.id, &record, self.idle_timeout, self.max_per_key)
                .await
                .map_err(unreachable)?;
            for id in evicted {
                tracing::info!(
                    key_id,
                    "the key's least recently used session was closed to make room"
                );
                let _ = shared.publish(&BusMessage::Closed { session: id }).await;
            }
        }
        let mut map = self.map();
        let of_key: Vec<&Arc<Session>> = map.values().filter(|s| s.key_id == key_id).collect();
        if self.shared.is_none() && of_key.len() >= self.max_per_key {
            let now = Instant::now();
            let oldest = of_key
                .into_iter()
                .filter(|s| !s.stream_open.load(Ordering::Acquire))
                .max_by_key(|s| s.idle_for(now))
                .map(|s| s.id.clone())
                .ok_or(GatewayError::SessionLimit)?;
            if let Some(evicted) = map.remove(&oldest) {
                evicted.close();
                tracing::info!(
                    key_id,
                    "the key's least recently used session was closed to make room"
                );
            }
        }
        if map.len() >= self.max {
            Self::expire(&mut map, self.idle_timeout);
            if map.len() >= self.max {
                return Err(GatewayError::SessionLimit);
            }
        }
        map.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The session, if it exists and belongs to this key. Another key's session is as
    /// unknown as a made-up one. In a cluster, the shared record decides: a session
    /// another replica opened is adopted, one ended elsewhere is closed here too.
    pub async fn get(&self, id: &str, key_id: &str) -> Result<Arc<Session>, GatewayError> {
        let local = self.map().get(id).cloned();
        let Some(shared) = &self.shared else {
            let session = local
                .filter(|s| s.key_id == key_id)
                .ok_or(GatewayError::UnknownSession)?;
            session.touch();
            return Ok(session);
        };
        let record = shared
            .session(id, Some(self.idle_timeout))
            .await
            .map_err(unreachable)?;
        let Some(record) = record else {
            self.close_here(id);
            return Err(GatewayError::UnknownSession);
        };
        if record.key_id != key_id {
            return Err(GatewayError::UnknownSession);
        }
        let session = match local {
            Some(session) => session,
            None => {
                let client = ClientFacts {
                    capabilities: serde_json::from_str(&record.capabilities).unwrap_or_default(),
                    name: record.client_name,
                };
                let adopted = self.session(id.to_owned(), key_id, client);
                let mut map = self.map();
                if map.len() >= self.max {
                    Self::expire(&mut map, self.idle_timeout);
                    if map.len() >= self.max {
                        return Err(GatewayError::SessionLimit);
                    }
                }
                map.entry(id.to_owned()).or_insert(adopted).clone()
            }
        };
        session.touch();
        Ok(session)
    }

    /// Whether this key has a live session by this id (without counting as its use).
    pub async fn is_open(&self, id: &str, key_id: &str) -> Result<bool, GatewayError> {
        match &self.shared {
            None => Ok(self.map().get(id).is_some_and(|s| s.key_id == key_id)),
            Some(shared) => Ok(shared
                .session(id, None)
                .await
                .map_err(unreachable)?
                .is_some_and(|record| record.key_id == key_id)),
        }
    }

    /// Ends the session (on every replica).
    pub async fn remove(&self, id: &str, key_id: &str) -> Result<(), GatewayError> {
        if let Some(shared) = &self.shared {
            self.get(id, key_id).await?;
            shared.close_session(id).await.map_err(unreachable)?;
            self.close_here(id);
            let closed = BusMessage::Closed {
                session: id.to_owned(),
            };
            let _ = shared.publish(&closed).await;
            return Ok(());
        }
        let mut map = self.map();
        match map.get(id) {
            Some(session) if session.key_id == key_id => {
                session.close();
                map.remove(id);
                Ok(())
            }
            _ => Err(GatewayError::UnknownSession),
        }
    }

    /// Closes this replica's copy of a session that ended.
    pub fn close_here(&self, id: &str) {
        if let Some(session) = self.map().remove(id) {
            session.close();
        }
    }

    /// This replica's copy of a session, if it has one.
    pub fn here(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// Drops the sessions idle here for `idle_timeout` (never one with an open stream).
    /// In a cluster the copy goes but the session lives on (Redis decides when it
    /// ends), so a copy still running a call or waiting for an answer is kept, and
    /// none is closed.
    fn expire(map: &mut HashMap<String, Arc<Session>>, idle_timeout: Duration) {
        let now = Instant::now();
        map.retain(|_, session| {
            let shared = session.shared.is_some();
            let keep = session.stream_open.load(Ordering::Acquire)
                || session.idle_for(now) < idle_timeout
                || (shared && session.is_busy());
            if !keep && !shared {
                session.close();
            }
            keep
        });
    }

    /// In a cluster, a session whose stream is open here, or which runs a call or waits
    /// for an answer here, is in use: its shared record's idle clock restarts, as a
    /// request's would.
    async fn keep_in_use_alive(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let in_use: Vec<String> = self
            .map()
            .values()
            .filter(|s| s.stream_open.load(Ordering::Acquire) || s.is_busy())
            .map(|s| s.id.clone())
            .collect();
        for id in in_use {
            let _ = shared.session(&id, Some(self.idle_timeout)).await;
        }
    }

    pub fn close_all(&self) {
        for (_, session) in self.map().drain() {
            session.close();
        }
    }

    /// Every live session, for messages that concern them all.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }

    /// Whether sessions are shared with other replicas.
    pub fn shared(&self) -> Option<&Arc<dyn ClusterState>> {
        self.shared.as_ref()
    }
}

/// Expires idle sessions until `stop` flips.
pub(crate) async fn sweep_until(sessions: Arc<Sessions>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(sweep_interval(sessions.idle_timeout));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        if stopping {
            return;
        }
        Sessions::expire(&mut sessions.map(), sessions.idle_timeout);
        sessions.keep_in_use_alive().await;
    }
}

/// How often idle sessions are looked for: a quarter of the idle timeout, so that a
/// session ends at most a quarter late and a shared record in use is refreshed four
/// times before it could expire, but at most every 30 s.
fn sweep_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(100), MAX_SWEEP_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(max: usize, idle: Duration, max_per_key: usize) -> Sessions {
        Sessions::new(
            &warden_config::Sessions {
                max_sessions: max,
                idle_timeout: idle,
                max_per_key,
            },
            None,
        )
    }

    #[tokio::test]
    async fn sessions_belong_to_their_key() {
        let sessions = sessions(10, Duration::from_secs(60), 10);
        let s = sessions
            .create("key_a", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        assert!(s.id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(s.id.len() >= 43);
        assert!(sessions.get(&s.id, "key_a").await.is_ok());
        assert!(matches!(
            sessions.get(&s.id, "key_b").await,
            Err(GatewayError::UnknownSession)
        ));
        assert!(matches!(
            sessions.remove(&s.id, "key_b").await,
            Err(GatewayError::UnknownSession)
        ));
        sessions.remove(&s.id, "key_a").await.unwrap();
        assert!(matches!(
            sessions.get(&s.id, "key_a").await,
            Err(GatewayError::UnknownSession)
        ));
    }

    #[tokio::test]
    async fn the_cap_holds_and_idle_sessions_make_room() {
        let sessions = sessions(2, Duration::from_millis(0), 10);
        sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        let held = sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        let _claim = held.open_stream().unwrap();
        // The idle one is expired to make room; the one with an open stream is kept.
        sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        assert!(sessions.get(&held.id, "k").await.is_ok());
        let strict = self::sessions(1, Duration::from_secs(3600), 10);
        strict
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        assert!(matches!(
            strict
                .create("k", ClientFacts::default(), "2025-11-25")
                .await,
            Err(GatewayError::SessionLimit)
        ));
    }

    #[tokio::test]
    async fn one_stream_per_session() {
        let sessions = sessions(2, Duration::from_secs(60), 2);
        let s = sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        let claim = s.open_stream().unwrap();
        assert!(matches!(
            s.open_stream(),
            Err(GatewayError::StreamAlreadyOpen)
        ));
        drop(claim);
        assert!(s.open_stream().is_ok());
    }

    #[tokio::test]
    async fn a_key_at_its_share_loses_its_least_recently_used_session() {
        let sessions = sessions(100, Duration::from_secs(3600), 3);
        let first = sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        let streaming = sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        let _claim = streaming.open_stream().unwrap();
        let third = sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        sessions.get(&third.id, "k").await.unwrap();
        // Another key's sessions are not counted or touched.
        let other = sessions
            .create("other", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        sessions
            .create("k", ClientFacts::default(), "2025-11-25")
            .await
            .unwrap();
        assert!(
            sessions.get(&first.id, "k").await.is_err(),
            "the oldest idle one goes"
        );
        for kept in [&streaming, &third] {
            assert!(sessions.get(&kept.id, "k").await.is_ok());
        }
        assert!(sessions.get(&other.id, "other").await.is_ok());
    }

    #[test]
    fn only_what_warden_uses_of_initialize_is_kept() {
        let padding = "x".repeat(1 << 20);
        let capabilities = serde_json::json!({
            "elicitation": {"form": {}, "url": {}},
            "sampling": {"padding": padding},
            "experimental": {"padding": padding},
        });
        let info = serde_json::json!({"name": format!("client\n{padding}"), "version": "1.0", "extra": padding});
        let facts = ClientFacts::from_initialize(&capabilities, &info);
        assert_eq!(
            facts.capabilities,
            serde_json::json!({"elicitation": {"form": {}, "url": {}}, "sampling": {}})
        );
        assert!(
            facts.name.len() <= 2 * MAX_CLIENT_NAME_CHARS + 1,
            "{}",
            facts.name.len()
        );
        assert!(facts.name.starts_with("clientxxx") && facts.name.ends_with("/1.0"));
    }
}
