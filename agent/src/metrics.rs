//! The agent's counters, rendered in Prometheus text format on `/_node/metrics/prometheus`.
//!
//! Plain atomics: the values are few and the format is simple, so no metrics library is linked.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (set, not added to).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub sync_ok: Counter,
    pub sync_errors: Counter,
    pub heartbeats_ok: Counter,
    pub heartbeat_errors: Counter,
    /// Records received from dataplanes.
    pub analytics_records_received: Counter,
    /// Records dataplanes reported as dropped on their side (queue full).
    pub analytics_records_dropped_by_dataplanes: Counter,
    pub reports_documents_uploaded: Counter,
    pub reports_batches_uploaded: Counter,
    pub reports_upload_failures: Counter,
    /// Documents the Cloud Gate refused for good (4xx other than 408/429).
    pub reports_documents_rejected: Counter,
    /// Documents lost at shutdown because the grace period ran out before they were delivered.
    pub reports_documents_lost: Counter,
    pub reports_upload_bytes: Counter,
    pub reports_upload_latency_ms_total: Counter,
    /// `hgw.v1.RateLimit/Acquire` calls, the hits they carried, and calls the counter store failed.
    pub ratelimit_calls: Counter,
    pub ratelimit_hits: Counter,
    pub ratelimit_errors: Counter,
    /// Last-good snapshots written, per location.
    pub last_good_writes_redis: Counter,
    pub last_good_writes_file: Counter,
    pub last_good_write_errors_redis: Counter,
    pub last_good_write_errors_file: Counter,
    /// Stored snapshots found at start but not served (corrupt, another format, foreign).
    pub last_good_ignored: Counter,
    /// Snapshots restored at start (0 or 1 per process).
    pub last_good_restored: Counter,
    /// 1 when the last background Redis ping succeeded (kept by `Redis::monitor`).
    pub redis_up: Gauge,
    pub redis_ping_failures: Counter,
}

/// Gauges read at render time from the rest of the agent.
pub struct Gauges {
    pub config_version: u64,
    pub apis_deployed: usize,
    pub apis_rejected: usize,
    pub dataplanes_connected: usize,
    pub reports_queue_documents: usize,
    pub sync_initial_done: bool,
    pub redis_configured: bool,
}

impl Metrics {
    /// Counts one last-good snapshot write to `to` (`redis` or `file`).
    pub fn last_good_write(&self, to: &str, ok: bool) {
        match (to, ok) {
            ("redis", true) => self.last_good_writes_redis.inc(),
            ("redis", false) => self.last_good_write_errors_redis.inc(),
            (_, true) => self.last_good_writes_file.inc(),
            (_, false) => self.last_good_write_errors_file.inc(),
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("hgw_agent_sync_total", "counter", "Successful syncs (Cloud Gate or local folder).", self.sync_ok.get());
        metric("hgw_agent_sync_errors_total", "counter", "Failed syncs.", self.sync_errors.get());
        metric(
            "hgw_agent_ratelimit_calls_total",
            "counter",
            "RateLimit/Acquire calls from dataplanes.",
            self.ratelimit_calls.get(),
        );
        metric("hgw_agent_ratelimit_hits_total", "counter", "Counter hits answered.", self.ratelimit_hits.get());
        metric(
            "hgw_agent_ratelimit_errors_total",
            "counter",
            "Acquire calls the counter store could not answer (Redis down or slow).",
            self.ratelimit_errors.get(),
        );
        metric(
            "hgw_agent_sync_initial_done",
            "gauge",
            "1 once the first sync succeeded.",
            gauges.sync_initial_done as u64,
        );
        metric("hgw_agent_config_version", "gauge", "Current deployment-set version.", gauges.config_version);
        metric("hgw_agent_apis_deployed", "gauge", "APIs in the deployment set.", gauges.apis_deployed as u64);
        metric(
            "hgw_agent_apis_rejected",
            "gauge",
            "APIs rejected (see /_node/apis for reasons).",
            gauges.apis_rejected as u64,
        );
        metric(
            "hgw_agent_dataplanes_connected",
            "gauge",
            "Dataplanes with an open config stream.",
            gauges.dataplanes_connected as u64,
        );
        metric(
            "hgw_agent_heartbeats_total",
            "counter",
            "Heartbeats accepted by the Cloud Gate.",
            self.heartbeats_ok.get(),
        );
        metric("hgw_agent_heartbeat_errors_total", "counter", "Heartbeats that failed.", self.heartbeat_errors.get());
        metric(
            "hgw_agent_analytics_records_received_total",
            "counter",
            "Analytics records received from dataplanes.",
            self.analytics_records_received.get(),
        );
        metric(
            "hgw_agent_analytics_records_dropped_by_dataplanes_total",
            "counter",
            "Records dataplanes dropped before sending (their queue was full).",
            self.analytics_records_dropped_by_dataplanes.get(),
        );
        metric(
            "hgw_agent_reports_queue_documents",
            "gauge",
            "Documents waiting for upload.",
            gauges.reports_queue_documents as u64,
        );
        metric(
            "hgw_agent_reports_documents_uploaded_total",
            "counter",
            "Documents delivered.",
            self.reports_documents_uploaded.get(),
        );
        metric(
            "hgw_agent_reports_batches_uploaded_total",
            "counter",
            "Batches delivered.",
            self.reports_batches_uploaded.get(),
        );
        metric(
            "hgw_agent_reports_upload_failures_total",
            "counter",
            "Upload attempts that failed (retried).",
            self.reports_upload_failures.get(),
        );
        metric(
            "hgw_agent_reports_documents_rejected_total",
            "counter",
            "Documents the Cloud Gate refused for good (4xx).",
            self.reports_documents_rejected.get(),
        );
        metric(
            "hgw_agent_reports_documents_lost_total",
            "counter",
            "Documents not delivered before the shutdown grace period ended.",
            self.reports_documents_lost.get(),
        );
        metric(
            "hgw_agent_reports_upload_bytes_total",
            "counter",
            "Compressed bytes uploaded.",
            self.reports_upload_bytes.get(),
        );
        metric(
            "hgw_agent_reports_upload_latency_ms_total",
            "counter",
            "Sum of successful upload latencies (ms); divide by batches for the mean.",
            self.reports_upload_latency_ms_total.get(),
        );
        metric(
            "hgw_agent_redis_configured",
            "gauge",
            "1 when a Redis is configured (else state is in memory).",
            gauges.redis_configured as u64,
        );
        metric(
            "hgw_agent_redis_up",
            "gauge",
            "1 when the last Redis ping succeeded; 0 when it failed or no Redis is configured.",
            self.redis_up.get(),
        );
        metric(
            "hgw_agent_redis_ping_failures_total",
            "counter",
            "Background Redis pings that failed.",
            self.redis_ping_failures.get(),
        );
        metric(
            "hgw_agent_last_good_ignored_total",
            "counter",
            "Stored last-good snapshots not served at start (corrupt, other format, other cluster or organization).",
            self.last_good_ignored.get(),
        );
        metric(
            "hgw_agent_last_good_restored_total",
            "counter",
            "Last-good snapshots served at start, before the first sync.",
            self.last_good_restored.get(),
        );
        let mut labelled = |name: &str, help: &str, values: [(&str, u64); 2]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (to, value) in values {
                let _ = writeln!(out, "{name}{{to=\"{to}\"}} {value}");
            }
        };
        labelled(
            "hgw_agent_last_good_writes_total",
            "Last-good snapshots written.",
            [("redis", self.last_good_writes_redis.get()), ("file", self.last_good_writes_file.get())],
        );
        labelled(
            "hgw_agent_last_good_write_errors_total",
            "Last-good snapshot writes that failed (retried later).",
            [("redis", self.last_good_write_errors_redis.get()), ("file", self.last_good_write_errors_file.get())],
        );
        out
    }
}
