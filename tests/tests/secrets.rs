//! Secrets stay where they belong, with real binaries in local mode: target userinfo becomes the
//! Basic credentials the backend receives and appears nowhere else (analytics, `/config`, logs,
//! rejection reasons); API keys in the query string and credential headers are masked in analytics
//! and v4 log records; definitions read files only under `--definition-files-dir`.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use hgw_tests::gateway::{Agent, Dataplane};
use hgw_tests::{Backend, TestCa, eventually, v4_api};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "TargetPassw0rd";
const API_KEY: &str = "QueryApiKeySecret";
const COOKIE: &str = "SessionCookieSecret";
const BEARER: &str = "ClientBearerSecret";

fn documents(reports: &Path) -> Vec<Value> {
    std::fs::read_to_string(reports)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// A v4 API logging headers of every phase.
fn logged(id: &str, path: &str, target: &str) -> Value {
    let mut api = v4_api(id, path, target);
    api["analytics"] = json!({"enabled": true, "logging": {
        "mode": {"entrypoint": true, "endpoint": true},
        "phase": {"request": true, "response": true},
        "content": {"headers": true, "messageHeaders": false, "payload": false, "messagePayload": false}
    }});
    api
}

/// A v4 API on an https target whose client certificate comes from files.
fn key_store_api(id: &str, path: &str, cert_path: &Path, key_path: &Path) -> Value {
    let mut api = v4_api(id, path, "https://127.0.0.1:9/");
    api["endpointGroups"][0]["sharedConfiguration"] = json!({"ssl": {"keyStore": {
        "type": "PEM", "certPath": cert_path, "keyPath": key_path}}});
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_the_backend_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("secret").await;
    let port = backend.addr.port();
    let write = |name: &str, api: Value| std::fs::write(apis.join(name), api.to_string()).unwrap();
    write("basic.json", logged("basic", "/basic", &format!("http://user:{PASSWORD}@127.0.0.1:{port}/base")));
    let mut configured = v4_api("configured", "/configured", &format!("http://user:{PASSWORD}@127.0.0.1:{port}/"));
    configured["endpointGroups"][0]["sharedConfiguration"] =
        json!({"headers": [{"name": "Authorization", "value": "Bearer from-the-endpoint"}]});
    write("configured.json", configured);
    write("broken.json", v4_api("broken", "/broken", &format!("ftp://user:{PASSWORD}@127.0.0.1:{port}/")));

    // Client certificate files: inside --definition-files-dir, and a key outside it.
    let files = dir.path().join("definition-files");
    std::fs::create_dir(&files).unwrap();
    let ca = TestCa::new("secrets test CA").unwrap();
    let client = ca.issue_client("gateway").unwrap();
    std::fs::write(files.join("cert.pem"), &client.cert_pem).unwrap();
    std::fs::write(files.join("key.pem"), &client.key_pem).unwrap();
    let outside_key = dir.path().join("outside-key.pem");
    std::fs::write(&outside_key, &client.key_pem).unwrap();
    write("inside.json", key_store_api("inside", "/inside", &files.join("cert.pem"), &files.join("key.pem")));
    write("outside.json", key_store_api("outside", "/outside", &files.join("cert.pem"), &outside_key));

    let reports = dir.path().join("reports.ndjson");
    let files_text = files.display().to_string();
    let agent =
        Agent::start_local(dir.path(), "agent", &apis, &reports, &["--definition-files-dir", &files_text]).await;
    let dataplane = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dataplane.wait_ready().await;
    let http = reqwest::Client::new();

    // The backend receives the userinfo as Basic credentials, over the client's own Authorization.
    let response = http
        .get(dataplane.url(&format!("/basic/orders?api-key={API_KEY}&page=2")))
        .header("authorization", format!("Bearer {BEARER}"))
        .header("cookie", format!("session={COOKIE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let echoed: Value = response.json().await.unwrap();
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("user:{PASSWORD}")));
    assert_eq!(echoed["headers"]["authorization"], basic.as_str(), "{echoed}");
    assert_eq!(echoed["path"], "/base/orders", "{echoed}");
    // An Authorization header configured on the endpoint wins over the userinfo.
    let echoed: Value = http.get(dataplane.url("/configured/x")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echoed["headers"]["authorization"], "Bearer from-the-endpoint", "{echoed}");

    // Analytics: the endpoint without userinfo, the API key masked in the uri.
    let metrics = eventually("the metrics document", TIMEOUT, || async {
        documents(&reports).into_iter().find(|d| d["type"] == "v4-metrics" && d["_id"] == request_id.as_str())
    })
    .await;
    // (A key-less plan forwards the query as it came, so the endpoint URL carries the key, masked.)
    assert_eq!(metrics["endpoint"], format!("http://127.0.0.1:{port}/base/orders?api-key=*****&page=2"), "{metrics}");
    assert_eq!(metrics["uri"], "/basic/orders?api-key=*****&page=2", "{metrics}");
    // v4 log: credentials and cookies masked in every phase, the key masked in the logged uri.
    let log = eventually("the log document", TIMEOUT, || async {
        documents(&reports).into_iter().find(|d| d["type"] == "v4-log" && d["_id"] == request_id.as_str())
    })
    .await;
    let entry = &log["entrypoint-request"];
    assert_eq!(entry["uri"], "/basic/orders?api-key=*****&page=2", "{log}");
    assert_eq!(entry["headers"]["authorization"], json!(["*****"]), "{log}");
    assert_eq!(entry["headers"]["cookie"], json!(["*****"]), "{log}");
    assert_eq!(log["endpoint-request"]["headers"]["authorization"], json!(["*****"]), "{log}");

    // Files: inside the directory deploys, outside is rejected with the field path.
    let (_, listed) = agent.node_get("/_node/apis").await;
    let deployed: Vec<&str> = listed["deployed"].as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(deployed.contains(&"inside"), "{listed}");
    let rejected = |id: &str| {
        listed["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["reason"].as_str().unwrap().to_owned())
    };
    let outside = rejected("outside").expect("the API naming a file outside the directory is rejected");
    assert!(
        outside.starts_with("endpointGroups[0].sharedConfiguration.ssl.keyStore.keyPath: ")
            && outside.contains("--definition-files-dir"),
        "{outside}"
    );
    let broken = rejected("broken").expect("the ftp target is rejected");
    assert!(broken.starts_with("endpointGroups[0].endpoints[0].configuration.target: "), "{broken}");

    // The password (or its Basic encoding), the key, the cookie and the bearer token are nowhere else:
    // not in analytics, the dataplane's /config, rejection reasons or either process's logs.
    let encoded = basic.trim_start_matches("Basic ").to_owned();
    let config = dataplane.config().await.to_string();
    assert!(config.contains(&format!("http://127.0.0.1:{port}/base")), "{config}");
    let places = [
        ("reports file", std::fs::read_to_string(&reports).unwrap()),
        ("dataplane /config", config),
        ("agent /_node/apis", listed.to_string()),
        ("agent log", agent.proc.stderr()),
        ("dataplane log", dataplane.proc.stderr()),
    ];
    for (place, text) in &places {
        for secret in [PASSWORD, encoded.as_str(), API_KEY, COOKIE, BEARER] {
            assert!(!text.contains(secret), "{secret} found in the {place}:\n{text}");
        }
    }
}
