//! A trace of each request through Warden's layers, for an OpenTelemetry pipeline.
//!
//! A request's spans are recorded as its layers run and built into OpenTelemetry spans
//! when the request is done (the last [`Trace`] handle dropped). Recording first is
//! what lets the trace adopt a parent that only the body names (`params._meta`, the MCP
//! convention) after authentication and the body read already ran as spans of it.
//!
//! - [`Telemetry::begin`] starts a request's trace from its HTTP headers.
//! - [`Trace::adopt_meta`] takes the parent from `params._meta` when the headers named
//!   none, and settles the trace: its id and whether it is sampled (parent-based, else
//!   the configured ratio). An unsampled trace records nothing more.
//! - [`Trace::span`] opens a layer's span, closed when dropped; [`Trace::propagate`]
//!   writes the W3C context an upstream is sent.
//!
//! What goes into attributes is the caller's choice and never an argument or a result:
//! names, ids, codes and rules only.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision,
    ShouldSample as _, SpanData, SpanEvents, SpanLinks, SpanProcessor as _,
};
use serde_json::{Map, Value};

mod export;

pub use opentelemetry::Value as AttributeValue;

pub use warden_proto::trace_context::{TRACEPARENT, TRACESTATE};
/// Spans a request may record besides its own; more are counted, not kept.
const MAX_SPANS_PER_REQUEST: usize = 32;
/// How long the end of `serve` waits for queued spans to reach the collector.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the collector's HTTP client: {0}")]
    Client(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Tracing for one process: off, or sending spans to one collector.
#[derive(Clone, Default)]
pub struct Telemetry {
    on: Option<Arc<Exporting>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.on.is_some() {
            "Telemetry(on)"
        } else {
            "Telemetry(off)"
        })
    }
}

struct Exporting {
    processor: BatchSpanProcessor,
    sampler: Sampler,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    /// Tracing off: every [`Trace`] is empty and costs a branch.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts exporting to the collector `config` names. Exports run on `runtime`.
    pub fn start(
        config: &warden_config::Telemetry,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, TelemetryError> {
        Ok(Self {
            on: Some(Arc::new(Exporting {
                processor: export::processor(config, runtime)?,
                sampler: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    config.sampling_ratio,
                ))),
                ids: RandomIdGenerator::default(),
                scope: InstrumentationScope::builder("warden")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
                propagator: TraceContextPropagator::new(),
            })),
        })
    }

    /// The trace of one HTTP request, its parent taken from `traceparent`/`tracestate`
    /// headers when they are valid. `name` names its span until [`Trace::rename`].
    pub fn begin(&self, headers: &http::HeaderMap, name: &'static str) -> Trace {
        let Some(exporting) = &self.on else {
            return Trace::default();
        };
        let parent = headers.contains_key(TRACEPARENT).then(|| {
            remote_parent(
                &exporting.propagator,
                &opentelemetry_http::HeaderExtractor(headers),
            )
        });
        Trace(Some(Arc::new(Recorder {
            exporting: exporting.clone(),
            start: SystemTime::now(),
            span_id: exporting.ids.new_span_id(),
            state: Mutex::new(State {
                parent: parent.flatten(),
                settled: None,
                name: Cow::Borrowed(name),
                attributes: Vec::new(),
                status: Status::Unset,
                spans: Vec::new(),
                dropped_spans: 0,
            }),
        })))
    }

    /// Sends what is queued and stops the export thread (waits at most two seconds).
    pub async fn shutdown(&self) {
        let Some(exporting) = self.on.clone() else {
            return;
        };
        // The export thread waits for requests running on this runtime: block elsewhere.
        let stopped = tokio::task::spawn_blocking(move || {
            exporting.processor.shutdown_with_timeout(SHUTDOWN_WAIT)
        })
        .await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "traces queued at shutdown may not have reached the collector");
        }
    }
}

/// A request's trace: cloned into whatever part of the request still runs, exported
/// when the last clone is dropped. Empty when tracing is off.
#[derive(Clone, Default)]
pub struct Trace(Option<Arc<Recorder>>);

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

struct Recorder {
    exporting: Arc<Exporting>,
    start: SystemTime,
    /// The request span's id, known from the start so that layer spans and upstreams
    /// can name it as their parent.
    span_id: SpanId,
    state: Mutex<State>,
}

struct State {
    /// The caller's span, from a header or from `_meta`.
    parent: Option<SpanContext>,
    settled: Option<Settled>,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    status: Status,
    spans: Vec<Recorded>,
    dropped_spans: u32,
}

#[derive(Clone, Copy)]
struct Settled {
    trace_id: TraceId,
    sampled: bool,
}

struct Recorded {
    span_id: SpanId,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Trace {
    /// Takes the parent named in `params._meta` (`traceparent`, `tracestate`) unless a
    /// header already named one, then settles the trace. Call it once the body is read.
    pub fn adopt_meta(&self, params: Option<&Map<String, Value>>) {
        let Some(recorder) = &self.0 else {
            return;
        };
        let mut state = recorder.lock();
        if state.parent.is_none()
            && state.settled.is_none()
            && let Some(meta) = params
                .and_then(|params| params.get("_meta"))
                .and_then(Value::as_object)
                .filter(|meta| meta.contains_key(TRACEPARENT))
        {
            state.parent = remote_parent(&recorder.exporting.propagator, &MetaCarrier(meta));
        }
        settle(&recorder.exporting, &mut state);
    }

    /// The trace's id (32 hex digits), settling the trace if nothing has.
    pub fn trace_id(&self) -> Option<String> {
        let recorder = self.0.as_ref()?;
        let mut state = recorder.lock();
        Some(settle(&recorder.exporting, &mut state).trace_id.to_string())
    }

    /// Whether this trace's spans are exported.
    pub fn is_sampled(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|recorder| settle(&recorder.exporting, &mut recorder.lock()).sampled)
    }

    /// Names the request's span (`tools/call echo`, per the MCP conventions).
    pub fn rename(&self, name: String) {
        if let Some(recorder) = &self.0 {
            recorder.lock().name = Cow::Owned(name);
        }
    }

    /// An attribute of the request's span (nothing once the trace is known unsampled).
    pub fn set(&self, key: &'static str, value: impl Into<AttributeValue>) {
        if let Some(recorder) = &self.0 {
            let mut state = recorder.lock();
            if state.settled.is_none_or(|settled| settled.sampled) {
                state.attributes.push(KeyValue::new(key, value));
            }
        }
    }

    /// Marks the request refused by `layer` under `rule` (status error and
    /// `warden.refusal.*` attributes). The first refusal recorded stands.
    pub fn refuse(&self, layer: &'static str, rule: &str) {
        let Some(recorder) = &self.0 else {
            return;
        };
        let mut state = recorder.lock();
        if matches!(state.status, Status::Error { .. }) {
            return;
        }
        state.status = Status::error(format!("refused by {layer}: {rule}"));
        state.attributes.extend([
            KeyValue::new("warden.refusal.layer", layer),
            KeyValue::new("warden.refusal.rule", rule.to_owned()),
        ]);
    }

    /// Marks the request failed (an error that is not a refusal: the upstream away, a
    /// timeout), with `error.type`.
    pub fn fail(&self, error_type: String) {
        let Some(recorder) = &self.0 else {
            return;
        };
        let mut state = recorder.lock();
        if matches!(state.status, Status::Error { .. }) {
            return;
        }
        state.status = Status::error(error_type.clone());
        state
            .attributes
            .push(KeyValue::new("error.type", error_type));
    }

    /// Whether tracing is on for this request (a trace, sampled or not).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Whether what is set now is kept: tracing is on, and the trace is sampled or not
    /// yet settled. Callers check it before working out an attribute's value.
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|recorder| {
            recorder
                .lock()
                .settled
                .is_none_or(|settled| settled.sampled)
        })
    }

    /// Opens a layer's span (internal), closed when the returned guard is dropped.
    pub fn span(&self, name: &'static str) -> Span {
        self.open(Cow::Borrowed(name), SpanKind::Internal)
    }

    /// Opens the span of a call Warden makes to an upstream (kind client).
    pub fn client_span(&self, name: impl Into<Cow<'static, str>>) -> Span {
        self.open(name.into(), SpanKind::Client)
    }

    fn open(&self, name: Cow<'static, str>, kind: SpanKind) -> Span {
        let Some(recorder) = &self.0 else {
            return Span::inert();
        };
        let span_id = recorder.exporting.ids.new_span_id();
        // Before the trace is settled a span is kept in case it turns out sampled.
        let recording = recorder
            .lock()
            .settled
            .is_none_or(|settled| settled.sampled);
        Span {
            trace: Some(recorder.clone()),
            span_id,
            open: recording.then(|| Recorded {
                span_id,
                name,
                kind,
                start: SystemTime::now(),
                end: SystemTime::UNIX_EPOCH,
                attributes: Vec::new(),
                status: Status::Unset,
            }),
        }
    }

    /// Writes the W3C trace context for an upstream into `carrier` (`_meta` or
    /// headers), `span` as the parent the upstream sees: `traceparent`, and
    /// `tracestate` when the caller sent one.
    pub fn propagate(&self, span: &Span, carrier: &mut dyn Injector) {
        let Some(recorder) = &self.0 else {
            return;
        };
        let mut state = recorder.lock();
        let settled = settle(&recorder.exporting, &mut state);
        let trace_state = state
            .parent
            .as_ref()
            .map(|parent| parent.trace_state().header())
            .filter(|header| !header.is_empty());
        drop(state);
        let parent = if span.span_id == SpanId::INVALID {
            recorder.span_id
        } else {
            span.span_id
        };
        let flags = if settled.sampled { "01" } else { "00" };
        carrier.set(
            TRACEPARENT,
            format!("00-{}-{parent}-{flags}", settled.trace_id),
        );
        if let Some(trace_state) = trace_state {
            carrier.set(TRACESTATE, trace_state);
        }
    }
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The trace's id and sampling decision, decided once: the parent's id, or a new one;
/// sampled as the parent was, or by the configured ratio.
fn settle(exporting: &Exporting, state: &mut State) -> Settled {
    if let Some(settled) = state.settled {
        return settled;
    }
    let parent = state
        .parent
        .clone()
        .map(|parent| Context::new().with_remote_span_context(parent));
    let trace_id = state
        .parent
        .as_ref()
        .map_or_else(|| exporting.ids.new_trace_id(), SpanContext::trace_id);
    let decision = exporting
        .sampler
        .should_sample(
            parent.as_ref(),
            trace_id,
            &state.name,
            &SpanKind::Server,
            &[],
            &[],
        )
        .decision;
    let settled = Settled {
        trace_id,
        sampled: decision == SamplingDecision::RecordAndSample,
    };
    state.settled = Some(settled);
    if !settled.sampled {
        state.spans = Vec::new();
        state.attributes = Vec::new();
    }
    settled
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let end = SystemTime::now();
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let settled = settle(&self.exporting, state);
        if !settled.sampled {
            return;
        }
        let trace_state = state
            .parent
            .as_ref()
            .map_or_else(TraceState::default, |parent| parent.trace_state().clone());
        let context = |span_id| {
            SpanContext::new(
                settled.trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                trace_state.clone(),
            )
        };
        let exporting = &self.exporting;
        let mut attributes = std::mem::take(&mut state.attributes);
        if state.dropped_spans > 0 {
            attributes.push(KeyValue::new(
                "warden.spans_dropped",
                i64::from(state.dropped_spans),
            ));
        }
        for span in state.spans.drain(..) {
            exporting.processor.on_end(SpanData {
                span_context: context(span.span_id),
                parent_span_id: self.span_id,
                parent_span_is_remote: false,
                span_kind: span.kind,
                name: span.name,
                start_time: span.start,
                end_time: span.end,
                attributes: span.attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: span.status,
                instrumentation_scope: exporting.scope.clone(),
            });
        }
        exporting.processor.on_end(SpanData {
            span_context: context(self.span_id),
            parent_span_id: state
                .parent
                .as_ref()
                .map_or(SpanId::INVALID, SpanContext::span_id),
            parent_span_is_remote: state.parent.is_some(),
            span_kind: SpanKind::Server,
            name: std::mem::take(&mut state.name),
            start_time: self.start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: std::mem::replace(&mut state.status, Status::Unset),
            instrumentation_scope: exporting.scope.clone(),
        });
    }
}

/// A layer's span: attributes and a status while open, recorded when dropped.
pub struct Span {
    trace: Option<Arc<Recorder>>,
    span_id: SpanId,
    /// `None` when nothing is recorded (tracing off, or the trace is not sampled).
    open: Option<Recorded>,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Span")
    }
}

impl Span {
    /// A span that records nothing.
    pub fn inert() -> Self {
        Self {
            trace: None,
            span_id: SpanId::INVALID,
            open: None,
        }
    }

    /// Whether this span is recorded: callers check it before working out an
    /// attribute's value.
    pub fn is_recording(&self) -> bool {
        self.open.is_some()
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<AttributeValue>) {
        if let Some(open) = &mut self.open {
            open.attributes.push(KeyValue::new(key, value));
        }
    }

    /// This layer refused the request under `rule` (also marked on the request's span).
    pub fn refuse(&mut self, layer: &'static str, rule: &str) {
        if let Some(open) = &mut self.open {
            open.status = Status::error(format!("refused: {rule}"));
            open.attributes
                .push(KeyValue::new("warden.refusal.rule", rule.to_owned()));
        }
        if let Some(recorder) = &self.trace {
            Trace(Some(recorder.clone())).refuse(layer, rule);
        }
    }

    /// This span's work failed with `error_type` (not a refusal).
    pub fn fail(&mut self, error_type: &str) {
        if let Some(open) = &mut self.open {
            open.status = Status::error(error_type.to_owned());
            open.attributes
                .push(KeyValue::new("error.type", error_type.to_owned()));
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(recorder), Some(mut open)) = (self.trace.take(), self.open.take()) else {
            return;
        };
        open.end = SystemTime::now();
        let mut state = recorder.lock();
        if state.settled.is_some_and(|settled| !settled.sampled) {
            return;
        }
        if state.spans.len() >= MAX_SPANS_PER_REQUEST {
            state.dropped_spans = state.dropped_spans.saturating_add(1);
            return;
        }
        state.spans.push(open);
    }
}

/// A valid remote span context from `carrier`, if it holds one.
fn remote_parent(
    propagator: &TraceContextPropagator,
    carrier: &dyn Extractor,
) -> Option<SpanContext> {
    let context = propagator.extract_with_context(&Context::new(), carrier);
    let span = context.span();
    let parent = span.span_context();
    parent.is_valid().then(|| parent.clone())
}

/// `params._meta` read as a carrier of the W3C trace context.
struct MetaCarrier<'a>(&'a Map<String, Value>);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the trace context into a message's `_meta`.
pub struct MetaInjector<'a>(pub &'a mut Map<String, Value>);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

#[cfg(test)]
mod tests;
