//! A real gRPC client with no proto files at hand (grpcurl, through server reflection) lists, describes
//! and calls the agent's services, over TCP (TLS, with an admin certificate from `hgw-agent pki issue`)
//! and over the Unix socket.

use hgw_tests::gateway::{Agent, run_grpcurl};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    std::fs::write(apis.join("broken.json"), "{ not json").unwrap();
    let agent = Agent::start_local(dir.path(), "agent", &apis, &dir.path().join("reports.ndjson"), &[]).await;
    agent.wait_synced().await;
    let tcp = agent.grpc_addr();
    let tls = agent.grpcurl_admin_args(dir.path()).await;
    let grpcurl = |args: &[&str]| {
        let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_grpcurl(&refs).await
        }
    };

    let (ok, listed, stderr) = grpcurl(&[&tcp, "list"]).await;
    assert!(ok, "grpcurl list failed: {stderr}");
    for service in [
        "hgw.v1.ConfigDiscovery",
        "hgw.v1.Analytics",
        "hgw.v1.RateLimit",
        "hgw.v1.OAuth2",
        "hgw.v1.Cache",
        "hgw.v1.Admin",
        "hgw.v1.Identity",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(listed.lines().any(|l| l.trim() == service), "{service} missing from:\n{listed}");
    }

    let (ok, described, stderr) = grpcurl(&[&tcp, "describe", "hgw.v1.ConfigDiscovery"]).await;
    assert!(ok, "{stderr}");
    assert!(
        described.contains("rpc Stream ( stream .hgw.v1.StreamRequest ) returns ( stream .hgw.v1.StreamResponse )"),
        "{described}"
    );

    let (ok, health, stderr) =
        grpcurl(&["-d", r#"{"service":"hgw.v1.ConfigDiscovery"}"#, &tcp, "grpc.health.v1.Health/Check"]).await;
    assert!(ok, "{stderr}");
    assert!(health.contains("SERVING"), "{health}");

    let (ok, status, stderr) = grpcurl(&[&tcp, "hgw.v1.Admin/GetSyncStatus"]).await;
    assert!(ok, "{stderr}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["mode"], "local");
    assert_eq!(status["initialDone"], true);
    assert_eq!(status["rejectedApis"], 1);

    let (ok, dump, stderr) = grpcurl(&[&tcp, "hgw.v1.Admin/DumpConfig"]).await;
    assert!(ok, "{stderr}");
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["rejected"][0]["id"], "broken", "{dump}");
    assert!(dump["rejected"][0]["reason"].as_str().unwrap().contains("not valid JSON"));

    // The same through the Unix socket.
    let socket = agent.socket.as_ref().unwrap().display().to_string();
    let (ok, listed, stderr) = run_grpcurl(&["-plaintext", "-unix", &socket, "list"]).await;
    assert!(ok, "{stderr}");
    assert!(listed.contains("hgw.v1.Admin"));
    let (ok, described, stderr) = run_grpcurl(&["-plaintext", "-unix", &socket, "describe", "hgw.v1.Admin"]).await;
    assert!(ok, "{stderr}");
    assert!(described.contains("rpc ListDataplanes"), "{described}");

    // hgw.v1.Cache is for dataplanes (the socket stands for one): a resource the agent does not run is
    // NOT_FOUND; an admin certificate is not a dataplane's and is refused.
    let get = r#"{"apiId":"none","resourceId":"none/cache/00","key":"k"}"#;
    let (ok, _, stderr) = run_grpcurl(&["-plaintext", "-unix", "-d", get, &socket, "hgw.v1.Cache/Get"]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
    let (ok, _, stderr) = grpcurl(&["-d", get, &tcp, "hgw.v1.Cache/Get"]).await;
    assert!(!ok && stderr.contains("PermissionDenied"), "{stderr}");
}
