//! The audit trail's request side: a record for every request that reached policy,
//! allowed or refused, queued before its answer leaves (so a sent answer always has its
//! record on the way) and written in batches off the request path. The queue is
//! bounded; when it is full a request waits for room rather than lose its record.
//! When the store cannot be written (PostgreSQL away), the batch in hand is kept and
//! retried, the queue fills, and once it is full new requests are refused (503) rather
//! than served unaudited.
//!
//! With `[audit] wait_for_write` (the default on PostgreSQL), an answer leaves only once
//! its record is written: the writer then commits whatever is queued at once (group
//! commit) instead of gathering for the flush delay, and a replica killed outright has
//! lost no record of a call its client was answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use warden_config::Audit as AuditConfig;
use warden_proto::{Era, Message, codes};
use warden_store::{Audit, AuditRecord, Principal};
use warden_telemetry::Trace;
use warden_upstream::{Upstream, Withheld};

use crate::answer::UPSTREAM_TIMEOUT;
use crate::error::{GatewayError, RpcError};
use crate::metrics::Metrics;

/// Records written in one transaction, at most.
const MAX_BATCH: usize = 1_024;
/// Names and URIs kept in a record, at most (a hallucinated name can be megabytes).
const MAX_TARGET_CHARS: usize = 256;
/// The first wait before a failed write is tried again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A batch the store refuses for what it holds (not for being away) is tried this
/// often before it is given up, loudly.
const REFUSED_ATTEMPTS: u32 = 3;
/// At shutdown, how long the writer keeps trying a store that is away.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);

/// A record on its way to the store, and who waits for it to be written.
struct Queued {
    record: AuditRecord,
    written: Option<oneshot::Sender<()>>,
}

impl From<AuditRecord> for Queued {
    fn from(record: AuditRecord) -> Self {
        Self {
            record,
            written: None,
        }
    }
}

pub struct Auditor {
    sender: mpsc::Sender<Queued>,
    receiver: Mutex<Option<mpsc::Receiver<Queued>>>,
    capacity: usize,
    /// How long the writer gathers a batch (zero when answers wait for their record).
    flush: Duration,
    /// Answers wait for their record to be written, at most this long.
    wait_for_write: Option<Duration>,
    /// Key of the arguments hash, when `args_hash` is on.
    args_key: Option<[u8; 32]>,
    store: Arc<dyn Audit>,
    metrics: Arc<Metrics>,
    /// Off only by the operator's explicit choice: records are then counted, not kept.
    enabled: bool,
    /// The last write failed: records wait in the queue until the store is back.
    failing: AtomicBool,
    /// Set once shutting down: the writer stops retrying past its patience.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").finish_non_exhaustive()
    }
}

impl Auditor {
    /// `args_key` is a secret of this installation (the arguments hash must not be
    /// reversible by guessing arguments).
    pub fn new(
        store: Arc<dyn Audit>,
        config: &AuditConfig,
        args_key: [u8; 32],
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (sender, receiver) = mpsc::channel(config.queue);
        Arc::new(Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            capacity: config.queue,
            flush: match config.wait_for_write {
                Some(_) => Duration::ZERO,
                None => config.flush,
            },
            wait_for_write: config.wait_for_write,
            args_key: config.args_hash.then_some(args_key),
            store,
            metrics,
            enabled: config.enabled,
            failing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    /// Whether the trail cannot take another record now: the store is failing and the
    /// queue is full. Requests are then refused before they run.
    pub(crate) fn is_backed_up(&self) -> bool {
        self.enabled && self.failing.load(Ordering::Relaxed) && self.sender.capacity() == 0
    }

    /// Whether the last write to the store failed (for `/readyz`).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Records waiting for the writer.
    pub fn queued(&self) -> usize {
        self.capacity - self.sender.capacity()
    }

    /// Writes queued records until `stop` turns true, then everything still queued.
    pub async fn write_until(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(mut receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        loop {
            let first = tokio::select! {
                record = receiver.recv() => record,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(first) = first else {
                break;
            };
            // Whatever else arrives within the flush delay goes in the same batch.
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.flush;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) | Err(_) => break,
                }
            }
            self.write(batch).await;
            // Records that queued up during that write have waited already: they go
            // at once, so no record waits more than one flush delay and two writes.
            loop {
                let mut waiting = Vec::new();
                while waiting.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(record) => waiting.push(record),
                        Err(_) => break,
                    }
                }
                if waiting.is_empty() {
                    break;
                }
                self.write(waiting).await;
            }
        }
        // Shutting down: nothing new comes in; write what is left.
        self.stopping.store(true, Ordering::Relaxed);
        receiver.close();
        let mut rest = Vec::new();
        while let Some(record) = receiver.recv().await {
            rest.push(record);
            if rest.len() == MAX_BATCH {
                self.write(std::mem::take(&mut rest)).await;
            }
        }
        if !rest.is_empty() {
            self.write(rest).await;
        }
    }

    /// Writes `batch`, trying again while the store is away (the queue holds what comes
    /// meanwhile), until written; gives up only on a batch the store refuses for what
    /// it holds, or at shutdown past [`SHUTDOWN_PATIENCE`].
    async fn write(&self, queued: Vec<Queued>) {
        let count = queued.len();
        let (batch, waiting): (Vec<AuditRecord>, Vec<Option<oneshot::Sender<()>>>) = queued
            .into_iter()
            .map(|queued| (queued.record, queued.written))
            .unzip();
        let mut wait = RETRY_FIRST;
        let mut refused = 0;
        let mut stopping_since: Option<Instant> = None;
        loop {
            let error = match self.store.append(&batch).await {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(count, "audit trail written again");
                    }
                    for written in waiting.into_iter().flatten() {
                        let _ = written.send(());
                    }
                    return;
                }
                Err(error) => error,
            };
            if !self.failing.swap(true, Ordering::Relaxed) {
                tracing::error!(%error, count, "audit records not written; they are kept and written when the store answers (requests are refused once the queue is full)");
            }
            if !error.is_unavailable() {
                refused += 1;
                if refused >= REFUSED_ATTEMPTS {
                    tracing::error!(%error, count, "audit records refused by the store; given up");
                    self.failing.store(false, Ordering::Relaxed);
                    return;
                }
            }
            if self.stopping.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SHUTDOWN_PATIENCE {
                    tracing::error!(%error, count, "shutting down with audit records unwritten: the store did not answer");
                    return;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// Records something that happened without a client asking: a held call that
    /// expired, an operator's action at the console.
    pub async fn record(&self, record: AuditRecord) {
        if self.enabled {
            let _ = self.sender.send(record.into()).await;
        }
    }

    /// Records every tool the pins withhold (a changed definition, or a suspicious one
    /// on first sight), for as long as the upstreams run.
    pub async fn record_withheld(self: Arc<Self>, mut withheld: broadcast::Receiver<Withheld>) {
        loop {
            let tool = match withheld.recv().await {
                Ok(tool) => tool,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(missed, "withheld tools not audited");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !self.enabled {
                continue;
            }
            let rule = if tool.reason.contains("changed") {
                "pin.changed"
            } else {
                "pin.suspicious"
            };
            let record = AuditRecord {
                at_ms: now_ms(),
                tenant: "*".into(),
                principal: "warden".into(),
                method: "catalogue/withhold".into(),
                target: Some(warden_redact::text(&tool.tool).into_owned()),
                upstream: Some(tool.upstream),
                decision: "refused".into(),
                rule: Some(rule.into()),
                outcome: "refused".into(),
                ..AuditRecord::default()
            };
            let _ = self.sender.send(record.into()).await;
        }
    }

    /// Starts the record of one message a client sent (its instance and client name
    /// are added once the transport knows them, see [`Draft::identify`]).
    pub(crate) fn begin(
        self: &Arc<Self>,
        principal: &Principal,
        era: Era,
        message: &Message,
        request_bytes: usize,
    ) -> Draft {
        let (method, params) = match message {
            Message::Request(request) => (request.method.as_str(), Some(&request.params)),
            Message::Notification { method, params } => (method.as_str(), Some(params)),
            Message::Response(_) => ("(response)", None),
        };
        let target = params
            .and_then(|params| match method {
                "tools/call" | "prompts/get" => params.get("name"),
                "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                    params.get("uri")
                }
                "completion/complete" => params
                    .get("ref")
                    .and_then(|r| r.get("name").or_else(|| r.get("uri"))),
                _ => None,
            })
            .and_then(Value::as_str)
            .map(|target| {
                let cut: String = target.chars().take(MAX_TARGET_CHARS).collect();
                warden_redact::text(&cut).into_owned()
            });
        let args_hash = match (&self.args_key, params.and_then(|p| p.get("arguments"))) {
            (Some(key), Some(arguments)) => Some(keyed_hash(key, arguments)),
            _ => None,
        };
        Draft {
            auditor: self.clone(),
            started: Instant::now(),
            upstream: Arc::new(OnceLock::new()),
            pending: Arc::new(OnceLock::new()),
            allowed_by: Arc::new(OnceLock::new()),
            verdict: None,
            trace: Trace::default(),
            record: Some(AuditRecord {
                at_ms: now_ms(),
                tenant: principal.tenant.clone(),
                principal: principal.key_id.clone(),
                era: era.as_str().to_owned(),
                // Anything a client chose goes through redaction.
                method: warden_redact::text(
                    &method.chars().take(MAX_TARGET_CHARS).collect::<String>(),
                )
                .into_owned(),
                target,
                request_bytes: i64::try_from(request_bytes).unwrap_or(i64::MAX),
                args_hash,
                ..AuditRecord::default()
            }),
        }
    }
}

/// Why a call that was answered has not run yet, once dispatch knows.
pub(crate) type PendingCell = Arc<OnceLock<&'static str>>;

/// The upstream a request was sent to, set once dispatch picks it.
pub(crate) type UpstreamUsed = Arc<OnceLock<Arc<Upstream>>>;

/// How a request was decided, for the request log line.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub decision: &'static str,
    pub rule: Option<&'static str>,
    /// The policies that decided (their `@id`s), when policies did.
    pub policy: Option<String>,
    pub outcome: &'static str,
}

/// The policies that allowed a call, once dispatch knows.
pub(crate) type PolicyCell = Arc<OnceLock<String>>;

/// Where a request's verdict lands once known (a stream's, only when it ends).
pub(crate) type VerdictCell = Arc<OnceLock<Verdict>>;

/// The client instance (legacy session, or modern key and client) and the client's
/// name, as the client chose them, redacted as records carry them. A session works
/// them out once for all its calls.
#[derive(Debug)]
pub(crate) struct AuditedNames {
    instance: String,
    client: String,
}

impl AuditedNames {
    pub(crate) fn of(instance: &str, client: &str) -> Self {
        Self {
            instance: warden_redact::text(instance).into_owned(),
            client: warden_redact::text(client).into_owned(),
        }
    }
}

/// A record in the making. Finished with the request's outcome; dropped unfinished (the
/// client went away, or the call was cancelled), it is recorded as cancelled.
pub(crate) struct Draft {
    auditor: Arc<Auditor>,
    started: Instant,
    /// The upstream that served the call, once dispatch knows it.
    pub upstream: UpstreamUsed,
    /// Set when the call did not run yet and waits for a person (`held`,
    /// `awaiting_confirmation`): the record says so instead of `allowed / ok`.
    pub pending: PendingCell,
    /// The policies that allowed the call (a refusal names its own in the error).
    pub allowed_by: PolicyCell,
    /// The request's trace (empty when tracing is off): its id goes on the record, and
    /// the outcome on its span.
    pub trace: Trace,
    record: Option<AuditRecord>,
    verdict: Option<VerdictCell>,
}

impl Draft {
    pub(crate) fn reporting_to(mut self, verdict: VerdictCell) -> Self {
        self.verdict = Some(verdict);
        self
    }

    /// Joins the record to the request's trace.
    pub(crate) fn traced(mut self, trace: &Trace) -> Self {
        if let Some(record) = &mut self.record {
            record.trace_id = trace.trace_id();
        }
        self.trace = trace.clone();
        self
    }

    /// Names the client instance and the client.
    pub(crate) fn identify(&mut self, names: &AuditedNames) {
        if let Some(record) = &mut self.record {
            record.instance.clone_from(&names.instance);
            record.client.clone_from(&names.client);
        }
    }

    /// A message that gets no record (a notification, a client's answer, a session
    /// opened): nothing is written.
    pub(crate) fn discard(mut self) {
        self.record = None;
    }

    /// Records a refusal of the transport (before the request ran).
    pub(crate) async fn refuse(self, error: &GatewayError) {
        self.finish(&Err(error.as_refusal())).await;
    }

    pub(crate) async fn finish(mut self, result: &Result<Value, RpcError>) {
        if !self.auditor.enabled {
            self.complete(result);
            return;
        }
        let _span = self.trace.span("warden.audit");
        // Room first (waiting while the writer is behind), the record second: if the
        // request is dropped while waiting, the draft still holds its record and `Drop`
        // writes it as cancelled. A record is never lost.
        let sender = self.auditor.sender.clone();
        let Ok(permit) = sender.reserve().await else {
            return;
        };
        let Some(record) = self.complete(result) else {
            return;
        };
        let Some(limit) = self.auditor.wait_for_write else {
            permit.send(record.into());
            return;
        };
        let (written, done) = oneshot::channel();
        permit.send(Queued {
            record,
            written: Some(written),
        });
        if !matches!(tokio::time::timeout(limit, done).await, Ok(Ok(()))) {
            tracing::warn!(
                wait_ms = limit.as_millis(),
                "an answer left before its audit record was written (the store is slow or away); the writer keeps trying"
            );
        }
    }

    fn complete(&mut self, result: &Result<Value, RpcError>) -> Option<AuditRecord> {
        let mut record = self.record.take()?;
        record.latency_us = i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX);
        record.upstream = self.upstream.get().map(|u| u.name().to_owned());
        let (decision, rule, outcome, result_bytes) = match result {
            Ok(result) => match self.pending.get() {
                Some(waiting) => ("pending", None, *waiting, json_len(result)),
                None => {
                    let outcome = if result.get("isError").and_then(Value::as_bool) == Some(true) {
                        "tool_error"
                    } else {
                        "ok"
                    };
                    ("allowed", None, outcome, json_len(result))
                }
            },
            Err(error) => match error.rule {
                Some(rule) => ("refused", Some(rule), "refused", 0),
                None if error.code == codes::UPSTREAM_UNAVAILABLE => {
                    let outcome = if error.message == UPSTREAM_TIMEOUT {
                        "timeout"
                    } else {
                        "unavailable"
                    };
                    ("allowed", None, outcome, 0)
                }
                None if error.code == codes::REQUEST_CANCELLED => ("allowed", None, "cancelled", 0),
                None if error.code == codes::STORE_UNAVAILABLE => {
                    ("allowed", None, "unavailable", 0)
                }
                None => ("allowed", None, "protocol_error", 0),
            },
        };
        self.auditor
            .metrics
            .request(&record.method, decision, outcome, rule);
        let policy = match result {
            // A forbid's refusal names its policies in `data.policy`.
            Err(error) if error.rule == Some("policy.forbid") => error
                .data
                .as_ref()
                .and_then(|data| data.get("policy")?.as_str())
                .map(str::to_owned),
            Err(_) => None,
            Ok(_) => self.allowed_by.get().cloned(),
        };
        // A policy's decision is recorded under its id (`policy:no-intern-writes`).
        record.rule = match &policy {
            Some(ids) => Some(format!("policy:{ids}")),
            None => rule.map(str::to_owned),
        };
        if let Some(cell) = &self.verdict {
            let _ = cell.set(Verdict {
                decision,
                rule,
                policy,
                outcome,
            });
        }
        self.trace_outcome(result, decision, rule, outcome);
        record.decision = decision.to_owned();
        record.outcome = outcome.to_owned();
        record.result_bytes = result_bytes;
        Some(record)
    }
}

impl Draft {
    /// The request's span learns how it ended: decision and outcome, the JSON-RPC error
    /// code, and for a refusal its layer and rule.
    fn trace_outcome(
        &self,
        result: &Result<Value, RpcError>,
        decision: &'static str,
        rule: Option<&'static str>,
        outcome: &'static str,
    ) {
        let trace = &self.trace;
        if !trace.is_recording() {
            return;
        }
        trace.set("warden.decision", decision);
        trace.set("warden.outcome", outcome);
        if let Some(upstream) = self.upstream.get() {
            trace.set("warden.upstream", upstream.name().to_owned());
        }
        if let Err(error) = result {
            trace.set("rpc.response.status_code", error.code.to_string());
            match rule {
                Some(rule) => trace.refuse(crate::error::layer_of(rule), rule),
                None => trace.fail(outcome.to_owned()),
            }
        } else if outcome == "tool_error" {
            trace.fail("tool_error".to_owned());
        }
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        let cancelled = Err(RpcError::new(codes::REQUEST_CANCELLED, "cancelled"));
        let Some(record) = self.complete(&cancelled).filter(|_| self.auditor.enabled) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(record)) =
            self.auditor.sender.try_send(record.into())
        {
            let sender = self.auditor.sender.clone();
            tokio::spawn(async move {
                let _ = sender.send(record).await;
            });
        }
    }
}

fn json_len(value: &Value) -> i64 {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    i64::try_from(counter.0).unwrap_or(i64::MAX)
}

/// HMAC-SHA256 of the canonical JSON of `arguments` (keys sorted), hex.
fn keyed_hash(key: &[u8; 32], arguments: &Value) -> String {
    let mut canonical = Vec::new();
    warden_proto::canonical::write(&mut canonical, arguments);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(&canonical);
    hex::encode(mac.finalize().into_bytes())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
