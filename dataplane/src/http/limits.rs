//! What one client may hold of a dataplane: connections, time before and between requests, header
//! sizes, HTTP/2 streams, and how long a request body may stall. Each is a flag with a default that
//! keeps a dataplane answering when a client misbehaves (see the README's "Limits" table).

use std::time::Duration;

/// Gravitee's `http.maxHeaderSize`: a larger header block answers 431.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 8192;
/// Gravitee's `http.maxInitialLineLength`: a longer request line answers 414.
pub const DEFAULT_MAX_INITIAL_LINE_LENGTH: usize = 4096;
/// hyper's own default (headers parsed on the stack): more answers 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Gravitee's `http.http2.maxConcurrentStreams`.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// hyper's smallest read buffer: the header-size limit it enforces itself is at least this.
pub const MIN_READ_BUFFER: usize = 8192;

/// The listener's limits, validated (see `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From accepting a connection, or from the end of the previous response, until a request's
    /// whole header block has arrived (HTTP/1: this is also the keep-alive idle timeout; HTTP/2: the
    /// time until the connection preface).
    pub header_timeout: Duration,
    pub max_header_size: usize,
    pub max_initial_line_length: usize,
    pub max_headers: usize,
    pub http2_max_concurrent_streams: u32,
    /// An HTTP/2 connection is pinged this often when idle, and closed when a ping goes unanswered
    /// for as long: a vanished peer does not hold a connection slot.
    pub http2_keepalive: Duration,
    /// An HTTP/2 connection with no open stream this long is sent a GOAWAY and closed, even if it
    /// answers pings (`None`: never).
    pub http2_idle_timeout: Option<Duration>,
    /// Client connections served at once; more are closed on accept (shed, counted and logged).
    pub max_connections: usize,
    /// The longest a request body may stall while the endpoint waits for it: then 408, and the
    /// endpoint is not blamed. Also bounds how long a failover API buffers a body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(30),
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_initial_line_length: DEFAULT_MAX_INITIAL_LINE_LENGTH,
            max_headers: DEFAULT_MAX_HEADERS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_keepalive: Duration::from_secs(60),
            http2_idle_timeout: Some(super::idle::DEFAULT_HTTP2_IDLE_TIMEOUT),
            max_connections: 10_000,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The connection cap when none is given: half of the descriptors this process may open (the other
/// half is for endpoint connections, the agent link and files), at least 16.
pub fn auto_max_connections(open_files_limit: Option<u64>) -> usize {
    let limit = open_files_limit.unwrap_or(1024);
    usize::try_from(limit.saturating_sub(64) / 2).unwrap_or(usize::MAX).max(16)
}

/// The soft `RLIMIT_NOFILE`, as the kernel shows it in `/proc/self/limits` (no libc call needed).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    // "unlimited" has no number: no cap from the limit then.
    Some(soft.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_descriptors_for_endpoints() {
        assert_eq!(auto_max_connections(Some(512)), 224);
        assert_eq!(auto_max_connections(Some(1_048_576)), 524_256);
        assert_eq!(auto_max_connections(Some(10)), 16);
        assert_eq!(auto_max_connections(None), 480);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
