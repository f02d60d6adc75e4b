//! HTTP clients to backends, and the classification of their failures into Gravitee error keys.
//!
//! A client is made for the options that shape its connection pool ([`ClientKey`]);
//! [`crate::api::clients`] keeps them across route tables. Plain `http://` HTTP/1.1 keep-alive calls
//! take [`crate::http::pool`]'s connections (hyper's connection-level client, no pool hashing or
//! hand-off to a pool task); everything else (TLS, HTTP/2, keep-alive off, a [`crate::http::proxy`])
//! hyper-util's pooled client.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hgw_proto::v1 as pb;
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::uri::Scheme;
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt;

use crate::http::body::RequestBody;
use crate::http::pool::{Http1Pool, PoolError, host_header};
use crate::http::proxy::{Connector, ProxyOptions};
use crate::http::tls::{self, TlsOptions};

/// Gravitee's default connect timeout, used when the agent leaves the field at zero.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Gravitee's default read timeout (time to the response headers).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Gravitee's default idle timeout of pooled connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(60_000);

/// Effective HTTP client options of an endpoint (zeros from the agent replaced by Gravitee defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub keep_alive: bool,
    pub propagate_client_host: bool,
    pub http2: bool,
    /// Gravitee `useCompression`: offer `deflate, gzip` and decompress the answer (see
    /// [`crate::http::decompress`]).
    pub use_compression: bool,
    /// Gravitee `propagateClientAcceptEncoding` (already false when `use_compression` is on).
    pub propagate_client_accept_encoding: bool,
    /// Gravitee `followRedirects`: the gateway follows the endpoint's redirects (as Vert.x does).
    pub follow_redirects: bool,
}

impl From<Option<pb::HttpClientOptions>> for HttpOptions {
    fn from(options: Option<pb::HttpClientOptions>) -> Self {
        let pb::HttpClientOptions {
            connect_timeout_ms,
            read_timeout_ms,
            idle_timeout_ms,
            keep_alive,
            propagate_client_host,
            version,
            use_compression,
            propagate_client_accept_encoding,
            follow_redirects,
        } = options.unwrap_or(pb::HttpClientOptions { keep_alive: true, use_compression: true, ..Default::default() });
        HttpOptions {
            connect_timeout: millis(connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT),
            read_timeout: millis(read_timeout_ms, DEFAULT_READ_TIMEOUT),
            idle_timeout: millis(idle_timeout_ms, DEFAULT_IDLE_TIMEOUT),
            keep_alive,
            propagate_client_host,
            http2: version == pb::HttpVersion::Http2 as i32,
            use_compression,
            propagate_client_accept_encoding: propagate_client_accept_encoding && !use_compression,
            follow_redirects,
        }
    }
}

/// `ms`, or `default` when the agent left it at zero.
pub(crate) fn millis(ms: u32, default: Duration) -> Duration {
    if ms == 0 { default } else { Duration::from_millis(u64::from(ms)) }
}

/// The client every endpoint uses: plain HTTP or TLS (rustls), HTTP/1.1 or HTTP/2, with its pool of
/// connections; and, for upgrade requests (WebSocket handshakes), HTTP/1.1 connections of their own.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    pooled: Client<HttpsConnector<Connector>, RequestBody>,
    /// Connects like `pooled` (same connect timeout and TLS options) but offers HTTP/1.1 only:
    /// an upgraded connection leaves HTTP for good, so it is never one of the pool's, and WebSocket
    /// over HTTP/2 (RFC 8441) is not spoken, so even an endpoint configured for HTTP/2 gets its
    /// handshakes over HTTP/1.1.
    upgrades: HttpsConnector<Connector>,
    /// Idle plain HTTP/1.1 connections, for clients that keep connections alive without HTTP/2 or a
    /// proxy.
    http1: Option<Arc<Http1Pool>>,
    /// `Proxy-Authorization` for `http://` requests an HTTP proxy forwards.
    proxy_authorization: Option<HeaderValue>,
}

impl UpstreamClient {
    /// Sends `request` on hyper-util's pooled client (health checks and callouts use it).
    #[inline]
    pub fn request(&self, mut request: Request<RequestBody>) -> ResponseFuture {
        self.authorize_forwarded(&mut request);
        self.pooled.request(request)
    }

    /// Adds the HTTP proxy's credentials to a request it forwards (replacing any the request had).
    #[inline]
    fn authorize_forwarded(&self, request: &mut Request<RequestBody>) {
        if let Some(auth) = &self.proxy_authorization
            && request.uri().scheme() == Some(&Scheme::HTTP)
        {
            request.headers_mut().insert(PROXY_AUTHORIZATION, auth.clone());
        }
    }

    /// Sends `request` on a pooled connection: a plain `http://` HTTP/1.1 request of a keep-alive
    /// client on one of [`Http1Pool`]'s, anything else on hyper-util's pooled client.
    pub async fn send(&self, request: Request<RequestBody>) -> Result<Response<Incoming>, CallError> {
        match &self.http1 {
            Some(pool) if Http1Pool::takes(&request) => pool.send(request).await.map_err(CallError::Http1),
            _ => self.request(request).await.map_err(CallError::Pooled),
        }
    }

    /// Sends an upgrade request (a WebSocket handshake) on a new HTTP/1.1 connection of its own,
    /// which serves this request only. When the endpoint answers `101`, the response carries the
    /// connection for [`hyper::upgrade::on`]; any other answer is an ordinary response.
    pub async fn upgrade(&self, mut request: Request<RequestBody>) -> Result<Response<Incoming>, UpstreamError> {
        let uri = request.uri().clone();
        let io = self.upgrades.clone().oneshot(uri.clone()).await.map_err(|error| {
            let error: &(dyn std::error::Error + 'static) = &*error;
            UpstreamError::classify_chain(error, true)
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| UpstreamError::classify_chain(&error, false))?;
        tokio::spawn(async move {
            // Ends with the response (no upgrade), or hands the connection over to the tunnel.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(error = %error_chain(&error), "upgrade connection to the endpoint ended with an error");
            }
        });
        // A client connection takes the request target as written: origin form, and a Host header
        // as the pooled client would have made it.
        if !request.headers().contains_key(HOST)
            && let Some(host) = host_header(&uri)
        {
            request.headers_mut().insert(HOST, host);
        }
        *request.uri_mut() = uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
        *request.version_mut() = Version::HTTP_11;
        sender.send_request(request).await.map_err(|error| UpstreamError::classify_chain(&error, false))
    }
}

/// The endpoint options that need a separate connection pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub keep_alive: bool,
    /// HTTP/2 with prior knowledge (h2c): `HTTP_2` to an `http://` target.
    pub h2c: bool,
    /// Offer h2 through ALPN (falling back to HTTP/1.1): `HTTP_2` to an `https://` target.
    pub alpn_h2: bool,
    /// TLS options of `https://` targets.
    pub tls: Option<TlsKey>,
    /// The proxy connections go through (Gravitee endpoint `proxy`).
    pub proxy: Option<Arc<ProxyOptions>>,
}

/// TLS options as a cheap map key: hashed once, compared by pointer first.
#[derive(Debug, Clone)]
pub struct TlsKey {
    options: Arc<TlsOptions>,
    hash: u64,
}

impl TlsKey {
    pub fn new(options: Arc<TlsOptions>) -> TlsKey {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        options.hash(&mut hasher);
        TlsKey { hash: hasher.finish(), options }
    }
}

impl PartialEq for TlsKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.options, &other.options) || (self.hash == other.hash && self.options == other.options)
    }
}

impl Eq for TlsKey {}

impl Hash for TlsKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

impl ClientKey {
    pub fn new(http: &HttpOptions, https: bool, tls: Option<TlsKey>, proxy: Option<Arc<ProxyOptions>>) -> ClientKey {
        ClientKey {
            connect_timeout: http.connect_timeout,
            idle_timeout: http.idle_timeout,
            keep_alive: http.keep_alive,
            h2c: http.http2 && !https,
            alpn_h2: http.http2 && https,
            tls,
            proxy,
        }
    }

    pub(crate) fn build(&self) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let config = match &self.tls {
            Some(tls) => tls.options.client_config().unwrap_or_else(|error| {
                // Checked when the API was converted; failing closed if it ever happens anyway.
                tracing::error!(%error, "endpoint TLS configuration; this client trusts nothing");
                tls::plain_only_config()
            }),
            None => tls::plain_only_config(),
        };
        let proxy = self.proxy.as_deref();
        // Handshakes and h2c connections are tunnelled through an HTTP proxy (see `http::proxy`).
        let upgrades = HttpsConnectorBuilder::new()
            .with_tls_config(config.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(Connector::new(connector.clone(), proxy, false));
        let builder = HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
        let tcp = connector.clone();
        let connector = Connector::new(connector, proxy, !self.h2c);
        let connector = if self.alpn_h2 {
            builder.enable_all_versions().wrap_connector(connector)
        } else {
            builder.enable_http1().wrap_connector(connector)
        };
        // The fast path: the same TCP connector (connect timeout, no delay), no TLS, no HTTP/2, no proxy.
        let http1 = (self.keep_alive && !self.h2c && !self.alpn_h2 && proxy.is_none())
            .then(|| Arc::new(Http1Pool::new(tcp, self.idle_timeout)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(self.idle_timeout);
        if !self.keep_alive {
            builder.pool_max_idle_per_host(0);
        }
        if self.h2c {
            builder.http2_only(true);
        }
        let proxy_authorization = proxy.and_then(ProxyOptions::authorization);
        UpstreamClient { pooled: builder.build(connector), upgrades, http1, proxy_authorization }
    }
}

/// A failed endpoint call, before it is classified ([`CallError::classify`]).
#[derive(Debug)]
pub enum CallError {
    /// hyper-util's pooled client failed.
    Pooled(hyper_util::client::legacy::Error),
    /// A call on one of [`Http1Pool`]'s connections failed.
    Http1(PoolError),
}

impl CallError {
    /// The failure in Gravitee's vocabulary.
    pub fn classify(&self) -> UpstreamError {
        match self {
            CallError::Pooled(error) => UpstreamError::classify(error),
            CallError::Http1(error) => UpstreamError::classify_chain(error, error.is_connect()),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Pooled(error) => error.fmt(f),
            CallError::Http1(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Pooled(error) => error.source(),
            CallError::Http1(error) => error.source(),
        }
    }
}

/// A failed endpoint call, in Gravitee's vocabulary.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// No response headers within the endpoint's read timeout.
    #[error("Request timeout")]
    ReadTimeout,
    #[error("Upstream connect timeout")]
    ConnectTimeout,
    #[error("The upstream refused the connection")]
    ConnectionRefused,
    /// The TLS handshake with the endpoint failed (untrusted or mismatched certificate, protocol).
    #[error("TLS failure with the upstream: {0}")]
    Tls(String),
    #[error("{0}")]
    Connection(String),
}

impl UpstreamError {
    /// Classifies a client error by walking its cause chain down to the I/O error.
    pub fn classify(error: &hyper_util::client::legacy::Error) -> UpstreamError {
        UpstreamError::classify_chain(error, error.is_connect())
    }

    /// Classifies any error by its cause chain; `connecting` says whether it happened while
    /// connecting (a timeout then is the connect timeout).
    pub fn classify_chain(error: &(dyn std::error::Error + 'static), connecting: bool) -> UpstreamError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(tls) = rustls_error(e) {
                return UpstreamError::Tls(tls.to_string());
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::TimedOut if connecting => {
                        return UpstreamError::ConnectTimeout;
                    }
                    std::io::ErrorKind::ConnectionRefused => {
                        return UpstreamError::ConnectionRefused;
                    }
                    _ => {}
                }
            }
            source = e.source();
        }
        UpstreamError::Connection(error_chain(error))
    }
}

/// The TLS error inside `error`, looking through `io::Error` wrappers (std's `io::Error` hides its
/// inner error from `source()`, and hyper-rustls wraps tokio-rustls' io::Error in another one).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// `error: cause: cause`, for messages that should explain themselves.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connections_are_classified() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = ClientKey::new(&HttpOptions::from(None), false, None, None).build();
        let req = http::Request::get(format!("http://127.0.0.1:{port}/")).body(RequestBody::empty()).unwrap();
        let err = client.request(req).await.unwrap_err();
        assert_eq!(UpstreamError::classify(&err), UpstreamError::ConnectionRefused);
    }

    #[tokio::test]
    async fn refused_upgrade_connections_are_classified() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = ClientKey::new(&HttpOptions::from(None), false, None, None).build();
        let req = http::Request::get(format!("http://127.0.0.1:{port}/chat")).body(RequestBody::empty()).unwrap();
        assert_eq!(client.upgrade(req).await.unwrap_err(), UpstreamError::ConnectionRefused);
    }

    #[test]
    fn upgrade_requests_get_the_host_the_pooled_client_would_send() {
        let host = |uri: &str| host_header(&uri.parse().unwrap()).unwrap();
        assert_eq!(host("http://backend:8080/x"), "backend:8080");
        assert_eq!(host("http://backend:80/x"), "backend");
        assert_eq!(host("https://backend/x"), "backend");
        assert_eq!(host("https://backend:443/x"), "backend");
        assert_eq!(host("https://127.0.0.1:8443/x"), "127.0.0.1:8443");
        assert_eq!(host("http://[::1]:8080/x"), "[::1]:8080");
        assert_eq!(host("http://[::1]/x"), "[::1]");
        // Written differently from what it means: the header carries what it means.
        assert_eq!(host("http://user:secret@backend:8080/x"), "backend:8080");
        assert_eq!(host("http://user@backend/x"), "backend");
        assert_eq!(host("http://backend:08080/x"), "backend:8080");
        assert_eq!(host("http://backend:0080/x"), "backend");
    }

    #[test]
    fn http_options_take_gravitee_defaults() {
        let o = HttpOptions::from(Some(pb::HttpClientOptions {
            read_timeout_ms: 250,
            propagate_client_host: true,
            version: pb::HttpVersion::Http2 as i32,
            ..Default::default()
        }));
        assert_eq!(o.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(o.read_timeout, Duration::from_millis(250));
        assert_eq!(o.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert!(!o.keep_alive && o.propagate_client_host && o.http2);
        let defaults = HttpOptions::from(None);
        assert!(defaults.keep_alive && !defaults.http2);
        assert!(defaults.use_compression && !defaults.propagate_client_accept_encoding);
        // As Gravitee: the client's Accept-Encoding is propagated only without compression.
        let both = HttpOptions::from(Some(pb::HttpClientOptions {
            use_compression: true,
            propagate_client_accept_encoding: true,
            ..Default::default()
        }));
        assert!(!both.propagate_client_accept_encoding);
    }
}
