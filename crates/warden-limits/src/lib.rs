//! Rate limits that keep the server alive when one user message fans out into fifteen
//! calls and an agent retries in a loop. Each layer answers with a clear, retryable
//! refusal naming itself; a call is refused before it reaches an upstream or not at
//! all. Layers, in the order a call meets them:
//!
//! 1. per client address (before authentication), every HTTP request;
//! 2. per key, every JSON-RPC request (a key's own `rpm` replaces the default);
//! 3. for calls (`tools/call`, `prompts/get`, `resources/read`, `completion/complete`):
//!    per session, per key and tool, then concurrency (per key, then in all) with a
//!    short FIFO queue, then the tenant's daily cost, charged only once the call has
//!    its slots;
//! 4. per upstream concurrency, right before the upstream is called.
//!
//! Every refusal is counted by layer, and logged at most once per key and layer a
//! minute.

mod bucket;
mod gate;
mod ledger;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use warden_config::{Rate, ToolRules};
use warden_store::CostStore;

use crate::bucket::Buckets;
use crate::gate::{Closed, Gate, Gates};
use crate::ledger::Ledger;

/// How often spent costs are written to disk.
const COST_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A key's refusals by one layer are logged once per this window.
const LOG_WINDOW: Duration = Duration::from_secs(60);
const MAX_LOGGED: usize = 16_384;
const MAX_SESSIONS_COUNTED: usize = 100_000;

/// The layer that refused, named as in audit records and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    PerIp,
    PerKey,
    PerSession,
    PerTool,
    Concurrency,
    DailyCost,
    Upstream,
    Streams,
}

impl Layer {
    pub const ALL: [Layer; 8] = [
        Self::PerIp,
        Self::PerKey,
        Self::PerSession,
        Self::PerTool,
        Self::Concurrency,
        Self::DailyCost,
        Self::Upstream,
        Self::Streams,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PerIp => "rate.per_ip",
            Self::PerKey => "rate.per_key",
            Self::PerSession => "rate.per_session",
            Self::PerTool => "rate.per_tool",
            Self::Concurrency => "rate.concurrency",
            Self::DailyCost => "rate.daily_cost",
            Self::Upstream => "rate.upstream",
            Self::Streams => "rate.streams",
        }
    }
}

/// A refusal: which layer, what it says, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub layer: Layer,
    /// Whole seconds, at least one.
    pub retry_after: u64,
    pub message: String,
}

impl Refusal {
    fn new(layer: Layer, wait: Duration, what: impl std::fmt::Display) -> Self {
        let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let retry_after = retry_after.max(1);
        Self {
            layer,
            retry_after,
            message: format!(
                "rate limited ({}): {what}; retry in {retry_after} s",
                layer.name()
            ),
        }
    }
}

/// A call's slots (its key's, the total, and its upstream's); released when dropped.
#[derive(Debug)]
pub struct CallPermit {
    _slots: Vec<OwnedSemaphorePermit>,
}

/// An open GET stream's place under its key's stream cap.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

/// What a call is, for the limiter.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub key_id: &'a str,
    pub tenant: &'a str,
    /// The session (legacy) or client instance (modern) it belongs to.
    pub session: &'a str,
    /// The catalogue name, for `tools/call`.
    pub tool: Option<&'a str>,
}

pub struct Limiter {
    rate: Rate,
    tools: BTreeMap<String, ToolRules>,
    per_ip: Buckets<IpAddr>,
    per_key: Buckets<String>,
    per_tool: Buckets<(String, String)>,
    session_calls: Mutex<HashMap<String, u64>>,
    key_gates: Gates<String>,
    total: Gate,
    upstreams: Vec<Gate>,
    ledger: Arc<Ledger>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
    refused: [AtomicU64; Layer::ALL.len()],
    logged: Mutex<HashMap<(String, Layer), Instant>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    /// `upstream_slots[i]` caps calls in flight to upstream `i`; `costs` keeps daily
    /// spending across restarts.
    pub fn new(
        rate: &Rate,
        tools: &BTreeMap<String, ToolRules>,
        upstream_slots: &[usize],
        costs: Option<Arc<CostStore>>,
    ) -> Result<Self, warden_store::StoreError> {
        Ok(Self {
            ledger: Arc::new(Ledger::open(
                costs,
                rate.daily_cost_cap,
                rate.tenant_caps.clone(),
            )?),
            rate: rate.clone(),
            tools: tools.clone(),
            per_ip: Buckets::new(),
            per_key: Buckets::new(),
            per_tool: Buckets::new(),
            session_calls: Mutex::new(HashMap::new()),
            key_gates: Gates::new(rate.max_concurrent_per_key),
            total: Gate::new(rate.max_concurrent_total),
            upstreams: upstream_slots.iter().map(|&max| Gate::new(max)).collect(),
            streams: Arc::new(Mutex::new(HashMap::new())),
            refused: Default::default(),
            logged: Mutex::new(HashMap::new()),
        })
    }

    /// Writes spent costs in batches until `stop` turns true, then once more.
    pub async fn keep_costs(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        self.ledger
            .clone()
            .flush_until(COST_FLUSH_INTERVAL, stop)
            .await;
    }

    /// Refusals so far, by layer.
    pub fn refusals(&self) -> Vec<(Layer, u64)> {
        Layer::ALL
            .iter()
            .zip(&self.refused)
            .map(|(layer, count)| (*layer, count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Layer 1: every HTTP request from `address`, before authentication.
    pub fn admit_address(&self, address: IpAddr) -> Result<(), Refusal> {
        let rpm = self.rate.per_ip_rpm;
        self.per_ip.take(&address, rpm).map_err(|wait| {
            self.refuse(
                &address.to_string(),
                Refusal::new(
                    Layer::PerIp,
                    wait,
                    format_args!("over {rpm} requests a minute from this address"),
                ),
            )
        })
    }

    /// Layer 2: every JSON-RPC request of a key.
    pub fn admit_request(&self, key_id: &str, own_rpm: Option<u32>) -> Result<(), Refusal> {
        let rpm = own_rpm.unwrap_or(self.rate.per_key_rpm);
        self.per_key.take(&key_id.to_owned(), rpm).map_err(|wait| {
            self.refuse(
                key_id,
                Refusal::new(
                    Layer::PerKey,
                    wait,
                    format_args!("this key is over {rpm} requests a minute"),
                ),
            )
        })
    }

    /// Layer 3: a call that would reach upstream `upstream`. Waits (briefly) for
    /// slots; the cost is charged only once the call holds them.
    pub async fn admit_call(&self, call: Call<'_>, upstream: usize) -> Result<CallPermit, Refusal> {
        let refuse = |refusal| self.refuse(call.key_id, refusal);
        self.count_session(call.session).map_err(refuse)?;
        let rules = call
            .tool
            .and_then(|tool| warden_config::rules_for(&self.tools, tool));
        if let (Some(tool), Some(rpm)) = (call.tool, rules.and_then(|r| r.rpm)) {
            self.per_tool
                .take(&(call.key_id.to_owned(), tool.to_owned()), rpm)
                .map_err(|wait| {
                    refuse(Refusal::new(
                        Layer::PerTool,
                        wait,
                        format_args!("this key is over {rpm} calls a minute to this tool"),
                    ))
                })?;
        }
        let (depth, timeout) = (self.rate.queue_depth, self.rate.queue_timeout);
        let busy = |layer, closed| {
            let what = match closed {
                Closed::QueueFull => "too many calls in flight and waiting",
                Closed::TimedOut => "no call slot freed up in time",
            };
            refuse(Refusal::new(layer, Duration::from_secs(1), what))
        };
        let key_slot = self
            .key_gates
            .get(&call.key_id.to_owned())
            .enter(depth, timeout)
            .await
            .map_err(|closed| busy(Layer::Concurrency, closed))?;
        let total_slot = self
            .total
            .enter(depth, timeout)
            .await
            .map_err(|closed| busy(Layer::Concurrency, closed))?;
        let mut slots = vec![key_slot, total_slot];
        if let Some(gate) = self.upstreams.get(upstream) {
            slots.push(
                gate.enter(depth, timeout)
                    .await
                    .map_err(|closed| busy(Layer::Upstream, closed))?,
            );
        }
        let cost = match call.tool {
            Some(_) => rules.map_or(warden_config::DEFAULT_TOOL_COST, |r| r.cost),
            None => 0,
        };
        self.ledger.reserve(call.tenant, cost).map_err(|over| {
            let wait = Duration::from_secs(ledger::until_midnight());
            refuse(Refusal::new(
                Layer::DailyCost,
                wait,
                format_args!(
                    "this tenant has spent its daily cost cap of {}; it resets at 00:00 UTC",
                    over.cap
                ),
            ))
        })?;
        Ok(CallPermit { _slots: slots })
    }

    /// A GET stream for `key_id`, if it has fewer open than the cap.
    pub fn open_stream(&self, key_id: &str) -> Result<StreamSlot, Refusal> {
        let max = self.rate.max_streams_per_key;
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = streams.entry(key_id.to_owned()).or_insert(0);
        if *open >= max {
            drop(streams);
            return Err(self.refuse(
                key_id,
                Refusal::new(
                    Layer::Streams,
                    Duration::from_secs(5),
                    format_args!("this key has {max} streams open"),
                ),
            ));
        }
        *open += 1;
        Ok(StreamSlot {
            streams: self.streams.clone(),
            key: key_id.to_owned(),
        })
    }

    fn count_session(&self, session: &str) -> Result<(), Refusal> {
        let max = self.rate.per_session_calls;
        let mut calls = self
            .session_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if calls.len() >= MAX_SESSIONS_COUNTED && !calls.contains_key(session) {
            // Forget the sessions that used least, not everyone's count.
            let mut counts: Vec<u64> = calls.values().copied().collect();
            let (_, median, _) = counts.select_nth_unstable(calls.len() / 2);
            let median = *median;
            calls.retain(|_, count| *count > median);
        }
        let count = calls.entry(session.to_owned()).or_insert(0);
        if *count >= max {
            return Err(Refusal::new(
                Layer::PerSession,
                Duration::from_secs(60),
                format_args!("this session has made its {max} calls; start a new one"),
            ));
        }
        *count += 1;
        Ok(())
    }

    /// Counts the refusal, and logs it unless this key's refusals by this layer were
    /// logged within the window.
    fn refuse(&self, who: &str, refusal: Refusal) -> Refusal {
        if let Some(index) = Layer::ALL.iter().position(|l| *l == refusal.layer) {
            self.refused[index].fetch_add(1, Ordering::Relaxed);
        }
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() >= MAX_LOGGED {
            logged.retain(|_, at| at.elapsed() < LOG_WINDOW);
        }
        let key = (who.to_owned(), refusal.layer);
        if logged.get(&key).is_none_or(|at| at.elapsed() >= LOG_WINDOW) {
            logged.insert(key, Instant::now());
            tracing::warn!(
                who,
                layer = refusal.layer.name(),
                "rate limit refusal (more from this caller and layer are counted, not logged, for a minute)"
            );
        }
        refusal
    }
}
