//! OpenTelemetry traces from client to backend, checked in a real trace backend: Jaeger v2 receiving
//! OTLP (the dataplane over gRPC, the agent over HTTP/protobuf) and queried through its HTTP API.
//! Also: a collector that is down costs requests nothing and its drops are counted; bad OTEL_* values
//! stop start-up with exit 64.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, PROPAGATION, now_ms};
use hgw_tests::jaeger::{Jaeger, Otlp, parent_id, service, spans_named, tag};
use hgw_tests::{Backend, CloudGateSim, eventually, run_to_exit, v4_api};
use serde_json::{Value, json};

/// Spans reach Jaeger within a few export batches (200 ms here) on a loaded 2-core machine.
const EXPORTED: Duration = Duration::from_secs(30);

/// An API with an API-key plan, two request policies in one flow and a response policy, traced
/// verbosely (Gravitee's `analytics.tracing`).
fn traced_api(id: &str, path: &str, target: &str) -> Value {
    let mut api = v4_api(id, path, target);
    api["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    api["flows"] = json!([{"name": "all", "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
    "request": [
        {"name": "tag it", "policy": "transform-headers", "configuration": {"addHeaders": [{"name": "X-Traced", "value": "yes"}]}},
        {"name": "local only", "policy": "ip-filtering", "configuration": {"whitelistIps": ["127.0.0.0/8", "::1"]}}
    ],
    "response": [
        {"name": "served by", "policy": "transform-headers", "configuration": {"addHeaders": [{"name": "X-Served-By", "value": "hgw"}]}}
    ]}]);
    api["analytics"] = json!({"enabled": true, "tracing": {"enabled": true, "verbose": true}});
    api
}

async fn subscribe(sim: &CloudGateSim, api: &str, key: &str) {
    let sub = format!("sub-{api}");
    sim.put_subscription(json!({"id": sub, "api": api, "plan": "gold", "application": "app-1",
        "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    sim.put_key(json!({"id": format!("key-{api}"), "key": key, "subscriptions": [sub], "subscription": sub,
        "api": api, "plan": "gold", "application": "app-1", "revoked": false, "paused": false, "updatedAt": now_ms()}))
        .await;
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// The trace once Jaeger holds at least `spans` spans of it.
async fn trace_with(jaeger: &Jaeger, trace_id: &str, spans: usize) -> Value {
    eventually(&format!("trace {trace_id} with {spans} spans in jaeger"), EXPORTED, || async {
        let trace = jaeger.trace(trace_id).await?;
        (trace["spans"].as_array()?.len() >= spans).then_some(trace)
    })
    .await
}

fn one<'a>(trace: &'a Value, operation: &str) -> &'a Value {
    let spans = spans_named(trace, operation);
    assert_eq!(spans.len(), 1, "one `{operation}` span in {trace}");
    spans[0]
}

fn str_tag<'a>(span: &'a Value, key: &str) -> &'a str {
    tag(span, key).and_then(Value::as_str).unwrap_or_else(|| panic!("tag {key} on {span}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_trace_from_client_to_backend() {
    let dir = tempfile::tempdir().unwrap();
    let jaeger = Jaeger::start(dir.path()).await;
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    sim.put_api(traced_api("traced", "/traced", &backend.url())).await;
    subscribe(&sim, "traced", "k3y-traced").await;
    // Traced too, but its endpoint refuses connections: a gateway error inside a trace.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    sim.put_api(traced_api("down", "/down", &format!("http://{closed}"))).await;
    subscribe(&sim, "down", "k3y-down").await;
    // Not traced: no `analytics.tracing` (the dataplane traces only APIs that ask, by default).
    sim.put_api(v4_api("plain", "/plain", &backend.url())).await;

    let token = sim.token().await;
    let agent_env = jaeger.otel_env(Otlp::HttpProtobuf);
    let agent =
        Agent::start_cloud_with_env(dir.path(), "agent", &sim, &token, &["--log-format", "json"], &agent_env).await;
    let mut dp_env = jaeger.otel_env(Otlp::Grpc);
    dp_env.push(("RUST_LOG".to_owned(), "info,hgw_dataplane=debug".to_owned()));
    let dp = Dataplane::start_with_env(dir.path(), "dp", &agent.tcp_target(), &["--log-format", "json"], &dp_env).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();

    // An unsampled caller: its traceparent reaches the backend unchanged, and nothing is recorded.
    let unsampled_trace = random_hex(16);
    let unsampled = format!("00-{unsampled_trace}-{}-00", random_hex(8));
    let reply = client
        .get(dp.url("/traced/quiet"))
        .header("X-Gravitee-Api-Key", "k3y-traced")
        .header("traceparent", &unsampled)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["traceparent"], unsampled.as_str(), "an unsampled traceparent passes unchanged");

    // A sampled caller: one trace, parented to the caller's span, and the backend is its child.
    let trace_id = random_hex(16);
    let client_span = random_hex(8);
    let reply = client
        .get(dp.url("/traced/orders/7?page=2"))
        .header("X-Gravitee-Api-Key", "k3y-traced")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .header("tracestate", "vendor=opaque")
        .header("X-Gravitee-Transaction-Id", "tx-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["x-served-by"], "hgw");
    let request_id = reply.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["x-traced"], "yes");
    let seen = echo["headers"]["traceparent"].as_str().expect("the backend got a traceparent").to_owned();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1], parts[3]), (4, "00", trace_id.as_str(), "01"), "{seen}");
    let backend_parent = parts[2].to_owned();
    assert_ne!(backend_parent, client_span, "the backend's parent is the gateway's endpoint span");
    assert_eq!(echo["headers"]["tracestate"], "vendor=opaque", "tracestate is forwarded");

    // SERVER, security, request (+ 2 policy steps), endpoint CLIENT, response (+ 1 policy step).
    let trace = trace_with(&jaeger, &trace_id, 8).await;
    let server = one(&trace, "GET /traced");
    assert_eq!(parent_id(server), Some(client_span.as_str()), "parented to the client's span");
    assert_eq!(service(&trace, server), Some("hgw-dataplane"));
    for (key, value) in [
        ("span.kind", "server"),
        ("http.request.method", "GET"),
        ("url.path", "/traced/orders/7"),
        ("http.route", "/traced"),
        ("gravitee.api.id", "traced"),
        ("gravitee.api.name", "traced"),
        ("gravitee.plan.id", "gold"),
        ("gravitee.application.id", "app-1"),
        ("gravitee.subscription.id", "sub-traced"),
        ("gravitee.endpoint", "default"),
        ("gravitee.transaction.id", "tx-trace-1"),
        ("gravitee.request.id", request_id.as_str()),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(str_tag(server, key), value, "{key} on {server}");
    }
    assert_eq!(tag(server, "http.response.status_code"), Some(&json!(200)));
    assert!(tag(server, "gravitee.error.key").is_none());
    let server_id = server["spanID"].as_str().unwrap();
    let endpoint = one(&trace, "GET");
    assert_eq!(str_tag(endpoint, "span.kind"), "client");
    assert_eq!(endpoint["spanID"], backend_parent.as_str(), "the backend saw the endpoint span as its parent");
    assert_eq!(parent_id(endpoint), Some(server_id));
    assert_eq!(str_tag(endpoint, "gravitee.endpoint"), "default");
    assert_eq!(str_tag(endpoint, "url.full"), format!("{}/orders/7", backend.url()), "no query string");
    assert_eq!(tag(endpoint, "http.response.status_code"), Some(&json!(200)));
    let security = one(&trace, "security");
    assert_eq!(parent_id(security), Some(server_id));
    assert_eq!(str_tag(security, "gravitee.plan.id"), "gold");
    let request = one(&trace, "request");
    let request_id_span = request["spanID"].as_str().unwrap();
    let filter = one(&trace, "ip-filtering");
    assert_eq!(parent_id(filter), Some(request_id_span), "a policy step under the request phase");
    assert_eq!(str_tag(filter, "gravitee.flow.phase"), "request");
    assert_eq!(str_tag(filter, "gravitee.step.name"), "local only");
    let transforms = spans_named(&trace, "transform-headers");
    assert_eq!(transforms.len(), 2, "request and response steps: {trace}");
    let response = one(&trace, "response");
    assert!(
        transforms.iter().any(|s| parent_id(s) == Some(response["spanID"].as_str().unwrap())
            && str_tag(s, "gravitee.step.name") == "served by"),
        "the response step under the response phase"
    );
    // The API key never reaches a span.
    assert!(!trace.to_string().contains("k3y-traced"));
    assert!(jaeger.trace(&unsampled_trace).await.is_none(), "the unsampled request recorded nothing");

    // Without a caller's trace context: a new trace, and the backend is part of it.
    let reply = client.get(dp.url("/traced/fresh")).header("X-Gravitee-Api-Key", "k3y-traced").send().await.unwrap();
    let echo: Value = reply.json().await.unwrap();
    let fresh = echo["headers"]["traceparent"].as_str().expect("a new traceparent").to_owned();
    let fresh_trace = fresh.split('-').nth(1).unwrap().to_owned();
    let trace = trace_with(&jaeger, &fresh_trace, 1).await;
    assert_eq!(parent_id(one(&trace, "GET /traced")), None, "a root span");

    // A refused key: the trace carries Gravitee's error key; an untraced API passes the header on.
    let refused_trace = random_hex(16);
    let reply = client
        .get(dp.url("/traced/x"))
        .header("X-Gravitee-Api-Key", "wrong")
        .header("traceparent", format!("00-{refused_trace}-{}-01", random_hex(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let trace = trace_with(&jaeger, &refused_trace, 2).await;
    let server = one(&trace, "GET /traced");
    assert_eq!(str_tag(server, "gravitee.error.key"), "API_KEY_INVALID");
    assert_eq!(tag(server, "http.response.status_code"), Some(&json!(401)));
    assert_eq!(str_tag(one(&trace, "security"), "otel.status_code"), "ERROR");
    let plain_trace = format!("00-{}-{}-01", random_hex(16), random_hex(8));
    let reply = client.get(dp.url("/plain/p")).header("traceparent", &plain_trace).send().await.unwrap();
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["traceparent"], plain_trace.as_str(), "an untraced API forwards the header as is");

    // An endpoint that refuses: a failed CLIENT span, a 502 SERVER span, and the dataplane's JSON
    // log line about it names the trace.
    let down_trace = random_hex(16);
    let reply = client
        .get(dp.url("/down/x"))
        .header("X-Gravitee-Api-Key", "k3y-down")
        .header("traceparent", format!("00-{down_trace}-{}-01", random_hex(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 502);
    let trace = trace_with(&jaeger, &down_trace, 5).await;
    let server = one(&trace, "GET /down");
    assert_eq!(str_tag(server, "gravitee.error.key"), "GATEWAY_CLIENT_CONNECTION_ERROR");
    assert_eq!(str_tag(server, "error.type"), "GATEWAY_CLIENT_CONNECTION_ERROR");
    assert_eq!(str_tag(server, "otel.status_code"), "ERROR");
    assert_eq!(str_tag(one(&trace, "GET"), "error.type"), "GATEWAY_CLIENT_CONNECTION_ERROR");
    let log_line: Value =
        eventually("the dataplane's log line of the failed call", PROPAGATION, || async {
            dp.proc.stderr().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| {
                l["fields"]["message"] == "endpoint call failed" && l["span"]["trace_id"] == down_trace.as_str()
            })
        })
        .await;
    assert_eq!(log_line["span"]["span_id"], server["spanID"], "{log_line}");

    // The agent: each sync round is a `sync` trace; the round that deployed the APIs compiled them and
    // pushed the version to the dataplane (a `push` span in the same trace), and its JSON log lines
    // (`API deployed`) name that trace.
    let logged: Vec<String> = agent
        .proc
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "API deployed")
        .filter_map(|l| l["span"]["trace_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!logged.is_empty(), "`API deployed` JSON log lines carry a trace id: {}", agent.proc.stderr());
    let pushed = eventually("agent sync, compile and push spans in jaeger", EXPORTED, || async {
        jaeger.traces("hgw-agent", 500).await.into_iter().find(|t| {
            t["traceID"].as_str().is_some_and(|id| logged.iter().any(|l| l == id))
                && !spans_named(t, "compile").is_empty()
                && !spans_named(t, "push").is_empty()
        })
    })
    .await;
    let sync = one(&pushed, "sync");
    assert_eq!(service(&pushed, sync), Some("hgw-agent"));
    assert_eq!(tag(sync, "hgw.config.changed"), Some(&json!(true)));
    assert_eq!(parent_id(one(&pushed, "compile")), sync["spanID"].as_str());
    let push = one(&pushed, "push");
    assert_eq!(parent_id(push), sync["spanID"].as_str());
    assert_eq!(str_tag(push, "hgw.dataplane.id"), "dp");

    // Everything was accepted by the collector: nothing dropped.
    assert_eq!(dp.metric("hgw_dataplane_tracing_spans_dropped_total").await, Some(0.0));
    assert!(dp.metric("hgw_dataplane_tracing_spans_exported_total").await.unwrap_or(0.0) >= 8.0);
    assert_eq!(agent.metric("hgw_agent_tracing_spans_dropped_total").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    sim.put_api(traced_api("traced", "/traced", &backend.url())).await;
    subscribe(&sim, "traced", "k3y").await;
    // Nothing listens there: every export fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let env = |protocol: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://{closed}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), protocol.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT".to_owned(), "1000".to_owned()),
        ]
    };
    let token = sim.token().await;
    let agent = Agent::start_cloud_with_env(dir.path(), "agent", &sim, &token, &[], &env("http/protobuf")).await;
    let dp = Dataplane::start_with_env(dir.path(), "dp", &agent.tcp_target(), &[], &env("grpc")).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let reply = client
            .get(dp.url(&format!("/traced/{i}")))
            .header("X-Gravitee-Api-Key", "k3y")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "request {i}");
        let echo: Value = reply.json().await.unwrap();
        assert!(echo["headers"]["traceparent"].as_str().is_some_and(|t| t.ends_with("-01")), "still propagated");
    }
    // 50 traces of 8 spans each are dropped, counted once their export failed.
    let dropped = eventually("the dataplane's dropped spans", PROPAGATION, || async {
        let dropped = dp.metric("hgw_dataplane_tracing_spans_dropped_total").await?;
        (dropped >= 400.0).then_some(dropped)
    })
    .await;
    assert!(dp.metric("hgw_dataplane_tracing_export_failures_total").await.unwrap_or(0.0) >= 1.0);
    assert_eq!(dp.metric("hgw_dataplane_tracing_spans_exported_total").await, Some(0.0), "dropped = {dropped}");
    eventually("the agent's dropped spans", PROPAGATION, || async {
        (agent.metric("hgw_agent_tracing_spans_dropped_total").await? >= 1.0).then_some(())
    })
    .await;
    // The collector's absence is one warning, not one per batch.
    let warnings = dp.proc.stderr().matches("OTLP export failed").count();
    assert_eq!(warnings, 1, "{}", dp.proc.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otel_settings_exit_64_before_binding() {
    for (binary, args) in [
        (
            "hgw-dataplane",
            vec![
                "--agent",
                "unix:/nonexistent/hgw-agent.sock",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ],
        ),
        ("hgw-agent", vec!["--local-apis", ".", "--node-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]),
    ] {
        for (envs, named) in [
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
        ] {
            let (code, _, stderr) = run_to_exit(binary, &args, &envs, Duration::from_secs(20)).await;
            assert_eq!(code, Some(64), "{binary} {envs:?}: {stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{binary}: one line: {stderr}");
            assert!(lines[0].contains(named), "{binary}: {named} in {}", lines[0]);
        }
    }
}
