//! Gravitee compatibility: latency, override-http-method, status-code, http-redirect, key-less as a
//! flow step, `flowExecution.matchRequired`, listeners bound to other servers and `#request.contextPath`,
//! each end to end with real requests through a dataplane (Gravitee's answers are in tests/compat).

use std::time::{Duration, Instant};

use hgw_tests::gateway::{cloud_gateway, get};
use hgw_tests::{Backend, CloudGateSim, v2_api, v4_api};
use serde_json::json;

fn step(policy: &str, configuration: serde_json::Value) -> serde_json::Value {
    json!({"name": policy, "policy": policy, "enabled": true, "configuration": configuration})
}

fn flow(path: &str, request: serde_json::Value, response: serde_json::Value) -> serde_json::Value {
    json!({"name": path, "enabled": true, "selectors": [{"type": "http", "path": path, "pathOperator": "STARTS_WITH"}],
           "request": request, "response": response})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_method_status_and_redirect_policies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("more", "/more", &backend.url());
    api["flows"] = json!([
        flow(
            "/slow",
            json!([step("latency", json!({"time": 600, "timeUnit": "MILLISECONDS"}))]),
            json!([step("latency", json!({"time": 5, "timeUnit": "SECONDS"}))])
        ),
        flow(
            "/as-get",
            json!([step("policy-override-request-method", json!({"method": "GET"})), step("key-less", json!({}))]),
            json!([])
        ),
        flow(
            "/status",
            json!([]),
            json!([step(
                "status-code",
                json!({"statusMappings": [
            {"inputStatusCode": 200, "outputStatusCode": 201}, {"inputStatusCode": 200, "outputStatusCode": 203}]})
            )])
        ),
        flow(
            "/",
            json!([step(
                "http-redirect",
                json!({"rules": [
            {"path": "/old/(?<id>[0-9]+)/(.*)", "location": "https://new.example//items/{#groupName['id']}/{#group[1]}?from={#request.contextPath}", "status": 301},
            {"path": "/moved", "location": "/elsewhere/./x", "status": 302}]})
            )]),
            json!([])
        ),
    ]);
    let mut broken = v4_api("broken-latency", "/broken", &backend.url());
    broken["flows"] = json!([flow("/", json!([step("latency", json!({}))]), json!([]))]);
    let mut bad_unit = v4_api("bad-unit", "/bad-unit", &backend.url());
    bad_unit["flows"] =
        json!([flow("/", json!([step("latency", json!({"time": 1, "timeUnit": "FORTNIGHTS"}))]), json!([]))]);
    let mut group_elsewhere = v4_api("group-elsewhere", "/group-elsewhere", &backend.url());
    group_elsewhere["flows"] = json!([flow(
        "/",
        json!([step("transform-headers", json!({"addHeaders": [{"name": "X-G", "value": "{#group[0]}"}]}))]),
        json!([])
    )]);
    for a in [api, broken, bad_unit, group_elsewhere] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    // latency: the request waits (the response-phase step does nothing, as in Gravitee).
    let started = Instant::now();
    let slow = get(&client, &dp.url("/more/slow")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(slow.status, 200);
    assert!(took >= Duration::from_millis(600), "the request waited the configured 600 ms, took {took:?}");

    // policy-override-request-method: the backend sees GET for a POST; key-less as a step is a no-op.
    let posted = client.post(dp.url("/more/as-get")).body("x").send().await.unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.json::<serde_json::Value>().await.unwrap()["method"], "GET");

    // status-code: the last mapping for 200 wins.
    assert_eq!(get(&client, &dp.url("/more/status")).await.unwrap().status, 203);

    // http-redirect: groups and named groups in the location, Java URI normalisation, empty body.
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let moved = no_follow.get(dp.url("/more/old/42/a/b")).send().await.unwrap();
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()["location"], "https://new.example/items/42/a/b?from=/more/");
    assert!(moved.text().await.unwrap().is_empty());
    let moved = no_follow.get(dp.url("/more/moved")).send().await.unwrap();
    assert_eq!((moved.status().as_u16(), moved.headers()["location"].to_str().unwrap()), (302, "/elsewhere/x"));
    // No rule matches: the request goes on to the backend.
    let through = get(&client, &dp.url("/more/old/x")).await.unwrap();
    assert_eq!((through.status, through.json()["path"].as_str()), (200, Some("/old/x")));

    // A latency step without a time unit deploys (as in Gravitee) and fails each request with a 500.
    let broken = get(&client, &dp.url("/broken/")).await.unwrap();
    assert_eq!(broken.status, 500);
    assert_eq!(broken.json(), json!({"message": "Internal Server Error", "http_status_code": 500}));

    // Refused with the field named: an unknown time unit, #group where no regular expression matched.
    let (_, apis) = agent.node_get("/_node/apis").await;
    let reason =
        |id: &str| apis["rejected"].as_array().unwrap().iter().find(|r| r["id"] == id).map(|r| r["reason"].to_string());
    assert!(reason("bad-unit").unwrap().contains("timeUnit"), "{apis}");
    assert!(reason("group-elsewhere").unwrap().contains("#group"), "{apis}");
    // The compatibility summary groups rejections by the feature they name.
    let summary = &apis["compatibility"];
    assert_eq!((summary["deployed"].as_u64(), summary["rejected"].as_u64()), (Some(2), Some(2)), "{summary}");
    let features: Vec<&str> =
        summary["rejectedBy"].as_array().unwrap().iter().filter_map(|f| f["feature"].as_str()).collect();
    assert!(features.contains(&"flows.request.configuration.timeUnit"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_required_other_servers_and_context_path() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    // matchRequired: a request no flow applies to gets Gravitee's bare 404; flows still run otherwise,
    // and their conditions may read the matched context path (with its trailing slash).
    let mut strict = v4_api("strict", "/strict/v1", &backend.url());
    strict["flowExecution"] = json!({"mode": "DEFAULT", "matchRequired": true});
    strict["flows"] = json!([{"name": "only", "enabled": true, "selectors": [
        {"type": "http", "path": "/known", "pathOperator": "STARTS_WITH"},
        {"type": "condition", "condition": "{#request.contextPath == '/strict/v1/'}"}],
        "request": [step("transform-headers", json!({"addHeaders": [{"name": "X-Ctx", "value": "{#request.contextPath}"}]}))],
        "response": []}]);
    // Listeners bound to another server of a multi-server Gravitee gateway are not served here; v2 too.
    let mut second = v4_api("second", "/second", &backend.url());
    second["listeners"][0]["servers"] = json!(["second"]);
    let mut both = v4_api("both", "/both", &backend.url());
    both["listeners"][0]["servers"] = json!(["second", "http"]);
    let mut v2_second = v2_api("v2-second", "/v2-second", &backend.url());
    v2_second["proxy"]["servers"] = json!(["second"]);
    for a in [strict, second, both, v2_second] {
        sim.put_api(a).await;
    }
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let known = get(&client, &dp.url("/strict/v1/known/x")).await.unwrap();
    assert_eq!(known.status, 200);
    assert_eq!(known.json()["headers"]["x-ctx"], "/strict/v1/");
    let unknown = get(&client, &dp.url("/strict/v1/other")).await.unwrap();
    assert_eq!((unknown.status, unknown.body.as_str()), (404, ""));
    assert!(unknown.header("x-gravitee-transaction-id").is_some(), "an API's answer carries its ids");

    assert_eq!(get(&client, &dp.url("/second/")).await.unwrap().status, 404);
    assert_eq!(get(&client, &dp.url("/v2-second/")).await.unwrap().status, 404);
    assert_eq!(get(&client, &dp.url("/both/")).await.unwrap().status, 200);
    let (_, apis) = agent.node_get("/_node/apis").await;
    let skipped = apis["skipped"].to_string();
    assert!(skipped.contains("second") && skipped.contains("servers"), "{apis}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_routing_to_endpoints_groups_and_urls() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let a = Backend::start("A").await;
    let b = Backend::start("B").await;
    let c = Backend::start("C").await;

    let mut api = v4_api("routed", "/routed", &format!("{}/base", a.url()));
    api["endpointGroups"].as_array_mut().unwrap().push(json!({
        "name": "second-group", "type": "http-proxy",
        "endpoints": [{"name": "second-endpoint", "type": "http-proxy", "weight": 1, "inheritConfiguration": false,
                       "configuration": {"target": format!("{}/second", b.url())}}]}));
    api["flows"] = json!([flow(
        "/",
        json!([step(
            "dynamic-routing",
            json!({"rules": [
        {"pattern": "/group/(.*)", "url": "{#endpoints['second-group']}/{#group[0]}"},
        {"pattern": "/endpoint/(?<rest>.*)", "url": "{#endpoints['second-endpoint']}/{#groupName['rest']}?from=rule"},
        {"pattern": "/url/(.*)", "url": format!("{}/direct/{{#group[0]}}", c.url())},
        {"pattern": "/path/(.*)", "url": "/relative/{#group[0]}"},
        {"pattern": "/nowhere", "url": "{#endpoints['missing']}/x"},
        {"pattern": "/default/.*", "url": "{#endpoints['default']}/fixed"}]})
        )]),
        json!([])
    )]);
    sim.put_api(api).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let call = |path: &'static str| {
        let client = client.clone();
        let url = dp.url(path);
        async move { get(&client, &url).await.unwrap() }
    };

    let group = call("/routed/group/x/y?q=1").await;
    assert_eq!((group.status, group.json()["backend"].as_str()), (200, Some("B")));
    assert_eq!((group.json()["path"].as_str(), group.json()["query"].as_str()), (Some("/second/x/y"), Some("q=1")));
    let endpoint = call("/routed/endpoint/z?q=2").await;
    assert_eq!(endpoint.json()["backend"], "B");
    assert_eq!(
        (endpoint.json()["path"].as_str(), endpoint.json()["query"].as_str()),
        (Some("/second/z"), Some("q=2&from=rule"))
    );
    let direct = call("/routed/url/abs").await;
    assert_eq!((direct.json()["backend"].as_str(), direct.json()["path"].as_str()), (Some("C"), Some("/direct/abs")));
    let relative = call("/routed/path/p").await;
    assert_eq!(
        (relative.json()["backend"].as_str(), relative.json()["path"].as_str()),
        (Some("A"), Some("/base/relative/p"))
    );
    let by_default = call("/routed/default/anything").await;
    assert_eq!(
        (by_default.json()["backend"].as_str(), by_default.json()["path"].as_str()),
        (Some("A"), Some("/base/fixed"))
    );

    // A name the API does not have: Gravitee's 503 NO_ENDPOINT_FOUND; no rule matching: 400.
    assert_eq!(call("/routed/nowhere").await.status, 503);
    let unmatched = call("/routed/other").await;
    assert_eq!(unmatched.status, 400);
    assert_eq!(unmatched.json(), json!({"message": "No routing rule is matching path", "http_status_code": 400}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_header_el_subscription_el_and_v4_scope() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    // Mock headers take EL: set when it renders, left out when null, failing or unparsable (as
    // Gravitee's mock); content EL that does not parse deploys and answers Gravitee's 500.
    let mut mocked = v4_api("mocked", "/mocked", &backend.url());
    mocked["flows"] = json!([flow(
        "/",
        json!([step(
            "mock",
            json!({"status": 202, "content": "ok", "headers": [
        {"name": "X-Path", "value": "{#request.pathInfo}"},
        {"name": "X-Null", "value": "{#request.headers['absent']}"},
        {"name": "X-Fails", "value": "{#request.headers['absent'][0]}"},
        {"name": "X-Broken", "value": "{#request.invalid..syntax}"},
        {"name": "X-Plain", "value": "plain"}]})
        )]),
        json!([])
    )]);
    let mut broken = v4_api("broken-mock", "/broken-mock", &backend.url());
    broken["flows"] =
        json!([flow("/", json!([step("mock", json!({"content": "{#request.invalid..syntax}"}))]), json!([]))]);
    // #subscription in a response step whose (v2-era) scope says REQUEST: a v4 definition runs it anyway,
    // as Gravitee does; a null value adds no header.
    let mut subscribed = v4_api("subscribed", "/subscribed", &backend.url());
    subscribed["flows"] = json!([flow(
        "/",
        json!([]),
        json!([step(
            "transform-headers",
            json!({"scope": "REQUEST",
        "addHeaders": [{"name": "X-Sub", "value": "{#subscription.id}"},
                       {"name": "X-Client", "value": "{#subscription.clientId}"},
                       {"name": "X-App", "value": "{#subscription.applicationName}"}]})
        )])
    )]);
    for a in [mocked, broken, subscribed] {
        sim.put_api(a).await;
    }
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let mocked = get(&client, &dp.url("/mocked/a/b")).await.unwrap();
    assert_eq!((mocked.status, mocked.body.as_str()), (202, "ok"));
    assert_eq!(mocked.header("x-path"), Some("/a/b"));
    assert_eq!(mocked.header("x-plain"), Some("plain"));
    for absent in ["x-null", "x-fails", "x-broken"] {
        assert!(mocked.header(absent).is_none(), "{absent} is left out");
    }
    let broken = get(&client, &dp.url("/broken-mock/")).await.unwrap();
    assert_eq!(broken.status, 500);
    assert!(broken.body.starts_with("The template evaluation returns an error. Expression:\n"), "{}", broken.body);

    let subscribed = get(&client, &dp.url("/subscribed/")).await.unwrap();
    assert_eq!(subscribed.status, 200);
    assert_eq!(subscribed.header("x-sub"), Some("127.0.0.1"), "key-less: the subscription is the client address");
    assert!(subscribed.header("x-client").is_none() && subscribed.header("x-app").is_none());
}

/// Gravitee's api-key policy as a flow step: a valid key of the API is required whatever the plan
/// (401 API_KEY_MISSING / API_KEY_INVALID, "Unauthorized"), read from the step's own header when it
/// names one, and removed before the endpoint unless `propagateApiKey`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_policy_as_a_flow_step() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    // Key-less plan first, API-key plan second: the step still wants a key of the API.
    let mut keyed = v4_api("step-keyed", "/step-keyed", &backend.url());
    keyed["plans"] = json!([
        {"id": "free", "name": "Free", "security": {"type": "KEY_LESS"}, "status": "PUBLISHED"},
        {"id": "gold", "name": "Gold", "security": {"type": "API_KEY"}, "status": "PUBLISHED"}]);
    keyed["flows"] = json!([flow("/", json!([step("api-key", json!({"apiKeyHeader": "X-Step-Key"}))]), json!([]))]);
    sim.put_api(keyed).await;
    sim.put_subscription(json!({"id": "sub-1", "api": "step-keyed", "plan": "gold", "application": "app-1",
        "status": "ACCEPTED", "updatedAt": hgw_tests::gateway::now_ms()}))
        .await;
    for (id, key, revoked) in [("key-1", "good-key", false), ("key-2", "revoked-key", true)] {
        sim.put_key(json!({"id": id, "key": key, "subscriptions": ["sub-1"], "subscription": "sub-1",
            "api": "step-keyed", "plan": "gold", "application": "app-1", "revoked": revoked, "paused": false,
            "updatedAt": hgw_tests::gateway::now_ms()}))
            .await;
    }
    // Without any API-key plan, no key of the API exists (a v2 API on the V3 engine, whose failures
    // carry no ids).
    let mut keyless = v2_api("step-keyless", "/step-keyless", &backend.url());
    keyless["flows"] = json!([{"name": "f", "methods": [], "enabled": true, "path-operator": {"path": "/", "operator": "STARTS_WITH"},
        "pre": [step("api-key", json!({"propagateApiKey": true}))], "post": []}]);
    sim.put_api(keyless).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let unauthorized = json!({"message": "Unauthorized", "http_status_code": 401});
    // The error key is in the request's analytics record.
    let error_key = |reply: &hgw_tests::gateway::Reply| {
        let id = reply.header("x-gravitee-request-id").unwrap().to_owned();
        let sim = &sim;
        async move { hgw_tests::gateway::report_for(sim, &id).await["error-key"].clone() }
    };
    let missing = get(&client, &dp.url("/step-keyed/x")).await.unwrap();
    assert_eq!((missing.status, missing.json()), (401, unauthorized.clone()));
    assert_eq!(error_key(&missing).await, "API_KEY_MISSING");
    // The gateway's header is not the step's.
    let other_header =
        client.get(dp.url("/step-keyed/x")).header("X-Gravitee-Api-Key", "good-key").send().await.unwrap();
    assert_eq!(other_header.status(), 401);
    for bad in ["revoked-key", "unknown"] {
        let reply = client.get(dp.url("/step-keyed/x")).header("X-Step-Key", bad).send().await.unwrap();
        let reply = hgw_tests::gateway::Reply {
            status: reply.status().as_u16(),
            headers: reply.headers().clone(),
            body: reply.text().await.unwrap(),
        };
        assert_eq!((reply.status, reply.json()), (401, unauthorized.clone()), "{bad}");
        assert_eq!(error_key(&reply).await, "API_KEY_INVALID");
    }
    let reply = client.get(dp.url("/step-keyed/x")).header("X-Step-Key", "good-key").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let echo: serde_json::Value = reply.json().await.unwrap();
    assert!(echo["headers"].get("x-step-key").is_none(), "the key is removed: {echo}");

    let missing = get(&client, &dp.url("/step-keyless/x")).await.unwrap();
    assert_eq!((missing.status, missing.json()), (401, unauthorized.clone()));
    let invalid = get(&client, &dp.url("/step-keyless/x?api-key=good-key")).await.unwrap();
    assert_eq!((invalid.status, invalid.json()), (401, unauthorized));
}

/// Gravitee's retry policy: the endpoint call made again while the condition holds or it fails,
/// `maxRetries` more times, the body replayed; `lastResponse` relays the last answer, otherwise a
/// bare 502; each attempt bounded by `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let retried = |id: &str, configuration: serde_json::Value| {
        let mut api = v4_api(id, &format!("/{id}"), &backend.url());
        api["flows"] = json!([flow("/", json!([step("retry", configuration)]), json!([]))]);
        api
    };
    sim.put_api(retried("retry-502", json!({"condition": "{#response.status >= 500}", "maxRetries": 2}))).await;
    sim.put_api(retried(
        "retry-last",
        json!({"condition": "{#response.status >= 500}", "maxRetries": 2, "lastResponse": true, "delay": 50}),
    ))
    .await;
    sim.put_api(retried("retry-timeout", json!({"condition": "{false}", "maxRetries": 1, "timeout": 200}))).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    // A good answer is not retried; a body reaches the endpoint whole.
    let before = backend.requests();
    let reply = client.post(dp.url("/retry-502/x")).body("payload").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json::<serde_json::Value>().await.unwrap()["body_len"], 7);
    assert_eq!(backend.requests() - before, 1);

    // 503 every time: three attempts, then a bare 502.
    let before = backend.requests();
    let reply = client.post(dp.url("/retry-502/x?status=503")).body("payload").send().await.unwrap();
    assert_eq!(reply.status(), 502);
    assert_eq!(reply.text().await.unwrap(), "");
    assert_eq!(backend.requests() - before, 3, "one call and two retries");

    // lastResponse: the third answer is relayed as it is.
    let before = backend.requests();
    let reply = client.get(dp.url("/retry-last/x?status=503")).send().await.unwrap();
    assert_eq!(reply.status(), 503);
    assert_eq!(backend.requests() - before, 3);

    // Each attempt is bounded by the policy's timeout.
    let reply = get(&client, &dp.url("/retry-timeout/x?sleep_ms=1500")).await.unwrap();
    assert_eq!(reply.status, 502);
}
