//! A request's context as the phases pass it on: the connection it came on, its ids, and what
//! routing found.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tokio::time::Instant;
use uuid::Uuid;

use super::Shared;
use crate::api::routes::{Api, RouteTable};
use crate::http::forwarded::TrustedProxies;
use crate::http::tls_session::TlsSession;
use crate::telemetry::metrics::InFlight;
use crate::telemetry::request_metrics::value_text;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-gravitee-request-id");
pub const X_TRANSACTION_ID: HeaderName = HeaderName::from_static("x-gravitee-transaction-id");
/// Gravitee's `handlers.request.client.header` default: who the client is, echoed on answers.
pub const X_CLIENT_IDENTIFIER: HeaderName = HeaderName::from_static("x-gravitee-client-identifier");

/// The two addresses of a client connection, and their text made once per connection: analytics
/// records, EL and key-less subscriptions read it on every request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_ip: Arc<str>,
    pub remote_ip: Arc<str>,
    /// Lower-case hex SHA-256 of `remote_ip`: a key-less request's client identifier (Gravitee hashes
    /// a subscription id that is the caller's address), made once per connection.
    pub remote_ip_sha256: HeaderValue,
    /// Whether the client connected over TLS (HTTPS): the request's scheme.
    pub tls: bool,
    /// The certificate the client presented in the TLS handshake, verified against the truststore
    /// (`--tls-client-auth`): what mTLS plans authenticate.
    pub client_certificate: Option<ClientCertificate>,
    /// The HTTPS session as EL's `#request.ssl` reads it (`None` on plain HTTP).
    pub tls_session: Option<Arc<TlsSession>>,
}

/// A verified client certificate (the leaf of the chain the client sent).
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// Its DER encoding.
    pub der: Arc<[u8]>,
    /// Lower-case hex SHA-256 of `der`: how mTLS plans' subscriptions name the certificate.
    pub sha256: Arc<str>,
}

impl ClientCertificate {
    pub fn new(der: &[u8]) -> ClientCertificate {
        ClientCertificate { der: der.into(), sha256: crate::api::security::sha256_hex_bytes(der).into() }
    }
}

impl ConnInfo {
    pub fn new(local: SocketAddr, remote: SocketAddr, tls: bool) -> ConnInfo {
        let (local_ip, remote_ip): (Arc<str>, Arc<str>) =
            (local.ip().to_string().into(), remote.ip().to_string().into());
        let hash = crate::api::security::sha256_hex_bytes(remote_ip.as_bytes());
        let remote_ip_sha256 = HeaderValue::from_str(&hash).unwrap_or_else(|_| HeaderValue::from_static(""));
        ConnInfo {
            local,
            remote,
            local_ip,
            remote_ip,
            remote_ip_sha256,
            tls,
            client_certificate: None,
            tls_session: None,
        }
    }

    /// The client's address as records and EL show it: the peer, or what trusted proxies say in
    /// `X-Forwarded-For` (borrowed, without work, when the request has no such header).
    pub fn client_address(&self, trusted: &TrustedProxies, headers: &HeaderMap) -> std::borrow::Cow<'_, str> {
        match self.forwarded_client(trusted, headers) {
            Some(ip) => std::borrow::Cow::Owned(ip.to_string()),
            None => std::borrow::Cow::Borrowed(&self.remote_ip),
        }
    }

    /// [`Self::client_address`] as a shared text: the connection's own, without a copy, unless a
    /// trusted proxy forwarded another.
    pub fn client_address_shared(&self, trusted: &TrustedProxies, headers: &HeaderMap) -> Arc<str> {
        match self.forwarded_client(trusted, headers) {
            Some(ip) => ip.to_string().into(),
            None => self.remote_ip.clone(),
        }
    }

    /// The client trusted proxies name in `X-Forwarded-For`, when it is not the peer itself.
    fn forwarded_client(&self, trusted: &TrustedProxies, headers: &HeaderMap) -> Option<std::net::IpAddr> {
        trusted.client(self.remote.ip(), headers).filter(|ip| *ip != self.remote.ip())
    }
}

/// Request and transaction ids, as header values ready to copy; once a plan is resolved, the client
/// identifier answers carry too.
pub(crate) struct Ids {
    pub(crate) request: HeaderValue,
    pub(crate) transaction: HeaderValue,
    /// `X-Gravitee-Client-Identifier` of the answer, set once the plan is resolved (as Gravitee's
    /// subscription processor, which runs after the security chain: a 401 has none).
    pub(crate) client: Option<HeaderValue>,
    /// A v2 API on Gravitee's V3 engine: every failure the gateway answers itself (refusals, policy
    /// failures, errors) goes through that engine's failure processor, which sets no ids and closes
    /// the connection.
    pub(crate) legacy: bool,
    /// The ids as the request carries them once its flows ran (a flow may have removed or changed
    /// them): what Gravitee's transaction post-processor copies onto the answer. `None` before then.
    pub(crate) on_request: Option<[Option<HeaderValue>; 2]>,
}

impl Ids {
    pub(crate) fn new(headers: &HeaderMap) -> Ids {
        // Encoded into a stack buffer: no formatting machinery and no String per request.
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
        let request = HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
        let transaction =
            headers.get(&X_TRANSACTION_ID).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| request.clone());
        Ids { request, transaction, client: None, legacy: false, on_request: None }
    }

    /// The transaction id for a record that outlives the request: shared when it is the gateway's
    /// own (the request id), copied when the client sent it (see [`detached`]).
    pub(crate) fn own_transaction(&self) -> HeaderValue {
        if self.transaction == self.request { self.request.clone() } else { detached(&self.transaction) }
    }

    /// The ids a request to the endpoint carries.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID, self.request.clone());
        headers.insert(X_TRANSACTION_ID, self.transaction.clone());
    }

    /// Notes the ids the request carries now that its flows ran (or stopped at a step that answered).
    pub(crate) fn note_request(&mut self, headers: &HeaderMap) {
        self.on_request = Some([headers.get(&X_TRANSACTION_ID).cloned(), headers.get(&X_REQUEST_ID).cloned()]);
    }

    /// Notes that no step ran on the request: it carries the ids [`Ids::apply`] put there (without
    /// looking them up again: hashing the two custom names costs more than the rest of this).
    pub(crate) fn note_unchanged(&mut self) {
        self.on_request = Some([Some(self.transaction.clone()), Some(self.request.clone())]);
    }

    /// The ids on an answer, as Gravitee's transaction post-processor sets them once the response
    /// flows ran (or on a failure): each id the request carries, replacing the endpoint's. One the
    /// request flows removed is left as the endpoint sent it (absent, usually). The V3 engine's
    /// answers carry the gateway's ids whatever the flows did.
    pub(crate) fn apply_ids(&self, headers: &mut HeaderMap) {
        match &self.on_request {
            None => self.apply(headers),
            Some(_) if self.legacy => self.apply(headers),
            Some([transaction, request]) => {
                if let Some(value) = transaction {
                    headers.insert(X_TRANSACTION_ID, value.clone());
                }
                if let Some(value) = request {
                    headers.insert(X_REQUEST_ID, value.clone());
                }
            }
        }
    }

    /// The ids an answer carries, and the client identifier once there is one. The gateway's client
    /// identifier comes first; one the endpoint sent follows it (Gravitee adds the endpoint's headers
    /// to those it set).
    pub(crate) fn apply_response(&self, headers: &mut HeaderMap) {
        self.apply_ids(headers);
        self.apply_client(headers);
    }

    /// The client identifier alone, on an endpoint's answer before the response flows see it.
    pub(crate) fn apply_client(&self, headers: &mut HeaderMap) {
        if let Some(client) = &self.client {
            // One lookup of the name, whichever way it goes.
            match headers.entry(X_CLIENT_IDENTIFIER) {
                http::header::Entry::Vacant(vacant) => {
                    vacant.insert(client.clone());
                }
                http::header::Entry::Occupied(mut theirs) => {
                    // Rare: only an endpoint that sends the header itself pays for this.
                    let values: Vec<HeaderValue> = theirs.iter().cloned().collect();
                    theirs.insert(client.clone());
                    for value in values {
                        theirs.append(value);
                    }
                }
            }
        }
    }
}

/// A routed request's context through the phases after routing (security, request flows, the
/// endpoint call, response flows, the record): what routing found and what every phase reads.
pub(crate) struct Routed<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) conn: &'a ConnInfo,
    pub(crate) api: Arc<Api>,
    /// The route table snapshot the request keeps (its APIs and clients) until it is done.
    pub(crate) table: Arc<RouteTable>,
    pub(crate) path_info: String,
    pub(crate) ids: Ids,
    pub(crate) arrival: Instant,
    pub(crate) timestamp_ms: i64,
    pub(crate) in_flight: InFlight,
    /// The client's Accept values, kept only for APIs with response templates.
    pub(crate) accept: Vec<HeaderValue>,
    /// For an unsampled request without trace context: the `traceparent` the endpoint gets.
    pub(crate) propagate: Option<HeaderValue>,
}

/// The Host the client asked for: the Host header, or the HTTP/2 :authority.
pub(crate) fn request_host<B>(req: &Request<B>) -> &str {
    host_of(req.headers(), req.uri())
}

pub(crate) fn request_host_of(parts: &http::request::Parts) -> &str {
    host_of(&parts.headers, &parts.uri)
}

fn host_of<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> &'a str {
    headers.get(HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str())).unwrap_or("")
}

/// A copy of a header value the client sent, for what outlives its request (a queued metrics record,
/// the answer's client identifier): hyper's values point into the connection's read buffer, and
/// keeping one alive makes hyper allocate a new buffer for the connection's next request.
pub(crate) fn detached(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// A header value as owned text (see [`value_text`]).
pub(crate) fn lossy(value: &HeaderValue) -> String {
    value_text(value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_id_is_kept_or_defaults_to_request_id() {
        let ids = Ids::new(&HeaderMap::new());
        assert_eq!(ids.request, ids.transaction);
        assert_eq!(ids.request.len(), 36);
        let mut h = HeaderMap::new();
        h.insert(X_TRANSACTION_ID, HeaderValue::from_static("tx-1"));
        let ids = Ids::new(&h);
        assert_eq!(ids.transaction, "tx-1");
        assert_ne!(ids.request, "tx-1");
    }
}
