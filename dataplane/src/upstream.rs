//! HTTP clients to backends, and the classification of their failures into Gravitee error keys.
//!
//! Clients are cached by the options that shape their connection pool, and the cache outlives route
//! tables: a config update that does not change an endpoint's options keeps its warm connections.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::routes::Api;

/// The client type every endpoint uses (plain HTTP/1.1; https is not supported yet).
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// The endpoint options that need a separate connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub keep_alive: bool,
}

impl ClientKey {
    fn build(&self) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(self.idle_timeout);
        if !self.keep_alive {
            builder.pool_max_idle_per_host(0);
        }
        builder.build(connector)
    }
}

/// Clients by pool options, kept across route table updates.
#[derive(Debug, Default)]
pub struct ClientCache {
    clients: HashMap<ClientKey, UpstreamClient>,
}

impl ClientCache {
    /// The clients `apis` need: existing ones are reused, missing ones created, and clients no API
    /// uses any more are forgotten (in-flight requests keep theirs through the old table).
    pub fn select(&mut self, apis: &BTreeMap<String, Arc<Api>>) -> HashMap<ClientKey, UpstreamClient> {
        let mut selected = HashMap::new();
        for api in apis.values() {
            for endpoint in api.endpoints.endpoints() {
                let key = endpoint.http.client_key();
                if selected.contains_key(&key) {
                    continue;
                }
                let client = self.clients.entry(key).or_insert_with(|| key.build()).clone();
                selected.insert(key, client);
            }
        }
        self.clients.retain(|key, _| selected.contains_key(key));
        selected
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
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
    #[error("{0}")]
    Connection(String),
}

impl UpstreamError {
    /// Classifies a client error by walking its cause chain down to the I/O error.
    pub fn classify(error: &hyper_util::client::legacy::Error) -> UpstreamError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::TimedOut if error.is_connect() => {
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
    use crate::routes::tests::api;

    #[test]
    fn cache_reuses_clients_across_tables_and_forgets_unused() {
        let mut cache = ClientCache::default();
        let mut apis = BTreeMap::new();
        let a = Arc::new(Api::try_from(api("a", &[("", "/a")], "http://b")).unwrap());
        apis.insert("a".to_owned(), a.clone());
        let first = cache.select(&apis);
        assert_eq!(first.len(), 1);
        let second = cache.select(&apis);
        assert_eq!(second.len(), 1);
        assert_eq!(cache.len(), 1);

        let mut other = api("b", &[("", "/b")], "http://b");
        other.endpoint_groups[0].endpoints[0].http = Some(hgw_proto::v1::HttpClientOptions {
            connect_timeout_ms: 10,
            read_timeout_ms: 10,
            idle_timeout_ms: 10,
            keep_alive: false,
            propagate_client_host: false,
        });
        let b = Arc::new(Api::try_from(other).unwrap());
        let mut only_b = BTreeMap::new();
        only_b.insert("b".to_owned(), b);
        cache.select(&only_b);
        assert_eq!(cache.len(), 1);
        cache.select(&BTreeMap::new());
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn refused_connections_are_classified() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = ClientKey {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            keep_alive: true,
        }
        .build();
        let req = http::Request::get(format!("http://127.0.0.1:{port}/")).body(RequestBody::empty()).unwrap();
        let err = client.request(req).await.unwrap_err();
        assert_eq!(UpstreamError::classify(&err), UpstreamError::ConnectionRefused);
    }
}
