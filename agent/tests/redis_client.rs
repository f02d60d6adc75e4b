//! `hgw_agent::redis` against real `redis-server`s: every call of the handle, timeouts told apart
//! from outages and bad credentials, recovery after Redis comes back, TLS with a private CA, Cluster
//! and Sentinel.

use std::sync::Arc;
use std::time::Duration;

use hgw_agent::metrics::Metrics;
use hgw_agent::redis::{Phase, Redis, RedisConfig, RedisError, RedisHealth};
use hgw_tests::{RedisCluster, RedisOptions, RedisSentinel, RedisServer, TestCa, eventually};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(20);

fn redis(url: &str) -> Redis {
    Redis::new(&RedisConfig::from_url(url).expect("valid URL")).expect("client builds")
}

/// Gravitee's rate-limit script shape: count in a hash, set the window on first use.
const COUNTER_SCRIPT: &str = r#"
local counter = redis.call('HINCRBY', KEYS[1], 'counter', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'limit') == 0 then
  redis.call('HSET', KEYS[1], 'limit', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return counter
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_commands_pipelines_scripts_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path(), RedisOptions { password: Some("pw-1".into()), tls: None }).await;
    let redis = redis(&server.url());

    redis.ping().await.unwrap();
    assert_eq!(redis.get_bytes("missing").await.unwrap(), None);
    let blob = [0u8, 159, 146, 150, 255];
    redis.set_bytes("snapshot", &blob).await.unwrap();
    assert_eq!(redis.get_bytes("snapshot").await.unwrap().as_deref(), Some(&blob[..]));

    let n: i64 = redis.query(redis::cmd("INCRBY").arg("n").arg(5)).await.unwrap();
    assert_eq!(n, 5);
    let (a, b): (i64, i64) =
        redis.query_pipeline(redis::pipe().atomic().cmd("INCR").arg("n").cmd("INCR").arg("n")).await.unwrap();
    assert_eq!((a, b), (6, 7));

    let script = redis::Script::new(COUNTER_SCRIPT);
    let count = |weight: i64| {
        let mut invocation = script.prepare_invoke();
        invocation.key("ratelimit:plan:rl").arg(weight).arg(100).arg(60_000);
        invocation
    };
    assert_eq!(redis.invoke_script::<i64>(&count(1)).await.unwrap(), 1);
    // After a Redis restart or failover the script cache is empty: EVALSHA falls back to loading it.
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).await.trim(), "OK");
    assert_eq!(redis.invoke_script::<i64>(&count(2)).await.unwrap(), 3);
    assert_eq!(server.cli(&["HGET", "ratelimit:plan:rl", "limit"]).await.trim(), "100");

    // A type mismatch is the command's fault, not an outage.
    let error = redis.query::<i64>(redis::cmd("HGETALL").arg("snapshot")).await.unwrap_err();
    assert_eq!(error.kind(), "command", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_outages_and_credentials_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start(dir.path(), RedisOptions { password: Some("right".into()), tls: None }).await;

    let wrong = redis(&format!("redis://:wrong-secret@127.0.0.1:{}", server.port()));
    let error = wrong.ping().await.unwrap_err();
    assert_eq!(error.kind(), "auth", "{error}");
    assert!(!error.to_string().contains("wrong-secret"), "{error}");

    let redis = redis(&server.url());
    // BLPOP holds the answer for a second; the 200 ms command timeout ends the wait.
    let error = redis.query::<Option<(String, String)>>(redis::cmd("BLPOP").arg("empty").arg(1)).await.unwrap_err();
    assert!(matches!(error, RedisError::Timeout { phase: Phase::Command, .. }), "{error:?}");
    assert!(error.is_timeout());
    redis.ping().await.unwrap();

    server.kill().await;
    let error = eventually("calls to fail once Redis is gone", TIMEOUT, || async { redis.ping().await.err() }).await;
    assert_eq!(error.kind(), "unavailable", "{error}");

    // The same handle recovers by itself once Redis is back.
    server.restart().await;
    eventually("the handle to reconnect", TIMEOUT, || async { redis.ping().await.ok() }).await;
    redis.set_bytes("k", b"v").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_tracks_health_and_the_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start(dir.path(), RedisOptions::default()).await;
    let redis = redis(&server.url());
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(redis.clone().monitor(metrics.clone(), Duration::from_millis(100), cancel.clone()));

    eventually("health up", TIMEOUT, || async { (redis.health() == RedisHealth::Up).then_some(()) }).await;
    assert_eq!(metrics.redis_up.get(), 1);
    server.kill().await;
    let kind = eventually("health down", TIMEOUT, || async {
        match redis.health() {
            RedisHealth::Down { kind, .. } => Some(kind),
            _ => None,
        }
    })
    .await;
    assert_eq!(kind, "unavailable");
    assert_eq!(metrics.redis_up.get(), 0);
    assert!(metrics.redis_ping_failures.get() >= 1);
    server.restart().await;
    eventually("health up again", TIMEOUT, || async { (redis.health() == RedisHealth::Up).then_some(()) }).await;
    assert_eq!(metrics.redis_up.get(), 1);
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("redis test CA").unwrap();
    let server = RedisServer::start(dir.path(), RedisOptions { password: Some("tls-pw".into()), tls: Some(&ca) }).await;
    assert!(server.url().starts_with("rediss://"));

    let mut config = RedisConfig::from_url(&server.url()).unwrap();
    config.ca_pem = Some(ca.cert_pem().as_bytes().to_vec());
    let trusted = Redis::new(&config).unwrap();
    trusted.ping().await.unwrap();
    trusted.set_bytes("over-tls", b"yes").await.unwrap();
    assert_eq!(server.cli(&["GET", "over-tls"]).await.trim(), "yes");

    // The system roots do not know the test CA: the handshake fails, reported as an outage.
    let untrusted = redis(&server.url());
    let error = untrusted.ping().await.unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_keys_over_masters() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path()).await;
    let redis = redis(&cluster.redis_url());
    assert_eq!(redis.mode(), "cluster");
    redis.ping().await.unwrap();
    for i in 0..20 {
        redis.set_bytes(&format!("key-{i}"), format!("value-{i}").as_bytes()).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(redis.get_bytes(&format!("key-{i}")).await.unwrap(), Some(format!("value-{i}").into_bytes()));
    }
    // Keys land on more than one master.
    let mut holders = 0;
    for node in cluster.nodes() {
        let count: usize = node.cli(&["DBSIZE"]).await.trim().parse().unwrap();
        holders += usize::from(count > 0);
    }
    assert!(holders >= 2, "keys on {holders} node(s)");
    let script = redis::Script::new(COUNTER_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation.key("ratelimit:{plan}:rl").arg(1).arg(10).arg(60_000);
    assert_eq!(redis.invoke_script::<i64>(&invocation).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_names_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = RedisSentinel::start(dir.path()).await;
    let redis = redis(&sentinel.redis_url());
    assert_eq!(redis.mode(), "sentinel");
    redis.ping().await.unwrap();
    redis.set_bytes("via-sentinel", b"1").await.unwrap();
    assert_eq!(sentinel.master().cli(&["GET", "via-sentinel"]).await.trim(), "1");
}
