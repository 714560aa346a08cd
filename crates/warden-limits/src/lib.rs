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
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use warden_config::{Rate, ToolRules};
use warden_store::Costs;

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
    /// The limits in force and the gates that count against them; a reload swaps it.
    shape: RwLock<Arc<Shape>>,
    per_ip: Buckets<IpAddr>,
    per_key: Buckets<String>,
    per_tool: Buckets<(String, String)>,
    session_calls: Mutex<HashMap<String, u64>>,
    ledger: Arc<Ledger>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
    refused: [AtomicU64; Layer::ALL.len()],
    logged: Mutex<HashMap<(String, Layer), Instant>>,
}

/// The configured limits, and the concurrency gates sized by them. A gate whose size a
/// reload keeps is carried over with its calls in flight; a resized one is new, and the
/// calls in flight finish under the old one.
struct Shape {
    rate: Rate,
    tools: BTreeMap<String, ToolRules>,
    key_gates: Arc<Gates<String>>,
    total: Arc<Gate>,
    upstreams: Vec<Arc<Gate>>,
}

impl Shape {
    fn new(
        rate: &Rate,
        tools: &BTreeMap<String, ToolRules>,
        upstream_slots: &[usize],
        before: Option<&Shape>,
    ) -> Self {
        let kept = |old: Option<&Arc<Gate>>, max: usize| match old {
            Some(gate) if gate.max() == max => gate.clone(),
            _ => Arc::new(Gate::new(max)),
        };
        let key_gates = match before {
            Some(before) if before.rate.max_concurrent_per_key == rate.max_concurrent_per_key => {
                before.key_gates.clone()
            }
            _ => Arc::new(Gates::new(rate.max_concurrent_per_key)),
        };
        Self {
            rate: rate.clone(),
            tools: tools.clone(),
            key_gates,
            total: kept(before.map(|b| &b.total), rate.max_concurrent_total),
            upstreams: upstream_slots
                .iter()
                .enumerate()
                .map(|(index, &max)| kept(before.and_then(|b| b.upstreams.get(index)), max))
                .collect(),
        }
    }

    /// Today's cost cap of `tenant`.
    fn cap_of(&self, tenant: &str) -> u64 {
        self.rate
            .tenant_caps
            .get(tenant)
            .copied()
            .unwrap_or(self.rate.daily_cost_cap)
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    /// `upstream_slots[i]` caps calls in flight to upstream `i`; `costs` keeps daily
    /// spending across restarts.
    pub async fn new(
        rate: &Rate,
        tools: &BTreeMap<String, ToolRules>,
        upstream_slots: &[usize],
        costs: Option<Arc<dyn Costs>>,
    ) -> Result<Self, warden_store::StoreError> {
        Ok(Self {
            ledger: Arc::new(Ledger::open(costs).await?),
            shape: RwLock::new(Arc::new(Shape::new(rate, tools, upstream_slots, None))),
            per_ip: Buckets::new(),
            per_key: Buckets::new(),
            per_tool: Buckets::new(),
            session_calls: Mutex::new(HashMap::new()),
            streams: Arc::new(Mutex::new(HashMap::new())),
            refused: Default::default(),
            logged: Mutex::new(HashMap::new()),
        })
    }

    /// Puts new limits in force (a reload): rates, queues, caps and tool rules from the
    /// next request on. Buckets keep what they hold; a gate whose size changed starts
    /// anew, so calls in flight finish under the size they entered with.
    pub fn reconfigure(
        &self,
        rate: &Rate,
        tools: &BTreeMap<String, ToolRules>,
        upstream_slots: &[usize],
    ) {
        let mut shape = self.shape.write().unwrap_or_else(PoisonError::into_inner);
        let next = Shape::new(rate, tools, upstream_slots, Some(&shape));
        *shape = Arc::new(next);
    }

    fn shape(&self) -> Arc<Shape> {
        self.shape
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        let rpm = self.shape().rate.per_ip_rpm;
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
        let rpm = own_rpm.unwrap_or_else(|| self.shape().rate.per_key_rpm);
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
        let shape = self.shape();
        self.count_session(call.session, shape.rate.per_session_calls)
            .map_err(refuse)?;
        let rules = call
            .tool
            .and_then(|tool| warden_config::rules_for(&shape.tools, tool));
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
        let (depth, timeout) = (shape.rate.queue_depth, shape.rate.queue_timeout);
        let busy = |layer, closed| {
            let what = match closed {
                Closed::QueueFull => "too many calls in flight and waiting",
                Closed::TimedOut => "no call slot freed up in time",
            };
            refuse(Refusal::new(layer, Duration::from_secs(1), what))
        };
        let key_slot = shape
            .key_gates
            .get(&call.key_id.to_owned())
            .enter(depth, timeout)
            .await
            .map_err(|closed| busy(Layer::Concurrency, closed))?;
        let total_slot = shape
            .total
            .enter(depth, timeout)
            .await
            .map_err(|closed| busy(Layer::Concurrency, closed))?;
        let mut slots = vec![key_slot, total_slot];
        if let Some(gate) = shape.upstreams.get(upstream) {
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
        let cap = shape.cap_of(call.tenant);
        self.ledger
            .reserve(call.tenant, cost, cap)
            .map_err(|over| {
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
        let max = self.shape().rate.max_streams_per_key;
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

    fn count_session(&self, session: &str, max: u64) -> Result<(), Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> Rate {
        Rate {
            per_key_rpm: 2,
            per_ip_rpm: 100,
            max_concurrent_per_key: 1,
            max_concurrent_total: 10,
            queue_depth: 0,
            queue_timeout: Duration::ZERO,
            per_session_calls: 1_000,
            daily_cost_cap: 1_000,
            tenant_caps: BTreeMap::new(),
            max_streams_per_key: 1,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    fn call(tool: Option<&str>) -> Call<'_> {
        Call {
            key_id: "k",
            tenant: "t",
            session: "s",
            tool,
        }
    }

    #[tokio::test]
    async fn a_reload_changes_the_limits_from_the_next_request_on() {
        let limiter = Limiter::new(&rate(), &BTreeMap::new(), &[5], None)
            .await
            .unwrap();
        assert!(limiter.admit_request("k", None).is_ok());
        assert!(limiter.admit_request("k", None).is_ok());
        assert_eq!(
            limiter.admit_request("k", None).unwrap_err().layer,
            Layer::PerKey
        );
        let held = limiter.admit_call(call(None), 0).await.unwrap();
        assert_eq!(
            limiter.admit_call(call(None), 0).await.unwrap_err().layer,
            Layer::Concurrency
        );
        let _stream = limiter.open_stream("k").unwrap();
        assert!(limiter.open_stream("k").is_err());

        // More requests a minute, two calls at once per key, a tool of its own rate and
        // cost, a tenant cap, two streams.
        let wider = Rate {
            per_key_rpm: 600,
            max_concurrent_per_key: 2,
            tenant_caps: BTreeMap::from([("t".to_owned(), 3)]),
            max_streams_per_key: 2,
            ..rate()
        };
        let tools = BTreeMap::from([(
            "costly".to_owned(),
            ToolRules {
                cost: 3,
                rpm: Some(1),
                ..ToolRules::default()
            },
        )]);
        limiter.reconfigure(&wider, &tools, &[5]);
        // Ten tokens a second now (the old rate: one in thirty seconds).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            limiter.admit_request("k", None).is_ok(),
            "the bucket refills at the new rate"
        );
        let second = limiter.admit_call(call(None), 0).await.unwrap();
        assert!(limiter.open_stream("k").is_ok());
        drop((held, second));
        let costly = limiter.admit_call(call(Some("costly")), 0).await.unwrap();
        drop(costly);
        assert_eq!(
            limiter
                .admit_call(call(Some("costly")), 0)
                .await
                .unwrap_err()
                .layer,
            Layer::PerTool
        );
        // The tenant spent 3 of its new cap of 3 (calls without a tool cost nothing).
        limiter.reconfigure(&wider, &BTreeMap::new(), &[5]);
        let over = limiter
            .admit_call(call(Some("other")), 0)
            .await
            .unwrap_err();
        assert_eq!(over.layer, Layer::DailyCost);
    }
}
