//! Supervised dataplanes belong to their agent: they do not inherit its `HGW_*` settings, they never
//! share their port with another agent's pool, and they exit when the agent dies, even by SIGKILL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hgw_tests::gateway::{Agent, get};
use hgw_tests::{Backend, eventually, free_port, pid_alive, run_to_exit, v4_api};
use serde_json::Value;

/// Generous bound for things that take milliseconds on a quiet machine (shared, loaded CI).
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_takes_its_dataplanes_along_and_a_port_is_never_shared() {
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("pool").await;
    std::fs::write(apis.join("api.json"), v4_api("pool", "/pool", &backend.url()).to_string()).unwrap();
    let reports = dir.path().join("reports.ndjson");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let supervising = Agent::supervising(2, listen);
    let mut extra: Vec<&str> = supervising.iter().map(String::as_str).collect();
    extra.extend(["--shutdown-grace", "10s"]);

    // The agent's own address file is also in its environment, where a dataplane that inherited it
    // would overwrite it with its own addresses.
    let addr_file = dir.path().join("agent-addr.json");
    let addr_file_text = addr_file.display().to_string();
    let mut agent = Agent::start_local_with_env(
        dir.path(),
        "agent",
        &apis,
        &reports,
        &extra,
        &[("HGW_ADDR_FILE", addr_file_text.as_str())],
    )
    .await;
    agent.wait_dataplanes(2).await;
    let client = reqwest::Client::new();
    let url = format!("http://{listen}/pool/x");
    let reply = get(&client, &url).await.expect("the pool answers");
    assert_eq!(reply.status, 200, "{}", reply.body);

    let addrs: Value = serde_json::from_str(&std::fs::read_to_string(&addr_file).unwrap()).unwrap();
    assert!(
        addrs["node"].is_string() && addrs.get("admin").is_none(),
        "the agent's address file was overwritten: {addrs}"
    );

    // A second agent on the same port: exit 64, one line naming the port, before starting anything.
    let state = dir.path().join("state").display().to_string();
    let second_socket = dir.path().join("second.sock").display().to_string();
    let apis_text = apis.display().to_string();
    let mut args: Vec<&str> =
        vec!["--local-apis", &apis_text, "--grpc-socket", &second_socket, "--node-listen", "127.0.0.1:0"];
    args.extend(supervising.iter().map(String::as_str));
    let (code, _, stderr) = run_to_exit("hgw-agent", &args, &[("HGW_STATE_DIR", &state)], TIMEOUT).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&listen.to_string()) && stderr.contains("already served"), "{stderr}");
    // The first pool was not disturbed.
    assert_eq!(get(&client, &url).await.expect("still served").status, 200);

    // kill -9: the dataplanes notice on their own (the test never signals them) and exit.
    let pids = agent.dataplane_pids();
    assert_eq!(pids.len(), 2, "two supervised dataplanes: {pids:?}");
    let killed = Instant::now();
    agent.proc.signal(libc::SIGKILL);
    agent.proc.wait_exit(TIMEOUT).await.expect("the agent is killed");
    eventually("the orphaned dataplanes exit", TIMEOUT, || async { pids.iter().all(|p| !pid_alive(*p)).then_some(()) })
        .await;
    let gone_after = killed.elapsed();
    eprintln!("supervised dataplanes gone {} ms after kill -9 of their agent", gone_after.as_millis());
    // They exited by themselves: each logged the lost lifeline (their stderr is the agent's).
    let log = agent.proc.stderr();
    assert_eq!(log.matches("lifeline to the supervising agent lost").count(), 2, "{log}");
    assert!(get(&client, &url).await.is_none(), "nothing serves the port any more");

    // A restarted agent gets the port (no orphan holds it) and serves with its own pool.
    let restarted = Agent::start_local(dir.path(), "restarted", &apis, &reports, &extra).await;
    restarted.wait_dataplanes(2).await;
    let reply = eventually("the restarted pool answers", TIMEOUT, || async { get(&client, &url).await }).await;
    assert_eq!(reply.status, 200);
}
