//! Gravitee compatibility measured against Gravitee APIM 4.10.9 itself (tests/compat/gravitee-gw):
//! the client identifier on answers, the endpoint's compression, answers to an endpoint that refuses
//! connections. Each check is what Gravitee's gateway answered to the same definition and request.

use hgw_tests::gateway::{cloud_gateway, now_ms, report_for};
use hgw_tests::{Backend, CloudGateSim, v2_api, v4_api};
use serde_json::{Value, json};
use sha2::Digest;

fn header<'a>(reply: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    reply.headers().get(name).map(|v| v.to_str().unwrap())
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A URL nothing listens on (the port was just free).
fn dead_target() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    dead
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identifier_is_answered_once_a_plan_is_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    sim.put_api(v4_api("free", "/free", &backend.url())).await;
    let mut keyed = v4_api("keyed", "/keyed", &backend.url());
    keyed["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY"}, "status": "PUBLISHED", "mode": "standard"}]);
    sim.put_api(keyed).await;
    sim.put_subscription(json!({"id": "sub-1", "api": "keyed", "plan": "gold", "application": "app-1",
        "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    sim.put_key(json!({"id": "key-1", "key": "the-key", "subscriptions": ["sub-1"], "subscription": "sub-1",
        "api": "keyed", "plan": "gold", "application": "app-1", "revoked": false, "paused": false, "updatedAt": now_ms()}))
        .await;
    // v2 runs on Gravitee's V3 engine unless `execution_mode` says otherwise: no client identifier.
    sim.put_api(v2_api("legacy", "/legacy", &backend.url())).await;
    let mut emulated = v2_api("emulated", "/emulated", &backend.url());
    emulated["execution_mode"] = json!("v4-emulation-engine");
    sim.put_api(emulated).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let hashed = sha256_hex("127.0.0.1");

    // Key-less: the subscription is the caller's address, the identifier its SHA-256 (hex).
    let free = client.get(dp.url("/free/x")).send().await.unwrap();
    assert_eq!(free.status(), 200);
    assert_eq!(header(&free, "x-gravitee-client-identifier"), Some(hashed.as_str()));
    let id = header(&free, "x-gravitee-request-id").unwrap().to_owned();
    let echo: Value = free.json().await.unwrap();
    assert!(echo["headers"].get("x-gravitee-client-identifier").is_none(), "not sent to the endpoint: {echo}");
    let doc = report_for(&sim, &id).await;
    assert_eq!((&doc["client-identifier"], &doc["subscription-id"]), (&json!(hashed), &json!("127.0.0.1")));

    // The client's own identifier (header, else query parameter) is echoed, and reaches the endpoint.
    let given = client.get(dp.url("/free/x")).header("X-Gravitee-Client-Identifier", "abc").send().await.unwrap();
    assert_eq!(header(&given, "x-gravitee-client-identifier"), Some("abc"));
    let id = header(&given, "x-gravitee-request-id").unwrap().to_owned();
    assert_eq!(given.json::<Value>().await.unwrap()["headers"]["x-gravitee-client-identifier"], "abc");
    assert_eq!(report_for(&sim, &id).await["client-identifier"], "abc");
    let by_query = client.get(dp.url("/free/x?X-Gravitee-Client-Identifier=q%20q")).send().await.unwrap();
    assert_eq!(header(&by_query, "x-gravitee-client-identifier"), Some("q q"));
    let blank = client.get(dp.url("/free/x")).header("X-Gravitee-Client-Identifier", " ").send().await.unwrap();
    assert_eq!(header(&blank, "x-gravitee-client-identifier"), Some(hashed.as_str()), "a blank one is replaced");

    // A keyed plan: the subscription id. A request refused by the security chain has none.
    let keyed = client.get(dp.url("/keyed/x")).header("X-Gravitee-Api-Key", "the-key").send().await.unwrap();
    assert_eq!(keyed.status(), 200);
    assert_eq!(header(&keyed, "x-gravitee-client-identifier"), Some("sub-1"));
    let refused = client.get(dp.url("/keyed/x")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(header(&refused, "x-gravitee-client-identifier").is_none());
    assert!(header(&refused, "x-gravitee-request-id").is_some());

    // v2 on the emulation engine answers it like v4; on the V3 engine, never.
    let emulated = client.get(dp.url("/emulated/x")).send().await.unwrap();
    assert_eq!(header(&emulated, "x-gravitee-client-identifier"), Some(hashed.as_str()));
    let legacy = client.get(dp.url("/legacy/x")).send().await.unwrap();
    assert_eq!(legacy.status(), 200);
    assert!(header(&legacy, "x-gravitee-client-identifier").is_none());
    assert!(header(&legacy, "x-gravitee-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_failures_are_answered_without_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let dead = dead_target();
    sim.put_api(v4_api("down", "/down", &dead)).await;
    sim.put_api(v2_api("legacy-down", "/legacy-down", &dead)).await;
    let mut emulated = v2_api("emulated-down", "/emulated-down", &dead);
    emulated["execution_mode"] = json!("v4-emulation-engine");
    sim.put_api(emulated).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let hashed = sha256_hex("127.0.0.1");

    // v4 (and v2 on the emulation engine): 502, no body nor Content-Type, the ids and the client
    // identifier, and the connection closed.
    for path in ["/down/x", "/emulated-down/x"] {
        let reply = client.get(dp.url(path)).send().await.unwrap();
        assert_eq!(reply.status(), 502, "{path}");
        assert!(header(&reply, "content-type").is_none(), "{path}");
        assert_eq!(header(&reply, "connection"), Some("close"), "{path}");
        assert_eq!(header(&reply, "x-gravitee-client-identifier"), Some(hashed.as_str()), "{path}");
        let id = header(&reply, "x-gravitee-request-id").unwrap().to_owned();
        assert_eq!(header(&reply, "x-gravitee-transaction-id"), Some(id.as_str()));
        assert_eq!(reply.text().await.unwrap(), "", "{path}");
        let doc = report_for(&sim, &id).await;
        assert_eq!((&doc["status"], &doc["error-key"]), (&json!(502), &json!("GATEWAY_CLIENT_CONNECTION_ERROR")));
    }
    // v2 on the V3 engine: its connector answers, without the gateway's ids.
    let legacy = client.get(dp.url("/legacy-down/x")).send().await.unwrap();
    assert_eq!(legacy.status(), 502);
    assert_eq!(header(&legacy, "content-length"), Some("0"));
    assert_eq!(header(&legacy, "connection"), Some("close"));
    for name in ["content-type", "x-gravitee-request-id", "x-gravitee-transaction-id", "x-gravitee-client-identifier"] {
        assert!(header(&legacy, name).is_none(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_compression_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    // Default: useCompression on.
    sim.put_api(v4_api("zip", "/zip", &backend.url())).await;
    let mut plain = v4_api("plain", "/plain", &backend.url());
    plain["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"useCompression": false}});
    sim.put_api(plain).await;
    let mut propagate = v4_api("propagate", "/propagate", &backend.url());
    propagate["endpointGroups"][0]["sharedConfiguration"] =
        json!({"http": {"useCompression": false, "propagateClientAcceptEncoding": true}});
    sim.put_api(propagate).await;
    // propagateClientAcceptEncoding has no effect while compression is on.
    let mut both = v4_api("both", "/both", &backend.url());
    both["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"propagateClientAcceptEncoding": true}});
    sim.put_api(both).await;
    let mut v2 = v2_api("legacy-zip", "/legacy-zip", &backend.url());
    v2["proxy"]["groups"][0]["endpoints"][0]["http"] = json!({"useCompression": true});
    sim.put_api(v2).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    // reqwest is built without decompression here: the test sees the gateway's answer as sent.
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(dp.url(path)).header("Accept-Encoding", "br").send();

    // The endpoint is offered `deflate, gzip` (the client's Accept-Encoding is not sent), and its gzip
    // or deflate answer is decoded: no Content-Encoding, no Content-Length.
    for path in ["/zip/x", "/both/x", "/legacy-zip/x"] {
        for encoding in ["gzip", "deflate"] {
            let reply = get(&format!("{path}?encoding={encoding}&pad=100000")).await.unwrap();
            assert_eq!(reply.status(), 200);
            assert!(header(&reply, "content-encoding").is_none(), "{path} {encoding}");
            assert!(header(&reply, "content-length").is_none(), "{path} {encoding}");
            let text = reply.text().await.unwrap();
            assert_eq!(text.len() - text.trim_end().len(), 100_000, "{path} {encoding}: the whole body, decoded");
            let echo: Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(echo["headers"]["accept-encoding"], "deflate, gzip", "{path}");
        }
        // An answer in another coding passes untouched.
        let br = get(&format!("{path}?encoding=br")).await.unwrap();
        assert_eq!(header(&br, "content-encoding"), Some("br"));
    }

    // Without compression: nothing is offered and nothing decoded; the client's value only with
    // propagateClientAcceptEncoding.
    let reply = get("/plain/x?encoding=gzip").await.unwrap();
    assert_eq!(header(&reply, "content-encoding"), Some("gzip"));
    let reply = get("/plain/x").await.unwrap();
    assert!(reply.json::<Value>().await.unwrap()["headers"].get("accept-encoding").is_none());
    let reply = get("/propagate/x").await.unwrap();
    assert_eq!(reply.json::<Value>().await.unwrap()["headers"]["accept-encoding"], "br");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_header_el_is_evaluated_when_the_api_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("orders", "/orders", &backend.url());
    api["name"] = json!("Orders");
    api["endpointGroups"][0]["sharedConfiguration"] = json!({"headers": [
        {"name": "X-Api", "value": "{#api.id}"}, {"name": "X-Both", "value": "{#api.name}-{#api.id}"},
        {"name": "X-Literal", "value": "plain {text}"}]});
    sim.put_api(api).await;
    let mut overridden = v4_api("override", "/override", &backend.url());
    overridden["endpointGroups"][0]["endpoints"][0]["inheritConfiguration"] = json!(false);
    overridden["endpointGroups"][0]["endpoints"][0]["sharedConfigurationOverride"] =
        json!({"headers": [{"name": "X-Over", "value": "{#api.name}"}]});
    sim.put_api(overridden).await;
    // The request does not exist when the API deploys: Gravitee cannot build the endpoint (every call
    // answers 503); hgw rejects the API and says why.
    let mut per_request = v4_api("per-request", "/per-request", &backend.url());
    per_request["endpointGroups"][0]["sharedConfiguration"] =
        json!({"headers": [{"name": "X-In", "value": "{#request.headers['x-in'][0]}"}]});
    sim.put_api(per_request).await;
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let echo: Value = client.get(dp.url("/orders/x")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["headers"]["x-api"], "orders", "{echo}");
    assert_eq!(echo["headers"]["x-both"], "Orders-orders");
    assert_eq!(echo["headers"]["x-literal"], "plain {text}");
    let echo: Value = client.get(dp.url("/override/x")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["headers"]["x-over"], "override", "{echo}");

    let (_, apis) = agent.node_get("/_node/apis").await;
    let text = apis.to_string();
    assert!(
        text.contains(
            "endpointGroups[0].sharedConfiguration.headers[0].value: EL here is evaluated once, when the API deploys"
        ),
        "{text}"
    );
    assert_eq!(client.get(dp.url("/per-request/x")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_content_el_and_condition_errors_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mock_flow = |path: &str, content: &str| {
        json!({"name": path, "enabled": true,
            "selectors": [{"type": "http", "path": path, "pathOperator": "STARTS_WITH"}],
            "request": [{"name": "mock", "policy": "mock", "enabled": true,
                "configuration": {"status": "200", "content": content, "headers": [{"name": "X-M", "value": "1"}]}}]})
    };
    // A condition whose EL fails is not met (Gravitee's condition filter reports a warning and goes on).
    let tagged = |selector: Value, step_condition: Option<&str>| {
        json!({"name": "tag", "enabled": true, "selectors": [{"type": "http", "path": "/cond", "pathOperator": "STARTS_WITH"}, selector],
            "request": [{"name": "t", "policy": "transform-headers", "enabled": true, "condition": step_condition,
                "configuration": {"scope": "REQUEST", "addHeaders": [{"name": "X-Flow", "value": "ran"}]}}]})
    };
    let mut api = v4_api("mocks", "/mocks", &backend.url());
    api["flows"] = json!([
        mock_flow("/null", "{#request.headers['nope']}"),
        mock_flow("/error", "{#request.headers['nope'][0]}"),
        mock_flow("/mixed", "a{#request.headers['nope']}b"),
        mock_flow("/json", "{\"id\": \"{#request.headers['x-id'][0]}\"}"),
        tagged(json!({"type": "condition", "condition": "{#request.headers['nope'][0] == 'x'}"}), None),
    ]);
    sim.put_api(api).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let null = client.get(dp.url("/mocks/null")).send().await.unwrap();
    assert_eq!(null.status(), 500);
    assert_eq!(header(&null, "x-m"), Some("1"), "the mock's headers stay");
    assert_eq!(header(&null, "content-type"), Some("text/plain"));
    assert!(header(&null, "connection").is_none(), "a mock answer, not a gateway failure");
    assert_eq!(
        null.text().await.unwrap(),
        "The template evaluation returns a null value. Expression:\n{#request.headers['nope']}"
    );
    let error = client.get(dp.url("/mocks/error")).send().await.unwrap();
    assert_eq!(error.status(), 500);
    assert_eq!(
        error.text().await.unwrap(),
        "The template evaluation returns an error. Expression:\n{#request.headers['nope'][0]}"
    );
    let mixed = client.get(dp.url("/mocks/mixed")).send().await.unwrap();
    assert_eq!(mixed.status(), 200);
    assert_eq!(mixed.text().await.unwrap(), "ab");
    let json_mock = client.get(dp.url("/mocks/json")).header("X-Id", "7").send().await.unwrap();
    assert_eq!((json_mock.status().as_u16(), header(&json_mock, "content-type")), (200, Some("application/json")));
    assert_eq!(json_mock.text().await.unwrap(), r#"{"id": "7"}"#);

    let reply = client.get(dp.url("/mocks/cond")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let echo: Value = reply.json().await.unwrap();
    assert!(echo["headers"].get("x-flow").is_none(), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_headers_whitelist_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("white", "/white", &backend.url());
    api["flows"] = json!([{"name": "w", "enabled": true,
        "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [{"name": "t", "policy": "transform-headers", "enabled": true, "configuration": {"scope": "REQUEST",
            "addHeaders": [{"name": "X-Added", "value": "1"}, {"name": "X-Keep-Added", "value": "2"}, {"name": "X-B", "value": "set"}],
            "whitelistHeaders": ["x-a", "X-KEEP-ADDED", "X-B"], "removeHeaders": ["x-b"]}}],
        "response": [{"name": "t", "policy": "transform-headers", "enabled": true, "configuration": {"scope": "RESPONSE",
            "addHeaders": [{"name": "X-R", "value": "r"}], "whitelistHeaders": ["content-type", "x-r"]}}]}]);
    let mut response_only = api.clone();
    response_only["id"] = json!("white-response");
    response_only["listeners"][0]["paths"][0]["path"] = json!("/white-response");
    response_only["flows"][0]["request"] = json!([]);
    let mut dead = api.clone();
    dead["id"] = json!("white-dead");
    dead["listeners"][0]["paths"][0]["path"] = json!("/white-dead");
    dead["endpointGroups"][0]["endpoints"][0]["configuration"]["target"] = json!(dead_target());
    for a in [api, response_only, dead] {
        sim.put_api(a).await;
    }
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    let reply =
        client.get(dp.url("/white/x")).header("X-A", "a").header("X-B", "b").header("X-C", "c").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    // What Gravitee's gateway answered to the same request: the whitelist also takes the gateway's
    // own ids and the client identifier off the answer.
    assert_eq!(header(&reply, "x-r"), Some("r"));
    for name in ["x-gravitee-request-id", "x-gravitee-transaction-id", "x-gravitee-client-identifier"] {
        assert!(header(&reply, name).is_none(), "{name}");
    }
    let echo: Value = reply.json().await.unwrap();
    let mut names: Vec<&str> = echo["headers"].as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    // Added after the whitelist by the client connection: Host and the offered Accept-Encoding.
    assert_eq!(names, ["accept-encoding", "host", "x-a", "x-keep-added"], "{echo}");
    assert_eq!(echo["headers"]["x-keep-added"], "2");

    // The ids are set on the answer after the response flows, from the request as its flows left it
    // (Gravitee's transaction post-processor): a response whitelist does not take them off, a request
    // whitelist does, on an endpoint failure too. The client identifier is set before the response
    // flows, so the response whitelist removes it.
    let reply = client.get(dp.url("/white-response/x")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let (request_id, transaction_id) =
        (header(&reply, "x-gravitee-request-id"), header(&reply, "x-gravitee-transaction-id"));
    assert!(request_id.is_some() && request_id == transaction_id, "{:?}", reply.headers());
    assert!(header(&reply, "x-gravitee-client-identifier").is_none());
    let reply = client.get(dp.url("/white-dead/x")).send().await.unwrap();
    assert_eq!(reply.status(), 502);
    for name in ["x-gravitee-request-id", "x-gravitee-transaction-id"] {
        assert!(header(&reply, name).is_none(), "{name}: {:?}", reply.headers());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_queries_and_v2_host_headers_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let target = format!("{}/base?t=2&a=1", backend.url());
    sim.put_api(v4_api("query4", "/query4", &target)).await;
    sim.put_api(v2_api("query2", "/query2", &target)).await;
    let mut host = v2_api("host2", "/host2", &backend.url());
    host["proxy"]["groups"][0]["endpoints"][0]["hostHeader"] = json!("api.internal");
    // An inheriting endpoint takes the group's headers instead of its own.
    host["proxy"]["groups"][0]["endpoints"][0]["inherit"] = json!(false);
    sim.put_api(host).await;
    let mut group_host = v2_api("grouphost2", "/grouphost2", &backend.url());
    group_host["proxy"]["groups"][0]["hostHeader"] = json!("group.internal");
    group_host["proxy"]["groups"][0]["headers"] = json!({"Host": "replaced", "X-G": "g"});
    group_host["proxy"]["groups"][0]["endpoints"][0]["inherit"] = json!(true);
    sim.put_api(group_host).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let echo = |path: &str| {
        let url = dp.url(path);
        let client = client.clone();
        async move {
            let text = client.get(&url).send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
        }
    };

    // What Gravitee 4.10.9 sent its backend for the same targets and requests.
    let v4 = echo("/query4/x").await;
    assert_eq!((&v4["path"], &v4["query"]), (&json!("/base/x"), &json!("t=2&a=1")));
    let v4 = echo("/query4/x?a=0&b=%20sp+x&a=3&flag&e=").await;
    assert_eq!(v4["query"], "a=0&a=3&a=1&b=%20sp+x&flag&e=&t=2", "grouped by name, the target's last");
    // v2 appends the path after the target's query.
    let v2 = echo("/query2/x").await;
    assert_eq!((&v2["path"], &v2["query"]), (&json!("/base"), &json!("t=2&a=1/x")));
    let v2 = echo("/query2/x?a=0&b=%20sp+x&a=3&flag&e=").await;
    assert_eq!(v2["query"], "t=2&a=1/x&a=0&a=3&b=%20sp+x&flag&e=");

    assert_eq!(echo("/host2/x").await["headers"]["host"], "api.internal");
    let grouped = echo("/grouphost2/x").await;
    assert_eq!((&grouped["headers"]["host"], &grouped["headers"]["x-g"]), (&json!("group.internal"), &json!("g")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_as_gravitee_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    sim.put_api(v4_api("stay", "/stay", &backend.url())).await;
    let mut follow = v4_api("follow", "/follow", &backend.url());
    follow["endpointGroups"][0]["sharedConfiguration"] = json!({"http": {"followRedirects": true}});
    sim.put_api(follow).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // By default (followRedirects false) the client gets the redirect.
    let reply = client.get(dp.url("/stay/x?redirect=302")).send().await.unwrap();
    assert_eq!((reply.status().as_u16(), header(&reply, "location")), (302, Some("/redirected?from=/x")));

    // What Gravitee 4.10.9 did with followRedirects: GET follows 301, 302, 303, 307, 308 with its
    // headers; POST follows 303 only, as a GET.
    for code in [301, 302, 303, 307, 308] {
        let reply =
            client.get(dp.url(&format!("/follow/x?redirect={code}"))).header("X-Custom", "c").send().await.unwrap();
        assert_eq!(reply.status(), 200, "{code}");
        let echo: Value = reply.json().await.unwrap();
        assert_eq!(
            (&echo["method"], &echo["path"], &echo["query"]),
            (&json!("GET"), &json!("/redirected"), &json!("from=/x"))
        );
        assert_eq!(echo["headers"]["x-custom"], "c");
    }
    let see_other = client.post(dp.url("/follow/x?redirect=303")).body("hello").send().await.unwrap();
    let echo: Value = see_other.json().await.unwrap();
    assert_eq!((&echo["method"], &echo["body_len"]), (&json!("GET"), &json!(0)), "{echo}");
    assert!(echo["headers"].get("content-length").is_none(), "{echo}");
    for code in [301, 302, 307, 308] {
        let reply = client.post(dp.url(&format!("/follow/x?redirect={code}"))).body("hello").send().await.unwrap();
        assert_eq!(reply.status().as_u16(), code, "a POST is not redirected by {code}");
    }
}
