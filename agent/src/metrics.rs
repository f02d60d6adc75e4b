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

/// Upper bounds (seconds) of the upload latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A Prometheus histogram of durations with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", self.count());
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
    /// Records whose batch was acknowledged to its dataplane (after the spool made it durable).
    pub reports_records_acknowledged: Counter,
    /// Records written to the spool (a few more than acknowledged when a stream broke before the ack).
    pub reports_records_spooled: Counter,
    pub reports_records_uploaded: Counter,
    pub reports_batches_uploaded: Counter,
    pub reports_upload_failures: Counter,
    /// Records the Cloud Gate refused for good (4xx other than 401/403/408/429), kept in `rejected/`.
    pub reports_records_rejected: Counter,
    pub reports_batches_rejected: Counter,
    pub reports_upload_bytes: Counter,
    pub reports_upload_latency: Histogram,
    /// Bytes cut from spool segments at start (interrupted writes, damage).
    pub reports_spool_corrupt_bytes: Counter,
    /// Spool writes or fsyncs that failed (batches not acknowledged; dataplanes resend them).
    pub reports_spool_write_errors: Counter,
    /// Times the spool filled up and acknowledgements stopped.
    pub reports_spool_full_events: Counter,
    /// Dataplane batches refused because they alone exceed the spool bound.
    pub reports_batches_too_large: Counter,
    /// `hgw.v1.RateLimit/Acquire` calls, the hits they carried, and calls the counter store failed.
    pub ratelimit_calls: Counter,
    pub ratelimit_hits: Counter,
    pub ratelimit_errors: Counter,
    /// Hits refused because they named no deployed policy step or asked more than it allows.
    pub ratelimit_refused: Counter,
    /// Hits refused because the in-memory counter table was full (`--rate-limit-max-keys`).
    pub ratelimit_table_full: Counter,
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
    /// Documents in the spool, not yet delivered.
    pub reports_spool_documents: u64,
    pub reports_spool_bytes: u64,
    pub reports_spool_max_bytes: u64,
    pub reports_spool_segments: usize,
    pub reports_spool_full: bool,
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
            "hgw_agent_reports_batches_too_large_total",
            "counter",
            "Dataplane analytics batches refused because they alone exceed --spool-max-bytes.",
            self.reports_batches_too_large.get(),
        );
        metric(
            "hgw_agent_ratelimit_refused_total",
            "counter",
            "Counter hits refused: no such deployed policy step, or a count or lease beyond the policy's.",
            self.ratelimit_refused.get(),
        );
        metric(
            "hgw_agent_ratelimit_table_full_total",
            "counter",
            "Counter hits refused because the in-memory counter table was full (--rate-limit-max-keys).",
            self.ratelimit_table_full.get(),
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
            "hgw_agent_reports_records_acknowledged_total",
            "counter",
            "Records acknowledged to dataplanes once the spool made them durable.",
            self.reports_records_acknowledged.get(),
        );
        metric(
            "hgw_agent_reports_records_spooled_total",
            "counter",
            "Records written to the spool.",
            self.reports_records_spooled.get(),
        );
        metric(
            "hgw_agent_reports_records_uploaded_total",
            "counter",
            "Records delivered (2xx from /reports, or written to the local reports file).",
            self.reports_records_uploaded.get(),
        );
        metric(
            "hgw_agent_reports_records_rejected_total",
            "counter",
            "Records the Cloud Gate refused for good (4xx); kept under {spool}/rejected/.",
            self.reports_records_rejected.get(),
        );
        metric(
            "hgw_agent_reports_batches_uploaded_total",
            "counter",
            "Batches delivered.",
            self.reports_batches_uploaded.get(),
        );
        metric(
            "hgw_agent_reports_batches_rejected_total",
            "counter",
            "Batches refused for good (4xx).",
            self.reports_batches_rejected.get(),
        );
        metric(
            "hgw_agent_reports_upload_failures_total",
            "counter",
            "Upload attempts that failed and will be retried (network, timeout, 401/403/408/429, 5xx).",
            self.reports_upload_failures.get(),
        );
        metric(
            "hgw_agent_reports_upload_bytes_total",
            "counter",
            "Bytes uploaded (gzip to /reports; NDJSON to a local file).",
            self.reports_upload_bytes.get(),
        );
        self.reports_upload_latency.render(
            &mut out,
            "hgw_agent_reports_upload_latency_seconds",
            "Time of successful uploads (one POST /reports, or one local write).",
        );
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "hgw_agent_reports_spool_documents",
            "gauge",
            "Documents in the spool waiting for delivery.",
            gauges.reports_spool_documents,
        );
        metric("hgw_agent_reports_spool_bytes", "gauge", "Bytes of spool segment files.", gauges.reports_spool_bytes);
        metric(
            "hgw_agent_reports_spool_max_bytes",
            "gauge",
            "--spool-max-bytes: above it, acknowledgements stop.",
            gauges.reports_spool_max_bytes,
        );
        metric(
            "hgw_agent_reports_spool_segments",
            "gauge",
            "Spool segment files.",
            gauges.reports_spool_segments as u64,
        );
        metric(
            "hgw_agent_reports_spool_full",
            "gauge",
            "1 while the spool is full and dataplane batches wait for acknowledgement.",
            gauges.reports_spool_full as u64,
        );
        metric(
            "hgw_agent_reports_spool_full_total",
            "counter",
            "Times the spool filled up.",
            self.reports_spool_full_events.get(),
        );
        metric(
            "hgw_agent_reports_spool_write_errors_total",
            "counter",
            "Spool writes that failed (the batches were not acknowledged; dataplanes resend them).",
            self.reports_spool_write_errors.get(),
        );
        metric(
            "hgw_agent_reports_spool_corrupt_bytes_total",
            "counter",
            "Bytes cut from spool segments at start (interrupted writes, damage; see the log).",
            self.reports_spool_corrupt_bytes.get(),
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
