//! Command-line configuration: parsed by clap, then validated once into [`Config`].
//!
//! Validation is pure (no sockets, no environment reads beyond what clap does and the open-files
//! limit behind the default `--max-connections`) so it is testable, and so `main` can exit 64 on a bad
//! value before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::http::forwarded::{self, TrustedProxies};
use crate::http::limits::{self, Limits};
use crate::http::path::{EscapedSlashes, PathOptions};

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
/// How often the HTTPS certificate files are checked for changes: a rotated certificate is served
/// within seconds, for the cost of reading a few small files.
pub const DEFAULT_TLS_RELOAD_INTERVAL: &str = "2s";
/// Protocols offered in ALPN on the HTTPS listener, preferred first.
pub const DEFAULT_TLS_ALPN: &str = "h2,http/1.1";

/// The format of the HTTPS certificates. Only PEM is read; the others are named so that they can be
/// refused with the command that converts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeystoreType {
    Pem,
    Jks,
    Pkcs12,
}

/// Whether HTTPS clients are asked for a certificate (Gravitee's `http.ssl.clientAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client without one is served, one with an untrusted one refused.
    Request,
    /// The handshake fails without a certificate from the truststore's CAs.
    Required,
}

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
    /// Longest wait for a request's header block: from accepting the connection (or the end of the
    /// previous response on a kept-alive HTTP/1 connection) to its last header. Past it the
    /// connection is closed. It is therefore also the HTTP/1 keep-alive idle timeout.
    #[arg(long, env = "HGW_CLIENT_HEADER_TIMEOUT", default_value = "30s")]
    pub client_header_timeout: String,
    /// Largest request header block, request line included (bytes): more answers 431, as Gravitee's
    /// `http.maxHeaderSize`. HTTP/2: the header list size announced to clients.
    #[arg(long, env = "HGW_MAX_HEADER_SIZE", default_value_t = limits::DEFAULT_MAX_HEADER_SIZE)]
    pub max_header_size: usize,
    /// Longest request line (method, target, version): longer answers 414, as Gravitee's
    /// `http.maxInitialLineLength`.
    #[arg(long, env = "HGW_MAX_INITIAL_LINE_LENGTH", default_value_t = limits::DEFAULT_MAX_INITIAL_LINE_LENGTH)]
    pub max_initial_line_length: usize,
    /// Most header fields in one HTTP/1 request: more answers 431.
    #[arg(long, env = "HGW_MAX_HEADERS", default_value_t = limits::DEFAULT_MAX_HEADERS)]
    pub max_headers: usize,
    /// Streams one HTTP/2 connection may have open at once, as Gravitee's
    /// `http.http2.maxConcurrentStreams`.
    #[arg(long, env = "HGW_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = limits::DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS)]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 connections are pinged after this long without a frame, and closed when the ping goes
    /// unanswered as long.
    #[arg(long, env = "HGW_HTTP2_KEEPALIVE", default_value = "60s")]
    pub http2_keepalive: String,
    /// An HTTP/2 connection with no open stream this long is sent a GOAWAY and closed, even while it
    /// answers pings (nginx's `http2_idle_timeout`); `0s` never closes one for idleness.
    #[arg(long, env = "HGW_HTTP2_IDLE_TIMEOUT", default_value = "3m")]
    pub http2_idle_timeout: String,
    /// Client connections served at once; more are closed on accept, counted in
    /// `hgw_dataplane_connections_shed_total` and logged at most every 10 s [default: half the
    /// open-files limit, less 32: the rest is for endpoint connections].
    #[arg(long, env = "HGW_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest a request body may stall while its endpoint waits for more: then 408, and the
    /// endpoint is not blamed (no circuit-breaker failure, no retry). Also bounds how long a
    /// failover API waits to buffer a body it may send again.
    #[arg(long, env = "HGW_REQUEST_BODY_TIMEOUT", default_value = "30s")]
    pub request_body_timeout: String,
    /// Proxies whose `X-Forwarded-For` entries are believed (CIDRs or addresses, comma-separated):
    /// the client is the first address, reading from the peer leftwards, that is not one of them. It
    /// is what ip-filtering checks and records show. `none` ignores the header; `all` reads it as
    /// Gravitee does (the first entry, whoever sent it).
    #[arg(long, env = "HGW_TRUSTED_PROXIES", default_value = forwarded::DEFAULT_TRUSTED_PROXIES)]
    pub trusted_proxies: String,
    /// An encoded `/` or `\\` in a path (`%2F`, `%5C`): `reject` (400), `keep` (forwarded encoded, part
    /// of its segment for routing and flows), or `unescape` (a separator for gateway and backend).
    #[arg(long, env = "HGW_ESCAPED_SLASHES", value_enum, default_value_t = EscapedSlashes::Reject)]
    pub escaped_slashes: EscapedSlashes,
    /// Merge runs of `/` in paths (`/a//b` → `/a/b`) before routing; `false` keeps them.
    #[arg(long, env = "HGW_MERGE_SLASHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub merge_slashes: bool,
    /// Serve HTTPS on --listen with this certificate chain (PEM, leaf first). Repeatable, paired in
    /// order with --tls-key; the certificate is chosen by SNI among the DNS names of each, and the first
    /// one is the default. Without it, Gravitee's `gravitee_http_secured` variables are read.
    #[arg(long = "tls-cert", env = "HGW_TLS_CERT", value_delimiter = ',', help_heading = "HTTPS")]
    pub tls_cert: Vec<PathBuf>,
    /// The private key (PEM, unencrypted) of each --tls-cert, in the same order.
    #[arg(long = "tls-key", env = "HGW_TLS_KEY", value_delimiter = ',', help_heading = "HTTPS")]
    pub tls_key: Vec<PathBuf>,
    /// Format of the certificates: only `pem` is served (`jks` and `pkcs12` are refused with the
    /// command that converts them).
    #[arg(long, env = "HGW_TLS_KEYSTORE_TYPE", value_enum, default_value_t = KeystoreType::Pem, help_heading = "HTTPS")]
    pub tls_keystore_type: KeystoreType,
    /// How often the certificate and key files are checked for changes (`0s`: never); changed files
    /// are served to new handshakes, established connections keep theirs.
    #[arg(long, env = "HGW_TLS_RELOAD_INTERVAL", default_value = DEFAULT_TLS_RELOAD_INTERVAL, help_heading = "HTTPS")]
    pub tls_reload_interval: String,
    /// Protocols offered in ALPN, comma-separated: `h2` and/or `http/1.1`.
    #[arg(long, env = "HGW_TLS_ALPN", default_value = DEFAULT_TLS_ALPN, help_heading = "HTTPS")]
    pub tls_alpn: String,
    /// Ask HTTPS clients for a certificate: `none`, `request` (optional, checked when sent) or
    /// `required` (the handshake fails without one). Needs --tls-truststore.
    #[arg(long, env = "HGW_TLS_CLIENT_AUTH", value_enum, default_value_t = ClientAuth::None, help_heading = "HTTPS")]
    pub tls_client_auth: ClientAuth,
    /// The CA certificates (one PEM bundle) client certificates must chain to; reloaded with the
    /// certificates (--tls-reload-interval).
    #[arg(long, env = "HGW_TLS_TRUSTSTORE", help_heading = "HTTPS")]
    pub tls_truststore: Option<PathBuf>,
    /// Check the configuration (flags, variables, certificate files) and exit: 0 when it is usable, 64
    /// with the reason otherwise; nothing is bound or connected. hgw-agent runs it before starting the
    /// dataplanes it supervises.
    #[arg(long)]
    pub check_config: bool,
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

/// HTTPS on the proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https {
    /// `(certificate chain, private key)` PEM files; the first pair is the default certificate.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// Offer `h2` in ALPN (`http/1.1` is always offered).
    pub h2: bool,
    /// `None`: the files are read once.
    pub reload_interval: Option<Duration>,
    /// Client certificates asked for, and the CAs they must chain to (`None` with [`ClientAuth::None`]).
    pub client_auth: Option<ClientTrust>,
}

/// Client certificate authentication of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTrust {
    /// `Request` or `Required`.
    pub mode: ClientAuth,
    /// PEM bundle of the trusted CA certificates.
    pub truststore: PathBuf,
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
    /// HTTPS on `listen` (`None`: plain HTTP/1.1 and h2c). From the `--tls-*` flags in
    /// [`Config::from_cli`], or from Gravitee's variables in [`Config::with_gravitee_env`].
    pub https: Option<Https>,
    /// `--tls-reload-interval`, also used for certificates named by Gravitee's variables.
    pub tls_reload_interval: Option<Duration>,
    /// `--tls-alpn` offers `h2`, also used for certificates named by Gravitee's variables without
    /// `gravitee_http_alpn`.
    pub tls_h2: bool,
    /// Idle limit of WebSocket tunnels (`None`: none).
    pub websocket_idle_timeout: Option<Duration>,
    /// OpenTelemetry export, from the standard OTEL_* variables (`None`: tracing off). Read by `main`
    /// ([`hgw_otel::Settings::from_env`]), not by [`Config::from_cli`], which stays pure.
    pub otel: Option<hgw_otel::Settings>,
    /// Connection, header and body limits of the HTTP listener.
    pub limits: Limits,
    pub trusted_proxies: TrustedProxies,
    pub paths: PathOptions,
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
    #[error("--trusted-proxies: {0} (expected all, none, or CIDRs separated by commas)")]
    TrustedProxies(String),
    #[error("--{flag} {value}: must be at least {min}")]
    TooSmall { flag: &'static str, value: usize, min: usize },
    #[error("--tls-cert and --tls-key come in pairs: {certs} certificate(s) for {keys} key(s)")]
    TlsPairs { certs: usize, keys: usize },
    #[error("--tls-alpn {0:?}: expected h2 and/or http/1.1, comma-separated")]
    Alpn(String),
    #[error(
        "{setting}: {kind} keystores are not read; convert to PEM files and pass them as certificate/key pairs: {how}"
    )]
    Keystore { setting: &'static str, kind: &'static str, how: &'static str },
    #[error("{setting}={value:?}: {problem}")]
    Gravitee { setting: String, value: String, problem: &'static str },
    #[error("{setting}: {kind} truststores are not read; export the CA certificates to one PEM file: {how}")]
    Truststore { setting: &'static str, kind: &'static str, how: &'static str },
    #[error("{setting}={mode}: client certificates need a truststore ({truststore})")]
    NoTruststore { setting: &'static str, mode: &'static str, truststore: &'static str },
}

/// How to export the CA certificates of a Java truststore as PEM.
const TRUSTSTORE_TO_PEM: &str =
    "keytool -exportcert -rfc -keystore truststore.jks -alias CA > ca.pem (once per CA alias, appended to one file)";

fn truststore_refusal(setting: &'static str, kind: &str) -> Option<ConfigError> {
    match kind {
        "jks" => Some(ConfigError::Truststore { setting, kind: "JKS", how: TRUSTSTORE_TO_PEM }),
        "pkcs12" | "p12" | "pfx" => Some(ConfigError::Truststore {
            setting,
            kind: "PKCS#12",
            how: "openssl pkcs12 -in truststore.p12 -nokeys -out ca.pem",
        }),
        _ => None,
    }
}

/// Gravitee's `http.ssl.clientAuth` values: `none`, `request`, `required`, and the older booleans
/// (`true` is `required`, `false` is `none`).
fn gravitee_client_auth(value: &str) -> Option<ClientAuth> {
    match value {
        "" | "none" | "false" => Some(ClientAuth::None),
        "request" | "requested" | "optional" => Some(ClientAuth::Request),
        "required" | "true" => Some(ClientAuth::Required),
        _ => None,
    }
}

fn client_auth_name(mode: ClientAuth) -> &'static str {
    match mode {
        ClientAuth::None => "none",
        ClientAuth::Request => "request",
        ClientAuth::Required => "required",
    }
}

/// How to turn a Java keystore into PEM files (the dataplane reads PEM only).
const JKS_TO_PEM: &str = "keytool -importkeystore -srckeystore keystore.jks -destkeystore keystore.p12 \
-deststoretype PKCS12, then openssl pkcs12 -in keystore.p12 -nokeys -out cert.pem and openssl pkcs12 -in \
keystore.p12 -nocerts -nodes -out key.pem";
const PKCS12_TO_PEM: &str = "openssl pkcs12 -in keystore.p12 -nokeys -out cert.pem and openssl pkcs12 -in \
keystore.p12 -nocerts -nodes -out key.pem (one pair per certificate; add -legacy for old files)";

fn keystore_refusal(setting: &'static str, kind: &str) -> Option<ConfigError> {
    match kind {
        "jks" => Some(ConfigError::Keystore { setting, kind: "JKS", how: JKS_TO_PEM }),
        "pkcs12" | "p12" | "pfx" => Some(ConfigError::Keystore { setting, kind: "PKCS#12", how: PKCS12_TO_PEM }),
        _ => None,
    }
}

fn parse_alpn(value: &str) -> Result<bool, ConfigError> {
    let mut h2 = false;
    let mut any = false;
    for protocol in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match protocol {
            "h2" => h2 = true,
            "http/1.1" => {}
            _ => return Err(ConfigError::Alpn(value.to_owned())),
        }
        any = true;
    }
    if !any {
        return Err(ConfigError::Alpn(value.to_owned()));
    }
    Ok(h2)
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
            client_header_timeout,
            max_header_size,
            max_initial_line_length,
            max_headers,
            http2_max_concurrent_streams,
            http2_keepalive,
            http2_idle_timeout,
            max_connections,
            request_body_timeout,
            trusted_proxies,
            escaped_slashes,
            merge_slashes,
            tls_cert,
            tls_key,
            tls_keystore_type,
            tls_reload_interval,
            tls_alpn,
            tls_client_auth,
            tls_truststore,
            check_config: _,
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
        let at_least = |flag: &'static str, value: usize, min: usize| {
            if value < min { Err(ConfigError::TooSmall { flag, value, min }) } else { Ok(value) }
        };
        let positive = |flag: &'static str, value: Duration| {
            if value.is_zero() { Err(ConfigError::Zero(flag)) } else { Ok(value) }
        };
        let limits = Limits {
            header_timeout: positive(
                "client-header-timeout",
                duration("client-header-timeout", client_header_timeout)?,
            )?,
            // hyper reads at least 8 KiB at a time; smaller limits are still enforced on what it parsed.
            max_header_size: at_least("max-header-size", max_header_size, 1024)?,
            max_initial_line_length: at_least("max-initial-line-length", max_initial_line_length, 64)?,
            max_headers: at_least("max-headers", max_headers, 8)?,
            http2_max_concurrent_streams: at_least(
                "http2-max-concurrent-streams",
                http2_max_concurrent_streams as usize,
                1,
            )? as u32,
            http2_keepalive: positive("http2-keepalive", duration("http2-keepalive", http2_keepalive)?)?,
            http2_idle_timeout: Some(duration("http2-idle-timeout", http2_idle_timeout)?)
                .filter(|idle| !idle.is_zero()),
            max_connections: match max_connections {
                Some(n) => at_least("max-connections", n, 1)?,
                None => limits::auto_max_connections(limits::open_files_limit()),
            },
            body_timeout: positive("request-body-timeout", duration("request-body-timeout", request_body_timeout)?)?,
        };
        let trusted_proxies = TrustedProxies::parse(&trusted_proxies).map_err(ConfigError::TrustedProxies)?;
        let websocket_idle_timeout =
            Some(duration("websocket-idle-timeout", websocket_idle_timeout)?).filter(|idle| !idle.is_zero());
        let log_masked_headers = log_masked_headers
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| http::HeaderName::try_from(name).map_err(|_| ConfigError::MaskedHeader(name.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        let kind = match tls_keystore_type {
            KeystoreType::Pem => "pem",
            KeystoreType::Jks => "jks",
            KeystoreType::Pkcs12 => "pkcs12",
        };
        if let Some(refusal) = keystore_refusal("--tls-keystore-type", kind) {
            return Err(refusal);
        }
        if tls_cert.len() != tls_key.len() {
            return Err(ConfigError::TlsPairs { certs: tls_cert.len(), keys: tls_key.len() });
        }
        let tls_reload_interval = Some(duration("tls-reload-interval", tls_reload_interval)?).filter(|d| !d.is_zero());
        let tls_h2 = parse_alpn(&tls_alpn)?;
        let client_auth = match (tls_client_auth, tls_truststore) {
            (ClientAuth::None, _) => None,
            (mode, Some(truststore)) => Some(ClientTrust { mode, truststore }),
            (mode, None) => {
                return Err(ConfigError::NoTruststore {
                    setting: "--tls-client-auth",
                    mode: client_auth_name(mode),
                    truststore: "--tls-truststore",
                });
            }
        };
        let https = (!tls_cert.is_empty()).then(|| Https {
            certificates: tls_cert.into_iter().zip(tls_key).collect(),
            h2: tls_h2,
            reload_interval: tls_reload_interval,
            client_auth,
        });
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
            https,
            tls_reload_interval,
            tls_h2,
            websocket_idle_timeout,
            otel: None,
            limits,
            trusted_proxies,
            paths: PathOptions { escaped_slashes, merge_slashes },
        })
    }

    /// Reads Gravitee's HTTPS settings when no `--tls-cert` was given: `gravitee_http_secured=true`
    /// with `gravitee_http_ssl_keystore_type=pem` and `gravitee_http_ssl_keystore_certificates_N_cert`
    /// / `..._key` (N = 0, 1, ...), and `gravitee_http_alpn` (Gravitee's default, `false`, offers
    /// HTTP/1.1 only). `env` looks a name up in lower case (Gravitee reads its variables in any case).
    pub fn with_gravitee_env(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        if self.https.is_some() {
            return Ok(self);
        }
        let flag = |name: &str| -> Result<Option<bool>, ConfigError> {
            match env(name).map(|v| v.trim().to_ascii_lowercase()) {
                None => Ok(None),
                Some(v) if v == "true" => Ok(Some(true)),
                Some(v) if v == "false" => Ok(Some(false)),
                Some(value) => {
                    Err(ConfigError::Gravitee { setting: name.into(), value, problem: "expected true or false" })
                }
            }
        };
        if flag("gravitee_http_secured")? != Some(true) {
            return Ok(self);
        }
        let client_auth = gravitee_client_trust(&env)?;
        let mut certificates = Vec::new();
        for index in 0.. {
            let cert = env(&format!("gravitee_http_ssl_keystore_certificates_{index}_cert"));
            let key = env(&format!("gravitee_http_ssl_keystore_certificates_{index}_key"));
            match (cert, key) {
                (None, None) => break,
                (Some(cert), Some(key)) => certificates.push((PathBuf::from(cert.trim()), PathBuf::from(key.trim()))),
                (cert, _) => {
                    let missing = if cert.is_some() { "key" } else { "cert" };
                    return Err(ConfigError::Gravitee {
                        setting: format!("gravitee_http_ssl_keystore_certificates_{index}_{missing}"),
                        value: String::new(),
                        problem: "each certificate needs both its cert and its key file",
                    });
                }
            }
        }
        // Gravitee's default keystore type is JKS; a list of PEM pairs makes PEM the obvious intent.
        let kind = env("gravitee_http_ssl_keystore_type").map(|v| v.trim().to_ascii_lowercase());
        let kind = kind.unwrap_or_else(|| if certificates.is_empty() { "jks".into() } else { "pem".into() });
        if let Some(refusal) = keystore_refusal("gravitee_http_ssl_keystore_type", &kind) {
            return Err(refusal);
        }
        if kind != "pem" {
            return Err(ConfigError::Gravitee {
                setting: "gravitee_http_ssl_keystore_type".into(),
                value: kind,
                problem: "expected pem (jks and pkcs12 must be converted to PEM; self-signed is not supported)",
            });
        }
        if certificates.is_empty() {
            return Err(ConfigError::Gravitee {
                setting: "gravitee_http_ssl_keystore_certificates_0_cert".into(),
                value: String::new(),
                problem: "a pem keystore needs at least one certificate (..._certificates_0_cert and ..._0_key)",
            });
        }
        let h2 = flag("gravitee_http_alpn")?.unwrap_or(false);
        self.https = Some(Https { certificates, h2, reload_interval: self.tls_reload_interval, client_auth });
        Ok(self)
    }
}

/// Gravitee's client certificate settings: `gravitee_http_ssl_clientAuth`, with
/// `gravitee_http_ssl_truststore_type` (`pem`; absent is read as PEM) and
/// `gravitee_http_ssl_truststore_path`.
fn gravitee_client_trust(env: &impl Fn(&str) -> Option<String>) -> Result<Option<ClientTrust>, ConfigError> {
    let value = env("gravitee_http_ssl_clientauth").map(|v| v.trim().to_ascii_lowercase()).unwrap_or_default();
    let mode = gravitee_client_auth(&value).ok_or_else(|| ConfigError::Gravitee {
        setting: "gravitee_http_ssl_clientAuth".into(),
        value: value.clone(),
        problem: "expected none, request or required",
    })?;
    if mode == ClientAuth::None {
        return Ok(None);
    }
    if let Some(kind) = env("gravitee_http_ssl_truststore_type").map(|v| v.trim().to_ascii_lowercase()) {
        if let Some(refusal) = truststore_refusal("gravitee_http_ssl_truststore_type", &kind) {
            return Err(refusal);
        }
        if !kind.is_empty() && kind != "pem" {
            return Err(ConfigError::Gravitee {
                setting: "gravitee_http_ssl_truststore_type".into(),
                value: kind,
                problem: "expected pem",
            });
        }
    }
    match env("gravitee_http_ssl_truststore_path").map(|v| v.trim().to_owned()).filter(|p| !p.is_empty()) {
        Some(path) => Ok(Some(ClientTrust { mode, truststore: PathBuf::from(path) })),
        None => Err(ConfigError::NoTruststore {
            setting: "gravitee_http_ssl_clientAuth",
            mode: client_auth_name(mode),
            truststore: "gravitee_http_ssl_truststore_path",
        }),
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

    #[test]
    fn https_from_flags() {
        let c =
            config(&["--agent", "unix:/s", "--tls-cert", "a.crt,b.crt", "--tls-key", "a.key", "--tls-key", "b.key"]);
        let https = c.unwrap().https.unwrap();
        assert_eq!(
            https.certificates,
            [(PathBuf::from("a.crt"), PathBuf::from("a.key")), (PathBuf::from("b.crt"), PathBuf::from("b.key"))]
        );
        assert!(https.h2);
        assert_eq!(https.reload_interval, Some(Duration::from_secs(2)));
        let c = config(&["--agent", "unix:/s", "--tls-cert", "a", "--tls-key", "k", "--tls-alpn", "http/1.1"]).unwrap();
        assert!(!c.https.unwrap().h2);
        let c = config(&["--agent", "unix:/s", "--tls-cert", "a", "--tls-key", "k", "--tls-reload-interval", "0s"]);
        assert_eq!(c.unwrap().https.unwrap().reload_interval, None);
        assert!(config(&["--agent", "unix:/s"]).unwrap().https.is_none());
        assert!(matches!(
            config(&["--agent", "unix:/s", "--tls-cert", "a"]),
            Err(ConfigError::TlsPairs { certs: 1, keys: 0 })
        ));
        assert!(matches!(config(&["--agent", "unix:/s", "--tls-alpn", "h3"]), Err(ConfigError::Alpn(_))));
        let tls = ["--agent", "unix:/s", "--tls-cert", "a", "--tls-key", "k"];
        assert!(config(&tls).unwrap().https.unwrap().client_auth.is_none());
        for (mode, expected) in [("request", ClientAuth::Request), ("required", ClientAuth::Required)] {
            let mut args = tls.to_vec();
            args.extend(["--tls-client-auth", mode]);
            assert!(matches!(config(&args), Err(ConfigError::NoTruststore { .. })), "{mode} without a truststore");
            args.extend(["--tls-truststore", "ca.pem"]);
            let trust = config(&args).unwrap().https.unwrap().client_auth.unwrap();
            assert_eq!(trust, ClientTrust { mode: expected, truststore: PathBuf::from("ca.pem") });
        }
        for kind in ["jks", "pkcs12"] {
            let error = config(&["--agent", "unix:/s", "--tls-keystore-type", kind]).unwrap_err().to_string();
            assert!(error.contains("--tls-keystore-type") && error.contains("openssl pkcs12"), "{error}");
        }
    }

    #[test]
    fn https_from_gravitee_variables() {
        let gravitee = |vars: &[(&str, &str)]| {
            let vars: std::collections::HashMap<String, String> =
                vars.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
            config(&["--agent", "unix:/s"]).unwrap().with_gravitee_env(|name| vars.get(name).cloned())
        };
        let https = gravitee(&[
            ("gravitee_http_secured", "true"),
            ("gravitee_http_ssl_keystore_type", "PEM"),
            ("gravitee_http_ssl_keystore_certificates_0_cert", "/a.crt"),
            ("gravitee_http_ssl_keystore_certificates_0_key", "/a.key"),
            ("GRAVITEE_HTTP_SSL_KEYSTORE_CERTIFICATES_1_CERT", "/b.crt"),
            ("GRAVITEE_HTTP_SSL_KEYSTORE_CERTIFICATES_1_KEY", "/b.key"),
            ("gravitee_http_alpn", "true"),
            ("gravitee_http_ssl_sni", "true"),
        ])
        .unwrap()
        .https
        .unwrap();
        assert_eq!(https.certificates.len(), 2);
        assert_eq!(https.certificates[1], (PathBuf::from("/b.crt"), PathBuf::from("/b.key")));
        assert!(https.h2);
        let pem = [
            ("gravitee_http_secured", "true"),
            ("gravitee_http_ssl_keystore_certificates_0_cert", "/a.crt"),
            ("gravitee_http_ssl_keystore_certificates_0_key", "/a.key"),
        ];
        assert!(!gravitee(&pem).unwrap().https.unwrap().h2, "Gravitee's alpn default is false");
        // Not secured: the rest is ignored, as Gravitee does.
        assert!(gravitee(&pem[1..]).unwrap().https.is_none());
        for kind in ["jks", "pkcs12"] {
            let error = gravitee(&[("gravitee_http_secured", "true"), ("gravitee_http_ssl_keystore_type", kind)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("convert to PEM"), "{error}");
        }
        let error = gravitee(&[("gravitee_http_secured", "true"), ("gravitee_http_ssl_keystore_path", "/k.jks")]);
        assert!(error.unwrap_err().to_string().contains("keytool -importkeystore"));
        let error = gravitee(&[
            ("gravitee_http_secured", "true"),
            ("gravitee_http_ssl_keystore_type", "pem"),
            ("gravitee_http_ssl_keystore_certificates_0_cert", "/a.crt"),
        ]);
        assert!(error.unwrap_err().to_string().contains("certificates_0_key"));
        let error = gravitee(&[("gravitee_http_secured", "yes")]);
        assert!(matches!(error, Err(ConfigError::Gravitee { .. })));
        // Client certificates: a truststore is needed, PEM only; `true` is Gravitee's older `required`.
        let error = gravitee(&[("gravitee_http_secured", "true"), ("gravitee_http_ssl_clientAuth", "required")]);
        assert!(error.unwrap_err().to_string().contains("gravitee_http_ssl_truststore_path"));
        for (value, mode) in
            [("request", ClientAuth::Request), ("REQUIRED", ClientAuth::Required), ("true", ClientAuth::Required)]
        {
            let mut vars = pem.to_vec();
            vars.extend([("gravitee_http_ssl_clientAuth", value), ("gravitee_http_ssl_truststore_path", "/ca.pem")]);
            let trust = gravitee(&vars).unwrap().https.unwrap().client_auth.unwrap();
            assert_eq!(trust, ClientTrust { mode, truststore: PathBuf::from("/ca.pem") });
        }
        let mut vars = pem.to_vec();
        vars.push(("gravitee_http_ssl_clientAuth", "none"));
        assert!(gravitee(&vars).unwrap().https.unwrap().client_auth.is_none());
        for kind in ["jks", "pkcs12"] {
            let mut vars = pem.to_vec();
            vars.extend([
                ("gravitee_http_ssl_clientAuth", "required"),
                ("gravitee_http_ssl_truststore_type", kind),
                ("gravitee_http_ssl_truststore_path", "/t"),
            ]);
            let error = gravitee(&vars).unwrap_err().to_string();
            assert!(error.contains("gravitee_http_ssl_truststore_type") && error.contains("PEM"), "{error}");
        }
        let error = gravitee(&[("gravitee_http_secured", "true"), ("gravitee_http_ssl_clientAuth", "maybe")]);
        assert!(matches!(error, Err(ConfigError::Gravitee { .. })));
        // The flags win over the variables.
        let vars = [("gravitee_http_secured".to_owned(), "true".to_owned())];
        let c = config(&["--agent", "unix:/s", "--tls-cert", "f.crt", "--tls-key", "f.key"]).unwrap();
        let c = c.with_gravitee_env(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).unwrap();
        assert_eq!(c.https.unwrap().certificates[0].0, PathBuf::from("f.crt"));
    }
}
