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
    /// Agent address: `unix:/path/to.sock` or `http://host:port`.
    #[arg(long, env = "HGW_AGENT")]
    pub agent: String,
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
    #[arg(long, env = "HGW_LOG_MAX_PAYLOAD", default_value_t = crate::logging::DEFAULT_LOG_MAX_PAYLOAD)]
    pub log_max_payload: usize,
    /// Longest wait for the agent's rate-limit counters before the policy's errorStrategy applies
    /// (pass through, or refuse with 429).
    #[arg(long, env = "HGW_RATE_LIMIT_TIMEOUT", default_value = DEFAULT_RATE_LIMIT_TIMEOUT)]
    pub rate_limit_timeout: String,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, env = "HGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// With an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): trace the APIs whose definition enables
    /// `analytics.tracing` (`definition`), or every API (`all`).
    #[arg(long, env = "HGW_TRACE_APIS", value_enum, default_value_t = TraceApis::Definition)]
    pub trace_apis: TraceApis,
}

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddr {
    /// A Unix domain socket path (sidecar / same host).
    Unix(PathBuf),
    /// A plain-text gRPC endpoint, `http://host:port`.
    Http(String),
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            AgentAddr::Http(uri) => f.write_str(uri),
        }
    }
}

/// The validated configuration the library runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentAddr,
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
    pub trace_apis: TraceApis,
    /// OpenTelemetry export, from the standard OTEL_* variables (`None`: tracing off). Read by `main`
    /// ([`hgw_otel::Settings::from_env`]), not by [`Config::from_cli`], which stays pure.
    pub otel: Option<hgw_otel::Settings>,
}

/// A configuration value that cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--agent {0:?}: expected unix:/path/to.sock or http://host:port")]
    Agent(String),
    #[error("--{flag} {value:?}: expected ip:port")]
    SocketAddr { flag: &'static str, value: String },
    #[error("--{flag} {value:?}: {reason}")]
    Duration { flag: &'static str, value: String, reason: DurationError },
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--id must not be empty")]
    EmptyId,
}

impl Config {
    /// Validates `cli`; `hostname`, `pid` and `cores` are passed in so validation stays pure.
    pub fn from_cli(cli: Cli, hostname: &str, pid: u32, cores: usize) -> Result<Config, ConfigError> {
        let Cli {
            agent,
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
            trace_apis,
        } = cli;
        let agent = parse_agent(&agent)?;
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
        Ok(Config {
            agent,
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
            trace_apis,
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
    if let Some(rest) = value.strip_prefix("http://") {
        let uri: http::Uri = value.parse().map_err(|_| bad())?;
        if uri.host().is_none_or(str::is_empty) || rest.is_empty() {
            return Err(bad());
        }
        return Ok(AgentAddr::Http(value.trim_end_matches('/').to_owned()));
    }
    Err(bad())
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
    }

    #[test]
    fn explicit_values() {
        let c = config(&[
            "--agent",
            "http://127.0.0.1:9000",
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
        assert_eq!(c.agent, AgentAddr::Http("http://127.0.0.1:9000".into()));
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
        assert!(matches!(config(&["--agent", "http://"]), Err(ConfigError::Agent(_))));
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
