//! The agent's connection to Redis: where rate-limit counters and the last-good config snapshot are
//! shared by every agent of a cluster.
//!
//! Only the agent talks to Redis (the dataplane asks the agent), so this is the one place that knows
//! the three deployments Gravitee supports — standalone (optionally TLS), Sentinel and Cluster — and
//! turns Redis failures into [`RedisError`]s whose kind ([`RedisError::kind`]) tells a timeout from an
//! outage from bad credentials. Callers decide what an error means for them (a rate limit applies its
//! `errorStrategy`, the snapshot writer retries later): Redis being down never stops the gateway.
//!
//! [`Redis::new`] does no I/O: pools connect on first use and reconnect by themselves, so an agent
//! starts while Redis is down and recovers when it returns. [`Redis::monitor`] pings in the background
//! to keep `/_node/health` and the `hgw_agent_redis_up` gauge current.
//!
//! Inside the agent crate, the `redis` client crate is reached as `::redis` (this module shadows the
//! name at the crate root).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::redis::aio::ConnectionLike;
use ::redis::{ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo, RedisFuture};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::secret::Secret;

/// Per-command timeout: a rate-limit check waits on Redis inside a request, so the bound is tight;
/// a healthy Redis on the same network answers in well under a millisecond.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Connections per pool. Each is multiplexed (many commands in flight), so a few suffice even for
/// thousands of requests per second; more only help when single commands are slow.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Lower bound for opening a connection (TCP, TLS handshake, AUTH, and for a cluster the slot map):
/// several round trips that would fail needlessly under a 200 ms command timeout on a loaded host.
/// With Redis refusing connections this is not reached: the failure is immediate.
pub const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often [`Redis::monitor`] pings: fast enough that health reflects an outage within seconds,
/// rare enough to cost nothing.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Redis's and Sentinel's well-known ports, used when a URL or Gravitee variable gives none.
pub const DEFAULT_PORT: u16 = 6379;
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// The URL forms accepted by `--redis-url`, as shown in errors.
const URL_FORMS: &str =
    "redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://";

/// One Redis (or Sentinel) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNode {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the Redis deployment is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server.
    Standalone(RedisNode),
    /// Sentinels that name the current master of `master`; the agent follows failovers.
    Sentinel { master: String, sentinels: Vec<RedisNode> },
    /// Seed nodes of a Redis Cluster; the client discovers the rest and follows slot moves.
    Cluster(Vec<RedisNode>),
}

impl Topology {
    /// `standalone`, `sentinel` or `cluster`: the fixed label shown on `/_node/health`.
    pub fn mode(&self) -> &'static str {
        match self {
            Topology::Standalone(_) => "standalone",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster(_) => "cluster",
        }
    }
}

/// A validated Redis configuration (from `--redis-url` or Gravitee's `gravitee_ratelimit_redis_*`).
///
/// `Debug` never shows the password (it is a [`Secret`]) nor the CA bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub topology: Topology,
    /// TLS to every node (`rediss…` schemes, `gravitee_ratelimit_redis_ssl=true`).
    pub tls: bool,
    /// ACL user (Redis 6+); `None`: the default user.
    pub username: Option<String>,
    /// Applies to the data nodes (the server, the Sentinel-named master, every cluster node), not to
    /// the Sentinels themselves, which usually run without authentication.
    pub password: Option<Secret>,
    /// Database number (standalone and Sentinel; a cluster has only database 0).
    pub db: i64,
    /// PEM certificates trusted for TLS instead of the system roots (`--redis-ca`, standalone only).
    pub ca_pem: Option<Vec<u8>>,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Connections per pool.
    pub pool_size: usize,
    /// TLS without checking the server's certificate: only a `cache-redis` resource's explicit
    /// `ssl.trustAll` sets it (never `--redis-url` nor Gravitee's variables).
    pub insecure: bool,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RedisConfig { topology, tls, username, password, db, ca_pem, timeout, pool_size, insecure } = self;
        f.debug_struct("RedisConfig")
            .field("topology", topology)
            .field("tls", tls)
            .field("username", username)
            .field("password", password)
            .field("db", db)
            .field("ca_pem", &ca_pem.as_ref().map(|pem| format!("{} bytes", pem.len())))
            .field("timeout", timeout)
            .field("pool_size", pool_size)
            .field("insecure", insecure)
            .finish()
    }
}

/// A Redis setting the agent cannot use. The message names the flag or variable and never repeats
/// the URL (which may hold the password) or the password.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("--redis-url: {0}")]
    Url(String),
    #[error("{variable}: {problem}")]
    Variable { variable: String, problem: String },
    #[error(
        "gravitee_ratelimit_redis_sentinel_* and gravitee_ratelimit_redis_cluster_* are both set: Redis is either \
         Sentinel or Cluster, not both"
    )]
    SentinelAndCluster,
    #[error("--redis-ca {path}: {problem}")]
    Ca { path: String, problem: String },
    #[error("--redis-timeout must be between 1ms and 60s")]
    Timeout,
    #[error("--redis-pool-size must be between 1 and 1024")]
    PoolSize,
}

fn url_error(problem: impl Into<String>) -> RedisConfigError {
    RedisConfigError::Url(problem.into())
}

impl RedisConfig {
    /// Parses a `--redis-url`:
    /// `redis[s]://[user[:password]@]host[:port][/db]`,
    /// `redis[s]+sentinel://[user[:password]@]host1[:port1],host2[:port2]/MASTER_NAME[/db]`,
    /// `redis[s]+cluster://[user[:password]@]host1[:port1],host2[:port2]`.
    /// User and password may be %-encoded. Timeout and pool size get their defaults.
    pub fn from_url(url: &str) -> Result<RedisConfig, RedisConfigError> {
        let url = url.trim();
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| url_error(format!("not a Redis URL; expected {URL_FORMS}")))?;
        let scheme = scheme.to_ascii_lowercase();
        #[derive(PartialEq)]
        enum Kind {
            Standalone,
            Sentinel,
            Cluster,
        }
        let (kind, tls) = match scheme.as_str() {
            "redis" => (Kind::Standalone, false),
            "rediss" => (Kind::Standalone, true),
            "redis+sentinel" => (Kind::Sentinel, false),
            "rediss+sentinel" => (Kind::Sentinel, true),
            "redis+cluster" => (Kind::Cluster, false),
            "rediss+cluster" => (Kind::Cluster, true),
            // The scheme is shown only when it cannot be a mangled secret.
            other if !other.is_empty() && other.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
                return Err(url_error(format!("unknown scheme `{other}://`; expected {URL_FORMS}")));
            }
            _ => return Err(url_error(format!("unknown scheme; expected {URL_FORMS}"))),
        };
        // The last `@` ends the credentials, so an unencoded `@` in a password still works.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if rest.contains(['?', '#']) {
            return Err(url_error("query parameters and fragments are not supported"));
        }
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (info, None),
                };
                let user = percent_decode(user).ok_or_else(|| url_error("the user name has a malformed %-escape"))?;
                let pass = pass
                    .map(percent_decode)
                    .map(|p| p.ok_or_else(|| url_error("the password has a malformed %-escape")))
                    .transpose()?;
                (Some(user).filter(|u| !u.is_empty()), pass.filter(|p| !p.is_empty()).map(Secret::new))
            }
        };
        if username.is_some() && password.is_none() {
            return Err(url_error("a user name needs a password (redis://user:password@host)"));
        }
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = if kind == Kind::Sentinel { DEFAULT_SENTINEL_PORT } else { DEFAULT_PORT };
        let nodes = hosts
            .split(',')
            .enumerate()
            .map(|(i, text)| {
                parse_node(text, default_port).map_err(|problem| url_error(format!("host {}: {problem}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let parse_db = |text: &str| {
            text.parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| url_error("the database must be a number (redis://host:port/DB)"))
        };
        let (topology, db) = match kind {
            Kind::Standalone => {
                let [node] = <[RedisNode; 1]>::try_from(nodes)
                    .map_err(|_| url_error("several hosts need redis+sentinel:// or redis+cluster://"))?;
                let db = match segments.as_slice() {
                    [] => 0,
                    [db] => parse_db(db)?,
                    _ => return Err(url_error("the path can only be the database number")),
                };
                (Topology::Standalone(node), db)
            }
            Kind::Sentinel => {
                let (master, db) = match segments.as_slice() {
                    [] => {
                        return Err(url_error(
                            "Sentinel needs the master name: redis+sentinel://h1:p1,h2:p2/MASTER_NAME",
                        ));
                    }
                    [master] => (*master, 0),
                    [master, db] => (*master, parse_db(db)?),
                    _ => return Err(url_error("the path is /MASTER_NAME[/db]")),
                };
                let master =
                    percent_decode(master).ok_or_else(|| url_error("the master name has a malformed %-escape"))?;
                (Topology::Sentinel { master, sentinels: nodes }, db)
            }
            Kind::Cluster => {
                match segments.as_slice() {
                    [] | ["0"] => {}
                    _ => return Err(url_error("Redis Cluster has only database 0; the URL takes no path")),
                }
                (Topology::Cluster(nodes), 0)
            }
        };
        Ok(RedisConfig {
            topology,
            tls,
            username,
            password,
            db,
            ca_pem: None,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            insecure: false,
        })
    }

    /// Reads Gravitee's variables (`gravitee_ratelimit_*`, any case): `None` unless
    /// `gravitee_ratelimit_type` is `redis`. Keys, as Gravitee maps `_` to `.`:
    /// `ratelimit.redis.{host, port, username, password, ssl}`, `ratelimit.redis.sentinel.master`,
    /// `ratelimit.redis.sentinel.nodes[N].{host, port}`, `ratelimit.redis.cluster.nodes[N].{host, port}`.
    pub fn from_gravitee_env(env: &HashMap<String, String>) -> Result<Option<RedisConfig>, RedisConfigError> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        if !lookup("gravitee_ratelimit_type").is_some_and(|t| t.eq_ignore_ascii_case("redis")) {
            return Ok(None);
        }
        let variable = |name: &str, problem: String| RedisConfigError::Variable { variable: name.to_owned(), problem };
        let parse_port = |name: &str, default: u16| -> Result<u16, RedisConfigError> {
            match lookup(name) {
                None => Ok(default),
                Some(text) => text
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| variable(name, format!("`{text}` is not a port number (1-65535)"))),
            }
        };
        let tls = match lookup("gravitee_ratelimit_redis_ssl") {
            None => false,
            Some(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return Err(variable("gravitee_ratelimit_redis_ssl", format!("`{text}` is not true or false"))),
            },
        };
        let username = lookup("gravitee_ratelimit_redis_username");
        let password = lookup("gravitee_ratelimit_redis_password").map(Secret::new);
        if username.is_some() && password.is_none() {
            return Err(variable(
                "gravitee_ratelimit_redis_username",
                "a user name needs gravitee_ratelimit_redis_password".into(),
            ));
        }
        let sentinels = indexed_nodes(env, "gravitee_ratelimit_redis_sentinel_nodes_", DEFAULT_SENTINEL_PORT)?;
        let master = lookup("gravitee_ratelimit_redis_sentinel_master");
        let cluster = indexed_nodes(env, "gravitee_ratelimit_redis_cluster_nodes_", DEFAULT_PORT)?;
        let sentinel_given = master.is_some() || !sentinels.is_empty();
        let topology = match (sentinel_given, cluster.is_empty()) {
            (true, false) => return Err(RedisConfigError::SentinelAndCluster),
            (true, true) => {
                let master = master.ok_or_else(|| {
                    variable(
                        "gravitee_ratelimit_redis_sentinel_master",
                        "missing: Sentinel needs the master name".into(),
                    )
                })?;
                if sentinels.is_empty() {
                    return Err(variable(
                        "gravitee_ratelimit_redis_sentinel_nodes_0_host",
                        "missing: Sentinel needs at least one node".into(),
                    ));
                }
                Topology::Sentinel { master, sentinels }
            }
            (false, false) => Topology::Cluster(cluster),
            (false, true) => {
                let host = lookup("gravitee_ratelimit_redis_host").unwrap_or_else(|| "localhost".to_owned());
                let host = parse_host(&host).map_err(|problem| variable("gravitee_ratelimit_redis_host", problem))?;
                let port = parse_port("gravitee_ratelimit_redis_port", DEFAULT_PORT)?;
                Topology::Standalone(RedisNode { host, port })
            }
        };
        Ok(Some(RedisConfig {
            topology,
            tls,
            username,
            password,
            db: 0,
            ca_pem: None,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            insecure: false,
        }))
    }

    /// Mode, addresses, TLS and user — never the password.
    pub fn describe(&self) -> String {
        let join = |nodes: &[RedisNode]| nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let place = match &self.topology {
            Topology::Standalone(node) => format!("standalone {node} db {}", self.db),
            Topology::Sentinel { master, sentinels } => {
                format!("sentinel master `{master}` via {} db {}", join(sentinels), self.db)
            }
            Topology::Cluster(nodes) => format!("cluster seeds {}", join(nodes)),
        };
        let tls = match (self.tls, self.ca_pem.is_some()) {
            (false, _) => "TLS off",
            (true, false) => "TLS on (system roots)",
            (true, true) => "TLS on (--redis-ca)",
        };
        let auth = match (&self.username, &self.password) {
            (Some(user), _) => format!("user `{user}` with password"),
            (None, Some(_)) => "password".to_owned(),
            (None, None) => "no auth".to_owned(),
        };
        format!("{place}, {tls}, {auth}")
    }
}

/// Collects `PREFIX{N}_host` / `PREFIX{N}_port` (any case) into nodes ordered by N.
fn indexed_nodes(
    env: &HashMap<String, String>,
    prefix: &str,
    default_port: u16,
) -> Result<Vec<RedisNode>, RedisConfigError> {
    let mut found: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
    for (key, value) in env {
        let lower = key.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix(prefix) else { continue };
        let Some((index, field)) = rest.split_once('_') else { continue };
        let Ok(index) = index.parse::<u32>() else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let entry = found.entry(index).or_default();
        match field {
            "host" => entry.0 = Some(value.to_owned()),
            "port" => entry.1 = Some(value.to_owned()),
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|(index, (host, port))| {
            let name = |field: &str| format!("{prefix}{index}_{field}");
            let host = host.ok_or_else(|| RedisConfigError::Variable {
                variable: name("host"),
                problem: "missing (the node has a port but no host)".into(),
            })?;
            let host =
                parse_host(&host).map_err(|problem| RedisConfigError::Variable { variable: name("host"), problem })?;
            let port = match port {
                None => default_port,
                Some(text) => {
                    text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| RedisConfigError::Variable {
                        variable: name("port"),
                        problem: format!("`{text}` is not a port number (1-65535)"),
                    })?
                }
            };
            Ok(RedisNode { host, port })
        })
        .collect()
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`. The error never repeats the text (a mistyped URL can
/// put the password there).
fn parse_node(text: &str, default_port: u16) -> Result<RedisNode, String> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an IPv6 address needs a closing `]`")?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("expected `:port` after `]`")?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let valid_host = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c) || (c == ':' && text.starts_with('[')));
    if !valid_host {
        return Err("not a valid host name or address".into());
    }
    let port = match port {
        None => default_port,
        Some(port) => {
            port.parse::<u16>().ok().filter(|p| *p > 0).ok_or("the port is not a number between 1 and 65535")?
        }
    };
    Ok(RedisNode { host: host.to_owned(), port })
}

/// A host alone (Gravitee's `host` keys, whose port is a key of its own): a name, an IPv4 or IPv6
/// address (bracketed or not).
fn parse_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(bare.to_owned());
    }
    if text.contains(':') {
        return Err("a host name or address only; the port has a variable of its own".into());
    }
    parse_node(text, DEFAULT_PORT).map(|node| node.host)
}

/// Decodes `%XX` escapes (RFC 3986 userinfo); `None` on a malformed escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Which step of a call failed: telling them apart says whether Redis is unreachable or slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Getting a pooled connection (opening one when none is idle).
    Connect,
    /// The command itself.
    Command,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::Command => "waiting for the answer",
        })
    }
}

/// A Redis call that failed. [`RedisError::kind`] is a fixed label for logs, health and metrics.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No answer in time: Redis is overloaded, blocked, or the network drops packets.
    #[error("Redis timed out after {after:?} {phase}")]
    Timeout { phase: Phase, after: Duration },
    /// Redis cannot be reached or the connection broke (refused, reset, TLS failure, no master known
    /// by the Sentinels, no cluster node reachable).
    #[error("Redis is unavailable: {0}")]
    Unavailable(#[source] ::redis::RedisError),
    /// Redis refused the user name or password.
    #[error("Redis refused the credentials: {0}")]
    Auth(#[source] ::redis::RedisError),
    /// Redis answered with an error, or with a value of another type than asked for.
    #[error("Redis command failed: {0}")]
    Command(#[source] ::redis::RedisError),
    /// The client could not be built (a certificate it cannot use, a closed pool).
    #[error("Redis client: {0}")]
    Client(String),
}

impl RedisError {
    /// `timeout`, `unavailable`, `auth`, `command` or `client`.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisError::Timeout { .. } => "timeout",
            RedisError::Unavailable(_) => "unavailable",
            RedisError::Auth(_) => "auth",
            RedisError::Command(_) => "command",
            RedisError::Client(_) => "client",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, RedisError::Timeout { .. })
    }

    /// Sorts a client error by what it says about Redis; `phase` decides for errors that could be
    /// either an outage or a bad command.
    fn classify(error: ::redis::RedisError, phase: Phase, after: Duration) -> RedisError {
        use ::redis::ErrorKind;
        let auth_code = matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        if error.kind() == ErrorKind::AuthenticationFailed || auth_code {
            return RedisError::Auth(error);
        }
        if error.is_timeout() {
            return RedisError::Timeout { phase, after };
        }
        let outage = error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
            || matches!(
                error.kind(),
                ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::MasterNameNotFoundBySentinel
                    | ErrorKind::NoValidReplicasFoundBySentinel
                    | ErrorKind::EmptySentinelList
                    | ErrorKind::InvalidClientConfig
            );
        match phase {
            Phase::Connect => RedisError::Unavailable(error),
            Phase::Command if outage => RedisError::Unavailable(error),
            Phase::Command => RedisError::Command(error),
        }
    }
}

/// The three pool kinds behind one handle.
enum Pool {
    Standalone(deadpool_redis::Pool),
    Sentinel(deadpool_redis::sentinel::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection taken from its pool for good and shared by every caller.
///
/// redis-rs connections are multiplexed: clones write to one socket, so concurrent commands are
/// pipelined on it. Sharing one avoids deadpool's check on every checkout (an `UNWATCH` + `PING` round
/// trip, which would double the latency of each rate-limit call). The pool still opens (and, after a
/// failure, reopens) the connection.
#[derive(Clone)]
enum SharedConnection {
    Multiplexed(::redis::aio::MultiplexedConnection),
    Cluster(::redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a ::redis::Cmd) -> RedisFuture<'a, ::redis::Value> {
        match self {
            SharedConnection::Multiplexed(c) => c.req_packed_command(cmd),
            SharedConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<::redis::Value>> {
        match self {
            SharedConnection::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            SharedConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            SharedConnection::Multiplexed(c) => c.get_db(),
            SharedConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// What the last background ping found (see [`Redis::monitor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisHealth {
    /// No ping has finished yet.
    Unknown,
    /// The last ping succeeded.
    Up,
    /// The last ping failed: the error's [`RedisError::kind`] and message.
    Down { kind: &'static str, message: String },
}

struct Inner {
    pool: Pool,
    description: String,
    mode: &'static str,
    timeout: Duration,
    connect_timeout: Duration,
    health: Mutex<RedisHealth>,
    /// The connection every command uses, until one fails for a reason a new connection may fix.
    shared: Mutex<Option<SharedConnection>>,
}

/// The agent's Redis: a pool per deployment kind behind one cheap-to-clone handle.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").field("description", &self.inner.description).finish_non_exhaustive()
    }
}

impl Redis {
    /// Builds the pool without connecting: the first command (or [`Redis::monitor`]'s first ping)
    /// opens the first connection, so the agent starts whether Redis is up or not.
    pub fn new(config: &RedisConfig) -> Result<Redis, RedisError> {
        let client_error = |e: ::redis::RedisError| RedisError::Client(e.to_string());
        let connect_timeout = config.timeout.max(MIN_CONNECT_TIMEOUT);
        let addr = |node: &RedisNode| {
            if config.tls {
                ConnectionAddr::TcpTls {
                    host: node.host.clone(),
                    port: node.port,
                    insecure: config.insecure,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(node.host.clone(), node.port)
            }
        };
        let mut settings = ::redis::RedisConnectionInfo::default().set_db(config.db);
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password.expose());
        }
        let data_node = |node: &RedisNode| -> Result<ConnectionInfo, RedisError> {
            Ok(addr(node).into_connection_info().map_err(client_error)?.set_redis_settings(settings.clone()))
        };
        let pool = match &config.topology {
            Topology::Standalone(node) => {
                let mut info = data_node(node)?;
                if let (true, Some(pem)) = (config.tls, &config.ca_pem) {
                    // The client built with the CA carries it in its connection info, which is what the
                    // pool's manager opens connections from.
                    let certificates = ::redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                    info = ::redis::Client::build_with_tls(info, certificates)
                        .map_err(client_error)?
                        .get_connection_info()
                        .clone();
                }
                // Timeouts are enforced around each call (see `bounded`), so the client's own
                // response timeout (500 ms by default) must not cut a longer --redis-timeout short.
                let connection = ::redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(None);
                let manager = deadpool_redis::Manager::new_with_config(info, connection).map_err(client_error)?;
                Pool::Standalone(
                    deadpool_redis::Pool::builder(manager)
                        .max_size(config.pool_size)
                        .runtime(deadpool_redis::Runtime::Tokio1)
                        .build()
                        .map_err(|e| RedisError::Client(e.to_string()))?,
                )
            }
            Topology::Sentinel { master, sentinels } => {
                // Sentinels get the address (and TLS) only; the credentials are for the master.
                let sentinel_infos = sentinels
                    .iter()
                    .map(|node| addr(node).into_connection_info().map_err(client_error))
                    .collect::<Result<Vec<_>, _>>()?;
                let node_info = deadpool_redis::sentinel::SentinelNodeConnectionInfo {
                    tls_mode: config.tls.then_some(if config.insecure {
                        deadpool_redis::sentinel::TlsMode::Insecure
                    } else {
                        deadpool_redis::sentinel::TlsMode::Secure
                    }),
                    redis_connection_info: Some(deadpool_redis::RedisConnectionInfo {
                        db: config.db,
                        username: config.username.clone(),
                        password: config.password.as_ref().map(|p| p.expose().to_owned()),
                        protocol: deadpool_redis::ProtocolVersion::RESP2,
                    }),
                };
                let manager = deadpool_redis::sentinel::Manager::new(
                    sentinel_infos,
                    master.clone(),
                    Some(node_info),
                    deadpool_redis::sentinel::SentinelServerType::Master,
                )
                .map_err(client_error)?;
                Pool::Sentinel(
                    deadpool_redis::sentinel::Pool::builder(manager)
                        .max_size(config.pool_size)
                        .runtime(deadpool_redis::Runtime::Tokio1)
                        .build()
                        .map_err(|e| RedisError::Client(e.to_string()))?,
                )
            }
            Topology::Cluster(nodes) => {
                let infos = nodes.iter().map(data_node).collect::<Result<Vec<_>, _>>()?;
                let manager = deadpool_redis::cluster::Manager::new(infos, false).map_err(client_error)?;
                Pool::Cluster(
                    deadpool_redis::cluster::Pool::builder(manager)
                        .max_size(config.pool_size)
                        .runtime(deadpool_redis::Runtime::Tokio1)
                        .build()
                        .map_err(|e| RedisError::Client(e.to_string()))?,
                )
            }
        };
        Ok(Redis {
            inner: Arc::new(Inner {
                pool,
                description: config.describe(),
                mode: config.topology.mode(),
                timeout: config.timeout,
                connect_timeout,
                health: Mutex::new(RedisHealth::Unknown),
                shared: Mutex::new(None),
            }),
        })
    }

    /// Runs one command, e.g. `query::<i64>(redis::cmd("INCR").arg("k"))`.
    pub async fn query<T: FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        self.bounded(cmd.query_async(&mut connection)).await
    }

    /// Runs a pipeline (atomic when built with `.atomic()`); one timeout covers the whole pipeline.
    pub async fn query_pipeline<T: FromRedisValue>(&self, pipe: &::redis::Pipeline) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        self.bounded(pipe.query_async(&mut connection)).await
    }

    /// Runs a Lua script by its hash (EVALSHA), loading it first when Redis does not know it (after
    /// a restart or failover), as redis-rs does. One timeout covers both round trips.
    pub async fn invoke_script<T: FromRedisValue>(
        &self,
        script: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        self.bounded(script.invoke_async(&mut connection)).await
    }

    /// `GET key` as raw bytes; `None` when the key does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.query(::redis::cmd("GET").arg(key)).await
    }

    /// `GETRANGE key 0 max`: at most `max + 1` bytes of a string value, so a caller tells a value over
    /// `max` bytes from one at the bound without ever receiving more. `None` for a missing (or empty) key.
    pub async fn get_bytes_bounded(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, RedisError> {
        let end = i64::try_from(max).unwrap_or(i64::MAX);
        let bytes: Vec<u8> = self.query(::redis::cmd("GETRANGE").arg(key).arg(0).arg(end)).await?;
        Ok((!bytes.is_empty()).then_some(bytes))
    }

    /// `SET key value` (no expiry).
    pub async fn set_bytes(&self, key: &str, value: &[u8]) -> Result<(), RedisError> {
        self.query::<()>(::redis::cmd("SET").arg(key).arg(value)).await
    }

    /// `PING`; fails unless Redis answers `PONG`.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let answer: String = self.query(&::redis::cmd("PING")).await?;
        if answer == "PONG" {
            Ok(())
        } else {
            Err(RedisError::Client(format!("PING answered `{answer}` instead of PONG")))
        }
    }

    /// Mode, addresses, TLS on/off and user name; never the password.
    pub fn describe(&self) -> String {
        self.inner.description.clone()
    }

    /// `standalone`, `sentinel` or `cluster`.
    pub fn mode(&self) -> &'static str {
        self.inner.mode
    }

    /// What the last background ping found. Callers on a hot path can skip Redis while it is down.
    pub fn health(&self) -> RedisHealth {
        self.inner.health.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Pings every `interval` until `cancel`: keeps [`Redis::health`] and the `hgw_agent_redis_up`
    /// gauge current, and logs each change (down, up again, down for another reason) once rather than
    /// every ping.
    pub async fn monitor(self, metrics: Arc<Metrics>, interval: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = self.ping() => result,
            };
            let now = match &result {
                Ok(()) => RedisHealth::Up,
                Err(error) => RedisHealth::Down { kind: error.kind(), message: error.to_string() },
            };
            metrics.redis_up.set(u64::from(now == RedisHealth::Up));
            if result.is_err() {
                metrics.redis_ping_failures.inc();
            }
            let before =
                std::mem::replace(&mut *self.inner.health.lock().unwrap_or_else(PoisonError::into_inner), now.clone());
            match (&before, &now) {
                // Same state, or still down for the same kind of reason: already logged.
                (RedisHealth::Up, RedisHealth::Up) => {}
                (RedisHealth::Down { kind: was, .. }, RedisHealth::Down { kind, .. }) if was == kind => {}
                (_, RedisHealth::Up) => tracing::info!(redis = %self.inner.description, "Redis is reachable"),
                (_, RedisHealth::Down { kind, message }) => tracing::warn!(
                    redis = %self.inner.description, kind, "Redis is down: {message}; the agent keeps serving and \
                     retries every {interval:?}"
                ),
                (_, RedisHealth::Unknown) => {}
            }
        }
    }

    /// The shared connection, opened through the pool when there is none.
    async fn connection(&self) -> Result<SharedConnection, RedisError> {
        if let Some(shared) = self.inner.shared.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return Ok(shared);
        }
        let after = self.inner.connect_timeout;
        let pool_error = |error: deadpool_redis::PoolError| match error {
            deadpool_redis::PoolError::Backend(e) => RedisError::classify(e, Phase::Connect, after),
            deadpool_redis::PoolError::Timeout(_) => RedisError::Timeout { phase: Phase::Connect, after },
            other => RedisError::Client(other.to_string()),
        };
        let got = tokio::time::timeout(after, async {
            match &self.inner.pool {
                Pool::Standalone(pool) => pool
                    .get()
                    .await
                    .map(|c| SharedConnection::Multiplexed(deadpool_redis::Connection::take(c)))
                    .map_err(pool_error),
                Pool::Sentinel(pool) => pool
                    .get()
                    .await
                    .map(|c| SharedConnection::Multiplexed(deadpool_redis::sentinel::Connection::take(c)))
                    .map_err(pool_error),
                Pool::Cluster(pool) => pool
                    .get()
                    .await
                    .map(|c| SharedConnection::Cluster(deadpool_redis::cluster::Connection::take(c)))
                    .map_err(pool_error),
            }
        })
        .await;
        let shared = got.unwrap_or(Err(RedisError::Timeout { phase: Phase::Connect, after }))?;
        *self.inner.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(shared.clone());
        Ok(shared)
    }

    /// Applies the command timeout; after an outage, a timeout or a write refused by a demoted master
    /// (`READONLY`, a Sentinel failover), the shared connection is dropped so the next command opens a
    /// new one.
    async fn bounded<T>(&self, call: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, RedisError> {
        let after = self.inner.timeout;
        let result = match tokio::time::timeout(after, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if error.code() == Some("READONLY") => Err(RedisError::Unavailable(error)),
            Ok(Err(error)) => Err(RedisError::classify(error, Phase::Command, after)),
            Err(_) => Err(RedisError::Timeout { phase: Phase::Command, after }),
        };
        if let Err(RedisError::Unavailable(_) | RedisError::Timeout { .. }) = &result {
            *self.inner.shared.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> RedisNode {
        RedisNode { host: host.to_owned(), port }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn standalone_urls() {
        let c = RedisConfig::from_url("redis://127.0.0.1:6380").unwrap();
        assert_eq!(c.topology, Topology::Standalone(node("127.0.0.1", 6380)));
        assert_eq!((c.tls, c.db, c.username.as_deref(), c.password.is_none()), (false, 0, None, true));
        let c = RedisConfig::from_url("rediss://bob:s%40cret@redis.example.com/3").unwrap();
        assert_eq!(c.topology, Topology::Standalone(node("redis.example.com", DEFAULT_PORT)));
        assert_eq!((c.tls, c.db, c.username.as_deref()), (true, 3, Some("bob")));
        assert_eq!(c.password.as_ref().unwrap().expose(), "s@cret");
        let c = RedisConfig::from_url("redis://:pw@with@at?#@[::1]:7000/").unwrap();
        assert_eq!(c.topology, Topology::Standalone(node("::1", 7000)));
        assert_eq!(c.password.unwrap().expose(), "pw@with@at?#");
        assert_eq!(c.username, None);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.pool_size, DEFAULT_POOL_SIZE);
    }

    #[test]
    fn sentinel_and_cluster_urls() {
        let c = RedisConfig::from_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/mymaster/2").unwrap();
        assert_eq!(
            c.topology,
            Topology::Sentinel {
                master: "mymaster".into(),
                sentinels: vec![node("10.0.0.1", 26379), node("10.0.0.2", DEFAULT_SENTINEL_PORT)]
            }
        );
        assert_eq!(c.db, 2);
        let c = RedisConfig::from_url("REDISS+CLUSTER://u:p@a:7000,b:7001,c:7002").unwrap();
        assert_eq!(c.topology, Topology::Cluster(vec![node("a", 7000), node("b", 7001), node("c", 7002)]));
        assert!(c.tls);
        assert_eq!(c.topology.mode(), "cluster");
    }

    #[test]
    fn bad_urls_are_explained_without_echoing_secrets() {
        let cases = [
            ("http://h:1", "unknown scheme `http://`"),
            ("h:6379", "not a Redis URL"),
            ("redis://:secretpw@h:notaport", "host 1: the port is not a number"),
            ("redis://:secretpw@h:1,h:2", "several hosts need redis+sentinel://"),
            ("redis+sentinel://:secretpw@h:1", "Sentinel needs the master name"),
            ("redis+cluster://:secretpw@h:1/5", "Redis Cluster has only database 0"),
            ("redis://:secretpw@h:1/x", "the database must be a number"),
            ("redis://:secretpw@h:1?db=1", "query parameters"),
            ("redis://user@h:1", "a user name needs a password"),
            ("redis://:secretpw%zz@h:1", "malformed %-escape"),
            ("redis://:secretpw%+1@h:1", "malformed %-escape"),
            // A forgotten `@` puts the password in the host: it must not be repeated.
            ("redis://:secretpw127.0.0.1:6379", "host 1: not a valid host name"),
            ("redis://", "host 1: not a valid host name"),
        ];
        for (url, expected) in cases {
            let error = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(error.starts_with("--redis-url: "), "{url}: {error}");
            assert!(error.contains(expected), "{url}: expected {expected:?} in {error:?}");
            assert!(!error.contains("secretpw"), "{url}: the password leaked into {error:?}");
        }
    }

    #[test]
    fn debug_and_describe_never_show_the_password() {
        let mut c = RedisConfig::from_url("rediss://alice:hunter2-very-secret@127.0.0.1:6379/1").unwrap();
        c.ca_pem = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[redacted]") && debug.contains("27 bytes"), "{debug}");
        let described = c.describe();
        assert_eq!(described, "standalone 127.0.0.1:6379 db 1, TLS on (--redis-ca), user `alice` with password");
        c.ca_pem = None;
        let redis = Redis::new(&c).unwrap();
        assert!(!format!("{redis:?}").contains("hunter2"));
        assert_eq!(
            redis.describe(),
            "standalone 127.0.0.1:6379 db 1, TLS on (system roots), user `alice` with password"
        );
        let sentinel = RedisConfig::from_url("redis+sentinel://:pw@h1,h2:26380/main").unwrap();
        assert_eq!(sentinel.describe(), "sentinel master `main` via h1:26379,h2:26380 db 0, TLS off, password");
    }

    #[test]
    fn gravitee_variables_map_to_a_config() {
        assert_eq!(RedisConfig::from_gravitee_env(&env(&[("gravitee_ratelimit_redis_host", "r")])).unwrap(), None);
        assert_eq!(RedisConfig::from_gravitee_env(&env(&[("gravitee_ratelimit_type", "mongodb")])).unwrap(), None);

        let c = RedisConfig::from_gravitee_env(&env(&[
            ("GRAVITEE_RATELIMIT_TYPE", "REDIS"),
            ("GRAVITEE_RATELIMIT_REDIS_HOST", "redis.internal"),
            ("gravitee_ratelimit_redis_port", "6380"),
            ("Gravitee_Ratelimit_Redis_Password", "pw"),
            ("gravitee_ratelimit_redis_ssl", "true"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.topology, Topology::Standalone(node("redis.internal", 6380)));
        assert!(c.tls);
        assert_eq!(c.password.unwrap().expose(), "pw");

        let c = RedisConfig::from_gravitee_env(&env(&[("gravitee_ratelimit_type", "redis")])).unwrap().unwrap();
        assert_eq!(c.topology, Topology::Standalone(node("localhost", DEFAULT_PORT)), "Gravitee's defaults");
        let c = RedisConfig::from_gravitee_env(&env(&[
            ("gravitee_ratelimit_type", "redis"),
            ("gravitee_ratelimit_redis_host", "[::1]"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.describe(), "standalone [::1]:6379 db 0, TLS off, no auth");

        let c = RedisConfig::from_gravitee_env(&env(&[
            ("gravitee_ratelimit_type", "redis"),
            ("gravitee_ratelimit_redis_sentinel_master", "mymaster"),
            ("gravitee_ratelimit_redis_sentinel_nodes_1_host", "s2"),
            ("gravitee_ratelimit_redis_sentinel_nodes_1_port", "26380"),
            ("gravitee_ratelimit_redis_sentinel_nodes_0_host", "s1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            c.topology,
            Topology::Sentinel {
                master: "mymaster".into(),
                sentinels: vec![node("s1", DEFAULT_SENTINEL_PORT), node("s2", 26380)]
            }
        );

        let c = RedisConfig::from_gravitee_env(&env(&[
            ("gravitee_ratelimit_type", "redis"),
            ("GRAVITEE_RATELIMIT_REDIS_CLUSTER_NODES_0_HOST", "c1"),
            ("GRAVITEE_RATELIMIT_REDIS_CLUSTER_NODES_0_PORT", "7000"),
            ("GRAVITEE_RATELIMIT_REDIS_CLUSTER_NODES_2_HOST", "c3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.topology, Topology::Cluster(vec![node("c1", 7000), node("c3", DEFAULT_PORT)]));
    }

    #[test]
    fn gravitee_variable_mistakes_name_the_variable() {
        let error = |pairs: &[(&str, &str)]| {
            let mut all = vec![("gravitee_ratelimit_type", "redis")];
            all.extend_from_slice(pairs);
            RedisConfig::from_gravitee_env(&env(&all)).unwrap_err().to_string()
        };
        assert!(
            error(&[
                ("gravitee_ratelimit_redis_sentinel_master", "m"),
                ("gravitee_ratelimit_redis_sentinel_nodes_0_host", "s"),
                ("gravitee_ratelimit_redis_cluster_nodes_0_host", "c"),
            ])
            .contains("not both")
        );
        assert_eq!(
            error(&[("gravitee_ratelimit_redis_port", "http")]),
            "gravitee_ratelimit_redis_port: `http` is not a port number (1-65535)"
        );
        assert!(error(&[("gravitee_ratelimit_redis_ssl", "maybe")]).starts_with("gravitee_ratelimit_redis_ssl:"));
        assert_eq!(
            error(&[("gravitee_ratelimit_redis_host", "redis:6380")]),
            "gravitee_ratelimit_redis_host: a host name or address only; the port has a variable of its own"
        );
        assert!(
            error(&[("gravitee_ratelimit_redis_cluster_nodes_0_host", "a b")])
                .starts_with("gravitee_ratelimit_redis_cluster_nodes_0_host: not a valid host")
        );
        assert!(
            error(&[("gravitee_ratelimit_redis_sentinel_nodes_0_host", "s")])
                .starts_with("gravitee_ratelimit_redis_sentinel_master: missing")
        );
        assert!(
            error(&[("gravitee_ratelimit_redis_cluster_nodes_1_port", "7001")])
                .starts_with("gravitee_ratelimit_redis_cluster_nodes_1_host: missing")
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_hang() {
        // Port 1 on loopback refuses connections: the call fails fast with an outage, not a timeout.
        let redis = Redis::new(&RedisConfig::from_url("redis://127.0.0.1:1").unwrap()).unwrap();
        let error = redis.ping().await.unwrap_err();
        assert_eq!(error.kind(), "unavailable", "{error}");
        assert_eq!(redis.health(), RedisHealth::Unknown);
    }
}
