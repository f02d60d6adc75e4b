//! Every spelling of a path is the same path: encoded letters, `.` and `..` segments and doubled slashes
//! reach the flows and plans of the path they spell, encoded separators and escapes out of the root are
//! refused, and the endpoint receives the path the gateway decided on. Requests are written byte for
//! byte on a TCP socket (an HTTP client library would normalise them first) to the real dataplane, and
//! over HTTP/2 by curl with `--path-as-is`.

use hgw_tests::gateway::{Dataplane, cloud_gateway, now_ms};
use hgw_tests::{Backend, CloudGateSim, v4_api};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET with `target` exactly as given; the status and the body (the response is not chunked: the
/// backend and the gateway's own answers have a length).
async fn raw_get(addr: &str, target: &str, headers: &str) -> (u16, String) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect to the dataplane");
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write the request");
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.expect("read the response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_path_slips_past_its_flows_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("B").await;
    // `/pub/admin` is closed to 127.0.0.1 by a flow; the rest of `/pub` is open.
    let mut public = v4_api("pub", "/pub", &backend.url());
    public["flows"] = json!([
        {"name": "admin", "selectors": [{"type": "http", "path": "/admin", "pathOperator": "STARTS_WITH"}],
         "request": [{"policy": "ip-filtering", "configuration": {"whitelistIps": ["10.0.0.0/8"]}}]}
    ]);
    sim.put_api(public).await;
    // A sibling API behind an API key, next to a key-less one.
    sim.put_api(v4_api("open", "/open", &backend.url())).await;
    let mut secured = v4_api("secured", "/secured", &backend.url());
    secured["plans"] = json!([{"id": "gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}}, "status": "PUBLISHED"}]);
    sim.put_api(secured).await;
    sim.put_subscription(json!({"id": "sub-1", "api": "secured", "plan": "gold", "application": "app-1",
        "status": "ACCEPTED", "updatedAt": now_ms()}))
        .await;
    sim.put_key(json!({"id": "key-1", "key": "edge-key", "subscriptions": ["sub-1"], "subscription": "sub-1",
        "api": "secured", "plan": "gold", "application": "app-1", "revoked": false, "paused": false, "updatedAt": now_ms()}))
        .await;
    let (agent, dp) = cloud_gateway(dir.path(), &sim).await;
    let addr = dp.url("").trim_start_matches("http://").to_owned();

    let (status, body) = raw_get(&addr, "/pub/admin/", "").await;
    assert_eq!(status, 403, "the flow applies to the plain spelling: {body}");
    for spelling in [
        "/pub/%61dmin/",
        "/pub/%61%64%6d%69%6e/",
        "/pub/./admin/",
        "/pub/x/../admin/",
        "/pub/x/%2e%2e/admin/",
        "/pub//admin/",
    ] {
        let (status, body) = raw_get(&addr, spelling, "").await;
        assert_eq!(status, 403, "{spelling} is /pub/admin/ and meets its flow: {body}");
    }
    for refused in ["/pub/admin%2F", "/pub/admin%2f", "/pub%5Cadmin", "/pub/../../etc/passwd", "/pub/%zz"] {
        let (status, body) = raw_get(&addr, refused, "").await;
        assert_eq!(status, 400, "{refused}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{refused}: a JSON error: {body}"));
        assert_eq!(error["http_status_code"], 400);
    }
    // The same spellings over HTTP/2 (h2c), sent as written by curl (`--path-as-is`).
    for (spelling, expected) in [
        ("/pub/%61dmin/", "403"),
        ("/pub/./admin/", "403"),
        ("/pub/x/../admin/", "403"),
        ("/pub//admin/", "403"),
        ("/pub/admin%2F", "400"),
        ("/pub/../secret/", "400"),
    ] {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--max-time", "10"])
            .args(["--http2-prior-knowledge", "--path-as-is", &format!("http://{addr}{spelling}")])
            .output()
            .await
            .expect("curl is installed");
        let out = String::from_utf8_lossy(&output.stdout);
        assert_eq!(out, format!("2 {expected}"), "HTTP/2 {spelling}: {}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(backend.requests(), 0, "none of these reached the backend");

    // The endpoint gets the path the gateway routed, not the client's spelling.
    let (status, body) = raw_get(&addr, "/pub/x/../%61bout/./us?q=%2F", "").await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((echo["path"].as_str(), echo["query"].as_str()), (Some("/about/us"), Some("q=%2F")), "{echo}");

    // `..` may move inside an API, not out of the one the path was spelled in.
    for (escape, headers) in [
        ("/open/../secured/x", ""),
        ("/open/../secured/x", "X-Gravitee-Api-Key: edge-key\r\n"),
        ("/pub/../nowhere/", ""),
        ("/pub/%2e%2e/open/", ""),
    ] {
        let (status, body) = raw_get(&addr, escape, headers).await;
        assert_eq!(status, 400, "{escape} leaves its API: {body}");
    }
    let (status, body) = raw_get(&addr, "/nowhere/../pub/x/", "").await;
    assert_eq!(status, 200, "from no API into one: {body}");
    assert_eq!(backend.requests(), 2, "only the two paths inside an API reached the backend");
    let (status, _) = raw_get(&addr, "/secured/x", "X-Gravitee-Api-Key: edge-key\r\n").await;
    assert_eq!(status, 200, "the sibling itself answers");
    let (status, body) = raw_get(&addr, "/nowhere/", "").await;
    assert_eq!((status, body.as_str()), (404, "No context-path matches the request URI."));

    // The opt-outs: `%2F` kept encoded (part of its segment) and `//` kept, for backends that need them.
    let kept = Dataplane::start_with(
        dir.path(),
        "dp-keep",
        &agent.tcp_target(),
        &["--escaped-slashes", "keep", "--merge-slashes", "false"],
    )
    .await;
    kept.wait_ready().await;
    let kept_addr = kept.url("").trim_start_matches("http://").to_owned();
    for (sent, forwarded) in [("/open/a%2fb//c", "/a%2Fb//c"), ("/open/x/..//y", "//y")] {
        let (status, body) = raw_get(&kept_addr, sent, "").await;
        assert_eq!(status, 200, "{sent}: {body}");
        let echo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echo["path"].as_str(), Some(forwarded), "{sent}: {echo}");
    }
    // The trade-off `keep` makes (README): `admin%2F` is one segment, not `/admin/`, for the flows too.
    let (status, body) = raw_get(&kept_addr, "/pub/admin%2F", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["path"], "/admin%2F");
}
