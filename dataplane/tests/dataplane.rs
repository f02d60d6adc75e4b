//! End-to-end checks of the dataplane library against a fake agent (a real tonic server) and a tiny
//! hyper backend, all on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hgw_dataplane::config::{AgentAddr, Config, LogFormat};
use hgw_proto::v1 as pb;
use hgw_proto::v1::analytics_server::{Analytics, AnalyticsServer};
use hgw_proto::v1::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// The fake agent: hands each config stream to the test, acknowledges every analytics batch.
struct FakeAgent {
    streams: mpsc::Sender<ConfigStream>,
    batches: mpsc::Sender<pb::ReportRequest>,
}

/// One open config stream, seen from the agent's side.
struct ConfigStream {
    hello: pb::Hello,
    answers: tonic::Streaming<pb::StreamRequest>,
    updates: mpsc::Sender<Result<pb::StreamResponse, tonic::Status>>,
}

#[tonic::async_trait]
impl ConfigDiscovery for FakeAgent {
    type StreamStream = BoxStream<pb::StreamResponse>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<pb::StreamRequest>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let mut answers = request.into_inner();
        let first = answers.message().await?.and_then(|m| m.kind);
        let Some(pb::stream_request::Kind::Hello(hello)) = first else {
            return Err(tonic::Status::invalid_argument("hello first"));
        };
        let (updates, rx) = mpsc::channel(8);
        let _ = self.streams.send(ConfigStream { hello, answers, updates }).await;
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Analytics for FakeAgent {
    type ReportStream = BoxStream<pb::ReportResponse>;

    async fn report(
        &self,
        request: tonic::Request<tonic::Streaming<pb::ReportRequest>>,
    ) -> Result<tonic::Response<Self::ReportStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let batches = self.batches.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let sequence = batch.sequence;
                let _ = batches.send(batch).await;
                if tx.send(Ok(pb::ReportResponse { sequence })).await.is_err() {
                    break;
                }
            }
        });
        let mut response = tonic::Response::new(Box::pin(ReceiverStream::new(rx)) as Self::ReportStream);
        // As the agent: records may point into each batch's API table.
        response
            .metadata_mut()
            .insert(hgw_proto::analytics::API_TABLE_METADATA, tonic::metadata::MetadataValue::from_static("1"));
        Ok(response)
    }
}

struct Harness {
    proxy: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
    streams: mpsc::Receiver<ConfigStream>,
    batches: mpsc::Receiver<pb::ReportRequest>,
    shutdown: CancellationToken,
    dataplane: tokio::task::JoinHandle<Result<(), hgw_dataplane::RunError>>,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake agent listens on a Unix socket: the real agent's TCP listener is mutual TLS only, which the
/// end-to-end tests (tests/tests/trust.rs) cover with real certificates.
async fn start_agent(path: PathBuf) -> (AgentAddr, mpsc::Receiver<ConfigStream>, mpsc::Receiver<pb::ReportRequest>) {
    let (streams_tx, streams) = mpsc::channel(8);
    let (batches_tx, batches) = mpsc::channel(1024);
    let agent = Arc::new(FakeAgent { streams: streams_tx, batches: batches_tx });
    let router = tonic::transport::Server::builder()
        .add_service(ConfigDiscoveryServer::from_arc(agent.clone()))
        .add_service(AnalyticsServer::from_arc(agent));
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(router.serve_with_incoming(UnixListenerStream::new(listener)));
    (AgentAddr::Unix(path), streams, batches)
}

/// A backend that answers with what it received: method, URI, a few headers and the body size.
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap_or("").to_owned());
                    let body = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    if parts.uri.path().contains("/slow") {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                    let echo = serde_json::json!({
                        "method": parts.method.as_str(),
                        "uri": parts.uri.to_string(),
                        "host": header("host"),
                        "request_id": header("x-gravitee-request-id"),
                        "transaction_id": header("x-gravitee-transaction-id"),
                        "endpoint_header": header("x-endpoint"),
                        "connection_named": header("x-hop"),
                        "body_len": body,
                    });
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("x-backend", "yes")
                            .body(Full::new(Bytes::from(echo.to_string())))
                            .unwrap(),
                    )
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

async fn start() -> Harness {
    start_with().await
}

async fn start_with() -> Harness {
    let dir = std::env::temp_dir().join(format!("hgw-dp-test-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (agent, streams, batches) = start_agent(dir.join("agent.sock")).await;
    let backend = start_backend().await;
    let addr_file = dir.join("addr.json");
    let config = Config {
        agent,
        agent_tls: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        id: "dp-test".into(),
        tags: vec!["t1".into()],
        workers: 1,
        reuse_port: false,
        addr_file: Some(addr_file.clone()),
        shutdown_grace: Duration::from_secs(5),
        analytics_queue: 1000,
        log_max_payload: 8192,
        rate_limit_timeout: Duration::from_secs(1),
        log_format: LogFormat::Text,
        log_masked_headers: Vec::new(),
        lifeline_stdin: false,
        trace_apis: hgw_dataplane::config::TraceApis::Definition,
        https: None,
        tls_reload_interval: None,
        tls_h2: true,
        websocket_idle_timeout: None,
        otel: None,
        limits: hgw_dataplane::http::limits::Limits::default(),
        trusted_proxies: Default::default(),
        paths: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let dataplane = tokio::spawn(hgw_dataplane::run(config, shutdown.clone()));
    let addrs: serde_json::Value = eventually(|| {
        let text = std::fs::read_to_string(&addr_file).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    Harness {
        proxy: addrs["listen"].as_str().unwrap().parse().unwrap(),
        admin: addrs["admin"].as_str().unwrap().parse().unwrap(),
        backend,
        streams,
        batches,
        shutdown,
        dataplane,
        client,
        _dir: TempDir(dir),
    }
}

async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

impl Harness {
    async fn send(&self, req: http::Request<Full<Bytes>>) -> Answer {
        let response = self.client.request(req).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], "").await
    }

    async fn admin(&self, path: &str) -> Answer {
        let req = http::Request::get(format!("http://{}{path}", self.admin)).body(Full::new(Bytes::new())).unwrap();
        self.send(req).await
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut req = http::Request::builder().method(method).uri(format!("http://{}{path}", self.proxy));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
    }

    /// Sends an update on the current config stream and returns the dataplane's answer.
    async fn push(&self, stream: &mut ConfigStream, update: pb::StreamResponse) -> pb::stream_request::Kind {
        stream.updates.send(Ok(update)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), stream.answers.message())
            .await
            .expect("an answer within 5 s")
            .unwrap()
            .unwrap()
            .kind
            .unwrap()
    }

    async fn next_stream(&mut self) -> ConfigStream {
        tokio::time::timeout(Duration::from_secs(5), self.streams.recv())
            .await
            .expect("the dataplane connects within 5 s")
            .unwrap()
    }

    /// Collects analytics records until `n` arrived (batches are sent at least every second).
    async fn records(&mut self, n: usize) -> Vec<pb::MetricsRecord> {
        let mut records = Vec::new();
        while records.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(5), self.batches.recv())
                .await
                .expect("a batch within 5 s")
                .unwrap();
            let mut batch = batch;
            // The API's fields travel once per batch when the agent says it reads the table.
            batch.expand_apis().expect("every record's API is in its batch");
            records.extend(batch.records);
        }
        records
    }
}

fn echo_api(id: &str, path: &str, backend: SocketAddr) -> pb::Api {
    pb::Api {
        id: id.into(),
        name: format!("{id} api"),
        revision: "r1".into(),
        environment_id: "env-1".into(),
        organization_id: "org-1".into(),
        definition_version: "4.0.0".into(),
        context_paths: vec![pb::ContextPath { host: String::new(), path: path.into() }],
        endpoint_groups: vec![pb::EndpointGroup {
            name: "default".into(),
            load_balancer: pb::LoadBalancer::RoundRobin as i32,
            endpoints: vec![pb::Endpoint {
                name: "e1".into(),
                target: format!("http://{backend}/base/"),
                weight: 1,
                secondary: false,
                http: Some(pb::HttpClientOptions {
                    connect_timeout_ms: 1000,
                    read_timeout_ms: 2000,
                    idle_timeout_ms: 30_000,
                    keep_alive: true,
                    propagate_client_host: false,
                    ..Default::default()
                }),
                headers: vec![pb::Header { name: "X-Endpoint".into(), value: "from-endpoint".into() }],
                ..Default::default()
            }],
            health_check: None,
        }],
        plans: vec![pb::Plan {
            id: "plan-keyless".into(),
            name: "Keyless".into(),
            security: pb::SecurityType::KeyLess as i32,
            flows: vec![],
            api_key: None,
            jwt: None,
            selection_rule: String::new(),
            oauth2: None,
        }],
        flows: vec![],
        flow_mode: pb::FlowMode::Default as i32,
        flow_match_required: false,
        analytics_enabled: true,
        tags: vec![],
        subscriptions: vec![],
        api_keys: vec![],
        failover: None,
        cors: None,
        response_templates: Vec::new(),
        logging: None,
        tracing: None,
        legacy_engine: false,
        properties: Default::default(),
        redis_caches: Default::default(),
    }
}

fn mock_flow(path: &str, status: u32, content: &str) -> pb::Flow {
    pb::Flow {
        name: "mock".into(),
        path: path.into(),
        path_operator: pb::PathOperator::StartsWith as i32,
        methods: vec!["GET".into()],
        request: vec![pb::Step {
            name: "mock".into(),
            condition: String::new(),
            policy: Some(pb::step::Policy::Mock(pb::MockPolicy {
                status,
                headers: vec![pb::Header { name: "content-type".into(), value: "text/plain".into() }],
                content: content.into(),
            })),
        }],
        response: vec![],
        condition: String::new(),
    }
}

fn update(version: u64, full: bool, upserts: Vec<pb::Api>, removals: &[&str]) -> pb::StreamResponse {
    pb::StreamResponse {
        version,
        nonce: format!("nonce-{version}"),
        full,
        upserts,
        removals: removals.iter().map(|r| r.to_string()).collect(),
    }
}

#[tokio::test]
async fn routes_mocks_nacks_and_reports() {
    let mut h = start().await;

    // Before the first configuration: not ready, and the proxy says so.
    let ready = h.admin("/ready").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("waiting for the first configuration"));
    let early = h.get("/echo").await;
    assert_eq!(early.status, 503);
    assert_eq!(early.json()["http_status_code"], 503);
    assert_eq!(h.admin("/live").await.status, 200);

    let mut stream = h.next_stream().await;
    assert_eq!(stream.hello.dataplane_id, "dp-test");
    assert_eq!(stream.hello.tags, vec!["t1"]);
    assert_eq!(stream.hello.version, 0);
    assert_eq!(stream.hello.pid, std::process::id());
    assert_eq!(stream.hello.listen_address, h.proxy.to_string());
    assert!(!stream.hello.build_version.is_empty());

    let mut mocked = echo_api("mocked", "/mocked", h.backend);
    mocked.flows.push(mock_flow("/hello", 201, "mocked!"));
    let answer = h.push(&mut stream, update(1, true, vec![echo_api("echo", "/echo", h.backend), mocked], &[])).await;
    assert_eq!(answer, pb::stream_request::Kind::Ack(pb::Ack { version: 1, nonce: "nonce-1".into() }));
    assert_eq!(h.admin("/ready").await.status, 200);

    // Proxied: context path stripped onto the target's path, query kept, ids on both sides.
    let r = h
        .request(
            "POST",
            "/echo/a/b?x=1",
            &[("x-gravitee-transaction-id", "tx-42"), ("connection", "x-hop"), ("x-hop", "secret")],
            "hello body",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["uri"], "/base/a/b?x=1");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["transaction_id"], "tx-42");
    assert_eq!(echo["endpoint_header"], "from-endpoint");
    assert_eq!(echo["connection_named"], serde_json::Value::Null);
    assert_eq!(echo["host"], h.backend.to_string());
    assert_eq!(echo["body_len"], 10);
    assert_eq!(echo["request_id"], r.header("x-gravitee-request-id"));
    assert_eq!(r.header("x-gravitee-transaction-id"), "tx-42");
    assert_eq!(r.header("x-backend"), "yes");

    let r = h.get("/echo").await;
    assert_eq!(r.json()["uri"], "/base");
    assert_eq!(r.header("x-gravitee-transaction-id"), r.header("x-gravitee-request-id"));

    // No match: Gravitee's exact text.
    let r = h.get("/nothing/here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "No context-path matches the request URI.");
    assert_eq!(r.header("content-type"), "text/plain");
    assert!(!r.header("x-gravitee-request-id").is_empty());
    assert_eq!(h.get("/echoes").await.status, 404);

    // Mock flow answers without the backend; other paths of the same API still proxy.
    let r = h.get("/mocked/hello/world").await;
    assert_eq!((r.status, r.body.as_str()), (201, "mocked!"));
    assert_eq!(r.header("x-backend"), "");
    assert_eq!(h.get("/mocked/other").await.json()["uri"], "/base/other");

    // A bad update is NACKed and the previous table keeps serving.
    let mut bad = echo_api("bad", "/bad", h.backend);
    bad.endpoint_groups[0].endpoints[0].target = "https://secure.example".into();
    bad.endpoint_groups[0].endpoints[0].tls =
        Some(pb::TlsOptions { trusted_ca_pem: "not PEM".into(), ..Default::default() });
    let answer = h.push(&mut stream, update(2, false, vec![bad], &["echo"])).await;
    let pb::stream_request::Kind::Nack(nack) = answer else {
        panic!("expected a NACK, got {answer:?}");
    };
    assert_eq!((nack.version, nack.nonce.as_str()), (2, "nonce-2"));
    assert!(nack.error.contains("endpoints[0].tls: trusted CA PEM"), "{}", nack.error);
    assert_eq!(h.get("/echo/still").await.status, 200);
    let config = h.admin("/config").await.json();
    assert_eq!(config["version"], 1);
    assert_eq!(config["apis"].as_array().unwrap().len(), 2);

    // A good delta removes an API.
    let answer = h.push(&mut stream, update(3, false, vec![], &["echo"])).await;
    assert!(matches!(answer, pb::stream_request::Kind::Ack(_)));
    assert_eq!(h.get("/echo").await.status, 404);

    // HTTP/2 with prior knowledge (h2c) is served on the same port.
    let h2 = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    let r = h2
        .request(http::Request::get(format!("http://{}/mocked/h2", h.proxy)).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert!(r.headers().contains_key("x-gravitee-request-id"));
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("/base/h2"));

    // No response headers within the read timeout: 504 REQUEST_TIMEOUT, without a body (Gravitee's
    // endpoint connector raises its failures without a message).
    let mut slow = echo_api("slow", "/slow", h.backend);
    if let Some(http) = slow.endpoint_groups[0].endpoints[0].http.as_mut() {
        http.read_timeout_ms = 200;
    }
    let answer = h.push(&mut stream, update(4, false, vec![slow], &[])).await;
    assert!(matches!(answer, pb::stream_request::Kind::Ack(_)));
    let r = h.get("/slow/slow").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "");
    assert_eq!(r.header("connection"), "close");

    // A refused connection is Gravitee's 502, without a body either.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let answer = h.push(&mut stream, update(5, false, vec![echo_api("dead", "/dead", dead)], &[])).await;
    assert!(matches!(answer, pb::stream_request::Kind::Ack(_)));
    let r = h.get("/dead").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), "");
    assert_eq!(r.body, "");

    // One record per request that matched an API (8 of them above).
    let records = h.records(8).await;
    let post = records.iter().find(|r| r.http_method == "POST").expect("the POST record");
    assert_eq!(post.api_id, "echo");
    assert_eq!(post.api_type, "proxy");
    assert_eq!(post.plan_id, "plan-keyless");
    assert_eq!(post.application_id, "1");
    assert_eq!(post.subscription_id, "127.0.0.1");
    assert_eq!(post.security_type, "KEY_LESS");
    assert_eq!(post.transaction_id, "tx-42");
    assert_eq!(post.uri, "/echo/a/b?x=1");
    assert_eq!(post.path_info, "/a/b");
    assert_eq!(post.endpoint, format!("http://{}/base/a/b?x=1", h.backend));
    assert_eq!(post.status, 200);
    assert_eq!(post.request_content_length, 10);
    assert!(post.request_ended);
    assert!(post.response_content_length > 0);
    assert_eq!(post.entrypoint_id, "http-proxy");
    assert_eq!(post.organization_id, "org-1");
    let mock = records.iter().find(|r| r.status == 201).expect("the mock record");
    assert_eq!(mock.endpoint, "");
    assert_eq!(mock.response_content_length, 7);
    let refused = records.iter().find(|r| r.status == 502).expect("the 502 record");
    assert_eq!(refused.error_key, "GATEWAY_CLIENT_CONNECTION_ERROR");
    let timeout = records.iter().find(|r| r.status == 504).expect("the 504 record");
    assert_eq!(timeout.error_key, "REQUEST_TIMEOUT");
    assert!(timeout.endpoint_response_time_ms >= 200);
    assert!(records.iter().all(|r| !r.api_id.is_empty() && !r.request_id.is_empty()));

    let metrics = h.admin("/metrics").await.body;
    assert!(metrics.contains("hgw_dataplane_config_version 5\n"), "{metrics}");
    assert!(metrics.contains("hgw_dataplane_config_updates_total{result=\"nack\"} 1\n"));
    assert!(metrics.contains("hgw_dataplane_requests_unmatched_total 3\n"));
    assert!(metrics.contains("hgw_dataplane_agent_connected 1\n"));

    // Shutdown: /ready flips, run() returns once drained.
    h.shutdown.cancel();
    let result =
        tokio::time::timeout(Duration::from_secs(10), h.dataplane).await.expect("run returns within the grace period");
    result.unwrap().unwrap();
}

#[tokio::test]
async fn reconnects_and_says_which_version_it_serves() {
    let mut h = start().await;
    let mut stream = h.next_stream().await;
    let answer = h.push(&mut stream, update(7, true, vec![echo_api("echo", "/echo", h.backend)], &[])).await;
    assert!(matches!(answer, pb::stream_request::Kind::Ack(_)));
    // The agent drops the stream: the dataplane keeps serving, then comes back with its version.
    stream.updates.send(Err(tonic::Status::unavailable("agent restarting"))).await.unwrap();
    drop(stream);
    assert_eq!(h.get("/echo/x").await.status, 200);
    let again = h.next_stream().await;
    assert_eq!(again.hello.version, 7);
    assert_eq!(h.get("/echo/x").await.status, 200);
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.dataplane).await;
}

#[tokio::test]
async fn analytics_are_flushed_on_shutdown() {
    // Records still queued when shutdown starts are batched and acknowledged before run() returns.
    let mut h = start().await;
    let mut stream = h.next_stream().await;
    h.push(&mut stream, update(1, true, vec![echo_api("echo", "/echo", h.backend)], &[])).await;
    for _ in 0..3 {
        assert_eq!(h.get("/echo").await.status, 200);
    }
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.dataplane).await;
    let mut n = 0;
    while let Ok(batch) = h.batches.try_recv() {
        n += batch.records.len();
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn talks_to_the_agent_over_a_unix_socket() {
    let mut h = start_with().await;
    let mut stream = h.next_stream().await;
    let answer = h.push(&mut stream, update(1, true, vec![echo_api("echo", "/echo", h.backend)], &[])).await;
    assert!(matches!(answer, pb::stream_request::Kind::Ack(_)));
    assert_eq!(h.get("/echo/unix").await.json()["uri"], "/base/unix");
    assert_eq!(h.records(1).await[0].api_id, "echo");
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.dataplane).await;
}
