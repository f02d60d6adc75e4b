//! Gravitee endpoint features, end to end: definitions in Gravitee's v4 (and v2) formats go through the
//! Cloud Gate emulator to the agent and a dataplane, which calls real backends: load balancers,
//! secondaries, failover and circuit breaking, HTTP/2 (h2c and ALPN), backend TLS and tenants.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, Reply, get};
use hgw_tests::{Backend, CloudGateSim, TestCa, eventually, v2_api, v4_api};
use serde_json::{Value, json};

/// Changes must reach the dataplane within a few sync intervals (500 ms here); generous for 2 cores.
const PROPAGATION: Duration = Duration::from_secs(20);

/// A loopback URL nobody listens on: connections are refused.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn endpoint(name: &str, target: &str) -> Value {
    json!({"name": name, "type": "http-proxy", "weight": 1, "inheritConfiguration": true,
        "configuration": {"target": target}})
}

/// A v4 API at `/{id}` over `endpoints`, with `shared` as the group's shared configuration.
fn api(id: &str, lb: &str, endpoints: Vec<Value>, shared: Value) -> Value {
    let mut api = v4_api(id, &format!("/{id}"), "http://unused");
    api["endpointGroups"][0]["loadBalancer"]["type"] = json!(lb);
    api["endpointGroups"][0]["endpoints"] = Value::Array(endpoints);
    api["endpointGroups"][0]["sharedConfiguration"] = shared;
    api
}

struct Gateway {
    agent: Agent,
    dp: Dataplane,
    client: reqwest::Client,
}

impl Gateway {
    async fn get(&self, path: &str) -> Reply {
        get(&self.client, &self.dp.url(path)).await.expect("the dataplane answers")
    }
}

async fn gateway(dir: &std::path::Path, sim: &CloudGateSim, extra: &[&str]) -> Gateway {
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir, "agent", sim, &token, extra).await;
    let dp = Dataplane::start(dir, "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    Gateway { agent, dp, client: reqwest::Client::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_failover_circuits_http2_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let light = Backend::start("light").await;
    let heavy = Backend::start("heavy").await;
    let backup = Backend::start("backup").await;
    let survivor = Backend::start("survivor").await;
    let slow = Backend::start("slow").await;
    let h2c = Backend::start_h2c("h2c").await;
    let eu = Backend::start("eu").await;
    let us = Backend::start("us").await;

    // Weighted round-robin 1:3 (v4) and weighted random 1:3 (v2).
    let mut heavy_endpoint = endpoint("heavy", &heavy.url());
    heavy_endpoint["weight"] = json!(3);
    sim.put_api(api(
        "weighted",
        "WEIGHTED_ROUND_ROBIN",
        vec![endpoint("light", &light.url()), heavy_endpoint],
        json!({}),
    ))
    .await;
    let mut legacy = v2_api("legacy-weighted", "/legacy-weighted", &light.url());
    legacy["proxy"]["groups"][0]["load_balancing"]["type"] = json!("WEIGHTED_RANDOM");
    legacy["proxy"]["groups"][0]["endpoints"] = json!([
        {"name": "light", "target": light.url(), "weight": 1, "backup": false},
        {"name": "heavy", "target": heavy.url(), "weight": 3, "backup": false},
        {"name": "never", "target": refused_url(), "weight": 0, "backup": false}
    ]);
    sim.put_api(legacy).await;

    // A refused primary and a secondary, with failover (v4), and the v2 form (backup endpoint).
    let mut secondary = endpoint("backup", &backup.url());
    secondary["secondary"] = json!(true);
    let mut with_secondary =
        api("secondary", "ROUND_ROBIN", vec![endpoint("down", &refused_url()), secondary], json!({}));
    with_secondary["failover"] =
        json!({"enabled": true, "maxRetries": 1, "maxFailures": 3, "openStateDuration": 60000});
    sim.put_api(with_secondary).await;
    let mut legacy_backup = v2_api("legacy-backup", "/legacy-backup", &refused_url());
    legacy_backup["proxy"]["groups"][0]["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "backup", "target": backup.url(), "weight": 1, "backup": true}));
    legacy_backup["proxy"]["failover"] = json!({"maxAttempts": 1, "retryTimeout": 5000, "cases": ["TIMEOUT"]});
    sim.put_api(legacy_backup).await;

    // Round-robin over a refusing endpoint and a good one: failover retries on the good one.
    let mut retries = api(
        "retries",
        "ROUND_ROBIN",
        vec![endpoint("down", &refused_url()), endpoint("survivor", &survivor.url())],
        json!({}),
    );
    retries["failover"] = json!({"enabled": true, "maxRetries": 2, "maxFailures": 1000});
    sim.put_api(retries).await;

    // One slow endpoint: two timed-out calls open its circuit for a minute.
    let mut circuit = api("circuit", "ROUND_ROBIN", vec![endpoint("slow", &slow.url())], json!({}));
    circuit["failover"] = json!({"enabled": true, "maxRetries": 0, "slowCallDuration": 300,
        "maxFailures": 2, "openStateDuration": 60000});
    sim.put_api(circuit).await;

    // HTTP/2 with prior knowledge to an h2c-only backend.
    sim.put_api(api("h2", "ROUND_ROBIN", vec![endpoint("h2c", &h2c.url())], json!({"http": {"version": "HTTP_2"}})))
        .await;

    // Tenants: this gateway is `eu`.
    let mut eu_endpoint = endpoint("eu", &eu.url());
    eu_endpoint["tenants"] = json!(["eu"]);
    let mut us_endpoint = endpoint("us", &us.url());
    us_endpoint["tenants"] = json!(["us", "asia"]);
    sim.put_api(api("tenants", "ROUND_ROBIN", vec![eu_endpoint, us_endpoint], json!({}))).await;
    let mut us_only = endpoint("us", &us.url());
    us_only["tenants"] = json!(["us"]);
    sim.put_api(api("us-only", "ROUND_ROBIN", vec![us_only], json!({}))).await;

    let gw = gateway(dir.path(), &sim, &["--tenant", "eu"]).await;
    for path in ["/weighted", "/legacy-weighted", "/secondary", "/legacy-backup", "/retries", "/h2", "/tenants"] {
        gw.dp.wait_deployed(path).await;
    }
    // Deployment warm-up requests above went somewhere: count from here.
    let (light0, heavy0) = (light.requests(), heavy.requests());

    // Weighted round-robin is exact over whole rounds.
    for _ in 0..40 {
        assert_eq!(gw.get("/weighted/x").await.status, 200);
    }
    assert_eq!((light.requests() - light0, heavy.requests() - heavy0), (10, 30), "1:3 weighted round-robin");
    // Weighted random is 1:3 on average; weight 0 is never called (it would refuse: 502).
    let (light0, heavy0) = (light.requests(), heavy.requests());
    for _ in 0..200 {
        assert_eq!(gw.get("/legacy-weighted/x").await.status, 200, "the weight-0 endpoint is never chosen");
    }
    let heavy_share = (heavy.requests() - heavy0) as f64 / 200.0;
    assert_eq!(light.requests() - light0 + heavy.requests() - heavy0, 200);
    assert!((0.62..=0.88).contains(&heavy_share), "1:3 weighted random, heavy got {heavy_share}");

    // The primary refuses: the secondary answers (v4 and v2).
    for path in ["/secondary/a", "/legacy-backup/a"] {
        for _ in 0..4 {
            let reply = gw.get(path).await;
            assert_eq!(
                (reply.status, reply.json()["backend"].clone()),
                (200, json!("backup")),
                "{path}: {}",
                reply.body
            );
        }
    }

    // Failover: every request ends on the survivor with 200, and its record names that endpoint.
    let mut request_ids = Vec::new();
    for i in 0..6 {
        let reply = gw.get(&format!("/retries/item/{i}")).await;
        assert_eq!((reply.status, reply.json()["backend"].clone()), (200, json!("survivor")), "{}", reply.body);
        request_ids.push(reply.header("x-gravitee-request-id").unwrap().to_owned());
    }
    let documents = eventually("failover records uploaded", PROPAGATION, || async {
        let docs = sim.report_documents().await;
        let found: Vec<Value> =
            docs.into_iter().filter(|d| request_ids.iter().any(|id| d["request-id"] == id.as_str())).collect();
        (found.len() == request_ids.len()).then_some(found)
    })
    .await;
    for doc in &documents {
        assert_eq!(doc["status"], 200);
        let endpoint = doc["endpoint"].as_str().unwrap();
        assert!(endpoint.starts_with(&format!("{}/item/", survivor.url())), "{doc}");
    }

    // Circuit: two timeouts (504), then the call is not permitted: Gravitee's open circuit breaker
    // answers 502 without a body, and the endpoint is not called.
    assert_eq!(slow.requests(), 0);
    for _ in 0..2 {
        let reply = gw.get("/circuit/x?sleep_ms=1500").await;
        // Gravitee's endpoint failures have no body.
        assert_eq!((reply.status, reply.body.as_str()), (504, ""));
    }
    assert_eq!(slow.requests(), 2);
    for _ in 0..3 {
        let reply = gw.get("/circuit/x").await;
        assert_eq!((reply.status, reply.body.as_str()), (502, ""));
    }
    assert_eq!(slow.requests(), 2, "an open circuit does not call the endpoint");
    let keys = eventually("circuit records uploaded", PROPAGATION, || async {
        let docs = sim.report_documents().await;
        let keys: Vec<String> = docs
            .iter()
            .filter(|d| d["api-id"] == "circuit")
            .map(|d| d["error-key"].as_str().unwrap_or_default().to_owned())
            .collect();
        (keys.len() == 5).then_some(keys)
    })
    .await;
    assert_eq!(keys.iter().filter(|k| *k == "REQUEST_TIMEOUT").count(), 2, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| *k == "FAILOVER_CIRCUIT_OPEN").count(), 3, "{keys:?}");

    // HTTP/2 to an h2c backend.
    let reply = gw.get("/h2/x").await;
    assert_eq!((reply.status, reply.json()["version"].clone()), (200, json!("HTTP/2.0")), "{}", reply.body);

    // Tenants: only the eu endpoint serves; an API with us endpoints only is not deployed here.
    for _ in 0..4 {
        assert_eq!(gw.get("/tenants/x").await.json()["backend"], "eu");
    }
    assert_eq!(us.requests(), 0);
    assert_eq!(gw.get("/us-only/x").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_trust_store_hostname_and_trust_all() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let ca = TestCa::new("hgw endpoint test CA").unwrap();
    let good = Backend::start_tls("good", &ca.issue_server(&["127.0.0.1", "localhost"]).unwrap()).await;
    let misnamed = Backend::start_tls("misnamed", &ca.issue_server(&["backend.invalid"]).unwrap()).await;
    let trust_ca = json!({"ssl": {"trustStore": {"type": "PEM", "content": ca.cert_pem()}}});

    sim.put_api(api("tls-ok", "ROUND_ROBIN", vec![endpoint("good", &good.url())], trust_ca.clone())).await;
    sim.put_api(api("tls-untrusted", "ROUND_ROBIN", vec![endpoint("good", &good.url())], json!({}))).await;
    sim.put_api(api("tls-misnamed", "ROUND_ROBIN", vec![endpoint("m", &misnamed.url())], trust_ca.clone())).await;
    let mut no_hostname = trust_ca.clone();
    no_hostname["ssl"]["hostnameVerifier"] = json!(false);
    sim.put_api(api("tls-no-hostname", "ROUND_ROBIN", vec![endpoint("m", &misnamed.url())], no_hostname)).await;
    sim.put_api(api(
        "tls-trust-all",
        "ROUND_ROBIN",
        vec![endpoint("m", &misnamed.url())],
        json!({"ssl": {"trustAll": true}}),
    ))
    .await;
    let mut h2 = trust_ca.clone();
    h2["http"] = json!({"version": "HTTP_2"});
    sim.put_api(api("tls-h2", "ROUND_ROBIN", vec![endpoint("good", &good.url())], h2)).await;
    let mut legacy = v2_api("tls-legacy", "/tls-legacy", &good.url());
    legacy["proxy"]["groups"][0]["ssl"] = json!({"trustStore": {"type": "PEM", "content": ca.cert_pem()}});
    sim.put_api(legacy).await;
    let mut jks = api("tls-jks", "ROUND_ROBIN", vec![endpoint("good", &good.url())], json!({}));
    jks["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"trustStore": {"type": "JKS", "content": "AA=="}}});
    sim.put_api(jks).await;

    let gw = gateway(dir.path(), &sim, &[]).await;
    for path in
        ["/tls-ok", "/tls-untrusted", "/tls-misnamed", "/tls-no-hostname", "/tls-trust-all", "/tls-h2", "/tls-legacy"]
    {
        gw.dp.wait_deployed(path).await;
    }

    for path in ["/tls-ok/x", "/tls-legacy/x"] {
        let reply = gw.get(path).await;
        assert_eq!((reply.status, reply.json()["backend"].clone()), (200, json!("good")), "{path}: {}", reply.body);
        assert_eq!(reply.json()["version"], "HTTP/1.1");
    }
    let failures = good.tls_failures();
    let reply = gw.get("/tls-untrusted/x").await;
    assert_eq!((reply.status, reply.body.as_str()), (502, ""));
    // The backend counts the failed handshake in its own task, possibly after the 502 went out.
    hgw_tests::eventually("the backend saw the gateway refuse the handshake", Duration::from_secs(10), || async {
        (good.tls_failures() > failures).then_some(())
    })
    .await;
    let before = misnamed.requests();
    let reply = gw.get("/tls-misnamed/x").await;
    assert_eq!((reply.status, reply.body.as_str()), (502, ""), "hostname mismatch");
    assert_eq!(misnamed.requests(), before);
    for path in ["/tls-no-hostname/x", "/tls-trust-all/x"] {
        let reply = gw.get(path).await;
        assert_eq!((reply.status, reply.json()["backend"].clone()), (200, json!("misnamed")), "{path}: {}", reply.body);
    }
    let reply = gw.get("/tls-h2/x").await;
    assert_eq!((reply.status, reply.json()["version"].clone()), (200, json!("HTTP/2.0")), "ALPN h2: {}", reply.body);

    // JKS stores are rejected with the field path; the error key is in the record of the TLS failure.
    let (_, apis) = gw.agent.node_get("/_node/apis").await;
    let text = apis.to_string();
    assert!(text.contains("ssl.trustStore.type: `JKS` stores are not supported yet (use PEM)"), "{text}");
    let docs = eventually("TLS failure reported", PROPAGATION, || async {
        let docs = sim.report_documents().await;
        docs.iter().any(|d| d["api-id"] == "tls-untrusted").then_some(docs)
    })
    .await;
    let doc = docs.iter().find(|d| d["api-id"] == "tls-untrusted").unwrap();
    assert_eq!(
        (doc["status"].clone(), doc["error-key"].clone()),
        (json!(502), json!("GATEWAY_CLIENT_CONNECTION_ERROR")),
        "{doc}"
    );
    let doc = docs.iter().find(|d| d["api-id"] == "tls-misnamed").expect("misnamed reported");
    assert_eq!(doc["error-key"], "GATEWAY_CLIENT_CONNECTION_ERROR", "{doc}");
}

/// A v2 API defining no endpoint: Gravitee's emulation engine deploys it and answers every call 502
/// (GATEWAY_CLIENT_CONNECTION_ERROR, no body), after its plans and request flows ran; its V3 engine fails
/// with an internal error, so hgw rejects that form with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_api_without_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let mut emulated = v2_api("no-endpoints", "/no-endpoints", "http://unused");
    emulated["proxy"].as_object_mut().unwrap().remove("groups");
    emulated["proxy"]["endpoint"] = json!("http://127.0.0.1:1"); // the v1 form: Gravitee ignores it
    emulated["execution_mode"] = json!("v4-emulation-engine");
    // A request flow that answers itself never reaches the missing endpoint.
    emulated["flows"] = json!([{"name": "mocked", "path-operator": {"path": "/mocked", "operator": "STARTS_WITH"},
        "methods": [], "enabled": true, "post": [],
        "pre": [{"name": "m", "policy": "mock", "enabled": true, "configuration": {"status": "200", "content": "mocked"}}]}]);
    sim.put_api(emulated.clone()).await;
    let mut legacy = emulated.clone();
    legacy["id"] = json!("no-endpoints-v3");
    legacy["proxy"]["virtual_hosts"] = json!([{"path": "/no-endpoints-v3"}]);
    legacy.as_object_mut().unwrap().remove("execution_mode");
    sim.put_api(legacy).await;

    let gw = gateway(dir.path(), &sim, &[]).await;
    gw.dp.wait_deployed("/no-endpoints/x").await;
    let reply = gw.get("/no-endpoints/x").await;
    assert_eq!((reply.status, reply.body.as_str()), (502, ""));
    assert!(reply.header("x-gravitee-transaction-id").is_some());
    let mocked = gw.get("/no-endpoints/mocked").await;
    assert_eq!((mocked.status, mocked.body.as_str()), (200, "mocked"));

    let (_, apis) = gw.agent.node_get("/_node/apis").await;
    let reason = apis["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "no-endpoints-v3")
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .expect("the V3-engine form is rejected");
    assert!(reason.starts_with("proxy: the API defines no endpoint"), "{reason}");
}
