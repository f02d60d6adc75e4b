//! The sim served in-process over real HTTPS: auth, scoping, paging, heartbeats, reports and faults
//! as a client sees them.

use std::io::Write;
use std::net::SocketAddr;

use flate2::{Compression, write::GzEncoder};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Config, Sim};
use crate::{client_trusting, v2_api, v4_api};

struct Running {
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(legacy_search: bool) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::bind(Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.path().to_owned(),
            data_dir: None,
            legacy_search,
        })
        .await
        .unwrap();
        let announce = sim.announce().clone();
        assert!(announce.ca.is_absolute() && announce.token_key.is_absolute());
        let key = std::fs::read_to_string(&announce.token_key).unwrap();
        assert!(key.contains("BEGIN PUBLIC KEY"));
        let client = client_trusting(&std::fs::read(&announce.ca).unwrap());
        Running { url: announce.url, client, _dir: dir, _server: tokio::spawn(sim.serve(std::future::pending())) }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.url)).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn token(&self, body: Value) -> String {
        let (status, answer) = self.call("POST", "/_sim/tokens", None, body).await;
        assert_eq!(status, 200);
        answer["token"].as_str().unwrap().to_owned()
    }

    async fn search(&self, token: &str, query: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/sync/_bridge/eventsLatest/_search?{query}");
        self.call("POST", &path, Some(token), body).await
    }
}

#[tokio::test]
async fn bridge_calls_need_a_valid_token() {
    let sim = Running::start(false).await;
    let body = json!({"from": -1, "types": ["PUBLISH_API"]});
    let (status, answer) =
        sim.call("POST", "/sync/_bridge/eventsLatest/_search?group=API_ID", None, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(answer["http_status_code"], 401);
    assert_eq!(answer["message"], "missing Authorization header");

    let expired = sim.token(json!({"ttl_secs": -10})).await;
    let (status, answer) = sim.search(&expired, "group=API_ID", body.clone()).await;
    assert_eq!(status, 401);
    assert!(!answer["message"].as_str().unwrap().contains(&expired));

    let no_cpg = sim.token(json!({"remove": ["cpg"]})).await;
    let (status, _) = sim.search(&no_cpg, "group=API_ID", body.clone()).await;
    assert_eq!(status, 401);

    let token = sim.token(json!({})).await;
    let (status, answer) = sim.search(&token, "group=API_ID", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!([]));

    let (status, _) = sim.search(&token, "group=API_ID", json!({"environments": ["other"]})).await;
    assert_eq!(status, 403);

    let (status, answer) = sim.call("GET", "/_sim/stats", None, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["unauthorized"], 3);
    assert_eq!(answer["forbidden"], 1);
    assert_eq!(answer["calls"]["POST /sync/_bridge/eventsLatest/_search"], 5);
}

#[tokio::test]
async fn published_apis_are_searchable_and_paged() {
    let sim = Running::start(false).await;
    let token = sim.token(json!({})).await;
    for i in 0..3 {
        let (status, event) = sim
            .call("PUT", "/_sim/apis", None, json!({"definition": v4_api(&format!("api{i}"), "/p", "http://x")}))
            .await;
        assert_eq!(status, 200, "{event}");
        assert_eq!(event["type"], "PUBLISH_API");
    }
    let (status, _) = sim
        .call(
            "PUT",
            "/_sim/apis",
            None,
            json!({"definition": v2_api("elsewhere", "/e", "http://x"), "environmentId": "other"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = sim.call("POST", "/_sim/apis/api1/stop", None, json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = sim.call("POST", "/_sim/apis/nope/stop", None, json!({})).await;
    assert_eq!(status, 404);

    let full = json!({"from": -1, "types": ["PUBLISH_API", "START_API"]});
    let (status, page0) = sim.search(&token, "group=API_ID&page=0&size=1", full.clone()).await;
    assert_eq!(status, 200);
    let (_, page1) = sim.search(&token, "group=API_ID&page=1&size=1", full.clone()).await;
    let (_, page2) = sim.search(&token, "group=API_ID&page=2&size=1", full.clone()).await;
    let api_of = |page: &Value| page[0]["properties"]["api_id"].clone();
    assert_eq!(api_of(&page0), "api0");
    assert_eq!(api_of(&page1), "api2");
    assert_eq!(page2, json!([]));

    let (_, all) = sim.search(&token, "group=API_ID", json!({"from": -1, "types": ["STOP_API"]})).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let payload: Value = serde_json::from_str(all[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["lifecycleState"], "STOPPED");

    let (status, _) = sim.search(&token, "page=0", full.clone()).await;
    assert_eq!(status, 400, "group is required");
    let (status, answer) = sim.search(&token, "group=API_ID&size=x", full.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(answer["http_status_code"], 400);
    let (status, _) = sim.search(&token, "group=API_ID", json!({"from": "yesterday"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn legacy_search_forces_the_fallback() {
    let sim = Running::start(true).await;
    let token = sim.token(json!({})).await;
    let (status, _) = sim.search(&token, "group=API_ID", json!({})).await;
    assert_eq!(status, 404);
    let (status, _) =
        sim.call("POST", "/sync/_bridge/events/_searchLatest?group=API_ID", Some(&token), json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn heartbeats_are_created_then_updated() {
    let sim = Running::start(false).await;
    let token = sim.token(json!({})).await;
    let beat = json!({"type": "GATEWAY_STARTED", "payload": "{}", "properties": {"id": "node"}});
    let (status, created) = sim.call("POST", "/sync/_bridge/events", Some(&token), beat.clone()).await;
    assert_eq!(status, 200);
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/sync/_bridge/events/{id}");
    let (status, _) = sim.call("PUT", &path, Some(&token), beat.clone()).await;
    assert_eq!(status, 200);
    let (status, _) = sim.call("PUT", "/sync/_bridge/events/unknown", Some(&token), beat).await;
    assert_eq!(status, 404);
    let (status, _) = sim.call("POST", "/sync/_bridge/events", Some(&token), json!({"payload": 3})).await;
    assert_eq!(status, 400);
    let (_, beats) = sim.call("GET", "/_sim/heartbeats", None, json!({})).await;
    assert_eq!(beats["puts"], 1);
    assert_eq!(beats["events"].as_array().unwrap().len(), 2);
    let (_, stats) = sim.call("GET", "/_sim/stats", None, json!({})).await;
    assert_eq!(stats["calls"]["PUT /sync/_bridge/events/{id}"], 2);
}

#[tokio::test]
async fn reports_accept_gzip_ndjson_only() {
    let sim = Running::start(false).await;
    let token = sim.token(json!({})).await;
    let gzip = |text: &str| {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    };
    let post = |body: Vec<u8>, encoding: &'static str| {
        sim.client
            .post(format!("{}/reports", sim.url))
            .bearer_auth(&token)
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    let resp = post(gzip("{\"type\":\"v4-metrics\"}\n{\"type\":\"v4-log\"}\n"), "gzip").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 2}));
    assert_eq!(post(gzip("{}\n"), "identity").await.unwrap().status(), 415);
    assert_eq!(post(gzip("{}\nnope\n"), "gzip").await.unwrap().status(), 400);
    assert_eq!(post(b"not gzip".to_vec(), "gzip").await.unwrap().status(), 400);
    let (_, reports) = sim.call("GET", "/_sim/reports", None, json!({})).await;
    assert_eq!(reports["requests"], 4);
    assert_eq!(reports["rejected"], 3);
    assert_eq!(reports["documents"].as_array().unwrap().len(), 2);
    // A resent document counts once among the distinct ids, per type and over all types.
    let lines = "{\"type\":\"v4-metrics\",\"_id\":\"a\"}\n{\"type\":\"v4-metrics\",\"_id\":\"a\"}\n\
                 {\"type\":\"v4-log\",\"_id\":\"a\"}\n{\"type\":\"v4-metrics\",\"_id\":\"b\"}\n";
    assert_eq!(post(gzip(lines), "gzip").await.unwrap().status(), 200);
    let (_, summary) = sim.call("GET", "/_sim/reports/summary?type=v4-metrics", None, json!({})).await;
    assert_eq!((&summary["documents"], &summary["unique_ids"]), (&json!(4), &json!(2)), "{summary}");
    let (_, summary) = sim.call("GET", "/_sim/reports/summary", None, json!({})).await;
    assert_eq!((&summary["documents"], &summary["unique_ids"]), (&json!(6), &json!(2)), "{summary}");
    // Clearing drops the stored documents; the summary's received count stays.
    sim.call("DELETE", "/_sim/reports", None, json!({})).await;
    let (_, summary) = sim.call("GET", "/_sim/reports/summary", None, json!({})).await;
    let fields = ["requests", "documentsReceived", "documentsStored", "rejected", "unique_ids"].map(|f| &summary[f]);
    assert_eq!(fields, [&json!(5), &json!(6), &json!(0), &json!(3), &json!(0)], "{summary}");
}

#[tokio::test]
async fn faults_hit_cloud_gate_calls_only() {
    let sim = Running::start(false).await;
    let token = sim.token(json!({})).await;
    let (status, _) =
        sim.call("POST", "/_sim/faults", None, json!({"target": "sync", "status": 503, "count": 1})).await;
    assert_eq!(status, 200);
    let (status, answer) = sim.search(&token, "group=API_ID", json!({})).await;
    assert_eq!(status, 503);
    assert_eq!(answer["http_status_code"], 503);
    let (status, _) = sim.search(&token, "group=API_ID", json!({})).await;
    assert_eq!(status, 200, "the fault was used up");

    let (status, _) = sim.call("POST", "/_sim/faults", None, json!({"target": "all", "drop": true})).await;
    assert_eq!(status, 200, "control calls are never faulted");
    let dropped = sim
        .client
        .post(format!("{}/sync/_bridge/eventsLatest/_search?group=API_ID", sim.url))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await;
    assert!(dropped.is_err(), "the connection is dropped without an answer");
    let (status, _) = sim.call("DELETE", "/_sim/faults", None, json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = sim.search(&token, "group=API_ID", json!({})).await;
    assert_eq!(status, 200);
    let (_, stats) = sim.call("GET", "/_sim/stats", None, json!({})).await;
    assert_eq!(stats["faulted"], 2);
    let (status, _) = sim.call("POST", "/_sim/faults", None, json!({"target": "sync"})).await;
    assert_eq!(status, 400, "a fault must do something");
}
