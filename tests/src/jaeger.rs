//! A real trace backend for tracing tests: Jaeger v2 (an OpenTelemetry Collector distribution) with an
//! in-memory store, receiving OTLP over gRPC and HTTP/protobuf, queried through its HTTP API.
//!
//! The binary is `$HGW_JAEGER`, else `jaeger` on PATH, else `~/go/bin/jaeger` (where `scripts/test.sh`
//! installs it with `go install`). Jaeger cannot report the ports it bound, so free loopback ports
//! are picked first (bound to `127.0.0.1:0`, then released) and written into its config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{Proc, eventually};

/// Jaeger builds its pipeline and opens its ports within seconds; generous for a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Jaeger {
    pub proc: Proc,
    /// OTLP/gRPC receiver.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP receiver (`/v1/traces`).
    pub otlp_http: SocketAddr,
    /// The query service's HTTP API (`/api/traces`, `/api/services`).
    pub query: SocketAddr,
    http: reqwest::Client,
}

/// The OTLP protocol a test configures through `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otlp {
    Grpc,
    HttpProtobuf,
}

/// The jaeger binary; panics with the install hint when it is missing.
pub fn jaeger_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HGW_JAEGER") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("jaeger");
        if candidate.is_file() {
            return candidate;
        }
    }
    let candidate = Path::new(&std::env::var("HOME").unwrap_or_default()).join("go/bin/jaeger");
    assert!(
        candidate.is_file(),
        "jaeger not found: run scripts/test.sh, which installs it (go install github.com/jaegertracing/jaeger/cmd/jaeger)"
    );
    candidate
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Jaeger {
    /// Starts Jaeger with its config and logs in `dir`, and waits until its query API answers.
    pub async fn start(dir: &Path) -> Jaeger {
        let (grpc, http, query, query_grpc) = (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
        );
        let path = dir.join("jaeger.yaml");
        std::fs::write(&path, config).expect("writing the jaeger config");
        let proc =
            Proc::spawn_path(&jaeger_bin(), &["--config".to_owned(), path.display().to_string()], &[], dir, "jaeger");
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let jaeger = Jaeger {
            proc,
            otlp_grpc: loopback(grpc),
            otlp_http: loopback(http),
            query: loopback(query),
            http: reqwest::Client::new(),
        };
        eventually("jaeger's query API", START_TIMEOUT, || async {
            let url = format!("http://{}/api/services", jaeger.query);
            let answered = matches!(jaeger.http.get(url).send().await, Ok(r) if r.status().is_success());
            let receivers = tokio::net::TcpStream::connect(jaeger.otlp_grpc).await.is_ok()
                && tokio::net::TcpStream::connect(jaeger.otlp_http).await.is_ok();
            (answered && receivers).then_some(())
        })
        .await;
        jaeger
    }

    /// The OTEL_* variables pointing an hgw binary at this Jaeger (every trace sampled, short batches).
    pub fn otel_env(&self, protocol: Otlp) -> Vec<(String, String)> {
        let (endpoint, name) = match protocol {
            Otlp::Grpc => (format!("http://{}", self.otlp_grpc), "grpc"),
            Otlp::HttpProtobuf => (format!("http://{}", self.otlp_http), "http/protobuf"),
        };
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), name.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
        ]
    }

    /// The trace `trace_id` (32 hex digits) in Jaeger's JSON form, once it holds it.
    pub async fn trace(&self, trace_id: &str) -> Option<Value> {
        let url = format!("http://{}/api/traces/{trace_id}", self.query);
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        body["data"].as_array()?.first().cloned()
    }

    /// The most recent traces (up to `limit`) with a span of `service`.
    pub async fn traces(&self, service: &str, limit: usize) -> Vec<Value> {
        let url = format!("http://{}/api/traces?service={service}&limit={limit}&lookback=1h", self.query);
        let Ok(response) = self.http.get(url).send().await else {
            return Vec::new();
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        body["data"].as_array().cloned().unwrap_or_default()
    }
}

/// The spans of a Jaeger trace named `operation`.
pub fn spans_named<'a>(trace: &'a Value, operation: &str) -> Vec<&'a Value> {
    trace["spans"]
        .as_array()
        .map_or_else(Vec::new, |spans| spans.iter().filter(|span| span["operationName"] == operation).collect())
}

/// The value of tag `key` on a Jaeger span (strings, numbers and booleans as JSON).
pub fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

/// The `spanID` of a span's CHILD_OF parent (`None` for a root).
pub fn parent_id(span: &Value) -> Option<&str> {
    span["references"].as_array()?.iter().find(|r| r["refType"] == "CHILD_OF").and_then(|r| r["spanID"].as_str())
}

/// The service name of a span (through the trace's `processes`).
pub fn service<'a>(trace: &'a Value, span: &Value) -> Option<&'a str> {
    let process = span["processID"].as_str()?;
    trace["processes"][process]["serviceName"].as_str()
}
