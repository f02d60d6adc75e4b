//! The way to the agent: its Unix socket, or mutual TLS to `https://host:port` with the agent's CA
//! pinned and this dataplane's certificate, which may change while the dataplane runs (join, renewal).
//!
//! Every new connection reads the current certificate, so a renewed certificate is used from the next
//! connection on, while open streams keep the connection they have (nothing is dropped).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::config::{AgentAddr, AgentTls, Credential};

/// Time to establish the connection to the agent; it is near, so this is generous.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings detect an agent that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("--agent-ca: {0}")]
    Ca(String),
    #[error("--cert/--key: {0}")]
    Certificate(String),
}

struct TlsLink {
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    roots: Arc<rustls::RootCertStore>,
    /// TLS without a client certificate: only `Identity/Join` (and health, reflection) answer it.
    anonymous: Arc<rustls::ClientConfig>,
    /// TLS with this dataplane's current certificate; `None` until it has one.
    current: watch::Sender<Option<Arc<rustls::ClientConfig>>>,
}

/// A cheap, cloneable handle on the agent's address and this dataplane's credentials.
#[derive(Clone)]
pub struct AgentLink {
    addr: AgentAddr,
    tls: Option<Arc<TlsLink>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    roots: Arc<rustls::RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Parses a PEM certificate chain and private key.
pub fn parse_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("not a PEM private key: {e}"))?;
    Ok((chain, key))
}

fn roots(ca_pem: &[u8]) -> Result<Arc<rustls::RootCertStore>, LinkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| LinkError::Ca(format!("not PEM certificates: {e}")))?;
        roots.add(cert).map_err(|e| LinkError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(LinkError::Ca("no PEM certificate in the file".into()));
    }
    Ok(Arc::new(roots))
}

impl AgentLink {
    /// Builds the link; a static certificate is installed at once, a joining dataplane has none yet.
    pub fn new(addr: AgentAddr, tls: Option<&AgentTls>) -> Result<AgentLink, LinkError> {
        let (AgentAddr::Https { host, port, .. }, Some(tls)) = (&addr, tls) else {
            return Ok(AgentLink { addr, tls: None });
        };
        let roots = roots(&tls.ca_pem)?;
        let server_name = ServerName::try_from(host.clone()).map_err(|e| LinkError::Ca(format!("agent host: {e}")))?;
        let anonymous = client_config(roots.clone(), None).map_err(LinkError::Ca)?;
        let current = match &tls.credential {
            Credential::Static { cert_pem, key_pem } => {
                let identity = parse_identity(cert_pem, key_pem).map_err(LinkError::Certificate)?;
                Some(client_config(roots.clone(), Some(identity)).map_err(LinkError::Certificate)?)
            }
            Credential::JoinToken { .. } => None,
        };
        let link = TlsLink {
            server_name,
            host: host.clone(),
            port: *port,
            roots,
            anonymous,
            current: watch::Sender::new(current),
        };
        Ok(AgentLink { addr, tls: Some(Arc::new(link)) })
    }

    pub fn addr(&self) -> &AgentAddr {
        &self.addr
    }

    /// Uses this certificate and key for every new connection from now on.
    pub fn install(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let config = client_config(tls.roots.clone(), Some(parse_identity(cert_pem, key_pem)?))?;
        tls.current.send_replace(Some(config));
        Ok(())
    }

    /// Whether this dataplane has a certificate (always true on a Unix socket).
    pub fn has_identity(&self) -> bool {
        self.tls.as_ref().is_none_or(|tls| tls.current.borrow().is_some())
    }

    /// Waits until this dataplane has a certificate (returns at once on a Unix socket).
    pub async fn wait_identity(&self) {
        if let Some(tls) = &self.tls {
            let mut receiver = tls.current.subscribe();
            let _ = receiver.wait_for(Option::is_some).await;
        }
    }

    /// Connects now, with this dataplane's certificate (waiting for one first).
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        self.wait_identity().await;
        match (&self.addr, &self.tls) {
            (AgentAddr::Https { uri, .. }, Some(tls)) => {
                configure(Endpoint::from_shared(uri.clone())?)
                    .connect_with_connector(tls_connector(tls.clone(), false))
                    .await
            }
            (addr, _) => {
                configure(Endpoint::from_static("http://hgw-agent"))
                    .connect_with_connector(unix_connector(unix_path(addr)))
                    .await
            }
        }
    }

    /// Connects without a client certificate: for `hgw.v1.Identity/Join` only.
    pub async fn connect_anonymous(&self) -> Result<Channel, tonic::transport::Error> {
        match (&self.addr, &self.tls) {
            (AgentAddr::Https { uri, .. }, Some(tls)) => {
                configure(Endpoint::from_shared(uri.clone())?)
                    .connect_with_connector(tls_connector(tls.clone(), true))
                    .await
            }
            _ => self.connect().await,
        }
    }

    /// A channel that connects on first use and reconnects by itself (for unary calls such as
    /// rate-limit counters, which must fail fast rather than wait for a connection at start).
    pub fn connect_lazy(&self) -> Channel {
        match (&self.addr, &self.tls) {
            (AgentAddr::Https { uri, .. }, Some(tls)) => match Endpoint::from_shared(uri.clone()) {
                Ok(endpoint) => configure(endpoint).connect_with_connector_lazy(tls_connector(tls.clone(), false)),
                // Validated at start-up; keep a channel that fails every call rather than panic.
                Err(_) => configure(Endpoint::from_static("http://invalid.invalid")).connect_lazy(),
            },
            (addr, _) => configure(Endpoint::from_static("http://hgw-agent"))
                .connect_with_connector_lazy(unix_connector(unix_path(addr))),
        }
    }
}

fn unix_path(addr: &AgentAddr) -> std::path::PathBuf {
    match addr {
        AgentAddr::Unix(path) => path.clone(),
        // An https address always has TLS settings (validated at start-up); this path cannot connect.
        AgentAddr::Https { .. } => std::path::PathBuf::from("/nonexistent/hgw-agent-without-tls.sock"),
    }
}

fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

type Connecting<T> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<TokioIo<T>>> + Send>>;

/// Connects every new channel connection to the agent's Unix socket.
fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = Connecting<tokio::net::UnixStream>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }) as Connecting<_>
    })
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects over TCP and TLS, with the certificate current at connection time (or none for a join).
fn tls_connector(
    tls: Arc<TlsLink>,
    anonymous: bool,
) -> impl tower::Service<http::Uri, Response = TokioIo<TlsStream>, Error = std::io::Error, Future = Connecting<TlsStream>>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        Box::pin(async move {
            let config = match (anonymous, tls.current.borrow().clone()) {
                (false, Some(config)) => config,
                _ => tls.anonymous.clone(),
            };
            let tcp = tokio::net::TcpStream::connect((tls.host.as_str(), tls.port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(config).connect(tls.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(stream))
        }) as Connecting<_>
    })
}
