//! Every record kind with real binaries in local mode (reports land in `--reports-file`): v4 log
//! records for APIs that log (headers and capped payloads of each phase), none for APIs that do not,
//! the node `monitor` document, and the dataplane's drop-oldest queue while the agent is away.

use std::path::Path;
use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane};
use hgw_tests::{Backend, eventually, v4_api};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

fn documents(reports: &Path) -> Vec<Value> {
    std::fs::read_to_string(reports)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn document(reports: &Path, kind: &str, id: &str) -> Option<Value> {
    documents(reports).into_iter().find(|d| d["type"] == kind && d["_id"] == id)
}

/// The value of an unlabelled series in a Prometheus text page.
fn series(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn logged_api(id: &str, path: &str, target: &str, condition: Option<&str>) -> Value {
    let mut api = v4_api(id, path, target);
    let mut logging = json!({
        "mode": {"entrypoint": true, "endpoint": true},
        "phase": {"request": true, "response": true},
        "content": {"headers": true, "messageHeaders": false, "payload": true, "messagePayload": false}
    });
    if let Some(condition) = condition {
        logging["condition"] = condition.into();
    }
    api["analytics"] = json!({"enabled": true, "logging": logging});
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_requests_get_v4_log_documents_and_the_node_reports_monitor_documents() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("logged").await;
    let write = |name: &str, api: Value| std::fs::write(apis.join(name), api.to_string()).unwrap();
    write("logged.json", logged_api("logged", "/logged", &backend.url(), None));
    write("plain.json", v4_api("plain", "/plain", &backend.url()));
    write(
        "conditional.json",
        logged_api("conditional", "/conditional", &backend.url(), Some("{#request.headers['X-Log'][0] == 'yes'}")),
    );
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--monitor-interval", "300ms"]).await;
    let dataplane =
        Dataplane::start_with(dir.path(), "dp-log", &agent.unix_target(), &["--log-max-payload", "16"]).await;
    dataplane.wait_ready().await;
    let client = reqwest::Client::new();

    // Headers and payloads of both phases, bodies cut at 16 bytes.
    let sent = "0123456789abcdef-and-more";
    let response = client
        .post(dataplane.url("/logged/orders?x=1"))
        .header("x-test", "one")
        .header("content-type", "text/plain")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let answer = response.text().await.unwrap();
    let log = eventually("the v4-log document", TIMEOUT, || async { document(&reports, "v4-log", &request_id) }).await;
    assert_eq!(log["api-id"], "logged");
    assert_eq!(log["request-id"], request_id.as_str());
    assert!(log["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{log}");
    assert_eq!(log["date"].as_str().map(str::len), Some(10), "{log}");

    let entry = &log["entrypoint-request"];
    assert_eq!((entry["method"].as_str(), entry["uri"].as_str()), (Some("POST"), Some("/logged/orders?x=1")), "{log}");
    assert_eq!(entry["headers"]["x-test"], json!(["one"]), "{log}");
    assert_eq!(entry["body"], &sent[..16], "{log}");
    assert_eq!(entry["body-truncated"], true, "{log}");

    let upstream = &log["endpoint-request"];
    assert_eq!(upstream["method"], "POST");
    assert!(upstream["uri"].as_str().unwrap().starts_with(&backend.url()), "{log}");
    assert_eq!(upstream["headers"]["x-gravitee-request-id"], json!([request_id]), "{log}");
    assert_eq!(upstream["body"], &sent[..16], "{log}");

    assert_eq!(log["endpoint-response"]["status"], 200, "{log}");
    assert_eq!(log["endpoint-response"]["body"], &answer[..16], "{log}");
    let client_side = &log["entrypoint-response"];
    assert_eq!(client_side["status"], 200, "{log}");
    assert_eq!(client_side["headers"]["x-gravitee-request-id"], json!([request_id]), "{log}");
    assert_eq!(client_side["body"], &answer[..16], "{log}");
    assert_eq!(client_side["body-truncated"], answer.len() > 16, "{log}");
    assert!(document(&reports, "v4-metrics", &request_id).is_some(), "the metrics record is reported too");

    // No logging: a metrics document and nothing else. A false condition: the same.
    let mut unlogged = Vec::new();
    for (path, header) in [("/plain/x", None), ("/conditional/x", Some("no"))] {
        let mut request = client.get(dataplane.url(path));
        if let Some(value) = header {
            request = request.header("x-log", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        unlogged.push(response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned());
    }
    let response = client.get(dataplane.url("/conditional/y")).header("x-log", "yes").send().await.unwrap();
    let conditional_id = response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let conditional =
        eventually("the conditional log", TIMEOUT, || async { document(&reports, "v4-log", &conditional_id) }).await;
    assert_eq!(conditional["entrypoint-request"]["headers"]["x-log"], json!(["yes"]));
    for id in &unlogged {
        // Records of one request travel together, so its metrics document proves the absence.
        eventually("the unlogged request's metrics", TIMEOUT, || async { document(&reports, "v4-metrics", id) }).await;
        assert!(document(&reports, "v4-log", id).is_none(), "request {id} must not be logged");
    }

    // The node monitor: this agent's process, every --monitor-interval.
    let monitors = eventually("two monitor documents", TIMEOUT, || async {
        let found: Vec<Value> = documents(&reports).into_iter().filter(|d| d["type"] == "monitor").collect();
        (found.len() >= 2 && found.iter().any(|d| d["dataplanes"]["connected"] == 1)).then_some(found)
    })
    .await;
    let monitor = monitors.last().unwrap();
    assert!(monitor["gateway"].as_str().is_some_and(|g| !g.is_empty()), "{monitor}");
    assert!(monitor["hostname"].as_str().is_some_and(|h| !h.is_empty()), "{monitor}");
    assert!(monitor["process"]["open_file_descriptors"].as_u64().unwrap() > 0, "{monitor}");
    assert!(monitor["process"]["mem"]["resident_in_bytes"].as_u64().unwrap() > 0, "{monitor}");
    assert!(monitor["process"]["cpu"]["percent"].as_f64().is_some(), "{monitor}");
    assert_ne!(monitors[0]["_id"], monitors[1]["_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_agent_is_away_the_oldest_records_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("queue").await;
    std::fs::write(apis.join("api.json"), v4_api("queued", "/queued", &backend.url()).to_string()).unwrap();
    let reports = dir.path().join("reports.ndjson");
    let mut agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &[]).await;
    let dataplane =
        Dataplane::start_with(dir.path(), "dp-queue", &agent.unix_target(), &["--analytics-queue", "5"]).await;
    dataplane.wait_ready().await;
    let client = reqwest::Client::new();
    let request = || async {
        let response = client.get(dataplane.url("/queued/x")).send().await.expect("the dataplane answers");
        assert_eq!(response.status(), 200);
        response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned()
    };

    // With the agent there, records are acknowledged.
    let first = request().await;
    eventually("the first request reported", TIMEOUT, || async { document(&reports, "v4-metrics", &first) }).await;

    // The agent goes away; the dataplane keeps serving and queues at most 5 records.
    let status = agent.proc.terminate(Duration::from_secs(20)).await.expect("agent exits");
    assert!(status.success(), "{}", agent.proc.stderr());
    eventually("the dataplane sees the agent gone", TIMEOUT, || async {
        (series(&dataplane.metrics().await, "hgw_dataplane_agent_connected") == Some(0)).then_some(())
    })
    .await;
    let mut away = Vec::new();
    for _ in 0..20 {
        away.push(request().await);
    }
    let page = dataplane.metrics().await;
    assert_eq!(series(&page, "hgw_dataplane_analytics_records_dropped_total"), Some(15), "{page}");
    assert_eq!(series(&page, "hgw_dataplane_analytics_records_queued"), Some(5), "{page}");
    assert_eq!(series(&page, "hgw_dataplane_analytics_records_produced_total"), Some(21), "{page}");

    // The agent returns on the same socket: the newest 5 arrive, the oldest 15 never do, and the agent
    // learns the drop count with the first batch.
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &[]).await;
    for id in &away[15..] {
        eventually("a newest record arrives", TIMEOUT, || async { document(&reports, "v4-metrics", id) }).await;
    }
    for id in &away[..15] {
        assert!(document(&reports, "v4-metrics", id).is_none(), "an old record {id} should have been dropped");
    }
    let dropped = eventually("the agent counts the dataplane's drops", TIMEOUT, || async {
        series(
            &agent.node_text("/_node/metrics/prometheus").await,
            "hgw_agent_analytics_records_dropped_by_dataplanes_total",
        )
        .filter(|n| *n > 0)
    })
    .await;
    assert_eq!(dropped, 15);
    // Acknowledged: the first record and the newest five.
    eventually("the dataplane counts the acknowledgements", TIMEOUT, || async {
        (series(&dataplane.metrics().await, "hgw_dataplane_analytics_records_acknowledged_total") == Some(6))
            .then_some(())
    })
    .await;
}
