//! WebSocket through the gateway. The handshake is an ordinary request for every phase (routing,
//! plan and security, request flows, the endpoint call, response flows, its metrics record), with
//! two differences: `Connection: Upgrade` and `Upgrade: websocket` reach the endpoint instead of
//! being stripped as hop-by-hop headers, and the endpoint is called on an HTTP/1.1 connection of its
//! own. When the endpoint answers `101`, the client gets the `101` with the endpoint's handshake
//! headers, and both connections become one byte [`tunnel`](crate::http::tunnel) until either side
//! closes or nothing moves for `--websocket-idle-timeout`.
//!
//! Only `websocket` is forwarded: any other `Upgrade` (`h2c`, `TLS/1.0`, …) is still stripped, so a
//! client cannot switch the endpoint connection to a protocol the gateway does not know. WebSocket
//! over HTTP/2 (RFC 8441, extended CONNECT) is not offered: the HTTP/2 server does not announce
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so clients keep to HTTP/1.1, and a request that sends
//! `:protocol` anyway is reset by the HTTP/2 layer at once.
//!
//! The handshake's metrics record (status `101`) is emitted when the `101` is sent, like any
//! response whose body has ended; the tunnel's life after that is in `/metrics`
//! (`hgw_dataplane_websocket_tunnels`, `hgw_dataplane_websocket_idle_closed_total`).

use std::sync::atomic::Ordering;

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Shared;
use crate::http::tunnel::{Relayed, relay};

/// Whether `req` asks for a WebSocket upgrade the gateway forwards: an HTTP/1.1 `GET` whose
/// `Connection` lists `upgrade` and whose `Upgrade` lists `websocket` (tokens in any case, RFC 6455
/// §4.1), without a body (a handshake has none; a request with one is forwarded as a plain request,
/// its upgrade headers stripped).
pub(crate) fn requested<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && lists(headers, &CONNECTION, "upgrade")
        && lists(headers, &UPGRADE, "websocket")
        && !headers.contains_key(TRANSFER_ENCODING)
        && headers.get(CONTENT_LENGTH).is_none_or(|length| length.as_bytes() == b"0")
}

/// Whether the endpoint's `101` switched to WebSocket (its `Upgrade` lists `websocket`).
pub(crate) fn accepted(headers: &HeaderMap) -> bool {
    lists(headers, &UPGRADE, "websocket")
}

/// Puts the upgrade back on a handshake (request or `101`) whose hop-by-hop headers were stripped:
/// `Connection: Upgrade` and `Upgrade: websocket`, the only upgrade the gateway forwards.
pub(crate) fn restore_upgrade(headers: &mut HeaderMap) {
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

    #[test]
    fn websocket_upgrades_are_recognised_in_any_case() {
        assert!(requested(&handshake("Upgrade", "websocket")));
        assert!(requested(&handshake("keep-alive, UPGRADE", "WebSocket")));
        assert!(requested(&handshake("upgrade", "foo, websocket")));
    }

    #[test]
    fn other_upgrades_and_other_requests_are_not_forwarded() {
        assert!(!requested(&handshake("Upgrade", "h2c")), "h2c stays stripped");
        assert!(!requested(&handshake("keep-alive", "websocket")), "Connection must name the upgrade");
        assert!(!requested(&handshake("Upgrade", "websockets")));
        let mut post = handshake("Upgrade", "websocket");
        *post.method_mut() = Method::POST;
        assert!(!requested(&post));
        let mut http10 = handshake("Upgrade", "websocket");
        *http10.version_mut() = Version::HTTP_10;
        assert!(!requested(&http10));
        let mut with_body = handshake("Upgrade", "websocket");
        with_body.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!requested(&with_body), "a handshake has no body");
        let mut empty = handshake("Upgrade", "websocket");
        empty.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(requested(&empty));
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
