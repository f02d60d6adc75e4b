//! Endpoints called through a forward proxy (Gravitee's endpoint `proxy`), as Vert.x's HTTP client
//! does it for Gravitee's gateway:
//!
//! - an **HTTP** proxy gets `http://` requests in absolute form on a connection to the proxy, with
//!   `Proxy-Authorization: Basic …` when the proxy has credentials ([`ProxyOptions::authorization`],
//!   added by [`crate::http::upstream::UpstreamClient`]); `https://` targets go through a `CONNECT`
//!   tunnel (TLS to the endpoint inside it), as do WebSocket handshakes and HTTP/2 prior-knowledge
//!   (h2c) connections, which a proxy cannot forward request by request;
//! - a **SOCKS4** or **SOCKS5** proxy carries every connection (host names resolved by the proxy;
//!   SOCKS5 with username/password when given).
//!
//! The connect timeout covers the connection to the proxy; the read timeout covers the rest (the
//! proxy's handshake included), since both sit inside the call the exchange times.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use hgw_proto::v1 as pb;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::{SocksV4, SocksV5, Tunnel};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The protocol spoken to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Http,
    Socks4,
    Socks5,
}

/// An endpoint's proxy as the agent sent it. Equal options share one client (and its pool).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyOptions {
    pub kind: ProxyKind,
    /// `host:port` (IPv6 addresses in brackets).
    authority: Authority,
    /// Username and password; absent when the username is empty.
    credentials: Option<(String, String)>,
}

/// Without the password.
impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("kind", &self.kind)
            .field("authority", &self.authority)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl TryFrom<pb::EndpointProxy> for ProxyOptions {
    type Error = String;

    fn try_from(proxy: pb::EndpointProxy) -> Result<Self, Self::Error> {
        let pb::EndpointProxy { r#type, host, port, username, password } = proxy;
        let kind = match pb::ProxyType::try_from(r#type) {
            Ok(pb::ProxyType::Http | pb::ProxyType::Unspecified) => ProxyKind::Http,
            Ok(pb::ProxyType::Socks4) => ProxyKind::Socks4,
            Ok(pb::ProxyType::Socks5) => ProxyKind::Socks5,
            Err(_) => return Err(format!("proxy type {type} is not known to this dataplane")),
        };
        let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| format!("proxy port {port}"))?;
        let authority = format!("{host}:{port}")
            .parse::<Authority>()
            .ok()
            .filter(|a| !a.as_str().contains('@'))
            .ok_or_else(|| format!("proxy host {host:?}"))?;
        let credentials = (!username.is_empty()).then_some((username, password));
        Ok(ProxyOptions { kind, authority, credentials })
    }
}

impl ProxyOptions {
    /// `http://host:port`: where the connections go (the scheme only tells the TCP connector to connect).
    fn uri(&self) -> Uri {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default()
    }

    /// `Proxy-Authorization` for an HTTP proxy with credentials (Basic, as Vert.x sends it).
    pub fn authorization(&self) -> Option<HeaderValue> {
        let (user, password) = self.credentials.as_ref().filter(|_| self.kind == ProxyKind::Http)?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// How an endpoint client's connections are made: directly, or through the endpoint's proxy.
#[derive(Clone)]
pub enum Connector {
    Direct(HttpConnector),
    Http {
        /// Connects to the proxy itself, for `http://` requests it forwards.
        tcp: HttpConnector,
        proxy: Uri,
        /// `CONNECT` tunnels, for everything it does not forward.
        tunnel: Tunnel<HttpConnector>,
        /// Whether `http://` requests are forwarded (absolute form) rather than tunnelled.
        forward_http: bool,
    },
    /// SOCKS4 (`v5: false`, no credentials) or SOCKS5.
    Socks {
        tcp: HttpConnector,
        proxy: Uri,
        v5: bool,
        credentials: Option<(String, String)>,
    },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Direct(_) => "Connector::Direct",
            Connector::Http { .. } => "Connector::Http",
            Connector::Socks { v5: false, .. } => "Connector::Socks4",
            Connector::Socks { v5: true, .. } => "Connector::Socks5",
        })
    }
}

impl Connector {
    /// Connections made with `tcp` (its connect timeout and options), through `proxy` when there is
    /// one; `forward_http`: an HTTP proxy gets `http://` requests forwarded instead of tunnelled.
    pub fn new(tcp: HttpConnector, proxy: Option<&ProxyOptions>, forward_http: bool) -> Connector {
        let Some(proxy) = proxy else { return Connector::Direct(tcp) };
        let uri = proxy.uri();
        match proxy.kind {
            ProxyKind::Http => {
                let mut tunnel = Tunnel::new(uri.clone(), tcp.clone());
                if let Some(auth) = proxy.authorization() {
                    tunnel = tunnel.with_auth(auth);
                }
                Connector::Http { tcp, proxy: uri, tunnel, forward_http }
            }
            ProxyKind::Socks4 => Connector::Socks { tcp, proxy: uri, v5: false, credentials: None },
            ProxyKind::Socks5 => Connector::Socks { tcp, proxy: uri, v5: true, credentials: proxy.credentials.clone() },
        }
    }
}

/// `uri` with its port written out: the tunnel and SOCKS handshakes take 443 when a URI has none.
fn with_port(uri: Uri) -> Uri {
    if uri.port().is_some() {
        return uri;
    }
    let port = if uri.scheme() == Some(&Scheme::HTTPS) { 443 } else { 80 };
    let Some(authority) = uri.host().and_then(|host| format!("{host}:{port}").parse::<Authority>().ok()) else {
        return uri;
    };
    let mut parts = uri.into_parts();
    parts.authority = Some(authority);
    Uri::from_parts(parts).unwrap_or_default()
}

/// A connection to the SOCKS proxy already made, handed to hyper-util's handshake as its "connector":
/// connecting first keeps a refused or timed-out proxy classified as such (the SOCKS error type hides
/// its cause).
struct Established(Option<TokioIo<TcpStream>>);

impl Service<Uri> for Established {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<TokioIo<TcpStream>, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(self.0.take().ok_or_else(|| io::Error::other("the proxy connection was used already")))
    }
}

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every variant connects with a clone of its service (`oneshot`), which waits for readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Connector::Direct(tcp) => {
                let connecting = tcp.clone().oneshot(dst);
                Box::pin(async move { Ok(Stream { io: connecting.await?, forwarded: false }) })
            }
            Connector::Http { tcp, proxy, forward_http: true, .. } if dst.scheme() == Some(&Scheme::HTTP) => {
                let connecting = tcp.clone().oneshot(proxy.clone());
                Box::pin(async move { Ok(Stream { io: connecting.await?, forwarded: true }) })
            }
            Connector::Http { tunnel, .. } => {
                let connecting = tunnel.clone().oneshot(with_port(dst));
                Box::pin(async move { Ok(Stream { io: connecting.await?, forwarded: false }) })
            }
            Connector::Socks { tcp, proxy, v5, credentials } => {
                let connecting = tcp.clone().oneshot(proxy.clone());
                let (proxy, v5, credentials) = (proxy.clone(), *v5, credentials.clone());
                Box::pin(async move {
                    let proxied = Established(Some(connecting.await?));
                    let dst = with_port(dst);
                    let io = match (v5, credentials) {
                        (false, _) => SocksV4::new(proxy, proxied).oneshot(dst).await?,
                        (true, None) => SocksV5::new(proxy, proxied).oneshot(dst).await?,
                        (true, Some((user, password))) => {
                            SocksV5::new(proxy, proxied).with_auth(user, password).oneshot(dst).await?
                        }
                    };
                    Ok(Stream { io, forwarded: false })
                })
            }
        }
    }
}

/// A connection to an endpoint, or to the HTTP proxy that forwards requests to it (`forwarded`: the
/// client then writes requests in absolute form).
#[derive(Debug)]
pub struct Stream {
    io: TokioIo<TcpStream>,
    forwarded: bool,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl Read for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(kind: pb::ProxyType, host: &str, port: u32, user: &str, password: &str) -> Result<ProxyOptions, String> {
        ProxyOptions::try_from(pb::EndpointProxy {
            r#type: kind as i32,
            host: host.into(),
            port,
            username: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn http_proxies_authenticate_with_basic_credentials() {
        let proxy = options(pb::ProxyType::Http, "proxy.local", 3128, "alice", "s3cret:x").unwrap();
        assert_eq!(proxy.uri(), "http://proxy.local:3128/");
        let auth = proxy.authorization().unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth, "Basic YWxpY2U6czNjcmV0Ong=");
        assert!(!format!("{proxy:?}").contains("s3cret"));
        // Unspecified is HTTP (Gravitee's default); no username, no header.
        let anonymous = options(pb::ProxyType::Unspecified, "[::1]", 8080, "", "ignored").unwrap();
        assert_eq!(anonymous.kind, ProxyKind::Http);
        assert_eq!(anonymous.authorization(), None);
        // SOCKS credentials are spoken in the handshake, never as a header.
        assert_eq!(options(pb::ProxyType::Socks5, "p", 1080, "u", "p").unwrap().authorization(), None);
    }

    #[test]
    fn bad_proxies_are_refused() {
        assert!(options(pb::ProxyType::Http, "proxy", 0, "", "").is_err());
        assert!(options(pb::ProxyType::Http, "proxy", 70_000, "", "").is_err());
        assert!(options(pb::ProxyType::Http, "u@proxy", 80, "", "").is_err());
        assert!(options(pb::ProxyType::Http, "a b", 80, "", "").is_err());
        assert!(
            ProxyOptions::try_from(pb::EndpointProxy { r#type: 9, host: "p".into(), port: 1, ..Default::default() })
                .is_err()
        );
    }

    #[test]
    fn handshakes_get_explicit_ports() {
        assert_eq!(with_port("http://backend/x?y".parse().unwrap()), "http://backend:80/x?y");
        assert_eq!(with_port("https://backend/".parse().unwrap()), "https://backend:443/");
        assert_eq!(with_port("http://backend:8080/".parse().unwrap()), "http://backend:8080/");
        assert_eq!(with_port("http://[::1]/".parse().unwrap()), "http://[::1]:80/");
    }
}
