//! Gravitee's cache policy with its in-memory `cache` resource, end to end (Cloud Gate emulator, agent,
//! dataplane, the counting echo backend): what is stored, under which key, for how long, and what
//! skips or refreshes it, as Gravitee's policy 3.0 does.

use std::time::Duration;

use hgw_tests::gateway::{cloud_gateway, now_ms};
use hgw_tests::{Backend, CloudGateSim, eventually, v2_api, v4_api};
use serde_json::{Value, json};

fn cache_flow(configuration: Value) -> Value {
    json!([{"name": "cache", "enabled": true,
        "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [{"name": "cache", "policy": "cache", "enabled": true, "configuration": configuration}],
        "response": []}])
}

fn memory_resource(name: &str) -> Value {
    json!([{"name": name, "type": "cache", "enabled": true,
        "configuration": {"timeToIdleSeconds": 0, "timeToLiveSeconds": 0, "maxEntriesLocalHeap": 100}}])
}

async fn body_of(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = client;
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cache_hits_misses_keys_methods_and_actions_as_gravitee() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("cached", "/cached", &backend.url());
    api["flows"] = cache_flow(json!({"cacheName": "my-cache", "scope": "API", "timeToLiveSeconds": 600,
        "key": "{#request.headers['X-Tenant'][0]}"}));
    api["resources"] = memory_resource("my-cache");
    sim.put_api(api).await;
    // A cache step naming no resource: Gravitee deploys it and fails the cached methods with a 500.
    let mut missing = v4_api("missing", "/missing", &backend.url());
    missing["flows"] = cache_flow(json!({"cacheName": "nowhere", "scope": "API"}));
    sim.put_api(missing).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(dp.url(path));

    // Miss, then hit: the endpoint is called once, the stored answer is the first one.
    let (status, first) = body_of(&client, get("/cached/a")).await;
    assert_eq!(status, 200);
    assert_eq!(backend.requests(), 1);
    let (status, second) = body_of(&client, get("/cached/a")).await;
    assert_eq!((status, &second), (200, &first), "the second GET is the stored answer");
    assert_eq!(backend.requests(), 1);

    // As Gravitee's v4 engines, a stored answer carries the caller's client identifier, then the one
    // stored with it.
    let hit = get("/cached/a").header("X-Gravitee-Client-Identifier", "me").send().await.unwrap();
    let identifiers: Vec<&str> =
        hit.headers().get_all("x-gravitee-client-identifier").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(identifiers.len(), 2, "{identifiers:?}");
    assert_eq!(identifiers[0], "me");
    assert_eq!(backend.requests(), 1);

    // The key template (a header) and the query are parts of the key.
    body_of(&client, get("/cached/a").header("X-Tenant", "t2")).await;
    body_of(&client, get("/cached/a").header("X-Tenant", "t2")).await;
    assert_eq!(backend.requests(), 2);
    body_of(&client, get("/cached/a?x=1")).await;
    body_of(&client, get("/cached/a?x=1")).await;
    assert_eq!(backend.requests(), 3);

    // Methods outside GET/OPTIONS/HEAD are not cached.
    client.post(dp.url("/cached/a")).body("{}").send().await.unwrap();
    client.post(dp.url("/cached/a")).body("{}").send().await.unwrap();
    assert_eq!(backend.requests(), 5);

    // Without a response condition only 2xx answers are stored.
    assert_eq!(body_of(&client, get("/cached/e?status=500")).await.0, 500);
    assert_eq!(body_of(&client, get("/cached/e?status=500")).await.0, 500);
    assert_eq!(backend.requests(), 7);

    // The client's Cache-Control is not read (Gravitee's policy does not); X-Gravitee-Cache is, and is
    // not sent on: BY_PASS goes to the endpoint without storing, REFRESH (here as the `cache` query
    // parameter, which is not sent on either) stores the endpoint's new answer.
    body_of(&client, get("/cached/a").header("Cache-Control", "no-cache")).await;
    assert_eq!(backend.requests(), 7);
    let (_, bypassed) = body_of(&client, get("/cached/a").header("X-Gravitee-Cache", "BY_PASS")).await;
    assert_eq!(backend.requests(), 8);
    assert!(bypassed["headers"].get("x-gravitee-cache").is_none(), "{bypassed}");
    let (_, refreshed) = body_of(&client, get("/cached/a?cache=refresh")).await;
    assert_eq!(backend.requests(), 9);
    assert_eq!(refreshed["query"], json!(""), "the cache parameter is not sent on: {refreshed}");
    let (_, after) = body_of(&client, get("/cached/a")).await;
    assert_eq!(backend.requests(), 9);
    assert_eq!(after, refreshed, "REFRESH stored the new answer");

    // An answer larger than an entry may be is relayed whole but not stored.
    let big = "/cached/big?encoding=gzip&pad=2000000";
    let reply = get(big).send().await.unwrap();
    assert!(reply.bytes().await.unwrap().len() > 2_000_000);
    let reply = get(big).send().await.unwrap();
    assert!(reply.bytes().await.unwrap().len() > 2_000_000);
    assert_eq!(backend.requests(), 11);

    // No such resource: Gravitee's 500 for cached methods; other methods go through.
    let (status, body) = body_of(&client, get("/missing/x")).await;
    assert_eq!(status, 500);
    assert_eq!(body, json!({"message": "No cache has been defined with name nowhere", "http_status_code": 500}));
    assert_eq!(client.post(dp.url("/missing/x")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_and_application_scope_keeps_applications_apart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let ttl = Backend::start("T").await;
    let mut short = v4_api("short", "/short", &ttl.url());
    short["flows"] = cache_flow(json!({"cacheName": "c", "scope": "API", "timeToLiveSeconds": 1}));
    short["resources"] = memory_resource("c");
    sim.put_api(short).await;
    let mut keyed = v4_api("keyed", "/keyed", &backend.url());
    keyed["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    // Scope left out: Gravitee's default, APPLICATION.
    keyed["flows"] = cache_flow(json!({"cacheName": "c"}));
    keyed["resources"] = memory_resource("c");
    sim.put_api(keyed).await;
    for (sub, app, key) in [("sub-1", "app-1", "key-one"), ("sub-2", "app-2", "key-two")] {
        sim.put_subscription(json!({"id": sub, "api": "keyed", "plan": "gold", "application": app,
            "status": "ACCEPTED", "updatedAt": now_ms()}))
            .await;
        sim.put_key(json!({"id": key, "key": key, "subscriptions": [sub], "subscription": sub,
            "api": "keyed", "plan": "gold", "application": app, "revoked": false, "paused": false, "updatedAt": now_ms()}))
            .await;
    }
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();

    // Two applications, two entries; each application's second call is a hit.
    let with_key = |key: &str| client.get(dp.url("/keyed/x")).header("X-Gravitee-Api-Key", key);
    assert_eq!(with_key("key-one").send().await.unwrap().status(), 200);
    assert_eq!(with_key("key-one").send().await.unwrap().status(), 200);
    assert_eq!(backend.requests(), 1);
    assert_eq!(with_key("key-two").send().await.unwrap().status(), 200);
    assert_eq!(with_key("key-two").send().await.unwrap().status(), 200);
    assert_eq!(backend.requests(), 2);

    // A one-second entry: a hit first, then the endpoint again once it has expired.
    client.get(dp.url("/short/x")).send().await.unwrap();
    client.get(dp.url("/short/x")).send().await.unwrap();
    let hits_before_expiry = ttl.requests();
    assert!(hits_before_expiry <= 2, "at most one miss before the TTL ({hits_before_expiry})");
    eventually("the entry to expire", Duration::from_secs(10), || {
        let (client, url, ttl) = (client.clone(), dp.url("/short/x"), &ttl);
        async move {
            client.get(url).send().await.unwrap();
            (ttl.requests() > hits_before_expiry).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_apis_cache_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    for (id, path, mode) in [("v3", "/v3", None), ("emulated", "/emulated", Some("v4-emulation-engine"))] {
        let mut api = v2_api(id, path, &backend.url());
        api["flows"] = json!([{"name": "all", "path-operator": {"path": "/", "operator": "STARTS_WITH"}, "methods": [],
            "enabled": true, "pre": [{"name": "cache", "policy": "cache", "enabled": true, "configuration": {
                "cacheName": "my-cache", "scope": "API", "timeToLiveSeconds": 600,
                "responseCondition": "{#upstreamResponse.status == 200}"}}], "post": []}]);
        api["resources"] = memory_resource("my-cache");
        if let Some(mode) = mode {
            api["execution_mode"] = json!(mode);
        }
        sim.put_api(api).await;
    }
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    let mut expected = 0;
    for path in ["/v3", "/emulated"] {
        let first = client.get(dp.url(&format!("{path}/x"))).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let first = first.text().await.unwrap();
        let second = client.get(dp.url(&format!("{path}/x"))).send().await.unwrap().text().await.unwrap();
        expected += 1;
        assert_eq!(backend.requests(), expected, "{path}: one endpoint call for two GETs");
        assert_eq!(first, second);
        // The condition holds for 200 only: a 201 is not stored.
        client.get(dp.url(&format!("{path}/y?status=201"))).send().await.unwrap();
        client.get(dp.url(&format!("{path}/y?status=201"))).send().await.unwrap();
        expected += 2;
        assert_eq!(backend.requests(), expected, "{path}: 201 does not meet the condition");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_body_is_stored_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let mut api = v4_api("empty", "/empty", &backend.url());
    api["flows"] = cache_flow(json!({"cacheName": "c", "scope": "API"}));
    api["resources"] = memory_resource("c");
    sim.put_api(api).await;
    let (_agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let client = reqwest::Client::new();
    // A 204 has no body: it is stored when its (empty) body is known complete.
    assert_eq!(client.get(dp.url("/empty/x?status=204")).send().await.unwrap().status(), 204);
    assert_eq!(client.get(dp.url("/empty/x?status=204")).send().await.unwrap().status(), 204);
    assert_eq!(backend.requests(), 1);
    // HEAD is a cached method; its key is the URL alone, as Gravitee's.
    assert_eq!(client.head(dp.url("/empty/h")).send().await.unwrap().status(), 200);
    assert_eq!(client.head(dp.url("/empty/h")).send().await.unwrap().status(), 200);
    assert_eq!(backend.requests(), 2);
}
