//! Gravitee's http-health-check service: each dataplane probes the endpoints; a failing endpoint
//! leaves load balancing, and every probe is reported as a `health` document on `/reports`.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, get};
use hgw_tests::{Backend, CloudGateSim, eventually, v2_api, v4_api};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_leaves_load_balancing_and_probes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let healthy = Backend::start("healthy").await;
    let dead = format!("http://127.0.0.1:{}", closed_port());

    let mut api = v4_api("checked", "/checked", &healthy.url());
    api["endpointGroups"][0]["endpoints"] = json!([
        {"name": "healthy", "type": "http-proxy", "weight": 1, "configuration": {"target": healthy.url()}},
        {"name": "dead", "type": "http-proxy", "weight": 1, "configuration": {"target": dead}}
    ]);
    api["endpointGroups"][0]["services"] = json!({"healthCheck": {"enabled": true, "type": "http-health-check", "configuration": {
        "schedule": "*/1 * * * * *", "method": "GET", "target": "/health", "assertion": "{#response.status == 200}",
        "successThreshold": 1, "failureThreshold": 1}}});
    sim.put_api(api).await;

    // The same service in v2 form (API-level `services`, steps with assertions).
    let mut v2 = v2_api("checked-v2", "/checked-v2", &healthy.url());
    v2["services"] = json!({"health-check": {"enabled": true, "schedule": "*/1 * * * * *",
        "steps": [{"name": "default", "request": {"path": "/ping", "method": "GET"}, "response": {"assertions": ["#response.status == 200"]}}]}});
    sim.put_api(v2).await;

    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;

    let down: Value = eventually("the dead endpoint is reported DOWN", TIMEOUT, || async {
        sim.report_documents()
            .await
            .into_iter()
            .find(|d| d["type"] == "health" && d["endpoint"] == "dead" && d["state"] == "DOWN")
    })
    .await;
    assert_eq!(down["api"], "checked");
    assert_eq!(down["available"], false);
    assert_eq!(down["transition"], true);
    assert!(down["steps"][0]["request"]["uri"].as_str().unwrap().ends_with("/health"));
    assert!(down["_id"].as_str().unwrap().starts_with("health-"));

    // With the dead endpoint out of rotation, every request reaches the healthy one (no failover here).
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let reply = get(&client, &dp.url("/checked/x")).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["backend"], "healthy");
    }

    let docs = eventually("probes of the healthy endpoints are reported", TIMEOUT, || async {
        let docs = sim.report_documents().await;
        let v4_ok = docs.iter().any(|d| d["type"] == "health" && d["endpoint"] == "healthy" && d["success"] == true);
        let v2_ok = docs.iter().any(|d| d["type"] == "health" && d["api"] == "checked-v2" && d["success"] == true);
        (v4_ok && v2_ok).then_some(docs)
    })
    .await;
    let v2_probe = docs.iter().find(|d| d["type"] == "health" && d["api"] == "checked-v2").unwrap();
    assert!(v2_probe["steps"][0]["request"]["uri"].as_str().unwrap().ends_with("/ping"));
    assert_eq!(v2_probe["steps"][0]["response"]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_schedules_are_rejected_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let mut api = v4_api("cron", "/cron", "http://127.0.0.1:9");
    api["endpointGroups"][0]["services"] =
        json!({"healthCheck": {"enabled": true, "configuration": {"schedule": "0 15 10 * * MON-FRI"}}});
    sim.put_api(api).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    agent.wait_synced().await;
    let (_, apis) = agent.node_get("/_node/apis").await;
    let reason = apis["rejected"][0]["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with(
            "endpointGroups[0].services.healthCheck.configuration.schedule: schedule `0 15 10 * * MON-FRI`"
        ),
        "{reason}"
    );
}
