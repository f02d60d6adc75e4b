//! The embedded default: `hgw-agent --local-apis DIR --dataplanes N` serves the shipped example API
//! with no cloud and no backend, reloads definitions when files change, writes analytics to the
//! reports file, and stops its dataplanes cleanly.

use std::time::Duration;

use hgw_tests::gateway::{Agent, get};
use hgw_tests::{Backend, eventually, v4_api};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_dataplane_serves_the_example_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/apis");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, apis.join(path.file_name().unwrap())).unwrap();
    }
    let reports = dir.path().join("reports.ndjson");
    let dataplane_bin = hgw_tests::bin_path("hgw-dataplane").display().to_string();
    let mut agent = Agent::start_local(
        dir.path(),
        "agent",
        &apis,
        &reports,
        &[
            "--dataplanes",
            "1",
            "--dataplane-listen",
            "127.0.0.1:0",
            "--dataplane-bin",
            &dataplane_bin,
            "--shutdown-grace",
            "5s",
        ],
    )
    .await;

    // The supervised dataplane connects and reports where it listens.
    let listen = agent.supervised_dataplane(TIMEOUT).await;
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();

    let reply = get(&client, &format!("{base}/hello")).await.expect("dataplane answers");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["message"], "Hello from hgw");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let request_id = reply.header("x-gravitee-request-id").unwrap().to_owned();

    // No API there: Gravitee's 404.
    let reply = get(&client, &format!("{base}/nothing-here")).await.unwrap();
    assert_eq!(reply.status, 404);

    // Analytics land in the reports file, in the Elasticsearch form.
    let doc: Value = eventually("the request is reported", TIMEOUT, || async {
        let text = std::fs::read_to_string(&reports).ok()?;
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|d| d["_id"] == request_id.as_str())
    })
    .await;
    assert_eq!(doc["api-id"], "hello-api");
    assert_eq!(doc["status"], 200);
    assert_eq!(doc["uri"], "/hello");

    // Reload on change: a new file deploys, a broken one is rejected alone.
    let backend = Backend::start("local").await;
    std::fs::write(apis.join("added.json"), v4_api("added", "/added", &backend.url()).to_string()).unwrap();
    std::fs::write(apis.join("broken.json"), "{\"id\": \"broken\",").unwrap();
    eventually("the added API is served", TIMEOUT, || async {
        let reply = get(&client, &format!("{base}/added/x")).await?;
        (reply.status == 200 && reply.json()["backend"] == "local").then_some(())
    })
    .await;
    assert_eq!(get(&client, &format!("{base}/hello")).await.unwrap().status, 200);
    let (_, body) = agent.node_get("/_node/apis").await;
    assert!(body["rejected"].as_array().unwrap().iter().any(|r| r["id"] == "broken"), "{body}");

    // Removing a file undeploys its API.
    std::fs::remove_file(apis.join("added.json")).unwrap();
    eventually("the removed API is gone", TIMEOUT, || async {
        let reply = get(&client, &format!("{base}/added/x")).await?;
        (reply.status == 404).then_some(())
    })
    .await;

    // SIGTERM: the agent stops its dataplane and exits 0.
    let status = agent.proc.terminate(Duration::from_secs(20)).await.expect("agent exits");
    assert!(status.success(), "clean exit: {status:?}\n{}", agent.proc.stderr());
    assert!(get(&client, &format!("{base}/hello")).await.is_none(), "the supervised dataplane stopped with the agent");
}
