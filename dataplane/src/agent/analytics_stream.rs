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
use hgw_proto::analytics::API_TABLE_METADATA;
use hgw_proto::v1::{HealthCheckRecord, LogRecord, ReportRequest, ReportResponse};
use prost::Message;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::backoff::Backoff;
use crate::agent::config_stream::AgentError;
use crate::agent::link::AgentLink;
use crate::http::upstream::error_chain;
use crate::telemetry::analytics::{AnalyticsSink, Entry, Queue};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_metrics::{ApiFields, RecordApi};

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
    let capacity = capacity.max(1);
    let wake_at = BATCH_SIZE.min(capacity / 2).max(1);
    let queue = Arc::new(Queue { state: Default::default(), ready: Notify::new(), capacity, wake_at });
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
            apis: Vec::new(),
            api_index: FxHashMap::default(),
            api_table: false,
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
    /// record is encoded as it joins the batch and freed at once: nothing is moved or measured twice);
    /// the batch's other fields are appended when it is sealed.
    current: Vec<u8>,
    current_records: usize,
    current_logs: Vec<LogRecord>,
    /// The APIs of the batch being filled (its `apis` table), found by the address of their shared
    /// [`RecordApi`] (kept here, so the address cannot be reused while it is a key): a record's `api`
    /// is its index + 1.
    apis: Vec<Arc<RecordApi>>,
    api_index: FxHashMap<usize, u32>,
    /// Whether the agent reads the `apis` table (it says so when the stream opens); records for an
    /// agent that does not carry their API's fields themselves.
    api_table: bool,
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
        let Entry { metrics, api, log } = entry;
        match api {
            Some(api) if self.api_table => {
                let index = self.api_ref(api);
                metrics.encode(RECORDS_FIELD, ApiFields::Table(index), &mut self.current);
            }
            Some(api) => metrics.encode(RECORDS_FIELD, ApiFields::Inline(&api), &mut self.current),
            None => metrics.encode(RECORDS_FIELD, ApiFields::Absent, &mut self.current),
        }
        self.current_records += 1;
        if let Some(log) = log {
            self.current_logs.push(*log);
        }
        if self.current_records >= BATCH_SIZE { self.seal() } else { None }
    }

    /// `api`'s 1-based index in the batch's table, added there the first time.
    fn api_ref(&mut self, api: Arc<RecordApi>) -> u32 {
        let next = u32::try_from(self.apis.len() + 1).unwrap_or(u32::MAX);
        *self.api_index.entry(Arc::as_ptr(&api) as usize).or_insert_with(|| {
            self.apis.push(api);
            next
        })
    }

    /// Whether the agent on the stream that just opened reads the `apis` table. A batch being filled
    /// for the other form is sealed first, so no batch mixes the two.
    fn set_api_table(&mut self, api_table: bool) {
        if api_table != self.api_table {
            if self.current_records > 0 {
                self.seal();
            }
            self.api_table = api_table;
        }
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
            apis: self.apis.drain(..).map(|api| api.to_report()).collect(),
        };
        self.api_index.clear();
        self.next_sequence += 1;
        let records = (self.current_records + batch.logs.len() + batch.health_checks.len()) as u64;
        // Fields may come in any order in a protobuf message: the batch's other fields go after its
        // records, so the records already encoded are not copied. The next batch starts with room
        // for as many bytes, so it does not grow (and copy) its way there.
        batch.encode_raw(&mut self.current);
        let room = self.current.len();
        let encoded = std::mem::replace(&mut self.current, Vec::with_capacity(room));
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
    /// Whether the agent reads the batches' `apis` table.
    api_table: bool,
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
        let mut tick = tokio::time::interval(BATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            if deadline.is_some() && self.batches.is_empty() {
                tracing::info!("analytics flushed and acknowledged");
                return;
            }
            // Batches are made only for an open stream: while the agent is away records stay in the
            // queue, whose bound then drops the oldest ones first.
            let draining = deadline.is_none() && stream.is_some() && self.batches.has_room();
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
                () = self.queue.ready.notified(), if draining => self.drain(&mut stream),
                _ = tick.tick() => {
                    // Without a stream or without room, drops keep accumulating and ride on the next batch.
                    if stream.is_none() || !self.batches.has_room() {
                        continue;
                    }
                    self.drain(&mut stream);
                    if self.batches.has_room()
                        && let Some(batch) = self.batches.seal()
                    {
                        send(&mut stream, batch);
                    }
                }
                connected = poll_connecting(&mut connecting) => {
                    connecting = None;
                    match connected {
                        Ok((open, sent_through)) => {
                            tracing::info!("analytics stream to the agent open");
                            // Sealed here (if at all) after the stream was opened: sent below with the rest.
                            self.batches.set_api_table(open.api_table);
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

    /// Moves queued entries into batches, sending each batch it fills, until the queue is empty or
    /// the unacknowledged batches reach their bound.
    fn drain(&mut self, stream: &mut Option<ReportStream>) {
        while self.batches.has_room() {
            let (Some(entry), queued) = self.queue.pop() else {
                break;
            };
            self.batches.metrics.analytics_queued.store(queued, Ordering::Relaxed);
            if let Some(batch) = self.batches.push(entry) {
                send(stream, batch);
            }
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
            let api_table = response.metadata().contains_key(API_TABLE_METADATA);
            Ok((ReportStream { tx, inbound: response.into_inner(), api_table }, sent_through))
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
    use http::HeaderValue;

    use super::*;
    use crate::telemetry::analytics::PendingRecord;
    use crate::telemetry::request_metrics::RequestMetrics;

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
        Entry { metrics: with_id(id), api: None, log: None }
    }

    fn with_id(id: &str) -> Box<RequestMetrics> {
        Box::new(RequestMetrics { request_id: HeaderValue::from_str(id).unwrap(), ..Default::default() })
    }

    fn api(id: &str) -> Arc<RecordApi> {
        Arc::new(RecordApi {
            id: id.into(),
            name: format!("{id} name"),
            organization_id: "org".into(),
            environment_id: "env".into(),
        })
    }

    #[test]
    fn a_batch_names_each_api_once_and_its_records_point_there() {
        let (mut b, _) = batches(10_000);
        b.set_api_table(true);
        let (orders, users) = (api("orders"), api("users"));
        // A redeployed API is a new RecordApi: its own entry, though the id is the same.
        let redeployed = api("orders");
        for (i, api) in [&orders, &users, &orders, &redeployed, &users].into_iter().enumerate() {
            b.push(Entry { api: Some(api.clone()), ..entry(&i.to_string()) });
        }
        b.push(entry("no api"));
        let mut sealed = decoded(b.seal().unwrap());
        let ids: Vec<&str> = sealed.apis.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["orders", "users", "orders"]);
        let refs: Vec<u32> = sealed.records.iter().map(|r| r.api).collect();
        assert_eq!(refs, [1, 2, 1, 3, 2, 0]);
        assert!(sealed.records.iter().all(|r| r.api_id.is_empty()), "the texts travel once, in the table");
        let users_api = sealed.api_of(&sealed.records[1]).unwrap();
        assert_eq!(
            (users_api.name, users_api.api_type, users_api.entrypoint_id, users_api.organization_id),
            ("users name", "proxy", "http-proxy", "org")
        );
        sealed.expand_apis().unwrap();
        assert_eq!(sealed.records[4].api_id, "users");
        // The next batch starts its own table.
        b.push(Entry { api: Some(users.clone()), ..entry("next") });
        let next = decoded(b.seal().unwrap());
        assert_eq!((next.apis.len(), next.apis[0].id.as_str(), next.records[0].api), (1, "users", 1));
    }

    #[test]
    fn an_agent_without_the_table_gets_whole_records_and_no_batch_mixes_the_forms() {
        let (mut b, _) = batches(10_000);
        b.set_api_table(true);
        b.push(Entry { api: Some(api("orders")), ..entry("table") });
        // The stream reopens to an agent that does not read the table: the batch being filled is
        // sealed in its form first.
        b.set_api_table(false);
        assert_eq!(b.pending.len(), 1);
        let first = decoded(&b.pending[0]);
        assert_eq!((first.apis.len(), first.records[0].api), (1, 1));
        b.push(Entry { api: Some(api("orders")), ..entry("whole") });
        let second = decoded(b.seal().unwrap());
        assert!(second.apis.is_empty());
        let r = &second.records[0];
        assert_eq!(
            (r.api, r.api_id.as_str(), r.api_name.as_str(), r.api_type.as_str(), r.entrypoint_id.as_str()),
            (0, "orders", "orders name", "proxy", "http-proxy")
        );
        assert_eq!((r.organization_id.as_str(), r.environment_id.as_str()), ("org", "env"));
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
            sink.record(with_id(&i.to_string()), None, log);
        }
        assert_eq!(metrics.analytics_produced.load(Ordering::Relaxed), 6);
        assert_eq!(metrics.analytics_queued.load(Ordering::Relaxed), 2);
        // Entry 0 carried a log record: dropping it dropped two records.
        assert_eq!(metrics.analytics_dropped.load(Ordering::Relaxed), 4);
        assert_eq!(sink.dropped_since_batch.load(Ordering::Relaxed), 4);
        let kept: Vec<String> = std::iter::from_fn(|| reporter.queue.pop().0)
            .map(|e| e.metrics.request_id.to_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kept, vec!["3", "4"], "the newest stay");
    }

    #[tokio::test]
    async fn a_closed_queue_counts_what_it_refuses() {
        let metrics = Arc::new(Metrics::default());
        let (sink, reporter) = channel(2, 1024, Vec::new(), metrics.clone(), "dp".into());
        reporter.queue.close();
        sink.record(Box::default(), None, None);
        assert_eq!(metrics.analytics_dropped.load(Ordering::Relaxed), 1);
        assert!(reporter.queue.pop().0.is_none());
    }

    #[test]
    fn requests_wake_the_reporter_once_the_queue_holds_its_wake_mark() {
        use futures::FutureExt;
        let metrics = Arc::new(Metrics::default());
        let (sink, mut reporter) = channel(10, 1024, Vec::new(), metrics, "dp".into());
        assert_eq!(reporter.queue.wake_at, 5, "half the capacity when that is under a batch");
        for _ in 0..4 {
            sink.record(Box::default(), None, None);
        }
        assert!(reporter.queue.ready.notified().now_or_never().is_none(), "4 queued: no wake-up");
        sink.record(Box::default(), None, None);
        assert!(reporter.queue.ready.notified().now_or_never().is_some(), "the fifth wakes the reporter");
        // The reporter takes every queued entry at once.
        reporter.drain(&mut None);
        assert_eq!((reporter.queue.pop().0.is_none(), reporter.batches.current_records), (true, 5));
        let (_, large) = channel(100_000, 1024, Vec::new(), Arc::new(Metrics::default()), "dp".into());
        assert_eq!(large.queue.wake_at, BATCH_SIZE, "a batch's worth with a large queue");
    }

    #[tokio::test]
    async fn pending_record_emits_once_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let (sink, reporter) = channel(10, 1024, Vec::new(), metrics, "dp".into());
        let mut pending = PendingRecord::new(with_id("r"), Some(api("orders")), Instant::now(), sink);
        pending.response_data(b"hello");
        pending.set_endpoint_time(Duration::ZERO);
        drop(pending);
        let entry = reporter.queue.pop().0.unwrap();
        assert_eq!(entry.metrics.request_id, "r");
        assert_eq!(entry.api.as_deref().map(|a| a.id.as_str()), Some("orders"));
        assert_eq!(entry.metrics.response_content_length, 5);
        assert!(entry.metrics.gateway_latency_ms >= 0);
        assert!(entry.log.is_none());
        assert!(reporter.queue.pop().0.is_none());
    }
}
