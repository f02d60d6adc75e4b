//! Analytics throughput of the real agent: records pushed on `hgw.v1.Analytics/Report` streams (as
//! dataplanes do, batches of 500, a window of un-acknowledged batches per stream), spooled, uploaded to
//! the Cloud Gate emulator. Prints records/s acknowledged (ingest), records/s delivered (upload, end to
//! end) and gzip bytes per record on the wire. A benchmark, not a test: it asserts only completeness.
//!
//!   hgw-bench-analytics [RECORDS] [STREAMS] [-- extra agent flags]   (defaults: 200000, 2)
//!
//! Uses the `hgw-agent` and `hgw-cloudgate-sim` binaries next to this one (or in `$HGW_BIN_DIR`).
//! `tests/bench/analytics.sh` builds them in release mode and runs this.

use std::time::{Duration, Instant};

use hgw_proto::v1::analytics_client::AnalyticsClient;
use hgw_proto::v1::{MetricsRecord, ReportApi, ReportRequest};
use hgw_tests::CloudGateSim;
use hgw_tests::gateway::Agent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Records per batch, as the dataplane sends them.
const BATCH: usize = 500;
/// Un-acknowledged batches per stream (a dataplane with the default queue keeps up to 21).
const WINDOW: usize = 8;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let streams: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let extra: Vec<String> = args.skip_while(|a| a != "--").skip(1).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();

    let dir = tempfile::tempdir().expect("temporary directory");
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &extra).await;
    // The Unix socket, as a supervised dataplane connects (TCP would need a dataplane certificate).
    let target = agent.socket.clone().expect("the agent has a gRPC socket");

    let per_stream = records.div_ceil(streams);
    let cpu_before = cpu_seconds(agent.proc.pid());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let target = target.clone();
        tasks.push(tokio::spawn(async move { push(&target, s, per_stream).await }));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("stream task");
    }
    let ingest = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(600);
    let summary = loop {
        let summary = sim.reports_summary().await;
        if summary["unique_ids"].as_u64().unwrap_or(0) >= acked as u64 {
            break summary;
        }
        assert!(Instant::now() < deadline, "not all records delivered after 10 minutes: {summary}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivered = started.elapsed();
    let agent_cpu = cpu_seconds(agent.proc.pid()) - cpu_before;
    let documents = summary["documents"].as_u64().unwrap_or(0);
    let bytes = summary["bytes"].as_u64().unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", agent.proc.pid()))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_default();
    let uploads = summary["requests"].as_u64().unwrap_or(0);
    println!("records {acked}, streams {streams}, batch {BATCH}, window {WINDOW}, agent flags {extra:?}");
    println!(
        "ingest (acknowledged, spooled): {:.0} records/s ({:.2} s)",
        acked as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64()
    );
    println!(
        "delivered to /reports (end to end): {:.0} records/s ({:.2} s)",
        acked as f64 / delivered.as_secs_f64(),
        delivered.as_secs_f64()
    );
    println!(
        "wire: {bytes} gzip bytes in {uploads} POSTs for {documents} documents = {:.1} bytes/record",
        bytes as f64 / documents.max(1) as f64
    );
    // What the agent itself spent (the emulator shares the machine and grows with every stored
    // document, so the end-to-end rate above is partly the emulator's): the agent's capacity per core.
    println!(
        "agent CPU (user + system): {agent_cpu:.2} s = {:.1} µs per record ({:.0} records per CPU-second)",
        agent_cpu * 1e6 / acked.max(1) as f64,
        acked as f64 / agent_cpu.max(f64::EPSILON)
    );
    println!("agent peak RSS (VmHWM): {rss}");
}

/// User + system CPU time of a process, seconds (`/proc/PID/stat`, in clock ticks of 1/100 s, the
/// kernel's `USER_HZ` on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: state is the 3rd field, utime the 14th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// Pushes `n` records on one stream, keeping up to [`WINDOW`] batches un-acknowledged; answers the
/// records acknowledged.
async fn push(target: &std::path::Path, stream: usize, n: usize) -> usize {
    let path = target.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://hgw-agent")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("agent gRPC socket");
    let mut client = AnalyticsClient::new(channel);
    let (tx, rx) = mpsc::channel::<ReportRequest>(WINDOW);
    let mut acks = client.report(ReceiverStream::new(rx)).await.expect("Report stream").into_inner();
    let batches = n.div_ceil(BATCH);
    let mut sent = 0;
    let mut acked = 0;
    let mut acked_records = 0;
    while acked < batches {
        while sent < batches && sent - acked < WINDOW {
            let first = sent * BATCH;
            let records = (first..(first + BATCH).min(n)).map(|i| record(stream, i)).collect();
            let batch = ReportRequest {
                sequence: sent as u64 + 1,
                dataplane_id: format!("bench-{stream}"),
                records,
                dropped: 0,
                health_checks: Vec::new(),
                logs: Vec::new(),
                // As a dataplane sends them: the API's fields once per batch.
                apis: vec![ReportApi {
                    id: "8f2b5c1e-3d4a-4b6c-9e7f-0a1b2c3d4e5f".into(),
                    name: "orders".into(),
                    r#type: "proxy".into(),
                    organization_id: "DEFAULT".into(),
                    environment_id: "DEFAULT".into(),
                    entrypoint_id: "http-proxy".into(),
                }],
            };
            tx.send(batch).await.expect("stream open");
            sent += 1;
        }
        let ack = acks.message().await.expect("ack").expect("stream open");
        let index = ack.sequence as usize - 1;
        acked_records += (n - index * BATCH).min(BATCH);
        acked += 1;
    }
    acked_records
}

/// A record shaped like a real one (ids, plan, URI, timings, user agent; its API in the batch's table).
fn record(stream: usize, i: usize) -> MetricsRecord {
    let id = uuid::Uuid::new_v4().to_string();
    MetricsRecord {
        timestamp_ms: 1_700_000_000_000 + i as i64,
        request_id: id.clone(),
        transaction_id: id,
        api: 1,
        plan_id: "8f2b5c1e-3d4a-4b6c-9e7f-0a1b2c3d4e5f-keyless".into(),
        application_id: "1".into(),
        subscription_id: format!("10.0.{}.{}", stream, i % 250),
        client_identifier: format!("10.0.{}.{}", stream, i % 250),
        http_method: "GET".into(),
        local_address: "10.0.0.1".into(),
        remote_address: format!("10.0.{}.{}", stream, i % 250),
        host: "api.example.com".into(),
        uri: format!("/orders/items/{i}?page=2"),
        path_info: format!("/items/{i}"),
        mapped_path: "/items/:id".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".into(),
        request_ended: true,
        endpoint: "http://backend.internal:8080/base".into(),
        endpoint_response_time_ms: (i % 40) as i64,
        status: 200,
        response_content_length: 512 + (i % 1024) as i64,
        gateway_response_time_ms: (i % 40) as i64 + 2,
        gateway_latency_ms: 2,
        security_type: "KEY_LESS".into(),
        ..Default::default()
    }
}
