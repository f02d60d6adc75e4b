//! `--dataplanes N`: the agent starts and watches N local `hgw-dataplane` processes ("one agent per
//! host, many proxies"). They share one HTTP port through SO_REUSEPORT, connect back over the agent's
//! Unix socket, and are restarted with backoff if they exit. On shutdown each gets SIGTERM and the grace
//! period to finish its requests and flush its analytics, before the agent itself stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const RESTART_BACKOFF_START: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy: its next crash restarts quickly again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub struct Supervisor {
    pub bin: PathBuf,
    pub count: u16,
    /// `unix:/path` or `http://host:port`.
    pub agent: String,
    pub listen: SocketAddr,
    pub node_id: String,
    pub log_json: bool,
    pub grace: Duration,
}

impl Supervisor {
    /// Runs the children until `cancel`, then stops them (returns once all exited).
    pub async fn run(self, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        for index in 0..self.count {
            let args = self.args(index);
            let bin = self.bin.clone();
            let cancel = cancel.clone();
            let grace = self.grace;
            tracker.spawn(async move { supervise(bin, args, index, cancel, grace).await });
        }
        tracker.close();
        tracker.wait().await;
    }

    fn args(&self, index: u16) -> Vec<String> {
        let mut args = vec![
            "--agent".to_owned(),
            self.agent.clone(),
            "--listen".to_owned(),
            self.listen.to_string(),
            "--reuse-port".to_owned(),
            "--admin-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--id".to_owned(),
            format!("{}-dp{index}", self.node_id),
            "--shutdown-grace".to_owned(),
            format!("{}ms", self.grace.as_millis()),
        ];
        if self.log_json {
            args.extend(["--log-format".to_owned(), "json".to_owned()]);
        }
        args
    }
}

async fn supervise(bin: PathBuf, args: Vec<String>, index: u16, cancel: CancellationToken, grace: Duration) {
    let mut backoff = RESTART_BACKOFF_START;
    loop {
        let started = tokio::time::Instant::now();
        let mut command = tokio::process::Command::new(&bin);
        // Dataplanes need no Cloud Token or license: keep secrets out of their environment.
        for (name, value) in std::env::vars_os() {
            let upper = name.to_string_lossy().to_ascii_uppercase();
            if upper.starts_with("GRAVITEE_") {
                command.env_remove(&name);
            } else if upper.starts_with("OTEL_") {
                // OpenTelemetry settings are the dataplanes' too (set explicitly, so a stricter
                // environment policy keeps them): same collector, sampler and resource attributes.
                // Without OTEL_SERVICE_NAME each names itself (`hgw-dataplane`), and
                // `service.instance.id` (`{node id}-dpN`) tells the dataplanes apart.
                command.env(&name, value);
            }
        }
        let mut child = match command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(bin = %bin.display(), %error, "cannot start a dataplane");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(dataplane = index, pid, "dataplane started");
        tokio::select! {
            status = child.wait() => {
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = RESTART_BACKOFF_START;
                }
                tracing::error!(dataplane = index, pid, status = ?status.ok(), restart_in_ms = backoff.as_millis() as u64, "dataplane exited; restarting");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            }
            _ = cancel.cancelled() => {
                if let Some(pid) = pid {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                }
                match tokio::time::timeout(grace + Duration::from_secs(1), child.wait()).await {
                    Ok(status) => tracing::info!(dataplane = index, pid, status = ?status.ok(), "dataplane stopped"),
                    Err(_) => {
                        tracing::warn!(dataplane = index, pid, "dataplane did not stop within the grace period; killing it");
                        let _ = child.kill().await;
                    }
                }
                return;
            }
        }
    }
}
