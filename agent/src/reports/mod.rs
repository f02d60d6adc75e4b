//! Analytics from dataplanes to the Cloud Gate's `/reports` (or, in local mode, a file or stdout).
//!
//! The gRPC Analytics service appends each dataplane batch to the on-disk [`spool`] and acknowledges it
//! once durable; a full spool stops acknowledgements (backpressure). The [`Uploader`] reads the spool in
//! order, sends batches of up to `--reports-batch` documents (segments become readable after
//! `--reports-flush-interval` at most) as gzip NDJSON, and deletes what a 2xx accepted. Network errors,
//! timeouts, 408, 429, 5xx and 401/403 (a token problem is not the batch's fault) are retried forever
//! with jittered backoff; any other 4xx moves the batch to `{spool}/rejected/` and counts it. Local mode
//! uses the same path with the file (or stdout) as the sink.

pub mod es;
pub mod segment;
pub mod spool;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cloudgate::{CloudGate, GateError};
use crate::metrics::Metrics;
use crate::sync::jitter;
use spool::{Batch, SpoolReader};

const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where documents go.
pub enum ReportsSink {
    CloudGate(Arc<CloudGate>),
    /// NDJSON appended to a file; `None` is stdout.
    File(Option<PathBuf>),
}

/// Epoch milliseconds now (names of kept files).
pub fn epoch_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

pub struct Uploader {
    pub reader: SpoolReader,
    pub sink: ReportsSink,
    /// Documents per upload, at most.
    pub batch_size: usize,
    /// Uploads in flight at once (`--reports-uploads`).
    pub in_flight: usize,
    /// gzip level of the uploads' bodies (`--reports-gzip-level`, 0-9).
    pub gzip_level: u32,
    pub metrics: Arc<Metrics>,
    /// After `cancel`: how long to go on delivering what the spool holds.
    pub grace: Duration,
    /// OpenTelemetry export: each upload attempt is an `upload` trace; `None`: no traces.
    pub tracing: Option<hgw_otel::Tracing>,
}

/// Why an upload did not succeed.
enum SendError {
    Retry(String),
    Rejected(String),
}

/// How one batch's delivery ended.
enum Delivery {
    Delivered {
        batch: Batch,
        bytes: usize,
        elapsed: Duration,
    },
    Rejected {
        batch: Batch,
        reason: String,
    },
    /// Shutdown came first: the batch (and every later one) stays in the spool.
    Abandoned,
}

impl Uploader {
    /// Delivers the spool until `cancel`, with up to `in_flight` uploads at once: batches are read
    /// ahead, sent concurrently, and committed in the order they were read (so the spool's cursor only
    /// moves over delivered documents). After `cancel` it goes on until the spool is empty, an upload
    /// fails, or the grace period ends. What is left stays in the spool for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        let Uploader { reader, sink, batch_size, in_flight, gzip_level, metrics, grace, tracing } = self;
        let sealed = reader.notifier();
        let reader = Arc::new(Mutex::new(reader));
        let ctx =
            Deliver { sink: &sink, gzip_level, metrics: &metrics, grace, tracing: tracing.as_ref(), cancel: &cancel };
        let mut uploads = FuturesOrdered::new();
        let mut read_backoff = RETRY_START;
        let mut spool_empty = false;
        let mut give_up_at: Option<Instant> = None;
        loop {
            if give_up_at.is_none() && cancel.is_cancelled() {
                give_up_at = Some(Instant::now() + grace);
            }
            if let Some(at) = give_up_at
                && Instant::now() >= at
            {
                return;
            }
            // Read ahead while there is room in flight.
            while uploads.len() < in_flight.max(1) && !spool_empty {
                let next = {
                    let reader = reader.clone();
                    tokio::task::spawn_blocking(move || lock(&reader).next_batch(batch_size))
                        .await
                        .expect("spool reads do not panic")
                };
                match next {
                    Ok(Some(batch)) => {
                        read_backoff = RETRY_START;
                        uploads.push_back(ctx.deliver(batch, give_up_at));
                    }
                    Ok(None) => spool_empty = true,
                    Err(error) => {
                        tracing::error!(%error, "cannot read the reports spool; retrying");
                        if uploads.is_empty() {
                            if give_up_at.is_some() || sleep_or_cancel(jitter(read_backoff), &cancel).await {
                                return;
                            }
                            read_backoff = (read_backoff * 2).min(RETRY_MAX);
                        }
                        break;
                    }
                }
            }
            if uploads.is_empty() {
                if give_up_at.is_some() && spool_empty {
                    return;
                }
                if spool_empty {
                    // A seal between the read and now is remembered by the notifier.
                    tokio::select! {
                        _ = sealed.sealed() => {}
                        _ = cancel.cancelled() => {}
                    }
                    spool_empty = false;
                }
                continue;
            }
            let delivery = tokio::select! {
                Some(delivery) = uploads.next() => delivery,
                // New documents: read them while the uploads run.
                _ = sealed.sealed(), if spool_empty => {
                    spool_empty = false;
                    continue;
                }
            };
            match delivery {
                Delivery::Delivered { batch, bytes, elapsed } => {
                    if batch.records > 0 {
                        metrics.reports_upload_latency.observe(elapsed);
                        metrics.reports_records_uploaded.add(batch.records);
                        metrics.reports_batches_uploaded.inc();
                        metrics.reports_upload_bytes.add(bytes as u64);
                    }
                    if let Err(error) = finish(&reader, batch, Outcome::Delivered).await {
                        tracing::error!(%error, "cannot update the reports spool (delivered documents may be sent again)");
                    }
                }
                Delivery::Rejected { batch, reason } => {
                    let records = batch.records;
                    let kept = finish(&reader, batch, Outcome::Rejected).await;
                    // Counted once the copy is on disk, so the counter never runs ahead of `rejected/`.
                    metrics.reports_records_rejected.add(records);
                    metrics.reports_batches_rejected.inc();
                    match kept {
                        Ok(Some(kept)) => tracing::error!(documents = records, %reason, kept = %kept.display(),
                            "the Cloud Gate refused a reports batch; it is kept and will not be retried"),
                        Ok(None) => {}
                        Err(error) => tracing::error!(%error, documents = records, %reason,
                            "the Cloud Gate refused a reports batch and it could not be kept"),
                    }
                }
                // Later batches may have been delivered: they are sent again after the restart
                // (at least once; documents keep their `_id`).
                Delivery::Abandoned => return,
            }
        }
    }
}

/// What each upload shares.
struct Deliver<'a> {
    sink: &'a ReportsSink,
    gzip_level: u32,
    metrics: &'a Metrics,
    grace: Duration,
    tracing: Option<&'a hgw_otel::Tracing>,
    cancel: &'a CancellationToken,
}

impl Deliver<'_> {
    /// One batch, retried until delivered or refused (or shutdown ends it; it stays spooled). The body
    /// is compressed once, off the runtime's threads.
    async fn deliver(&self, batch: Batch, give_up_at: Option<Instant>) -> Delivery {
        if batch.records == 0 {
            return Delivery::Delivered { batch, bytes: 0, elapsed: Duration::ZERO };
        }
        // Compressed once, on the blocking pool: several batches compress in parallel with the uploads.
        let (batch, body) = match self.sink {
            ReportsSink::CloudGate(_) => match tokio::task::spawn_blocking({
                let level = self.gzip_level;
                move || {
                    let gzipped = gzip(&batch.ndjson, level);
                    (batch, gzipped)
                }
            })
            .await
            {
                Ok((batch, gzipped)) => (batch, Some(gzipped.map(bytes::Bytes::from))),
                Err(error) => {
                    // Only a panic in flate2 gets here; the batch stays in the spool for the next start.
                    tracing::error!(%error, "compressing a reports batch failed");
                    return Delivery::Abandoned;
                }
            },
            ReportsSink::File(_) => (batch, None),
        };
        let mut backoff = RETRY_START;
        loop {
            let started = std::time::Instant::now();
            let mut trace = self.tracing.and_then(hgw_otel::Tracing::start_trace);
            let span = trace.as_ref().map(|t| {
                let mut span = t.root("upload", hgw_otel::SpanKind::Client);
                span.set("hgw.reports.documents", batch.records as i64);
                span.set("hgw.reports.ndjson_bytes", batch.ndjson.len() as i64);
                span
            });
            let result = tokio::select! {
                result = send(self.sink, &batch.ndjson, body.as_ref()) => result,
                _ = grace_over(self.cancel, give_up_at, self.grace) => {
                    tracing::info!(documents = batch.records, "shutdown: upload not finished; the batch stays in the spool");
                    return Delivery::Abandoned;
                }
            };
            if let (Some(t), Some(mut span)) = (trace.as_mut(), span) {
                match &result {
                    Ok(bytes) => span.set("hgw.reports.upload_bytes", *bytes as i64),
                    Err(SendError::Retry(reason)) => {
                        span.set("hgw.reports.outcome", "retry");
                        span.error(reason.clone());
                    }
                    Err(SendError::Rejected(reason)) => {
                        span.set("hgw.reports.outcome", "rejected");
                        span.error(reason.clone());
                    }
                }
                t.end(span);
            }
            drop(trace);
            match result {
                Ok(bytes) => return Delivery::Delivered { batch, bytes, elapsed: started.elapsed() },
                Err(SendError::Rejected(reason)) => return Delivery::Rejected { batch, reason },
                Err(SendError::Retry(reason)) => {
                    self.metrics.reports_upload_failures.inc();
                    if self.cancel.is_cancelled() {
                        tracing::info!(documents = batch.records, %reason, "shutdown: upload failed; the batch stays in the spool");
                        return Delivery::Abandoned;
                    }
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(RETRY_MAX);
                    tracing::warn!(documents = batch.records, %reason, retry_in_ms = wait.as_millis() as u64, "reports upload failed; retrying");
                    if sleep_or_cancel(wait, self.cancel).await {
                        return Delivery::Abandoned;
                    }
                }
            }
        }
    }
}

/// gzip of an NDJSON batch (the Cloud Gate's `Content-Encoding: gzip`).
fn gzip(ndjson: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(ndjson.len() / 4), flate2::Compression::new(level));
    encoder.write_all(ndjson)?;
    encoder.finish()
}

fn lock(reader: &Mutex<SpoolReader>) -> std::sync::MutexGuard<'_, SpoolReader> {
    reader.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Outcome {
    Delivered,
    Rejected,
}

/// Commits (or rejects) the batch on the blocking pool; answers where a rejected batch was kept.
async fn finish(reader: &Arc<Mutex<SpoolReader>>, batch: Batch, outcome: Outcome) -> std::io::Result<Option<PathBuf>> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = lock(&reader);
        match outcome {
            Outcome::Delivered => reader.commit(&batch).map(|()| None),
            Outcome::Rejected => reader.reject(&batch).map(Some),
        }
    })
    .await
    .expect("spool writes do not panic")
}

/// Sleeps `wait`; true when cancelled first.
async fn sleep_or_cancel(wait: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = cancel.cancelled() => true,
    }
}

/// Completes when the shutdown grace period is over (never before `cancel`).
async fn grace_over(cancel: &CancellationToken, give_up_at: Option<Instant>, grace: Duration) {
    let at = match give_up_at {
        Some(at) => at,
        None => {
            cancel.cancelled().await;
            Instant::now() + grace
        }
    };
    tokio::time::sleep_until(at).await
}

/// Sends one batch (`gzipped`: its body for the Cloud Gate); returns the bytes sent.
async fn send(
    sink: &ReportsSink,
    ndjson: &[u8],
    gzipped: Option<&std::io::Result<bytes::Bytes>>,
) -> Result<usize, SendError> {
    match sink {
        ReportsSink::CloudGate(gate) => {
            let gzipped = match gzipped {
                Some(Ok(gzipped)) => gzipped,
                Some(Err(error)) => return Err(SendError::Retry(format!("gzip: {error}"))),
                None => return Err(SendError::Retry("the batch was not compressed".to_owned())),
            };
            gate.post_reports(gzipped.clone()).await.map_err(|e| {
                if retry_upload(&e) { SendError::Retry(e.to_string()) } else { SendError::Rejected(e.to_string()) }
            })?;
            Ok(gzipped.len())
        }
        ReportsSink::File(None) => {
            let mut stdout = tokio::io::stdout();
            stdout.write_all(ndjson).await.map_err(|e| SendError::Retry(format!("stdout: {e}")))?;
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
            file.write_all(ndjson).await.map_err(|e| SendError::Retry(format!("{}: {e}", path.display())))?;
            file.flush().await.map_err(|e| SendError::Retry(format!("{}: {e}", path.display())))?;
            Ok(ndjson.len())
        }
    }
}

/// Retried: what may succeed later without changing the batch. 401/403 too: a token or license problem
/// refuses every batch alike, and moving the whole spool to `rejected/` would not help anyone.
fn retry_upload(error: &GateError) -> bool {
    error.is_retryable() || matches!(error, GateError::Status { status: 401 | 403, .. })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::gzip;

    /// Every level makes a gzip member the Cloud Gate can read back to the same NDJSON (0 stores the
    /// bytes uncompressed, in gzip's framing).
    #[test]
    fn every_gzip_level_reads_back() {
        let ndjson: Vec<u8> = (0..500)
            .flat_map(|i| format!("{{\"type\":\"v4-metrics\",\"requestId\":\"r-{i}\",\"status\":200}}\n").into_bytes())
            .collect();
        let mut sizes = Vec::new();
        for level in [0, 1, 6, 9] {
            let body = gzip(&ndjson, level).unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut back).unwrap();
            assert_eq!(back, ndjson, "level {level}");
            sizes.push(body.len());
        }
        assert!(sizes[0] > ndjson.len(), "level 0 stores: {sizes:?}");
        // Levels 6 and 9 both beat level 1 (not necessarily each other: zlib-rs's 9 can end a few
        // bytes longer than its 6 on a small input).
        assert!(sizes[1] < ndjson.len() / 4 && sizes[2] < sizes[1] && sizes[3] < sizes[1], "{sizes:?}");
    }
}
