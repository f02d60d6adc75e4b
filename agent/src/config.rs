//! Command line and environment, validated into a typed [`Config`] before anything binds a port.
//!
//! Every flag is also an environment variable. Gravitee's own variable names are accepted too, in any
//! case (`GRAVITEE_CLOUD_TOKEN` and `gravitee_cloud_token` both work), because the hybrid docker-compose
//! files users already have set them that way. Validation is pure: it takes the environment as a map, so
//! it is tested without touching the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::license::{License, LicenseError};
use crate::redis::{DEFAULT_POOL_SIZE as DEFAULT_REDIS_POOL_SIZE, RedisConfig, RedisConfigError, Topology};
use crate::reports::spool::{Fsync, MIN_MAX_BYTES as MIN_SPOOL_MAX_BYTES, SpoolOptions};
use crate::secret::{Secret, SecretBytes};
use crate::tags::{ShardingTags, TagsError};

/// BSD's EX_USAGE: the exit code of every configuration error, reported before any port is bound.
pub const EXIT_CONFIG: u8 = 64;

/// Parses a command line (the agent's or one of its commands'): `--help` and `--version` print and
/// exit 0; any other error is one line, `PROGRAM: invalid configuration: ...`, and exit 64.
pub fn parse_command_line<T: Parser>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    program: &str,
) -> Result<T, std::process::ExitCode> {
    T::try_parse_from(args).map_err(|error| {
        if matches!(error.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) {
            let _ = error.print();
            return std::process::ExitCode::SUCCESS;
        }
        // One line, like every other configuration error; `--help` has the rest.
        let text = error.to_string();
        let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
        eprintln!("{program}: invalid configuration: {first} (see {program} --help)");
        std::process::ExitCode::from(EXIT_CONFIG)
    })
}
use crate::token::{CloudToken, TokenError, TokenKey};

/// Default node API address: Gravitee's gateway node port, loopback only because it is unauthenticated.
pub const DEFAULT_NODE_LISTEN: &str = "127.0.0.1:18082";
/// Default gRPC address for dataplanes when no `--grpc-socket` is given: loopback, plaintext.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:18090";
/// Gravitee's sync period: a change reaches the gateway within one interval.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Below this the agent would hammer the Cloud Gate for no gain.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Gravitee's reporter batch: up to 1000 documents or 5 s, whichever comes first.
pub const DEFAULT_REPORTS_BATCH: usize = 1000;
/// Uploads in flight: enough to overlap one upload's round trip and compression with the next ones.
pub const DEFAULT_REPORTS_UPLOADS: usize = 4;
/// gzip level of `/reports` uploads. Measured on the agent's own documents (tests/bench/notes.md):
/// level 3 writes 3% more bytes than zlib's default 6 for a fifth less agent CPU per record; level 1
/// saves a little more CPU for half again as many bytes.
pub const DEFAULT_REPORTS_GZIP_LEVEL: u32 = 3;
pub const DEFAULT_REPORTS_FLUSH: Duration = Duration::from_secs(5);
/// Disk the reports spool may use before acknowledgements stop: hours of a busy gateway's analytics
/// (a record is ~1 KiB) while the Cloud Gate is away.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Gravitee's node monitor period.
pub const DEFAULT_MONITOR_INTERVAL: &str = "30s";
/// Floor for `--monitor-interval`: tests use short periods, zero would spin.
pub const MIN_MONITOR_INTERVAL: Duration = Duration::from_millis(100);
/// Time given to in-flight work (uploads, dataplane children) after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Where supervised dataplanes listen by default: Gravitee's gateway HTTP port.
pub const DEFAULT_DATAPLANE_LISTEN: &str = "0.0.0.0:8082";
/// Largest API definition the agent reads (a file, or one `/sync` event payload). Real definitions are
/// kilobytes, large OpenAPI-carrying ones a few megabytes; a bigger one would cost the agent many times
/// its size in memory and stall config pushes.
pub const DEFAULT_MAX_DEFINITION_BYTES: &str = "8MiB";
/// Largest last-good snapshot the agent writes or reads (file or Redis value).
pub const DEFAULT_MAX_SNAPSHOT_BYTES: &str = "256MiB";
/// A `--snapshot-key-file` holds at least this much key material (the HMAC key is derived from it).
pub const MIN_SNAPSHOT_KEY_BYTES: usize = 32;
/// A `--node-api-token-file` token has at least this many bytes: a bearer token must not be guessable.
pub const MIN_NODE_API_TOKEN_BYTES: usize = 16;

/// hgw-agent: one control agent per host. It owns the Cloud Token, pulls API definitions from the
/// Cloud Gate (or a local folder), pushes compiled config to dataplanes over gRPC and uploads their
/// analytics.
#[derive(Debug, Parser)]
#[command(
    name = "hgw-agent",
    version,
    about,
    long_about = None,
    after_help = "Other commands: `hgw-agent inject` (add hgw sidecars to Kubernetes YAML), `hgw-agent webhook` \
                  (the sidecar injection admission webhook), `hgw-agent prepare-socket-dir`; each has --help."
)]
pub struct Cli {
    /// Cloud Token (JWT from Gravitee Cloud) — enables cloud mode. Also `gravitee_cloud_token`.
    #[arg(long, env = "GRAVITEE_CLOUD_TOKEN", hide_env_values = true, help_heading = "Cloud")]
    pub cloud_token: Option<String>,
    /// Verify the Cloud Token's signature with this key: a PEM public key (RSA, EC, Ed25519) or a JWKS file.
    /// Without it the token's claims are decoded unverified, as Gravitee's own tools do.
    #[arg(long, env = "HGW_CLOUD_TOKEN_KEY", help_heading = "Cloud")]
    pub cloud_token_key: Option<PathBuf>,
    /// License key: the base64 of the license file. Also `gravitee_license_key`.
    #[arg(long, env = "GRAVITEE_LICENSE_KEY", hide_env_values = true, help_heading = "Cloud")]
    pub license_key: Option<String>,
    /// License file (the file itself, not base64).
    #[arg(long, env = "HGW_LICENSE_FILE", help_heading = "Cloud")]
    pub license_file: Option<PathBuf>,
    /// Cloud Gate base URL [default: https://{cpg}.cloudgate.gravitee.io from the token's `cpg` claim].
    #[arg(long, env = "HGW_CLOUD_GATE_URL", help_heading = "Cloud")]
    pub cloud_gate_url: Option<String>,
    /// Extra CA certificate(s) (PEM) trusted for the Cloud Gate, besides the system roots.
    #[arg(long, env = "HGW_CLOUD_GATE_CA", help_heading = "Cloud")]
    pub cloud_gate_ca: Option<PathBuf>,
    /// Time between incremental syncs (e.g. 5s, 500ms).
    #[arg(long, env = "HGW_SYNC_INTERVAL", default_value = "5s", value_parser = parse_duration, help_heading = "Cloud")]
    pub sync_interval: Duration,

    /// Local mode (no cloud): serve the API definitions in this folder (Gravitee registry files or plain
    /// definitions, `*.json`), reloaded when they change.
    #[arg(long, env = "HGW_LOCAL_APIS", help_heading = "Local")]
    pub local_apis: Option<PathBuf>,
    /// Local mode: append analytics (NDJSON, Elasticsearch form) to this file [default: stdout]. Records
    /// pass through the spool (--spool-dir) first, as in cloud mode.
    #[arg(long, env = "HGW_REPORTS_FILE", help_heading = "Local")]
    pub reports_file: Option<PathBuf>,

    /// Sharding tags (comma-separated; `!tag` excludes). Also `gravitee_tags`.
    #[arg(long, env = "HGW_TAGS", value_delimiter = ',', help_heading = "Gateway")]
    pub tags: Vec<String>,
    /// Tenant of this gateway (reported in heartbeats). Also `gravitee_tenant`.
    #[arg(long, env = "HGW_TENANT", help_heading = "Gateway")]
    pub tenant: Option<String>,
    /// Node id shown in the control plane [default: a new UUID per start, as Gravitee does].
    #[arg(long, env = "HGW_NODE_ID", help_heading = "Gateway")]
    pub node_id: Option<String>,
    /// Cluster id reported in heartbeats. Agents of one cluster share their last-good snapshot in Redis
    /// (`hgw:{cluster_id}:last-good`) [default: none; snapshots then use the cluster name `default`].
    #[arg(long, env = "HGW_CLUSTER_ID", help_heading = "Gateway")]
    pub cluster_id: Option<String>,

    /// gRPC listener (TCP) for dataplanes [default: 127.0.0.1:18090 when --grpc-socket is not given].
    #[arg(long, env = "HGW_GRPC_LISTEN", help_heading = "Listeners")]
    pub grpc_listen: Option<SocketAddr>,
    /// gRPC listener (Unix domain socket) for dataplanes on this host.
    #[arg(long, env = "HGW_GRPC_SOCKET", help_heading = "Listeners")]
    pub grpc_socket: Option<PathBuf>,
    /// Group (name or gid) given to the socket's folder and file, so its members may connect (mode 0750
    /// folder, 0660 socket) [default: the agent's own group].
    #[arg(long, env = "HGW_GRPC_SOCKET_GROUP", help_heading = "Trust")]
    pub grpc_socket_group: Option<String>,
    /// Uids allowed to connect to the gRPC socket, checked with SO_PEERCRED (comma-separated)
    /// [default: the agent's own uid and root].
    #[arg(long, env = "HGW_GRPC_SOCKET_ALLOW_UID", value_delimiter = ',', help_heading = "Trust")]
    pub grpc_socket_allow_uid: Vec<u32>,
    /// Folder of the CA that issues dataplane and admin certificates (`ca.pem`, `ca-key.pem`; an
    /// operator's CA, never created) [default: {--state-dir}/pki, created at first start, 0700].
    #[arg(long, env = "HGW_PKI_DIR", help_heading = "Trust")]
    pub pki_dir: Option<PathBuf>,
    /// SPIFFE trust domain of the identities: spiffe://{domain}/dataplane/{id}, spiffe://{domain}/admin/{name}.
    #[arg(long, env = "HGW_TRUST_DOMAIN", default_value = crate::identity::DEFAULT_TRUST_DOMAIN, help_heading = "Trust")]
    pub trust_domain: String,
    /// Extra names (DNS or IP, comma-separated) in the TCP listener's certificate, besides 127.0.0.1,
    /// ::1, localhost and the hostname: how remote dataplanes address the agent.
    #[arg(long, env = "HGW_GRPC_SERVER_NAME", value_delimiter = ',', help_heading = "Trust")]
    pub grpc_server_name: Vec<String>,
    /// Join tokens dataplanes may exchange for certificates (one per line: the token or sha256:HEX, then
    /// optional `id=PATTERN` and `expires=RFC3339`); reloaded when it changes [default: no joins].
    #[arg(long, env = "HGW_JOIN_TOKENS", help_heading = "Trust", conflicts_with = "join_kubernetes")]
    pub join_tokens: Option<PathBuf>,
    /// Accept Kubernetes ServiceAccount tokens as join tokens, checked with the API server's TokenReview
    /// (the agent's ServiceAccount needs `tokenreviews: create`). A pod-bound token allows the pod's name
    /// as dataplane id; another token of account NS/SA allows `NS.SA` and `NS.SA.*`.
    #[arg(long, env = "HGW_JOIN_KUBERNETES", help_heading = "Trust")]
    pub join_kubernetes: bool,
    /// Audience the ServiceAccount tokens must be minted for (the sidecar's projected token's).
    #[arg(long, env = "HGW_JOIN_KUBERNETES_AUDIENCE", default_value = crate::tokenreview::DEFAULT_AUDIENCE, help_heading = "Trust")]
    pub join_kubernetes_audience: String,
    /// API server for TokenReview, https://host:port [default: in-cluster, from KUBERNETES_SERVICE_HOST
    /// and KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "HGW_KUBE_API_SERVER", help_heading = "Trust")]
    pub kube_api_server: Option<String>,
    /// CA bundle (PEM) of the API server [default: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt].
    #[arg(long, env = "HGW_KUBE_CA_FILE", help_heading = "Trust")]
    pub kube_ca_file: Option<PathBuf>,
    /// The agent's own bearer token for the API server, re-read for every review (projected tokens
    /// rotate) [default: /var/run/secrets/kubernetes.io/serviceaccount/token].
    #[arg(long, env = "HGW_KUBE_TOKEN_FILE", help_heading = "Trust")]
    pub kube_token_file: Option<PathBuf>,
    /// Lifetime of the certificates dataplanes get by joining (renewed at 2/3 of it).
    #[arg(long, env = "HGW_DATAPLANE_CERT_TTL", default_value = "24h", value_parser = parse_duration, help_heading = "Trust")]
    pub dataplane_cert_ttl: Duration,

    /// Node API (/_node/health, /_node/sync, /_node/metrics/prometheus).
    #[arg(long, env = "HGW_NODE_LISTEN", default_value = DEFAULT_NODE_LISTEN, help_heading = "Listeners")]
    pub node_listen: SocketAddr,
    /// Write the bound addresses as JSON to this file once listening (for supervisors and tests).
    #[arg(long, env = "HGW_ADDR_FILE", help_heading = "Listeners")]
    pub addr_file: Option<PathBuf>,

    /// Start and supervise this many hgw-dataplane processes (pool per host, sharing one port).
    #[arg(long, env = "HGW_DATAPLANES", default_value_t = 0, help_heading = "Dataplanes")]
    pub dataplanes: u16,
    /// The hgw-dataplane binary to supervise [default: next to hgw-agent].
    #[arg(long, env = "HGW_DATAPLANE_BIN", help_heading = "Dataplanes")]
    pub dataplane_bin: Option<PathBuf>,
    /// Where supervised dataplanes listen for HTTP.
    #[arg(long, env = "HGW_DATAPLANE_LISTEN", default_value = DEFAULT_DATAPLANE_LISTEN, help_heading = "Dataplanes")]
    pub dataplane_listen: SocketAddr,
    /// Header names whose values supervised dataplanes mask in v4 log records (comma-separated),
    /// passed to them as `--log-masked-headers` [default: the dataplane's: Authorization,
    /// Proxy-Authorization, Cookie, Set-Cookie, X-Gravitee-Api-Key; API-key plans' headers always].
    #[arg(long, env = "HGW_LOG_MASKED_HEADERS", help_heading = "Dataplanes")]
    pub log_masked_headers: Option<String>,

    /// Documents per /reports upload (at most).
    #[arg(long, env = "HGW_REPORTS_BATCH", default_value_t = DEFAULT_REPORTS_BATCH, help_heading = "Analytics")]
    pub reports_batch: usize,
    /// /reports uploads in flight at once (1-16). Batches are read ahead, sent concurrently and removed
    /// from the spool in order, so a restart resends at most these batches.
    #[arg(long, env = "HGW_REPORTS_UPLOADS", default_value_t = DEFAULT_REPORTS_UPLOADS, help_heading = "Analytics")]
    pub reports_uploads: usize,
    /// gzip level of /reports uploads (0-9): lower spends less CPU per record for more bytes on the
    /// wire, higher the other way; 0 sends gzip framing without compression.
    #[arg(long, env = "HGW_REPORTS_GZIP_LEVEL", default_value_t = DEFAULT_REPORTS_GZIP_LEVEL, help_heading = "Analytics")]
    pub reports_gzip_level: u32,
    /// Longest time a document waits before upload.
    #[arg(long, env = "HGW_REPORTS_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration, help_heading = "Analytics")]
    pub reports_flush_interval: Duration,
    /// Directory of the reports spool: dataplane batches are acknowledged only once written here, kept
    /// until delivered (so they survive a killed agent and Cloud Gate outages), and batches the Cloud Gate
    /// refused (4xx) are kept in its `rejected/` folder. One agent per directory (locked)
    /// [default: {--state-dir}/spool].
    #[arg(long, env = "HGW_SPOOL_DIR", help_heading = "Analytics")]
    pub spool_dir: Option<PathBuf>,
    /// Bound of the spool (e.g. 1GiB, 512MiB, 100MB). When reached, the agent stops acknowledging
    /// dataplane batches: dataplanes buffer, then drop (counted). Undelivered data is never deleted.
    #[arg(long, env = "HGW_SPOOL_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes, help_heading = "Analytics")]
    pub spool_max_bytes: u64,
    /// When spooled batches reach the disk. `batch`: fsync before acknowledging (batches arriving
    /// together share one fsync): acknowledged records survive a killed agent and a host crash.
    /// `never`: written to the OS before acknowledging, never fsynced: they survive a killed agent, not a
    /// power loss or kernel crash (faster on slow disks).
    #[arg(long, env = "HGW_SPOOL_FSYNC", default_value = "batch", value_parser = ["batch", "never"], help_heading = "Analytics")]
    pub spool_fsync: String,
    /// How often a `monitor` document about this agent process (CPU, memory, open files, connected
    /// dataplanes) joins the reports (Gravitee's node monitor reports every 30 s).
    #[arg(long, env = "HGW_MONITOR_INTERVAL", default_value = DEFAULT_MONITOR_INTERVAL, value_parser = parse_duration, help_heading = "Analytics")]
    pub monitor_interval: Duration,

    /// Request header carrying the key of API-key plans (Gravitee's `policy.api-key.header`).
    #[arg(long, env = "HGW_API_KEY_HEADER", default_value = "X-Gravitee-Api-Key", help_heading = "Gateway")]
    pub api_key_header: String,
    /// Query parameter carrying the key of API-key plans (Gravitee's `policy.api-key.param`).
    #[arg(long, env = "HGW_API_KEY_QUERY_PARAM", default_value = "api-key", help_heading = "Gateway")]
    pub api_key_query_param: String,
    /// How often key sets of JWT plans using a JWKS URL are fetched again (key rotation delay).
    #[arg(long, env = "HGW_JWKS_REFRESH_INTERVAL", default_value = "5m", value_parser = parse_duration, help_heading = "Gateway")]
    pub jwks_refresh_interval: Duration,

    /// Directory under which API definitions may name files on this host (`ssl.trustStore.path`,
    /// `ssl.keyStore.certPath`, `ssl.keyStore.keyPath`), symlinks resolved. Without it, an API naming a
    /// file is rejected (give the PEM inline instead) [default: none].
    #[arg(long, env = "HGW_DEFINITION_FILES_DIR", help_heading = "Gateway")]
    pub definition_files_dir: Option<PathBuf>,

    /// Directory for state kept across restarts: the last-good snapshot file, served by a restarted agent
    /// until the Cloud Gate answers, and the reports spool (unless --spool-dir). Created if missing [default: $STATE_DIRECTORY (systemd's
    /// StateDirectory=), else $XDG_STATE_HOME/hgw, else $HOME/.local/state/hgw].
    #[arg(long, env = "HGW_STATE_DIR", help_heading = "Runtime")]
    pub state_dir: Option<PathBuf>,

    /// Redis shared by the agents of a cluster for rate-limit counters and the last-good config snapshot
    /// [default: none: state in memory, single host]. Forms (`rediss` = TLS):
    /// `redis[s]://[user[:password]@]host:port[/db]`;
    /// `redis[s]+sentinel://[user[:password]@]host1:port1,host2:port2/MASTER_NAME[/db]` (credentials are
    /// for the master, not the Sentinels);
    /// `redis[s]+cluster://[user[:password]@]host1:port1,host2:port2`.
    /// Without it, Gravitee's variables are read: `gravitee_ratelimit_type=redis` with
    /// `gravitee_ratelimit_redis_{host,port,username,password,ssl}`, `..._sentinel_master`,
    /// `..._sentinel_nodes_N_{host,port}` or `..._cluster_nodes_N_{host,port}`.
    #[arg(long, env = "HGW_REDIS_URL", hide_env_values = true, help_heading = "Redis")]
    pub redis_url: Option<String>,
    /// CA certificate(s) (PEM) trusted for `rediss://` instead of the system roots. Standalone only:
    /// for Sentinel or Cluster over TLS with a private CA, point SSL_CERT_FILE at the PEM instead
    /// (it replaces the system roots for the whole process).
    #[arg(long, env = "HGW_REDIS_CA", help_heading = "Redis")]
    pub redis_ca: Option<PathBuf>,
    /// Timeout of each Redis command (e.g. 200ms); opening a connection may take up to max(this, 1s).
    #[arg(long, env = "HGW_REDIS_TIMEOUT", default_value = "200ms", value_parser = parse_duration, help_heading = "Redis")]
    pub redis_timeout: Duration,
    /// Redis connections per pool (each multiplexes many commands).
    #[arg(long, env = "HGW_REDIS_POOL_SIZE", default_value_t = DEFAULT_REDIS_POOL_SIZE, help_heading = "Redis")]
    pub redis_pool_size: usize,

    /// Grace period for in-flight work after SIGTERM/SIGINT.
    #[arg(long, env = "HGW_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration, help_heading = "Runtime")]
    pub shutdown_grace: Duration,
    /// Tokio worker threads [default: number of cores].
    #[arg(long, env = "HGW_WORKERS", help_heading = "Runtime")]
    pub workers: Option<usize>,
    /// Log format.
    #[arg(long, env = "HGW_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], help_heading = "Runtime")]
    pub log_format: String,

    /// In-memory rate-limit counters at most (without Redis). When full, counters whose window ended are
    /// dropped; a new counter that still finds no room is refused and its policy's errorStrategy applies
    /// (counted in hgw_agent_ratelimit_table_full_total).
    #[arg(long, env = "HGW_RATE_LIMIT_MAX_KEYS", default_value_t = crate::ratelimit::DEFAULT_MAX_KEYS, help_heading = "Limits")]
    pub rate_limit_max_keys: usize,
    /// Largest API definition read (a local file or one /sync event payload, e.g. 8MiB); a bigger one is
    /// rejected alone, with the reason, and the others deploy.
    #[arg(long, env = "HGW_MAX_DEFINITION_BYTES", default_value = DEFAULT_MAX_DEFINITION_BYTES, value_parser = parse_bytes, help_heading = "Limits")]
    pub max_definition_bytes: u64,
    /// Largest last-good snapshot written or read (file or Redis value); a bigger or non-regular file is
    /// refused unread.
    #[arg(long, env = "HGW_MAX_SNAPSHOT_BYTES", default_value = DEFAULT_MAX_SNAPSHOT_BYTES, value_parser = parse_bytes, help_heading = "Limits")]
    pub max_snapshot_bytes: u64,
    /// File with at least 32 bytes of secret key material that authenticates last-good snapshots (an
    /// HMAC-SHA256 key is derived from it with HKDF). Every agent of a cluster needs the same file
    /// [default: derived from the Cloud Token, which the agents of a cluster share].
    #[arg(long, env = "HGW_SNAPSHOT_KEY_FILE", help_heading = "Limits")]
    pub snapshot_key_file: Option<PathBuf>,
    /// File holding a bearer token (at least 16 bytes, surrounding whitespace ignored) that every node API
    /// path except /_node/health requires (`Authorization: Bearer TOKEN`) [default: no token].
    #[arg(long, env = "HGW_NODE_API_TOKEN_FILE", help_heading = "Limits")]
    pub node_api_token_file: Option<PathBuf>,
}

/// Parses `5s`, `500ms`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration like 5s or 500ms: {e}"))
}

/// Parses `1GiB`, `512MiB`, `64KiB`, `100MB`, `1G` (binary), `65536` (bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size like 1GiB or 512MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("`{text}`: unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

/// A configuration the agent cannot run with. Shown as one line, exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    License(#[from] LicenseError),
    #[error(transparent)]
    Tags(#[from] TagsError),
    #[error(
        "no config source: set --cloud-token (or GRAVITEE_CLOUD_TOKEN) for cloud mode, or --local-apis DIR for local mode"
    )]
    NoSource,
    #[error("choose one config source: --cloud-token (cloud mode) or --local-apis (local mode), not both")]
    BothSources,
    #[error("--cloud-gate-url `{url}`: {problem}")]
    GateUrl { url: String, problem: String },
    #[error("--cloud-gate-ca {path}: {problem}")]
    GateCa { path: String, problem: String },
    #[error("--local-apis {path}: {problem}")]
    LocalApis { path: String, problem: String },
    #[error("--reports-file is for local mode; in cloud mode analytics go to the Cloud Gate's /reports")]
    ReportsFileInCloud,
    #[error("--sync-interval {0:?} is too short (minimum 100ms)")]
    SyncInterval(Duration),
    #[error("--reports-batch must be between 1 and 10000 documents")]
    ReportsBatch,
    #[error("--reports-uploads must be between 1 and 16")]
    ReportsUploads,
    #[error("--reports-gzip-level must be between 0 and 9")]
    ReportsGzipLevel,
    #[error("--spool-max-bytes must be at least 64KiB")]
    SpoolMaxBytes,
    #[error("--workers must be at least 1")]
    Workers,
    #[error("--dataplane-bin {path}: {problem}")]
    DataplaneBin { path: String, problem: String },
    #[error("--node-id must not be empty")]
    NodeId,
    #[error("{0}")]
    ApiKeyLocation(String),
    #[error("--definition-files-dir {path}: {problem}")]
    DefinitionFilesDir { path: String, problem: String },
    #[error(transparent)]
    Redis(#[from] RedisConfigError),
    #[error(transparent)]
    SocketDir(#[from] crate::identity::socket::SocketDirError),
    #[error("--trust-domain: {0}")]
    TrustDomain(crate::identity::IdError),
    #[error("--grpc-server-name `{0}` is not a DNS name or IP address")]
    ServerName(String),
    #[error(transparent)]
    JoinTokens(#[from] crate::identity::join::TokenFileError),
    #[error("--dataplane-cert-ttl must be between 10s and 365 days")]
    CertTtl,
    #[error("--join-tokens and --join-kubernetes need the TCP listener (--grpc-listen): joins happen over mutual TLS")]
    JoinWithoutTcp,
    #[error("--join-kubernetes: {0}")]
    JoinKubernetes(String),
    #[error("--rate-limit-max-keys must be at least 1")]
    RateLimitMaxKeys,
    #[error("--max-definition-bytes must be at least 1KiB")]
    MaxDefinitionBytes,
    #[error("--max-snapshot-bytes must be at least 1KiB")]
    MaxSnapshotBytes,
    #[error("--snapshot-key-file {path}: {problem}")]
    SnapshotKeyFile { path: String, problem: String },
    #[error("--node-api-token-file {path}: {problem}")]
    NodeApiTokenFile { path: String, problem: String },
    #[error(transparent)]
    Otel(#[from] hgw_otel::SettingsError),
}

/// How the agent proves itself and checks who calls it.
#[derive(Debug)]
pub struct TrustConfig {
    /// The CA folder, and whether the agent may create the CA there (its own `{state}/pki`); `None`
    /// without `--pki-dir` and state directory (start-up then fails if a TCP listener needs the CA).
    pub pki_dir: Option<PathBuf>,
    pub pki_create: bool,
    pub trust_domain: String,
    /// Names in the TCP listener's certificate.
    pub server_names: Vec<String>,
    /// Who may exchange a token for a certificate; `None`: nobody (certificates are provisioned).
    pub join: Option<JoinSource>,
    pub dataplane_cert_ttl: Duration,
    pub socket_group: Option<nix::unistd::Gid>,
    pub socket_allow_uids: Vec<u32>,
}

/// Where join tokens are checked.
#[derive(Debug, Clone)]
pub enum JoinSource {
    /// `--join-tokens FILE`.
    Tokens(std::sync::Arc<crate::identity::join::TokenFile>),
    /// `--join-kubernetes`: ServiceAccount tokens, by TokenReview.
    Kubernetes(std::sync::Arc<crate::tokenreview::TokenReviewer>),
}

impl JoinSource {
    pub fn authenticator(&self) -> std::sync::Arc<dyn crate::identity::join::JoinAuthenticator> {
        match self {
            JoinSource::Tokens(tokens) => tokens.clone(),
            JoinSource::Kubernetes(reviewer) => reviewer.clone(),
        }
    }
}

/// The `--join-kubernetes-audience` and `--kube-*` flags as given.
struct KubeFlags<'a> {
    audience: &'a str,
    server: Option<&'a str>,
    ca_file: Option<&'a Path>,
    token_file: Option<&'a Path>,
}

/// The TokenReview client of `--join-kubernetes`: explicit `--kube-*` flags, else the in-cluster
/// defaults. The CA is read now and the token file must exist, so a wrong path fails at start (exit 64).
fn kubernetes_join(
    flags: KubeFlags<'_>,
    env: &HashMap<String, String>,
) -> Result<crate::tokenreview::TokenReviewer, ConfigError> {
    use crate::tokenreview::{KubernetesApi, TokenReviewer};
    let audience = flags.audience.trim();
    if audience.is_empty() {
        return Err(ConfigError::JoinKubernetes("--join-kubernetes-audience cannot be empty".into()));
    }
    let in_cluster = KubernetesApi::in_cluster(env);
    let server = match (flags.server.map(str::trim), &in_cluster) {
        (Some(server), _) if server.starts_with("https://") && server.len() > "https://".len() => server.to_owned(),
        (Some(server), _) => {
            return Err(ConfigError::JoinKubernetes(format!("--kube-api-server `{server}` is not an https:// URL")));
        }
        (None, Some(api)) => api.server.clone(),
        (None, None) => {
            return Err(ConfigError::JoinKubernetes(
                "no API server: not in a cluster (KUBERNETES_SERVICE_HOST is not set) and no --kube-api-server".into(),
            ));
        }
    };
    let in_cluster_file = |name: &str| Path::new(crate::tokenreview::IN_CLUSTER_DIR).join(name);
    let api = KubernetesApi {
        server,
        ca_file: flags.ca_file.map(Path::to_owned).unwrap_or_else(|| in_cluster_file("ca.crt")),
        token_file: flags.token_file.map(Path::to_owned).unwrap_or_else(|| in_cluster_file("token")),
    };
    if let Err(error) = std::fs::metadata(&api.token_file) {
        return Err(ConfigError::JoinKubernetes(format!("--kube-token-file {}: {error}", api.token_file.display())));
    }
    TokenReviewer::new(api, audience).map_err(|e| ConfigError::JoinKubernetes(format!("--kube-ca-file {e}")))
}

/// Shortest and longest `--dataplane-cert-ttl`: renewals every few seconds would be load for nothing,
/// and a certificate outliving a year is no longer short-lived.
const MIN_CERT_TTL: Duration = Duration::from_secs(10);
const MAX_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The names of the TCP listener's certificate: loopback, localhost, this host's name, and the extras.
fn server_names(extra: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut names = vec!["127.0.0.1".to_owned(), "::1".to_owned(), "localhost".to_owned()];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str().map(str::trim).filter(|h| !h.is_empty())
    {
        names.push(host.to_owned());
    }
    for name in extra.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let dns_like = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'));
        if name.parse::<std::net::IpAddr>().is_err() && !dns_like {
            return Err(ConfigError::ServerName(name.to_owned()));
        }
        names.push(name.to_owned());
    }
    names.dedup();
    Ok(names)
}

/// Where API definitions come from.
#[derive(Debug)]
pub enum Source {
    /// Gravitee Cloud (or a self-hosted bridge) through the Cloud Gate.
    Cloud(CloudConfig),
    /// A folder of definition files; analytics to a file or stdout.
    Local(LocalConfig),
}

#[derive(Debug)]
pub struct CloudConfig {
    pub token: CloudToken,
    pub license: License,
    /// Base URL without a trailing slash.
    pub gate_url: String,
    /// PEM bundle trusted besides the system roots.
    pub gate_ca_pem: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct LocalConfig {
    pub dir: PathBuf,
    /// `None`: stdout.
    pub reports_file: Option<PathBuf>,
    /// A license is optional in local mode; kept for parity with cloud mode.
    pub license: Option<License>,
}

/// The validated configuration of one agent process.
#[derive(Debug)]
pub struct Config {
    pub source: Source,
    pub tags: ShardingTags,
    pub tenant: Option<String>,
    pub node_id: String,
    pub cluster_id: Option<String>,
    pub sync_interval: Duration,
    pub grpc_listen: Option<SocketAddr>,
    pub grpc_socket: Option<PathBuf>,
    pub node_listen: SocketAddr,
    pub addr_file: Option<PathBuf>,
    pub dataplanes: u16,
    pub dataplane_bin: PathBuf,
    pub dataplane_listen: SocketAddr,
    /// `--log-masked-headers` for supervised dataplanes (they validate it).
    pub log_masked_headers: Option<String>,
    pub reports_batch: usize,
    pub reports_uploads: usize,
    pub reports_gzip_level: u32,
    pub reports_flush_interval: Duration,
    /// At least [`MIN_MONITOR_INTERVAL`].
    pub monitor_interval: Duration,
    pub jwks_refresh_interval: Duration,
    pub api_key_header: String,
    pub api_key_query_param: String,
    /// Where definitions may name files (`--definition-files-dir`; disabled without it).
    pub definition_files: crate::definition::DefinitionFiles,
    pub shutdown_grace: Duration,
    pub workers: Option<usize>,
    pub log_json: bool,
    /// Where the last-good snapshot file goes; `None` when no default could be derived (no `$HOME`).
    pub state_dir: Option<PathBuf>,
    /// `None`: rate-limit counters and state stay in this agent's memory.
    pub redis: Option<RedisConfig>,
    /// The reports spool (its roll interval is `reports_flush_interval`).
    pub spool: SpoolOptions,
    pub trust: TrustConfig,
    /// In-memory rate-limit counters at most (at least 1).
    pub rate_limit_max_keys: usize,
    /// Largest definition read, bytes.
    pub max_definition_bytes: u64,
    /// Largest last-good snapshot written or read, bytes.
    pub max_snapshot_bytes: u64,
    /// Key material of `--snapshot-key-file` (at least [`MIN_SNAPSHOT_KEY_BYTES`]); `None`: derived from
    /// the Cloud Token.
    pub snapshot_key: Option<SecretBytes>,
    /// Bearer token the node API requires; `None`: no token.
    pub node_api_token: Option<Secret>,
    /// OpenTelemetry export from the standard OTEL_* variables; `None`: no traces.
    pub otel: Option<hgw_otel::Settings>,
}

/// Looks `name` up in `env` ignoring case, so Gravitee's lower-case variable names work.
fn env_any_case(env: &HashMap<String, String>, name: &str) -> Option<String> {
    env.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
        .filter(|value| !value.trim().is_empty())
}

impl Config {
    /// Validates the parsed command line; `env` is the process environment (for Gravitee's names).
    pub fn from_cli(cli: Cli, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let token_text =
            cli.cloud_token.filter(|t| !t.trim().is_empty()).or_else(|| env_any_case(env, "GRAVITEE_CLOUD_TOKEN"));
        let license_key =
            cli.license_key.filter(|t| !t.trim().is_empty()).or_else(|| env_any_case(env, "GRAVITEE_LICENSE_KEY"));
        let mut tag_list = cli.tags;
        if tag_list.iter().all(|t| t.trim().is_empty()) {
            tag_list = env_any_case(env, "GRAVITEE_TAGS")
                .map(|t| t.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
        }
        let tags = ShardingTags::parse(&tag_list)?;
        let tenant = cli.tenant.or_else(|| env_any_case(env, "GRAVITEE_TENANT"));

        if cli.sync_interval < MIN_SYNC_INTERVAL {
            return Err(ConfigError::SyncInterval(cli.sync_interval));
        }
        if cli.reports_batch == 0 || cli.reports_batch > 10_000 {
            return Err(ConfigError::ReportsBatch);
        }
        if !(1..=16).contains(&cli.reports_uploads) {
            return Err(ConfigError::ReportsUploads);
        }
        if cli.reports_gzip_level > 9 {
            return Err(ConfigError::ReportsGzipLevel);
        }
        if cli.spool_max_bytes < MIN_SPOOL_MAX_BYTES {
            return Err(ConfigError::SpoolMaxBytes);
        }
        if cli.workers == Some(0) {
            return Err(ConfigError::Workers);
        }

        let license = License::from_options(license_key.as_deref(), cli.license_file.as_deref())?;
        let source = match (token_text, cli.local_apis) {
            (Some(_), Some(_)) => return Err(ConfigError::BothSources),
            (None, None) => return Err(ConfigError::NoSource),
            (Some(token_text), None) => {
                if cli.reports_file.is_some() {
                    return Err(ConfigError::ReportsFileInCloud);
                }
                let key = cli.cloud_token_key.as_deref().map(TokenKey::load).transpose()?;
                let token = CloudToken::parse(&token_text, key.as_ref(), now_epoch_secs())?;
                let license = license.ok_or(LicenseError::Missing)?;
                let gate_url = match cli.cloud_gate_url {
                    Some(url) => validate_gate_url(&url)?,
                    None => token.claims.default_gate_url(),
                };
                let gate_ca_pem = cli.cloud_gate_ca.as_deref().map(read_ca).transpose()?;
                Source::Cloud(CloudConfig { token, license, gate_url, gate_ca_pem })
            }
            (None, Some(dir)) => {
                match std::fs::metadata(&dir) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(ConfigError::LocalApis {
                            path: dir.display().to_string(),
                            problem: "not a directory".into(),
                        });
                    }
                    Err(e) => {
                        return Err(ConfigError::LocalApis { path: dir.display().to_string(), problem: e.to_string() });
                    }
                }
                Source::Local(LocalConfig { dir, reports_file: cli.reports_file, license })
            }
        };

        let api_key_header = cli.api_key_header.trim().to_owned();
        if axum::http::HeaderName::try_from(api_key_header.as_str()).is_err() {
            return Err(ConfigError::ApiKeyLocation(format!(
                "--api-key-header `{api_key_header}` is not a header name"
            )));
        }
        let api_key_query_param = cli.api_key_query_param.trim().to_owned();
        if api_key_query_param.is_empty() || api_key_query_param.contains(['&', '=', '#', ' ']) {
            return Err(ConfigError::ApiKeyLocation(format!(
                "--api-key-query-param `{api_key_query_param}` is not a query parameter name"
            )));
        }
        let definition_files = match &cli.definition_files_dir {
            Some(dir) => crate::definition::DefinitionFiles::under(dir).map_err(|e| {
                ConfigError::DefinitionFilesDir { path: dir.display().to_string(), problem: e.to_string() }
            })?,
            None => crate::definition::DefinitionFiles::disabled(),
        };
        let node_id = match cli.node_id {
            Some(id) if id.trim().is_empty() => return Err(ConfigError::NodeId),
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let dataplane_bin = match cli.dataplane_bin {
            Some(path) => path,
            None => default_dataplane_bin(),
        };
        if cli.dataplanes > 0 && !dataplane_bin.is_file() {
            return Err(ConfigError::DataplaneBin {
                path: dataplane_bin.display().to_string(),
                problem: "not found (build it with `cargo build --release`, or pass --dataplane-bin)".into(),
            });
        }
        // Without an explicit socket, operators (grpcurl) and remote dataplanes get the default TCP
        // listener; supervised dataplanes use a private socket either way.
        let grpc_listen = match (cli.grpc_listen, &cli.grpc_socket) {
            (Some(addr), _) => Some(addr),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_GRPC_LISTEN.parse().expect("valid default address")),
        };

        let redis = redis_config(
            cli.redis_url.as_deref(),
            cli.redis_ca.as_deref(),
            cli.redis_timeout,
            cli.redis_pool_size,
            env,
        )?;

        let state_dir = cli.state_dir.or_else(|| default_state_dir(env));

        crate::identity::check_trust_domain(cli.trust_domain.trim()).map_err(ConfigError::TrustDomain)?;
        if !(MIN_CERT_TTL..=MAX_CERT_TTL).contains(&cli.dataplane_cert_ttl) {
            return Err(ConfigError::CertTtl);
        }
        if (cli.join_tokens.is_some() || cli.join_kubernetes) && grpc_listen.is_none() {
            return Err(ConfigError::JoinWithoutTcp);
        }
        let join = match (&cli.join_tokens, cli.join_kubernetes) {
            (Some(path), _) => {
                Some(JoinSource::Tokens(std::sync::Arc::new(crate::identity::join::TokenFile::open(path)?)))
            }
            (None, true) => Some(JoinSource::Kubernetes(std::sync::Arc::new(kubernetes_join(
                KubeFlags {
                    audience: &cli.join_kubernetes_audience,
                    server: cli.kube_api_server.as_deref(),
                    ca_file: cli.kube_ca_file.as_deref(),
                    token_file: cli.kube_token_file.as_deref(),
                },
                env,
            )?))),
            (None, false) => None,
        };
        let (pki_dir, pki_create) = match (cli.pki_dir, &state_dir) {
            (Some(dir), _) => (Some(dir), false),
            (None, Some(state)) => (Some(state.join("pki")), true),
            (None, None) => (None, false),
        };
        let socket_group = cli.grpc_socket_group.as_deref().map(crate::identity::socket::resolve_group).transpose()?;
        // A supervising agent always has a socket for its dataplanes, in a folder only it controls.
        let grpc_socket = match (cli.grpc_socket, cli.dataplanes) {
            (Some(path), _) => Some(path),
            (None, n) if n > 0 => Some(crate::identity::socket::default_socket(env, state_dir.as_deref())?),
            (None, _) => None,
        };
        let trust = TrustConfig {
            pki_dir,
            pki_create,
            trust_domain: cli.trust_domain.trim().to_owned(),
            server_names: server_names(&cli.grpc_server_name)?,
            join,
            dataplane_cert_ttl: cli.dataplane_cert_ttl,
            socket_group,
            socket_allow_uids: crate::identity::socket::allowed_uids(&cli.grpc_socket_allow_uid),
        };
        let spool = SpoolOptions {
            dir: match (cli.spool_dir, &state_dir) {
                (Some(dir), _) => dir,
                (None, Some(state)) => state.join("spool"),
                // No $HOME either: the temporary directory still outlives a killed agent (not a reboot).
                (None, None) => std::env::temp_dir().join("hgw-spool"),
            },
            max_bytes: cli.spool_max_bytes,
            fsync: if cli.spool_fsync == "never" { Fsync::Never } else { Fsync::Batch },
            roll_after: cli.reports_flush_interval,
        };

        if cli.rate_limit_max_keys == 0 {
            return Err(ConfigError::RateLimitMaxKeys);
        }
        if cli.max_definition_bytes < 1024 {
            return Err(ConfigError::MaxDefinitionBytes);
        }
        if cli.max_snapshot_bytes < 1024 {
            return Err(ConfigError::MaxSnapshotBytes);
        }
        let snapshot_key = cli.snapshot_key_file.as_deref().map(read_snapshot_key).transpose()?;
        let node_api_token = cli.node_api_token_file.as_deref().map(read_node_api_token).transpose()?;

        let otel = hgw_otel::Settings::from_env(|name| env.get(name).cloned(), "hgw-agent")?;
        Ok(Config {
            source,
            tags,
            tenant,
            node_id,
            cluster_id: cli.cluster_id,
            sync_interval: cli.sync_interval,
            grpc_listen,
            grpc_socket,
            node_listen: cli.node_listen,
            addr_file: cli.addr_file,
            dataplanes: cli.dataplanes,
            dataplane_bin,
            dataplane_listen: cli.dataplane_listen,
            log_masked_headers: cli.log_masked_headers.filter(|h| !h.trim().is_empty()),
            reports_batch: cli.reports_batch,
            reports_uploads: cli.reports_uploads,
            reports_gzip_level: cli.reports_gzip_level,
            reports_flush_interval: cli.reports_flush_interval,
            monitor_interval: cli.monitor_interval.max(MIN_MONITOR_INTERVAL),
            jwks_refresh_interval: cli.jwks_refresh_interval.max(MIN_SYNC_INTERVAL),
            api_key_header,
            api_key_query_param,
            definition_files,
            shutdown_grace: cli.shutdown_grace,
            workers: cli.workers,
            log_json: cli.log_format == "json",
            state_dir,
            redis,
            spool,
            trust,
            rate_limit_max_keys: cli.rate_limit_max_keys,
            max_definition_bytes: cli.max_definition_bytes,
            max_snapshot_bytes: cli.max_snapshot_bytes,
            snapshot_key,
            node_api_token,
            otel,
        })
    }

    pub fn mode_name(&self) -> &'static str {
        match self.source {
            Source::Cloud(_) => "cloud",
            Source::Local(_) => "local",
        }
    }
}

/// Reads a small secret file: a regular file of at most 64 KiB (a key, not a log someone pointed at).
fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    const MAX: u64 = 64 * 1024;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX {
        return Err(format!("larger than {MAX} bytes"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

fn read_snapshot_key(path: &Path) -> Result<SecretBytes, ConfigError> {
    let err = |problem: String| ConfigError::SnapshotKeyFile { path: path.display().to_string(), problem };
    let bytes = read_secret_file(path).map_err(err)?;
    if bytes.len() < MIN_SNAPSHOT_KEY_BYTES {
        return Err(err(format!("holds {} bytes; at least {MIN_SNAPSHOT_KEY_BYTES} are needed", bytes.len())));
    }
    Ok(SecretBytes::new(bytes))
}

fn read_node_api_token(path: &Path) -> Result<Secret, ConfigError> {
    let err = |problem: String| ConfigError::NodeApiTokenFile { path: path.display().to_string(), problem };
    let bytes = read_secret_file(path).map_err(err)?;
    let text = String::from_utf8(bytes).map_err(|_| err("the token is not UTF-8 text".into()))?;
    let token = text.trim();
    if token.len() < MIN_NODE_API_TOKEN_BYTES {
        return Err(err(format!(
            "the token has {} bytes; at least {MIN_NODE_API_TOKEN_BYTES} are needed",
            token.len()
        )));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "the token must be one line without spaces (it is sent as `Authorization: Bearer TOKEN`)".into()
        ));
    }
    Ok(Secret::new(token))
}

fn validate_gate_url(url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let problem = |p: &str| ConfigError::GateUrl { url: url.to_owned(), problem: p.to_owned() };
    let parsed: axum::http::Uri = trimmed.parse().map_err(|_| problem("not a URL"))?;
    match parsed.scheme_str() {
        Some("https") | Some("http") => {}
        _ => return Err(problem("must start with https:// (or http:// for a plaintext self-hosted bridge)")),
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(problem("has no host"));
    }
    if parsed.query().is_some() {
        return Err(problem("must not carry a query string"));
    }
    Ok(trimmed.to_owned())
}

fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let err = |problem: String| ConfigError::GateCa { path: path.display().to_string(), problem };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(format!("not PEM certificates: {e}")))?;
    if found.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(pem)
}

/// The state directory when `--state-dir` is not given: systemd's `StateDirectory=` (the first path of
/// `$STATE_DIRECTORY`), else the XDG base directory for state, else its default under `$HOME`.
pub fn default_state_dir(env: &HashMap<String, String>) -> Option<PathBuf> {
    let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(dirs) = var("STATE_DIRECTORY") {
        return dirs.split(':').find(|d| !d.is_empty()).map(PathBuf::from);
    }
    if let Some(xdg) = var("XDG_STATE_HOME").filter(|d| d.starts_with('/')) {
        return Some(PathBuf::from(xdg).join("hgw"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".local/state/hgw"))
}

/// `--redis-url` wins over Gravitee's variables, as every flag does; the other `--redis-*` flags apply
/// to either source.
fn redis_config(
    url: Option<&str>,
    ca: Option<&std::path::Path>,
    timeout: Duration,
    pool_size: usize,
    env: &HashMap<String, String>,
) -> Result<Option<RedisConfig>, RedisConfigError> {
    let config = match url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => Some(RedisConfig::from_url(url)?),
        None => RedisConfig::from_gravitee_env(env)?,
    };
    let Some(mut config) = config else {
        return match ca {
            Some(path) => Err(RedisConfigError::Ca {
                path: path.display().to_string(),
                problem: "no Redis is configured (--redis-url or gravitee_ratelimit_type=redis)".into(),
            }),
            None => Ok(None),
        };
    };
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(RedisConfigError::Timeout);
    }
    if pool_size == 0 || pool_size > 1024 {
        return Err(RedisConfigError::PoolSize);
    }
    config.timeout = timeout;
    config.pool_size = pool_size;
    if let Some(path) = ca {
        let err = |problem: String| RedisConfigError::Ca { path: path.display().to_string(), problem };
        if !config.tls {
            return Err(err("trust for TLS, but the Redis connection is plaintext (use rediss://)".into()));
        }
        if !matches!(config.topology, Topology::Standalone(_)) {
            // The pools for Sentinel and Cluster build their TLS settings from the system roots only.
            return Err(err(format!(
                "supported for standalone Redis only, not {}; set SSL_CERT_FILE to the PEM instead",
                config.topology.mode()
            )));
        }
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let found =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(format!("not PEM certificates: {e}")))?;
        if found.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        config.ca_pem = Some(pem);
    }
    Ok(Some(config))
}

fn default_dataplane_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hgw-dataplane")))
        .unwrap_or_else(|| PathBuf::from("hgw-dataplane"))
}

pub fn now_epoch_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["hgw-agent"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("arguments parse")
    }

    #[test]
    fn join_kubernetes_needs_an_api_server_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let apis = dir.path().to_str().unwrap().to_owned();
        let local = |extra: &[&str]| {
            let mut args = vec!["--local-apis", apis.as_str(), "--join-kubernetes"];
            args.extend_from_slice(extra);
            cli(&args)
        };
        let outside = Config::from_cli(local(&[]), &HashMap::new()).unwrap_err().to_string();
        assert!(outside.contains("not in a cluster"), "{outside}");
        let plain = Config::from_cli(local(&["--kube-api-server", "http://k:6443"]), &HashMap::new()).unwrap_err();
        assert!(plain.to_string().contains("not an https:// URL"), "{plain}");
        let missing = Config::from_cli(
            local(&["--kube-api-server", "https://k:6443", "--kube-token-file", "/no/such/token"]),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(missing.to_string().starts_with("--join-kubernetes: --kube-token-file /no/such/token"), "{missing}");

        let ca = rcgen::generate_simple_self_signed(vec!["k".to_owned()]).unwrap().cert.pem();
        let (ca_file, token_file) = (dir.path().join("ca.crt"), dir.path().join("token"));
        std::fs::write(&ca_file, ca).unwrap();
        std::fs::write(&token_file, "agent-token").unwrap();
        let (ca_file, token_file) = (ca_file.to_str().unwrap(), token_file.to_str().unwrap());
        let flags = ["--kube-api-server", "https://k:6443", "--kube-ca-file", ca_file, "--kube-token-file", token_file];
        let config = Config::from_cli(local(&flags), &HashMap::new()).unwrap();
        assert!(matches!(config.trust.join, Some(JoinSource::Kubernetes(ref r)) if r.audience() == "hgw"));
        let sockets_only = local(&[&flags[..], &["--grpc-socket", "/tmp/x.sock"]].concat());
        assert!(matches!(Config::from_cli(sockets_only, &HashMap::new()), Err(ConfigError::JoinWithoutTcp)));
        let both = Cli::try_parse_from(["hgw-agent", "--join-kubernetes", "--join-tokens", "/t"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn local_mode_needs_an_existing_directory() {
        let err = Config::from_cli(cli(&["--local-apis", "/definitely/not/here"]), &HashMap::new()).unwrap_err();
        assert!(err.to_string().starts_with("--local-apis /definitely/not/here:"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_cli(cli(&["--local-apis", dir.path().to_str().unwrap()]), &HashMap::new()).unwrap();
        assert_eq!(config.mode_name(), "local");
        assert_eq!(config.grpc_listen, Some(DEFAULT_GRPC_LISTEN.parse().unwrap()));
    }

    #[test]
    fn limits_are_checked_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let apis = dir.path().to_str().unwrap();
        let config = Config::from_cli(cli(&["--local-apis", apis]), &HashMap::new()).unwrap();
        assert_eq!((config.rate_limit_max_keys, config.max_definition_bytes), (100_000, 8 << 20));
        assert_eq!(config.max_snapshot_bytes, 256 << 20);
        assert!(config.snapshot_key.is_none() && config.node_api_token.is_none());

        let short = dir.path().join("short");
        std::fs::write(&short, "0123456789").unwrap();
        let short = short.to_str().unwrap();
        let err = Config::from_cli(cli(&["--local-apis", apis, "--snapshot-key-file", short]), &HashMap::new());
        assert!(err.unwrap_err().to_string().contains("at least 32 are needed"));
        let err = Config::from_cli(cli(&["--local-apis", apis, "--node-api-token-file", short]), &HashMap::new());
        assert!(err.unwrap_err().to_string().contains("at least 16 are needed"));
        let err = Config::from_cli(cli(&["--local-apis", apis, "--node-api-token-file", "/dev/zero"]), &HashMap::new());
        assert!(err.unwrap_err().to_string().contains("not a regular file"));

        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret-node-api-token\n").unwrap();
        let config = Config::from_cli(
            cli(&["--local-apis", apis, "--node-api-token-file", token.to_str().unwrap()]),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(config.node_api_token.as_ref().map(Secret::expose), Some("s3cret-node-api-token"));
        assert!(!format!("{config:?}").contains("s3cret"), "the token never shows in Debug output");
        let err = Config::from_cli(cli(&["--local-apis", apis, "--rate-limit-max-keys", "0"]), &HashMap::new());
        assert!(matches!(err.unwrap_err(), ConfigError::RateLimitMaxKeys));
    }

    #[test]
    fn a_source_is_required_and_only_one() {
        let err = Config::from_cli(cli(&[]), &HashMap::new()).unwrap_err();
        assert!(matches!(err, ConfigError::NoSource));
        let env = HashMap::from([("gravitee_cloud_token".to_owned(), "x.y.z".to_owned())]);
        let err = Config::from_cli(cli(&["--local-apis", "/tmp"]), &env).unwrap_err();
        assert!(matches!(err, ConfigError::BothSources));
    }

    #[test]
    fn gravitee_lower_case_token_variable_is_read() {
        let env = HashMap::from([("gravitee_cloud_token".to_owned(), "not-a-jwt".to_owned())]);
        let err = Config::from_cli(cli(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("not a JWT"), "{err}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5").is_err());
        let dir = tempfile::tempdir().unwrap();
        let err = Config::from_cli(
            cli(&["--local-apis", dir.path().to_str().unwrap(), "--sync-interval", "10ms"]),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::SyncInterval(_)));
    }

    #[test]
    fn api_key_location_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().to_str().unwrap();
        let err =
            Config::from_cli(cli(&["--local-apis", local, "--api-key-header", "X Bad"]), &HashMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "--api-key-header `X Bad` is not a header name");
        let err = Config::from_cli(cli(&["--local-apis", local, "--api-key-query-param", "a&b"]), &HashMap::new())
            .unwrap_err();
        assert!(err.to_string().starts_with("--api-key-query-param `a&b`"));
        let ok = Config::from_cli(cli(&["--local-apis", local]), &HashMap::new()).unwrap();
        assert_eq!((ok.api_key_header.as_str(), ok.api_key_query_param.as_str()), ("X-Gravitee-Api-Key", "api-key"));
    }

    #[test]
    fn state_dir_defaults_follow_systemd_then_xdg_then_home() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let all = env(&[("STATE_DIRECTORY", "/var/lib/hgw:/var/lib/other"), ("XDG_STATE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(default_state_dir(&all), Some(PathBuf::from("/var/lib/hgw")));
        assert_eq!(default_state_dir(&env(&[("XDG_STATE_HOME", "/x"), ("HOME", "/h")])), Some(PathBuf::from("/x/hgw")));
        // The XDG spec ignores relative paths.
        assert_eq!(
            default_state_dir(&env(&[("XDG_STATE_HOME", "x"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/hgw"))
        );
        assert_eq!(default_state_dir(&HashMap::new()), None);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().to_str().unwrap();
        let given = Config::from_cli(cli(&["--local-apis", local, "--state-dir", "/s"]), &all).unwrap();
        assert_eq!(given.state_dir, Some(PathBuf::from("/s")));
    }

    #[test]
    fn redis_comes_from_the_flag_or_gravitee_variables() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().to_str().unwrap();
        let none = Config::from_cli(cli(&["--local-apis", local]), &HashMap::new()).unwrap();
        assert!(none.redis.is_none());

        let gravitee = HashMap::from([
            ("GRAVITEE_RATELIMIT_TYPE".to_owned(), "redis".to_owned()),
            ("GRAVITEE_RATELIMIT_REDIS_HOST".to_owned(), "10.1.1.1".to_owned()),
            ("GRAVITEE_RATELIMIT_REDIS_PASSWORD".to_owned(), "gravitee-secret".to_owned()),
        ]);
        let config = Config::from_cli(cli(&["--local-apis", local, "--redis-timeout", "1s"]), &gravitee).unwrap();
        let redis = config.redis.as_ref().unwrap();
        assert_eq!(redis.describe(), "standalone 10.1.1.1:6379 db 0, TLS off, password");
        assert_eq!(redis.timeout, Duration::from_secs(1));
        assert!(!format!("{config:?}").contains("gravitee-secret"), "Debug of the whole config redacts it");

        // The flag wins over the variables.
        let config = Config::from_cli(
            cli(&["--local-apis", local, "--redis-url", "redis+cluster://a:7000,b:7001", "--redis-pool-size", "4"]),
            &gravitee,
        )
        .unwrap();
        let redis = config.redis.unwrap();
        assert_eq!(redis.topology.mode(), "cluster");
        assert_eq!(redis.pool_size, 4);
    }

    #[test]
    fn redis_flag_mistakes_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().to_str().unwrap();
        let error = |args: &[&str]| {
            let mut all = vec!["--local-apis", local];
            all.extend_from_slice(args);
            Config::from_cli(cli(&all), &HashMap::new()).unwrap_err().to_string()
        };
        assert!(error(&["--redis-url", "mongodb://x"]).starts_with("--redis-url: unknown scheme `mongodb://`"));
        assert_eq!(
            error(&["--redis-url", "redis://h", "--redis-timeout", "0s"]),
            "--redis-timeout must be between 1ms and 60s"
        );
        assert_eq!(
            error(&["--redis-url", "redis://h", "--redis-pool-size", "0"]),
            "--redis-pool-size must be between 1 and 1024"
        );
        assert!(error(&["--redis-ca", "/x.pem"]).contains("no Redis is configured"));
        assert!(error(&["--redis-url", "redis://h", "--redis-ca", "/x.pem"]).contains("plaintext"));
        assert!(
            error(&["--redis-url", "rediss+cluster://h", "--redis-ca", "/x.pem"]).contains("standalone Redis only")
        );
        assert!(
            error(&["--redis-url", "rediss://h", "--redis-ca", "/nonexistent.pem"])
                .starts_with("--redis-ca /nonexistent.pem:")
        );
    }

    #[test]
    fn sizes_and_spool_options() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("1.5G").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());

        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().to_str().unwrap();
        let home = HashMap::from([("HOME".to_owned(), "/h".to_owned())]);
        let defaults = Config::from_cli(cli(&["--local-apis", local]), &home).unwrap();
        assert_eq!(defaults.spool.dir, PathBuf::from("/h/.local/state/hgw/spool"));
        assert_eq!((defaults.spool.max_bytes, defaults.spool.fsync), (DEFAULT_SPOOL_MAX_BYTES, Fsync::Batch));
        assert_eq!(defaults.spool.roll_after, DEFAULT_REPORTS_FLUSH);
        let given = Config::from_cli(
            cli(&["--local-apis", local, "--spool-dir", "/sp", "--spool-max-bytes", "1MiB", "--spool-fsync", "never"]),
            &home,
        )
        .unwrap();
        assert_eq!(
            (given.spool.dir, given.spool.max_bytes, given.spool.fsync),
            (PathBuf::from("/sp"), 1 << 20, Fsync::Never)
        );
        let small = Config::from_cli(cli(&["--local-apis", local, "--spool-max-bytes", "1000"]), &home).unwrap_err();
        assert_eq!(small.to_string(), "--spool-max-bytes must be at least 64KiB");

        assert_eq!(defaults.reports_gzip_level, DEFAULT_REPORTS_GZIP_LEVEL);
        for level in ["0", "1", "9"] {
            let given = Config::from_cli(cli(&["--local-apis", local, "--reports-gzip-level", level]), &home).unwrap();
            assert_eq!(given.reports_gzip_level.to_string(), level);
        }
        let high = Config::from_cli(cli(&["--local-apis", local, "--reports-gzip-level", "10"]), &home).unwrap_err();
        assert_eq!(high.to_string(), "--reports-gzip-level must be between 0 and 9");
        assert!(Cli::try_parse_from(["hgw-agent", "--reports-gzip-level", "-1"]).is_err());
        assert!(Cli::try_parse_from(["hgw-agent", "--spool-fsync", "always"]).is_err());
    }

    #[test]
    fn gate_url_is_checked() {
        assert_eq!(validate_gate_url("https://gate.example.com/").unwrap(), "https://gate.example.com");
        assert!(validate_gate_url("ftp://x").is_err());
        assert!(validate_gate_url("https://").is_err());
    }
}
