//! The gRPC listeners' connections, each tagged with its [`Peer`]: TCP connections go through a TLS
//! handshake (the client certificate, if any, becomes the peer's SPIFFE identity); Unix socket
//! connections are checked with SO_PEERCRED against the allowed uids. The peer becomes tonic's connect
//! info, which the authorization layer reads on every call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::identity::{Peer, pki};

/// A client that has not finished its TLS handshake by then is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for tonic; handshakes run in their own tasks meanwhile.
const ACCEPT_QUEUE: usize = 64;

/// One accepted connection and who is on the other end.
pub struct PeerIo<S> {
    inner: S,
    peer: Peer,
}

impl<S> tonic::transport::server::Connected for PeerIo<S> {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PeerIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeerIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pub type TlsIo = PeerIo<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;
pub type UnixIo = PeerIo<tokio::net::UnixStream>;

/// Accepts TCP connections and completes their TLS handshakes in parallel (one slow client does not
/// hold the others up). Plaintext clients fail the handshake and are dropped.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    trust_domain: String,
    stop: CancellationToken,
) -> ReceiverStream<Result<TlsIo, std::io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, domain) = (acceptor.clone(), tx.clone(), trust_domain.clone());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%addr, %error, "gRPC TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "gRPC TLS handshake timed out");
                        return;
                    }
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| pki::identity_of(leaf, &domain));
                let _ = tx.send(Ok(PeerIo { inner: stream, peer: Peer::Tls { addr, identity } })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Accepts Unix socket connections from allowed uids only.
pub fn unix_incoming(
    listener: UnixListener,
    allowed_uids: Vec<u32>,
    stop: CancellationToken,
) -> ReceiverStream<Result<UnixIo, std::io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::debug!(%error, "gRPC socket accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let credentials = match stream.peer_cred() {
                Ok(credentials) => credentials,
                Err(error) => {
                    tracing::warn!(%error, "gRPC socket: cannot read the peer's credentials; connection refused");
                    continue;
                }
            };
            let uid = credentials.uid();
            if !allowed_uids.contains(&uid) {
                tracing::warn!(uid, pid = ?credentials.pid(), allowed = ?allowed_uids,
                    "gRPC socket: connection from a uid not in --grpc-socket-allow-uid refused");
                continue;
            }
            let peer = Peer::Unix { uid, pid: credentials.pid() };
            if tx.send(Ok(PeerIo { inner: stream, peer })).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
