//! Gravitee compatibility: transform-queryparams, json-validation, resource-filtering, xml-json and
//! json-xml, end to end through a real agent and dataplane to the echo backend, on v4 and v2 APIs
//! (Gravitee's answers for its own test definitions are compared in tests/compat).

use hgw_tests::gateway::{cloud_gateway, get};
use hgw_tests::{Backend, CloudGateSim, flow, step, v2_api, v2_flow, v4_api};
use serde_json::{Value, json};

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

    let reason = agent.rejection("tqp-bad").await;
    assert!(reason.contains("addQueryParameters[0].value"), "{reason}");
}

const SCHEMA: &str = r#"{"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_validation_answers_gravitee_keys_statuses_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("jv", "/jv", &backend.url());
    api["flows"] = json!([
        flow("/req", json!([step("json-validation", json!({"schema": SCHEMA}))]), json!([])),
        flow(
            "/custom",
            json!([step(
                "json-validation",
                json!({"schema": SCHEMA, "errorMessage": "{\"error\":\"bad {#request.headers['X-Who'][0]}\"}"})
            )]),
            json!([])
        ),
        // v4 ignores `scope`: the step runs in the phase it is in.
        flow(
            "/resp",
            json!([]),
            json!([step("json-validation", json!({"scope": "REQUEST_CONTENT", "schema": SCHEMA}))])
        ),
        flow(
            "/straight",
            json!([]),
            json!([step("json-validation", json!({"schema": SCHEMA, "straightRespondMode": true}))])
        ),
        flow("/no-schema", json!([step("json-validation", json!({}))]), json!([])),
    ]);
    let mut v2 = v2_api("jv-v2", "/jv-v2", &backend.url());
    v2["flows"] = json!([
        v2_flow("/req", json!([step("json-validation", json!({"schema": SCHEMA}))]), json!([])),
        // On the V3 engine a response step needs scope RESPONSE_CONTENT; left out, it does nothing.
        v2_flow(
            "/resp",
            json!([]),
            json!([step("json-validation", json!({"scope": "RESPONSE_CONTENT", "schema": SCHEMA}))])
        ),
        v2_flow("/skipped", json!([]), json!([step("json-validation", json!({"schema": SCHEMA}))])),
    ]);
    let mut bad = v4_api("jv-bad", "/jv-bad", &backend.url());
    bad["flows"] =
        json!([flow("/", json!([step("json-validation", json!({"schema": "{\"type\": \"nope\"}"}))]), json!([]))]);
    for a in [api, v2, bad] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        client.post(dp.url(path)).header("Content-Type", "application/json").header("X-Who", "me").body(body).send()
    };
    async fn answer(response: reqwest::Response) -> (u16, String, String) {
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, content_type, response.text().await.unwrap())
    }

    // Requests (v4): valid passes, no body passes, schema refusal and malformed JSON are 400s whose
    // body is the message itself.
    assert_eq!(post("/jv/req", r#"{"name": "a"}"#).await.unwrap().status(), 200);
    assert_eq!(get(&client, &dp.url("/jv/req")).await.unwrap().status, 200);
    let refused = answer(post("/jv/req", r#"{"name": 1}"#).await.unwrap()).await;
    assert_eq!(refused, (400, "application/json".into(), "Bad Request".into()));
    let malformed = answer(post("/jv/req", r#"{"name": "#).await.unwrap()).await;
    assert_eq!(malformed, (400, "application/json".into(), "Bad Request".into()));
    let custom = answer(post("/jv/custom", "[]").await.unwrap()).await;
    assert_eq!(custom, (400, "application/json".into(), r#"{"error":"bad me"}"#.into()));

    // Responses: the echoed body is validated; 500 `Internal Error`, the endpoint's headers stay.
    let ok = answer(post("/jv/resp?echo_body", r#"{"name": "a"}"#).await.unwrap()).await;
    assert_eq!(ok, (200, "application/json".into(), r#"{"name": "a"}"#.into()));
    let failed = answer(post("/jv/resp?echo_body", r#"{"other": 1}"#).await.unwrap()).await;
    assert_eq!(failed, (500, "application/json".into(), "Internal Error".into()));
    let passed = answer(post("/jv/straight?echo_body", r#"{"other": 1}"#).await.unwrap()).await;
    assert_eq!(passed.0, 200, "straight respond mode lets a refused response through");
    assert_eq!(answer(post("/jv/straight?echo_body", "{").await.unwrap()).await.0, 500, "but not malformed JSON");
    assert_eq!(post("/jv/no-schema", "not json").await.unwrap().status(), 200, "no schema: nothing validated");

    // The V3 engine: Gravitee's JSON error, an empty body is malformed JSON.
    let v3 = get(&client, &dp.url("/jv-v2/req")).await.unwrap();
    assert_eq!((v3.status, v3.json()), (400, json!({"message": "Bad Request", "http_status_code": 400})));
    assert_eq!(post("/jv-v2/req", r#"{"name": "a"}"#).await.unwrap().status(), 200);
    let v3 = answer(post("/jv-v2/resp?echo_body", "{}").await.unwrap()).await;
    assert_eq!(
        (v3.0, serde_json::from_str::<Value>(&v3.2).unwrap()["message"].as_str()),
        (500, Some("Internal Error"))
    );
    assert_eq!(post("/jv-v2/skipped?echo_body", "{}").await.unwrap().status(), 200);

    let reason = agent.rejection("jv-bad").await;
    assert!(reason.contains("flows[0].request[0].configuration.schema") && reason.contains("draft 4"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_filtering_whitelist_blacklist_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let configuration = json!({
        "whitelist": [{"pattern": "/api/**", "methods": ["GET", "DELETE"]}, {"pattern": "**/public/*"}],
        "blacklist": [{"pattern": "/api/admin/**", "methods": ["DELETE"]}, {"pattern": "/api/secret"}]});
    let mut api = v4_api("rf", "/rf", &backend.url());
    api["flows"] = json!([flow("/", json!([step("resource-filtering", configuration.clone())]), json!([]))]);
    let mut v2 = v2_api("rf-v2", "/rf-v2", &backend.url());
    v2["flows"] = json!([v2_flow("/", json!([step("resource-filtering", configuration)]), json!([]))]);
    let mut bad = v4_api("rf-bad", "/rf-bad", &backend.url());
    bad["flows"] = json!([flow(
        "/",
        json!([step("resource-filtering", json!({"whitelist": [{"methods": ["FETCH"]}]}))]),
        json!([])
    )]);
    for a in [api, v2, bad] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let forbidden = json!({"message": "You're not allowed to access this resource", "http_status_code": 403});
    let not_allowed = json!({"message": "Method not allowed while accessing this resource", "http_status_code": 405});

    for base in ["/rf", "/rf-v2"] {
        let call =
            |method: reqwest::Method, path: &str| client.request(method, dp.url(&format!("{base}{path}"))).send();
        let answer = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
        };
        // Whitelisted path and method (a pattern matches the path with or without the context path).
        let ok = answer(call(reqwest::Method::GET, "/api/orders").await.unwrap()).await;
        assert_eq!((ok.0, ok.1["path"].as_str()), (200, Some("/api/orders")), "{base}");
        assert_eq!(call(reqwest::Method::GET, "/x/public/file").await.unwrap().status(), 200, "{base}");
        // Whitelisted path, other method: 405; path not whitelisted: 403.
        assert_eq!(answer(call(reqwest::Method::POST, "/api/orders").await.unwrap()).await, (405, not_allowed.clone()));
        assert_eq!(answer(call(reqwest::Method::GET, "/other").await.unwrap()).await, (403, forbidden.clone()));
        assert_eq!(
            answer(call(reqwest::Method::GET, "/x/public/a/b").await.unwrap()).await.0,
            403,
            "`*` is one segment"
        );
        // Blacklisted: with the method named 405, without methods 403; other methods pass.
        assert_eq!(
            answer(call(reqwest::Method::DELETE, "/api/admin/x").await.unwrap()).await,
            (405, not_allowed.clone())
        );
        assert_eq!(call(reqwest::Method::GET, "/api/admin/x").await.unwrap().status(), 200);
        assert_eq!(answer(call(reqwest::Method::GET, "/api/secret").await.unwrap()).await, (403, forbidden.clone()));
    }
    let reason = agent.rejection("rf-bad").await;
    assert!(reason.contains("whitelist[0].methods[0]"), "{reason}");
}
