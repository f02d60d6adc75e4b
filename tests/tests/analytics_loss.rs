//! Analytics are never lost between the dataplanes, the agent's spool and `/reports`: through a Cloud
//! Gate answering 503, an agent SIGKILLed meanwhile (with undelivered records in its spool) and a
//! dataplane restart, the emulator ends with exactly one document
//! (by `_id`) per request answered; a full spool stops acknowledgements and drops are counted end to
//! end; a batch the Cloud Gate refuses (4xx) is kept under `rejected/`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hgw_tests::gateway::{Agent, Dataplane, get};
use hgw_tests::{Backend, CloudGateSim, eventually, v4_api};
use serde_json::json;

/// Requests of the loss test (`HGW_LOSS_REQUESTS` overrides it).
const REQUESTS: usize = 50_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// Time for the last records to reach the emulator after the load: the uploader's backoff after the
/// outage (at most 30 s) plus an upload.
const DELIVERY: Duration = Duration::from_secs(120);
/// Time for the load to pass a milestone on a loaded 2-core machine.
const PROGRESS: Duration = Duration::from_secs(300);
const DROPPED: &str = "hgw_dataplane_analytics_records_dropped_total";

/// Sends `total` GETs across the live dataplanes with bounded concurrency, keeping the request id of
/// every answered one. A dataplane is taken out of `targets` before it is stopped, so none fails.
struct Load {
    targets: Arc<RwLock<Vec<String>>>,
    next: Arc<AtomicUsize>,
    answered: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(targets: Vec<String>, total: usize) -> Load {
        let targets = Arc::new(RwLock::new(targets));
        let next = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().unwrap();
        let workers = (0..CONCURRENCY)
            .map(|_| {
                let (targets, next, answered, failures, client) =
                    (targets.clone(), next.clone(), answered.clone(), failures.clone(), client.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            return;
                        }
                        let base = {
                            let live = targets.read().unwrap();
                            live[n % live.len()].clone()
                        };
                        match get(&client, &format!("{base}/api/r/{n}")).await {
                            Some(reply) if reply.status == 200 => {
                                let id = reply.header("x-gravitee-request-id").expect("request id").to_owned();
                                answered.lock().unwrap().push(id);
                            }
                            Some(reply) => failures.lock().unwrap().push(format!("{base}: {}", reply.status)),
                            None => failures.lock().unwrap().push(format!("{base}: no answer")),
                        }
                    }
                })
            })
            .collect();
        Load { targets, next, answered, failures, workers }
    }

    fn answered(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    async fn wait_answered(&self, at_least: usize) {
        eventually(&format!("{at_least} requests answered"), PROGRESS, || async {
            (self.answered() >= at_least).then_some(())
        })
        .await
    }

    fn set_targets(&self, targets: Vec<String>) {
        *self.targets.write().unwrap() = targets;
    }

    async fn finish(self) -> (Vec<String>, Vec<String>) {
        for worker in self.workers {
            worker.await.unwrap();
        }
        assert!(self.next.load(Ordering::Relaxed) >= self.answered.lock().unwrap().len());
        let answered = std::mem::take(&mut *self.answered.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (answered, failures)
    }
}

fn requests() -> usize {
    std::env::var("HGW_LOSS_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(REQUESTS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_lost_through_agent_kill_gate_outage_and_dataplane_restart() {
    let started = Instant::now();
    let total = requests();
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("A").await;
    sim.put_api(v4_api("api", "/api", &backend.url())).await;
    let token = sim.token().await;
    // The Unix socket keeps its path across the agent's restart, so dataplanes find the new one.
    let mut agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let target = agent.unix_target();
    let mut dp_a = Dataplane::start(dir.path(), "dp-a", &target).await;
    let dp_b = Dataplane::start(dir.path(), "dp-b", &target).await;
    dp_a.wait_ready().await;
    dp_b.wait_ready().await;

    let load = Load::start(vec![dp_a.url(""), dp_b.url("")], total);

    // (b) The Cloud Gate answers 503 to /reports for a while, so the spool holds undelivered records...
    load.wait_answered(total / 5).await;
    sim.set_fault(json!({"target": "reports", "status": 503})).await;
    eventually("uploads failing and records spooled", PROGRESS, || async {
        let failing = agent.metric("hgw_agent_reports_upload_failures_total").await? > 0.0;
        (failing && agent.metric("hgw_agent_reports_spool_documents").await? > 0.0).then_some(())
    })
    .await;

    // (a) ... when the agent is SIGKILLed mid-load; it restarts on the same spool and finds them there.
    load.wait_answered(total * 3 / 10).await;
    let before_kill = agent.metric("hgw_agent_reports_records_acknowledged_total").await.unwrap();
    agent.proc.signal(9);
    agent.proc.wait_exit(Duration::from_secs(10)).await.expect("agent killed");
    let killed_at = load.answered();
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let recovered = agent.metric("hgw_agent_reports_spool_documents").await.unwrap();
    assert!(recovered > 0.0, "the restarted agent holds the killed one's spooled records");
    eprintln!(
        "agent killed after {killed_at} answered ({before_kill} acknowledged); restarted with {recovered} spooled"
    );

    load.wait_answered(total / 2).await;
    sim.clear_faults().await;

    // (c) Restart dp-a gracefully: out of the rotation, SIGTERM (it drains and flushes), a new one in.
    load.wait_answered(total * 7 / 10).await;
    load.set_targets(vec![dp_b.url("")]);
    let dp_a_dropped = dp_a.metric(DROPPED).await.unwrap();
    dp_a.proc.signal(15);
    let status = dp_a.proc.wait_exit(Duration::from_secs(30)).await.expect("dp-a exits");
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(!dp_a.proc.stderr().contains("are lost"), "dp-a flushed everything:\n{}", dp_a.proc.stderr());
    let dp_a2 = Dataplane::start(dir.path(), "dp-a2", &agent.unix_target()).await;
    dp_a2.wait_ready().await;
    load.set_targets(vec![dp_a2.url(""), dp_b.url("")]);

    let (answered, failures) = load.finish().await;
    let load_done = started.elapsed();
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(10)]);
    let sent: HashSet<String> = answered.iter().cloned().collect();
    assert_eq!(sent.len(), answered.len(), "request ids are unique");
    assert_eq!(answered.len(), total);

    // Exactly one document per answered request, by `_id` (resends after the kill carry the same ids).
    eventually("every record in /reports", DELIVERY, || async {
        let summary = sim.reports_summary().await;
        (summary["unique_ids"].as_u64()? >= total as u64).then_some(())
    })
    .await;
    let ids: HashSet<String> = sim.report_ids().await.into_iter().collect();
    let missing: Vec<&String> = sent.difference(&ids).take(5).collect();
    let unknown: Vec<&String> = ids.difference(&sent).take(5).collect();
    assert!(missing.is_empty() && unknown.is_empty(), "missing {missing:?}, unknown {unknown:?}");
    assert_eq!(ids.len(), total);
    let summary = sim.reports_summary().await;
    eprintln!(
        "{total} requests: load {load_done:?}, all delivered after {:?}; {} documents posted for {} ids, {} POSTs",
        started.elapsed(),
        summary["documents"],
        summary["unique_ids"],
        summary["requests"]
    );

    // Nothing dropped anywhere.
    assert_eq!(dp_a_dropped, 0.0, "dp-a dropped records");
    for dp in [&dp_a2, &dp_b] {
        assert_eq!(dp.metric(DROPPED).await, Some(0.0), "{} dropped records", dp.id);
    }
    assert_eq!(agent.metric("hgw_agent_analytics_records_dropped_by_dataplanes_total").await, Some(0.0));
    assert_eq!(agent.metric("hgw_agent_reports_records_rejected_total").await, Some(0.0));
    eventually("spool empty", DELIVERY, || async {
        (agent.metric("hgw_agent_reports_spool_documents").await? == 0.0).then_some(())
    })
    .await;
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `n` GETs one after the other; answers the request ids of the 200s.
async fn send(dp: &Dataplane, n: usize, concurrency: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, ids, next, url) = (client.clone(), ids.clone(), next.clone(), dp.url("/api/x"));
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let reply = get(&client, &url).await.expect("dataplane answers");
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    ids.lock().unwrap().push(reply.header("x-gravitee-request-id").unwrap().to_owned());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    std::mem::take(&mut *ids.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_stops_at_its_bound_and_drops_are_counted() {
    const MAX_BYTES: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("A").await;
    sim.put_api(v4_api("api", "/api", &backend.url())).await;
    sim.set_fault(json!({"target": "reports", "status": 503})).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &["--spool-max-bytes", "1MiB"]).await;
    let dp = Dataplane::start_with(dir.path(), "dp", &agent.unix_target(), &["--analytics-queue", "1000"]).await;
    dp.wait_ready().await;
    let rss_before = rss_kib(agent.proc.pid());

    // Far more than the spool (~1000 documents) plus the dataplane's queue and batches hold.
    let mut sent = send(&dp, 6000, 16).await;
    eventually("the spool is full and acknowledgements stop", PROGRESS, || async {
        (agent.metric("hgw_agent_reports_spool_full").await? == 1.0).then_some(())
    })
    .await;
    eventually("the dataplane drops", PROGRESS, || async { (dp.metric(DROPPED).await? > 0.0).then_some(()) }).await;
    let acknowledged = agent.metric("hgw_agent_reports_records_acknowledged_total").await.unwrap();
    let spool_bytes = agent.metric("hgw_agent_reports_spool_bytes").await.unwrap();
    assert!(spool_bytes > 0.0 && spool_bytes <= MAX_BYTES as f64, "spool {spool_bytes} bytes, bound {MAX_BYTES}");
    assert_eq!(agent.metric("hgw_agent_reports_spool_max_bytes").await, Some(MAX_BYTES as f64));
    // More traffic changes nothing on the agent's side: the dataplane keeps buffering and dropping.
    sent.extend(send(&dp, 2000, 16).await);
    let dropped_before_recovery = dp.metric(DROPPED).await.unwrap();
    assert_eq!(agent.metric("hgw_agent_reports_records_acknowledged_total").await, Some(acknowledged));
    assert_eq!(agent.metric("hgw_agent_reports_spool_bytes").await, Some(spool_bytes));
    let on_disk: u64 = std::fs::read_dir(Agent::spool_dir_for(dir.path(), "agent"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk as f64, spool_bytes, "the gauge is the segment files' size");
    let rss_after = rss_kib(agent.proc.pid());
    eprintln!(
        "spool {spool_bytes} B, dataplane dropped {dropped_before_recovery}, agent RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(rss_after < 200 * 1024, "agent RSS {rss_after} KiB");

    // The Cloud Gate recovers: everything the dataplane did not drop arrives, and the drops reach the
    // agent with the batches that carry them.
    sim.clear_faults().await;
    let delivered = eventually("spooled records delivered and drops reported", DELIVERY, || async {
        let dropped = dp.metric(DROPPED).await?;
        let reported = agent.metric("hgw_agent_analytics_records_dropped_by_dataplanes_total").await?;
        let unique = sim.reports_summary().await["unique_ids"].as_u64()?;
        (reported == dropped && unique as f64 + dropped == sent.len() as f64).then_some(unique)
    })
    .await;
    let ids: HashSet<String> = sim.report_ids().await.into_iter().collect();
    assert!(ids.iter().all(|id| sent.contains(id)), "only ids of requests sent");
    assert!(delivered > 0);
    assert_eq!(agent.metric("hgw_agent_reports_spool_full").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_moves_the_batch_to_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("A").await;
    sim.put_api(v4_api("api", "/api", &backend.url())).await;
    sim.set_fault(json!({"target": "reports", "status": 400, "count": 1})).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;

    let first: HashSet<String> = send(&dp, 10, 1).await.into_iter().collect();
    let rejected = eventually("the refused batch is counted", PROPAGATION, || async {
        let n = agent.metric("hgw_agent_reports_records_rejected_total").await?;
        (n > 0.0).then_some(n)
    })
    .await;
    let kept = rejected_ids(&Agent::spool_dir_for(dir.path(), "agent"));
    assert_eq!(kept.len() as f64, rejected, "the rejected folder holds the refused documents");
    assert!(kept.is_subset(&first));
    // What was not refused arrives, and uploads go on afterwards.
    let second: HashSet<String> = send(&dp, 5, 1).await.into_iter().collect();
    let expected: HashSet<String> = first.union(&second).filter(|id| !kept.contains(*id)).cloned().collect();
    eventually("later uploads delivered", PROPAGATION, || async {
        let ids: HashSet<String> = sim.report_ids().await.into_iter().collect();
        (ids == expected).then_some(())
    })
    .await;
    assert_eq!(agent.metric("hgw_agent_reports_batches_rejected_total").await, Some(1.0));
    assert_eq!(sim.reports_summary().await["rejected"], 0, "the emulator refused nothing itself");
}

const PROPAGATION: Duration = Duration::from_secs(30);

/// `_id`s of the documents kept in `{spool}/rejected/*.ndjson`.
fn rejected_ids(spool: &Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    for entry in std::fs::read_dir(spool.join("rejected")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ndjson") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let doc: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.insert(doc["_id"].as_str().unwrap().to_owned());
            }
        }
    }
    ids
}
