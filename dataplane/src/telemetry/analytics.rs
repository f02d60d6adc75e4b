//! Analytics: one Gravitee v4 metrics record per request (and a v4 log record when the API's logging
//! settings apply), queued without ever blocking a request; [`crate::agent::analytics_stream`] batches
//! them and streams them to the agent on `hgw.v1.Analytics/Report` until acknowledged.
//!
//! Memory is bounded twice: the queue (`--analytics-queue` entries; an entry is one request's metrics
//! record with its log record, or nothing else) and the unacknowledged batches (`queue / 500 + 1`).
//! Batches are formed only while a stream to the agent is open: while the agent is away, or while it
//! stops acknowledging (its spool is full), records wait in the queue, and once the queue is full the
//! **oldest** queued entry makes room for the new one. Every dropped record is counted on `/metrics`
//! and reported to the agent in the next batch's `dropped`; none is dropped silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hgw_proto::v1::{HealthCheckRecord, LogRecord};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::telemetry::logging::{CappedBody, LogCapture};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_metrics::{RecordApi, RequestMetrics};

/// One request's records, queued and dropped together.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Boxed from the request on: the record is large, and it moves through the queue.
    pub(crate) metrics: Box<RequestMetrics>,
    /// The record's API, sent in the batch's table.
    pub(crate) api: Option<Arc<RecordApi>>,
    pub(crate) log: Option<Box<LogRecord>>,
}

impl Entry {
    /// Records this entry counts for.
    pub(crate) fn records(&self) -> u64 {
        1 + u64::from(self.log.is_some())
    }
}

/// The bounded queue between requests and the reporter: a ring that drops its oldest entry when a new
/// one arrives while it is full. The lock is held only to push or pop, never across an await.
///
/// Requests do not wake the reporter per record: a record waits in the queue as it would in the batch
/// being filled (a batch is sent when full or on the reporter's tick), so the reporter is woken only
/// when the queue holds `wake_at` entries, and otherwise drains it on its tick. Waking it per record
/// cost a task switch and a poll of its whole loop for every request.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) state: std::sync::Mutex<QueueState>,
    pub(crate) ready: Notify,
    pub(crate) capacity: usize,
    /// Queued entries that wake the reporter (at most half the capacity, so it drains before the
    /// queue is full and has to drop).
    pub(crate) wake_at: usize,
}

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    entries: VecDeque<Entry>,
    /// Records in `entries` (for the queued gauge).
    records: u64,
    /// Set at shutdown, once the reporter took what was queued.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `entry`; returns what could not be kept (the evicted oldest entry, or `entry` itself once
    /// the queue is closed) and the records now queued.
    fn push(&self, entry: Entry) -> (Option<Entry>, u64) {
        let mut state = self.lock();
        if state.closed {
            return (Some(entry), state.records);
        }
        let evicted = if state.entries.len() >= self.capacity { state.entries.pop_front() } else { None };
        if let Some(old) = &evicted {
            state.records -= old.records();
        }
        state.records += entry.records();
        state.entries.push_back(entry);
        let records = state.records;
        let wake = state.entries.len() == self.wake_at;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        (evicted, records)
    }

    /// The oldest entry, and the records left queued.
    pub(crate) fn pop(&self) -> (Option<Entry>, u64) {
        let mut state = self.lock();
        let entry = state.entries.pop_front();
        if let Some(e) = &entry {
            state.records -= e.records();
        }
        (entry, state.records)
    }

    /// Refuses further entries (the reporter closes it when it drains for shutdown).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }
}

/// The request path's handle on the queue. Cheap to share; `record` never awaits.
#[derive(Debug)]
pub struct AnalyticsSink {
    pub(crate) queue: Arc<Queue>,
    pub(crate) metrics: Arc<Metrics>,
    /// Drops since the last sealed batch, reported in its `dropped` field.
    pub(crate) dropped_since_batch: Arc<AtomicU64>,
    /// Health-check results waiting for the next batch (bounded; probes are few and periodic).
    pub(crate) health: Arc<std::sync::Mutex<Vec<HealthCheckRecord>>>,
    /// Bytes of each body a log record keeps (`--log-max-payload`).
    pub(crate) log_max_payload: usize,
    /// Headers whose values log records mask (`--log-masked-headers`).
    pub(crate) log_masked_headers: Arc<[http::HeaderName]>,
}

/// Health-check results kept between batches before new ones are dropped (and counted).
const MAX_PENDING_HEALTH: usize = 10_000;

impl AnalyticsSink {
    /// Queues a health-check result for the next batch; never blocks a probe.
    pub fn health(&self, record: HealthCheckRecord) {
        self.metrics.analytics_produced.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < MAX_PENDING_HEALTH {
            pending.push(record);
        } else {
            self.count_dropped(1);
        }
    }

    /// Enqueues a request's records; when the queue is full its oldest entry is dropped (and counted)
    /// to make room.
    pub fn record(&self, metrics: Box<RequestMetrics>, api: Option<Arc<RecordApi>>, log: Option<LogRecord>) {
        let entry = Entry { metrics, api, log: log.map(Box::new) };
        self.metrics.analytics_produced.fetch_add(entry.records(), Ordering::Relaxed);
        let (lost, queued) = self.queue.push(entry);
        self.metrics.analytics_queued.store(queued, Ordering::Relaxed);
        if let Some(lost) = lost {
            self.count_dropped(lost.records());
        }
    }

    fn count_dropped(&self, records: u64) {
        self.metrics.analytics_dropped.fetch_add(records, Ordering::Relaxed);
        self.dropped_since_batch.fetch_add(records, Ordering::Relaxed);
    }

    /// Bytes of each body a log record keeps.
    pub fn log_max_payload(&self) -> usize {
        self.log_max_payload
    }

    /// Headers whose values log records mask (besides each API's API-key headers).
    pub fn log_masked_headers(&self) -> &Arc<[http::HeaderName]> {
        &self.log_masked_headers
    }
}

/// Something the metrics record should say although the request went on (Gravitee's `warnWith`),
/// e.g. `RATE_LIMIT_NOT_APPLIED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: &'static str,
    pub message: String,
}
/// What the proxy learned about the client's request body while streaming it upstream.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub(crate) bytes: AtomicU64,
    pub(crate) ended: AtomicBool,
    /// Set while the endpoint waits for body data the client has not sent yet.
    pub(crate) starved: AtomicBool,
    /// A [`ClientFault`] (1 malformed, 2 stalled), 0 when none.
    pub(crate) fault: std::sync::atomic::AtomicU8,
    /// The tee for the log: its byte limit and what it kept so far.
    pub(crate) capture: Option<(usize, std::sync::Mutex<CappedBody>)>,
}

/// How the client's request body failed. It is the client's fault, not the endpoint's: the request
/// answers 400 or 408 and no circuit breaker, retry or health check hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// Malformed framing (a bad chunk), or the connection closed before the body's end.
    Malformed,
    /// No data for `--request-body-timeout` while the endpoint waited for it.
    Stalled,
}

impl RequestStats {
    /// The body's failure, if it failed on the client's side. A body the endpoint was still waiting
    /// for when the endpoint's own timeout fired counts as stalled too: the client was the slow one.
    pub fn client_fault(&self, endpoint_timed_out: bool) -> Option<ClientFault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Stalled),
            _ if endpoint_timed_out && self.starved.load(Ordering::Relaxed) && !self.ended() => {
                Some(ClientFault::Stalled)
            }
            _ => None,
        }
    }

    pub(crate) fn set_fault(&self, fault: ClientFault) {
        let code = match fault {
            ClientFault::Malformed => 1,
            ClientFault::Stalled => 2,
        };
        self.fault.store(code, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the whole request body was read.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// What the tee kept, when the body was teed.
    pub fn captured(&self) -> Option<CappedBody> {
        self.capture.as_ref().map(|(_, kept)| kept.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    pub(crate) fn tee(&self, data: &[u8]) {
        if let Some((max, kept)) = &self.capture {
            let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.bytes.len() < *max || !kept.truncated {
                kept.push(data, *max);
            }
        }
    }
}

/// A request's metrics record while the request runs; emitted when dropped, so exactly once.
#[derive(Debug)]
pub struct PendingRecord {
    /// Always present until the record is emitted on drop.
    record: Option<Box<RequestMetrics>>,
    /// The API the record belongs to (its API-level fields).
    api: Option<Arc<RecordApi>>,
    arrival: Instant,
    endpoint_time: Option<Duration>,
    request: Option<Arc<RequestStats>>,
    response_bytes: u64,
    sink: Arc<AnalyticsSink>,
    /// The request's log while it runs, when the API's logging settings apply to it.
    log: Option<Box<LogCapture>>,
}

impl PendingRecord {
    /// `record` carries the fields known at arrival, `api` its API's; `arrival` starts the gateway
    /// response time.
    pub fn new(
        record: Box<RequestMetrics>,
        api: Option<Arc<RecordApi>>,
        arrival: Instant,
        sink: Arc<AnalyticsSink>,
    ) -> PendingRecord {
        let record = Some(record);
        PendingRecord { record, api, arrival, endpoint_time: None, request: None, response_bytes: 0, sink, log: None }
    }

    /// Logs this request too (its log record is emitted with the metrics record).
    pub fn set_log(&mut self, capture: LogCapture) {
        self.log = Some(Box::new(capture));
    }

    pub fn log_mut(&mut self) -> Option<&mut LogCapture> {
        self.log.as_deref_mut()
    }

    /// How many request-body bytes to tee for the log, when the log wants the request body.
    pub fn request_capture(&self) -> Option<usize> {
        self.log.as_ref().filter(|l| l.wants_request_body()).map(|l| l.max_payload())
    }

    pub fn record_mut(&mut self) -> &mut RequestMetrics {
        self.record.get_or_insert_with(Box::default)
    }

    pub fn set_request_stats(&mut self, stats: Arc<RequestStats>) {
        self.request = Some(stats);
    }

    /// Time from sending to the endpoint until its response headers (or failure).
    pub fn set_endpoint_time(&mut self, elapsed: Duration) {
        self.endpoint_time = Some(elapsed);
    }

    /// A chunk of the response body on its way to the client: counted, and teed into the log.
    pub fn response_data(&mut self, data: &[u8]) {
        self.response_bytes += data.len() as u64;
        if let Some(log) = self.log.as_deref_mut() {
            log.response_data(data);
        }
    }

    /// Records a warning (e.g. `RATE_LIMIT_NOT_APPLIED`) in the error fields, unless an error is already
    /// there; a later gateway error replaces it.
    pub fn warn(&mut self, warning: Warning) {
        let record = self.record_mut();
        if record.error_key.is_empty() {
            record.error_key = warning.key;
            record.error_message = warning.message;
        }
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let gateway = millis(self.arrival.elapsed());
        let endpoint = self.endpoint_time.map_or(0, millis);
        record.gateway_response_time_ms = gateway;
        record.endpoint_response_time_ms = endpoint;
        record.gateway_latency_ms = (gateway - endpoint).max(0);
        record.response_content_length = i64::try_from(self.response_bytes).unwrap_or(i64::MAX);
        if let Some(stats) = &self.request {
            record.request_content_length = i64::try_from(stats.bytes()).unwrap_or(i64::MAX);
            record.request_ended = stats.ended();
        }
        let api = self.api.take();
        let log = self.log.take().map(|capture| {
            let names = api.as_deref().map_or(("", ""), |a| (&a.id, &a.name));
            capture.finish(&record, names, self.request.as_ref().and_then(|s| s.captured()))
        });
        self.sink.record(record, api, log);
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Epoch milliseconds now, for `timestamp_ms`.
pub fn epoch_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}
