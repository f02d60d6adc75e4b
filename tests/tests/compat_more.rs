//! Gravitee compatibility beyond policies: listener CORS (and, as they land, url-rewriting, response
//! templates and best-match flows), from Gravitee-format definitions served by the Cloud Gate emulator.

use hgw_tests::gateway::{cloud_gateway, report_for};
use hgw_tests::{Backend, CloudGateSim, v2_api, v4_api};
use serde_json::{Value, json};

fn header<'a>(reply: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    reply.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_skips_security_and_actual_responses_carry_headers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("cors", "/cors", &backend.url());
    api["listeners"][0]["cors"] = json!({"enabled": true,
        "allowOrigin": ["https://app.example.com", "https://.*\\.example\\.org"],
        "allowMethods": ["GET", "POST"], "allowHeaders": ["X-Token", "Content-Type"], "exposeHeaders": ["X-Total"],
        "maxAge": 600, "allowCredentials": true, "runPolicies": false});
    api["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    sim.put_api(api).await;
    let mut v2 = v2_api("legacy-cors", "/legacy", &backend.url());
    v2["proxy"]["cors"] = json!({"enabled": true, "allowOrigin": ["*"], "allowMethods": ["GET"], "allowHeaders": [],
        "exposeHeaders": [], "maxAge": -1, "allowCredentials": false});
    sim.put_api(v2).await;

    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let options = |path: &str, origin: &str, method: &str| {
        client
            .request(reqwest::Method::OPTIONS, dp.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
    };

    // A preflight needs no API key.
    let ok = options("/cors/items", "https://shop.example.org", "POST")
        .header("Access-Control-Request-Headers", "x-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some("https://shop.example.org"));
    assert_eq!(header(&ok, "access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(header(&ok, "access-control-allow-headers"), Some("x-token, content-type"));
    assert_eq!(header(&ok, "access-control-max-age"), Some("600"));
    assert_eq!(header(&ok, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&ok, "vary"), Some("Origin"));
    assert_eq!(backend.requests(), 0, "a preflight never reaches the endpoint");

    let refused = options("/cors/items", "https://evil.test", "GET").send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(header(&refused, "access-control-allow-origin").is_none());
    let refused_id = header(&refused, "x-gravitee-request-id").unwrap().to_owned();
    let doc = report_for(&sim, &refused_id).await;
    assert_eq!((&doc["status"], &doc["error-key"]), (&json!(400), &json!("CORS_PREFLIGHT_FAILED")));
    let bad_method = options("/cors/items", "https://app.example.com", "DELETE").send().await.unwrap();
    assert_eq!(bad_method.status(), 400);
    let bad_header = options("/cors/items", "https://app.example.com", "GET")
        .header("Access-Control-Request-Headers", "x-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_header.status(), 400);

    // Actual requests: the gateway's own 401 carries the CORS headers too, so the browser can read it.
    let unauthorized =
        client.get(dp.url("/cors/items")).header("Origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(header(&unauthorized, "access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(header(&unauthorized, "access-control-expose-headers"), Some("X-Total"));
    let other = client.get(dp.url("/cors/items")).header("Origin", "https://evil.test").send().await.unwrap();
    assert_eq!(other.status(), 401);
    assert!(header(&other, "access-control-allow-origin").is_none());

    // v2 `proxy.cors` with `*` and no credentials answers `*` and reaches the endpoint.
    let v2_ok = client.get(dp.url("/legacy/x")).header("Origin", "https://any.test").send().await.unwrap();
    assert_eq!(v2_ok.status(), 200);
    assert_eq!(header(&v2_ok, "access-control-allow-origin"), Some("*"));
    assert!(header(&v2_ok, "vary").is_none());
    assert!(header(&v2_ok, "access-control-allow-credentials").is_none());
    let v2_pre = options("/legacy/x", "https://any.test", "GET").send().await.unwrap();
    assert_eq!(v2_pre.status(), 200);
    assert!(header(&v2_pre, "access-control-max-age").is_none());
    // Without a preflight's headers, OPTIONS is an ordinary request proxied to the endpoint.
    let plain = client.request(reqwest::Method::OPTIONS, dp.url("/legacy/x")).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rewriting_rewrites_response_headers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let backend_url = backend.url();

    let mut api = v4_api("rewrite", "/rw", &backend_url);
    // The echo backend sets no Location: an earlier response step adds one pointing at the backend.
    api["flows"] = json!([{"name": "rewrite", "enabled": true,
        "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}], "request": [],
        "response": [
            {"name": "loc", "policy": "transform-headers", "enabled": true, "configuration": {
                "addHeaders": [{"name": "Location", "value": format!("{backend_url}/orders/42")}]}},
            {"name": "rw", "policy": "url-rewriting", "enabled": true, "configuration": {
                "rewriteResponseHeaders": true, "rewriteResponseBody": false,
                "fromRegex": format!("{}/(.*)", regex_escape(&backend_url)),
                "toReplacement": "https://{#request.headers['X-Forwarded-Host'][0]}/rw/{#group[0]}"}}]}]);
    sim.put_api(api).await;
    let mut v2 = v2_api("legacy-rw", "/legacy", &backend_url);
    v2["flows"] = json!([{"name": "all", "path-operator": {"path": "/", "operator": "STARTS_WITH"}, "methods": [], "enabled": true,
        "pre": [], "post": [{"name": "rw", "policy": "url-rewriting", "enabled": true, "configuration": {
            "rewriteResponseHeaders": true, "fromRegex": "application/(json)", "toReplacement": "text/{#group[0]}"}}]}]);
    sim.put_api(v2).await;
    // Body rewriting: the echo body names the backend; it is rewritten (the body is buffered for this).
    let mut body = v4_api("rewrite-body", "/rwb", &backend_url);
    body["flows"] = json!([{"name": "rw", "selectors": [{"type": "http", "path": "/"}], "request": [],
        "response": [{"policy": "url-rewriting", "configuration": {"rewriteResponseBody": true,
            "fromRegex": "\"backend\":\"B\"", "toReplacement": "\"backend\":\"rewritten\""}}]}]);
    sim.put_api(body).await;

    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let reply = client.get(dp.url("/rw/x")).header("X-Forwarded-Host", "api.example.com").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(header(&reply, "location"), Some("https://api.example.com/rw/orders/42"));
    assert_eq!(header(&reply, "content-type"), Some("application/json"), "non-matching headers stay");

    let v2_reply = client.get(dp.url("/legacy/x")).send().await.unwrap();
    assert_eq!(header(&v2_reply, "content-type"), Some("text/json"));

    let rewritten = client.get(dp.url("/rwb/x")).send().await.unwrap();
    assert_eq!(rewritten.status(), 200);
    let text = rewritten.text().await.unwrap();
    assert!(text.contains("\"backend\":\"rewritten\""), "{text}");
    assert!(!text.contains("\"backend\":\"B\""), "{text}");
}

fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_templates_replace_gateway_errors_by_key_and_accept() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;

    let mut api = v4_api("templated", "/tpl", &backend.url());
    api["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    api["listeners"][0]["cors"] = json!({"enabled": true, "allowOrigin": ["*"], "allowMethods": ["GET"]});
    api["responseTemplates"] = json!({
        "API_KEY_MISSING": {
            "application/json": {"status": 403, "headers": {"Content-Type": "application/json", "X-Why": "key"},
                "body": "{\"error\":\"an API key is required\"}", "propagateErrorKeyToLogs": true},
            "*/*": {"status": 403, "body": "an API key is required"}},
        "DEFAULT": {"*/*": {"status": 418, "body": "something went wrong"}}
    });
    sim.put_api(api).await;
    // Nothing listens on the endpoint: the 502 is answered by v2's DEFAULT template.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut v2 = v2_api("legacy-tpl", "/legacy", &dead);
    // On the emulation engine, whose failures carry the gateway's ids (the V3 engine's do not).
    v2["execution_mode"] = json!("v4-emulation-engine");
    v2["response_templates"] =
        json!({"DEFAULT": {"text/plain": {"status": 503, "headers": {"Retry-After": "5"}, "body": "try later"}}});
    sim.put_api(v2).await;

    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let json_reply = client
        .get(dp.url("/tpl/x"))
        .header("Accept", "application/json")
        .header("Origin", "https://a.test")
        .send()
        .await
        .unwrap();
    assert_eq!(json_reply.status(), 403);
    assert_eq!(header(&json_reply, "x-why"), Some("key"));
    assert_eq!(header(&json_reply, "content-type"), Some("application/json"));
    assert_eq!(header(&json_reply, "access-control-allow-origin"), Some("*"), "CORS headers on templated answers too");
    let id = header(&json_reply, "x-gravitee-request-id").unwrap().to_owned();
    assert_eq!(json_reply.json::<Value>().await.unwrap(), json!({"error": "an API key is required"}));
    let doc = report_for(&sim, &id).await;
    assert_eq!((&doc["status"], &doc["error-key"]), (&json!(403), &json!("API_KEY_MISSING")));

    let text_reply = client.get(dp.url("/tpl/x")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(text_reply.status(), 403);
    // Gravitee labels a templated body with the request's own Accept value, and closes the connection.
    assert_eq!(header(&text_reply, "content-type"), Some("text/html"));
    assert_eq!(header(&text_reply, "connection"), Some("close"));
    assert_eq!(text_reply.text().await.unwrap(), "an API key is required");

    // Another key falls back to DEFAULT.
    let invalid = client.get(dp.url("/tpl/x")).header("X-Gravitee-Api-Key", "nope").send().await.unwrap();
    assert_eq!(invalid.status(), 418);
    let invalid_id = header(&invalid, "x-gravitee-request-id").unwrap().to_owned();
    assert_eq!(invalid.text().await.unwrap(), "something went wrong");
    let doc = report_for(&sim, &invalid_id).await;
    assert_eq!((&doc["status"], &doc["error-key"]), (&json!(418), &json!("API_KEY_INVALID")));

    // v2: an upstream failure with a matching Accept is templated; without one the standard (empty)
    // answer stays.
    let down = client.get(dp.url("/legacy/x")).header("Accept", "text/plain").send().await.unwrap();
    assert_eq!(down.status(), 503);
    assert_eq!(header(&down, "retry-after"), Some("5"));
    assert_eq!(header(&down, "content-type"), Some("text/plain"));
    let down_id = header(&down, "x-gravitee-request-id").unwrap().to_owned();
    assert_eq!(down.text().await.unwrap(), "try later");
    let doc = report_for(&sim, &down_id).await;
    assert_eq!(doc["error-key"], "GATEWAY_CLIENT_CONNECTION_ERROR");
    let standard = client.get(dp.url("/legacy/x")).header("Accept", "application/json").send().await.unwrap();
    assert_eq!(standard.status(), 502);
    assert_eq!(standard.text().await.unwrap(), "", "Gravitee's endpoint failures have no body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_match_runs_only_the_most_specific_flow() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let tag = |path: &str, operator: &str, value: &str| {
        json!({"name": value, "enabled": true, "selectors": [{"type": "http", "path": path, "pathOperator": operator}],
            "request": [{"name": "tag", "policy": "transform-headers", "enabled": true, "configuration": {
                "appendHeaders": [{"name": "X-Flow", "value": value}]}}], "response": []})
    };
    let flows = json!([
        tag("/", "STARTS_WITH", "root"),
        tag("/orders", "STARTS_WITH", "orders"),
        tag("/orders/:id", "STARTS_WITH", "order"),
        tag("/orders/special", "STARTS_WITH", "special"),
    ]);
    let mut api = v4_api("best", "/best", &backend.url());
    api["flowExecution"] = json!({"mode": "BEST_MATCH", "matchRequired": false});
    api["flows"] = flows.clone();
    sim.put_api(api).await;
    // The same flows in default mode all run.
    let mut all = v4_api("all", "/all", &backend.url());
    all["flows"] = flows;
    sim.put_api(all).await;
    let mut v2 = v2_api("legacy-best", "/legacy", &backend.url());
    v2["flow_mode"] = json!("BEST_MATCH");
    v2["flows"] = json!([
        {"name": "root", "path-operator": {"path": "/", "operator": "STARTS_WITH"}, "methods": [], "enabled": true,
         "pre": [{"name": "h", "policy": "transform-headers", "enabled": true, "configuration": {"addHeaders": [{"name": "X-Flow", "value": "root"}]}}], "post": []},
        {"name": "items", "path-operator": {"path": "/items/:id", "operator": "EQUALS"}, "methods": ["GET"], "enabled": true,
         "pre": [{"name": "h", "policy": "transform-headers", "enabled": true, "configuration": {"addHeaders": [{"name": "X-Flow", "value": "item"}]}}], "post": []}
    ]);
    sim.put_api(v2).await;

    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let flow_of = |path: &'static str| {
        let client = client.clone();
        let url = dp.url(path);
        async move {
            let reply = client.get(url).send().await.unwrap();
            assert_eq!(reply.status(), 200, "{path}");
            let echo: Value = reply.json().await.unwrap();
            echo["headers"]["x-flow"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert_eq!(flow_of("/best/other").await, "root");
    assert_eq!(flow_of("/best/orders").await, "orders");
    assert_eq!(flow_of("/best/orders/42").await, "order");
    assert_eq!(flow_of("/best/orders/special/x").await, "special");
    assert_eq!(flow_of("/all/orders/special/x").await, "root, orders, order, special");
    assert_eq!(flow_of("/legacy/items/7").await, "item");
    assert_eq!(flow_of("/legacy/items/7/more").await, "root");
    let post = client.post(dp.url("/legacy/items/7")).send().await.unwrap();
    let echo: Value = post.json().await.unwrap();
    assert_eq!(echo["headers"]["x-flow"], "root", "the method filter applies before best-match");
}
