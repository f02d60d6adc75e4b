//! Idleness of an HTTP/2 client connection, counted in streams rather than bytes.
//!
//! hyper's HTTP/2 server pings a quiet connection (`--http2-keepalive`) and closes it only when a ping
//! goes unanswered, so a client that answers pings but never sends a request would hold its
//! connection (and a `--max-connections` slot) for ever. A connection is idle here when it has had no
//! open stream for `--http2-idle-timeout`, whatever frames (pings, settings, window updates) it
//! exchanges; it is then sent a GOAWAY and closed once its streams are done, as nginx's
//! `http2_idle_timeout` (3 minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// nginx's `http2_idle_timeout`.
pub const DEFAULT_HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// The streams of one connection: how many are open, and when the last one ended.
#[derive(Debug)]
pub struct Streams {
    open: AtomicUsize,
    /// Milliseconds from `origin` to the end of the last stream (0: none yet, so the connection's start).
    last_end_ms: AtomicU64,
    origin: Instant,
}

impl Streams {
    pub fn new() -> Arc<Streams> {
        Arc::new(Streams { open: AtomicUsize::new(0), last_end_ms: AtomicU64::new(0), origin: Instant::now() })
    }

    /// Counts a stream as open until the returned guard is dropped (with the response's body).
    pub fn open(self: &Arc<Streams>) -> OpenStream {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// When the connection last had no stream open, if it has none now.
    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.origin + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)))
    }

    /// Resolves once no stream has been open for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            match self.idle_since() {
                Some(since) if now >= since + timeout => return,
                Some(since) => tokio::time::sleep_until(since + timeout).await,
                // A stream is open: look again no sooner than a whole timeout later.
                None => tokio::time::sleep(timeout).await,
            }
        }
    }
}

/// One open stream of a connection; dropping it ends the stream.
#[derive(Debug)]
pub struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        let ended = u64::try_from(streams.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        streams.last_end_ms.store(ended, Ordering::Release);
        streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_streams_is_idle_after_the_timeout() {
        let streams = Streams::new();
        let started = Instant::now();
        streams.idle_for(Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_stream_keeps_the_connection_busy_and_its_end_restarts_the_clock() {
        let streams = Streams::new();
        let stream = streams.open();
        let started = Instant::now();
        let idle = tokio::spawn({
            let streams = streams.clone();
            async move { streams.idle_for(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(!idle.is_finished(), "a stream is open");
        drop(stream);
        idle.await.unwrap();
        // Idle from the stream's end (12 s), found at the next look (15 s) or at 17 s.
        assert!(started.elapsed() >= Duration::from_secs(17), "{:?}", started.elapsed());
        assert!(started.elapsed() <= Duration::from_secs(20), "{:?}", started.elapsed());
    }
}
