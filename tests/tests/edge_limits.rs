//! The listener's limits, each tripped by a real client with its documented answer: oversized header
//! blocks (431), long request lines (414), missing or repeated Host (400), silent and slow clients
//! (closed after the header timeout), more connections than `--max-connections` (shed and counted), and
//! request bodies that are malformed or stall (400 / 408) — which never open an endpoint's circuit.
//! Requests are written byte for byte on TCP sockets to the real dataplane.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane};
use hgw_tests::{Backend, CloudGateSim, eventually, v4_api};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: only a dataplane that never closes the connection fails it.
const CLOSE_WITHIN: Duration = Duration::from_secs(30);

/// Writes `request` and reads until the dataplane closes; the status (0 when it closed without one)
/// and the whole response.
async fn exchange(addr: &str, request: &[u8]) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.expect("connect to the dataplane");
    // A shed connection may be reset before the request is written: that reads as no answer.
    let _ = socket.write_all(request).await;
    read_all(&mut socket).await
}

async fn read_all(socket: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    let read = tokio::time::timeout(CLOSE_WITHIN, socket.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the dataplane kept the connection open: {}", String::from_utf8_lossy(&response));
    let text = String::from_utf8_lossy(&response).into_owned();
    (text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_answers_with_its_status_and_client_faults_never_open_a_circuit() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    sim.put_api(v4_api("plain", "/plain", &backend.url())).await;
    // One endpoint whose circuit opens after 2 failures in a row (then 503 for a minute).
    let mut fragile = v4_api("fragile", "/fragile", &backend.url());
    fragile["failover"] = json!({"enabled": true, "maxRetries": 1, "maxFailures": 2, "openStateDuration": 60000});
    sim.put_api(fragile).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let flags = ["--max-connections", "4", "--client-header-timeout", "2s", "--request-body-timeout", "1s"];
    let dp = Dataplane::start_with(dir.path(), "dp", &agent.tcp_target(), &flags).await;
    dp.wait_ready().await;
    let addr = dp.url("").trim_start_matches("http://").to_owned();
    let host = "Host: localhost\r\n";

    let (status, text) = exchange(&addr, &get("/plain/x", host)).await;
    assert_eq!(status, 200, "{text}");

    // Header block: 8 KiB is Gravitee's http.maxHeaderSize.
    let big = format!("{host}X-Big: {}\r\n", "a".repeat(9000));
    assert_eq!(exchange(&addr, &get("/plain/x", &big)).await.0, 431);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(exchange(&addr, &get("/plain/x", &format!("{host}{many}"))).await.0, 431);
    let within = format!("{host}X-Big: {}\r\n", "a".repeat(7000));
    assert_eq!(exchange(&addr, &get("/plain/x", &within)).await.0, 200);
    // Request line: 4 KiB is Gravitee's http.maxInitialLineLength.
    let long = format!("/plain/{}", "b".repeat(4100));
    let (status, text) = exchange(&addr, &get(&long, host)).await;
    assert_eq!(status, 414, "{text}");
    assert!(text.contains("\"http_status_code\":414"), "Gravitee's error form: {text}");
    // Host: exactly one on HTTP/1.1 (RFC 9112 §3.2).
    assert_eq!(exchange(&addr, &get("/plain/x", "")).await.0, 400);
    assert_eq!(exchange(&addr, &get("/plain/x", "Host: localhost\r\nHost: evil.example\r\n")).await.0, 400);
    assert_eq!(exchange(&addr, b"GET /plain/x HTTP/1.0\r\n\r\n").await.0, 200, "HTTP/1.0 may omit Host");
    assert!(dp.metric("hgw_dataplane_requests_malformed_total").await.unwrap_or(0.0) >= 3.0);

    // Line endings: CRLF only, in the request line, header fields, the empty line and chunk framing
    // (RFC 9112 §2.2 lets a server refuse a bare LF). Body bytes are the body's: a LF there is data.
    for bare in [
        &b"GET /plain/x HTTP/1.1\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        b"GET /plain/x HTTP/1.1\r\nHost: localhost\nConnection: close\r\n\r\n",
        b"GET /plain/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\n",
        b"POST /plain/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\nhello\r\n0\r\n\r\n",
    ] {
        let (status, text) = exchange(&addr, bare).await;
        assert_eq!(status, 400, "a bare LF is refused: {} → {text}", String::from_utf8_lossy(bare));
    }
    // The second request of a kept-alive connection is held to the same rule.
    let (_, text) = exchange(
        &addr,
        b"GET /plain/x HTTP/1.1\r\nHost: localhost\r\n\r\nGET /plain/y HTTP/1.1\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 400"), "the pipelined bare-LF request is refused: {text}");
    let lf_body = b"POST /plain/x?echo_body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\nConnection: close\r\n\r\na\nb\nc\n\n";
    let (status, text) = exchange(&addr, lf_body).await;
    assert_eq!(status, 200, "LFs in a body are data: {text}");
    assert!(text.contains("\r\n\r\na\nb\nc\n\n"), "the backend got the body as sent: {text}");

    // Client faults, more than the circuit allows: none of them is the endpoint's.
    let seen_before = backend.requests();
    for _ in 0..3 {
        let bad_chunk = b"POST /fragile/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
        let (status, text) = exchange(&addr, bad_chunk).await;
        assert_eq!(status, 400, "a malformed body is the client's fault: {text}");
        // A small body that stops arriving: failover buffers it, at most --request-body-timeout.
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket
            .write_all(b"POST /fragile/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly ten b")
            .await
            .unwrap();
        let (status, text) = read_all(&mut socket).await;
        assert_eq!(status, 408, "a stalled body: {text}");
        // The same through a streamed (chunked) body the endpoint is reading.
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket
            .write_all(b"POST /plain/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        let (status, text) = read_all(&mut socket).await;
        assert_eq!(status, 408, "a stalled streamed body: {text}");
    }
    let post = b"POST /fragile/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (status, text) = exchange(&addr, post).await;
    assert_eq!(status, 200, "the endpoint's circuit is still closed: {text}");
    assert!(backend.requests() > seen_before, "the good request reached the backend");

    // A client that connects and says nothing, or half a header block, is closed after the header
    // timeout (2 s here), as is one that starts an HTTP/2 preface and stops.
    for opening in [&b""[..], b"GET /plain/x HTTP/1.1\r\nHost: loc", b"PRI * HTTP/2.0\r\n"] {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(opening).await.unwrap();
        let (status, text) = read_all(&mut socket).await;
        assert!(status == 0 || status == 408, "closed without an answer: {text}");
    }

    // Four connections busy with slow requests: a fifth is shed (closed at once), counted, and
    // served again once one of the four goes.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(&get("/plain/x?sleep_ms=120000", host)).await.unwrap();
        held.push(socket);
    }
    eventually("four connections open", CLOSE_WITHIN, || async {
        (dp.metric("hgw_dataplane_connections_open").await == Some(4.0)).then_some(())
    })
    .await;
    let (status, _) = exchange(&addr, &get("/plain/x", host)).await;
    assert_eq!(status, 0, "the fifth connection is closed without an answer");
    assert!(dp.metric("hgw_dataplane_connections_shed_total").await.unwrap_or(0.0) >= 1.0);
    drop(held);
    let status = eventually("a slot is free again", CLOSE_WITHIN, || async {
        let (status, _) = exchange(&addr, &get("/plain/x", host)).await;
        (status == 200).then_some(status)
    })
    .await;
    assert_eq!(status, 200);
}

/// An HTTP/2 connection (h2c) through hyper's client: `GET` on it, the status.
async fn h2_get(sender: &mut hyper::client::conn::http2::SendRequest<String>, uri: &str) -> u16 {
    let request = hyper::Request::get(uri).body(String::new()).unwrap();
    let response =
        tokio::time::timeout(CLOSE_WITHIN, sender.send_request(request)).await.expect("answered").expect("a response");
    // The body is small and not needed: dropping it ends the stream.
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_streams_is_closed_even_while_it_answers_pings() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    sim.put_api(v4_api("plain", "/plain", &backend.url())).await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    // Pinged every second (hyper's client answers pings), idle after 3 s without a stream.
    let flags = ["--http2-keepalive", "1s", "--http2-idle-timeout", "3s"];
    let dp = Dataplane::start_with(dir.path(), "dp", &agent.tcp_target(), &flags).await;
    dp.wait_ready().await;
    let base = dp.url("");

    let connect = || async {
        let socket = TcpStream::connect(dp.listen).await.unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(socket),
        )
        .await
        .expect("HTTP/2 handshake");
        (sender, tokio::spawn(connection))
    };

    // A stream longer than the idle timeout keeps the connection: its answer arrives whole.
    let (mut sender, connection) = connect().await;
    assert_eq!(h2_get(&mut sender, &format!("{base}/plain/slow?sleep_ms=6000")).await, 200);
    assert!(!connection.is_finished(), "the connection served a 6 s stream with a 3 s idle timeout");
    assert_eq!(h2_get(&mut sender, &format!("{base}/plain/again")).await, 200);
    // Then no stream: the dataplane sends a GOAWAY and closes (the bound is generous, not a speed claim).
    let ended = tokio::time::timeout(CLOSE_WITHIN, connection).await;
    assert!(ended.is_ok(), "an HTTP/2 connection with no stream open stayed open while answering pings");
    assert!(sender.is_closed());
    assert_eq!(dp.metric("hgw_dataplane_http2_idle_closed_total").await, Some(1.0));

    // A connection that never opened a stream goes the same way.
    let (_sender, connection) = connect().await;
    assert!(
        tokio::time::timeout(CLOSE_WITHIN, connection).await.is_ok(),
        "a connection without any stream stayed open"
    );
    assert_eq!(dp.metric("hgw_dataplane_http2_idle_closed_total").await, Some(2.0));
    eventually("both connections are gone", CLOSE_WITHIN, || async {
        (dp.metric("hgw_dataplane_connections_open").await == Some(0.0)).then_some(())
    })
    .await;
}
