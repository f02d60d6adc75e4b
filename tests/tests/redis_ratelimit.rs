//! Cluster-wide rate limits, end to end: real `hgw-agent`s and `hgw-dataplane`s sharing a real
//! `redis-server` (standalone and Cluster), bounded bursts of concurrent requests, and Redis outages
//! under traffic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, get};
use hgw_tests::redis::{RedisCluster, RedisOptions, RedisSentinel, RedisServer};
use hgw_tests::{Backend, eventually, v4_api};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight at once during a burst (bounded: the burst ends by itself).
const CONCURRENCY: usize = 16;

/// An API at `/{id}` whose key-less plan runs one rate-limit step with `configuration`.
fn limited_api(id: &str, target: &str, configuration: Value) -> Value {
    let mut api = v4_api(id, &format!("/{id}"), target);
    api["flows"] = json!([{"name": "limit", "request": [{"policy": "rate-limit", "configuration": configuration}]}]);
    api
}

fn write_apis(dir: &Path, apis: &[Value]) -> std::path::PathBuf {
    let apis_dir = dir.join("apis");
    std::fs::create_dir_all(&apis_dir).unwrap();
    for api in apis {
        std::fs::write(apis_dir.join(format!("{}.json", api["id"].as_str().unwrap())), api.to_string()).unwrap();
    }
    apis_dir
}

/// Sends `total` GETs to `path`, spread round-robin over `dataplanes`, `CONCURRENCY` at a time; answers
/// the status of each.
async fn burst(dataplanes: &[&Dataplane], path: &str, total: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let urls: Arc<Vec<String>> = Arc::new((0..total).map(|i| dataplanes[i % dataplanes.len()].url(path)).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(url) = urls.get(i) else { return statuses };
                statuses.push(get(&client, url).await.map_or(0, |r| r.status));
            }
        }));
    }
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

/// The `ratelimit:*` hash whose key ends with `suffix`, as field → value.
async fn counter_hash(redis: &RedisServer, suffix: &str) -> Vec<(String, String)> {
    let keys = redis.cli(&["--scan", "--pattern", "ratelimit:*"]).await;
    let key = keys.lines().find(|k| k.ends_with(suffix)).unwrap_or_else(|| panic!("no key *{suffix} in {keys}"));
    let flat = redis.cli(&["HGETALL", key]).await;
    let lines: Vec<&str> = flat.lines().collect();
    lines.chunks(2).map(|pair| (pair[0].to_owned(), pair.get(1).unwrap_or(&"").to_string())).collect()
}

fn field<'a>(hash: &'a [(String, String)], name: &str) -> &'a str {
    hash.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_exact_strict_and_bounded_async_limits_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), RedisOptions::default()).await;
    let backend = Backend::start("B").await;
    let strict_limit = 40;
    let async_limit = 500;
    let apis = write_apis(
        dir.path(),
        &[
            limited_api(
                "strict",
                &backend.url(),
                json!({"addHeaders": true, "rate": {"limit": strict_limit, "periodTime": 1, "periodTimeUnit": "HOURS"}}),
            ),
            limited_api(
                "leased",
                &backend.url(),
                json!({"async": true, "rate": {"limit": async_limit, "periodTime": 1, "periodTimeUnit": "HOURS"}}),
            ),
        ],
    );
    let url = redis.url();
    let mut agents = Vec::new();
    let mut dataplanes = Vec::new();
    for name in ["a", "b"] {
        let reports = dir.path().join(format!("{name}-reports.ndjson"));
        let agent = Agent::start_local(dir.path(), name, &apis, &reports, &["--redis-url", &url]).await;
        for i in 1..=2 {
            dataplanes.push(Dataplane::start(dir.path(), &format!("{name}{i}"), &agent.unix_target()).await);
        }
        agents.push(agent);
    }
    for dp in &dataplanes {
        dp.wait_ready().await;
    }
    let all: Vec<&Dataplane> = dataplanes.iter().collect();

    // Strict: every admission is counted in Redis first, so exactly the limit passes.
    let statuses = burst(&all, "/strict/x", 4 * strict_limit).await;
    assert_eq!(count(&statuses, 200), strict_limit, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 3 * strict_limit, "{statuses:?}");
    // Gravitee's layout: every request counted, the limit and the reset stored with it.
    let hash = counter_hash(&redis, ":rl").await;
    assert_eq!(field(&hash, "counter"), (4 * strict_limit).to_string(), "{hash:?}");
    assert_eq!(field(&hash, "limit"), strict_limit.to_string(), "{hash:?}");
    assert!(field(&hash, "reset").parse::<i64>().unwrap() > hgw_tests::gateway::now_ms(), "{hash:?}");
    let ttl: i64 = redis.cli(&["PTTL", &counter_key(&redis, "strict").await]).await.trim().parse().unwrap();
    assert!(ttl > 3_000_000 && ttl <= 3_600_000, "the counter expires with its one-hour window: {ttl}");

    // Async: admitted from leases; never more than the limit, at most one unused lease per dataplane
    // fewer (a lease is 2% of the limit: 10 here).
    let statuses = burst(&all, "/leased/x", 2 * async_limit as usize).await;
    let admitted = count(&statuses, 200);
    assert_eq!(admitted + count(&statuses, 429), 2 * async_limit as usize, "{statuses:?}");
    let bound = async_limit as usize - all.len() * 10;
    eprintln!("async mode: {admitted} admitted for a limit of {async_limit} (bound [{bound}, {async_limit}])");
    assert!((bound..=async_limit as usize).contains(&admitted), "admitted {admitted}, bound [{bound}, {async_limit}]");

    for agent in &agents {
        assert!(!agent.proc.stderr().contains("panicked"));
    }
}

/// The counter key of the API `api` (its plan id starts the key).
async fn counter_key(redis: &RedisServer, api: &str) -> String {
    let keys = redis.cli(&["--scan", "--pattern", &format!("ratelimit:{api}-keyless*")]).await;
    keys.lines().next().unwrap_or_else(|| panic!("no counter for {api}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_passes_or_blocks_as_configured_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), RedisOptions::default()).await;
    let backend = Backend::start("B").await;
    let rate = json!({"limit": 1000, "periodTime": 1, "periodTimeUnit": "HOURS"});
    let apis = write_apis(
        dir.path(),
        &[
            limited_api("pass", &backend.url(), json!({"addHeaders": true, "rate": rate})),
            limited_api("block", &backend.url(), json!({"errorStrategy": "BLOCK_ON_INTERNAL_ERROR", "rate": rate})),
            limited_api("lazy", &backend.url(), json!({"async": true, "rate": rate})),
        ],
    );
    let reports = dir.path().join("reports.ndjson");
    let mut agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--redis-url", &redis.url()]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    for path in ["/pass/x", "/block/x", "/lazy/x"] {
        assert_eq!(get(&client, &dp.url(path)).await.unwrap().status, 200, "{path} with Redis up");
    }

    redis.kill().await;
    // Pass-through: requests keep flowing, with Gravitee's headers for an unknown count and the
    // metrics record marked RATE_LIMIT_NOT_APPLIED.
    let mut passed_id = String::new();
    for _ in 0..20 {
        let reply = get(&client, &dp.url("/pass/x")).await.unwrap();
        assert_eq!(reply.status, 200, "pass-through while Redis is down: {}", reply.body);
        if reply.header("x-rate-limit-reset") == Some("-1") {
            assert_eq!(reply.header("x-rate-limit-remaining"), Some("1000"));
            passed_id = reply.header("x-gravitee-request-id").unwrap().to_owned();
        }
    }
    assert!(!passed_id.is_empty(), "some request went through without counters");
    let doc: Value = eventually("the bypassed request is reported", TIMEOUT, || async {
        let text = std::fs::read_to_string(&reports).ok()?;
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|d| d["_id"] == passed_id.as_str())
    })
    .await;
    assert_eq!((&doc["status"], &doc["error-key"]), (&json!(200), &json!("RATE_LIMIT_NOT_APPLIED")), "{doc}");
    // Async mode falls back the same way once its lease is used up.
    let lazy = burst(&[&dp], "/lazy/x", 40).await;
    assert_eq!(count(&lazy, 200), 40, "{lazy:?}");
    // Block: refused with Gravitee's key.
    let blocked = get(&client, &dp.url("/block/x")).await.unwrap();
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert_eq!(blocked.json()["message"], "Rate limit blocked the query due to internal error");
    assert!(agent.proc.is_running(), "the agent survives the outage");
    eventually("the node API reports Redis down (the node stays UP)", TIMEOUT, || async {
        let (status, health) = agent.node_get("/_node/health").await;
        (status == 200 && health["redis"]["healthy"] == json!(false)).then_some(())
    })
    .await;

    // Redis returns (empty): counting resumes by itself.
    redis.restart().await;
    eventually("blocking API admits again", TIMEOUT, || async {
        (get(&client, &dp.url("/block/x")).await?.status == 200).then_some(())
    })
    .await;
    let reply = get(&client, &dp.url("/pass/x")).await.unwrap();
    assert_eq!(reply.status, 200);
    let remaining: u64 = reply.header("x-rate-limit-remaining").unwrap().parse().unwrap();
    assert!(remaining < 1000, "counted again after recovery: {remaining}");

    // A Redis that hangs rather than refuses (every client paused): the agent's command timeout turns
    // it into a failure, and requests pass instead of waiting for Redis.
    redis.cli(&["CLIENT", "PAUSE", "4000", "ALL"]).await;
    let mut bypassed = 0;
    for _ in 0..10 {
        let reply = get(&client, &dp.url("/pass/x")).await.unwrap();
        assert_eq!(reply.status, 200, "pass-through while Redis hangs: {}", reply.body);
        bypassed += usize::from(reply.header("x-rate-limit-reset") == Some("-1"));
    }
    assert!(bypassed > 0, "some request passed without counters while Redis was paused");
    eventually("counting resumes after the pause", TIMEOUT, || async {
        let reply = get(&client, &dp.url("/pass/x")).await?;
        (reply.status == 200 && reply.header("x-rate-limit-reset") != Some("-1")).then_some(())
    })
    .await;
    assert!(!agent.proc.stderr().contains("panicked") && !dp.proc.stderr().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_counts_per_client_keys_across_slots() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path()).await;
    let backend = Backend::start("B").await;
    let apis = write_apis(
        dir.path(),
        &[limited_api(
            "clients",
            &backend.url(),
            json!({"rate": {"limit": 3, "periodTime": 1, "periodTimeUnit": "HOURS",
                "key": "{#request.headers['X-Client'][0]}"}}),
        )],
    );
    let reports = dir.path().join("reports.ndjson");
    let mut agent =
        Agent::start_local(dir.path(), "agent", &apis, &reports, &["--redis-url", &cluster.redis_url()]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    // Ten clients: their keys hash to slots on all three masters.
    for round in 0..5 {
        for c in 0..10 {
            let reply =
                client.get(dp.url("/clients/x")).header("X-Client", format!("client-{c}")).send().await.unwrap();
            let expected = if round < 3 { 200 } else { 429 };
            assert_eq!(reply.status().as_u16(), expected, "client-{c}, request {}", round + 1);
        }
    }
    let mut masters_used = 0;
    for node in cluster.nodes() {
        let keys = node.cli(&["--scan", "--pattern", "ratelimit:*"]).await;
        masters_used += usize::from(!keys.trim().is_empty());
    }
    assert_eq!(masters_used, 3, "counters spread over the cluster's masters");
    assert!(agent.proc.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_names_the_master_that_counts() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = RedisSentinel::start(dir.path()).await;
    let backend = Backend::start("B").await;
    let apis = write_apis(
        dir.path(),
        &[limited_api(
            "guarded",
            &backend.url(),
            json!({"rate": {"limit": 3, "periodTime": 1, "periodTimeUnit": "HOURS"}}),
        )],
    );
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--redis-url", &sentinel.redis_url()]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let statuses = burst(&[&dp], "/guarded/x", 5).await;
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (3, 2), "{statuses:?}");
    let hash = counter_hash(sentinel.master(), ":rl").await;
    assert_eq!(field(&hash, "counter"), "5", "counted on the master the Sentinels name: {hash:?}");
}
