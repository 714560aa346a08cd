//! What an operator alerts on, served on the admin listener only (never the public
//! port; `warden-console` serves it) as `/metrics` in Prometheus text, and the running
//! totals the console's charts are drawn from.
//!
//! Labels come from bounded sets only: MCP methods Warden knows (anything else is
//! `other`), decisions, outcomes, HTTP statuses, configured upstream names, limiter
//! layers. Never a key, a tenant-supplied value, an argument or a tool name a client
//! made up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use warden_limits::Limiter;
use warden_upstream::Upstreams;

use crate::audit::Auditor;

const KNOWN_METHODS: [&str; 16] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
];

/// A method as a label: known, or `other`.
fn method_label(method: &str) -> String {
    if KNOWN_METHODS.contains(&method) {
        method.to_owned()
    } else {
        "other".to_owned()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    decision: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabels {
    layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    responses: Family<StatusLabels, Counter>,
    upstream_latency: Family<UpstreamLabels, Histogram>,
    refusals: Family<LayerLabels, Counter>,
    /// The same counts, summed, for the console.
    requests_total: AtomicU64,
    refusals_total: Mutex<BTreeMap<String, u64>>,
}

/// Counts since the process started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    /// Refusals by layer (the first part of the refusing rule: `rate`, `validation`, …).
    pub refusals: BTreeMap<String, u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let requests = Family::<RequestLabels, Counter>::default();
        let responses = Family::<StatusLabels, Counter>::default();
        let refusals = Family::<LayerLabels, Counter>::default();
        let upstream_latency = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 65 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 17,
            ))
        });
        let mut registry = Registry::with_prefix("warden");
        registry.register(
            "requests",
            "JSON-RPC requests that reached policy, by method, decision and outcome",
            requests.clone(),
        );
        registry.register(
            "refusals",
            "JSON-RPC requests refused, by the layer that refused them",
            refusals.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses by status",
            responses.clone(),
        );
        registry.register(
            "upstream_call_seconds",
            "Time upstreams took to answer calls",
            upstream_latency.clone(),
        );
        Arc::new(Self {
            registry: Mutex::new(registry),
            requests,
            responses,
            upstream_latency,
            refusals,
            requests_total: AtomicU64::new(0),
            refusals_total: Mutex::default(),
        })
    }

    /// The live values the other parts keep (refusals, queue depth, upstream health),
    /// read at each scrape.
    pub fn watch(&self, limiter: Arc<Limiter>, auditor: Arc<Auditor>, upstreams: Arc<Upstreams>) {
        self.add_collector(Box::new(Live {
            limiter,
            auditor,
            upstreams,
        }));
    }

    /// Values another part of the process keeps (the benchmarks' allocation counter),
    /// read at each scrape.
    pub fn add_collector(&self, collector: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(collector);
    }

    /// A request that reached policy; `rule` is the one that refused it, if any.
    pub(crate) fn request(&self, method: &str, decision: &str, outcome: &str, rule: Option<&str>) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                decision: decision.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        if let Some(rule) = rule {
            // Rules are Warden's own names (`rate.per_key`): the layer is a bounded set.
            self.refused(rule.split('.').next().unwrap_or(rule).to_owned());
        }
    }

    /// Requests and refusals by layer since the process started.
    pub fn totals(&self) -> Totals {
        Totals {
            requests: self.requests_total.load(Ordering::Relaxed),
            refusals: self
                .refusals_total
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    pub(crate) fn response(&self, status: u16) {
        self.responses.get_or_create(&StatusLabels { status }).inc();
        // Refused before policy (no key, a wrong one): counted as the `auth` layer.
        if status == 401 {
            self.refused("auth".to_owned());
        }
    }

    fn refused(&self, layer: String) {
        self.refusals
            .get_or_create(&LayerLabels {
                layer: layer.clone(),
            })
            .inc();
        *self
            .refusals_total
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(layer)
            .or_default() += 1;
    }

    pub(crate) fn upstream_call(&self, upstream: &str, took: Duration) {
        self.upstream_latency
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The registry in Prometheus text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &self.registry.lock().unwrap_or_else(PoisonError::into_inner),
        )?;
        Ok(text)
    }
}

#[derive(Debug)]
struct Live {
    limiter: Arc<Limiter>,
    auditor: Arc<Auditor>,
    upstreams: Arc<Upstreams>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "rate_limit_refusals",
                "Requests refused by each rate limit layer",
                None,
                MetricType::Counter,
            )?;
            for (layer, count) in self.limiter.refusals() {
                let labels = [("layer", layer.name())];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(round_trips) = self.limiter.shared_round_trips() {
            let round_trips = ConstCounter::new(round_trips);
            round_trips.encode(encoder.encode_descriptor(
                "redis_round_trips",
                "Round trips to the cluster's Redis (limits, sessions, handles, the bus)",
                None,
                round_trips.metric_type(),
            )?)?;
        }
        let queued = ConstGauge::new(i64::try_from(self.auditor.queued()).unwrap_or(i64::MAX));
        queued.encode(encoder.encode_descriptor(
            "audit_queue_depth",
            "Audit records waiting to be written",
            None,
            queued.metric_type(),
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "upstream_up",
                "1 when the upstream has completed its handshake",
                None,
                MetricType::Gauge,
            )?;
            for upstream in self.upstreams.all() {
                let labels = [("upstream", upstream.name())];
                ConstGauge::new(i64::from(upstream.facts().is_some()))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "upstream_restarts",
            "Times an upstream's child process stopped and was started again",
            None,
            MetricType::Counter,
        )?;
        for upstream in self.upstreams.all() {
            let labels = [("upstream", upstream.name())];
            ConstCounter::new(upstream.restarts()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
