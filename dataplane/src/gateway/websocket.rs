//! WebSocket through the gateway. The handshake is an ordinary request for every phase (routing,
//! plan and security, request flows, the endpoint call, response flows, its metrics record), with
//! two differences: `Connection: Upgrade` and `Upgrade: websocket` reach the endpoint instead of
//! being stripped as hop-by-hop headers, and the endpoint is called on an HTTP/1.1 connection of its
//! own. When the endpoint answers `101`, the client gets the `101` with the endpoint's handshake
//! headers, and both connections become one byte [`tunnel`](crate::http::tunnel) until either side
//! closes or nothing moves for `--websocket-idle-timeout`.
//!
//! Only `websocket` is forwarded: any other `Upgrade` (`h2c`, `TLS/1.0`, …) is still stripped, so a
//! client cannot switch the endpoint connection to a protocol the gateway does not know.
//!
//! WebSocket over HTTP/2 (RFC 8441): the HTTP/2 server announces `SETTINGS_ENABLE_CONNECT_PROTOCOL`,
//! and an extended CONNECT with `:protocol` `websocket` is the same handshake in HTTP/2 form. The
//! phases see it as the `GET` it stands for; the endpoint gets an HTTP/1.1 handshake (with a
//! `Sec-WebSocket-Key` of the gateway's own, which RFC 8441 clients do not send); when the endpoint
//! answers `101`, the client gets `200` on its stream, and the stream is the tunnel. WebSocket
//! frames are the same bytes in both forms, so the tunnel relays them untouched.
//!
//! The handshake's metrics record (status `101`) is emitted when the `101` is sent, like any
//! response whose body has ended; the tunnel's life after that is in `/metrics`
//! (`hgw_dataplane_websocket_tunnels`, `hgw_dataplane_websocket_idle_closed_total`).

use std::sync::atomic::Ordering;

use base64::Engine as _;
use http::header::{CONNECTION, CONTENT_LENGTH, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Shared;
use crate::http::tunnel::{Relayed, relay};

/// How a client asked for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// An HTTP/1.1 `GET` with `Upgrade: websocket`, answered `101`.
    Http1,
    /// An HTTP/2 extended CONNECT with `:protocol` `websocket` (RFC 8441), answered `200`.
    Http2,
}

/// Whether `req` asks for a WebSocket upgrade the gateway forwards, and how: an HTTP/1.1 `GET` whose
/// `Connection` lists `upgrade` and whose `Upgrade` lists `websocket` (tokens in any case, RFC 6455
/// §4.1), without a body (a handshake has none; a request with one is forwarded as a plain request,
/// its upgrade headers stripped); or an HTTP/2 CONNECT whose `:protocol` is `websocket` (the HTTP/2
/// layer refuses one with a body).
pub(crate) fn requested<B>(req: &Request<B>) -> Option<Handshake> {
    let headers = req.headers();
    if req.version() == Version::HTTP_2 {
        let protocol = req.extensions().get::<hyper::ext::Protocol>();
        return (req.method() == Method::CONNECT
            && protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket")))
        .then_some(Handshake::Http2);
    }
    (req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && lists(headers, &CONNECTION, "upgrade")
        && lists(headers, &UPGRADE, "websocket")
        && !headers.contains_key(TRANSFER_ENCODING)
        && headers.get(CONTENT_LENGTH).is_none_or(|length| length.as_bytes() == b"0"))
    .then_some(Handshake::Http1)
}

/// The handshake the endpoint gets, from the client's headers (hop-by-hop ones already stripped):
/// the upgrade put back, and for an HTTP/2 client a `Sec-WebSocket-Key` (RFC 8441 §5: HTTP/2
/// handshakes carry none, HTTP/1.1 endpoints require one).
pub(crate) fn endpoint_handshake(headers: &mut HeaderMap, handshake: Handshake) {
    restore_upgrade(headers);
    if handshake == Handshake::Http2 {
        let key: [u8; 16] = rand::random();
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        if let Ok(key) = HeaderValue::from_str(&key) {
            headers.insert(SEC_WEBSOCKET_KEY, key);
        }
    }
}

/// The endpoint's `101` as the client gets it: `101` with the upgrade headers on HTTP/1.1; `200`
/// on HTTP/2, without the headers that belong to HTTP/1.1's handshake (the key's answer).
pub(crate) fn client_switch(status: &mut StatusCode, headers: &mut HeaderMap, handshake: Handshake) {
    match handshake {
        Handshake::Http1 => restore_upgrade(headers),
        Handshake::Http2 => {
            *status = StatusCode::OK;
            headers.remove(SEC_WEBSOCKET_ACCEPT);
        }
    }
}

/// Whether the endpoint's `101` switched to WebSocket (its `Upgrade` lists `websocket`).
pub(crate) fn accepted(headers: &HeaderMap) -> bool {
    lists(headers, &UPGRADE, "websocket")
}

/// Puts the upgrade back on a handshake (request or `101`) whose hop-by-hop headers were stripped:
/// `Connection: Upgrade` and `Upgrade: websocket`, the only upgrade the gateway forwards.
fn restore_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Whether a comma-separated header lists `token` (ASCII case-insensitive).
fn lists(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(token))
}

/// Relays the two upgraded connections in a task of their own, once hyper has sent the `101` to the
/// client (`client`) and handed over the endpoint's connection (`endpoint`).
///
/// Tunnels are among the tasks draining waits for: at shutdown, an open tunnel keeps relaying until
/// either side closes or the grace period ends (then both connections are closed).
pub(crate) fn spawn_tunnel(client: OnUpgrade, endpoint: OnUpgrade, shared: &Shared, api_id: &str) {
    let metrics = shared.metrics.clone();
    let idle = shared.websocket_idle_timeout;
    let api_id = api_id.to_owned();
    shared.tasks.spawn(async move {
        let (client, endpoint) = match tokio::try_join!(client, endpoint) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(api = %api_id, %error, "WebSocket upgrade not completed");
                return;
            }
        };
        let _open = metrics.open_tunnel();
        let (mut client, mut endpoint) = (TokioIo::new(client), TokioIo::new(endpoint));
        match relay(&mut client, &mut endpoint, idle).await {
            Ok(Relayed::Closed { a_to_b, b_to_a }) => {
                tracing::debug!(api = %api_id, to_endpoint = a_to_b, to_client = b_to_a, "WebSocket tunnel closed");
            }
            Ok(Relayed::Idle) => {
                metrics.websocket_idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(api = %api_id, "WebSocket tunnel closed: idle timeout");
            }
            Err(error) => tracing::debug!(api = %api_id, %error, "WebSocket tunnel ended with an error"),
        }
        // Dropping both connections closes them.
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(connection: &str, upgrade: &str) -> Request<()> {
        Request::get("/chat")
            .version(Version::HTTP_11)
            .header(CONNECTION, connection)
            .header(UPGRADE, upgrade)
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap()
    }

    fn is_h1(req: &Request<()>) -> bool {
        requested(req) == Some(Handshake::Http1)
    }

    fn connect(protocol: &'static str) -> Request<()> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri("https://a.test/chat")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        req.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
        req
    }

    #[test]
    fn extended_connect_for_websocket_is_an_http2_handshake() {
        assert_eq!(requested(&connect("websocket")), Some(Handshake::Http2));
        assert_eq!(requested(&connect("connect-udp")), None, "other protocols are not tunnelled");
        let mut plain = connect("websocket");
        plain.extensions_mut().clear();
        assert_eq!(requested(&plain), None, "a CONNECT without :protocol is not a WebSocket");
        let mut h2_get = handshake("Upgrade", "websocket");
        *h2_get.version_mut() = Version::HTTP_2;
        assert_eq!(requested(&h2_get), None, "HTTP/2 has no Upgrade header");

        let mut headers = HeaderMap::new();
        endpoint_handshake(&mut headers, Handshake::Http2);
        let key = headers.get(SEC_WEBSOCKET_KEY).expect("a key of the gateway's own");
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).unwrap().len(), 16);
        assert!(accepted(&headers) && lists(&headers, &CONNECTION, "upgrade"));
        let mut headers = HeaderMap::new();
        endpoint_handshake(&mut headers, Handshake::Http1);
        assert!(headers.get(SEC_WEBSOCKET_KEY).is_none(), "an HTTP/1.1 client's own key is kept");

        let (mut status, mut headers) = (StatusCode::SWITCHING_PROTOCOLS, HeaderMap::new());
        headers.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        client_switch(&mut status, &mut headers, Handshake::Http2);
        assert_eq!(status, StatusCode::OK);
        assert!(headers.is_empty());
    }

    #[test]
    fn websocket_upgrades_are_recognised_in_any_case() {
        assert!(is_h1(&handshake("Upgrade", "websocket")));
        assert!(is_h1(&handshake("keep-alive, UPGRADE", "WebSocket")));
        assert!(is_h1(&handshake("upgrade", "foo, websocket")));
    }

    #[test]
    fn other_upgrades_and_other_requests_are_not_forwarded() {
        assert!(!is_h1(&handshake("Upgrade", "h2c")), "h2c stays stripped");
        assert!(!is_h1(&handshake("keep-alive", "websocket")), "Connection must name the upgrade");
        assert!(!is_h1(&handshake("Upgrade", "websockets")));
        let mut post = handshake("Upgrade", "websocket");
        *post.method_mut() = Method::POST;
        assert!(!is_h1(&post));
        let mut http10 = handshake("Upgrade", "websocket");
        *http10.version_mut() = Version::HTTP_10;
        assert!(!is_h1(&http10));
        let mut with_body = handshake("Upgrade", "websocket");
        with_body.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!is_h1(&with_body), "a handshake has no body");
        let mut empty = handshake("Upgrade", "websocket");
        empty.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(is_h1(&empty));
    }

    #[test]
    fn only_a_websocket_switch_is_accepted() {
        let mut headers = HeaderMap::new();
        assert!(!accepted(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!accepted(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(accepted(&headers));
    }
}
