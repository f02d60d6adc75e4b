//! Starting the real `hgw-agent` and `hgw-dataplane` binaries the way users run them, on
//! `127.0.0.1:0`, and reading the addresses they bound from their `--addr-file`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{CloudGateSim, Proc, eventually, read_addr_file};

/// How long a binary may take to bind its listeners on a loaded 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A base64 license key for cloud-mode tests (the agent checks presence and encoding only).
pub const TEST_LICENSE_B64: &str = "aGd3LXRlc3QtbGljZW5zZQ==";

pub struct Agent {
    pub proc: Proc,
    /// `http://127.0.0.1:port` of the node API.
    pub node: String,
    /// `127.0.0.1:port` of the gRPC TCP listener, when one was asked for.
    pub grpc: Option<SocketAddr>,
    /// The gRPC Unix socket, when one was asked for.
    pub socket: Option<PathBuf>,
    /// The folder of the agent's CA (`ca.pem`, `ca-key.pem`), when it has a TCP listener.
    pub pki_dir: Option<PathBuf>,
    http: reqwest::Client,
}

/// Where a dataplane finds its agent: `unix:/path`, or `https://host:port` with the agent's CA folder
/// so the test support can provision the dataplane a certificate (`hgw-agent pki issue`), as an
/// operator would for static provisioning.
#[derive(Debug, Clone)]
pub struct AgentTarget {
    pub url: String,
    /// `None`: no certificate is provisioned (a test passing its own trust flags, or a Unix socket).
    pub pki_dir: Option<PathBuf>,
}

impl From<&str> for AgentTarget {
    fn from(url: &str) -> Self {
        AgentTarget { url: url.to_owned(), pki_dir: None }
    }
}

impl From<&String> for AgentTarget {
    fn from(url: &String) -> Self {
        AgentTarget::from(url.as_str())
    }
}

impl From<String> for AgentTarget {
    fn from(url: String) -> Self {
        AgentTarget { url, pki_dir: None }
    }
}

impl From<&AgentTarget> for AgentTarget {
    fn from(target: &AgentTarget) -> Self {
        target.clone()
    }
}

/// Files written by `hgw-agent pki issue`.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Runs `hgw-agent pki issue --dataplane NAME | --admin NAME --out OUT --pki-dir PKI` as an operator would.
pub async fn pki_issue(pki_dir: &Path, kind: &str, name: &str, out: &Path, extra: &[&str]) -> IssuedCert {
    let pki = pki_dir.display().to_string();
    let out_arg = out.display().to_string();
    let mut args = vec!["pki", "issue", kind, name, "--out", out_arg.as_str(), "--pki-dir", pki.as_str()];
    args.extend_from_slice(extra);
    let output = tokio::time::timeout(
        START_TIMEOUT,
        tokio::process::Command::new(crate::bin_path("hgw-agent")).args(&args).env_remove("HGW_PKI_DIR").output(),
    )
    .await
    .expect("hgw-agent pki issue timed out")
    .expect("hgw-agent pki issue runs");
    assert!(output.status.success(), "hgw-agent pki issue failed: {}", String::from_utf8_lossy(&output.stderr));
    IssuedCert { dir: out.to_owned(), cert: out.join("cert.pem"), key: out.join("key.pem"), ca: out.join("ca.pem") }
}

impl Agent {
    /// Starts the agent in cloud mode against `sim`, with a TCP and a Unix gRPC listener. The token is
    /// passed through `GRAVITEE_CLOUD_TOKEN` (as the seed's docker-compose does), not argv.
    pub async fn start_cloud(dir: &Path, label: &str, sim: &CloudGateSim, token: &str, extra: &[&str]) -> Agent {
        Agent::start_cloud_with_env(dir, label, sim, token, extra, &[]).await
    }

    /// [`Agent::start_cloud`] with `envs` added to its environment (OTEL_* variables, for instance).
    pub async fn start_cloud_with_env(
        dir: &Path,
        label: &str,
        sim: &CloudGateSim,
        token: &str,
        extra: &[&str],
        more_env: &[(String, String)],
    ) -> Agent {
        let socket = dir.join(format!("{label}.sock"));
        let token_key = sim.token_key_path.display().to_string();
        let ca = sim.ca_path.display().to_string();
        let mut args: Vec<String> = [
            "--cloud-gate-url",
            sim.url.as_str(),
            "--cloud-gate-ca",
            ca.as_str(),
            "--cloud-token-key",
            token_key.as_str(),
            "--sync-interval",
            "500ms",
            "--reports-flush-interval",
            "200ms",
            "--grpc-listen",
            "127.0.0.1:0",
            "--grpc-socket",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(socket.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut envs = vec![
            ("GRAVITEE_CLOUD_TOKEN".to_owned(), token.to_owned()),
            ("GRAVITEE_LICENSE_KEY".to_owned(), TEST_LICENSE_B64.to_owned()),
        ];
        envs.extend_from_slice(more_env);
        Agent::start(dir, label, args, &envs).await
    }

    /// Starts the agent in local mode on `apis_dir`, analytics appended to `reports_file`.
    pub async fn start_local(dir: &Path, label: &str, apis_dir: &Path, reports_file: &Path, extra: &[&str]) -> Agent {
        Agent::start_local_with_env(dir, label, apis_dir, reports_file, extra, &[]).await
    }

    /// [`Agent::start_local`] with `envs` added to its environment (Gravitee's variables, for instance).
    pub async fn start_local_with_env(
        dir: &Path,
        label: &str,
        apis_dir: &Path,
        reports_file: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Agent {
        let mut args = vec![
            "--local-apis".to_owned(),
            apis_dir.display().to_string(),
            "--reports-file".to_owned(),
            reports_file.display().to_string(),
            "--reports-flush-interval".to_owned(),
            "200ms".to_owned(),
            "--grpc-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--grpc-socket".to_owned(),
            dir.join(format!("{label}.sock")).display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Agent::start(dir, label, args, &envs).await
    }

    async fn start(dir: &Path, label: &str, mut args: Vec<String>, envs: &[(String, String)]) -> Agent {
        let addr_file = dir.join(format!("{label}-addr.json"));
        let _ = std::fs::remove_file(&addr_file);
        args.extend([
            "--node-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--addr-file".to_owned(),
            addr_file.display().to_string(),
        ]);
        let mut envs = envs.to_vec();
        envs.push(("RUST_LOG".to_owned(), "info,hgw_agent=debug".to_owned()));
        // Never the user's own state directory: agents of one test share `DIR/state` (like agents on
        // one host); `--state-dir` in the arguments overrides it.
        envs.push(("HGW_STATE_DIR".to_owned(), dir.join("state").display().to_string()));
        // The reports spool is one agent's alone (it is locked): one per label, kept across restarts of
        // that label like a real agent's; `--spool-dir` in the arguments overrides it.
        envs.push(("HGW_SPOOL_DIR".to_owned(), Agent::spool_dir_for(dir, label).display().to_string()));
        let proc = Proc::spawn_path(&crate::bin_path("hgw-agent"), &args, &envs, dir, label);
        let addrs = read_addr_file(&addr_file, START_TIMEOUT).await;
        let node = format!("http://{}", addrs["node"].as_str().expect("node address"));
        let grpc = addrs["grpc"].as_str().map(|a| a.parse().expect("grpc address"));
        let socket = addrs["grpc_socket"].as_str().map(PathBuf::from);
        let pki_dir = addrs["pki_dir"].as_str().map(PathBuf::from);
        Agent { proc, node, grpc, socket, pki_dir, http: reqwest::Client::new() }
    }

    /// Flags that make the agent supervise `count` dataplanes sharing `listen` (the workspace's
    /// `hgw-dataplane`), for [`Agent::start_local`]'s `extra`.
    pub fn supervising(count: u16, listen: SocketAddr) -> Vec<String> {
        vec![
            "--dataplanes".to_owned(),
            count.to_string(),
            "--dataplane-listen".to_owned(),
            listen.to_string(),
            "--dataplane-bin".to_owned(),
            crate::bin_path("hgw-dataplane").display().to_string(),
        ]
    }

    /// The pids of the dataplanes this agent supervises right now.
    pub fn dataplane_pids(&self) -> Vec<u32> {
        crate::child_pids(self.proc.pid(), "hgw-dataplane")
    }

    /// Waits until `count` dataplanes are connected and have acknowledged the current config.
    pub async fn wait_dataplanes(&self, count: usize) {
        eventually(&format!("{count} dataplanes connected and up to date"), START_TIMEOUT, || async {
            let (_, body) = self.node_get("/_node/dataplanes").await;
            let current = body["currentVersion"].clone();
            let ready = body["dataplanes"]
                .as_array()?
                .iter()
                .filter(|d| d["connected"] == true && d["ackedVersion"] == current)
                .count();
            (ready == count).then_some(())
        })
        .await
    }

    /// The reports spool of the agent labelled `label` in `dir` (unless `--spool-dir` was given).
    pub fn spool_dir_for(dir: &Path, label: &str) -> PathBuf {
        dir.join(format!("{label}-spool"))
    }

    /// The value of an unlabelled metric on `/_node/metrics/prometheus` (`None` when absent).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        prometheus_value(&self.node_text("/_node/metrics/prometheus").await, name)
    }

    /// `unix:/path` for dataplanes.
    pub fn unix_target(&self) -> String {
        format!("unix:{}", self.socket.as_ref().expect("agent has a socket").display())
    }

    /// `https://127.0.0.1:port` for dataplanes; [`Dataplane::start`] provisions them a certificate.
    pub fn tcp_target(&self) -> AgentTarget {
        AgentTarget { url: self.tcp_url(), pki_dir: self.pki_dir.clone() }
    }

    /// `https://127.0.0.1:port`, with nothing provisioned.
    pub fn tcp_url(&self) -> String {
        format!("https://{}", self.grpc.expect("agent has a TCP listener"))
    }

    /// `127.0.0.1:port` of the TCP listener, as grpcurl takes it.
    pub fn grpc_addr(&self) -> String {
        self.grpc.expect("agent has a TCP listener").to_string()
    }

    /// The agent's CA certificate (what dataplanes pin with `--agent-ca`).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.pki_dir.as_ref().expect("agent has a CA (TCP listener)").join("ca.pem")
    }

    /// Issues a certificate from this agent's CA into `out` (`kind`: `--dataplane` or `--admin`).
    pub async fn issue(&self, kind: &str, name: &str, out: &Path) -> IssuedCert {
        pki_issue(self.pki_dir.as_ref().expect("agent has a CA (TCP listener)"), kind, name, out, &[]).await
    }

    /// grpcurl flags for TLS with an admin certificate (`-cacert`, `-cert`, `-key`), issued into
    /// `dir/admin-pki` the way the README shows.
    pub async fn grpcurl_admin_args(&self, dir: &Path) -> Vec<String> {
        let issued = self.issue("--admin", "test-operator", &dir.join("admin-pki")).await;
        vec![
            "-cacert".to_owned(),
            issued.ca.display().to_string(),
            "-cert".to_owned(),
            issued.cert.display().to_string(),
            "-key".to_owned(),
            issued.key.display().to_string(),
        ]
    }

    /// Where a dataplane this agent supervises listens, once it is connected and has the current
    /// config (`/_node/dataplanes`).
    pub async fn supervised_dataplane(&self, timeout: std::time::Duration) -> String {
        eventually("the supervised dataplane connects", timeout, || async {
            let (_, body) = self.node_get("/_node/dataplanes").await;
            let dp = body["dataplanes"]
                .as_array()?
                .iter()
                .find(|d| d["connected"] == true && d["ackedVersion"] == body["currentVersion"])?
                .clone();
            dp["listenAddress"].as_str().map(str::to_owned)
        })
        .await
    }

    /// GET on the node API: status and JSON body (Null when not JSON).
    /// The reason `/_node/apis` gives for the rejected API `id` (panics when it is not rejected).
    pub async fn rejection(&self, id: &str) -> String {
        let (_, apis) = self.node_get("/_node/apis").await;
        apis["rejected"]
            .as_array()
            .and_then(|rejected| rejected.iter().find(|r| r["id"] == id))
            .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("{id} is not rejected: {apis}"))
    }

    pub async fn node_get(&self, path: &str) -> (u16, Value) {
        match self.http.get(format!("{}{path}", self.node)).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.json().await.unwrap_or(Value::Null);
                (status, body)
            }
            Err(e) => panic!("node API {path}: {e}"),
        }
    }

    pub async fn node_text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.node)).send().await.expect("node API").text().await.expect("text")
    }

    /// GET on the node API with `Authorization: Bearer {token}` (`None`: no header): status and body.
    pub async fn node_get_as(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.node));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("node API {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A gRPC channel over the agent's Unix socket, as a dataplane on this host opens it.
    pub async fn unix_channel(&self) -> tonic::transport::Channel {
        let path = self.socket.clone().expect("agent has a socket");
        // The URI is required by the API and unused: every connection goes to the socket.
        tonic::transport::Endpoint::from_static("http://agent.invalid")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
            }))
            .await
            .expect("gRPC over the agent's Unix socket")
    }

    /// Waits until the agent reports a successful first sync.
    pub async fn wait_synced(&self) {
        eventually("agent initial sync", START_TIMEOUT, || async {
            let (status, _) = self.node_get("/_node/sync").await;
            (status == 200).then_some(())
        })
        .await
    }
}

pub struct Dataplane {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub id: String,
    http: reqwest::Client,
}

impl Dataplane {
    /// Starts a dataplane connected to `agent_target` (`unix:/path`, or `https://host:port` with a
    /// certificate issued for `id` by the agent's CA).
    pub async fn start(dir: &Path, id: &str, agent_target: impl Into<AgentTarget>) -> Dataplane {
        Dataplane::start_with(dir, id, agent_target, &[]).await
    }

    /// [`Dataplane::start`] with `extra` flags (`--analytics-queue`, `--log-max-payload`, ...).
    pub async fn start_with(dir: &Path, id: &str, agent_target: impl Into<AgentTarget>, extra: &[&str]) -> Dataplane {
        Dataplane::start_with_env(dir, id, agent_target, extra, &[]).await
    }

    /// [`Dataplane::start_with`] with `envs` added to its environment (OTEL_* variables, for instance).
    pub async fn start_with_env(
        dir: &Path,
        id: &str,
        agent_target: impl Into<AgentTarget>,
        extra: &[&str],
        envs: &[(String, String)],
    ) -> Dataplane {
        let target: AgentTarget = agent_target.into();
        let mut trust: Vec<String> = Vec::new();
        if let (true, Some(pki)) = (target.url.starts_with("https://"), &target.pki_dir) {
            let issued = pki_issue(pki, "--dataplane", id, &dir.join(format!("{id}-pki")), &[]).await;
            trust = vec![
                "--agent-ca".to_owned(),
                issued.ca.display().to_string(),
                "--cert".to_owned(),
                issued.cert.display().to_string(),
                "--key".to_owned(),
                issued.key.display().to_string(),
            ];
        }
        let addr_file = dir.join(format!("{id}-addr.json"));
        let _ = std::fs::remove_file(&addr_file);
        let args: Vec<String> = [
            "--agent",
            target.url.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--id",
            id,
            "--workers",
            "2",
            "--shutdown-grace",
            "5s",
            "--addr-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([addr_file.display().to_string()])
        .chain(trust)
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
        let proc = Proc::spawn_path(&crate::bin_path("hgw-dataplane"), &args, envs, dir, id);
        let addrs = read_addr_file(&addr_file, START_TIMEOUT).await;
        Dataplane {
            proc,
            listen: addrs["listen"].as_str().expect("listen address").parse().expect("socket address"),
            admin: addrs["admin"].as_str().expect("admin address").parse().expect("socket address"),
            id: id.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub async fn is_ready(&self) -> bool {
        matches!(self.http.get(format!("http://{}/ready", self.admin)).send().await, Ok(r) if r.status() == 200)
    }

    pub async fn wait_ready(&self) {
        eventually(&format!("dataplane {} ready", self.id), START_TIMEOUT, || async {
            self.is_ready().await.then_some(())
        })
        .await
    }

    /// Waits until the API at `path` is deployed: a GET there answers anything but the 404 of a path
    /// no API serves.
    pub async fn wait_deployed(&self, path: &str) {
        eventually(&format!("{path} deployed"), PROPAGATION, || async {
            let status = self.http.get(self.url(path)).send().await.ok()?.status();
            (status != 404).then_some(())
        })
        .await;
    }

    /// The dataplane's `/config` view (version and APIs).
    pub async fn config(&self) -> Value {
        self.http.get(format!("http://{}/config", self.admin)).send().await.expect("admin").json().await.expect("json")
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("http://{}/metrics", self.admin)).send().await.expect("admin").text().await.expect("text")
    }

    /// The value of an unlabelled metric on `/metrics` (`None` when absent).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        prometheus_value(&self.metrics().await, name)
    }
}

/// The value of the sample `name` (no labels) in a Prometheus text page.
pub fn prometheus_value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A small HTTP response as tests look at it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `url` with a fresh keep-alive client; `None` when the connection fails.
pub async fn get(client: &reqwest::Client, url: &str) -> Option<Reply> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.ok()?;
    Some(Reply { status, headers, body })
}

/// The grpcurl binary: `$HGW_GRPCURL`, else on PATH, else `~/go/bin/grpcurl` (where `go install` puts it).
pub fn grpcurl() -> PathBuf {
    if let Ok(path) = std::env::var("HGW_GRPCURL") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("grpcurl");
        if candidate.is_file() {
            return candidate;
        }
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let candidate = Path::new(&home).join("go/bin/grpcurl");
    assert!(
        candidate.is_file(),
        "grpcurl not found: run the test command (scripts/test.sh), which installs it with `go install`"
    );
    candidate
}

/// Runs grpcurl with `args`; returns (success, stdout, stderr).
pub async fn run_grpcurl(args: &[&str]) -> (bool, String, String) {
    let output =
        tokio::time::timeout(Duration::from_secs(30), tokio::process::Command::new(grpcurl()).args(args).output())
            .await
            .expect("grpcurl timed out")
            .expect("grpcurl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How long a change may take to reach a dataplane or `/reports` on a loaded 2-core machine.
pub const PROPAGATION: Duration = Duration::from_secs(20);

/// An agent in cloud mode against `sim` and one dataplane on its TCP listener, ready to serve.
pub async fn cloud_gateway(dir: &Path, sim: &CloudGateSim) -> (Agent, Dataplane) {
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir, "agent", sim, &token, &[]).await;
    let dp = Dataplane::start(dir, "dp", &agent.tcp_target()).await;
    dp.wait_ready().await;
    (agent, dp)
}

/// The `/reports` document of a request (its `_id` is the request id), waiting for the upload.
pub async fn report_for(sim: &CloudGateSim, request_id: &str) -> Value {
    eventually(&format!("report for {request_id}"), PROPAGATION, || async {
        sim.report_documents().await.into_iter().find(|d| d["_id"] == request_id)
    })
    .await
}

/// Runs a dataplane with `flags` and `envs` (agent address and ports filled in; no agent answers) to
/// its exit: the exit code and stderr. For configuration errors, which exit before any connection.
pub async fn dataplane_exit(flags: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut args =
        vec!["--agent", "unix:/nonexistent/hgw.sock", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let (code, _, stderr) = crate::run_to_exit("hgw-dataplane", &args, envs, Duration::from_secs(20)).await;
    (code, stderr)
}

/// Now, in epoch milliseconds (Gravitee's `updatedAt` form).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `hgw-agent webhook` (sidecar injection admission webhook) over TLS with a certificate for 127.0.0.1
/// from a CA made for the test; killed on drop.
pub struct Injector {
    pub proc: crate::Proc,
    pub addr: String,
    /// An HTTPS client trusting the webhook's CA.
    pub client: reqwest::Client,
    pub ca_pem: String,
}

impl Injector {
    pub async fn start(dir: &Path, extra: &[&str]) -> Injector {
        let ca = crate::TestCa::new("hgw-injector-test-ca").expect("test CA");
        let leaf = ca.issue_server(&["127.0.0.1", "localhost"]).expect("webhook certificate");
        let (cert, key, addr_file) = (dir.join("webhook.crt"), dir.join("webhook.key"), dir.join("webhook.addr"));
        std::fs::write(&cert, &leaf.cert_pem).expect("writing the certificate");
        std::fs::write(&key, &leaf.key_pem).expect("writing the key");
        let (cert, key, addr_file) =
            (cert.display().to_string(), key.display().to_string(), addr_file.display().to_string());
        let mut args = vec![
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--addr-file",
            &addr_file,
        ];
        args.extend_from_slice(extra);
        let proc = crate::Proc::spawn("hgw-agent", &args, &[], dir);
        let bound = crate::read_addr_file(Path::new(&addr_file), std::time::Duration::from_secs(30)).await;
        let addr = bound["webhook"].as_str().expect("webhook address").to_owned();
        Injector {
            proc,
            addr,
            client: crate::client_trusting(ca.cert_pem().as_bytes()),
            ca_pem: ca.cert_pem().to_owned(),
        }
    }

    /// POSTs an AdmissionReview to `path` (`/inject/namespace` or `/inject`): status and body.
    pub async fn review(&self, path: &str, review: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("https://{}{path}", self.addr))
            .json(review)
            .send()
            .await
            .expect("webhook answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}
