//! Accepting client connections (HTTP/1.1 and h2c, or HTTPS with HTTP/2 over ALPN) and draining them at
//! shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::context::{ClientCertificate, ConnInfo};
use super::route::route;
use crate::http::crlf::{CrlfOnly, UpgradeGate};
use crate::http::idle::Streams;
use crate::http::tls_server::{Acceptor, HANDSHAKE_TIMEOUT};
use crate::http::tls_session::TlsSession;
use crate::telemetry::metrics::Metrics;

/// At most one "connection limit reached" line per this interval, however many are shed.
const SHED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// What an HTTP/2 client sends first; hyper's protocol detection waits for it without a deadline.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a hyper connection until it ends. When the dataplane starts draining, or `$idle` resolves
/// (an HTTP/2 connection without streams), the connection is shut down gracefully: HTTP/1 closes
/// after the response in progress, HTTP/2 sends a GOAWAY and lets its open streams finish.
/// (A macro: hyper's connection types have `graceful_shutdown` as an inherent method, on bounds too
/// long to repeat in a generic function.)
macro_rules! drive {
    ($conn:expr, $draining:expr, $idle:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => ended,
            () = $draining.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            () = $idle => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }};
}

/// Accepts connections until `shutdown`, then lets them finish until `grace` runs out.
/// With `tls`, every connection is HTTPS (the TLS handshake runs in the connection's own task, so a
/// slow client does not hold up the accept loop).
/// Returns the grace deadline, which also bounds the analytics flush that follows.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Acceptor>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Instant {
    let limits = &shared.limits;
    // auto::Builder serves HTTP/1.1 and, on the h2 preface, HTTP/2: with prior knowledge (h2c) in
    // plaintext, and after ALPN chose `h2` over TLS (the client then starts with the preface too).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    // hyper answers 431 to a header block that fills its read buffer; it takes no smaller buffer
    // than 8 KiB, so smaller limits are checked when routing.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size.max(crate::http::limits::MIN_READ_BUFFER));
    if limits.max_headers != crate::http::limits::DEFAULT_MAX_HEADERS {
        // Any other count moves hyper's header parsing from the stack to the heap (about 5% slower).
        http1.max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(limits.http2_keepalive)
        // WebSocket over HTTP/2 (RFC 8441): announce SETTINGS_ENABLE_CONNECT_PROTOCOL.
        .enable_connect_protocol();
    // Once ALPN chose `h2`, the client must start with the preface (RFC 9113 §3.4): anything else is a
    // connection error, not an HTTP/1 request to answer with a 400 (h2spec http2/3.5/2). Plaintext
    // connections keep the detection: the port serves HTTP/1.1 too.
    let h2_only = Arc::new(builder.clone().http2_only());
    let builder = Arc::new(builder);
    // Client connections and the WebSocket tunnels they become: what draining waits for.
    let tasks = shared.tasks.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shed_logged: Option<Instant> = None;
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing at once keeps descriptors for the connections being served and for endpoints.
            drop(stream);
            shared.metrics.connections_shed.fetch_add(1, Ordering::Relaxed);
            if shed_logged.is_none_or(|at| at.elapsed() >= SHED_LOG_INTERVAL) {
                shed_logged = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    shed_total = shared.metrics.connections_shed.load(Ordering::Relaxed),
                    "connection limit reached: closing new connections (--max-connections)"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let open = OpenConnection::new(&shared.metrics, slot);
        let conn = ConnInfo::new(local, remote, tls.is_some());
        let header_timeout = limits.header_timeout;
        let service_shared = shared.clone();
        // The connection's requests share its ConnInfo, made once the handshake named the client;
        // on HTTP/2, each request's stream is counted open until its response body is done; on
        // HTTP/1, the CRLF-only reader learns whether an upgrade request switched protocols.
        let service = move |conn: ConnInfo, streams: Option<Arc<Streams>>, gate: Option<Arc<UpgradeGate>>| {
            let conn = Arc::new(conn);
            service_fn(move |req| {
                let (shared, conn) = (service_shared.clone(), conn.clone());
                let stream = streams.as_ref().map(Streams::open);
                let gate = gate.clone().filter(|_| req.headers().contains_key(hyper::header::UPGRADE));
                // Boxed once here: the request's future is large, and hyper would otherwise move it.
                Box::pin(async move {
                    let mut response = route(req, &conn, &shared).await;
                    shared.metrics.count_response(response.status());
                    if let Some(stream) = stream {
                        response.body_mut().hold_stream(stream);
                    }
                    if let Some(gate) = gate {
                        gate.answered(response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS);
                    }
                    Ok::<_, Infallible>(response)
                })
            })
        };
        let (tls, builder, h2_only, shared) = (tls.clone(), builder.clone(), h2_only.clone(), shared.clone());
        let draining = shutdown.clone();
        tasks.spawn(async move {
            let _open = open;
            // hyper's header timeout starts once it knows the protocol; until then, this one (over
            // TLS the ClientHello is the first byte, then the handshake has its own timeout).
            let opening = tokio::select! {
                opening = first_bytes(&stream, header_timeout) => opening,
                () = draining.cancelled() => None,
            };
            let Some(opening) = opening else {
                tracing::debug!(%remote, "client sent no request in time (or the dataplane is draining); closing");
                return;
            };
            let http2_idle = shared.limits.http2_idle_timeout;
            // With upgrades: a WebSocket handshake's connection is handed to its tunnel after the 101.
            let ended = match tls {
                None if opening == Opening::Http2 => {
                    let streams = Streams::new();
                    let idle = idle_close(&streams, http2_idle, &shared, remote);
                    let conn =
                        h2_only.serve_connection(TokioIo::new(stream), service(conn, Some(streams.clone()), None));
                    drive!(conn, draining, idle)
                }
                None => {
                    let gate = Arc::new(UpgradeGate::default());
                    let stream = CrlfOnly::new(stream, gate.clone());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service(conn, None, Some(gate)));
                    drive!(conn, draining, std::future::pending::<()>())
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.current().accept(stream)).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            // Also a client certificate that is missing (required) or not trusted.
                            shared.metrics.tls_handshakes_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%error, %remote, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            shared.metrics.tls_handshakes_timed_out.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    // rustls only completes a handshake whose client certificate the verifier
                    // accepted: the leaf here is a trusted one.
                    let mut conn = conn;
                    let session = stream.get_ref().1;
                    conn.client_certificate = session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| ClientCertificate::new(leaf.as_ref()));
                    let served = acceptor.certificate_for(session.server_name());
                    let client = conn.client_certificate.as_ref().map(|c| c.der.clone());
                    conn.tls_session = Some(Arc::new(TlsSession::new(remote, client, Some(served))));
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        // HTTP/2 has no HTTP/1 upgrades (and `http2_only` is ignored with them).
                        let streams = Streams::new();
                        let idle = idle_close(&streams, http2_idle, &shared, remote);
                        let conn =
                            h2_only.serve_connection(TokioIo::new(stream), service(conn, Some(streams.clone()), None));
                        drive!(conn, draining, idle)
                    } else {
                        let gate = Arc::new(UpgradeGate::default());
                        let stream = CrlfOnly::new(stream, gate.clone());
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service(conn, None, Some(gate)));
                        drive!(conn, draining, std::future::pending::<()>())
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(error = %error, %remote, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    // Connections (and tunnels) still open; those serving HTTP were told to finish what they started.
    tasks.close();
    tracing::info!(connections = tasks.len(), grace_ms = grace.as_millis() as u64, "draining");
    tokio::select! {
        () = tasks.wait() => tracing::info!("all client connections drained"),
        () = tokio::time::sleep_until(deadline) => tracing::warn!("shutdown grace period over; abandoning the remaining connections"),
    }
    deadline
}

/// Resolves when an HTTP/2 connection has had no stream open for `timeout` (never without one),
/// counting and logging the close it leads to.
async fn idle_close(streams: &Streams, timeout: Option<Duration>, shared: &Shared, remote: std::net::SocketAddr) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    streams.idle_for(timeout).await;
    shared.metrics.http2_idle_closed.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%remote, "HTTP/2 connection idle (--http2-idle-timeout): GOAWAY");
}

/// A served connection: holds its `--max-connections` slot and the open-connections gauge.
struct OpenConnection {
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: &Arc<Metrics>, slot: OwnedSemaphorePermit) -> OpenConnection {
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { metrics: metrics.clone(), _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a client connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    Http2,
    /// Anything else: an HTTP/1 request line, or a TLS ClientHello.
    Other,
}

/// How the client starts within `within`: a first byte that is not the HTTP/2 preface, or the
/// whole preface. A client that connects and says nothing (or half a preface) gives its slot back
/// after `within` (`None`); an HTTP/1 client is then under hyper's header timeout.
async fn first_bytes(stream: &TcpStream, within: Duration) -> Option<Opening> {
    let wait = async {
        let mut first = [0u8; 24];
        loop {
            let seen = stream.peek(&mut first).await.unwrap_or(0);
            if seen == 0 {
                return None;
            }
            if first[..seen] != H2_PREFACE[..seen] {
                return Some(Opening::Other);
            }
            if seen == first.len() {
                return Some(Opening::Http2);
            }
            // Part of the preface (rare: clients send it in one segment): look again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}
