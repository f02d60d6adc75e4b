//! Bad input gets a clear error and loses nothing: tokens, licenses, configuration, broken API
//! definitions among good ones, and a Cloud Gate that is down at start or goes down mid-run.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, TEST_LICENSE_B64, get};
use hgw_tests::{Backend, CloudGateSim, eventually, run_to_exit, v4_api};
use serde_json::{Value, json};

const EXIT_CONFIG: i32 = 64;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the agent with `envs` and a node port that must never be bound, expecting exit 64 and a single
/// line on stderr that contains `expected` and never the token.
async fn expect_config_error(args: &[&str], envs: &[(&str, &str)], expected: &str) {
    let (code, stdout, stderr) = run_to_exit("hgw-agent", args, envs, TIMEOUT).await;
    assert_eq!(code, Some(EXIT_CONFIG), "exit code for {expected:?}; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of reason, got: {stderr}");
    assert!(lines[0].contains(expected), "expected {expected:?} in: {}", lines[0]);
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    for (name, value) in envs {
        if name.contains("TOKEN") && value.len() > 8 {
            assert!(!stderr.contains(value), "the token was printed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_licenses_and_flags_stop_start_up_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let url = sim.url.clone();
    let key = sim.token_key_path.display().to_string();
    let base = ["--cloud-gate-url", url.as_str(), "--node-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
    let with = |extra: &[&'static str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let license = ("GRAVITEE_LICENSE_KEY", TEST_LICENSE_B64);

    let good = sim.token().await;
    let expired = sim.mint_token(json!({"ttl_secs": -60})).await;
    let no_cpg = sim.mint_token(json!({"remove": ["cpg"]})).await;
    let empty_envs = sim.mint_token(json!({"claims": {"envs": []}})).await;
    let no_org = sim.mint_token(json!({"remove": ["org"]})).await;
    let args = with(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    expect_config_error(
        &args,
        &[("GRAVITEE_CLOUD_TOKEN", "definitely-not-a-jwt"), license],
        "cloud token is not a JWT: expected 3 dot-separated parts, found 1",
    )
    .await;
    expect_config_error(&args, &[("gravitee_cloud_token", expired.as_str()), license], "cloud token expired at").await;
    expect_config_error(
        &args,
        &[("GRAVITEE_CLOUD_TOKEN", no_cpg.as_str()), license],
        "cloud token claim `cpg` is missing",
    )
    .await;
    expect_config_error(
        &args,
        &[("GRAVITEE_CLOUD_TOKEN", empty_envs.as_str()), license],
        "cloud token claim `envs` is empty",
    )
    .await;
    expect_config_error(
        &args,
        &[("GRAVITEE_CLOUD_TOKEN", no_org.as_str()), license],
        "cloud token claim `org` is missing",
    )
    .await;
    expect_config_error(&args, &[("GRAVITEE_CLOUD_TOKEN", good.as_str())], "license missing").await;
    expect_config_error(
        &args,
        &[("GRAVITEE_CLOUD_TOKEN", good.as_str()), ("GRAVITEE_LICENSE_KEY", "%%% not base64")],
        "license key is not valid base64",
    )
    .await;
    expect_config_error(
        &[args.as_slice(), &["--license-file", "/nonexistent/license.key"]].concat(),
        &[("GRAVITEE_CLOUD_TOKEN", good.as_str())],
        "--license-file /nonexistent/license.key",
    )
    .await;

    // A token signed by someone else fails verification when a key is given.
    let other_dir = tempfile::tempdir().unwrap();
    let other_sim = CloudGateSim::start(other_dir.path(), &[]).await;
    let foreign = other_sim.token().await;
    expect_config_error(
        &[args.as_slice(), &["--cloud-token-key", key.as_str()]].concat(),
        &[("GRAVITEE_CLOUD_TOKEN", foreign.as_str()), license],
        "cloud token signature does not verify",
    )
    .await;

    // Configuration mistakes.
    expect_config_error(&["--node-listen", "127.0.0.1:0"], &[], "no config source").await;
    expect_config_error(&["--local-apis", "/nonexistent/apis"], &[], "--local-apis /nonexistent/apis").await;
    expect_config_error(
        &["--local-apis", "/tmp", "--tags", "a,!a"],
        &[],
        "sharding tag `a` is both included and excluded",
    )
    .await;
    expect_config_error(&["--local-apis", "/tmp", "--sync-interval", "soon"], &[], "--sync-interval").await;
    expect_config_error(
        &[args.as_slice(), &["--cloud-gate-ca", "/nonexistent/ca.pem"]].concat(),
        &[("GRAVITEE_CLOUD_TOKEN", good.as_str()), license],
        "--cloud-gate-ca /nonexistent/ca.pem",
    )
    .await;
    expect_config_error(&["--agent-typo", "x"], &[], "--agent-typo").await;

    // The dataplane follows the same rule.
    let (code, _, stderr) = run_to_exit("hgw-dataplane", &["--agent", "ftp://nowhere"], &[], TIMEOUT).await;
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    let (code, _, stderr) = run_to_exit("hgw-dataplane", &[], &[], TIMEOUT).await;
    assert_eq!(code, Some(EXIT_CONFIG), "missing --agent: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_definitions_are_rejected_alone_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("good").await;
    sim.put_api(v4_api("good", "/good", &backend.url())).await;
    sim.put_raw_api("broken-json", "{\"id\": \"broken-json\", \"listeners\": [").await;
    let mut jks = v4_api("tls-target", "/tls", "https://127.0.0.1:1");
    jks["endpointGroups"][0]["sharedConfiguration"] = json!({"ssl": {"trustStore": {"type": "JKS", "path": "/t.jks"}}});
    sim.put_api(jks).await;
    let mut oauth2 = v4_api("oauth2-plan", "/secured", &backend.url());
    oauth2["plans"][0]["security"]["type"] = json!("OAUTH2");
    sim.put_api(oauth2).await;
    let mut unknown_policy = v4_api("unknown-policy", "/policy", &backend.url());
    unknown_policy["flows"] = json!([{"name": "f", "selectors": [{"type": "http", "path": "/"}],
        "request": [{"name": "x", "policy": "groovy", "configuration": {"script": "1"}}]}]);
    sim.put_api(unknown_policy).await;

    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    agent.wait_synced().await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &dp.url("/good/x")).await.unwrap().status, 200, "the good API deploys");
    for path in ["/tls/x", "/secured/x", "/policy/x"] {
        assert_eq!(get(&client, &dp.url(path)).await.unwrap().status, 404, "{path} is not half-deployed");
    }

    let (_, apis) = agent.node_get("/_node/apis").await;
    let reason = |id: &str| -> String {
        apis["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} rejected: {apis}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason("broken-json").starts_with("the definition is not valid JSON"), "{}", reason("broken-json"));
    assert!(reason("tls-target").contains("endpointGroups[0].sharedConfiguration.ssl.trustStore.type"));
    assert!(
        reason("oauth2-plan").contains("plans[0].security.configuration.oauthResource"),
        "{}",
        reason("oauth2-plan")
    );
    assert!(reason("unknown-policy").contains("policy `groovy` is not supported"));
    assert_eq!(apis["deployed"].as_array().unwrap().len(), 1);

    // The same list through the Admin RPC's JSON mapping is covered in grpc_reflection.rs; the log
    // names each rejection too.
    assert!(agent.proc.stderr().contains("API rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_gate_down_at_start_then_up() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("A").await;
    sim.put_api(v4_api("api", "/api", &backend.url())).await;
    sim.set_fault(json!({"target": "sync", "status": 503})).await;

    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    let failing: Value = eventually("sync reports the outage", TIMEOUT, || async {
        let (status, body) = agent.node_get("/_node/sync").await;
        (status == 503 && body["lastOnError"] == true).then_some(body)
    })
    .await;
    assert!(failing["lastErrorMessage"].as_str().unwrap().contains("503"), "{failing}");
    assert_eq!(failing["initialDone"], false);
    assert!(!dp.is_ready().await, "no config yet, so not ready");
    let (health, _) = agent.node_get("/_node/health").await;
    assert_eq!(health, 200, "the agent itself is healthy while it retries");

    sim.clear_faults().await;
    agent.wait_synced().await;
    dp.wait_ready().await;
    assert_eq!(get(&reqwest::Client::new(), &dp.url("/api/x")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_gate_down_mid_run_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("A").await;
    sim.put_api(v4_api("api", "/api", &backend.url())).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let client = reqwest::Client::new();

    // Connections dropped without an answer, on every Cloud Gate path.
    sim.set_fault(json!({"target": "all", "drop": true})).await;
    eventually("the agent notices", TIMEOUT, || async {
        let (_, body) = agent.node_get("/_node/sync").await;
        (body["lastOnError"] == true).then_some(())
    })
    .await;
    let errors_before = agent.node_get("/_node/sync").await.1["totalOnErrors"].as_u64().unwrap();
    for _ in 0..30 {
        let reply = get(&client, &dp.url("/api/x")).await.unwrap();
        assert_eq!(reply.status, 200, "the last good config keeps serving: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = agent.node_get("/_node/sync").await;
    assert_eq!(status, 200, "initial sync was done, so /_node/sync stays 200: {body}");
    assert!(body["totalOnErrors"].as_u64().unwrap() >= errors_before);

    // Back up: a change made during the outage arrives.
    sim.put_api(v4_api("api", "/api-after", &backend.url())).await;
    sim.clear_faults().await;
    eventually("the change made during the outage arrives", Duration::from_secs(60), || async {
        let reply = get(&client, &dp.url("/api-after/x")).await?;
        (reply.status == 200).then_some(())
    })
    .await;
    // The dataplane may serve the change a moment before the sync that pushed it records its success.
    eventually("`/_node/sync` reports the successful sync", TIMEOUT, || async {
        let (_, body) = agent.node_get("/_node/sync").await;
        (body["lastOnError"] == false).then_some(())
    })
    .await;
    let metrics = agent.node_text("/_node/metrics/prometheus").await;
    assert!(metrics.lines().any(|l| l.starts_with("hgw_agent_sync_errors_total ") && !l.ends_with(" 0")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cloud_gate_and_wrong_ca_are_retried_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let token = sim.token().await;
    // Without --cloud-gate-ca the emulator's certificate is not trusted: TLS fails, the agent retries.
    let args: Vec<String> =
        ["--cloud-gate-url", sim.url.as_str(), "--sync-interval", "500ms", "--grpc-listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let addr_file = dir.path().join("untrusted-addr.json");
    let mut full = args.clone();
    full.extend(["--node-listen".into(), "127.0.0.1:0".into(), "--addr-file".into(), addr_file.display().to_string()]);
    let envs = [
        ("GRAVITEE_CLOUD_TOKEN".to_owned(), token.clone()),
        ("GRAVITEE_LICENSE_KEY".to_owned(), TEST_LICENSE_B64.to_owned()),
        ("HGW_STATE_DIR".to_owned(), dir.path().join("state").display().to_string()),
    ];
    let mut proc =
        hgw_tests::Proc::spawn_path(&hgw_tests::bin_path("hgw-agent"), &full, &envs, dir.path(), "untrusted");
    let addrs = hgw_tests::read_addr_file(&addr_file, TIMEOUT).await;
    let node = format!("http://{}/_node/sync", addrs["node"].as_str().unwrap());
    let body: Value = eventually("TLS failure reported", TIMEOUT, || async {
        let body: Value = reqwest::get(&node).await.ok()?.json().await.ok()?;
        (body["lastOnError"] == true).then_some(body)
    })
    .await;
    assert!(body["lastErrorMessage"].as_str().unwrap().contains("unreachable"), "{body}");
    assert!(proc.is_running(), "a TLS failure is retried, not fatal");
    assert_eq!(sim.stats().await["unauthorized"], 0);
    assert!(!proc.stderr().contains(&token));
}
