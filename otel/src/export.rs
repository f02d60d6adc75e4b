//! The export side: a bounded queue of finished spans and one task that batches them and sends them
//! with the SDK's OTLP exporter (gRPC or HTTP/protobuf).
//!
//! Requests never wait for it: a push is an atomic check and a channel send. When more than
//! `OTEL_BSP_MAX_QUEUE_SIZE` spans wait (the collector is slow or away and exports keep failing), new
//! traces are dropped and counted; a batch whose export fails (collector down, timeout) is dropped and
//! counted too. Nothing is retried: tracing is best-effort, and a backlog would only grow memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::settings::{Protocol, Settings};
use crate::{Inner, Tracing};

#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
pub struct StartError {
    endpoint: String,
    reason: String,
}

/// Counters for `/metrics` (Prometheus text via [`ExportStats::prometheus`]).
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans lost: the queue was full, or their export failed.
    pub dropped: AtomicU64,
    /// Export calls that failed (collector away, refused, timed out).
    pub export_failures: AtomicU64,
    /// Spans waiting to be exported.
    pub queued: AtomicUsize,
}

impl ExportStats {
    /// The counters as Prometheus text, names starting with `prefix` (`hgw_dataplane`, `hgw_agent`).
    pub fn prometheus(&self, prefix: &str) -> String {
        let rows = [
            (
                "tracing_spans_exported_total",
                "counter",
                "Spans the OTLP collector accepted.",
                self.exported.load(Ordering::Relaxed),
            ),
            (
                "tracing_spans_dropped_total",
                "counter",
                "Spans dropped: export queue full, or the export failed (collector away).",
                self.dropped.load(Ordering::Relaxed),
            ),
            (
                "tracing_export_failures_total",
                "counter",
                "OTLP export calls that failed.",
                self.export_failures.load(Ordering::Relaxed),
            ),
            ("tracing_spans_queued", "gauge", "Spans waiting for export.", self.queued.load(Ordering::Relaxed) as u64),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n{prefix}_{name} {value}\n"
            ));
        }
        out
    }
}

enum Message {
    Spans(Vec<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// The producer side of the queue.
#[derive(Debug)]
pub(crate) struct QueueHandle {
    tx: mpsc::UnboundedSender<Message>,
    stats: Arc<ExportStats>,
    max_queue: usize,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Spans(spans) => write!(f, "Spans({})", spans.len()),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl QueueHandle {
    /// Queues one trace's spans, or drops them (counted) when the queue is full. Never waits.
    pub(crate) fn push(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let before = self.stats.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.max_queue || self.tx.send(Message::Spans(spans)).is_err() {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> &ExportStats {
        &self.stats
    }

    pub(crate) async fn flush(&self, timeout: Duration) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Message::Flush(ack)).is_ok() {
            let _ = tokio::time::timeout(timeout, done).await;
        }
    }
}

impl Tracing {
    /// Builds the exporter and starts the export task (call inside the tokio runtime).
    /// `scope` names the instrumentation (the binary); `instance` is `service.instance.id`.
    pub fn start(settings: &Settings, scope: &'static str, instance: &str) -> Result<Tracing, StartError> {
        let fail = |reason: String| StartError { endpoint: settings.endpoint.clone(), reason };
        let mut exporter = match settings.protocol {
            Protocol::Grpc => SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.export_timeout)
                .build(),
            Protocol::HttpProtobuf => SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.export_timeout)
                .build(),
        }
        .map_err(|e| fail(e.to_string()))?;
        let mut attributes = vec![
            KeyValue::new("service.name", settings.service_name.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_owned()),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
        ];
        for (key, value) in &settings.resource {
            attributes.retain(|kv| kv.key.as_str() != key);
            attributes.push(KeyValue::new(key.clone(), value.clone()));
        }
        exporter.set_resource(&Resource::builder_empty().with_attributes(attributes).build());

        let stats = Arc::new(ExportStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = ExportTask {
            exporter,
            rx,
            stats: stats.clone(),
            batch_size: settings.max_export_batch_size,
            delay: settings.schedule_delay,
            timeout: settings.export_timeout,
            endpoint: settings.endpoint.clone(),
            failing: AtomicBool::new(false),
        };
        tokio::spawn(task.run());
        let scope = InstrumentationScope::builder(scope).with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Tracing {
            inner: Arc::new(Inner {
                sampler: settings.sampler,
                scope,
                queue: QueueHandle { tx, stats, max_queue: settings.max_queue_size },
            }),
        })
    }
}

struct ExportTask {
    exporter: SpanExporter,
    rx: mpsc::UnboundedReceiver<Message>,
    stats: Arc<ExportStats>,
    batch_size: usize,
    delay: Duration,
    timeout: Duration,
    endpoint: String,
    /// Whether the last export failed (logs say so once per outage, not once per batch).
    failing: AtomicBool,
}

impl ExportTask {
    async fn run(mut self) {
        let mut batch: Vec<SpanData> = Vec::new();
        let mut deadline = Instant::now() + self.delay;
        loop {
            let message = tokio::select! {
                message = self.rx.recv() => message,
                () = tokio::time::sleep_until(deadline) => {
                    self.export_all(&mut batch).await;
                    deadline = Instant::now() + self.delay;
                    continue;
                }
            };
            match message {
                Some(Message::Spans(spans)) => {
                    batch.extend(spans);
                    while batch.len() >= self.batch_size {
                        let rest = batch.split_off(self.batch_size);
                        let full = std::mem::replace(&mut batch, rest);
                        self.export(full).await;
                    }
                }
                Some(Message::Flush(ack)) => {
                    // Whatever is already in the channel belongs to the flush too.
                    while let Ok(Message::Spans(spans)) = self.rx.try_recv() {
                        batch.extend(spans);
                    }
                    self.export_all(&mut batch).await;
                    let _ = ack.send(());
                }
                None => {
                    self.export_all(&mut batch).await;
                    return;
                }
            }
        }
    }

    async fn export_all(&self, batch: &mut Vec<SpanData>) {
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(self.batch_size));
            let chunk = std::mem::replace(batch, rest);
            self.export(chunk).await;
        }
    }

    async fn export(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let outcome = tokio::time::timeout(self.timeout, self.exporter.export(spans)).await;
        self.stats.queued.fetch_sub(n, Ordering::Relaxed);
        let error = match outcome {
            Ok(Ok(())) => {
                self.stats.exported.fetch_add(n as u64, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "OTLP export works again");
                }
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {} ms", self.timeout.as_millis()),
        };
        self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.export_failures.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(endpoint = %self.endpoint, %error, spans = n, "OTLP export failed; spans are dropped (counted) until the collector answers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::{Sampling, TraceParent};
    use opentelemetry::trace::SpanKind;

    fn settings(endpoint: &str, protocol: Protocol, queue: usize) -> Settings {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                match protocol {
                    Protocol::Grpc => "grpc".to_owned(),
                    Protocol::HttpProtobuf => "http/protobuf".to_owned(),
                },
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", queue.to_string()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_owned()),
        ];
        Settings::from_env(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()), "t").unwrap().unwrap()
    }

    /// A port nothing listens on: exports fail (connection refused) and are counted as drops.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn failed_exports_and_a_full_queue_are_counted_never_waited_for() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let tracing =
                Tracing::start(&settings(&format!("http://127.0.0.1:{}", closed_port()), protocol, 4), "t", "i")
                    .unwrap();
            // Three spans per trace, queue of four: the second trace does not fit while the first waits.
            for _ in 0..2 {
                let Sampling::Sampled(mut trace) = tracing.sample(None, None) else { panic!("always on") };
                let root = trace.root("r", SpanKind::Server);
                let a = trace.child(&root, "a", SpanKind::Internal);
                let b = trace.child(&root, "b", SpanKind::Internal);
                trace.end(a);
                trace.end(b);
                trace.end(root);
            }
            assert_eq!(tracing.stats().dropped.load(Ordering::Relaxed), 3, "{protocol:?}: queue full");
            tracing.flush(Duration::from_secs(30)).await;
            let stats = tracing.stats();
            assert_eq!(stats.dropped.load(Ordering::Relaxed), 6, "{protocol:?}: the failed export too");
            assert_eq!(stats.export_failures.load(Ordering::Relaxed), 1);
            assert_eq!(stats.queued.load(Ordering::Relaxed), 0);
            assert!(stats.prometheus("hgw_x").contains("hgw_x_tracing_spans_dropped_total 6\n"));
        }
    }

    #[tokio::test]
    async fn parent_based_sampling_follows_the_caller() {
        let tracing = Tracing::start(&settings("http://127.0.0.1:9", Protocol::HttpProtobuf, 8), "t", "i").unwrap();
        let unsampled = TraceParent { trace_id: 7, parent_id: 9, flags: 0 };
        assert!(matches!(tracing.sample(Some(unsampled), None), Sampling::NotSampled { trace_id: 7 }));
        let sampled = TraceParent { flags: 1, ..unsampled };
        let Sampling::Sampled(trace) = tracing.sample(Some(sampled), Some("k=v")) else { panic!("sampled parent") };
        let root = trace.root("r", SpanKind::Server);
        assert_eq!(root.parent, 9);
        assert_eq!(trace.traceparent(&root), format!("00-{:032x}-{:016x}-01", 7, root.id).as_str());
    }
}
