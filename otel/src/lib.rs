//! hgw's OpenTelemetry tracing, shared by the agent and the dataplane.
//!
//! Spans are recorded by a small per-trace recorder ([`Trace`]) rather than through `tracing` spans
//! or the SDK's `Tracer`: the sampling decision is made once per request, and an unsampled request
//! creates no span, attribute or allocation at all. A sampled trace keeps its finished spans in one
//! `Vec` and hands them over in one push when it ends. The SDK's OTLP exporters (gRPC or
//! HTTP/protobuf) send them from a background task ([`export`]): a bounded queue that never blocks
//! the caller, and counts what it drops (queue full, or an export that failed while the collector
//! was away).

pub mod context;
pub mod export;
pub mod settings;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{Event, SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

pub use context::TraceParent;
pub use export::{ExportStats, StartError};
pub use opentelemetry::Value;
pub use opentelemetry::trace::SpanKind;
pub use settings::{Protocol, Root, Sampler, Settings, SettingsError};

/// A handle on the configured tracing (cheap to clone). Absent (`Option::None` where it is held) when
/// no endpoint is configured: then nothing is recorded.
#[derive(Clone, Debug)]
pub struct Tracing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sampler: Sampler,
    scope: InstrumentationScope,
    queue: export::QueueHandle,
}

/// The outcome of the one sampling decision a request gets.
#[derive(Debug)]
pub enum Sampling {
    /// Record this trace.
    Sampled(Trace),
    /// Record nothing. `trace_id` is the caller's trace, or a new one to propagate with the sampled
    /// flag off, so the services behind see one trace id and the same decision.
    NotSampled { trace_id: u128 },
}

impl Tracing {
    /// Decides whether the trace continuing `parent` (or a new one) is recorded.
    pub fn sample(&self, parent: Option<TraceParent>, tracestate: Option<&str>) -> Sampling {
        let trace_id = parent.map_or_else(new_trace_id, |p| p.trace_id);
        let sampled = match self.inner.sampler {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(ratio) => ratio_keeps(ratio, trace_id),
            Sampler::ParentBased(root) => match parent {
                Some(parent) => parent.sampled(),
                None => match root {
                    Root::AlwaysOn => true,
                    Root::AlwaysOff => false,
                    Root::TraceIdRatio(ratio) => ratio_keeps(ratio, trace_id),
                },
            },
        };
        if !sampled {
            return Sampling::NotSampled { trace_id };
        }
        let state = tracestate.and_then(|s| s.parse::<TraceState>().ok()).unwrap_or(TraceState::NONE);
        Sampling::Sampled(Trace {
            tracing: self.clone(),
            trace_id,
            remote_parent: parent.map_or(0, |p| p.parent_id),
            state,
            done: Vec::new(),
        })
    }

    /// A new trace for background work (agent sync rounds), subject to the sampler.
    pub fn start_trace(&self) -> Option<Trace> {
        match self.sample(None, None) {
            Sampling::Sampled(trace) => Some(trace),
            Sampling::NotSampled { .. } => None,
        }
    }

    /// Spans accepted, dropped and waiting, for `/metrics`.
    pub fn stats(&self) -> &ExportStats {
        self.inner.queue.stats()
    }

    /// Sends what is queued and waits for the export, at most `timeout` (shutdown).
    pub async fn flush(&self, timeout: std::time::Duration) {
        self.inner.queue.flush(timeout).await;
    }
}

/// TraceIdRatioBased as the spec describes it: the lower 64 bits of the id against the ratio, so a
/// trace is kept by every service sampling with the same ratio.
fn ratio_keeps(ratio: f64, trace_id: u128) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

fn new_trace_id() -> u128 {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// One sampled trace of one request or task: it creates spans, keeps them once ended, and sends
/// them all when dropped.
#[derive(Debug)]
pub struct Trace {
    tracing: Tracing,
    pub trace_id: u128,
    /// The caller's span (0: this trace starts here).
    remote_parent: u64,
    state: TraceState,
    done: Vec<SpanData>,
}

/// A span being recorded. Nothing is sent until [`Trace::end`] takes it back.
#[derive(Debug)]
pub struct Span {
    pub id: u64,
    parent: u64,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    status: Status,
}

impl Span {
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push(KeyValue::new(key, value));
    }

    pub fn set_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.name = name.into();
    }

    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        self.events.push(Event::new(name, SystemTime::now(), attributes, 0));
    }

    /// Marks the span failed; `description` says why (an error key, an upstream failure).
    pub fn error(&mut self, description: impl Into<Cow<'static, str>>) {
        self.status = Status::error(description);
    }

    /// The span's start, for a parent that began before the trace was created (request arrival).
    pub fn started_at(&mut self, start: SystemTime) {
        self.start = start;
    }
}

impl Trace {
    /// The first span of this service in the trace (its parent is the caller's span, if any).
    pub fn root(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        self.span(self.remote_parent, name, kind)
    }

    /// A span under `parent`.
    pub fn child(&self, parent: &Span, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        self.span(parent.id, name, kind)
    }

    /// A span under the span `parent_id` of this trace (one recorded by another [`Trace`] value of
    /// the same trace, such as the agent's sync round under which a push happens).
    pub fn span(&self, parent_id: u64, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        Span {
            id: new_span_id(),
            parent: parent_id,
            name: name.into(),
            kind,
            start: SystemTime::now(),
            attributes: Vec::new(),
            events: Vec::new(),
            status: Status::Unset,
        }
    }

    /// Ends `span` now; it is sent with the rest of the trace.
    pub fn end(&mut self, span: Span) {
        let Span { id, parent, name, kind, start, attributes, events, status } = span;
        // `SpanEvents` is non-exhaustive: filled in place.
        let mut span_events = SpanEvents::default();
        span_events.events = events;
        let context = SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(id.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            self.state.clone(),
        );
        self.done.push(SpanData {
            span_context: context,
            parent_span_id: SpanId::from_bytes(parent.to_be_bytes()),
            parent_span_is_remote: parent != 0 && parent == self.remote_parent,
            span_kind: kind,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: span_events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.tracing.inner.scope.clone(),
        });
    }

    /// The `traceparent` for a request made inside `span` (sampled).
    pub fn traceparent(&self, span: &Span) -> http::HeaderValue {
        TraceParent::header(self.trace_id, span.id, context::FLAG_SAMPLED)
    }

    /// A `tracing` span carrying `trace_id` and `span_id`, entered around work inside `span` so the
    /// log lines written meanwhile (JSON logs: the `span` object) name the trace.
    pub fn log_span(&self, span: &Span) -> tracing::Span {
        tracing::info_span!(
            "otel",
            trace_id = %context::trace_id_hex(self.trace_id),
            span_id = %context::span_id_hex(span.id)
        )
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if !self.done.is_empty() {
            self.tracing.inner.queue.push(std::mem::take(&mut self.done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampling_follows_the_trace_id() {
        assert!(ratio_keeps(1.0, 0xffff_ffff_ffff_ffff));
        assert!(!ratio_keeps(0.0, 0));
        assert!(ratio_keeps(0.5, 0x0000_0000_0000_0000_7fff_ffff_ffff_fffe));
        assert!(!ratio_keeps(0.5, 0x0000_0000_0000_0000_8000_0000_0000_0000));
        // About 1% of random ids.
        let kept = (0..100_000).filter(|_| ratio_keeps(0.01, new_trace_id())).count();
        assert!((500..1500).contains(&kept), "{kept}");
    }
}
