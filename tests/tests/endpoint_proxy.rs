//! Endpoints called through a forward proxy (Gravitee's endpoint `proxy`), against real proxies:
//! tinyproxy (HTTP: `http://` requests forwarded in absolute form with Basic credentials, `https://`
//! through CONNECT), microsocks (SOCKS5 with username/password) and Dante (SOCKS4). Definitions go
//! through the Cloud Gate emulator to the agent and a dataplane, v4 and v2 forms. A proxy that is
//! down, or refuses the credentials, fails the call; the proxy's password is never shown.

use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, Reply, get};
use hgw_tests::proxies::{ForwardProxy, PROXY_PASSWORD, PROXY_USER};
use hgw_tests::{Backend, CloudGateSim, TestCa, v2_api, v4_api};
use serde_json::{Value, json};

struct Gateway {
    agent: Agent,
    dp: Dataplane,
    client: reqwest::Client,
}

impl Gateway {
    async fn start(dir: &std::path::Path, sim: &CloudGateSim) -> Gateway {
        let token = sim.token().await;
        let agent = Agent::start_cloud(dir, "agent", sim, &token, &[]).await;
        let dp = Dataplane::start(dir, "dp", &agent.unix_target()).await;
        dp.wait_ready().await;
        Gateway { agent, dp, client: reqwest::Client::new() }
    }

    async fn get(&self, path: &str) -> Reply {
        get(&self.client, &self.dp.url(path)).await.expect("the dataplane answers")
    }

    /// Checks that `secret` appears in no view and no log of the agent or the dataplane.
    async fn assert_never_shown(&self, secret: &str) {
        let config = self.dp.config().await.to_string();
        assert!(!config.contains(secret), "the dataplane's /config shows the proxy password: {config}");
        let (_, apis) = self.agent.node_get("/_node/apis").await;
        assert!(!apis.to_string().contains(secret), "/_node/apis shows the proxy password");
        for (name, log) in [
            ("agent", self.agent.proc.stdout() + &self.agent.proc.stderr()),
            ("dataplane", self.dp.proc.stdout() + &self.dp.proc.stderr()),
        ] {
            assert!(!log.contains(secret), "the {name} logged the proxy password");
        }
    }
}

/// A v4 API at `/{id}` to `target` whose endpoint group goes through `proxy`; `ssl` is added to the
/// shared configuration when given.
fn through(id: &str, target: &str, proxy: Value, ssl: Option<Value>) -> Value {
    let mut api = v4_api(id, &format!("/{id}"), target);
    let mut shared = json!({"proxy": proxy});
    if let Some(ssl) = ssl {
        shared["ssl"] = ssl;
    }
    api["endpointGroups"][0]["sharedConfiguration"] = shared;
    api
}

fn proxy(kind: &str, port: u16, user: &str, password: &str) -> Value {
    json!({"enabled": true, "useSystemProxy": false, "type": kind, "host": "127.0.0.1", "port": port,
        "username": user, "password": password})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_proxy_forwards_http_and_tunnels_https() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let tinyproxy = ForwardProxy::tinyproxy(dir.path()).await;
    let plain = Backend::start("plain").await;
    let ca = TestCa::new("hgw proxy test CA").unwrap();
    let secure = Backend::start_tls("secure", &ca.issue_server(&["127.0.0.1"]).unwrap()).await;
    let trust = json!({"trustStore": {"type": "PEM", "content": ca.cert_pem()}});
    let good = proxy("HTTP", tinyproxy.port, PROXY_USER, PROXY_PASSWORD);

    sim.put_api(through("fwd", &format!("{}/base", plain.url()), good.clone(), None)).await;
    sim.put_api(through("tls", &secure.url(), good.clone(), Some(trust))).await;
    sim.put_api(through("wrong", &plain.url(), proxy("HTTP", tinyproxy.port, PROXY_USER, "not-it"), None)).await;
    // v2: the endpoint's own `proxy` (so not inheriting its group's settings), the user as
    // `principal`, no `type` (HTTP is the default).
    let mut legacy = v2_api("legacy", "/legacy", &plain.url());
    legacy["proxy"]["groups"][0]["endpoints"][0]["inherit"] = json!(false);
    legacy["proxy"]["groups"][0]["endpoints"][0]["proxy"] = json!({"enabled": true, "host": "127.0.0.1",
        "port": tinyproxy.port, "principal": PROXY_USER, "password": PROXY_PASSWORD});
    sim.put_api(legacy).await;
    let mut system = v4_api("system", "/system", &plain.url());
    system["endpointGroups"][0]["sharedConfiguration"] = json!({"proxy": {"enabled": true, "useSystemProxy": true}});
    sim.put_api(system).await;

    let gw = Gateway::start(dir.path(), &sim).await;
    for path in ["/fwd", "/tls", "/wrong", "/legacy"] {
        gw.dp.wait_deployed(path).await;
    }

    // http:// through the proxy: absolute form (tinyproxy refuses anything else), its Via header, the
    // credentials consumed by the proxy.
    let reply = gw.get("/fwd/items?q=1").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    assert_eq!((echo["backend"].as_str(), echo["path"].as_str()), (Some("plain"), Some("/base/items")));
    let via = echo["headers"]["via"].as_str().unwrap_or_default();
    assert!(via.contains("tinyproxy"), "the request did not come through the proxy: {echo}");
    assert!(echo["headers"].get("proxy-authorization").is_none(), "{echo}");
    assert!(tinyproxy.log().contains(&format!("GET http://127.0.0.1:{}/base/items?q=1", plain.addr.port())));

    // https:// through CONNECT, TLS to the endpoint inside the tunnel (its certificate verified).
    let reply = gw.get("/tls/secret").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["backend"], "secure");
    assert!(tinyproxy.log().contains(&format!("CONNECT 127.0.0.1:{}", secure.addr.port())), "{}", tinyproxy.log());

    // v2's `principal` form.
    let reply = gw.get("/legacy/x").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json()["headers"]["via"].as_str().unwrap_or_default().contains("tinyproxy"));

    // Credentials the proxy refuses: its answer is the answer (Vert.x's client passes it on), and the
    // endpoint never sees the request.
    let before = plain.requests();
    let reply = gw.get("/wrong/x").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(plain.requests(), before, "a refused request reached the endpoint");

    // `useSystemProxy`: hgw has no gateway-wide proxy, so the API is refused, not called directly.
    let reason = gw.agent.rejection("system").await;
    assert!(reason.contains("useSystemProxy") && reason.contains("no system proxy"), "{reason}");

    gw.assert_never_shown(PROXY_PASSWORD).await;

    // The proxy gone: the endpoint is up, yet the call fails (never around the proxy).
    drop(tinyproxy);
    let before = plain.requests();
    let reply = gw.get("/fwd/items").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let reply = gw.get("/tls/secret").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(plain.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_proxies_carry_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let microsocks = ForwardProxy::microsocks(dir.path()).await;
    let dante = ForwardProxy::dante(dir.path()).await;
    let plain = Backend::start("plain").await;
    let ca = TestCa::new("hgw socks test CA").unwrap();
    let secure = Backend::start_tls("secure", &ca.issue_server(&["127.0.0.1"]).unwrap()).await;
    let trust = json!({"trustStore": {"type": "PEM", "content": ca.cert_pem()}});

    let socks5 = proxy("SOCKS5", microsocks.port, PROXY_USER, PROXY_PASSWORD);
    sim.put_api(through("s5", &plain.url(), socks5.clone(), None)).await;
    sim.put_api(through("s5tls", &secure.url(), socks5, Some(trust))).await;
    sim.put_api(through("s5bad", &plain.url(), proxy("SOCKS5", microsocks.port, PROXY_USER, "not-it"), None)).await;
    sim.put_api(through("s4", &plain.url(), proxy("SOCKS4", dante.port, "", ""), None)).await;

    let gw = Gateway::start(dir.path(), &sim).await;
    for path in ["/s5", "/s5tls", "/s5bad", "/s4"] {
        gw.dp.wait_deployed(path).await;
    }

    let reply = gw.get("/s5/a").await;
    assert_eq!((reply.status, reply.json()["backend"].as_str()), (200, Some("plain")), "{}", reply.body);
    assert!(
        microsocks.log().contains(&format!("connected to 127.0.0.1:{}", plain.addr.port())),
        "microsocks did not carry the connection: {}",
        microsocks.log()
    );
    let reply = gw.get("/s5tls/a").await;
    assert_eq!((reply.status, reply.json()["backend"].as_str()), (200, Some("secure")), "{}", reply.body);
    assert!(microsocks.log().contains(&format!("connected to 127.0.0.1:{}", secure.addr.port())));

    // Refused credentials: no connection, so a 502 and nothing at the endpoint.
    let before = plain.requests();
    let reply = gw.get("/s5bad/a").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(plain.requests(), before);

    let reply = gw.get("/s4/a").await;
    assert_eq!((reply.status, reply.json()["backend"].as_str()), (200, Some("plain")), "{}", reply.body);

    gw.assert_never_shown(PROXY_PASSWORD).await;

    // Each proxy gone: its APIs fail while the endpoints are up.
    drop(dante);
    drop(microsocks);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = plain.requests();
    for path in ["/s4/b", "/s5/b", "/s5tls/b"] {
        let reply = gw.get(path).await;
        assert_eq!(reply.status, 502, "{path}: {}", reply.body);
    }
    assert_eq!(plain.requests(), before);
}
