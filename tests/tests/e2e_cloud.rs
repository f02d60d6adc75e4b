//! The seed's whole loop: Cloud Gate emulator → agent (cloud mode) → two dataplanes (one over the Unix
//! socket, one over TCP) → a real backend; API changes and stops propagate; `/reports` receives one
//! record per request; heartbeats arrive.

use std::collections::HashMap;
use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, get};
use hgw_tests::{Backend, CloudGateSim, eventually, v2_api, v4_api};
use serde_json::Value;

/// Changes must reach every dataplane within a few sync intervals (500 ms here); generous for 2 cores.
const PROPAGATION: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_loop_routes_changes_stops_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend_a = Backend::start("A").await;
    let backend_b = Backend::start("B").await;
    sim.put_api(v4_api("orders", "/orders", &format!("{}/base", backend_a.url()))).await;
    sim.put_api(v2_api("legacy", "/legacy", &backend_a.url())).await;

    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp_unix = Dataplane::start(dir.path(), "dp-unix", &agent.unix_target()).await;
    let dp_tcp = Dataplane::start(dir.path(), "dp-tcp", &agent.tcp_target()).await;
    dp_unix.wait_ready().await;
    dp_tcp.wait_ready().await;
    let client = reqwest::Client::new();

    // Route through both dataplanes; the context path is stripped and the target path kept.
    let mut sent: HashMap<String, (String, u16)> = HashMap::new();
    for dp in [&dp_unix, &dp_tcp] {
        for i in 0..5 {
            let uri = format!("/orders/items/{i}?page=2");
            let reply = get(&client, &dp.url(&uri)).await.expect("dataplane answers");
            assert_eq!(reply.status, 200, "{}: {}", dp.id, reply.body);
            let echo = reply.json();
            assert_eq!(echo["backend"], "A");
            assert_eq!(echo["path"], format!("/base/items/{i}"));
            assert_eq!(echo["query"], "page=2");
            let request_id = reply.header("x-gravitee-request-id").expect("request id on the response").to_owned();
            assert_eq!(reply.header("x-gravitee-transaction-id"), Some(request_id.as_str()));
            assert_eq!(echo["headers"]["x-gravitee-request-id"], request_id.as_str(), "the backend sees the same id");
            sent.insert(request_id, (uri, 200));
        }
        let reply = get(&client, &dp.url("/legacy/ping")).await.unwrap();
        assert_eq!((reply.status, reply.json()["path"].clone()), (200, Value::from("/ping")), "v2 API served");
        sent.insert(reply.header("x-gravitee-request-id").unwrap().to_owned(), ("/legacy/ping".into(), 200));
    }
    // A caller's transaction id is kept.
    let reply = client.get(dp_tcp.url("/orders/tx")).header("X-Gravitee-Transaction-Id", "tx-42").send().await.unwrap();
    assert_eq!(reply.headers()["x-gravitee-transaction-id"], "tx-42");
    let tx_request_id = reply.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    assert_ne!(tx_request_id, "tx-42");
    sent.insert(tx_request_id, ("/orders/tx".into(), 200));

    // Both dataplanes report the version the agent is at.
    let (_, dataplanes) = agent.node_get("/_node/dataplanes").await;
    let current = dataplanes["currentVersion"].as_u64().unwrap();
    let listed: Vec<&Value> = dataplanes["dataplanes"].as_array().unwrap().iter().collect();
    for id in ["dp-unix", "dp-tcp"] {
        let entry = listed.iter().find(|d| d["id"] == id).unwrap_or_else(|| panic!("{id} listed: {dataplanes}"));
        assert_eq!(entry["connected"], true);
        assert_eq!(entry["ackedVersion"].as_u64(), Some(current), "{id}: {entry}");
        assert_eq!(entry["apis"], 2);
    }

    // Change the API: new path and new target. Both dataplanes switch.
    sim.put_api(v4_api("orders", "/orders-v2", &backend_b.url())).await;
    for dp in [&dp_unix, &dp_tcp] {
        eventually(&format!("{} serves the new path", dp.id), PROPAGATION, || async {
            let reply = get(&client, &dp.url("/orders-v2/x")).await?;
            (reply.status == 200 && reply.json()["backend"] == "B").then_some(())
        })
        .await;
        let old = get(&client, &dp.url("/orders/x")).await.unwrap();
        assert_eq!(old.status, 404);
        assert_eq!(old.body, "No context-path matches the request URI.");
        assert!(old.header("content-type").unwrap().starts_with("text/plain"));
        let reply = get(&client, &dp.url("/orders-v2/y")).await.unwrap();
        sent.insert(reply.header("x-gravitee-request-id").unwrap().to_owned(), ("/orders-v2/y".into(), 200));
    }

    // Stop it: 404 everywhere, the other API untouched.
    sim.stop_api("orders").await;
    for dp in [&dp_unix, &dp_tcp] {
        eventually(&format!("{} stops serving the API", dp.id), PROPAGATION, || async {
            let reply = get(&client, &dp.url("/orders-v2/x")).await?;
            (reply.status == 404).then_some(())
        })
        .await;
        assert_eq!(get(&client, &dp.url("/legacy/still")).await.unwrap().status, 200);
    }

    // /reports holds one record per request, with the Elasticsearch form's fields.
    let documents = eventually("all reports uploaded", PROPAGATION, || async {
        let docs = sim.report_documents().await;
        let seen = docs.iter().filter(|d| sent.contains_key(d["request-id"].as_str().unwrap_or_default())).count();
        (seen >= sent.len()).then_some(docs)
    })
    .await;
    for (request_id, (uri, status)) in &sent {
        let matching: Vec<&Value> = documents.iter().filter(|d| d["_id"] == request_id.as_str()).collect();
        assert_eq!(matching.len(), 1, "exactly one document for {request_id}");
        let doc = matching[0];
        assert_eq!(doc["request-id"], request_id.as_str());
        assert_eq!(doc["uri"], uri.as_str());
        assert_eq!(doc["status"], *status);
        assert_eq!(doc["type"], "v4-metrics");
        assert_eq!(doc["http-method"], 3, "GET is Gravitee method code 3");
        let expected_api = if uri.starts_with("/legacy") { "legacy" } else { "orders" };
        assert_eq!(doc["api-id"], expected_api);
        assert_eq!(doc["security-type"], "KEY_LESS");
        assert!(doc["plan-id"].as_str().unwrap().ends_with("-keyless"));
    }

    // Heartbeats: created once, then refreshed.
    let heartbeats = eventually("heartbeat refreshed", PROPAGATION, || async {
        let beats = sim.heartbeats().await;
        (beats["puts"].as_u64().unwrap_or(0) >= 1).then_some(beats)
    })
    .await;
    let first = &heartbeats["events"][0];
    assert_eq!(first["type"], "GATEWAY_STARTED");
    let payload: Value = serde_json::from_str(first["payload"].as_str().unwrap()).unwrap();
    assert!(payload["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(first["properties"]["last_heartbeat_at"].as_str().is_some());

    // Nothing the agent logged holds the token.
    assert!(!agent.proc.stderr().contains(&token), "the Cloud Token leaked into the agent's log");
    let stats = sim.stats().await;
    assert_eq!(stats["unauthorized"], 0, "every Cloud Gate call carried a valid token: {stats}");
}

/// Dataplanes started before the agent wait (not ready), then serve once it is up; a dataplane keeps
/// serving its last table while the agent is gone, and picks up changes after the agent returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_outlives_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("A").await;
    sim.put_api(v4_api("api", "/api", &backend.url())).await;
    let token = sim.token().await;

    let socket = dir.path().join("agent.sock");
    let dp = Dataplane::start(dir.path(), "early", &format!("unix:{}", socket.display())).await;
    assert!(!dp.is_ready().await, "no config yet: not ready");
    let early = get(&reqwest::Client::new(), &dp.url("/api/x")).await.unwrap();
    assert_eq!(early.status, 503, "before the first config the dataplane refuses with 503: {}", early.body);

    let mut agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    assert_eq!(agent.socket.as_deref(), Some(socket.as_path()));
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &dp.url("/api/x")).await.unwrap().status, 200);

    agent.proc.signal(9);
    agent.proc.wait_exit(Duration::from_secs(10)).await.expect("agent killed");
    for _ in 0..20 {
        assert_eq!(get(&client, &dp.url("/api/x")).await.unwrap().status, 200, "serving without the agent");
    }
    assert!(dp.is_ready().await, "still ready: it serves its last good table");

    sim.put_api(v4_api("api", "/api2", &backend.url())).await;
    let _agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    eventually("the dataplane reconnects and applies the change", PROPAGATION, || async {
        let reply = get(&client, &dp.url("/api2/x")).await?;
        (reply.status == 200).then_some(())
    })
    .await;
}

/// A slow request in flight keeps its route when the config changes under it, and completes when the
/// dataplane is told to stop (graceful drain); a large body streams through both ways intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_survive_config_changes_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend_a = Backend::start("A").await;
    let backend_b = Backend::start("B").await;
    sim.put_api(v4_api("api", "/api", &backend_a.url())).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let mut dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();

    // 8 MiB up: the backend reports what it received.
    let body = vec![b'x'; 8 * 1024 * 1024];
    let reply = client.post(dp.url("/api/upload")).body(body.clone()).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["method"], "POST");

    // In flight on A while the API moves to B.
    let slow = tokio::spawn({
        let client = client.clone();
        let url = dp.url("/api/slow?sleep_ms=2000");
        async move { get(&client, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.put_api(v4_api("api", "/api", &backend_b.url())).await;
    eventually("new requests go to B", PROPAGATION, || async {
        let reply = get(&client, &dp.url("/api/now")).await?;
        (reply.json()["backend"] == "B").then_some(())
    })
    .await;
    let slow = slow.await.unwrap().expect("the in-flight request completes");
    assert_eq!((slow.status, slow.json()["backend"].clone()), (200, Value::from("A")), "{}", slow.body);

    // SIGTERM while a request is in flight: it completes, then the dataplane exits cleanly.
    let slow = tokio::spawn({
        let client = client.clone();
        let url = dp.url("/api/slow?sleep_ms=1500");
        async move { get(&client, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    dp.proc.signal(15);
    let slow = slow.await.unwrap().expect("the in-flight request completes during the drain");
    assert_eq!(slow.status, 200);
    let status = dp.proc.wait_exit(Duration::from_secs(15)).await.expect("dataplane exits");
    assert!(status.success(), "{status:?}");
}
