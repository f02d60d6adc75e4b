//! Accepting client connections (HTTP/1.1 and h2c) and draining them at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::context::ConnInfo;
use super::route::handle;

/// Accepts connections until `shutdown`, then lets them finish until `grace` runs out.
/// Returns the grace deadline, which also bounds the analytics flush that follows.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Instant {
    // auto::Builder serves HTTP/1.1 and, on the h2 preface, HTTP/2 with prior knowledge (h2c).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper closes HTTP/1 connections that do not send their headers within 30 s.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let conn = Arc::new(ConnInfo::new(local, remote));
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let (shared, conn) = (shared.clone(), conn.clone());
            // Boxed once here: the request's future is large, and hyper would otherwise move it.
            Box::pin(async move { Ok::<_, Infallible>(handle(req, &conn, &shared).await) })
        });
        // With upgrades: a WebSocket handshake's connection is handed to its tunnel after the 101.
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(error = %error, %remote, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    tracing::info!(connections = graceful.count(), grace_ms = grace.as_millis() as u64, "draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all client connections drained"),
        () = tokio::time::sleep_until(deadline) => tracing::warn!("shutdown grace period over; abandoning the remaining connections"),
    }
    deadline
}
