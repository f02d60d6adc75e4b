//! Real `redis-server` processes for tests: a standalone server (optionally with a password and TLS),
//! a 3-master Cluster and a Sentinel setup, all on free 127.0.0.1 ports, each process a [`Proc`]
//! killed when the test ends. `redis-server` and `redis-cli` come from Debian's `redis-server` and
//! `redis-tools` packages (scripts/test.sh installs them).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Proc, TestCa, eventually};

/// How long a fresh redis-server, a cluster or a Sentinel may take to be usable on a loaded 2-core machine.
pub const REDIS_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at starting on a port someone else took between our probe and redis-server's bind.
const PORT_ATTEMPTS: usize = 5;
/// A redis-cli call that hangs longer than this means the server is gone or wedged.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of a standalone [`RedisServer`].
#[derive(Default)]
pub struct RedisOptions<'a> {
    /// `requirepass`: clients must `AUTH` with it.
    pub password: Option<String>,
    /// Serve TLS only (no plaintext port) with a server certificate for 127.0.0.1 from this CA;
    /// clients are not asked for certificates.
    pub tls: Option<&'a TestCa>,
}

/// The TLS material of a server, written to files because redis-server and redis-cli read files.
#[derive(Clone)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// What a cluster node presents on the cluster bus (where peers check client certificates).
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A standalone `redis-server` on 127.0.0.1.
pub struct RedisServer {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    tls: Option<TlsFiles>,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server whose logs and files go under `dir`, and waits until it answers `PING`.
    ///
    /// # Panics
    /// When redis-server is missing or does not start.
    pub async fn start(dir: &Path, options: RedisOptions<'_>) -> RedisServer {
        RedisServer::start_with(dir, options, &[]).await
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments (e.g. `--cluster-enabled yes`).
    pub async fn start_with(dir: &Path, options: RedisOptions<'_>, extra: &[&str]) -> RedisServer {
        let tls = options.tls.map(|ca| write_tls_files(dir, ca));
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(false);
            let data = dir.join(format!("redis-{port}"));
            std::fs::create_dir_all(&data).expect("creating the redis data dir");
            let mut server = RedisServer {
                proc: None,
                port,
                dir: data,
                password: options.password.clone(),
                tls: tls.clone(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            match server.launch().await {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// Spawns redis-server on `self.port` and waits for `PING`; `Err(log)` when it exits first (a port
    /// clash: someone bound it since we probed).
    async fn launch(&mut self) -> Result<(), String> {
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        match &self.tls {
            None => args.extend(["--port".into(), self.port.to_string()]),
            Some(tls) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                tls.cert.display().to_string(),
                "--tls-key-file".into(),
                tls.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                tls.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
        }
        if let Some(password) = &self.password {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        let log_dir = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
        let mut proc =
            Proc::spawn_path(Path::new("redis-server"), &args, &[], &log_dir, &format!("redis-{}", self.port));
        let mut ping = self.cli_args();
        ping.push("PING".into());
        let password = self.password.clone();
        let ready =
            eventually(&format!("redis-server on port {} to answer PING", self.port), REDIS_START_TIMEOUT, || {
                let alive = proc.is_running();
                let (ping, password) = (ping.clone(), password.clone());
                async move {
                    if !alive {
                        return Some(false);
                    }
                    run_cli(&ping, password.as_deref()).await.filter(|answer| answer.trim() == "PONG").map(|_| true)
                }
            })
            .await;
        if ready {
            self.proc = Some(proc);
            Ok(())
        } else {
            Err(proc.stdout() + &proc.stderr())
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:password@]127.0.0.1:PORT`, or `rediss://…` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The CA certificate file clients must trust (with TLS).
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|tls| tls.ca.clone())
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.stdout() + &p.stderr()).unwrap_or_default()
    }

    /// Kills the server (SIGKILL, no goodbye to clients): an outage.
    pub async fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal(libc::SIGKILL);
            let _ = proc.wait_exit(Duration::from_secs(10)).await;
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`]), with no data.
    ///
    /// # Panics
    /// When the port was taken meanwhile or the server does not start.
    pub async fn restart(&mut self) {
        self.kill().await;
        if let Err(log) = self.launch().await {
            panic!("redis-server did not restart on port {}:\n{log}", self.port);
        }
    }

    /// Runs `redis-cli` against this server with `args` (password and TLS flags added) and answers its
    /// output: plain values, one per line; an error reply as its `ERR …`/`WRONGPASS …` line.
    ///
    /// # Panics
    /// When redis-cli cannot run, cannot connect or times out.
    pub async fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).await.unwrap_or_else(|| panic!("redis-cli {args:?} against port {} failed", self.port))
    }

    async fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut all = self.cli_args();
        all.extend(args.iter().map(|s| s.to_string()));
        run_cli(&all, self.password.as_deref()).await
    }

    /// Address and TLS flags of redis-cli for this server.
    fn cli_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["-h".into(), "127.0.0.1".into(), "-p".into(), self.port.to_string()];
        if let Some(tls) = &self.tls {
            args.extend(["--tls".into(), "--cacert".into(), tls.ca.display().to_string()]);
        }
        args
    }
}

/// A Redis Cluster of 3 masters (no replicas) on 127.0.0.1.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 cluster-enabled servers, joins them with `redis-cli --cluster create`, and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// When the cluster does not form within [`REDIS_START_TIMEOUT`].
    pub async fn start(dir: &Path) -> RedisCluster {
        RedisCluster::start_inner(dir, None).await
    }

    /// [`RedisCluster::start`] with TLS only (clients and the cluster bus), certificates from `ca`.
    pub async fn start_tls(dir: &Path, ca: &TestCa) -> RedisCluster {
        RedisCluster::start_inner(dir, Some(write_tls_files(dir, ca))).await
    }

    async fn start_inner(dir: &Path, tls: Option<TlsFiles>) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisCluster::start_node(dir, tls.clone()).await);
        }
        let mut create: Vec<String> = Vec::new();
        if let Some(tls) = &tls {
            create.extend(["--tls".into(), "--cacert".into(), tls.ca.display().to_string()]);
        }
        create.extend(["--cluster".into(), "create".into()]);
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend(["--cluster-replicas".into(), "0".into(), "--cluster-yes".into()]);
        let output = run_cli_verbose(&create, None).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(output.contains("All 16384 slots covered"), "redis-cli --cluster create failed:\n{output}");
        for node in &nodes {
            eventually(&format!("cluster_state:ok on port {}", node.port), REDIS_START_TIMEOUT, || async {
                node.try_cli(&["CLUSTER", "INFO"]).await.filter(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
        RedisCluster { nodes }
    }

    /// A cluster node needs its port and port + 10000 (the cluster bus) free.
    async fn start_node(dir: &Path, tls: Option<TlsFiles>) -> RedisServer {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(true);
            let data = dir.join(format!("redis-{port}"));
            std::fs::create_dir_all(&data).expect("creating the redis data dir");
            let mut extra: Vec<String> = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                data.join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".into(),
                "5000".into(),
            ];
            if let Some(tls) = &tls {
                extra.extend([
                    "--tls-cluster".into(),
                    "yes".into(),
                    "--tls-client-cert-file".into(),
                    tls.client_cert.display().to_string(),
                    "--tls-client-key-file".into(),
                    tls.client_key.display().to_string(),
                ]);
            }
            let mut server = RedisServer { proc: None, port, dir: data, password: None, tls: tls.clone(), extra };
            match server.launch().await {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("cluster node did not start after {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// The nodes (to kill one, or run redis-cli against it).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `127.0.0.1:PORT` of each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` (`rediss+cluster://` with TLS).
    pub fn redis_url(&self) -> String {
        let scheme = if self.ca_path().is_some() { "rediss+cluster" } else { "redis+cluster" };
        format!("{scheme}://{}", self.urls().join(","))
    }

    /// The CA certificate file clients must trust (with TLS).
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.nodes[0].ca_path()
    }
}

/// One Redis master watched by 2 Sentinels (quorum 1) under the name [`RedisSentinel::MASTER`].
pub struct RedisSentinel {
    master: RedisServer,
    sentinels: Vec<(Proc, u16)>,
}

impl RedisSentinel {
    /// The monitored master's name.
    pub const MASTER: &'static str = "mymaster";

    /// Starts the master and the Sentinels and waits until a Sentinel names the master.
    ///
    /// # Panics
    /// When a Sentinel does not start or answer within [`REDIS_START_TIMEOUT`].
    pub async fn start(dir: &Path) -> RedisSentinel {
        let master = RedisServer::start(dir, RedisOptions::default()).await;
        let mut sentinels = Vec::new();
        for _ in 0..2 {
            sentinels.push(RedisSentinel::start_sentinel(dir, master.port).await);
        }
        let port = sentinels[0].1;
        eventually("a Sentinel to name the master", REDIS_START_TIMEOUT, || async {
            let answer = run_cli(
                &[
                    "-h".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                    "SENTINEL".into(),
                    "get-master-addr-by-name".into(),
                    Self::MASTER.into(),
                ],
                None,
            )
            .await?;
            answer.contains(&master.port.to_string()).then_some(())
        })
        .await;
        RedisSentinel { master, sentinels }
    }

    async fn start_sentinel(dir: &Path, master_port: u16) -> (Proc, u16) {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(false);
            let data = dir.join(format!("sentinel-{port}"));
            std::fs::create_dir_all(&data).expect("creating the sentinel dir");
            // Sentinel rewrites its configuration file, so it gets its own writable copy.
            let conf = data.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {} 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds {} 5000\n",
                    data.display(),
                    Self::MASTER,
                    Self::MASTER
                ),
            )
            .expect("writing sentinel.conf");
            let args = [conf.display().to_string(), "--sentinel".into()];
            let mut proc = Proc::spawn_path(Path::new("redis-server"), &args, &[], dir, &format!("sentinel-{port}"));
            let ping = ["-h".into(), "127.0.0.1".into(), "-p".into(), port.to_string(), "PING".into()];
            let ready = eventually(&format!("sentinel on port {port}"), REDIS_START_TIMEOUT, || {
                let alive = proc.is_running();
                let ping = ping.clone();
                async move {
                    if !alive {
                        return Some(false);
                    }
                    run_cli(&ping, None).await.filter(|a| a.trim() == "PONG").map(|_| true)
                }
            })
            .await;
            if ready {
                return (proc, port);
            }
            last_log = proc.stdout() + &proc.stderr();
        }
        panic!("sentinel did not start after {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// The master (to kill it, or run redis-cli against it).
    pub fn master(&self) -> &RedisServer {
        &self.master
    }

    /// Ports of the Sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(_, port)| *port).collect()
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2/mymaster`.
    pub fn redis_url(&self) -> String {
        let hosts: Vec<String> = self.sentinel_ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::MASTER)
    }
}

/// Writes the CA, a 127.0.0.1/localhost server certificate and a client certificate issued by it into `dir`.
fn write_tls_files(dir: &Path, ca: &TestCa) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("creating the TLS dir");
    let server = ca.issue_server(&["127.0.0.1", "localhost"]).expect("issuing the redis certificate");
    let client = ca.issue_client("redis-cluster-node").expect("issuing the cluster bus certificate");
    let files = TlsFiles {
        ca: dir.join("redis-ca.pem"),
        cert: dir.join("redis-cert.pem"),
        key: dir.join("redis-key.pem"),
        client_cert: dir.join("redis-client-cert.pem"),
        client_key: dir.join("redis-client-key.pem"),
    };
    for (path, pem) in [
        (&files.ca, ca.cert_pem()),
        (&files.cert, &server.cert_pem),
        (&files.key, &server.key_pem),
        (&files.client_cert, &client.cert_pem),
        (&files.client_key, &client.key_pem),
    ] {
        std::fs::write(path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    files
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released); with `with_bus`, port +
/// 10000 was free too (Redis Cluster's bus port). The caller retries when it was taken meanwhile.
fn free_port(with_bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("bound address").port();
        if !with_bus {
            return port;
        }
        let Some(bus) = port.checked_add(10_000) else { continue };
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return port;
        }
    }
}

/// Runs redis-cli with `args`, the password (if any) passed through `REDISCLI_AUTH` rather than argv.
/// Answers its output (error replies included, as `ERR …` lines); `None` when redis-cli fails (cannot
/// connect) or hangs.
async fn run_cli(args: &[String], password: Option<&str>) -> Option<String> {
    run_cli_verbose(args, password).await.ok()
}

/// [`run_cli`], with what redis-cli said when it failed.
async fn run_cli_verbose(args: &[String], password: Option<&str>) -> Result<String, String> {
    let mut command = tokio::process::Command::new("redis-cli");
    command.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    let output = tokio::time::timeout(CLI_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("redis-cli {args:?} timed out"))?
        .map_err(|e| format!("redis-cli cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("redis-cli {args:?}: {}\n{stdout}{}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}
