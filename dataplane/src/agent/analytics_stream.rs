//! The analytics stream to the agent (`hgw.v1.Analytics/Report`): the reporter drains the record
//! queue of [`crate::telemetry::analytics`] into batches, encodes each once, and keeps them flowing
//! to the agent until acknowledged (see there for how memory is bounded).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use hgw_proto::v1::{HealthCheckRecord, LogRecord, ReportRequest, ReportResponse};
use prost::Message;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::backoff::Backoff;
use crate::agent::config_stream::AgentError;
use crate::agent::link::AgentLink;
use crate::http::upstream::error_chain;
use crate::telemetry::analytics::{AnalyticsSink, Entry, Queue};
use crate::telemetry::metrics::Metrics;

/// Records per batch: large enough to amortise the agent's fsync, small enough for one gRPC message.
pub const BATCH_SIZE: usize = 500;
/// `ReportRequest.records`' field number.
const RECORDS_FIELD: u32 = 3;
/// A partial batch is sent after this long, so records reach the agent promptly at low traffic.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Creates the queue: the sink for requests and the reporter that drains it.
pub fn channel(
    capacity: usize,
    log_max_payload: usize,
    log_masked_headers: Vec<http::HeaderName>,
    metrics: Arc<Metrics>,
    dataplane_id: String,
) -> (Arc<AnalyticsSink>, Reporter) {
    let queue = Arc::new(Queue { state: Default::default(), ready: Notify::new(), capacity: capacity.max(1) });
    let dropped = Arc::new(AtomicU64::new(0));
    let health = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::new(AnalyticsSink {
        queue: queue.clone(),
        metrics: metrics.clone(),
        dropped_since_batch: dropped.clone(),
        health: health.clone(),
        log_max_payload,
        log_masked_headers: log_masked_headers.into(),
    });
    let reporter = Reporter {
        queue,
        batches: Batches {
            pending: VecDeque::new(),
            max_pending: capacity / BATCH_SIZE + 1,
            current: Vec::new(),
            current_records: 0,
            current_logs: Vec::new(),
            next_sequence: 1,
            dropped_since_batch: dropped,
            metrics,
            dataplane_id,
            health,
        },
    };
    (sink, reporter)
}
/// A sealed batch kept until the agent acknowledges it: encoded once, when sealed, so the records'
/// strings are freed at once and sending (or resending after a reconnect) copies nothing.
#[derive(Debug, Clone)]
struct SealedBatch {
    sequence: u64,
    /// Records of every kind it carries (metrics, logs, health checks).
    records: u64,
    /// The `ReportRequest`, protobuf-encoded.
    encoded: Bytes,
}

/// Sealed batches waiting for acknowledgement, and the batch being filled.
#[derive(Debug)]
struct Batches {
    pending: VecDeque<SealedBatch>,
    max_pending: usize,
    /// The batch's metrics records, already protobuf-encoded as `ReportRequest.records` fields (a
    /// record is encoded as it joins the batch and freed at once: nothing is moved or measured twice).
    current: Vec<u8>,
    current_records: usize,
    current_logs: Vec<LogRecord>,
    next_sequence: u64,
    dropped_since_batch: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    dataplane_id: String,
    health: Arc<std::sync::Mutex<Vec<HealthCheckRecord>>>,
}

impl Batches {
    fn has_room(&self) -> bool {
        self.pending.len() < self.max_pending
    }

    /// Adds a request's records; returns a sealed batch when it fills one.
    fn push(&mut self, entry: Entry) -> Option<&SealedBatch> {
        prost::encoding::message::encode(RECORDS_FIELD, &*entry.metrics, &mut self.current);
        self.current_records += 1;
        if let Some(log) = entry.log {
            self.current_logs.push(*log);
        }
        if self.current_records >= BATCH_SIZE { self.seal() } else { None }
    }

    /// Seals the current batch (also an empty one when drops must be reported).
    fn seal(&mut self) -> Option<&SealedBatch> {
        let dropped = self.dropped_since_batch.load(Ordering::Relaxed);
        let health = std::mem::take(&mut *self.health.lock().unwrap_or_else(|p| p.into_inner()));
        if self.current_records == 0 && dropped == 0 && health.is_empty() {
            return None;
        }
        self.dropped_since_batch.fetch_sub(dropped, Ordering::Relaxed);
        let batch = ReportRequest {
            sequence: self.next_sequence,
            dataplane_id: self.dataplane_id.clone(),
            records: Vec::new(),
            dropped,
            health_checks: health,
            logs: std::mem::take(&mut self.current_logs),
        };
        self.next_sequence += 1;
        let records = (self.current_records + batch.logs.len() + batch.health_checks.len()) as u64;
        // A repeated field's entries may come anywhere in the message: the records go after the rest.
        let mut encoded = Vec::with_capacity(batch.encoded_len() + self.current.len());
        batch.encode_raw(&mut encoded);
        encoded.append(&mut self.current);
        self.current_records = 0;
        self.pending.push_back(SealedBatch { sequence: batch.sequence, records, encoded: encoded.into() });
        self.publish_pending();
        self.pending.back()
    }

    fn ack(&mut self, sequence: u64) {
        if let Some(pos) = self.pending.iter().position(|b| b.sequence == sequence) {
            if let Some(batch) = self.pending.remove(pos) {
                self.metrics.analytics_acked.fetch_add(batch.records, Ordering::Relaxed);
            }
            self.publish_pending();
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.current_records == 0
    }

    fn unacknowledged_records(&self) -> u64 {
        self.pending.iter().map(|b| b.records).sum::<u64>() + (self.current_records + self.current_logs.len()) as u64
    }

    fn publish_pending(&self) {
        self.metrics.analytics_batches_pending.store(self.pending.len() as u64, Ordering::Relaxed);
        self.metrics.analytics_unacked.store(self.pending.iter().map(|b| b.records).sum(), Ordering::Relaxed);
    }
}

/// An open `Analytics/Report` stream.
struct ReportStream {
    tx: mpsc::Sender<Bytes>,
    inbound: tonic::Streaming<ReportResponse>,
}

impl ReportStream {
    /// Queues a batch on the stream (its bytes are shared, not copied); false when the stream is gone.
    fn send(&self, batch: &SealedBatch) -> bool {
        self.tx.try_send(batch.encoded.clone()).is_ok()
    }
}

/// `hgw.v1.Analytics/Report` with batches that are already encoded: requests pass through as bytes,
/// acknowledgements are decoded as usual.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl tonic::codec::Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ReportResponse;
    type Encoder = PassThrough;
    type Decoder = tonic_prost::ProstDecoder<ReportResponse>;

    fn encoder(&mut self) -> PassThrough {
        PassThrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

#[derive(Debug, Clone, Copy)]
struct PassThrough;

impl tonic::codec::Encoder for PassThrough {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

const REPORT_PATH: &str = "/hgw.v1.Analytics/Report";

type Connecting = Pin<Box<dyn Future<Output = Result<(ReportStream, u64), AgentError>> + Send>>;

/// Drains the record queue into batches and keeps them flowing to the agent.
#[derive(Debug)]
pub struct Reporter {
    queue: Arc<Queue>,
    batches: Batches,
}

impl Reporter {
    /// Runs until `flush` delivers a deadline and every batch is acknowledged, or the deadline passes.
    /// The deadline comes after the HTTP server drained, so the last requests' records are included.
    pub async fn run(mut self, agent: AgentLink, flush: oneshot::Receiver<Instant>) {
        let mut backoff = Backoff::default();
        let mut stream: Option<ReportStream> = None;
        let mut connecting: Option<Connecting> = Some(self.connect(&agent));
        let mut retry_at: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        let mut flush = flush;
        let mut flush_armed = true;
        let mut rx_open = true;
        let mut tick = tokio::time::interval(BATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            if deadline.is_some() && self.batches.is_empty() {
                tracing::info!("analytics flushed and acknowledged");
                return;
            }
            // Batches are made only for an open stream: while the agent is away records stay in the
            // queue, whose bound then drops the oldest ones first.
            let draining = deadline.is_none() && rx_open && stream.is_some() && self.batches.has_room();
            tokio::select! {
                flushed = &mut flush, if flush_armed => {
                    flush_armed = false;
                    deadline = Some(flushed.unwrap_or_else(|_| Instant::now()));
                    self.drain_for_shutdown(stream.as_ref());
                }
                () = sleep_until(deadline) => {
                    let lost = self.batches.unacknowledged_records();
                    self.batches.metrics.analytics_dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::warn!(records = lost, batches = self.batches.pending.len(),
                        "shutdown grace period over: analytics records not acknowledged by the agent are lost");
                    return;
                }
                received = self.next_entry(), if draining => match received {
                    Some(entry) => {
                        if let Some(batch) = self.batches.push(entry) {
                            send(&mut stream, batch);
                        }
                    }
                    None => rx_open = false,
                },
                _ = tick.tick() => {
                    // Without a stream or without room, drops keep accumulating and ride on the next batch.
                    if stream.is_none() || !self.batches.has_room() {
                        continue;
                    }
                    if let Some(batch) = self.batches.seal() {
                        send(&mut stream, batch);
                    }
                }
                connected = poll_connecting(&mut connecting) => {
                    connecting = None;
                    match connected {
                        Ok((open, sent_through)) => {
                            tracing::info!("analytics stream to the agent open");
                            for batch in self.batches.pending.iter().filter(|b| b.sequence > sent_through) {
                                open.send(batch);
                            }
                            stream = Some(open);
                        }
                        Err(error) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %error_chain(&error), retry_in_ms = delay.as_millis() as u64, "analytics stream to the agent failed");
                            retry_at = Some(Instant::now() + delay);
                        }
                    }
                }
                () = sleep_until(retry_at) => {
                    retry_at = None;
                    connecting = Some(self.connect(&agent));
                }
                message = next_ack(&mut stream) => match message {
                    Ok(Some(ReportResponse { sequence })) => {
                        backoff.reset();
                        self.batches.ack(sequence);
                    }
                    Ok(None) | Err(_) => {
                        let delay = backoff.next_delay();
                        match message {
                            Err(status) => tracing::warn!(error = %status, retry_in_ms = delay.as_millis() as u64, "analytics stream to the agent broke"),
                            _ => tracing::warn!(retry_in_ms = delay.as_millis() as u64, "agent closed the analytics stream"),
                        }
                        stream = None;
                        retry_at = Some(Instant::now() + delay);
                    }
                },
            }
        }
    }

    /// Moves every queued record into batches, ignoring the pending bound: the queue is bounded
    /// already, and this is the last chance to deliver them.
    fn drain_for_shutdown(&mut self, stream: Option<&ReportStream>) {
        self.queue.close();
        while let (Some(entry), queued) = self.queue.pop() {
            self.batches.metrics.analytics_queued.store(queued, Ordering::Relaxed);
            if let Some(batch) = self.batches.push(entry)
                && let Some(s) = stream
            {
                s.send(batch);
            }
        }
        if let Some(batch) = self.batches.seal()
            && let Some(s) = stream
        {
            s.send(batch);
        }
    }

    /// The next queued entry, waiting for one; `None` once the queue is closed and empty.
    async fn next_entry(&self) -> Option<Entry> {
        loop {
            let (entry, queued) = self.queue.pop();
            if let Some(entry) = entry {
                self.batches.metrics.analytics_queued.store(queued, Ordering::Relaxed);
                return Some(entry);
            }
            if self.queue.is_closed() {
                return None;
            }
            // `notify_one` keeps a permit when nobody waits, so a push between `pop` and here is not lost.
            self.queue.ready.notified().await;
        }
    }

    /// Opens a stream with every pending batch already queued on it (so an agent that waits for the
    /// first message before answering cannot deadlock it); returns the last sequence queued.
    fn connect(&self, agent: &AgentLink) -> Connecting {
        let agent = agent.clone();
        let initial: Vec<SealedBatch> = self.batches.pending.iter().cloned().collect();
        // Room for every batch this stream can ever hold, so `try_send` only fails when it is closed.
        let capacity = self.batches.max_pending + initial.len() + 8;
        Box::pin(async move {
            let channel = agent.connect().await?;
            let (tx, rx) = mpsc::channel(capacity);
            let sent_through = initial.last().map_or(0, |b| b.sequence);
            for batch in initial {
                let _ = tx.try_send(batch.encoded);
            }
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await?;
            let path = http::uri::PathAndQuery::from_static(REPORT_PATH);
            let request = tonic::Request::new(ReceiverStream::new(rx));
            let response = grpc.streaming(request, path, PreEncoded).await.map_err(AgentError::Rpc)?;
            Ok((ReportStream { tx, inbound: response.into_inner() }, sent_through))
        })
    }
}

fn send(stream: &mut Option<ReportStream>, batch: &SealedBatch) {
    if let Some(s) = stream
        && !s.send(batch)
    {
        // The stream task is gone; the inbound side reports the error and triggers the reconnect.
        tracing::debug!(sequence = batch.sequence, "analytics stream closed before the batch was queued");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(connecting: &mut Option<Connecting>) -> Result<(ReportStream, u64), AgentError> {
    match connecting {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_ack(stream: &mut Option<ReportStream>) -> Result<Option<ReportResponse>, tonic::Status> {
    match stream {
        Some(s) => s.inbound.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use hgw_proto::v1::MetricsRecord;

    use super::*;
    use crate::telemetry::analytics::PendingRecord;

    fn batches(capacity: usize) -> (Batches, Arc<AtomicU64>) {
        let metrics = Arc::new(Metrics::default());
        let (sink, reporter) = channel(capacity, 1024, Vec::new(), metrics, "dp".into());
        (reporter.batches, sink.dropped_since_batch.clone())
    }

    /// What the agent reads from a sealed batch.
    fn decoded(batch: &SealedBatch) -> ReportRequest {
        let request = ReportRequest::decode(batch.encoded.clone()).expect("a ReportRequest");
        assert_eq!(
            (request.sequence, batch.records),
            (batch.sequence, (request.records.len() + request.logs.len()) as u64)
        );
        request
    }

    fn entry(id: &str) -> Entry {
        Entry { metrics: Box::new(MetricsRecord { request_id: id.into(), ..Default::default() }), log: None }
    }

    #[test]
    fn seals_full_batches_with_increasing_sequences() {
        let (mut b, _) = batches(10_000);
        assert_eq!(b.max_pending, 21);
        for i in 0..BATCH_SIZE - 1 {
            assert!(b.push(entry(&i.to_string())).is_none());
        }
        let sealed = decoded(b.push(entry("last")).unwrap());
        assert_eq!((sealed.sequence, sealed.records.len()), (1, BATCH_SIZE));
        assert_eq!((sealed.records[0].request_id.as_str(), sealed.dataplane_id.as_str()), ("0", "dp"));
        assert_eq!(sealed.records[BATCH_SIZE - 1].request_id, "last", "records keep their order");
        b.push(Entry { log: Some(Box::new(LogRecord::default())), ..entry("logged") });
        let sealed = decoded(b.seal().unwrap());
        assert_eq!((sealed.sequence, sealed.records.len(), sealed.logs.len()), (2, 1, 1));
        assert!(b.seal().is_none(), "nothing to report");
        assert_eq!(b.pending.len(), 2);
        assert_eq!(b.metrics.analytics_batches_pending.load(Ordering::Relaxed), 2);
        assert_eq!(b.metrics.analytics_unacked.load(Ordering::Relaxed), BATCH_SIZE as u64 + 2);
        b.ack(1);
        assert_eq!(b.metrics.analytics_acked.load(Ordering::Relaxed), BATCH_SIZE as u64);
        b.ack(1);
        assert_eq!(b.pending.len(), 1);
        b.ack(2);
        assert_eq!(b.metrics.analytics_acked.load(Ordering::Relaxed), BATCH_SIZE as u64 + 2, "log records count");
        assert!(b.is_empty());
    }

    #[test]
    fn drops_are_reported_in_the_next_batch() {
        let (mut b, dropped) = batches(10);
        assert_eq!(b.max_pending, 1);
        dropped.fetch_add(3, Ordering::Relaxed);
        let sealed = decoded(b.seal().unwrap());
        assert_eq!((sealed.records.len(), sealed.dropped), (0, 3));
        assert!(!b.has_room());
        assert!(b.seal().is_none());
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let (sink, reporter) = channel(2, 1024, Vec::new(), metrics.clone(), "dp".into());
        for i in 0..5 {
            let log = (i == 0).then(LogRecord::default);
            sink.record(Box::new(MetricsRecord { request_id: i.to_string(), ..Default::default() }), log);
        }
        assert_eq!(metrics.analytics_produced.load(Ordering::Relaxed), 6);
        assert_eq!(metrics.analytics_queued.load(Ordering::Relaxed), 2);
        // Entry 0 carried a log record: dropping it dropped two records.
        assert_eq!(metrics.analytics_dropped.load(Ordering::Relaxed), 4);
        assert_eq!(sink.dropped_since_batch.load(Ordering::Relaxed), 4);
        let kept: Vec<String> = std::iter::from_fn(|| reporter.queue.pop().0).map(|e| e.metrics.request_id).collect();
        assert_eq!(kept, vec!["3", "4"], "the newest stay");
    }

    #[tokio::test]
    async fn a_closed_queue_counts_what_it_refuses() {
        let metrics = Arc::new(Metrics::default());
        let (sink, reporter) = channel(2, 1024, Vec::new(), metrics.clone(), "dp".into());
        reporter.queue.close();
        sink.record(Box::default(), None);
        assert_eq!(metrics.analytics_dropped.load(Ordering::Relaxed), 1);
        assert!(reporter.next_entry().await.is_none());
    }

    #[tokio::test]
    async fn pending_record_emits_once_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let (sink, reporter) = channel(10, 1024, Vec::new(), metrics, "dp".into());
        let mut pending =
            PendingRecord::new(MetricsRecord { request_id: "r".into(), ..Default::default() }, Instant::now(), sink);
        pending.response_data(b"hello");
        pending.set_endpoint_time(Duration::ZERO);
        drop(pending);
        let entry = reporter.next_entry().await.unwrap();
        assert_eq!(entry.metrics.request_id, "r");
        assert_eq!(entry.metrics.response_content_length, 5);
        assert!(entry.metrics.gateway_latency_ms >= 0);
        assert!(entry.log.is_none());
        assert!(reporter.queue.pop().0.is_none());
    }
}
