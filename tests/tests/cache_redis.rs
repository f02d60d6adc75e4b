//! Gravitee's cache policy with a `cache-redis` resource, end to end: a real `redis-server` (with a
//! password, and behind Sentinels), the Cloud Gate emulator, one agent, two dataplanes and the counting
//! echo backend. Entries are shared by dataplanes, kept under Gravitee's keys in Gravitee's text form
//! (an entry written as Gravitee writes it is served), expire as Gravitee's resource makes them, fail
//! open when Redis is gone, and the resource's password never leaves the agent.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane};
use hgw_tests::redis::{RedisOptions, RedisSentinel, RedisServer};
use hgw_tests::{Backend, CloudGateSim, eventually, v4_api};
use serde_json::{Value, json};

const PASSWORD: &str = "r3dis-cache-pw";

fn cached_api(id: &str, backend: &Backend, configuration: Value, ttl: u64) -> Value {
    let mut api = v4_api(id, &format!("/{id}"), &backend.url());
    api["flows"] = json!([{"name": "cache", "enabled": true,
        "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [{"name": "cache", "policy": "cache", "enabled": true,
            "configuration": {"cacheName": "shared", "scope": "API", "timeToLiveSeconds": ttl}}],
        "response": []}]);
    api["resources"] =
        json!([{"name": "shared", "type": "cache-redis", "enabled": true, "configuration": configuration}]);
    api
}

/// Java's `String.hashCode`, as the key's path and query parts are made.
fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

async fn get(client: &reqwest::Client, dp: &Dataplane, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let reply = client.get(dp.url(path)).send().await.unwrap();
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    (status, reply.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_are_shared_kept_as_gravitee_keeps_them_and_fail_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis =
        RedisServer::start(&dir.path().join("redis"), RedisOptions { password: Some(PASSWORD.into()), tls: None })
            .await;
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    // Gravitee 4.x's form of the resource (`standalone`), TLS off (its default is on).
    let resource = json!({"standalone": {"host": "127.0.0.1", "port": redis.port()}, "password": PASSWORD,
        "useSsl": false, "timeToLiveSeconds": 0, "releaseCache": false, "maxTotal": 8});
    sim.put_api(cached_api("rc", &backend, resource.clone(), 600)).await;
    // The resource's time to live is shorter than the policy's: it applies.
    let mut short = resource.clone();
    short["timeToLiveSeconds"] = json!(5);
    sim.put_api(cached_api("short", &backend, short, 600)).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp1 = Dataplane::start(dir.path(), "dp1", &agent.tcp_target()).await;
    let dp2 = Dataplane::start(dir.path(), "dp2", &agent.tcp_target()).await;
    dp1.wait_ready().await;
    dp2.wait_ready().await;
    let client = reqwest::Client::new();

    // A miss on one dataplane, then a hit on the other: the entry is in Redis, not in a dataplane.
    let (status, first, _) = get(&client, &dp1, "/rc/a?x=1").await;
    assert_eq!(status, 200);
    assert_eq!(backend.requests(), 1);
    // The entry is written in the background, after the answer.
    let key = format!("gravitee:rc:{}:{}", java_hash("/rc/a"), java_hash("x=[1]"));
    let stored = eventually("the entry in Redis", Duration::from_secs(10), || async {
        let value = redis.cli(&["GET", &key]).await;
        (!value.trim().is_empty()).then_some(value)
    })
    .await;
    let (status, second, _) = get(&client, &dp2, "/rc/a?x=1").await;
    assert_eq!((status, &second), (200, &first), "dp2 answers dp1's stored answer");
    assert_eq!(backend.requests(), 1, "the endpoint is called once for both dataplanes");

    // Gravitee's text form: status, headers as lists, the body as `content.buffer`; the policy's TTL.
    let entry: Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(entry["status"], 200, "{entry}");
    assert_eq!(entry["content"]["buffer"].as_str(), Some(first.as_str()), "{entry}");
    assert!(entry["headers"]["content-type"].is_array(), "{entry}");
    let ttl: i64 = redis.cli(&["TTL", &key]).await.trim().parse().unwrap();
    assert!((1..=600).contains(&ttl), "TTL {ttl}");

    // An entry as a Gravitee gateway writes it (pretty-printed, its header names) is served as is.
    let gravitee_key = format!("gravitee:rc:{}:0", java_hash("/rc/from-gravitee"));
    let gravitee_entry = "{\n  \"status\" : 203,\n  \"headers\" : {\n    \"X-Stored-By\" : [ \"gravitee\" ],\n    \
        \"Content-Type\" : [ \"text/plain\" ]\n  },\n  \"content\" : {\n    \"buffer\" : \"stored by gravitee\"\n  }\n}";
    redis.cli(&["SET", &gravitee_key, gravitee_entry]).await;
    let (status, body, headers) = get(&client, &dp1, "/rc/from-gravitee").await;
    assert_eq!((status, body.as_str()), (203, "stored by gravitee"));
    assert_eq!(headers.get("x-stored-by").unwrap(), "gravitee");
    assert_eq!(backend.requests(), 1);
    // A value that is not a cached answer is a miss: the endpoint answers, and its answer replaces it.
    let broken_key = format!("gravitee:rc:{}:0", java_hash("/rc/broken"));
    redis.cli(&["SET", &broken_key, "not an answer"]).await;
    let (status, _, _) = get(&client, &dp1, "/rc/broken").await;
    assert_eq!((status, backend.requests()), (200, 2));
    eventually("the broken entry replaced", Duration::from_secs(10), || async {
        redis.cli(&["GET", &broken_key]).await.contains("\"status\"").then_some(())
    })
    .await;

    // The resource's shorter time to live wins over the policy's.
    let (status, _, _) = get(&client, &dp1, "/short/x").await;
    assert_eq!(status, 200);
    let short_key = format!("gravitee:short:{}:0", java_hash("/short/x"));
    let ttl = eventually("the short entry", Duration::from_secs(10), || async {
        let ttl: i64 = redis.cli(&["TTL", &short_key]).await.trim().parse().ok()?;
        (ttl > 0).then_some(ttl)
    })
    .await;
    assert!(ttl <= 5, "TTL {ttl}");

    // The password stays on the agent: not in what dataplanes hold, not in the agent's own dump.
    for dp in [&dp1, &dp2] {
        let config = dp.config().await.to_string();
        assert!(config.contains("\"rc\"") && !config.contains(PASSWORD), "{config}");
    }
    let (_, apis) = agent.node_get("/_node/apis").await;
    assert!(!apis.to_string().contains(PASSWORD));

    // Redis gone: requests are served from the endpoint (nothing cached, nothing failed).
    redis.kill().await;
    let before = backend.requests();
    for _ in 0..3 {
        let (status, _, _) = get(&client, &dp1, "/rc/while-down").await;
        assert_eq!(status, 200);
    }
    assert_eq!(backend.requests(), before + 3, "each request reached the endpoint");
    // Back: caching resumes once the agent's pool reconnects.
    redis.restart().await;
    eventually("caching to resume", Duration::from_secs(30), || async {
        let before = backend.requests();
        get(&client, &dp1, "/rc/after").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        get(&client, &dp2, "/rc/after").await;
        (backend.requests() == before).then_some(())
    })
    .await;
    for proc in [&agent.proc, &dp1.proc, &dp2.proc] {
        assert!(!proc.stderr().contains(PASSWORD), "the password is never logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_resource_follows_the_master_and_release_cache_scopes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = RedisSentinel::start(&dir.path().join("sentinel")).await;
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    let nodes: Vec<Value> = sentinel.sentinel_ports().iter().map(|p| json!({"host": "127.0.0.1", "port": p})).collect();
    // Gravitee 5.x's form: a nested `sentinel` with `enabled`.
    let resource = json!({"useSsl": false, "releaseCache": true,
        "sentinel": {"enabled": true, "masterId": RedisSentinel::MASTER, "nodes": nodes}});
    sim.put_api(cached_api("sent", &backend, resource, 60)).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();

    get(&client, &dp, "/sent/a").await;
    let keys = eventually("an entry on the master", Duration::from_secs(10), || async {
        let keys = sentinel.master().cli(&["KEYS", "gravitee:sent:*"]).await;
        (!keys.trim().is_empty()).then_some(keys)
    })
    .await;
    // releaseCache: the key ends with the deployment's mark (`:` + 16 hex digits here).
    let key = keys.trim();
    let base = format!("gravitee:sent:{}:0:", java_hash("/sent/a"));
    assert!(key.starts_with(&base) && key.len() == base.len() + 16, "{key}");
    let (status, _, _) = get(&client, &dp, "/sent/a").await;
    assert_eq!((status, backend.requests()), (200, 1), "the second request is a hit");
}
