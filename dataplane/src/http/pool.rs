//! Idle plain HTTP/1.1 connections to endpoints, over hyper's connection-level client.
//!
//! The common endpoint call — `http://`, HTTP/1.1, keep-alive — takes an idle connection of the
//! endpoint's client (newest first) or opens one, sends the request on it with
//! [`hyper::client::conn::http1::SendRequest`] and puts it back once it can take the next request.
//! No pool key is hashed with SipHash and no task stands between the caller and the connection's
//! own task, which is spawned on the worker that opened the connection. hyper-util's pooled client
//! keeps everything else (TLS, HTTP/2, keep-alive off): [`crate::http::upstream::UpstreamClient`].
//!
//! As hyper-util's client: the Host header is added when the request has none, the target is sent in
//! origin form, a request that a reused connection closed before it was sent goes again on another
//! one, and a connection idle longer than the client's idle timeout is not used again (its task
//! closes it, whether or not a request comes).

use std::error::Error as StdError;
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use rustc_hash::FxHashMap;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::http::body::RequestBody;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Endpoint authorities above which the pool forgets those without idle connections.
const PRUNE_AUTHORITIES: usize = 64;

/// A failed call on one of the pool's connections (classified by
/// [`crate::http::upstream::CallError::classify`]).
#[derive(Debug)]
pub enum PoolError {
    /// No connection to the endpoint (refused, timed out, name not resolved).
    Connect(BoxError),
    /// The connection failed while the request was sent or its answer awaited.
    Send(hyper::Error),
}

impl PoolError {
    /// Whether it failed while connecting (a timeout then is the connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect(_))
    }
}

/// Worded as hyper-util's client words its errors, so logs read the same whichever path failed.
impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolError::Connect(_) => "client error (Connect)",
            PoolError::Send(_) => "client error (SendRequest)",
        })
    }
}

impl StdError for PoolError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PoolError::Connect(error) => Some(&**error),
            PoolError::Send(error) => Some(error),
        }
    }
}

/// A connection's idleness, shared by the pool and the connection's task: the time it went idle
/// (nanoseconds after the pool's `epoch`, plus one), or [`BUSY`].
type IdleSince = Arc<AtomicU64>;
const BUSY: u64 = 0;

/// When a connection whose [`IdleSince`] holds `since` (not [`BUSY`]) went idle.
fn went_idle(epoch: Instant, since: u64) -> Instant {
    epoch + Duration::from_nanos(since - 1)
}

/// One connection: the sender of its requests and its idleness.
struct Connection {
    sender: SendRequest<RequestBody>,
    idle: IdleSince,
}

/// Idle HTTP/1.1 connections by endpoint authority (`host:port`), newest last (each knows since when).
pub struct Http1Pool {
    connector: HttpConnector,
    idle_timeout: Duration,
    epoch: Instant,
    idle: Mutex<FxHashMap<Box<str>, Vec<Connection>>>,
}

impl fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Pool").field("idle_timeout", &self.idle_timeout).finish_non_exhaustive()
    }
}

impl Http1Pool {
    /// A pool connecting with `connector` (its connect timeout), keeping connections idle up to
    /// `idle_timeout`.
    pub fn new(connector: HttpConnector, idle_timeout: Duration) -> Http1Pool {
        Http1Pool { connector, idle_timeout, epoch: Instant::now(), idle: Mutex::default() }
    }

    /// Whether `request` goes through this pool: an HTTP/1.1 request (not CONNECT) to an absolute
    /// `http://` URL.
    #[inline]
    pub fn takes(request: &Request<RequestBody>) -> bool {
        request.version() == Version::HTTP_11
            && request.uri().scheme() == Some(&Scheme::HTTP)
            && request.uri().host().is_some()
            && request.method() != Method::CONNECT
    }

    /// Sends `request` (one [`Http1Pool::takes`]) on an idle connection to its authority, or on a new
    /// one; the connection goes back to the pool when it can take the next request.
    pub async fn send(self: &Arc<Self>, mut request: Request<RequestBody>) -> Result<Response<Incoming>, PoolError> {
        let uri = std::mem::take(request.uri_mut());
        let authority = uri.authority().map_or("", |a| a.as_str());
        if !request.headers().contains_key(HOST)
            && let Some(host) = host_header(&uri)
        {
            request.headers_mut().insert(HOST, host);
        }
        *request.uri_mut() = origin_form(&uri);
        loop {
            let (mut connection, reused) = match self.checkout(authority) {
                Some(connection) => (connection, true),
                None => (Box::pin(self.connect(&uri)).await?, false),
            };
            match connection.sender.try_send_request(request).await {
                Ok(response) => {
                    self.release(authority, connection);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // Never sent: the reused connection was closing. Another one takes it.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::Send(error.into_error())),
                },
            }
        }
    }

    /// The newest idle connection to `authority` that can take a request; closed ones, and all of
    /// them once one has been idle too long, are dropped.
    fn checkout(&self, authority: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let stack = idle.get_mut(authority)?;
        let now = Instant::now();
        while let Some(connection) = stack.pop() {
            let since = connection.idle.load(Ordering::Relaxed);
            if since != BUSY && now.saturating_duration_since(went_idle(self.epoch, since)) > self.idle_timeout {
                // The rest went idle earlier.
                stack.clear();
                return None;
            }
            if connection.sender.is_ready() {
                connection.idle.store(BUSY, Ordering::Relaxed);
                return Some(connection);
            }
        }
        None
    }

    /// Puts `connection` back once it can take the next request: at once when the answer is already
    /// read, else when its body is (a task waits for that); a connection that closes meanwhile goes.
    fn release(self: &Arc<Self>, authority: &str, connection: Connection) {
        if connection.sender.is_ready() {
            self.put(authority, connection);
            return;
        }
        let pool = self.clone();
        let authority: Box<str> = authority.into();
        let mut connection = connection;
        tokio::spawn(async move {
            if connection.sender.ready().await.is_ok() {
                pool.put(&authority, connection);
            }
        });
    }

    fn put(&self, authority: &str, connection: Connection) {
        let since = Instant::now().saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        connection.idle.store(since, Ordering::Relaxed);
        let mut pools = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stack) = pools.get_mut(authority) {
            stack.push(connection);
            return;
        }
        if pools.len() >= PRUNE_AUTHORITIES {
            pools.retain(|_, stack| !stack.is_empty());
        }
        pools.insert(authority.into(), vec![connection]);
    }

    /// A new connection to `uri`'s authority, its task spawned on this worker.
    async fn connect(&self, uri: &Uri) -> Result<Connection, PoolError> {
        let io = self.connector.clone().oneshot(uri.clone()).await.map_err(|error| PoolError::Connect(error.into()))?;
        let (sender, connection) = http1::handshake(io).await.map_err(PoolError::Send)?;
        let idle: IdleSince = Arc::new(AtomicU64::new(BUSY));
        tokio::spawn(drive(connection, idle.clone(), self.epoch, self.idle_timeout));
        Ok(Connection { sender, idle })
    }
}

/// A connection's task: drives it until it ends, or closes it once it has been idle in the pool for
/// `idle_timeout` (the pool then drops its sender as closed).
async fn drive(
    connection: http1::Connection<hyper_util::rt::TokioIo<tokio::net::TcpStream>, RequestBody>,
    idle: IdleSince,
    epoch: Instant,
    idle_timeout: Duration,
) {
    let mut connection = pin!(connection.with_upgrades());
    let mut deadline = Instant::now() + idle_timeout;
    loop {
        tokio::select! {
            biased;
            ended = &mut connection => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "connection to the endpoint ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let since = idle.load(Ordering::Relaxed);
                let now = Instant::now();
                if since == BUSY {
                    deadline = now + idle_timeout;
                    continue;
                }
                let expires = went_idle(epoch, since) + idle_timeout;
                if expires <= now {
                    return;
                }
                deadline = expires;
            }
        }
    }
}

/// The Host header for `uri`: its host, and its port unless it is the scheme's default (as
/// hyper-util's client makes it).
pub(crate) fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match authority.port() {
        Some(port) if port.as_u16() != default_port => {
            // Per proxied request: the authority's own text when it is `host:port` with the port written
            // as the number would be (no user info, no leading zero), so nothing is formatted.
            let text = authority.as_str();
            if text.contains('@') || port.as_str().starts_with('0') {
                HeaderValue::from_str(&format!("{}:{}", authority.host(), port.as_u16())).ok()
            } else {
                HeaderValue::from_str(text).ok()
            }
        }
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

/// `uri`'s path and query, the request target of a connection to its authority (`/` when empty).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => Uri::from(path.clone()),
        _ => Uri::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn pool(idle_timeout: Duration) -> Arc<Http1Pool> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Arc::new(Http1Pool::new(connector, idle_timeout))
    }

    fn get(url: &str) -> Request<RequestBody> {
        let mut request = Request::get(url).body(RequestBody::empty()).unwrap();
        *request.version_mut() = Version::HTTP_11;
        request
    }

    /// A backend answering every request on a connection `ok` (keep-alive), reporting each
    /// connection it accepts and the request heads it reads.
    async fn backend() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                let _ = tx.send("accepted".to_owned());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else { return };
                        if n == 0 {
                            let _ = tx.send("closed".to_owned());
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                            socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                        }
                    }
                });
            }
        });
        (port, rx)
    }

    #[test]
    fn takes_plain_http1_only() {
        assert!(Http1Pool::takes(&get("http://backend:8080/x")));
        assert!(!Http1Pool::takes(&get("https://backend/x")));
        let mut h2 = get("http://backend/x");
        *h2.version_mut() = Version::HTTP_2;
        assert!(!Http1Pool::takes(&h2));
        assert!(!Http1Pool::takes(&get("/relative")));
    }

    #[test]
    fn targets_are_sent_in_origin_form() {
        let origin = |uri: &str| origin_form(&uri.parse().unwrap()).to_string();
        assert_eq!(origin("http://b:8080"), "/");
        assert_eq!(origin("http://b:8080/"), "/");
        assert_eq!(origin("http://b:8080/a/b?c=d"), "/a/b?c=d");
        assert_eq!(origin("http://b?q=1"), "/?q=1");
    }

    #[tokio::test]
    async fn connections_are_reused_with_host_and_origin_form() {
        let (port, mut seen) = backend().await;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..3 {
            let response = pool.send(get(&format!("http://127.0.0.1:{port}/path?q=1"))).await.unwrap();
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"ok"));
        }
        assert_eq!(seen.recv().await.unwrap(), "accepted");
        for _ in 0..3 {
            let head = seen.recv().await.unwrap();
            assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head}");
            assert!(head.to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{port}\r\n")), "{head}");
        }
        assert!(seen.try_recv().is_err(), "one connection only");
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (port, mut seen) = backend().await;
        let pool = pool(Duration::from_millis(200));
        let url = format!("http://127.0.0.1:{port}/");
        pool.send(get(&url)).await.unwrap().into_body().collect().await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), "accepted");
        assert!(seen.recv().await.unwrap().starts_with("GET / HTTP/1.1"));
        let closed = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
        assert_eq!(closed, "closed", "the idle connection is closed by its task");
        // The next call opens a new connection.
        pool.send(get(&url)).await.unwrap().into_body().collect().await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), "accepted");
    }

    #[tokio::test]
    async fn refused_connections_are_classified() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let error = pool(Duration::from_secs(60)).send(get(&format!("http://127.0.0.1:{port}/"))).await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let io =
            std::error::Error::source(&error).and_then(|e| e.source()).and_then(|e| e.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(std::io::Error::kind), Some(std::io::ErrorKind::ConnectionRefused));
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_endpoint_is_not_reused() {
        // Answers once with `Connection: close` semantics by closing after the answer.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut chunk = [0u8; 4096];
                let _ = socket.read(&mut chunk).await;
                socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                drop(socket);
            }
        });
        let pool = pool(Duration::from_secs(60));
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..3 {
            let response = pool.send(get(&url)).await.unwrap();
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"ok"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
