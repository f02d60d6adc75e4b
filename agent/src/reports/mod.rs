//! Analytics from dataplanes to the Cloud Gate's `/reports` (or, in local mode, a file or stdout).
//!
//! The gRPC Analytics service hands documents to a bounded queue and acknowledges a dataplane batch only
//! once the queue took it: when uploads stall, the queue fills, acknowledgements stop, and dataplanes
//! keep their records (and count what they must drop). The uploader sends batches of up to
//! `--reports-batch` documents or every `--reports-flush-interval`, as gzip NDJSON, and retries
//! retryable failures (network, 408, 429, 5xx) with jittered backoff. Documents live in memory here: a
//! killed agent loses what it had not uploaded yet (the on-disk spool is the next step).

pub mod es;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cloudgate::CloudGate;
use crate::metrics::Metrics;
use crate::sync::jitter;

/// Dataplane batches waiting in the queue before acknowledgements stop (backpressure).
const QUEUE_BATCHES: usize = 64;
const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where documents go.
pub enum ReportsSink {
    CloudGate(Arc<CloudGate>),
    /// NDJSON appended to a file; `None` is stdout.
    File(Option<PathBuf>),
}

/// The sending side, used by the Analytics gRPC service.
#[derive(Clone)]
pub struct ReportsQueue {
    tx: mpsc::Sender<Vec<String>>,
    depth: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
#[error("the reports uploader has stopped")]
pub struct QueueClosed;

impl ReportsQueue {
    /// Queues NDJSON lines; waits while the queue is full (that is the backpressure).
    pub async fn push(&self, lines: Vec<String>) -> Result<(), QueueClosed> {
        let count = lines.len();
        self.depth.fetch_add(count, Ordering::Relaxed);
        self.tx.send(lines).await.map_err(|_| {
            self.depth.fetch_sub(count, Ordering::Relaxed);
            QueueClosed
        })
    }

    /// Documents accepted but not yet delivered.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

pub struct Uploader {
    rx: mpsc::Receiver<Vec<String>>,
    depth: Arc<AtomicUsize>,
    sink: ReportsSink,
    batch_size: usize,
    flush_interval: Duration,
    metrics: Arc<Metrics>,
    grace: Duration,
}

pub fn channel(
    sink: ReportsSink,
    batch_size: usize,
    flush_interval: Duration,
    metrics: Arc<Metrics>,
    grace: Duration,
) -> (ReportsQueue, Uploader) {
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    let depth = Arc::new(AtomicUsize::new(0));
    (
        ReportsQueue { tx, depth: depth.clone() },
        Uploader { rx, depth, sink, batch_size, flush_interval, metrics, grace },
    )
}

impl Uploader {
    /// Runs until `cancel`, then delivers what is queued within the grace period.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut pending: Vec<String> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let flush_at = deadline;
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(lines) => {
                        pending.extend(lines);
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.flush_interval);
                        while pending.len() >= self.batch_size {
                            let batch: Vec<String> = pending.drain(..self.batch_size).collect();
                            self.deliver(batch, None).await;
                        }
                        if pending.is_empty() {
                            deadline = None;
                        }
                    }
                    None => break,
                },
                _ = async { tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)).await }, if flush_at.is_some() => {
                    deadline = None;
                    let batch = std::mem::take(&mut pending);
                    self.deliver(batch, None).await;
                }
                _ = cancel.cancelled() => break,
            }
        }
        // Shutdown: take what is still queued and deliver it before the grace period ends.
        let give_up_at = Instant::now() + self.grace;
        self.rx.close();
        while let Some(lines) = self.rx.recv().await {
            pending.extend(lines);
        }
        while !pending.is_empty() {
            let take = pending.len().min(self.batch_size);
            let batch: Vec<String> = pending.drain(..take).collect();
            self.deliver(batch, Some(give_up_at)).await;
        }
    }

    /// Delivers one batch, retrying retryable failures (until `give_up_at`, when shutting down).
    async fn deliver(&self, batch: Vec<String>, give_up_at: Option<Instant>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len();
        let mut backoff = RETRY_START;
        loop {
            let started = Instant::now();
            let result = self.send(&batch).await;
            match result {
                Ok(bytes) => {
                    self.metrics.reports_documents_uploaded.add(count as u64);
                    self.metrics.reports_batches_uploaded.inc();
                    self.metrics.reports_upload_bytes.add(bytes as u64);
                    self.metrics.reports_upload_latency_ms_total.add(started.elapsed().as_millis() as u64);
                    break;
                }
                Err(SendError::Rejected(reason)) => {
                    self.metrics.reports_documents_rejected.add(count as u64);
                    tracing::error!(documents = count, reason = %reason, "the Cloud Gate refused a reports batch; it will not be retried");
                    break;
                }
                Err(SendError::Retry(reason)) => {
                    self.metrics.reports_upload_failures.inc();
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(RETRY_MAX);
                    if give_up_at.is_some_and(|at| Instant::now() + wait > at) {
                        self.metrics.reports_documents_lost.add(count as u64);
                        tracing::error!(documents = count, reason = %reason, "shutdown grace period over: reports batch not delivered");
                        break;
                    }
                    tracing::warn!(documents = count, reason = %reason, retry_in_ms = wait.as_millis() as u64, "reports upload failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.depth.fetch_sub(count, Ordering::Relaxed);
    }

    /// Returns the bytes sent.
    async fn send(&self, batch: &[String]) -> Result<usize, SendError> {
        let mut ndjson = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
        for line in batch {
            ndjson.extend_from_slice(line.as_bytes());
            ndjson.push(b'\n');
        }
        match &self.sink {
            ReportsSink::CloudGate(gate) => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::with_capacity(ndjson.len() / 4), flate2::Compression::default());
                encoder.write_all(&ndjson).map_err(|e| SendError::Retry(e.to_string()))?;
                let gzipped = encoder.finish().map_err(|e| SendError::Retry(e.to_string()))?;
                let bytes = gzipped.len();
                gate.post_reports(gzipped).await.map_err(|e| {
                    if e.is_retryable() { SendError::Retry(e.to_string()) } else { SendError::Rejected(e.to_string()) }
                })?;
                Ok(bytes)
            }
            ReportsSink::File(None) => {
                let mut stdout = tokio::io::stdout();
                stdout.write_all(&ndjson).await.map_err(|e| SendError::Retry(format!("stdout: {e}")))?;
                stdout.flush().await.map_err(|e| SendError::Retry(format!("stdout: {e}")))?;
                Ok(ndjson.len())
            }
            ReportsSink::File(Some(path)) => {
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| SendError::Retry(format!("{}: {e}", path.display())))?;
                file.write_all(&ndjson).await.map_err(|e| SendError::Retry(format!("{}: {e}", path.display())))?;
                file.flush().await.map_err(|e| SendError::Retry(format!("{}: {e}", path.display())))?;
                Ok(ndjson.len())
            }
        }
    }
}

enum SendError {
    Retry(String),
    Rejected(String),
}
