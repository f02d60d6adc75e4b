//! Trust between agent and dataplanes, tried the way an attacker on the host or the network would:
//! real binaries, real grpcurl, certificates from the agent's own CA (`hgw-agent pki issue`).

use std::path::Path;
use std::time::Duration;

use hgw_tests::gateway::{Agent, AgentTarget, Dataplane, get, run_grpcurl};
use hgw_tests::{Backend, TestCa, eventually, run_to_exit, v4_api};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

fn write_api(apis: &Path, api: &Value) {
    std::fs::create_dir_all(apis).unwrap();
    std::fs::write(apis.join(format!("{}.json", api["id"].as_str().unwrap())), api.to_string()).unwrap();
}

/// grpcurl with `prefix` flags, then `args`.
async fn grpcurl(prefix: &[String], args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = prefix.iter().map(String::as_str).collect();
    all.extend_from_slice(&["-max-time", "15"]);
    all.extend_from_slice(args);
    run_grpcurl(&all).await
}

/// One call of every hgw.v1 service a caller could try, with a body grpcurl accepts.
const CALLS: &[(&str, &str)] = &[
    ("hgw.v1.ConfigDiscovery/Stream", r#"{"hello":{"dataplaneId":"evil"}}"#),
    ("hgw.v1.Analytics/Report", r#"{"dataplaneId":"evil","sequence":"1"}"#),
    (
        "hgw.v1.RateLimit/Acquire",
        r#"{"hits":[{"apiId":"a","planId":"p","step":1,"subscription":"app:user:42","count":"1"}]}"#,
    ),
    ("hgw.v1.Admin/DumpConfig", "{}"),
    ("hgw.v1.Admin/ListDataplanes", "{}"),
    ("hgw.v1.Admin/GetSyncStatus", "{}"),
    ("hgw.v1.Identity/Renew", r#"{"csrPem":"x"}"#),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_is_mutual_tls_and_every_call_is_authorized_by_identity() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("B").await;
    let apis = dir.path().join("apis");
    write_api(&apis, &v4_api("hello", "/hello", &backend.url()));
    let agent = Agent::start_local(dir.path(), "agent", &apis, &dir.path().join("reports.ndjson"), &[]).await;
    agent.wait_synced().await;
    let tcp = agent.grpc_addr();
    let ca = agent.ca_pem_path().display().to_string();
    let cacert_only = vec!["-cacert".to_owned(), ca.clone()];
    let admin = agent.grpcurl_admin_args(dir.path()).await;
    let dp_cert = agent.issue("--dataplane", "dp-1", &dir.path().join("dp-1-cert")).await;
    let as_dp1 = vec![
        "-cacert".to_owned(),
        ca.clone(),
        "-cert".to_owned(),
        dp_cert.cert.display().to_string(),
        "-key".to_owned(),
        dp_cert.key.display().to_string(),
    ];

    // No plaintext at all: not even reflection answers.
    let (ok, _, stderr) = grpcurl(&["-plaintext".to_owned()], &[&tcp, "list"]).await;
    assert!(!ok, "plaintext reflection answered");
    eprintln!("plaintext list: {stderr}");
    for (method, body) in CALLS {
        let (ok, out, stderr) = grpcurl(&["-plaintext".to_owned()], &["-d", body, &tcp, method]).await;
        assert!(!ok && !out.contains("upserts"), "{method} answered plaintext: {out} {stderr}");
    }

    // TLS without a certificate: health and reflection answer, no hgw.v1 service does.
    let (ok, listed, stderr) = grpcurl(&cacert_only, &[&tcp, "list"]).await;
    assert!(ok && listed.contains("hgw.v1.ConfigDiscovery"), "{listed} {stderr}");
    let (ok, health, stderr) = grpcurl(&cacert_only, &[&tcp, "grpc.health.v1.Health/Check"]).await;
    assert!(ok && health.contains("SERVING"), "{health} {stderr}");
    for (method, body) in CALLS {
        let (ok, out, stderr) = grpcurl(&cacert_only, &["-d", body, &tcp, method]).await;
        assert!(!ok, "{method} answered a client without a certificate: {out}");
        assert!(stderr.contains("Unauthenticated"), "{method}: {stderr}");
        assert!(!out.contains("upserts") && !out.contains("hello"), "{method} leaked: {out}");
    }

    // A dataplane certificate: its own config stream, never Admin, never another id.
    for method in ["hgw.v1.Admin/DumpConfig", "hgw.v1.Admin/ListDataplanes"] {
        let (ok, out, stderr) = grpcurl(&as_dp1, &["-d", "{}", &tcp, method]).await;
        assert!(!ok && stderr.contains("PermissionDenied"), "{method}: {out} {stderr}");
    }
    let (ok, out, stderr) =
        grpcurl(&as_dp1, &["-d", r#"{"hello":{"dataplaneId":"dp-2"}}"#, &tcp, "hgw.v1.ConfigDiscovery/Stream"]).await;
    assert!(!ok && stderr.contains("PermissionDenied") && !out.contains("upserts"), "{out} {stderr}");
    assert!(stderr.contains("not `dp-2`"), "{stderr}");
    let (_, out, stderr) =
        grpcurl(&as_dp1, &["-d", r#"{"hello":{"dataplaneId":"dp-1"}}"#, &tcp, "hgw.v1.ConfigDiscovery/Stream"]).await;
    assert!(out.contains("upserts") && out.contains("/hello"), "its own config: {out} {stderr}");

    // An admin certificate: Admin answers.
    let (ok, out, stderr) = grpcurl(&admin, &[&tcp, "hgw.v1.Admin/ListDataplanes"]).await;
    assert!(ok, "{out} {stderr}");

    // A live dataplane's id cannot be taken over: the second stream is refused, the first keeps going.
    let dp = Dataplane::start(dir.path(), "dp-live", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let live = agent.issue("--dataplane", "dp-live", &dir.path().join("dp-live-again")).await;
    let as_live = vec![
        "-cacert".to_owned(),
        ca.clone(),
        "-cert".to_owned(),
        live.cert.display().to_string(),
        "-key".to_owned(),
        live.key.display().to_string(),
    ];
    let (ok, out, stderr) =
        grpcurl(&as_live, &["-d", r#"{"hello":{"dataplaneId":"dp-live"}}"#, &tcp, "hgw.v1.ConfigDiscovery/Stream"])
            .await;
    assert!(!ok && stderr.contains("AlreadyExists") && !out.contains("upserts"), "{out} {stderr}");
    let (_, view) = agent.node_get("/_node/dataplanes").await;
    let entry = view["dataplanes"].as_array().unwrap().iter().find(|d| d["id"] == "dp-live").cloned();
    assert_eq!(entry.as_ref().map(|d| d["connected"].clone()), Some(json!(true)), "{view}");
    // And it still gets changes.
    write_api(&apis, &v4_api("later", "/later", &backend.url()));
    let client = reqwest::Client::new();
    eventually("the live dataplane gets the change", TIMEOUT, || async {
        get(&client, &dp.url("/later/x")).await.filter(|r| r.status == 200).map(|_| ())
    })
    .await;
}

/// Writes a join-token file: a good token limited to `edge-*`, and an expired one.
fn token_files(dir: &Path) -> std::path::PathBuf {
    let tokens = dir.join("join-tokens");
    std::fs::write(
        &tokens,
        "# tokens for the trust test\n\
         good-token-0123456789 id=edge-*\n\
         old-token-0123456789 expires=2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    tokens
}

async fn joining_dataplane(dir: &Path, agent: &Agent, id: &str, token: &str) -> Dataplane {
    let token_file = dir.join(format!("{id}.token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let ca = agent.ca_pem_path().display().to_string();
    let token_arg = token_file.display().to_string();
    Dataplane::start_with(
        dir,
        id,
        AgentTarget::from(agent.tcp_url()),
        &["--agent-ca", &ca, "--join-token-file", &token_arg],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_refused_with_a_reason_then_joined_and_renewed_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("B").await;
    let apis = dir.path().join("apis");
    write_api(&apis, &v4_api("plain", "/plain", &backend.url()));
    let mut limited = v4_api("limited", "/limited", &backend.url());
    limited["flows"] = json!([{"name": "limit", "request": [{"policy": "rate-limit", "configuration":
        {"addHeaders": true, "rate": {"limit": 1000, "periodTime": 1, "periodTimeUnit": "HOURS"}}}]}]);
    write_api(&apis, &limited);
    let tokens = token_files(dir.path()).display().to_string();
    let agent = Agent::start_local(
        dir.path(),
        "agent",
        &apis,
        &dir.path().join("reports.ndjson"),
        &["--join-tokens", &tokens, "--dataplane-cert-ttl", "10s"],
    )
    .await;
    agent.wait_synced().await;

    // Refused joins: the dataplane says why and is not ready.
    let cases = [
        ("edge-wrong", "wrong-token-0123456789", "unknown join token"),
        ("edge-old", "old-token-0123456789", "join token expired"),
        ("core-1", "good-token-0123456789", "does not allow dataplane id `core-1`"),
    ];
    for (id, token, reason) in cases {
        let dp = joining_dataplane(dir.path(), &agent, id, token).await;
        eventually(&format!("{id} logs why its join was refused"), TIMEOUT, || async {
            dp.proc.stderr().contains(reason).then_some(())
        })
        .await;
        assert!(!dp.is_ready().await, "{id} is ready without a certificate");
        assert!(!dp.proc.stderr().contains(token), "{id} logged its token");
    }

    // A good token: joins, serves, and keeps serving across renewals (10 s certificates).
    let dp = joining_dataplane(dir.path(), &agent, "edge-1", "good-token-0123456789").await;
    dp.wait_ready().await;
    let joined_at = tokio::time::Instant::now();
    let client = reqwest::Client::new();
    let url = dp.url("/plain/x");
    let (mut ok, mut failed) = (0u64, 0u64);
    // Requests run until the certificate was renewed twice and the first one has expired.
    let deadline = joined_at + Duration::from_secs(120);
    loop {
        match get(&client, &url).await {
            Some(reply) if reply.status == 200 => ok += 1,
            other => {
                failed += 1;
                eprintln!("request failed: {other:?}");
            }
        }
        let renewals = agent.proc.stderr().matches("dataplane certificate renewed").count();
        if renewals >= 2 && joined_at.elapsed() > Duration::from_secs(12) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no two renewals within 120 s");
    }
    assert_eq!(failed, 0, "{ok} requests served, {failed} failed across the renewals");
    assert!(ok > 0);
    // The first certificate has expired: a connection opened now (the rate-limit counters' channel
    // connects on first use) must present the renewed one, and the agent counts the hit.
    let reply = get(&client, &dp.url("/limited/x")).await.expect("limited answers");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-rate-limit-remaining"), Some("999"), "counted by the agent: {:?}", reply.headers);
    let installs = dp.proc.stderr().matches("certificate from the agent installed").count();
    assert!(installs >= 3, "joined then renewed twice: {installs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_agent_with_another_ca_cannot_configure_a_dataplane() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("real");
    let rogue_dir = dir.path().join("rogue");
    std::fs::create_dir_all(&real_dir).unwrap();
    std::fs::create_dir_all(&rogue_dir).unwrap();
    let backend = Backend::start("B").await;
    let real_apis = real_dir.join("apis");
    write_api(&real_apis, &v4_api("real", "/real", &backend.url()));
    let rogue_apis = rogue_dir.join("apis");
    write_api(&rogue_apis, &v4_api("evil", "/", &backend.url()));
    let real = Agent::start_local(&real_dir, "agent", &real_apis, &real_dir.join("r.ndjson"), &[]).await;
    // Another agent, its own CA (its own state dir), where the dataplane believes its agent is.
    let rogue = Agent::start_local(&rogue_dir, "rogue", &rogue_apis, &rogue_dir.join("r.ndjson"), &[]).await;
    rogue.wait_synced().await;
    let issued = real.issue("--dataplane", "dp", &dir.path().join("dp-cert")).await;
    let ca = issued.ca.display().to_string();
    let (cert, key) = (issued.cert.display().to_string(), issued.key.display().to_string());
    let dp = Dataplane::start_with(
        dir.path(),
        "dp",
        AgentTarget::from(rogue.tcp_url()),
        &["--agent-ca", &ca, "--cert", &cert, "--key", &key],
    )
    .await;
    eventually("the dataplane refuses the rogue agent's certificate", TIMEOUT, || async {
        let log = dp.proc.stderr();
        (log.contains("config stream to the agent lost") && log.contains("certificate")).then_some(())
    })
    .await;
    assert!(!dp.is_ready().await, "configured by a rogue agent");
    assert_eq!(dp.config().await["apis"], json!([]));
    let (_, view) = rogue.node_get("/_node/dataplanes").await;
    assert_eq!(view["dataplanes"], json!([]), "the rogue agent saw a dataplane: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_folders_others_control_are_refused_and_peers_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir_all(&apis).unwrap();
    let apis_arg = apis.display().to_string();
    let refuse = |socket: String, expect: &'static str| {
        let apis_arg = apis_arg.clone();
        async move {
            let args = ["--local-apis", &apis_arg, "--grpc-socket", &socket, "--node-listen", "127.0.0.1:0"];
            let (code, _, stderr) =
                run_to_exit("hgw-agent", &args, &[("HGW_STATE_DIR", "/nonexistent")], TIMEOUT).await;
            assert_eq!(code, Some(64), "{socket}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(expect), "{socket}: {stderr}");
        }
    };
    use std::os::unix::fs::PermissionsExt;
    // Directly in /tmp (world-writable): anyone could swap the socket.
    refuse(format!("/tmp/hgw-trust-{}.sock", std::process::id()), "group or others may write").await;
    // A pre-created folder others may write.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    refuse(open.join("agent.sock").display().to_string(), "group or others may write").await;
    // A folder pre-created in /tmp by another user (only testable as root, who can give it away).
    if nix_uid() == 0 {
        let planted = std::path::PathBuf::from(format!("/tmp/hgw-planted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&planted);
        std::fs::create_dir(&planted).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        refuse(planted.join("agent.sock").display().to_string(), "owned by uid 65534").await;
        std::fs::remove_dir_all(&planted).unwrap();
    } else {
        eprintln!("not root: the foreign-owner case needs a folder owned by another uid; skipped");
    }

    // A folder the agent makes: 0750, socket 0660.
    let agent = Agent::start_local(dir.path(), "agent", &apis, &dir.path().join("r.ndjson"), &[]).await;
    let socket = agent.socket.clone().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o660);
    let (ok, listed, stderr) = run_grpcurl(&["-plaintext", "-unix", &socket.display().to_string(), "list"]).await;
    assert!(ok && listed.contains("hgw.v1.Admin"), "{stderr}");
    let sub = dir.path().join("made-by-agent");
    let args = ["--grpc-socket".to_owned(), sub.join("agent.sock").display().to_string()];
    let made = agent_with_args(dir.path(), "made", &apis, &args).await;
    assert_eq!(std::fs::metadata(&sub).unwrap().mode() & 0o777, 0o750);
    drop(made);

    // A uid outside --grpc-socket-allow-uid is dropped at accept.
    let strict_dir = dir.path().join("strict");
    let args = [
        "--grpc-socket".to_owned(),
        strict_dir.join("agent.sock").display().to_string(),
        "--grpc-socket-allow-uid".to_owned(),
        "4242".to_owned(),
    ];
    let strict = agent_with_args(dir.path(), "strict", &apis, &args).await;
    let path = strict_dir.join("agent.sock").display().to_string();
    let (ok, _, stderr) = run_grpcurl(&["-plaintext", "-max-time", "5", "-unix", &path, "list"]).await;
    assert!(!ok, "a uid not allowed listed the services");
    eprintln!("refused peer: {stderr}");
    eventually("the agent logs the refused uid", TIMEOUT, || async {
        strict.stderr().contains("not in --grpc-socket-allow-uid").then_some(())
    })
    .await;
}

fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file this process just made is its effective uid (no unsafe, no libc call).
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::fs::metadata(probe.path()).unwrap().uid()
}

/// An agent in local mode with only `args` for its gRPC listeners (no TCP unless asked).
async fn agent_with_args(dir: &Path, label: &str, apis: &Path, args: &[String]) -> hgw_tests::Proc {
    let addr = dir.join(format!("{label}-addr.json"));
    let mut all: Vec<String> = vec![
        "--local-apis".into(),
        apis.display().to_string(),
        "--node-listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr.display().to_string(),
        "--reports-file".into(),
        dir.join(format!("{label}.ndjson")).display().to_string(),
        "--state-dir".into(),
        dir.join(format!("{label}-state")).display().to_string(),
    ];
    all.extend_from_slice(args);
    let proc = hgw_tests::Proc::spawn_path(&hgw_tests::bin_path("hgw-agent"), &all, &[], dir, label);
    hgw_tests::read_addr_file(&addr, TIMEOUT).await;
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_config_shows_no_secret_of_any_kind() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    let backend_ca = TestCa::new("backend-ca").unwrap();
    let client = backend_ca.issue_client("gateway").unwrap();
    let key_marker = client.key_pem.lines().nth(1).unwrap().to_owned();

    let mut api = v4_api("secrets", "/secrets", "http://alice:pa55w0rd-in-url@127.0.0.1:9/");
    api["endpointGroups"][0]["sharedConfiguration"] = json!({
        "headers": [{"name": "Authorization", "value": "Basic c2VjcmV0LWJhc2ljLWNyZWRz"},
                    {"name": "X-Api-Key", "value": "backend-api-key-value"}],
    });
    let mut tls_endpoint = api["endpointGroups"][0]["endpoints"][0].clone();
    tls_endpoint["name"] = json!("tls");
    tls_endpoint["configuration"] = json!({"target": "https://127.0.0.1:9/"});
    let mut tls_group = api["endpointGroups"][0].clone();
    tls_group["name"] = json!("tls-group");
    tls_group["endpoints"] = json!([tls_endpoint]);
    tls_group["sharedConfiguration"] =
        json!({"ssl": {"keyStore": {"type": "PEM", "certContent": client.cert_pem, "keyContent": client.key_pem}}});
    api["endpointGroups"].as_array_mut().unwrap().push(tls_group);
    api["plans"] = json!([
        {"id": "jwt-plan", "name": "JWT", "status": "PUBLISHED", "security": {"type": "JWT", "configuration": {
            "signature": "HMAC_HS256", "publicKeyResolver": "GIVEN_KEY",
            "resolverParameter": "hmac-shared-secret-0123456789abcdef"}}},
        {"id": "key-plan", "name": "Keys", "status": "PUBLISHED", "security": {"type": "API_KEY"}}
    ]);
    api["flows"] = json!([{"name": "creds", "request": [{"policy": "transform-headers", "configuration":
        {"addHeaders": [{"name": "Proxy-Authorization", "value": "Bearer flow-token-value"}]}}]}]);
    let definition = api.to_string();
    let registry = json!({
        "apiEvent": {"id": "e1", "type": "PUBLISH_API", "properties": {"api_id": "secrets"},
            "payload": json!({"id": "secrets", "name": "secrets", "definition": definition}).to_string()},
        "subscriptions": [{"id": "s1", "api": "secrets", "plan": "key-plan", "application": "app", "status": "ACCEPTED"}],
        "apiKeys": [{"id": "k1", "key": "plain-api-key-value", "subscriptions": ["s1"], "subscription": "s1"}]
    });
    std::fs::create_dir_all(&apis).unwrap();
    std::fs::write(apis.join("secrets.json"), registry.to_string()).unwrap();
    let agent = Agent::start_local(dir.path(), "agent", &apis, &dir.path().join("r.ndjson"), &[]).await;
    agent.wait_synced().await;

    let admin = agent.grpcurl_admin_args(dir.path()).await;
    let tcp = agent.grpc_addr();
    let (ok, dump, stderr) = grpcurl(&admin, &[&tcp, "hgw.v1.Admin/DumpConfig"]).await;
    assert!(ok, "{stderr}");
    let parsed: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(parsed["apis"][0]["id"], "secrets", "deployed, not rejected: {dump}");
    let key_hash = sha256_hex("plain-api-key-value");
    for secret in [
        "hmac-shared-secret-0123456789abcdef",
        key_marker.as_str(),
        "BEGIN PRIVATE KEY",
        "c2VjcmV0LWJhc2ljLWNyZWRz",
        "backend-api-key-value",
        "pa55w0rd-in-url",
        "alice",
        "flow-token-value",
        "plain-api-key-value",
        key_hash.as_str(),
    ] {
        assert!(!dump.contains(secret), "DumpConfig shows `{secret}`:\n{dump}");
    }
    assert!(dump.contains("[redacted]"), "{dump}");
    // The same over the socket, and the node API view.
    let socket = agent.socket.as_ref().unwrap().display().to_string();
    let (ok, socket_dump, stderr) = run_grpcurl(&["-plaintext", "-unix", &socket, "hgw.v1.Admin/DumpConfig"]).await;
    assert!(ok, "{stderr}");
    assert!(!socket_dump.contains("hmac-shared-secret") && !socket_dump.contains("pa55w0rd"));
    let apis_view = agent.node_text("/_node/apis").await;
    for secret in ["hmac-shared-secret", "pa55w0rd", "c2VjcmV0LWJhc2ljLWNyZWRz", key_hash.as_str()] {
        assert!(!apis_view.contains(secret), "/_node/apis shows {secret}");
    }
    // The dataplane's /config view.
    let dp = Dataplane::start(dir.path(), "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    let config = dp.config().await.to_string();
    assert!(!config.contains("pa55w0rd") && !config.contains("alice"), "{config}");
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
