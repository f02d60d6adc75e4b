//! Relaying bytes between two upgraded connections (a WebSocket tunnel) until one side closes, an
//! error ends it, or nothing moves either way for the idle timeout.
//!
//! The relay does not read WebSocket frames: after the handshake the gateway is a byte pipe, as
//! Gravitee's proxy is. Ping/pong frames are bytes like any other, so a client or server that pings
//! keeps its tunnel open.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// A side closed; bytes read from each side until then.
    Closed { a_to_b: u64, b_to_a: u64 },
    /// Nothing was read from either side for the idle timeout.
    Idle,
}

/// Copies bytes both ways between `a` and `b` until a side closes (what it sent before is passed
/// on, then the other side's write half is shut down), a side fails, or no byte has been read
/// from either side for `idle` (`None`: no limit). The caller then closes both connections by
/// dropping them.
///
/// One side's end of stream ends the whole tunnel: a WebSocket closes with a Close frame each way
/// and then the TCP connection, so a half-closed tunnel has nothing more to carry, and waiting for
/// the other side to close as well would let a peer that never does hold it open.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> io::Result<Relayed>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Activity { start: Instant::now(), last_read: AtomicU64::new(0) };
    let (from_a, mut to_a) = tokio::io::split(a);
    let (from_b, mut to_b) = tokio::io::split(b);
    let mut from_a = Watched { io: from_a, bytes: 0, activity: &activity };
    let mut from_b = Watched { io: from_b, bytes: 0, activity: &activity };
    let ended = {
        let a_to_b = one_way(&mut from_a, &mut to_b);
        let b_to_a = one_way(&mut from_b, &mut to_a);
        tokio::select! {
            ended = a_to_b => ended,
            ended = b_to_a => ended,
            () = activity.idle_for(idle) => return Ok(Relayed::Idle),
        }
    };
    ended?;
    Ok(Relayed::Closed { a_to_b: from_a.bytes, b_to_a: from_b.bytes })
}

/// Copies until `from` ends, then shuts `to` down (a FIN after the last byte).
async fn one_way<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy(from, to).await?;
    to.shutdown().await
}

/// When the tunnel last carried a byte.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read that returned bytes, from either side (at least
    /// 1, so a read in the first millisecond still counts as news).
    last_read: AtomicU64,
}

impl Activity {
    fn note_read(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.last_read.store(now, Ordering::Relaxed);
    }

    /// Returns once nothing has been read for `idle`; never without a limit.
    async fn idle_for(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let seen = self.last_read.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.start + Duration::from_millis(seen) + idle).await;
            if self.last_read.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }
}

/// A read half whose reads are counted and noted as activity.
struct Watched<'a, T> {
    io: T,
    bytes: u64,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            self.bytes += read as u64;
            self.activity.note_read();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn bytes_go_both_ways_until_a_side_closes() {
        let (mut client, mut gateway_client_side) = duplex(64);
        let (mut gateway_backend_side, mut backend) = duplex(64);
        let relay = tokio::spawn(async move {
            relay(&mut gateway_client_side, &mut gateway_backend_side, Some(Duration::from_secs(60))).await
        });
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        backend.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        backend.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        // The backend sends its last bytes and closes: the client gets them, then the end, although
        // it never closed its own side.
        backend.write_all(b"bye").await.unwrap();
        drop(backend);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        assert_eq!(relay.await.unwrap().unwrap(), Relayed::Closed { a_to_b: 4, b_to_a: 8 });
    }

    #[tokio::test]
    async fn a_client_close_reaches_the_backend() {
        let (mut client, mut gateway_client_side) = duplex(64);
        let (mut gateway_backend_side, mut backend) = duplex(64);
        let relay = tokio::spawn(async move { relay(&mut gateway_client_side, &mut gateway_backend_side, None).await });
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last words");
        assert!(matches!(relay.await.unwrap().unwrap(), Relayed::Closed { a_to_b: 10, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_without_traffic_ends_after_the_idle_timeout() {
        let (mut client, mut gateway_client_side) = duplex(64);
        let (mut gateway_backend_side, _backend) = duplex(64);
        let idle = Duration::from_secs(30);
        let started = Instant::now();
        let relay =
            tokio::spawn(async move { relay(&mut gateway_client_side, &mut gateway_backend_side, Some(idle)).await });
        // Traffic at 20 s pushes the end to 50 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(relay.await.unwrap().unwrap(), Relayed::Idle);
        let lasted = started.elapsed();
        assert!(lasted >= Duration::from_secs(50) && lasted < Duration::from_secs(51), "{lasted:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_idle_timeout_a_quiet_tunnel_stays() {
        let (_client, mut gateway_client_side) = duplex(64);
        let (mut gateway_backend_side, _backend) = duplex(64);
        let relay = relay(&mut gateway_client_side, &mut gateway_backend_side, None);
        assert!(tokio::time::timeout(Duration::from_secs(24 * 3600), relay).await.is_err());
    }
}
