//! Gravitee's assign-content (FreeMarker) and body EL (`#request.content`, `#response.content`), end
//! to end: bodies replaced in both phases with their lengths, Gravitee's 500 when a template fails
//! (v4 and the V3 engine's message), templates hgw cannot run rejected at deploy.

use hgw_tests::gateway::cloud_gateway;
use hgw_tests::{Backend, CloudGateSim, step, v2_api, v4_api};
use serde_json::{Value, json};

fn flow(request: Value, response: Value) -> Value {
    json!([{"name": "all", "enabled": true, "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": request, "response": response}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_content_and_body_el() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    // The request body becomes a SOAP-like envelope built from the JSON the client sent; the
    // response body is rebuilt from the echo's JSON; a header carries the request body as sent.
    let mut api = v4_api("assign", "/assign", &backend.url());
    api["flows"] = flow(
        json!([
            step(
                "policy-assign-content",
                json!({"scope": "REQUEST",
                "body": "<#assign b = request.content?eval><quote symbol=\"${b.symbol}\" by=\"${request.headers['x-user'][0]!'anonymous'}\"/>"})
            ),
            step("transform-headers", json!({"addHeaders": [{"name": "X-Sent", "value": "{#request.content}"}]}))
        ]),
        json!([step(
            "policy-assign-content",
            json!({"scope": "RESPONSE",
            "body": "<#assign r = response.content?eval>{\"method\":\"${r.method}\",\"received\":${r.body_len?c},\"status\":${response.status?c},\"sent\":\"${r.headers['x-sent']?json_string}\"}"})
        )]),
    );
    // A template reading a header the request does not have fails as Gravitee's does.
    let mut strict = v4_api("strict", "/strict", &backend.url());
    strict["flows"] = flow(
        json!([step("policy-assign-content", json!({"body": "from ${request.headers['requestHeader'][0]}"}))]),
        json!([]),
    );
    let mut legacy = v2_api("legacy-assign", "/legacy-assign", &backend.url());
    legacy["flows"] = json!([{"name": "all", "path-operator": {"path": "/", "operator": "STARTS_WITH"}, "methods": [],
        "enabled": true, "post": [],
        "pre": [step("policy-assign-content", json!({"scope": "REQUEST", "body": "from ${request.headers['requestHeader'][0]}"}))]}]);
    let mut unsupported = v4_api("unsupported", "/unsupported", &backend.url());
    unsupported["flows"] =
        flow(json!([step("policy-assign-content", json!({"body": "<#include \"other.ftl\">"}))]), json!([]));
    for a in [api, strict, legacy, unsupported] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let sent = r#"<quote symbol="EUR" by="ada"/>"#;
    let reply =
        client.post(dp.url("/assign/x")).header("x-user", "ada").body(r#"{"symbol": "EUR"}"#).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let length: usize = reply.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body, json!({"method": "POST", "received": sent.len(), "status": 200, "sent": sent}));
    assert_eq!(length, body.to_string().len(), "the rebuilt response has its own length");

    // A GET has no body: the template sees empty content, which is not JSON.
    let reply = client.get(dp.url("/assign/x")).send().await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"message": "Unable to assign body content", "http_status_code": 500})
    );

    let reply = client.get(dp.url("/strict/x")).send().await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"message": "Unable to assign body content", "http_status_code": 500})
    );
    let reply = client.post(dp.url("/strict/x")).header("requestHeader", "hi").body("ignored").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json::<Value>().await.unwrap()["body_len"], json!("from hi".len()));

    // The V3 engine's message carries the cause.
    let reply = client.get(dp.url("/legacy-assign/x")).send().await.unwrap();
    assert_eq!(reply.status(), 500);
    let message = reply.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("Unable to assign body content: The following has evaluated to null or missing"),
        "{message}"
    );

    let (_, apis) = agent.node_get("/_node/apis").await;
    let reason = apis["rejected"].as_array().unwrap().iter().find(|r| r["id"] == "unsupported").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("configuration.body") && reason.contains("`<#include>` is not supported"), "{reason}");
}

/// json-to-json (JOLT shift/default/remove) with an EL specification reading `#api.properties`, on
/// JSON bodies in both phases; Gravitee's 500 JSON_INVALID_SPECIFICATION for a body that is not JSON
/// (a response failure keeps the endpoint's headers); a JOLT operation hgw lacks rejects the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_to_json_and_api_properties() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("jolt", "/jolt", &backend.url());
    api["properties"] = json!([{"key": "env", "value": "prod"}, {"key": "secret", "value": "xyz", "encrypted": true}]);
    api["flows"] = flow(
        json!([
            step(
                "json-to-json",
                json!({"specification":
            "[{\"operation\":\"shift\",\"spec\":{\"user\":{\"name\":\"customer.name\"},\"*\":\"extra.&\"}},\
              {\"operation\":\"default\",\"spec\":{\"env\":\"{#api.properties['env']}\",\"hidden\":\"{#api.properties['secret']}\"}},\
              {\"operation\":\"remove\",\"spec\":{\"extra\":{\"drop\":\"\"}}}]"})
            ),
            step("transform-headers", json!({"addHeaders": [{"name": "X-Sent", "value": "{#request.content}"}]}))
        ]),
        json!([step(
            "json-to-json",
            json!({"specification":
            "[{\"operation\":\"shift\",\"spec\":{\"method\":\"verb\",\"body_len\":\"size\",\"headers\":{\"x-sent\":\"sent\"}}}]"})
        )]),
    );
    let mut unsupported = v4_api("jolt-sort", "/jolt-sort", &backend.url());
    unsupported["flows"] =
        flow(json!([step("json-to-json", json!({"specification": "[{\"operation\":\"sort\"}]"}))]), json!([]));
    for a in [api, unsupported] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let reply = client
        .post(dp.url("/jolt/x"))
        .header("content-type", "application/json")
        .body(r#"{"user": {"name": "Ada"}, "keep": 1, "drop": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "application/json");
    let body: Value = reply.json().await.unwrap();
    let sent: Value = serde_json::from_str(body["sent"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"customer": {"name": "Ada"}, "extra": {"keep": 1}, "env": "prod", "hidden": ""}));
    assert_eq!(body["verb"], "POST");
    assert_eq!(body["size"], json!(body["sent"].as_str().unwrap().len()), "sent with its own length");

    // Not JSON: the request body passes untouched (v4 engines transform JSON bodies only).
    let reply = client.post(dp.url("/jolt/x")).header("content-type", "text/plain").body("plain").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json::<Value>().await.unwrap()["sent"], "plain");

    // A JSON Content-Type with a body that is not JSON: Gravitee's 500.
    let reply =
        client.post(dp.url("/jolt/x")).header("content-type", "application/json").body("{oops").send().await.unwrap();
    assert_eq!(reply.status(), 500);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"message": "Unable to apply JOLT transformation to payload", "http_status_code": 500})
    );

    let (_, apis) = agent.node_get("/_node/apis").await;
    let reason = apis["rejected"].as_array().unwrap().iter().find(|r| r["id"] == "jolt-sort").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("JOLT operation `sort` is not supported by hgw"), "{reason}");
}
