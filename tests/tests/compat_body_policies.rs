//! Gravitee compatibility: transform-queryparams, json-validation, resource-filtering, xml-json and
//! json-xml, end to end through a real agent and dataplane to the echo backend, on v4 and v2 APIs
//! (Gravitee's answers for its own test definitions are compared in tests/compat).

use hgw_tests::gateway::{cloud_gateway, get};
use hgw_tests::{Backend, CloudGateSim, v2_api, v4_api};
use serde_json::{Value, json};

fn step(policy: &str, configuration: Value) -> Value {
    json!({"name": policy, "policy": policy, "enabled": true, "configuration": configuration})
}

fn flow(path: &str, request: Value, response: Value) -> Value {
    json!({"name": path, "enabled": true, "selectors": [{"type": "http", "path": path, "pathOperator": "STARTS_WITH"}],
           "request": request, "response": response})
}

/// A v2 flow (`pre`/`post`).
fn v2_flow(path: &str, pre: Value, post: Value) -> Value {
    json!({"name": path, "enabled": true, "path-operator": {"path": path, "operator": "STARTS_WITH"},
           "methods": [], "pre": pre, "post": post})
}

/// The reason `/_node/apis` gives for a rejected API.
async fn rejection(agent: &hgw_tests::gateway::Agent, id: &str) -> String {
    let (_, apis) = agent.node_get("/_node/apis").await;
    apis["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("{id} is not rejected: {apis}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_queryparams_adds_replaces_and_removes_in_gravitee_order() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("tqp", "/tqp", &backend.url());
    api["flows"] = json!([
        flow(
            "/edit",
            json!([step(
                "transform-queryparams",
                json!({
                "addQueryParameters": [
                    {"name": "a", "value": "new"},
                    {"name": "b", "value": "two", "appendToExistingArray": true},
                    {"name": "from header", "value": "{#request.headers['X-Val'][0]}"},
                    {"name": "missing", "value": "{#request.headers['X-None'][0]}"},
                    {"name": "gone", "value": "added then removed"}],
                "removeQueryParameters": ["drop", "gone"]})
            )]),
            json!([])
        ),
        flow(
            "/clear",
            json!([step(
                "transform-queryparams",
                json!({
                "clearAll": true,
                "addQueryParameters": [{"name": "only", "value": "1"}],
                "removeQueryParameters": ["only"]})
            )]),
            json!([])
        ),
    ]);
    let mut v2 = v2_api("tqp-v2", "/tqp-v2", &backend.url());
    v2["flows"] = json!([v2_flow(
        "/",
        json!([step(
            "transform-queryparams",
            json!({"clearAll": true, "addQueryParameters": [{"name": "v", "value": "2"}]})
        )]),
        json!([])
    )]);
    let mut bad = v4_api("tqp-bad", "/tqp-bad", &backend.url());
    bad["flows"] = json!([flow(
        "/",
        json!([step(
            "transform-queryparams",
            json!({"addQueryParameters": [{"name": "x", "value": "{#request.nope(}"}]})
        )]),
        json!([])
    )]);
    for a in [api, v2, bad] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    // Replaced, appended, added (spaces as %20, a null EL value adds nothing), then removed; the
    // other parameters stay as the client encoded them, grouped by name.
    let edited =
        client.get(dp.url("/tqp/edit?a=1&drop=x&b=one&q=%2F+x&a=2&flag")).header("X-Val", "v w").send().await.unwrap();
    assert_eq!(edited.status(), 200);
    let echo: Value = edited.json().await.unwrap();
    assert_eq!(echo["query"], "a=new&b=one&b=two&q=%2F+x&flag&from%20header=v%20w", "{echo}");

    // clearAll: every parameter goes, additions come back, removals are ignored.
    let cleared = get(&client, &dp.url("/tqp/clear?x=1&only=0")).await.unwrap();
    assert_eq!(cleared.json()["query"], "only=1");
    let v2 = get(&client, &dp.url("/tqp-v2/p?x=1")).await.unwrap();
    assert_eq!((v2.status, v2.json()["query"].as_str()), (200, Some("v=2")));

    let reason = rejection(&agent, "tqp-bad").await;
    assert!(reason.contains("addQueryParameters[0].value"), "{reason}");
}
