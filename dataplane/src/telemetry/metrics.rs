//! Process counters as plain atomics, rendered by hand in the Prometheus text format: a handful of
//! series does not justify a metrics library in a binary meant to stay small.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Every counter and gauge the admin `/metrics` page shows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class, index 0 = 1xx … 4 = 5xx.
    responses: [AtomicU64; 5],
    pub unmatched: AtomicU64,
    in_flight: AtomicI64,
    pub config_version: AtomicU64,
    pub config_acks: AtomicU64,
    pub config_nacks: AtomicU64,
    pub apis: AtomicU64,
    pub agent_connected: AtomicU64,
    /// Analytics records made (metrics, log and health-check records alike).
    pub analytics_produced: AtomicU64,
    /// Records acknowledged by the agent.
    pub analytics_acked: AtomicU64,
    /// Records dropped: the oldest queued ones when the queue was full, or those still unacknowledged
    /// when the shutdown grace ran out.
    pub analytics_dropped: AtomicU64,
    /// Gauge: records waiting in the queue (not yet in a batch).
    pub analytics_queued: AtomicU64,
    /// Gauge: records in batches sent (or to be sent) and not acknowledged yet.
    pub analytics_unacked: AtomicU64,
    pub analytics_batches_pending: AtomicU64,
    /// Gauge: client connections open.
    pub connections_open: AtomicU64,
    /// Client connections closed on accept because `--max-connections` were open.
    pub connections_shed: AtomicU64,
    /// Requests refused before routing for their form: header block or request line too long,
    /// missing or repeated Host.
    pub requests_malformed: AtomicU64,
    /// Gauge: WebSocket tunnels open (after a `101`, until either side closes).
    websocket_tunnels: AtomicI64,
    /// WebSocket tunnels closed because nothing moved for `--websocket-idle-timeout`.
    pub websocket_idle_closed: AtomicU64,
    /// HTTP/2 client connections closed because no stream was open for `--http2-idle-timeout`.
    pub http2_idle_closed: AtomicU64,
    /// TLS handshakes that failed (the client's alert, no common protocol, a client certificate
    /// missing or untrusted, not TLS at all).
    pub tls_handshakes_failed: AtomicU64,
    /// TLS handshakes not done within the handshake timeout.
    pub tls_handshakes_timed_out: AtomicU64,
    /// The HTTPS listener's certificates in service, asked at each scrape (they are reloaded).
    pub tls_certificates: std::sync::OnceLock<CertificateSource>,
}

/// Lists `(certificate file, notAfter as Unix seconds)` for each certificate in service.
pub struct CertificateSource(pub Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>);

impl std::fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateSource")
    }
}

/// Decrements the open-tunnels gauge when a WebSocket tunnel ends.
#[derive(Debug)]
pub struct OpenTunnel(Arc<Metrics>);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.websocket_tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the in-flight gauge when the response body is done (or the request abandoned).
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn open_tunnel(self: &Arc<Self>) -> OpenTunnel {
        self.websocket_tunnels.fetch_add(1, Ordering::Relaxed);
        OpenTunnel(self.clone())
    }

    pub fn count_response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(&mut out, "hgw_dataplane_requests_total", "counter", "Responses sent, by status class.");
        for (i, counter) in self.responses.iter().enumerate() {
            let _ = writeln!(out, "hgw_dataplane_requests_total{{code=\"{}xx\"}} {}", i + 1, get(counter));
        }
        single(
            &mut out,
            "hgw_dataplane_requests_unmatched_total",
            "counter",
            "Requests no context path matched (404).",
            get(&self.unmatched),
        );
        family(&mut out, "hgw_dataplane_requests_in_flight", "gauge", "Requests not finished yet.");
        let _ = writeln!(out, "hgw_dataplane_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed).max(0));
        single(
            &mut out,
            "hgw_dataplane_config_version",
            "gauge",
            "Version of the configuration applied (0: none yet).",
            get(&self.config_version),
        );
        family(&mut out, "hgw_dataplane_config_updates_total", "counter", "Config updates by answer.");
        let _ = writeln!(out, "hgw_dataplane_config_updates_total{{result=\"ack\"}} {}", get(&self.config_acks));
        let _ = writeln!(out, "hgw_dataplane_config_updates_total{{result=\"nack\"}} {}", get(&self.config_nacks));
        single(&mut out, "hgw_dataplane_apis", "gauge", "APIs deployed.", get(&self.apis));
        single(
            &mut out,
            "hgw_dataplane_connections_open",
            "gauge",
            "Client connections open.",
            get(&self.connections_open),
        );
        single(
            &mut out,
            "hgw_dataplane_connections_shed_total",
            "counter",
            "Client connections closed on accept: --max-connections were open.",
            get(&self.connections_shed),
        );
        single(
            &mut out,
            "hgw_dataplane_requests_malformed_total",
            "counter",
            "Requests refused before routing: request line too long (414), missing or repeated Host (400).",
            get(&self.requests_malformed),
        );
        single(
            &mut out,
            "hgw_dataplane_agent_connected",
            "gauge",
            "1 while the config stream to the agent is up.",
            get(&self.agent_connected),
        );
        for (name, help, counter) in [
            (
                "hgw_dataplane_analytics_records_produced_total",
                "Analytics records made (v4 metrics, v4 log and health-check records).",
                &self.analytics_produced,
            ),
            (
                "hgw_dataplane_analytics_records_acknowledged_total",
                "Analytics records the agent acknowledged.",
                &self.analytics_acked,
            ),
            (
                "hgw_dataplane_analytics_records_dropped_total",
                "Analytics records dropped (oldest first when the queue is full; also reported to the agent).",
                &self.analytics_dropped,
            ),
        ] {
            single(&mut out, name, "counter", help, get(counter));
        }
        single(
            &mut out,
            "hgw_dataplane_analytics_records_queued",
            "gauge",
            "Analytics records waiting in the queue for a batch.",
            get(&self.analytics_queued),
        );
        single(
            &mut out,
            "hgw_dataplane_analytics_records_pending",
            "gauge",
            "Analytics records in batches not yet acknowledged by the agent.",
            get(&self.analytics_unacked),
        );
        single(
            &mut out,
            "hgw_dataplane_analytics_batches_pending",
            "gauge",
            "Analytics batches waiting for the agent's acknowledgement.",
            get(&self.analytics_batches_pending),
        );
        family(&mut out, "hgw_dataplane_websocket_tunnels", "gauge", "WebSocket tunnels open.");
        let _ =
            writeln!(out, "hgw_dataplane_websocket_tunnels {}", self.websocket_tunnels.load(Ordering::Relaxed).max(0));
        single(
            &mut out,
            "hgw_dataplane_websocket_idle_closed_total",
            "counter",
            "WebSocket tunnels closed by the idle timeout (--websocket-idle-timeout).",
            get(&self.websocket_idle_closed),
        );
        single(
            &mut out,
            "hgw_dataplane_http2_idle_closed_total",
            "counter",
            "HTTP/2 client connections closed with no stream open (--http2-idle-timeout).",
            get(&self.http2_idle_closed),
        );
        if let Some(certificates) = self.tls_certificates.get() {
            family(
                &mut out,
                "hgw_dataplane_tls_handshake_failures_total",
                "counter",
                "TLS handshakes on the HTTPS listener that failed or timed out.",
            );
            let _ = writeln!(
                out,
                "hgw_dataplane_tls_handshake_failures_total{{reason=\"failed\"}} {}",
                get(&self.tls_handshakes_failed)
            );
            let _ = writeln!(
                out,
                "hgw_dataplane_tls_handshake_failures_total{{reason=\"timeout\"}} {}",
                get(&self.tls_handshakes_timed_out)
            );
            family(
                &mut out,
                "hgw_dataplane_tls_certificate_not_after_seconds",
                "gauge",
                "When each certificate in service expires (Unix time; alert on it minus time()).",
            );
            for (file, not_after) in (certificates.0)() {
                let file = file.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = writeln!(out, "hgw_dataplane_tls_certificate_not_after_seconds{{cert=\"{file}\"}} {not_after}");
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Arc::new(Metrics::default());
        m.count_response(http::StatusCode::OK);
        m.count_response(http::StatusCode::NOT_FOUND);
        m.count_response(http::StatusCode::NOT_FOUND);
        let guard = m.in_flight();
        let text = m.render();
        assert!(text.contains("hgw_dataplane_requests_total{code=\"2xx\"} 1\n"));
        assert!(text.contains("hgw_dataplane_requests_total{code=\"4xx\"} 2\n"));
        assert!(text.contains("hgw_dataplane_requests_in_flight 1\n"));
        assert!(text.contains("hgw_dataplane_config_updates_total{result=\"nack\"} 0\n"));
        assert!(text.contains("hgw_dataplane_analytics_records_dropped_total 0\n"));
        assert!(text.contains("# TYPE hgw_dataplane_analytics_records_produced_total counter\n"));
        assert!(text.contains("# TYPE hgw_dataplane_analytics_records_queued gauge\n"));
        assert!(text.contains("# TYPE hgw_dataplane_analytics_batches_pending gauge\n"));
        drop(guard);
        assert!(m.render().contains("hgw_dataplane_requests_in_flight 0\n"));
        let tunnel = m.open_tunnel();
        assert!(m.render().contains("hgw_dataplane_websocket_tunnels 1\n"));
        drop(tunnel);
        assert!(m.render().contains("hgw_dataplane_websocket_tunnels 0\n"));
        assert!(m.render().contains("hgw_dataplane_websocket_idle_closed_total 0\n"));
        assert!(!m.render().contains("tls"), "no TLS series without an HTTPS listener");
        let _ = m
            .tls_certificates
            .set(CertificateSource(Box::new(|| vec![("/etc/a \"b\".pem".to_owned(), 1_800_000_000)])));
        m.tls_handshakes_failed.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("hgw_dataplane_tls_handshake_failures_total{reason=\"failed\"} 2\n"), "{text}");
        assert!(text.contains("hgw_dataplane_tls_handshake_failures_total{reason=\"timeout\"} 0\n"));
        assert!(
            text.contains(
                "hgw_dataplane_tls_certificate_not_after_seconds{cert=\"/etc/a \\\"b\\\".pem\"} 1800000000\n"
            )
        );
    }
}
