//! What a caller of the agent may ask for, end to end with the real binaries: rate-limit counters only
//! for deployed policies (a forged `hgw.v1.RateLimit/Acquire` over the agent's Unix socket, as a
//! dataplane would send it, and a real `redis-server` whose other keys stay untouched), a bounded
//! in-memory counter table, a bound on definition size, and the node API's bearer token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hgw_proto::v1 as pb;
use hgw_proto::v1::rate_limit_client::RateLimitClient;
use hgw_tests::gateway::{Agent, Dataplane, PROPAGATION, get};
use hgw_tests::redis::{RedisOptions, RedisServer};
use hgw_tests::{Backend, eventually, v4_api};
use serde_json::{Value, json};

/// An API at `/{id}` whose key-less plan (`{id}-keyless`) runs one counting step with `configuration`.
fn limited_api(id: &str, target: &str, policy: &str, configuration: Value) -> Value {
    let mut api = v4_api(id, &format!("/{id}"), target);
    api["flows"] = json!([{"name": "limit", "request": [{"policy": policy, "configuration": configuration}]}]);
    api
}

fn write_api(apis: &Path, api: &Value) {
    std::fs::create_dir_all(apis).unwrap();
    std::fs::write(apis.join(format!("{}.json", api["id"].as_str().unwrap())), api.to_string()).unwrap();
}

fn hit(api: &str, plan: &str, step: u32) -> pb::CounterHit {
    pb::CounterHit {
        api_id: api.into(),
        plan_id: plan.into(),
        step,
        subscription: "127.0.0.1".into(),
        count: 1,
        ..Default::default()
    }
}

async fn acquire(
    client: &mut RateLimitClient<tonic::transport::Channel>,
    hits: Vec<pb::CounterHit>,
) -> Vec<pb::CounterState> {
    let request = pb::AcquireRequest { dataplane_id: "forger".into(), hits };
    client.acquire(request).await.expect("Acquire answers").into_inner().counters
}

/// Every key in `redis`.
async fn keys(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis.cli(&["--scan"]).await.lines().map(str::to_owned).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_counter_names_counts_and_leases_are_refused_and_other_redis_keys_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), RedisOptions::default()).await;
    // An application's own data in the same Redis.
    assert_eq!(redis.cli(&["HSET", "app:user:42", "f", "v"]).await.trim(), "1");
    let backend = Backend::start("B").await;
    let apis = dir.path().join("apis");
    let rate = |limit: u64| json!({"rate": {"limit": limit, "periodTime": 1, "periodTimeUnit": "HOURS"}});
    write_api(&apis, &limited_api("limited", &backend.url(), "rate-limit", rate(3)));
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--redis-url", &redis.url()]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let mut client = RateLimitClient::new(agent.unix_channel().await);
    let plan = "limited-keyless";

    // A well-formed hit on the deployed step counts, with the policy's limit.
    let ok = acquire(&mut client, vec![hit("limited", plan, 1)]).await;
    assert_eq!((ok[0].refused.as_str(), ok[0].value, ok[0].limit), ("", 1, 3), "{ok:?}");

    // Names of counters that are not deployed, and counts or leases beyond the policy: each refused
    // alone, with the reason; the good hit in the same batch still counts.
    let forged = vec![
        hit("payments", plan, 1),
        hit("limited", "gold", 1),
        hit("limited", plan, 7),
        pb::CounterHit { count: 1_000_000, ..hit("limited", plan, 1) },
        pb::CounterHit { count: 0, lease: 1_000_000_000, ..hit("limited", plan, 1) },
        hit("limited", plan, 1),
    ];
    let answers = acquire(&mut client, forged).await;
    let reasons: Vec<&str> = answers.iter().map(|a| a.refused.as_str()).collect();
    assert!(reasons[0].contains("API `payments` is not deployed"), "{reasons:?}");
    assert!(reasons[1].contains("has no plan `gold`"), "{reasons:?}");
    assert!(reasons[2].contains("no rate-limit, quota or spike-arrest step 7"), "{reasons:?}");
    assert!(reasons[3].contains("count 1000000"), "{reasons:?}");
    assert!(reasons[4].contains("lease 1000000000 is more than the policy's 1"), "{reasons:?}");
    assert_eq!((reasons[5], answers[5].value), ("", 2), "the good hit counted once: {answers:?}");
    assert!(answers[..5].iter().all(|a| a.value == 0 && a.granted == 0), "refused hits count nothing");

    // A batch over the contract's bound is refused whole.
    let flood = vec![hit("limited", plan, 1); hgw_proto::counters::MAX_HITS_PER_CALL + 1];
    let status =
        client.acquire(pb::AcquireRequest { dataplane_id: "forger".into(), hits: flood }).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A custom key (or subscription) carrying Redis protocol or a huge value stays inside the prefix.
    let sneaky = pb::CounterHit {
        custom_key: "x\r\nDEL app:user:42\r\n".into(),
        subscription: "s".repeat(100_000),
        ..hit("limited", plan, 1)
    };
    assert_eq!(acquire(&mut client, vec![sneaky]).await[0].refused, "");

    // Only hgw's counter keys were written; the application's hash is as it was, without expiry.
    let all = keys(&redis).await;
    assert!(all.iter().all(|k| k == "app:user:42" || k.starts_with("ratelimit:")), "{all:?}");
    assert!(all.iter().all(|k| k.len() < 200), "{all:?}");
    assert_eq!(redis.cli(&["HGETALL", "app:user:42"]).await.trim(), "f\nv");
    assert_eq!(redis.cli(&["PTTL", "app:user:42"]).await.trim(), "-1");
    let refused = agent.metric("hgw_agent_ratelimit_refused_total").await.unwrap_or(0.0);
    assert!(refused >= 5.0, "refusals are counted: {refused}");

    // The policy changes: the agent counts with the new limit at once.
    write_api(&apis, &limited_api("limited", &backend.url(), "rate-limit", rate(50)));
    eventually("the agent counts with the new limit", PROPAGATION, || async {
        let mut client = client.clone();
        let answer = acquire(&mut client, vec![hit("limited", plan, 1)]).await;
        (answer[0].limit == 50).then_some(())
    })
    .await;
    // The policy is removed: a dataplane still naming its step (one with the older config) is refused,
    // and applies the policy's errorStrategy; dataplanes with the new config no longer ask.
    let mut unlimited = v4_api("limited", "/limited", &backend.url());
    unlimited["description"] = json!("no limit any more");
    write_api(&apis, &unlimited);
    eventually("the removed step is refused", PROPAGATION, || async {
        let mut client = client.clone();
        let answer = acquire(&mut client, vec![hit("limited", plan, 1)]).await;
        answer[0].refused.contains("no rate-limit, quota or spike-arrest step 1").then_some(())
    })
    .await;
    let reply = get(&reqwest::Client::new(), &dp.url("/limited/x")).await.expect("dataplane answers");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_in_memory_counter_table_applies_the_error_strategy_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("B").await;
    let apis = dir.path().join("apis");
    let configuration = json!({
        "errorStrategy": "BLOCK_ON_INTERNAL_ERROR",
        "rate": {"limit": 100, "periodTime": 1, "periodTimeUnit": "HOURS", "key": "{#request.headers['X-Client'][0]}"}
    });
    write_api(&apis, &limited_api("per-client", &backend.url(), "rate-limit", configuration));
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--rate-limit-max-keys", "2"]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    let send = |who: &'static str| {
        let client = client.clone();
        let url = dp.url("/per-client/x");
        async move {
            let response = client.get(url).header("X-Client", who).send().await.expect("dataplane answers");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    assert_eq!(send("alice").await.0, 200);
    assert_eq!(send("bob").await.0, 200);
    // A third client finds the table full: BLOCK_ON_INTERNAL_ERROR answers 429 with Gravitee's key.
    let (status, body) = send("mallory").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Rate limit blocked the query due to internal error"), "{body}");
    assert_eq!(send("alice").await.0, 200, "counters already in the table keep counting");
    let full = agent.metric("hgw_agent_ratelimit_table_full_total").await.unwrap_or(0.0);
    assert!(full >= 1.0, "table-full refusals are counted: {full}");
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_over_the_bound_is_rejected_alone_and_unread() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("B").await;
    let apis = dir.path().join("apis");
    write_api(&apis, &v4_api("small", "/small", &backend.url()));
    let mut big = v4_api("big", "/big", &backend.url());
    big["description"] = json!("x".repeat(200 * 1024));
    write_api(&apis, &big);
    // A definition file that is a symlink to an endless device.
    std::os::unix::fs::symlink("/dev/zero", apis.join("zero.json")).unwrap();
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--max-definition-bytes", "64KiB"]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let reply = get(&reqwest::Client::new(), &dp.url("/small/x")).await.expect("dataplane answers");
    assert_eq!(reply.status, 200, "the other definitions deploy: {}", reply.body);
    assert_eq!(get(&reqwest::Client::new(), &dp.url("/big/x")).await.unwrap().status, 404);
    let (_, body) = agent.node_get("/_node/apis").await;
    let rejected = body["rejected"].to_string();
    assert!(rejected.contains("more than --max-definition-bytes (65536)"), "{body}");
    assert!(rejected.contains("not a regular file"), "{body}");
    let peak = peak_rss_kib(agent.proc.pid());
    assert!(peak < 200 * 1024, "the agent read neither file: peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_api_token_is_required_everywhere_but_a_bare_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("B").await;
    let apis = dir.path().join("apis");
    write_api(&apis, &v4_api("hello", "/hello", &backend.url()));
    let token = "node-api-token-0123456789abcdef";
    let token_file: PathBuf = dir.path().join("node-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let reports = dir.path().join("reports.ndjson");
    let args = ["--node-api-token-file", token_file.to_str().unwrap()];
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &args).await;

    for path in ["/_node/apis", "/_node/sync", "/_node/dataplanes", "/_node/metrics/prometheus"] {
        let (status, body) = agent.node_get_as(path, None).await;
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(!body.contains("hello"), "{path}: {body}");
        assert_eq!(agent.node_get_as(path, Some("wrong-token-0123456789")).await.0, 401, "{path}, wrong token");
        let (status, body) = eventually(&format!("{path} with the token"), Duration::from_secs(30), || async {
            let (status, body) = agent.node_get_as(path, Some(token)).await;
            (status == 200).then_some((status, body))
        })
        .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Probes reach health without credentials, and learn only UP or DOWN.
    let (status, body) = agent.node_get_as("/_node/health", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"UP"}"#));
    let (status, body) = agent.node_get_as("/_node/health", Some(token)).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"mode\":\"local\""), "the details need the token: {body}");
    assert!(!agent.proc.stderr().contains(token), "the token is never logged");
}
