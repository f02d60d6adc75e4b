//! `--dataplanes N`: the agent starts and watches N local `hgw-dataplane` processes ("one agent per
//! host, many proxies"). They share one HTTP port through SO_REUSEPORT, connect back over the agent's
//! Unix socket, and are restarted with backoff if they exit. On shutdown each gets SIGTERM and the grace
//! period to finish its requests and flush its analytics, before the agent itself stops.
//!
//! # No orphans: the lifeline
//! A dataplane must not outlive its agent: orphans keep serving a stale config (a revoked key keeps
//! working) and, through SO_REUSEPORT, share the port with a restarted agent's new pool. Each child's
//! stdin is the read end of a pipe whose only write end this process holds (created close-on-exec, so
//! no other child inherits it). However the agent ends — SIGTERM, a panic, `kill -9`, the OOM killer —
//! the kernel closes the write end and the child reads end-of-file; started with `--lifeline-stdin`,
//! it then drains for at most a second and exits.
//!
//! Why not `prctl(PR_SET_PDEATHSIG)`: it fires when the *thread* that forked the child exits, not the
//! process, and tokio forks from whichever worker or blocking thread runs the task (blocking threads
//! are retired after 10 s idle); it must also be set in the child between fork and exec, which needs
//! `unsafe` (forbidden here), and races with a parent that died before it was set. A pipe has none
//! of these problems, works for any parent, and needs no code in the fork path.
//!
//! # No silent sharing
//! [`PortClaim`] binds `--dataplane-listen` without SO_REUSEPORT before anything starts, so a port
//! already served (by another agent's pool or anything else) fails the start with exit 64 instead of
//! silently splitting traffic. The claim is then kept for the agent's lifetime with SO_REUSEPORT
//! turned on (the kernel checks the flag when *others* bind): its own dataplanes can join the port,
//! while a second agent's probe, made without SO_REUSEPORT, still collides with it — there is no
//! window between the probe and the dataplanes' binds. The claim never listens, so it receives no
//! connection. A busy port is retried for a few seconds first ([`CLAIM_PATIENCE`]): the orphans of a
//! just-killed predecessor release it within a second.
//!
//! # No inherited secrets or settings
//! Children get an environment without the agent's `HGW_*` and `GRAVITEE_*` variables (a dataplane
//! reading `HGW_ADDR_FILE` overwrote the agent's address file; the Cloud Token and license are the
//! agent's alone): everything a dataplane needs is passed as an explicit argument — except the HTTPS
//! settings of the listener the dataplanes serve ([`DATAPLANE_ENV`]): hgw's `HGW_TLS_*` and Gravitee's
//! `gravitee_http_secured`, `gravitee_http_alpn`, the `gravitee_http_ssl_*` certificate, client-auth
//! and truststore names (never the store passwords) reach them
//! unchanged, so an agent started with the environment of a Gravitee gateway serves HTTPS like it.
//! Each dataplane reads and validates them (and reloads the certificate files) itself.

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

/// Environment variables of the agent that never reach a dataplane (matched case-insensitively, as
/// Gravitee's names are read in any case).
const PRIVATE_ENV_PREFIXES: [&str; 2] = ["HGW_", "GRAVITEE_"];

/// Prefixes of the variables above that the dataplanes do get: the HTTPS listener's settings, which
/// name certificate files but hold no secret (the keystore password, unused by hgw, stays private),
/// and the listener's limits, path and forwarding settings.
const DATAPLANE_ENV: [&str; 20] = [
    "HGW_TLS_",
    "HGW_WEBSOCKET_IDLE_TIMEOUT",
    "HGW_CLIENT_HEADER_TIMEOUT",
    "HGW_MAX_HEADER_SIZE",
    "HGW_MAX_INITIAL_LINE_LENGTH",
    "HGW_MAX_HEADERS",
    "HGW_HTTP2_",
    "HGW_MAX_CONNECTIONS",
    "HGW_REQUEST_BODY_TIMEOUT",
    "HGW_TRUSTED_PROXIES",
    "HGW_ESCAPED_SLASHES",
    "HGW_MERGE_SLASHES",
    "GRAVITEE_HTTP_SECURED",
    "GRAVITEE_HTTP_ALPN",
    "GRAVITEE_HTTP_SSL_KEYSTORE_TYPE",
    "GRAVITEE_HTTP_SSL_KEYSTORE_CERTIFICATES_",
    "GRAVITEE_HTTP_SSL_KEYSTORE_PATH",
    "GRAVITEE_HTTP_SSL_CLIENTAUTH",
    "GRAVITEE_HTTP_SSL_TRUSTSTORE_TYPE",
    "GRAVITEE_HTTP_SSL_TRUSTSTORE_PATH",
];

pub struct Supervisor {
    pub bin: PathBuf,
    pub count: u16,
    /// `unix:/path` or `http://host:port`.
    pub agent: String,
    pub listen: SocketAddr,
    pub node_id: String,
    pub log_json: bool,
    pub grace: Duration,
    /// Header names masked in v4 log records (`--log-masked-headers`), passed on when set.
    pub log_masked_headers: Option<String>,
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
            "--lifeline-stdin".to_owned(),
        ];
        if self.log_json {
            args.extend(["--log-format".to_owned(), "json".to_owned()]);
        }
        if let Some(headers) = &self.log_masked_headers {
            args.extend(["--log-masked-headers".to_owned(), headers.clone()]);
        }
        args
    }
}

impl Supervisor {
    /// Runs the dataplane binary with `--check-config` and the arguments and environment the
    /// dataplanes will get, so settings they would refuse (their HTTPS certificates, for one) stop the
    /// agent at start with exit 64 instead of feeding a restart loop. `Err` is the dataplane's reason. A
    /// binary that cannot be run at all is left for [`Supervisor::run`] to report.
    pub fn check_config(&self) -> Result<(), String> {
        let mut command = std::process::Command::new(&self.bin);
        for name in private_env_names(std::env::vars_os().map(|(name, _)| name)) {
            command.env_remove(name);
        }
        let output = command
            .args(self.args(0))
            .arg("--check-config")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match output {
            Ok(output) if output.status.code() == Some(64) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let reason =
                    stderr.trim().trim_start_matches("hgw-dataplane: ").trim_start_matches("invalid configuration: ");
                Err(reason.to_owned())
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(bin = %self.bin.display(), %error, "cannot check the dataplanes' configuration");
                Ok(())
            }
        }
    }
}

async fn supervise(bin: PathBuf, args: Vec<String>, index: u16, cancel: CancellationToken, grace: Duration) {
    let mut backoff = RESTART_BACKOFF_START;
    loop {
        let started = tokio::time::Instant::now();
        let spawned = std::io::pipe().and_then(|(lifeline_reader, lifeline)| {
            let mut command = tokio::process::Command::new(&bin);
            for name in private_env_names(std::env::vars_os().map(|(name, _)| name)) {
                command.env_remove(name);
            }
            let child = command
                .args(&args)
                .stdin(Stdio::from(lifeline_reader))
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            // `command` (holding the child's copy of the read end) is dropped here: only the child
            // keeps the read end, only this task the write end.
            Ok((child, lifeline))
        });
        let (mut child, _lifeline) = match spawned {
            Ok(spawned) => spawned,
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

/// The names in `vars` that a dataplane must not inherit ([`PRIVATE_ENV_PREFIXES`] but [`DATAPLANE_ENV`]).
fn private_env_names(vars: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    vars.filter(|name| {
        let upper = name.to_string_lossy().to_ascii_uppercase();
        PRIVATE_ENV_PREFIXES.iter().any(|prefix| upper.starts_with(prefix))
            && !DATAPLANE_ENV.iter().any(|prefix| upper.starts_with(prefix))
    })
    .collect()
}

/// `--dataplane-listen`, held by the agent for its lifetime (see the module documentation).
#[derive(Debug)]
pub struct PortClaim {
    _socket: socket2::Socket,
}

/// Why `--dataplane-listen` cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "--dataplane-listen {0}: the port is already served by another process (another hgw-agent's \
         dataplanes, or any other server); stop it or choose another port"
    )]
    InUse(SocketAddr),
    #[error("--dataplane-listen {addr}: cannot bind: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// How long a starting agent waits for a busy `--dataplane-listen` port: the orphans of an agent that
/// was just killed hold it while they drain (at most one second, see the dataplane's
/// `--lifeline-stdin`), and a restart must not fail because of them.
pub const CLAIM_PATIENCE: Duration = Duration::from_secs(3);
const CLAIM_RETRY: Duration = Duration::from_millis(100);

impl PortClaim {
    /// [`PortClaim::take`], retried for `patience` while the port is in use (blocking: called before
    /// the runtime starts).
    pub fn take_waiting(addr: SocketAddr, patience: Duration) -> Result<PortClaim, ClaimError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match PortClaim::take(addr) {
                Err(ClaimError::InUse(_)) if std::time::Instant::now() < deadline => std::thread::sleep(CLAIM_RETRY),
                other => return other,
            }
        }
    }

    /// Binds `addr` without SO_REUSEPORT (fails if anyone serves it or holds a claim on it), then turns
    /// SO_REUSEPORT on so this agent's dataplanes can bind beside the claim.
    pub fn take(addr: SocketAddr) -> Result<PortClaim, ClaimError> {
        use socket2::{Domain, Protocol, Socket, Type};
        let bind_error = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::AddrInUse => ClaimError::InUse(addr),
            _ => ClaimError::Bind { addr, source },
        };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
        // SO_REUSEADDR for the bind only: connections the previous pool closed linger in TIME_WAIT on
        // the port, and must not block a restart; a listener still blocks it. No SO_REUSEPORT yet: it
        // would let the bind succeed beside another pool.
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.bind(&addr.into()).map_err(bind_error)?;
        // From now on the flags are read when *others* bind: without SO_REUSEADDR the claim blocks
        // another agent's probe even though it never listens; with SO_REUSEPORT it lets this agent's
        // dataplanes in.
        socket.set_reuse_address(false).map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        Ok(PortClaim { _socket: socket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(reuse_port)?;
        socket.bind(&addr.into())?;
        socket.listen(16)?;
        Ok(socket)
    }

    #[test]
    fn claim_lets_own_dataplanes_in_and_keeps_a_second_agent_out() {
        let claim = PortClaim::take("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = claim._socket.local_addr().unwrap().as_socket().unwrap();
        // The agent's dataplanes (SO_REUSEPORT) bind beside the claim.
        let first = listener(addr, true).unwrap();
        let _second = listener(addr, true).unwrap();
        // A second agent's probe collides, with or without dataplanes listening.
        assert!(matches!(PortClaim::take(addr), Err(ClaimError::InUse(a)) if a == addr));
        drop(first);
        drop(_second);
        assert!(matches!(PortClaim::take(addr), Err(ClaimError::InUse(_))));
        // Once the claim is gone the port is free again.
        drop(claim);
        PortClaim::take(addr).unwrap();
    }

    #[test]
    fn claim_refuses_a_port_served_by_anything_else() {
        let other = listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = other.local_addr().unwrap().as_socket().unwrap();
        let error = PortClaim::take(addr).unwrap_err();
        assert!(matches!(error, ClaimError::InUse(_)));
        let text = error.to_string();
        assert!(text.contains(&addr.to_string()) && !text.contains('\n'), "{text}");
    }

    #[test]
    fn connections_in_time_wait_do_not_block_a_restart() {
        // A served connection that the server closed first leaves the port's side in TIME_WAIT.
        let server = listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = server.local_addr().unwrap().as_socket().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = server.accept().unwrap();
        drop(accepted);
        std::thread::sleep(Duration::from_millis(100));
        drop(client);
        drop(server);
        let claim = PortClaim::take(addr).unwrap();
        assert!(matches!(PortClaim::take(addr), Err(ClaimError::InUse(_))), "the claim still keeps others out");
        drop(claim);
    }

    #[test]
    fn a_starting_agent_waits_briefly_for_a_port_being_released() {
        let busy = listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = busy.local_addr().unwrap().as_socket().unwrap();
        assert!(matches!(PortClaim::take_waiting(addr, Duration::from_millis(200)), Err(ClaimError::InUse(_))));
        // Released while the agent waits (an orphan finishing its drain): the claim succeeds.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(busy);
        });
        PortClaim::take_waiting(addr, Duration::from_secs(10)).unwrap();
        release.join().unwrap();
    }

    #[test]
    fn private_variables_are_not_inherited() {
        let names =
            ["HGW_ADDR_FILE", "hgw_state_dir", "GRAVITEE_CLOUD_TOKEN", "gravitee_license_key", "RUST_LOG", "PATH"];
        let removed = private_env_names(names.iter().map(std::ffi::OsString::from));
        assert_eq!(removed, ["HGW_ADDR_FILE", "hgw_state_dir", "GRAVITEE_CLOUD_TOKEN", "gravitee_license_key"]);
        let https = [
            "HGW_TLS_CERT",
            "hgw_tls_key",
            "gravitee_http_secured",
            "gravitee_http_alpn",
            "gravitee_http_ssl_keystore_type",
            "gravitee_http_ssl_keystore_certificates_0_cert",
            "gravitee_http_ssl_keystore_certificates_0_key",
            "gravitee_http_ssl_keystore_password",
            "HGW_TLS_CLIENT_AUTH",
            "HGW_TLS_TRUSTSTORE",
            "gravitee_http_ssl_clientAuth",
            "gravitee_http_ssl_truststore_type",
            "gravitee_http_ssl_truststore_path",
            "gravitee_http_ssl_truststore_password",
        ];
        let removed = private_env_names(https.iter().map(std::ffi::OsString::from));
        assert_eq!(
            removed,
            ["gravitee_http_ssl_keystore_password", "gravitee_http_ssl_truststore_password"],
            "the HTTPS settings reach the dataplanes"
        );
        let listener = [
            "HGW_MAX_CONNECTIONS",
            "HGW_HTTP2_KEEPALIVE",
            "HGW_TRUSTED_PROXIES",
            "HGW_WEBSOCKET_IDLE_TIMEOUT",
            "HGW_MAXIMUM",
        ];
        let removed = private_env_names(listener.iter().map(std::ffi::OsString::from));
        assert_eq!(removed, ["HGW_MAXIMUM"], "the listener's limits reach the dataplanes");
    }
}
