//! Command-line configuration: parsed by clap, then validated once into [`Config`].
//!
//! Validation is pure (no sockets, no environment reads beyond what clap does) so it is testable, and
//! so `main` can exit 64 on a bad value before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// HTTP listener of the proxy: Gravitee's gateway port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8082";
/// Admin listener (health, metrics, config dump): loopback only by default, it is not for users.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:18083";
/// Time in-flight requests get to finish after SIGTERM, Kubernetes' usual termination budget.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";
/// Analytics records buffered before new ones are dropped (about 1 KiB each, so ~10 MiB).
pub const DEFAULT_ANALYTICS_QUEUE: usize = 10_000;
/// How long a strict rate-limit check waits for the agent before the policy's error strategy applies.
/// The agent's own Redis timeout is shorter, so this only fires when the agent itself is stuck.
pub const DEFAULT_RATE_LIMIT_TIMEOUT: &str = "1s";
/// How long a WebSocket tunnel may carry nothing either way before the dataplane closes it. An hour
/// keeps quiet but live sessions (clients usually ping every 30-60 s) and still frees the sockets
/// and memory of tunnels whose peers vanished without closing.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: &str = "1h";
/// Headers whose values v4 log records replace with `*****`: credentials and sessions, both ways, and
/// Gravitee's default API-key header. (Gravitee itself logs them in clear unless the API adds its
/// data-logging-masking policy.) The header of every API-key plan is masked as well, whatever this says.
pub const DEFAULT_LOG_MASKED_HEADERS: &str = "Authorization,Proxy-Authorization,Cookie,Set-Cookie,X-Gravitee-Api-Key";

/// Which APIs a dataplane that exports traces (OTEL_EXPORTER_OTLP_ENDPOINT set) traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceApis {
    /// Those whose v4 definition turns `analytics.tracing.enabled` on, as Gravitee does.
    Definition,
    /// Every API (verbose policy spans still follow `analytics.tracing.verbose`).
    All,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The command line as the user typed it; every flag also reads an environment variable.
#[derive(Debug, Parser)]
#[command(name = "hgw-dataplane", version, about = "hgw dataplane: an HTTP proxy configured by hgw-agent")]
pub struct Cli {
    /// Agent address: `unix:/path/to.sock` (same host) or `https://host:port` (mutual TLS; needs
    /// --agent-ca and either --cert/--key or --join-token-file).
    #[arg(long, env = "HGW_AGENT")]
    pub agent: String,
    /// The agent's CA certificate (PEM), pinned for `https://` agents: only an agent whose certificate
    /// chains to it can configure this dataplane (no trust on first use).
    #[arg(long, env = "HGW_AGENT_CA")]
    pub agent_ca: Option<PathBuf>,
    /// This dataplane's certificate (PEM, from `hgw-agent pki issue --dataplane ID`), with --key.
    #[arg(long, env = "HGW_CERT")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, env = "HGW_KEY")]
    pub key: Option<PathBuf>,
    /// A file holding a join token: the dataplane asks the agent for a short-lived certificate
    /// (`hgw.v1.Identity/Join`) and renews it before it expires.
    #[arg(long, env = "HGW_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Address of the HTTP proxy listener.
    #[arg(long, env = "HGW_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Address of the admin listener (/ready, /live, /metrics, /config).
    #[arg(long, env = "HGW_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: String,
    /// Dataplane id sent to the agent [default: <hostname>-<pid>].
    #[arg(long, env = "HGW_DATAPLANE_ID")]
    pub id: Option<String>,
    /// Sharding tags, comma-separated (`!tag` excludes).
    #[arg(long, env = "HGW_TAGS", default_value = "")]
    pub tags: String,
    /// Tokio worker threads [default: available cores].
    #[arg(long, env = "HGW_WORKERS")]
    pub workers: Option<usize>,
    /// Set SO_REUSEPORT on the HTTP listener so several dataplanes share one port.
    #[arg(long, env = "HGW_REUSE_PORT")]
    pub reuse_port: bool,
    /// Once both listeners are bound, write `{"listen":"ip:port","admin":"ip:port"}` to this file.
    #[arg(long, env = "HGW_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Time in-flight requests and analytics get to finish on shutdown (`500ms`, `5s`, `1m`).
    #[arg(long, env = "HGW_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE)]
    pub shutdown_grace: String,
    /// Analytics entries (a request's metrics record with its log record) queued while the agent is
    /// away or not acknowledging; when full, the oldest entry is dropped (and counted) for a new one.
    #[arg(long, env = "HGW_ANALYTICS_QUEUE", default_value_t = DEFAULT_ANALYTICS_QUEUE)]
    pub analytics_queue: usize,
    /// Bytes of each request/response body kept in a v4 log record (APIs logging payloads); longer
    /// bodies are cut and marked truncated.
    #[arg(long, env = "HGW_LOG_MAX_PAYLOAD", default_value_t = crate::telemetry::logging::DEFAULT_LOG_MAX_PAYLOAD)]
    pub log_max_payload: usize,
    /// Longest wait for the agent's rate-limit counters before the policy's errorStrategy applies
    /// (pass through, or refuse with 429).
    #[arg(long, env = "HGW_RATE_LIMIT_TIMEOUT", default_value = DEFAULT_RATE_LIMIT_TIMEOUT)]
    pub rate_limit_timeout: String,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, env = "HGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Header names (comma-separated, any case) whose values v4 log records mask as `*****`, in
    /// requests and responses; the header of each API-key plan is always masked too. An empty value
    /// masks only those.
    #[arg(long, env = "HGW_LOG_MASKED_HEADERS", default_value = DEFAULT_LOG_MASKED_HEADERS)]
    pub log_masked_headers: String,
    /// Treat stdin as a lifeline to the process that started this dataplane: at end-of-file (that
    /// process died, even by SIGKILL, and its end of the pipe closed) drain for at most 1 s and exit.
    /// hgw-agent sets it for the dataplanes it supervises.
    #[arg(long, env = "HGW_LIFELINE_STDIN")]
    pub lifeline_stdin: bool,
    /// With an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): trace the APIs whose definition enables
    /// `analytics.tracing` (`definition`), or every API (`all`).
    #[arg(long, env = "HGW_TRACE_APIS", value_enum, default_value_t = TraceApis::Definition)]
    pub trace_apis: TraceApis,
    /// A WebSocket tunnel that carries no byte either way for this long is closed on both sides
    /// (`30s`, `10m`, `1h`); `0s` never closes an idle tunnel.
    #[arg(long, env = "HGW_WEBSOCKET_IDLE_TIMEOUT", default_value = DEFAULT_WEBSOCKET_IDLE_TIMEOUT)]
    pub websocket_idle_timeout: String,
}

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddr {
    /// A Unix domain socket path (sidecar / same host).
    Unix(PathBuf),
    /// A mutual-TLS gRPC endpoint, `https://host:port`.
    Https { uri: String, host: String, port: u16 },
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            AgentAddr::Https { uri, .. } => f.write_str(uri),
        }
    }
}

/// How this dataplane proves who it is to an `https://` agent.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A certificate and key provisioned by the operator (PEM).
    Static { cert_pem: Vec<u8>, key_pem: Vec<u8> },
    /// A join token exchanged for short-lived certificates: its file (re-read before every join, since
    /// a Kubernetes projected token rotates) and the token read at start.
    JoinToken { file: PathBuf, token: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Static { .. } => f.write_str("Static([redacted])"),
            Credential::JoinToken { file, .. } => write!(f, "JoinToken({}, [redacted])", file.display()),
        }
    }
}

/// Trust settings of an `https://` agent link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// The pinned CA (PEM).
    pub ca_pem: Vec<u8>,
    pub credential: Credential,
}

/// The validated configuration the library runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentAddr,
    /// Set for `https://` agents.
    pub agent_tls: Option<AgentTls>,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub id: String,
    pub tags: Vec<String>,
    pub workers: usize,
    pub reuse_port: bool,
    pub addr_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub analytics_queue: usize,
    pub log_max_payload: usize,
    pub rate_limit_timeout: Duration,
    pub log_format: LogFormat,
    /// Lower-case header names masked in log records.
    pub log_masked_headers: Vec<http::HeaderName>,
    pub lifeline_stdin: bool,
    pub trace_apis: TraceApis,
    /// Idle limit of WebSocket tunnels (`None`: none).
    pub websocket_idle_timeout: Option<Duration>,
    /// OpenTelemetry export, from the standard OTEL_* variables (`None`: tracing off). Read by `main`
    /// ([`hgw_otel::Settings::from_env`]), not by [`Config::from_cli`], which stays pure.
    pub otel: Option<hgw_otel::Settings>,
}

/// A configuration value that cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--agent {0:?}: expected unix:/path/to.sock or https://host:port")]
    Agent(String),
    #[error(
        "--agent {0:?}: the agent serves gRPC over TLS only (plaintext would let anyone on the network read and forge config); use https://HOST:PORT with --agent-ca FILE"
    )]
    PlaintextAgent(String),
    #[error(
        "--agent {0:?}: an https:// agent needs --agent-ca FILE (its CA certificate, pinned: no trust on first use)"
    )]
    NoAgentCa(String),
    #[error("--agent {0:?}: an https:// agent needs --cert and --key, or --join-token-file")]
    NoCredential(String),
    #[error("--cert and --key go together, and exclude --join-token-file")]
    CredentialMix,
    #[error(
        "--agent-ca, --cert, --key and --join-token-file are for https:// agents; a unix: agent is trusted by its socket"
    )]
    TlsForUnix,
    #[error("--{flag} {path}: {problem}")]
    File { flag: &'static str, path: String, problem: String },
    #[error("--{flag} {value:?}: expected ip:port")]
    SocketAddr { flag: &'static str, value: String },
    #[error("--{flag} {value:?}: {reason}")]
    Duration { flag: &'static str, value: String, reason: DurationError },
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--id must not be empty")]
    EmptyId,
    #[error("--log-masked-headers: `{0}` is not a header name")]
    MaskedHeader(String),
}

impl Config {
    /// Validates `cli`; `hostname`, `pid` and `cores` are passed in so validation stays pure.
    pub fn from_cli(cli: Cli, hostname: &str, pid: u32, cores: usize) -> Result<Config, ConfigError> {
        let Cli {
            agent,
            agent_ca,
            cert,
            key,
            join_token_file,
            listen,
            admin_listen,
            id,
            tags,
            workers,
            reuse_port,
            addr_file,
            shutdown_grace,
            analytics_queue,
            log_max_payload,
            rate_limit_timeout,
            log_format,
            log_masked_headers,
            lifeline_stdin,
            trace_apis,
            websocket_idle_timeout,
        } = cli;
        let agent = parse_agent(&agent)?;
        let agent_tls = agent_tls(&agent, agent_ca, cert, key, join_token_file)?;
        let listen = parse_socket_addr("listen", &listen)?;
        let admin_listen = parse_socket_addr("admin-listen", &admin_listen)?;
        let id = match id {
            Some(id) if id.trim().is_empty() => return Err(ConfigError::EmptyId),
            Some(id) => id.trim().to_owned(),
            None => format!("{hostname}-{pid}"),
        };
        let tags = tags.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        let workers = workers.unwrap_or(cores.max(1));
        if workers == 0 {
            return Err(ConfigError::Zero("workers"));
        }
        if analytics_queue == 0 {
            return Err(ConfigError::Zero("analytics-queue"));
        }
        let duration = |flag: &'static str, value: String| {
            parse_duration(&value).map_err(|reason| ConfigError::Duration { flag, value, reason })
        };
        let shutdown_grace = duration("shutdown-grace", shutdown_grace)?;
        let rate_limit_timeout = duration("rate-limit-timeout", rate_limit_timeout)?;
        if rate_limit_timeout.is_zero() {
            return Err(ConfigError::Zero("rate-limit-timeout"));
        }
        let websocket_idle_timeout =
            Some(duration("websocket-idle-timeout", websocket_idle_timeout)?).filter(|idle| !idle.is_zero());
        let log_masked_headers = log_masked_headers
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| http::HeaderName::try_from(name).map_err(|_| ConfigError::MaskedHeader(name.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            agent,
            agent_tls,
            listen,
            admin_listen,
            id,
            tags,
            workers,
            reuse_port,
            addr_file,
            shutdown_grace,
            analytics_queue,
            log_max_payload,
            rate_limit_timeout,
            log_format,
            log_masked_headers,
            lifeline_stdin,
            trace_apis,
            websocket_idle_timeout,
            otel: None,
        })
    }
}

/// The machine's hostname (for the default id and the hello), without libc: the kernel exposes it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn parse_agent(value: &str) -> Result<AgentAddr, ConfigError> {
    let bad = || ConfigError::Agent(value.to_owned());
    if let Some(path) = value.strip_prefix("unix:") {
        // Accept both `unix:/p` and `unix:///p`.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(AgentAddr::Unix(PathBuf::from(path)));
    }
    if value.starts_with("http://") {
        return Err(ConfigError::PlaintextAgent(value.to_owned()));
    }
    if let Some(rest) = value.strip_prefix("https://") {
        let uri: http::Uri = value.parse().map_err(|_| bad())?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        if rest.is_empty() || uri.path().len() > 1 || uri.query().is_some() {
            return Err(bad());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(443);
        return Ok(AgentAddr::Https { uri: value.trim_end_matches('/').to_owned(), host, port });
    }
    Err(bad())
}

fn read_file(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::File {
        flag,
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::File { flag, path: path.display().to_string(), problem: "empty".into() });
    }
    Ok(bytes)
}

/// Checks the trust flags against the agent address and reads their files (so a missing file is a
/// configuration error, before any port is bound). PEM contents are checked when the TLS client is built.
fn agent_tls(
    agent: &AgentAddr,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    join_token_file: Option<PathBuf>,
) -> Result<Option<AgentTls>, ConfigError> {
    let AgentAddr::Https { uri, .. } = agent else {
        if ca.is_some() || cert.is_some() || key.is_some() || join_token_file.is_some() {
            return Err(ConfigError::TlsForUnix);
        }
        return Ok(None);
    };
    let ca = ca.ok_or_else(|| ConfigError::NoAgentCa(uri.clone()))?;
    let ca_pem = read_file("agent-ca", &ca)?;
    let credential = match (cert, key, join_token_file) {
        (Some(cert), Some(key), None) => {
            Credential::Static { cert_pem: read_file("cert", &cert)?, key_pem: read_file("key", &key)? }
        }
        (None, None, Some(file)) => {
            let token = String::from_utf8(read_file("join-token-file", &file)?).map_err(|_| ConfigError::File {
                flag: "join-token-file",
                path: file.display().to_string(),
                problem: "not UTF-8 text".into(),
            })?;
            Credential::JoinToken { token: token.trim().to_owned(), file }
        }
        (None, None, None) => return Err(ConfigError::NoCredential(uri.clone())),
        _ => return Err(ConfigError::CredentialMix),
    };
    Ok(Some(AgentTls { ca_pem, credential }))
}

fn parse_socket_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::SocketAddr { flag, value: value.to_owned() })
}

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("expected a number followed by ms, s or m (e.g. 500ms, 5s, 1m)")]
    Syntax,
    #[error("too large")]
    Overflow,
}

/// Parses `500ms`, `5s`, `1m` (a whole number and a unit; `h` is accepted too).
pub fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or(DurationError::Syntax)?;
    let (number, unit) = value.split_at(split);
    if number.is_empty() {
        return Err(DurationError::Syntax);
    }
    let number: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::Syntax),
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or(DurationError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["hgw-dataplane"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts the arguments");
        Config::from_cli(cli, "host", 42, 2)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5"), Err(DurationError::Syntax));
        assert_eq!(parse_duration("s"), Err(DurationError::Syntax));
        assert_eq!(parse_duration("5 s"), Err(DurationError::Syntax));
        assert_eq!(parse_duration("-5s"), Err(DurationError::Syntax));
        assert_eq!(parse_duration("1.5s"), Err(DurationError::Syntax));
        assert_eq!(parse_duration("99999999999999999999s"), Err(DurationError::Overflow));
    }

    #[test]
    fn defaults() {
        let c = config(&["--agent", "unix:/run/hgw.sock"]).unwrap();
        assert_eq!(c.agent, AgentAddr::Unix("/run/hgw.sock".into()));
        assert_eq!(c.listen, "0.0.0.0:8082".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:18083".parse().unwrap());
        assert_eq!(c.id, "host-42");
        assert!(c.tags.is_empty());
        assert_eq!(c.workers, 2);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.analytics_queue, 10_000);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.reuse_port);
        assert!(!c.lifeline_stdin);
        assert_eq!(c.websocket_idle_timeout, Some(Duration::from_secs(3600)));
        let masked: Vec<&str> = c.log_masked_headers.iter().map(http::HeaderName::as_str).collect();
        assert_eq!(masked, ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-gravitee-api-key"]);
    }

    #[test]
    fn websocket_idle_timeout() {
        let idle = |value: &str| config(&["--agent", "unix:/s", "--websocket-idle-timeout", value]);
        assert_eq!(idle("90s").unwrap().websocket_idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(idle("0s").unwrap().websocket_idle_timeout, None, "0 turns the limit off");
        assert!(matches!(idle("forever"), Err(ConfigError::Duration { flag: "websocket-idle-timeout", .. })));
    }

    #[test]
    fn masked_headers_and_lifeline() {
        let c =
            config(&["--agent", "unix:/s", "--log-masked-headers", " X-Secret ,,Cookie", "--lifeline-stdin"]).unwrap();
        let masked: Vec<&str> = c.log_masked_headers.iter().map(http::HeaderName::as_str).collect();
        assert_eq!(masked, ["x-secret", "cookie"]);
        assert!(c.lifeline_stdin);
        assert!(config(&["--agent", "unix:/s", "--log-masked-headers", ""]).unwrap().log_masked_headers.is_empty());
        assert!(matches!(
            config(&["--agent", "unix:/s", "--log-masked-headers", "bad header"]),
            Err(ConfigError::MaskedHeader(name)) if name == "bad header"
        ));
    }

    #[test]
    fn explicit_values() {
        let dir = std::env::temp_dir().join(format!("hgw-dp-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let token = dir.join("token");
        std::fs::write(&ca, "pem").unwrap();
        std::fs::write(&token, "tok-0123456789abcdef\n").unwrap();
        let c = config(&[
            "--agent",
            "https://127.0.0.1:9000",
            "--agent-ca",
            ca.to_str().unwrap(),
            "--join-token-file",
            token.to_str().unwrap(),
            "--tags",
            " a, !b ,,",
            "--id",
            "dp-1",
            "--workers",
            "3",
            "--shutdown-grace",
            "500ms",
            "--log-format",
            "json",
            "--reuse-port",
        ])
        .unwrap();
        assert_eq!(
            c.agent,
            AgentAddr::Https { uri: "https://127.0.0.1:9000".into(), host: "127.0.0.1".into(), port: 9000 }
        );
        assert!(matches!(&c.agent_tls.as_ref().unwrap().credential,
            Credential::JoinToken { token, .. } if token == "tok-0123456789abcdef"));
        let ca_arg = ca.to_str().unwrap();
        assert!(matches!(config(&["--agent", "https://h:1"]), Err(ConfigError::NoAgentCa(_))));
        assert!(matches!(config(&["--agent", "https://h:1", "--agent-ca", ca_arg]), Err(ConfigError::NoCredential(_))));
        assert!(matches!(
            config(&["--agent", "https://h:1", "--agent-ca", ca_arg, "--cert", ca_arg]),
            Err(ConfigError::CredentialMix)
        ));
        assert!(matches!(config(&["--agent", "unix:/s", "--agent-ca", ca_arg]), Err(ConfigError::TlsForUnix)));
        assert!(matches!(config(&["--agent", "http://127.0.0.1:1"]), Err(ConfigError::PlaintextAgent(_))));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.tags, vec!["a", "!b"]);
        assert_eq!(c.id, "dp-1");
        assert_eq!(c.workers, 3);
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.reuse_port);
    }

    #[test]
    fn invalid_values() {
        assert!(matches!(config(&["--agent", "tcp://x:1"]), Err(ConfigError::Agent(_))));
        assert!(matches!(config(&["--agent", "unix:"]), Err(ConfigError::Agent(_))));
        assert!(matches!(config(&["--agent", "https://"]), Err(ConfigError::Agent(_))));
        assert!(matches!(
            config(&["--agent", "unix:/s", "--listen", "localhost"]),
            Err(ConfigError::SocketAddr { flag: "listen", .. })
        ));
        assert!(matches!(
            config(&["--agent", "unix:/s", "--shutdown-grace", "soon"]),
            Err(ConfigError::Duration { .. })
        ));
        assert!(matches!(config(&["--agent", "unix:/s", "--workers", "0"]), Err(ConfigError::Zero("workers"))));
        assert!(matches!(
            config(&["--agent", "unix:/s", "--analytics-queue", "0"]),
            Err(ConfigError::Zero("analytics-queue"))
        ));
        assert!(matches!(config(&["--agent", "unix:/s", "--id", " "]), Err(ConfigError::EmptyId)));
    }
}
