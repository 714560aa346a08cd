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
//!
//! With shared counters ([`SharedCounters`], Redis through `warden-cluster`), layers 1 to
//! 3 count across every replica; layer 4 and the stream cap stay each replica's own
//! (its own upstream connections and children). When the shared counters cannot be
//! reached, the call is refused (`on_redis_down = "refuse"`), or counted locally
//! against each limit divided by the expected number of replicas (`"local"`).

mod bucket;
mod gate;
mod ledger;
mod shared;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use warden_config::{OnRedisDown, Rate, ToolRules};
use warden_store::Costs;

pub use crate::shared::{
    Admission, Admitted, Bucket, Lease, SharedCounters, SharedFuture, Taken, Unreachable,
};

use crate::bucket::Buckets;
use crate::gate::{Closed, Gate, Gates, Queued};
use crate::ledger::Ledger;

/// How often spent costs are written to disk.
const COST_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A key's refusals by one layer are logged once per this window.
const LOG_WINDOW: Duration = Duration::from_secs(60);
const MAX_LOGGED: usize = 16_384;
const MAX_SESSIONS_COUNTED: usize = 100_000;
/// How often a call waiting for a shared slot asks again.
const SHARED_QUEUE_POLL: Duration = Duration::from_millis(20);
/// How long a client refused for want of the shared counters should wait.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(5);

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
    /// The shared counters could not be reached (`on_redis_down = "refuse"`).
    Shared,
}

impl Layer {
    pub const ALL: [Layer; 9] = [
        Self::PerIp,
        Self::PerKey,
        Self::PerSession,
        Self::PerTool,
        Self::Concurrency,
        Self::DailyCost,
        Self::Upstream,
        Self::Streams,
        Self::Shared,
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
            Self::Shared => "cluster.unavailable",
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

/// A call's slots (its key's, the total, and its upstream's) and its cost; the slots
/// are released when it is dropped.
#[derive(Debug)]
pub struct CallPermit {
    _slots: Vec<OwnedSemaphorePermit>,
    charge: Option<Charge>,
}

/// What a permit gives back: the shared lease, and the cost this replica charged.
#[derive(Debug)]
struct Charge {
    ledger: Arc<Ledger>,
    tenant: String,
    cost: u64,
    lease: Option<(Arc<dyn SharedCounters>, Lease)>,
    /// The call did not (or not yet) reach its upstream: dropped, it gives its cost back.
    refund: bool,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.refund {
            self.ledger.refund(&self.tenant, self.cost);
        }
        if let Some((counters, lease)) = self.lease.take() {
            counters.release(lease, self.refund);
        }
    }
}

impl std::fmt::Debug for dyn SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCounters")
    }
}

impl CallPermit {
    /// The call never reached its upstream: its cost is given back along with its
    /// slots.
    pub fn refund(mut self) {
        if let Some(charge) = &mut self.charge {
            charge.refund = true;
        }
    }
}

/// The shared counters, and what to do while they cannot be reached.
pub struct Shared {
    pub counters: Arc<dyn SharedCounters>,
    pub on_down: OnRedisDown,
    /// Each limit is divided by this while counting locally.
    pub expected_replicas: u32,
}

/// A tenant's spending today against its daily cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCost {
    pub tenant: String,
    pub spent: u64,
    pub cap: u64,
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
    /// What policies add to the tool's cost (`@cost`).
    pub policy_cost: u64,
}

pub struct Limiter {
    /// The limits in force and the gates that count against them; a reload swaps it.
    shape: RwLock<Arc<Shape>>,
    shared: Option<Shared>,
    /// Since when the shared counters have been unreachable, and when that was last
    /// said in the log.
    outage: Mutex<Option<Outage>>,
    per_ip: Buckets<IpAddr>,
    per_key: Buckets<String>,
    per_tool: Buckets<(String, String)>,
    session_calls: Mutex<HashMap<String, u64>>,
    ledger: Arc<Ledger>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
    refused: [AtomicU64; Layer::ALL.len()],
    logged: Mutex<HashMap<(String, Layer), Instant>>,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    logged: Instant,
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
    /// `share` divides the concurrency of the key and total gates: with shared
    /// counters, the local gates are used only while those cannot be reached, and
    /// each replica then takes its share.
    fn new(
        rate: &Rate,
        tools: &BTreeMap<String, ToolRules>,
        upstream_slots: &[usize],
        share: u32,
        before: Option<&Shape>,
    ) -> Self {
        let per_key = divided(rate.max_concurrent_per_key, share);
        let kept = |old: Option<&Arc<Gate>>, max: usize| match old {
            Some(gate) if gate.max() == max => gate.clone(),
            _ => Arc::new(Gate::new(max)),
        };
        let key_gates = match before {
            Some(before) if before.key_gates.max() == per_key => before.key_gates.clone(),
            _ => Arc::new(Gates::new(per_key)),
        };
        Self {
            rate: rate.clone(),
            tools: tools.clone(),
            key_gates,
            total: kept(
                before.map(|b| &b.total),
                divided(rate.max_concurrent_total, share),
            ),
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

/// `limit` shared out among `share` replicas, at least one.
fn divided<T: TryFrom<u32> + Copy + std::ops::Div<Output = T> + Ord + From<u8>>(
    limit: T,
    share: u32,
) -> T {
    let share = T::try_from(share.max(1)).unwrap_or(T::from(1));
    (limit / share).max(T::from(1))
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
        shared: Option<Shared>,
    ) -> Result<Self, warden_store::StoreError> {
        let share = shared.as_ref().map_or(1, |s| s.expected_replicas);
        Ok(Self {
            ledger: Arc::new(Ledger::open(costs).await?),
            shape: RwLock::new(Arc::new(Shape::new(
                rate,
                tools,
                upstream_slots,
                share,
                None,
            ))),
            shared,
            outage: Mutex::new(None),
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
        let next = Shape::new(rate, tools, upstream_slots, self.share(), Some(&shape));
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

    /// Each tenant that spent today or has a cap of its own: what it spent (on this
    /// replica; in a cluster the cap is checked against every replica's spending) and
    /// its cap, by tenant name.
    pub fn costs_today(&self) -> Vec<TenantCost> {
        let shape = self.shape();
        let mut spent: BTreeMap<String, u64> = self.ledger.spent_today().into_iter().collect();
        for tenant in shape.rate.tenant_caps.keys() {
            spent.entry(tenant.clone()).or_default();
        }
        spent
            .into_iter()
            .map(|(tenant, spent)| TenantCost {
                cap: shape.cap_of(&tenant),
                tenant,
                spent,
            })
            .collect()
    }

    /// Refusals so far, by layer.
    pub fn refusals(&self) -> Vec<(Layer, u64)> {
        Layer::ALL
            .iter()
            .zip(&self.refused)
            .map(|(layer, count)| (*layer, count.load(Ordering::Relaxed)))
            .collect()
    }

    /// What each limit is divided by while counting locally.
    fn share(&self) -> u32 {
        self.shared.as_ref().map_or(1, |s| s.expected_replicas)
    }

    /// Round trips to the shared counters' store so far, when there is one.
    pub fn shared_round_trips(&self) -> Option<u64> {
        self.shared.as_ref().map(|s| s.counters.round_trips())
    }

    /// The shared counters answered: an outage, if any, is over.
    fn reached(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ended) = outage.take() {
            tracing::warn!(
                down_secs = ended.since.elapsed().as_secs(),
                "the shared limits (Redis) answer again: limits count across replicas again"
            );
        }
    }

    /// Whether the limits can be counted as configured: not when the shared counters
    /// do not answer and the operator chose to refuse (for `/readyz`).
    pub async fn ready(&self) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        match shared.counters.ping().await {
            Ok(()) => {
                self.reached();
                true
            }
            Err(Unreachable) => {
                self.note_outage(shared);
                shared.on_down == OnRedisDown::Local
            }
        }
    }

    /// The shared counters did not answer: a refusal (`refuse`), or `Ok` to count
    /// locally (`local`).
    fn unreachable(&self, who: &str) -> Result<(), Refusal> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        self.note_outage(shared);
        match shared.on_down {
            OnRedisDown::Refuse => Err(self.refuse(
                who,
                Refusal {
                    layer: Layer::Shared,
                    retry_after: UNREACHABLE_RETRY.as_secs(),
                    message: "Warden's shared limits (Redis) cannot be reached, so the request was not run; retry in a few seconds".into(),
                },
            )),
            OnRedisDown::Local => Ok(()),
        }
    }

    /// Says so in the log when an outage starts, and once a minute while it lasts.
    fn note_outage(&self, shared: &Shared) {
        let now = Instant::now();
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        let say = match outage.as_mut() {
            None => {
                *outage = Some(Outage {
                    since: now,
                    logged: now,
                });
                true
            }
            Some(ongoing) if ongoing.logged.elapsed() >= LOG_WINDOW => {
                ongoing.logged = now;
                true
            }
            Some(_) => false,
        };
        drop(outage);
        if !say {
            return;
        }
        match shared.on_down {
            OnRedisDown::Refuse => tracing::error!(
                "the shared limits (Redis) cannot be reached: calls are refused with 503 until they answer (on_redis_down = \"refuse\")"
            ),
            OnRedisDown::Local => tracing::error!(
                expected_replicas = shared.expected_replicas,
                "the shared limits (Redis) cannot be reached: this replica counts on its own, each limit divided by expected_replicas (on_redis_down = \"local\")"
            ),
        }
    }

    /// Layer 1: every HTTP request from `address`, before authentication.
    pub async fn admit_address(&self, address: IpAddr) -> Result<(), Refusal> {
        let rpm = self.shape().rate.per_ip_rpm;
        let taken = match &self.shared {
            Some(shared) => {
                let text = address.to_string();
                match shared.counters.take(Bucket::Address(&text), rpm).await {
                    Ok(wait) => {
                        self.reached();
                        wait.map_or(Ok(()), Err)
                    }
                    Err(Unreachable) => {
                        self.unreachable(&text)?;
                        self.per_ip.take(&address, divided(rpm, self.share()))
                    }
                }
            }
            // The address is written out only when refused: not on every request.
            None => self.per_ip.take(&address, rpm),
        };
        taken.map_err(|wait| {
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
    pub async fn admit_request(&self, key_id: &str, own_rpm: Option<u32>) -> Result<(), Refusal> {
        let rpm = own_rpm.unwrap_or_else(|| self.shape().rate.per_key_rpm);
        let taken = match &self.shared {
            Some(shared) => match shared.counters.take(Bucket::Key(key_id), rpm).await {
                Ok(wait) => {
                    self.reached();
                    wait.map_or(Ok(()), Err)
                }
                Err(Unreachable) => {
                    self.unreachable(key_id)?;
                    self.per_key
                        .take(&key_id.to_owned(), divided(rpm, self.share()))
                }
            },
            None => self.per_key.take(&key_id.to_owned(), rpm),
        };
        taken.map_err(|wait| {
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
        let shape = self.shape();
        let rules = call
            .tool
            .and_then(|tool| warden_config::rules_for(&shape.tools, tool));
        let cost = match call.tool {
            Some(_) => rules.map_or(warden_config::DEFAULT_TOOL_COST, |r| r.cost),
            None => 0,
        }
        .saturating_add(call.policy_cost);
        let tool_rate = call.tool.zip(rules.and_then(|r| r.rpm));
        let mut slots = Vec::with_capacity(3);
        let lease = match &self.shared {
            Some(shared) => {
                match self
                    .admit_shared(shared, &shape, call, tool_rate, cost)
                    .await
                {
                    Ok(lease) => {
                        self.reached();
                        // This replica's own spending, for the store (the cap was
                        // checked across replicas).
                        let _ = self.ledger.reserve(call.tenant, cost, u64::MAX);
                        Some((shared.counters.clone(), lease))
                    }
                    Err(Some(refusal)) => return Err(refusal),
                    Err(None) => {
                        self.unreachable(call.key_id)?;
                        self.admit_local(&shape, call, tool_rate, cost, &mut slots)
                            .await?;
                        None
                    }
                }
            }
            None => {
                self.admit_local(&shape, call, tool_rate, cost, &mut slots)
                    .await?;
                None
            }
        };
        // From here the charge is held by a guard: a call dropped while it waits for its
        // upstream's slot (its client went away) gives its slots and its cost back.
        let mut charge = Charge {
            ledger: self.ledger.clone(),
            tenant: call.tenant.to_owned(),
            cost,
            lease,
            refund: true,
        };
        if let Some(gate) = shape.upstreams.get(upstream) {
            let (depth, timeout) = (shape.rate.queue_depth, shape.rate.queue_timeout);
            let slot = gate
                .enter(depth, timeout)
                .await
                .map_err(|closed| self.busy(call.key_id, Layer::Upstream, closed))?;
            slots.push(slot);
        }
        charge.refund = false;
        Ok(CallPermit {
            _slots: slots,
            charge: Some(charge),
        })
    }

    /// Layer 3 across replicas: `Err(None)` when the shared counters cannot be reached.
    /// A call that finds every slot taken asks again until its queue time is up.
    async fn admit_shared(
        &self,
        shared: &Shared,
        shape: &Shape,
        call: Call<'_>,
        tool_rate: Option<(&str, u32)>,
        cost: u64,
    ) -> Result<Lease, Option<Refusal>> {
        let admission = Admission {
            key_id: call.key_id,
            tenant: call.tenant,
            session: call.session,
            max_session_calls: shape.rate.per_session_calls,
            tool_rate,
            max_per_key: shape.rate.max_concurrent_per_key,
            max_total: shape.rate.max_concurrent_total,
            cost,
            cap: shape.cap_of(call.tenant),
            day: ledger::today(),
        };
        let deadline = Instant::now() + shape.rate.queue_timeout;
        // A call whose key's slots are all taken waits in its key's queue, one that
        // found every slot taken in the common one, as the local gates queue them: one
        // key's flood fills its own queue, not another key's. (The local gates' queues
        // count them; their slots are not used while the counters are shared.)
        let key_gate = std::cell::OnceCell::new();
        let mut queued: Option<(Taken, Queued<'_>)> = None;
        loop {
            let taken = match shared.counters.admit(admission).await {
                Err(Unreachable) => return Err(None),
                Ok(Admitted::Yes(lease)) => return Ok(lease),
                Ok(Admitted::Limited(layer, wait)) => {
                    return Err(Some(self.limited(call, layer, wait, tool_rate)));
                }
                Ok(Admitted::Busy(taken)) => taken,
            };
            if queued
                .as_ref()
                .is_none_or(|(waits_for, _)| *waits_for != taken)
            {
                // Out of the other queue first, so that a call counts in one.
                drop(queued.take());
                let line = match taken {
                    Taken::Key => key_gate
                        .get_or_init(|| shape.key_gates.get(&call.key_id.to_owned()))
                        .queue(),
                    Taken::All => shape.total.queue(),
                };
                let place = Queued::join(line);
                if place.ahead >= shape.rate.queue_depth {
                    return Err(Some(self.busy(
                        call.key_id,
                        Layer::Concurrency,
                        Closed::QueueFull,
                    )));
                }
                queued = Some((taken, place));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Some(self.busy(
                    call.key_id,
                    Layer::Concurrency,
                    Closed::TimedOut,
                )));
            }
            tokio::time::sleep(left.min(SHARED_QUEUE_POLL)).await;
        }
    }

    /// Layer 3 on this replica alone: the session's count, the tool's rate, the key's
    /// and the total gate, then the cost.
    async fn admit_local(
        &self,
        shape: &Shape,
        call: Call<'_>,
        tool_rate: Option<(&str, u32)>,
        cost: u64,
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) -> Result<(), Refusal> {
        let share = self.share();
        self.count_session(call.session, shape.rate.per_session_calls)
            .map_err(|refusal| self.refuse(call.key_id, refusal))?;
        if let Some((tool, rpm)) = tool_rate {
            self.per_tool
                .take(
                    &(call.key_id.to_owned(), tool.to_owned()),
                    divided(rpm, share),
                )
                .map_err(|wait| self.limited(call, Layer::PerTool, wait, tool_rate))?;
        }
        let (depth, timeout) = (shape.rate.queue_depth, shape.rate.queue_timeout);
        slots.push(
            shape
                .key_gates
                .get(&call.key_id.to_owned())
                .enter(depth, timeout)
                .await
                .map_err(|closed| self.busy(call.key_id, Layer::Concurrency, closed))?,
        );
        slots.push(
            shape
                .total
                .enter(depth, timeout)
                .await
                .map_err(|closed| self.busy(call.key_id, Layer::Concurrency, closed))?,
        );
        let cap = divided(shape.cap_of(call.tenant), share);
        self.ledger
            .reserve(call.tenant, cost, cap)
            .map_err(|_| self.limited(call, Layer::DailyCost, Duration::ZERO, tool_rate))
    }

    /// A rate's or the daily cost's refusal of `call`.
    fn limited(
        &self,
        call: Call<'_>,
        layer: Layer,
        wait: Duration,
        tool_rate: Option<(&str, u32)>,
    ) -> Refusal {
        let refusal = match layer {
            Layer::PerSession => Refusal::new(
                layer,
                Duration::from_secs(60),
                format_args!(
                    "this session has made its {} calls; start a new one",
                    self.shape().rate.per_session_calls
                ),
            ),
            Layer::PerTool => Refusal::new(
                layer,
                wait,
                format_args!(
                    "this key is over {} calls a minute to this tool",
                    tool_rate.map_or(0, |(_, rpm)| rpm)
                ),
            ),
            _ => Refusal::new(
                Layer::DailyCost,
                Duration::from_secs(ledger::until_midnight()),
                format_args!(
                    "this tenant has spent its daily cost cap of {}; it resets at 00:00 UTC",
                    self.shape().cap_of(call.tenant)
                ),
            ),
        };
        self.refuse(call.key_id, refusal)
    }

    fn busy(&self, key_id: &str, layer: Layer, closed: Closed) -> Refusal {
        let what = match closed {
            Closed::QueueFull => "too many calls in flight and waiting",
            Closed::TimedOut => "no call slot freed up in time",
        };
        self.refuse(key_id, Refusal::new(layer, Duration::from_secs(1), what))
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
            policy_cost: 0,
        }
    }

    #[tokio::test]
    async fn a_reload_changes_the_limits_from_the_next_request_on() {
        let limiter = Limiter::new(&rate(), &BTreeMap::new(), &[5], None, None)
            .await
            .unwrap();
        assert!(limiter.admit_request("k", None).await.is_ok());
        assert!(limiter.admit_request("k", None).await.is_ok());
        assert_eq!(
            limiter.admit_request("k", None).await.unwrap_err().layer,
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
            limiter.admit_request("k", None).await.is_ok(),
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

    #[tokio::test]
    async fn a_call_dropped_while_it_waits_for_its_upstream_gives_its_cost_back() {
        let tight = Rate {
            max_concurrent_per_key: 10,
            queue_depth: 4,
            queue_timeout: Duration::from_secs(60),
            daily_cost_cap: 2 * warden_config::DEFAULT_TOOL_COST,
            per_key_rpm: 600,
            ..rate()
        };
        let limiter = Arc::new(
            Limiter::new(&tight, &BTreeMap::new(), &[1], None, None)
                .await
                .unwrap(),
        );
        let running = limiter.admit_call(call(Some("t")), 0).await.unwrap();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.admit_call(call(Some("t")), 0).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(running);
        // One call's cost is spent; the abandoned one's came back, so one more fits.
        let again = limiter.admit_call(call(Some("t")), 0).await.unwrap();
        drop(again);
        assert_eq!(
            limiter
                .admit_call(call(Some("t")), 0)
                .await
                .unwrap_err()
                .layer,
            Layer::DailyCost
        );
    }
}
