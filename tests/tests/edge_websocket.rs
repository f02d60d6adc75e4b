//! WebSocket through the real dataplane, between a real WebSocket client and server
//! (tokio-tungstenite): the handshake meets the API-key plan and the request flows like any request,
//! the tunnel carries text and binary messages both ways, a close from either end reaches the other,
//! an idle tunnel is closed by `--websocket-idle-timeout`, and the handshake has its metrics record.
//! Only `websocket` upgrades are forwarded, and a TLS endpoint configured for HTTP/2 still gets its
//! handshake over HTTP/1.1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hgw_tests::gateway::{Agent, Dataplane, PROPAGATION, now_ms, report_for};
use hgw_tests::{Backend, CloudGateSim, TestCa, eventually, v4_api};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as Switched;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the echo server saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted (handshake or not).
    connections: AtomicUsize,
    /// WebSocket sessions that ended (the peer closed, or the connection went away).
    closed: AtomicUsize,
    /// The request headers of each handshake (lower-case names), in order.
    handshakes: Mutex<Vec<BTreeMap<String, String>>>,
    /// TLS only: the ALPN protocol each connection chose (`None`: the client offered none).
    alpn: Mutex<Vec<Option<String>>>,
}

/// A WebSocket server on `127.0.0.1:0` that echoes every text and binary message, but closes the
/// session on the text `server, close`. A handshake whose path ends in `/refuse` is answered `403`
/// instead of `101`.
struct EchoServer {
    addr: std::net::SocketAddr,
    https: bool,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    async fn start() -> EchoServer {
        EchoServer::start_with(None).await
    }

    /// The same over TLS with `identity`, offering `h2` and `http/1.1` by ALPN.
    async fn start_tls(identity: &hgw_tests::CertifiedKey) -> EchoServer {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        EchoServer::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        let https = tls.is_some();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Some(acceptor) = tls else {
                        return echo_session(stream, &state).await;
                    };
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let alpn = stream.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                    state.alpn.lock().unwrap().push(alpn);
                    echo_session(stream, &state).await;
                });
            }
        });
        EchoServer { addr, https, seen, task }
    }

    fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.seen.closed.load(Ordering::SeqCst)
    }

    fn handshake(&self, index: usize) -> BTreeMap<String, String> {
        self.seen.handshakes.lock().unwrap()[index].clone()
    }
}

/// One WebSocket session: the handshake (its headers noted), then echoes until the client is gone.
async fn echo_session<S>(stream: S, state: &Seen)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The signature is tungstenite's (`Callback`): its error is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        state.handshakes.lock().unwrap().push(headers);
        if request.uri().path().ends_with("/refuse") {
            let mut refused = ErrorResponse::new(Some("refused by the server".to_owned()));
            *refused.status_mut() = tungstenite::http::StatusCode::FORBIDDEN;
            return Err(refused);
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if message.to_text().is_ok_and(|text| text == "server, close") {
            // Sends its Close frame; the loop goes on until the client's answer ends the session.
            let _ = socket.close(None).await;
            continue;
        }
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
    state.closed.fetch_add(1, Ordering::SeqCst);
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a WebSocket through the dataplane at `path`, with the API key when given.
async fn open(dp: &Dataplane, path: &str, key: Option<&str>) -> Result<(Client, Switched), tungstenite::Error> {
    let url = dp.url(path).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        request.headers_mut().insert("X-Gravitee-Api-Key", key.parse().unwrap());
    }
    let (client, response) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake is answered")?;
    Ok((client, response))
}

/// The status of a refused handshake.
fn refused_status(result: Result<(Client, Switched), tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP answer, got {other}"),
        Ok((_, response)) => panic!("expected a refusal, got {}", response.status()),
    }
}

/// The next text or binary message (pings and pongs skipped), within 20 s.
async fn next_message(client: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("a message within 20 s")
            .expect("the tunnel is open")
            .expect("a valid frame");
        if message.is_text() || message.is_binary() {
            return message;
        }
    }
}

/// Waits (up to `bound`) until the connection ends: the stream ends or fails, without a message.
async fn wait_closed(client: &mut Client, bound: Duration) {
    let ended = tokio::time::timeout(bound, async {
        loop {
            match client.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => {}
                Some(Ok(message)) if message.is_ping() || message.is_pong() => {}
                Some(Ok(message)) => panic!("no message expected, got {message:?}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel was not closed within {bound:?}");
}

const KEY: &str = "ws-key-0123456789";

/// An API at `/ws` behind an API-key plan, with a transform-headers flow both ways.
fn websocket_api(target: &str) -> Value {
    let mut api = v4_api("ws", "/ws", target);
    api["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    api["flows"] = json!([
        {"name": "headers", "enabled": true, "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
         "request": [{"name": "in", "policy": "transform-headers", "enabled": true, "configuration": {
             "addHeaders": [{"name": "X-Ws-Flow", "value": "from-the-flow"}]}}],
         "response": [{"name": "out", "policy": "transform-headers", "enabled": true, "configuration": {
             "addHeaders": [{"name": "X-Served-By", "value": "hgw"}]}}]}
    ]);
    api
}

async fn gateway(dir: &std::path::Path, sim: &CloudGateSim, idle: &str) -> (Agent, Dataplane) {
    sim.put_subscription(json!({"id": "sub-1", "api": "ws", "plan": "gold", "application": "app-1",
        "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    sim.put_key(json!({"id": "key-1", "key": KEY, "subscriptions": ["sub-1"], "subscription": "sub-1",
        "api": "ws", "plan": "gold", "application": "app-1", "revoked": false, "paused": false, "updatedAt": now_ms()}))
        .await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir, "agent", sim, &token, &[]).await;
    let dp = Dataplane::start_with(dir, "dp", &agent.tcp_target(), &["--websocket-idle-timeout", idle]).await;
    dp.wait_ready().await;
    (agent, dp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_meets_the_plan_and_flows_then_tunnels_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let server = EchoServer::start().await;
    sim.put_api(websocket_api(&server.url())).await;
    let (_agent, dp) = gateway(dir.path(), &sim, "1h").await;

    // No key, or a wrong one: refused by the plan before anything reaches the server.
    assert_eq!(refused_status(open(&dp, "/ws/chat", None).await), 401);
    assert_eq!(refused_status(open(&dp, "/ws/chat", Some("not-the-key")).await), 401);
    assert_eq!(server.connections(), 0, "the server saw no connection");

    let (mut client, response) = open(&dp, "/ws/chat", Some(KEY)).await.expect("the handshake succeeds");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-served-by"], "hgw", "the response flow applies to the 101");
    assert!(response.headers().contains_key("x-gravitee-request-id"));
    let request_id = response.headers()["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let seen = server.handshake(0);
    assert_eq!(seen.get("x-ws-flow").map(String::as_str), Some("from-the-flow"), "{seen:?}");
    assert!(!seen.contains_key("x-gravitee-api-key"), "the plan strips the key: {seen:?}");
    assert_eq!(seen.get("upgrade").map(|v| v.to_ascii_lowercase()), Some("websocket".to_owned()));
    assert!(seen.contains_key("sec-websocket-key"), "{seen:?}");

    // Several messages of both kinds, both ways, in order (one larger than a copy buffer).
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let messages = vec![
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("é ünïcödé ✓"),
        Message::binary(large),
        Message::text("last"),
    ];
    for message in &messages {
        client.send(message.clone()).await.unwrap();
    }
    for message in &messages {
        assert_eq!(&next_message(&mut client).await, message);
    }

    // The client closes: the server's session ends, and so does the tunnel.
    client.close(None).await.unwrap();
    wait_closed(&mut client, Duration::from_secs(20)).await;
    eventually("the server's session ended", PROPAGATION, || async { (server.closed() == 1).then_some(()) }).await;
    eventually("the tunnel is gone", PROPAGATION, || async {
        (dp.metric("hgw_dataplane_websocket_tunnels").await == Some(0.0)).then_some(())
    })
    .await;

    // The server closes: the client sees the session end too.
    let (mut client, _) = open(&dp, "/ws/chat", Some(KEY)).await.expect("the handshake succeeds");
    client.send(Message::text("server, close")).await.unwrap();
    wait_closed(&mut client, Duration::from_secs(20)).await;
    eventually("the server's second session ended", PROPAGATION, || async { (server.closed() == 2).then_some(()) })
        .await;
    eventually("the second tunnel is gone", PROPAGATION, || async {
        (dp.metric("hgw_dataplane_websocket_tunnels").await == Some(0.0)).then_some(())
    })
    .await;

    // One metrics record for the handshake, with its 101.
    let doc = report_for(&sim, &request_id).await;
    assert_eq!((&doc["status"], &doc["plan-id"], &doc["api-id"]), (&json!(101), &json!("gold"), &json!("ws")), "{doc}");
    let same: Vec<Value> =
        sim.report_documents().await.into_iter().filter(|d| d["_id"] == request_id.as_str()).collect();
    assert_eq!(same.len(), 1, "one record for the handshake, none for the tunnel: {same:?}");
    let switched = dp.metric("hgw_dataplane_requests_total{code=\"1xx\"}").await;
    assert_eq!(switched, Some(2.0), "two handshakes answered 101");

    // A server that refuses the handshake: its answer is passed through as a normal response.
    assert_eq!(refused_status(open(&dp, "/ws/refuse", Some(KEY)).await), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let server = EchoServer::start().await;
    sim.put_api(websocket_api(&server.url())).await;
    let (_agent, dp) = gateway(dir.path(), &sim, "2s").await;

    let (mut client, _) = open(&dp, "/ws/idle", Some(KEY)).await.expect("the handshake succeeds");
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::text("still here"));
    // Then nothing: the gateway closes both connections (the bound is generous, not a speed claim).
    wait_closed(&mut client, Duration::from_secs(60)).await;
    eventually("the server's session ended", PROPAGATION, || async { (server.closed() == 1).then_some(()) }).await;
    assert_eq!(dp.metric("hgw_dataplane_websocket_idle_closed_total").await, Some(1.0));
    assert_eq!(dp.metric("hgw_dataplane_websocket_tunnels").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_keeps_working_through_the_shutdown_grace_then_closes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let server = EchoServer::start().await;
    sim.put_api(websocket_api(&server.url())).await;
    // Dataplanes in these tests drain for 5 s (`--shutdown-grace`).
    let (_agent, mut dp) = gateway(dir.path(), &sim, "1h").await;

    let (mut client, _) = open(&dp, "/ws/drain", Some(KEY)).await.expect("the handshake succeeds");
    client.send(Message::text("before")).await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::text("before"));

    dp.proc.signal(libc::SIGTERM);
    // Draining: the listener is closed at once...
    eventually("the listener is closed", Duration::from_secs(20), || async {
        TcpStream::connect(dp.listen).await.is_err().then_some(())
    })
    .await;
    // ...but the open tunnel is what the grace period is for: a second into it (by then a dataplane
    // that does not wait for tunnels has long exited), it still carries messages both ways.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.send(Message::text("while draining")).await.expect("the tunnel is open while draining");
    assert_eq!(next_message(&mut client).await, Message::text("while draining"));
    // When the grace period ends, the tunnel is closed on both sides and the dataplane exits.
    wait_closed(&mut client, Duration::from_secs(30)).await;
    eventually("the server's session ended", PROPAGATION, || async { (server.closed() == 1).then_some(()) }).await;
    let status = dp.proc.wait_exit(Duration::from_secs(30)).await.expect("the dataplane exits after the grace period");
    assert!(status.success(), "a drained shutdown is a clean exit: {status:?}");
}

/// `GET` with `headers` written byte for byte; the status and the body (read by its Content-Length:
/// the connection may stay open).
async fn raw_get(dp: &Dataplane, target: &str, headers: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(dp.listen).await.expect("connect to the dataplane");
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    socket.write_all(request.as_bytes()).await.expect("write the request");
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                let status =
                    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"));
                return (status, body.to_owned());
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(20), socket.read(&mut chunk))
            .await
            .expect("the response within 20 s")
            .expect("read the response");
        assert!(read > 0, "the connection closed before the whole response: {text}");
        response.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let server = EchoServer::start().await;
    sim.put_api(websocket_api(&server.url())).await;
    let backend = Backend::start("B").await;
    sim.put_api(v4_api("plain", "/plain", &backend.url())).await;
    let (_agent, dp) = gateway(dir.path(), &sim, "1h").await;

    // h2c (or anything but websocket) stays a hop-by-hop header: the endpoint never sees it.
    let (status, body) = raw_get(
        &dp,
        "/plain/x",
        "Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    for hop in ["upgrade", "connection", "http2-settings"] {
        assert!(echo["headers"].get(hop).is_none(), "{hop} was forwarded: {echo}");
    }
    // A websocket upgrade on a plain HTTP endpoint: forwarded, and its non-101 answer passed through.
    let (status, body) = raw_get(
        &dp,
        "/plain/y",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["upgrade"], "websocket", "{echo}");
    assert_eq!(echo["headers"]["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==", "{echo}");

    // Tokens in any case, `Connection` listing more than the upgrade (as Firefox sends it).
    let (status, _) = raw_get(
        &dp,
        "/ws/firefox",
        &format!(
            "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Gravitee-Api-Key: {KEY}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 101);
    assert_eq!(server.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_endpoint_configured_for_http2_gets_its_handshake_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let ca = TestCa::new("hgw websocket test CA").unwrap();
    let server = EchoServer::start_tls(&ca.issue_server(&["127.0.0.1", "localhost"]).unwrap()).await;
    let mut api = websocket_api(&server.url());
    api["endpointGroups"][0]["sharedConfiguration"] =
        json!({"ssl": {"trustStore": {"type": "PEM", "content": ca.cert_pem()}}, "http": {"version": "HTTP_2"}});
    sim.put_api(api).await;
    let (_agent, dp) = gateway(dir.path(), &sim, "1h").await;

    let (mut client, response) = open(&dp, "/ws/secure", Some(KEY)).await.expect("the handshake succeeds");
    assert_eq!(response.status(), 101);
    for message in [Message::text("over TLS"), Message::binary(vec![7u8; 70_000])] {
        client.send(message.clone()).await.unwrap();
        assert_eq!(next_message(&mut client).await, message);
    }
    // One TLS connection, and not h2 although the endpoint is configured for HTTP/2 (the gateway
    // offers no ALPN for a handshake, or only http/1.1).
    let alpn = server.seen.alpn.lock().unwrap().clone();
    assert!(matches!(alpn.as_slice(), [None] | [Some(_)]) && alpn[0].as_deref() != Some("h2"), "{alpn:?}");
    client.close(None).await.unwrap();
    wait_closed(&mut client, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_through_the_endpoints_http_proxy_is_tunnelled() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let proxy = hgw_tests::proxies::ForwardProxy::tinyproxy(dir.path()).await;
    let server = EchoServer::start().await;
    let mut api = websocket_api(&server.url());
    api["endpointGroups"][0]["sharedConfiguration"] = json!({"proxy": {"enabled": true, "host": "127.0.0.1",
        "port": proxy.port, "username": hgw_tests::proxies::PROXY_USER,
        "password": hgw_tests::proxies::PROXY_PASSWORD}});
    sim.put_api(api).await;
    let (_agent, dp) = gateway(dir.path(), &sim, "1h").await;

    // A proxy forwards requests, not upgraded connections: the handshake goes through CONNECT.
    let (mut client, response) = open(&dp, "/ws/proxied", Some(KEY)).await.expect("the handshake succeeds");
    assert_eq!(response.status(), 101);
    client.send(Message::text("through the proxy")).await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::text("through the proxy"));
    assert!(proxy.log().contains(&format!("CONNECT 127.0.0.1:{}", server.addr.port())), "{}", proxy.log());
    client.close(None).await.unwrap();
    wait_closed(&mut client, Duration::from_secs(20)).await;
}

/// The status and headers of an RFC 8441 handshake, and the tunnel when it succeeded.
type H2Handshake = (u16, hyper::HeaderMap, Option<WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>);

/// An RFC 8441 handshake over `sender` (an HTTP/2 connection to the dataplane): extended CONNECT
/// with `:protocol` `websocket` to `path`, with the API key when given.
async fn open_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<String>,
    dp: &Dataplane,
    path: &str,
    key: Option<&str>,
) -> H2Handshake {
    let mut request = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .version(hyper::Version::HTTP_2)
        .uri(dp.url(path))
        .header("sec-websocket-version", "13");
    if let Some(key) = key {
        request = request.header("X-Gravitee-Api-Key", key);
    }
    let mut request = request.body(String::new()).unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("the handshake is answered")
        .expect("an HTTP/2 answer");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    if status != 200 {
        return (status, headers, None);
    }
    let upgraded = hyper::upgrade::on(response).await.expect("the stream becomes the tunnel");
    let stream = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (status, headers, Some(stream))
}

/// WebSocket over HTTP/2 (RFC 8441): the dataplane announces extended CONNECT; a CONNECT with
/// `:protocol` `websocket` meets the plan and flows as the GET it stands for, the endpoint gets an
/// HTTP/1.1 handshake with a key, the client gets `200` and its stream carries the frames both
/// ways; other streams of the connection keep working beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let server = EchoServer::start().await;
    sim.put_api(websocket_api(&server.url())).await;
    let (_agent, dp) = gateway(dir.path(), &sim, "1h").await;

    // h2c with prior knowledge, the way a sidecar's local clients speak HTTP/2.
    let tcp = TcpStream::connect(dp.listen).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    // A first request lets the server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive.
    let plain = hyper::Request::get(dp.url("/ws/plain")).header("X-Gravitee-Api-Key", KEY);
    let plain = sender.send_request(plain.body(String::new()).unwrap()).await.unwrap();

    let (status, _, _) = open_h2(&mut sender, &dp, "/ws/chat", None).await;
    assert_eq!(status, 401, "no key: refused by the plan");
    let (status, headers, tunnel) = open_h2(&mut sender, &dp, "/ws/chat", Some(KEY)).await;
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(headers["x-served-by"], "hgw", "the response flow applies to the handshake");
    assert!(!headers.contains_key("sec-websocket-accept"), "HTTP/1.1's key answer is not relayed");
    let request_id = headers["x-gravitee-request-id"].to_str().unwrap().to_owned();
    let mut client = tunnel.unwrap();
    let seen = server.handshake(0);
    assert_eq!(seen.get("x-ws-flow").map(String::as_str), Some("from-the-flow"), "{seen:?}");
    assert!(seen.get("sec-websocket-key").is_some_and(|k| k.len() == 24), "the gateway's own key: {seen:?}");
    assert_eq!(seen.get("upgrade").map(|v| v.to_ascii_lowercase()), Some("websocket".to_owned()));

    let large: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    for message in [Message::text("over h2"), Message::binary(large)] {
        client.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(20), client.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    // The connection's other streams are not held up by the tunnel.
    let again = hyper::Request::get(dp.url("/ws/plain")).header("X-Gravitee-Api-Key", KEY);
    let again = sender.send_request(again.body(String::new()).unwrap()).await.unwrap();
    assert_eq!(again.status(), plain.status(), "answered beside the open tunnel");

    client.close(None).await.unwrap();
    eventually("the server's session ended", PROPAGATION, || async { (server.closed() == 1).then_some(()) }).await;
    eventually("the tunnel is gone", PROPAGATION, || async {
        (dp.metric("hgw_dataplane_websocket_tunnels").await == Some(0.0)).then_some(())
    })
    .await;
    let doc = report_for(&sim, &request_id).await;
    assert_eq!((&doc["status"], &doc["http-method"]), (&json!(200), &json!(3)), "{doc}");

    // Other CONNECTs (another :protocol, or a plain one) are not tunnelled anywhere.
    let connections = server.connections();
    for protocol in [Some("connect-udp"), None] {
        let mut request = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .version(hyper::Version::HTTP_2)
            .uri(dp.url("/ws/chat"))
            .header("X-Gravitee-Api-Key", KEY)
            .body(String::new())
            .unwrap();
        if let Some(protocol) = protocol {
            request.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
        } else {
            *request.uri_mut() = format!("{}", dp.listen).parse().unwrap();
        }
        let answer = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request)).await.unwrap();
        let status = answer.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
        assert_eq!(status, Ok(501), "{protocol:?}: not implemented");
    }
    assert_eq!(server.connections(), connections, "the endpoint saw none of them");
}
