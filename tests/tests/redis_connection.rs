//! The agent's Redis connection, end to end: the real `hgw-agent` against real `redis-server`s
//! (standalone with a password, TLS with a private CA, Cluster, Sentinel), configured by
//! `--redis-url` or Gravitee's `gravitee_ratelimit_*` variables. Health and the `hgw_agent_redis_up`
//! gauge follow Redis; an outage never stops the gateway; the password is never printed; bad settings
//! stop start-up with exit 64.

use std::path::Path;
use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, get};
use hgw_tests::{
    Backend, RedisCluster, RedisOptions, RedisSentinel, RedisServer, TestCa, eventually, run_to_exit, v4_api,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_CONFIG: i32 = 64;

/// An agent in local mode (its own empty API folder) with `extra` flags and `envs`.
async fn local_agent(dir: &Path, label: &str, extra: &[&str], envs: &[(&str, &str)]) -> Agent {
    let apis = dir.join(format!("{label}-apis"));
    std::fs::create_dir_all(&apis).unwrap();
    let reports = dir.join(format!("{label}-reports.ndjson"));
    Agent::start_local_with_env(dir, label, &apis, &reports, extra, envs).await
}

/// The `redis` entry of `/_node/health` once it satisfies `accept`; the node itself stays UP (200).
async fn redis_health(agent: &Agent, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    eventually(what, TIMEOUT, || async {
        let (status, body) = agent.node_get("/_node/health").await;
        assert_eq!((status, &body["status"]), (200, &Value::from("UP")), "Redis never turns the node DOWN: {body}");
        accept(&body["redis"]).then(|| body["redis"].clone())
    })
    .await
}

async fn healthy(agent: &Agent) -> Value {
    redis_health(agent, "redis healthy on /_node/health", |redis| redis["healthy"] == true).await
}

async fn unhealthy(agent: &Agent) -> Value {
    redis_health(agent, "redis unhealthy on /_node/health", |redis| {
        redis["healthy"] == false && redis["error"] != "pending"
    })
    .await
}

/// The value of an unlabelled Prometheus sample.
async fn gauge(agent: &Agent, name: &str) -> Option<u64> {
    let text = agent.node_text("/_node/metrics/prometheus").await;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn assert_not_printed(agent: &Agent, secret: &str) {
    let output = agent.proc.stdout() + &agent.proc.stderr();
    assert!(!output.contains(secret), "the Redis password appeared in the agent's output:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_with_password_healthy_and_wrong_password_reported() {
    let dir = tempfile::tempdir().unwrap();
    let password = "s3cret-redis-pw";
    let server = RedisServer::start(dir.path(), RedisOptions { password: Some(password.into()), tls: None }).await;

    let agent = local_agent(dir.path(), "agent", &["--redis-url", &server.url()], &[]).await;
    let redis = healthy(&agent).await;
    assert_eq!(redis["mode"], "standalone");
    assert_eq!(redis["description"], format!("standalone 127.0.0.1:{} db 0, TLS off, password", server.port()));
    eventually("hgw_agent_redis_up 1", TIMEOUT, || async {
        (gauge(&agent, "hgw_agent_redis_up").await == Some(1)).then_some(())
    })
    .await;
    assert_eq!(gauge(&agent, "hgw_agent_redis_configured").await, Some(1));
    assert!(agent.proc.stderr().contains("rate-limit counters and last-good snapshot are shared there"));

    // Wrong password: unhealthy with the reason, and the agent keeps serving.
    let wrong = local_agent(
        dir.path(),
        "wrong",
        &["--redis-url", &format!("redis://:not-the-{password}@127.0.0.1:{}", server.port())],
        &[],
    )
    .await;
    let redis = unhealthy(&wrong).await;
    assert_eq!(redis["error"], "auth", "{redis}");
    assert!(redis["message"].as_str().unwrap().starts_with("Redis refused the credentials"), "{redis}");
    assert_eq!(wrong.node_get("/_node/sync").await.0, 200, "the agent keeps serving its config");
    assert_eq!(gauge(&wrong, "hgw_agent_redis_up").await, Some(0));

    // Gravitee's variables reach the same Redis.
    let port = server.port().to_string();
    let gravitee = local_agent(
        dir.path(),
        "gravitee",
        &[],
        &[
            ("GRAVITEE_RATELIMIT_TYPE", "redis"),
            ("GRAVITEE_RATELIMIT_REDIS_HOST", "127.0.0.1"),
            ("gravitee_ratelimit_redis_port", &port),
            ("GRAVITEE_RATELIMIT_REDIS_PASSWORD", password),
        ],
    )
    .await;
    healthy(&gravitee).await;

    for agent in [&agent, &wrong, &gravitee] {
        assert_not_printed(agent, password);
        let (_, body) = agent.node_get("/_node/health").await;
        assert!(!body.to_string().contains(password), "{body}");
    }

    // Without Redis the agent says state stays in memory.
    let plain = local_agent(dir.path(), "plain", &[], &[]).await;
    let (_, body) = plain.node_get("/_node/health").await;
    assert!(body.get("redis").is_none(), "{body}");
    assert_eq!(gauge(&plain, "hgw_agent_redis_configured").await, Some(0));
    assert!(plain.proc.stderr().contains("no Redis configured: rate-limit counters are kept in this agent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("hgw redis test CA").unwrap();
    let server =
        RedisServer::start(dir.path(), RedisOptions { password: Some("tls-pw-123".into()), tls: Some(&ca) }).await;
    let ca_path = server.ca_path().unwrap().display().to_string();
    let agent = local_agent(dir.path(), "agent", &["--redis-url", &server.url(), "--redis-ca", &ca_path], &[]).await;
    let redis = healthy(&agent).await;
    assert!(redis["description"].as_str().unwrap().contains("TLS on (--redis-ca)"), "{redis}");

    // Without the CA the server certificate is not trusted: unhealthy, not a crash.
    let untrusted = local_agent(dir.path(), "untrusted", &["--redis-url", &server.url()], &[]).await;
    let redis = unhealthy(&untrusted).await;
    assert_eq!(redis["error"], "unavailable", "{redis}");
    assert_not_printed(&agent, "tls-pw-123");
    assert_not_printed(&untrusted, "tls-pw-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_sentinel_are_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(&dir.path().join("cluster")).await;
    let agent = local_agent(dir.path(), "cluster", &["--redis-url", &cluster.redis_url()], &[]).await;
    assert_eq!(healthy(&agent).await["mode"], "cluster");

    // Gravitee's cluster node variables.
    let nodes = cluster.urls();
    let mut envs: Vec<(String, String)> = vec![("gravitee_ratelimit_type".into(), "redis".into())];
    for (i, node) in nodes.iter().enumerate() {
        let (host, port) = node.rsplit_once(':').unwrap();
        envs.push((format!("GRAVITEE_RATELIMIT_REDIS_CLUSTER_NODES_{i}_HOST"), host.into()));
        envs.push((format!("GRAVITEE_RATELIMIT_REDIS_CLUSTER_NODES_{i}_PORT"), port.into()));
    }
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gravitee = local_agent(dir.path(), "cluster-gravitee", &[], &envs).await;
    let redis = healthy(&gravitee).await;
    assert_eq!(redis["mode"], "cluster");
    assert!(redis["description"].as_str().unwrap().contains(&nodes[2]), "{redis}");

    // Cluster over TLS with a private CA: --redis-ca is standalone-only, SSL_CERT_FILE does it.
    let ca = TestCa::new("hgw redis cluster CA").unwrap();
    let tls_cluster = RedisCluster::start_tls(&dir.path().join("tls-cluster"), &ca).await;
    assert!(tls_cluster.redis_url().starts_with("rediss+cluster://"));
    let ca_file = tls_cluster.ca_path().unwrap().display().to_string();
    let agent = local_agent(
        dir.path(),
        "tls-cluster",
        &["--redis-url", &tls_cluster.redis_url()],
        &[("SSL_CERT_FILE", &ca_file)],
    )
    .await;
    let redis = healthy(&agent).await;
    assert!(redis["description"].as_str().unwrap().contains("TLS on"), "{redis}");
    drop(tls_cluster);

    let sentinel = RedisSentinel::start(&dir.path().join("sentinel")).await;
    let agent = local_agent(dir.path(), "sentinel", &["--redis-url", &sentinel.redis_url()], &[]).await;
    assert_eq!(healthy(&agent).await["mode"], "sentinel");

    // Gravitee's Sentinel variables.
    let ports: Vec<String> = sentinel.sentinel_ports().iter().map(u16::to_string).collect();
    let gravitee = local_agent(
        dir.path(),
        "sentinel-gravitee",
        &[],
        &[
            ("gravitee_ratelimit_type", "redis"),
            ("gravitee_ratelimit_redis_sentinel_master", RedisSentinel::MASTER),
            ("gravitee_ratelimit_redis_sentinel_nodes_0_host", "127.0.0.1"),
            ("gravitee_ratelimit_redis_sentinel_nodes_0_port", &ports[0]),
            ("gravitee_ratelimit_redis_sentinel_nodes_1_host", "127.0.0.1"),
            ("gravitee_ratelimit_redis_sentinel_nodes_1_port", &ports[1]),
        ],
    )
    .await;
    assert_eq!(healthy(&gravitee).await["mode"], "sentinel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_the_gateway_serving_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start(dir.path(), RedisOptions::default()).await;
    let backend = Backend::start("outage").await;
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    std::fs::write(apis.join("api.json"), v4_api("outage", "/outage", &backend.url()).to_string()).unwrap();
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "agent", &apis, &reports, &["--redis-url", &server.url()]).await;
    healthy(&agent).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    let url = dp.url("/outage/x");
    assert_eq!(get(&client, &url).await.expect("dataplane answers").status, 200);

    let logged_before = agent.proc.stderr().len();
    server.kill().await;
    let redis = unhealthy(&agent).await;
    assert_eq!(redis["error"], "unavailable", "{redis}");
    assert_eq!(gauge(&agent, "hgw_agent_redis_up").await, Some(0));
    assert_eq!(get(&client, &url).await.expect("still serving").status, 200, "requests go on without Redis");
    // Several failed pings, one log line: transitions are logged, not every ping.
    eventually("three failed pings", TIMEOUT, || async {
        (gauge(&agent, "hgw_agent_redis_ping_failures_total").await? >= 3).then_some(())
    })
    .await;
    let since_kill = || agent.proc.stderr()[logged_before..].to_owned();
    assert_eq!(since_kill().matches("Redis is down").count(), 1, "{}", since_kill());

    server.restart().await;
    healthy(&agent).await;
    assert_eq!(gauge(&agent, "hgw_agent_redis_up").await, Some(1));
    assert_eq!(since_kill().matches("Redis is reachable").count(), 1, "{}", since_kill());
    assert_eq!(get(&client, &url).await.unwrap().status, 200);
}

/// Runs the agent in local mode, expecting exit 64 and one line on stderr containing `expected` and
/// never `secret`.
async fn expect_config_error(extra: &[&str], envs: &[(&str, &str)], expected: &str, secret: &str) {
    let mut args = vec!["--local-apis", "/tmp", "--node-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_to_exit("hgw-agent", &args, envs, TIMEOUT).await;
    assert_eq!(code, Some(EXIT_CONFIG), "exit code for {expected:?}; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of reason, got: {stderr}");
    assert!(lines[0].contains(expected), "expected {expected:?} in: {}", lines[0]);
    assert!(!stderr.contains(secret) && !stdout.contains(secret), "the password was printed: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_redis_settings_stop_start_up_with_exit_64() {
    let secret = "never-print-me";
    expect_config_error(
        &[],
        &[
            ("GRAVITEE_RATELIMIT_TYPE", "redis"),
            ("GRAVITEE_RATELIMIT_REDIS_PASSWORD", secret),
            ("gravitee_ratelimit_redis_sentinel_master", "mymaster"),
            ("gravitee_ratelimit_redis_sentinel_nodes_0_host", "127.0.0.1"),
            ("gravitee_ratelimit_redis_cluster_nodes_0_host", "127.0.0.1"),
        ],
        "Redis is either Sentinel or Cluster, not both",
        secret,
    )
    .await;
    expect_config_error(
        &["--redis-url", "redis://:never-print-me@127.0.0.1:port"],
        &[],
        "--redis-url: host 1: the port is not a number",
        secret,
    )
    .await;
    expect_config_error(
        &[],
        &[("HGW_REDIS_URL", "memcached://:never-print-me@127.0.0.1:11211")],
        "--redis-url: unknown scheme `memcached://`",
        secret,
    )
    .await;
    expect_config_error(
        &["--redis-url", "rediss+cluster://:never-print-me@127.0.0.1:7000", "--redis-ca", "/tmp"],
        &[],
        "supported for standalone Redis only",
        secret,
    )
    .await;
    expect_config_error(
        &["--redis-url", "redis://127.0.0.1", "--redis-timeout", "soon"],
        &[],
        "--redis-timeout",
        secret,
    )
    .await;
}
