//! Client certificates on the gateway port and Gravitee v4 mTLS plans, end to end: the real dataplane
//! asks HTTPS clients for a certificate (`--tls-client-auth request|required` with a PEM truststore),
//! refuses missing or untrusted ones in the handshake when they are required, and admits a request to
//! an mTLS plan only with the certificate of an application subscribed to it (Gravitee's
//! subscription `clientCertificate`, synced from the Cloud Gate), naming that application and
//! subscription in analytics. Unusable settings exit 64.
//!
//! Clients: a rustls client in the test (with or without a certificate, verifying the server against
//! the test CA) and curl `--cert/--key`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hgw_tests::gateway::{Agent, Dataplane, dataplane_exit, now_ms, report_for};
use hgw_tests::{Backend, CertifiedKey, CloudGateSim, TestCa, v4_api};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

/// The name the dataplane's server certificate is issued for.
const HOST: &str = "mtls.test";

/// Files of one test: the CA the clients are checked against, the server's certificate.
struct Pki {
    dir: PathBuf,
    ca: TestCa,
    ca_pem: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca = TestCa::new("hgw mTLS test CA").unwrap();
    let ca_pem = dir.join("clients-ca.pem");
    std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
    let server = ca.issue_server(&[HOST]).unwrap();
    let (server_cert, server_key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&server_cert, &server.cert_pem).unwrap();
    std::fs::write(&server_key, &server.key_pem).unwrap();
    Pki { dir: dir.to_owned(), ca, ca_pem, server_cert, server_key }
}

impl Pki {
    /// The dataplane flags serving HTTPS with the server certificate and `client_auth`.
    fn flags(&self, client_auth: &str) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.server_cert),
            "--tls-key".into(),
            path(&self.server_key),
            "--tls-client-auth".into(),
            client_auth.into(),
            "--tls-truststore".into(),
            path(&self.ca_pem),
        ]
    }

    /// Writes a client's certificate and key for curl: `(cert file, key file)`.
    fn client_files(&self, label: &str, client: &CertifiedKey) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.dir.join(format!("{label}.crt")), self.dir.join(format!("{label}.key")));
        std::fs::write(&cert, &client.cert_pem).unwrap();
        std::fs::write(&key, &client.key_pem).unwrap();
        (cert, key)
    }
}

/// One `GET path` over a new HTTPS connection presenting `identity` (none: no client certificate):
/// the status and the request id, or why no response came (a refused handshake shows here: with
/// TLS 1.3 the client learns of the refusal on its first read).
async fn get(
    addr: SocketAddr,
    ca: &TestCa,
    identity: Option<&CertifiedKey>,
    path: &str,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("http: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path).header("host", HOST).body(String::new()).unwrap();
        let response = sender.send_request(request).await.map_err(|e| format!("request: {e:?}"))?;
        let id =
            response.headers().get("x-gravitee-request-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        Ok((response.status().as_u16(), id))
    };
    tokio::time::timeout(Duration::from_secs(15), attempt).await.map_err(|_| "timed out".to_owned())?
}

/// `curl` to `path` with the client certificate `identity` (cert, key files) if any: the status
/// (`000` when the TLS session failed) and curl's stderr.
async fn curl(addr: SocketAddr, ca: &Path, identity: Option<&(PathBuf, PathBuf)>, path: &str) -> (String, String) {
    let url = format!("https://{HOST}:{}{path}", addr.port());
    let resolve = format!("{HOST}:{}:{}", addr.port(), addr.ip());
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--http1.1"]);
    command.args(["--resolve", &resolve, "--cacert", ca.to_str().unwrap(), &url]);
    if let Some((cert, key)) = identity {
        command.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    }
    let output = command.output().await.expect("curl is installed");
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A local agent serving one key-less API, and a dataplane with `flags`.
async fn keyless_gateway(dir: &Path, label: &str, flags: &[String]) -> (Agent, Dataplane, Backend) {
    let apis = dir.join(format!("{label}-apis"));
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start(label).await;
    std::fs::write(apis.join("api.json"), v4_api("open", "/open", &backend.url()).to_string()).unwrap();
    let reports = dir.join(format!("{label}-reports.ndjson"));
    let agent = Agent::start_local(dir, &format!("{label}-agent"), &apis, &reports, &[]).await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dp = Dataplane::start_with(dir, &format!("{label}-dp"), agent.unix_target().as_str(), &flags).await;
    dp.wait_ready().await;
    (agent, dp, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_are_checked_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let trusted = pki.ca.issue_client("client-a").unwrap();
    let other_ca = TestCa::new("some other CA").unwrap();
    let stranger = other_ca.issue_client("client-x").unwrap();
    let mut flags = pki.flags("required");
    flags.extend(["--tls-reload-interval".into(), "200ms".into()]);
    let (_agent, dp, backend) = keyless_gateway(dir.path(), "required", &flags).await;
    let addr = dp.listen;

    let refused = get(addr, &pki.ca, None, "/open/x").await;
    assert!(refused.is_err(), "no client certificate: the handshake is refused ({refused:?})");
    let refused = get(addr, &pki.ca, Some(&stranger), "/open/x").await;
    assert!(refused.is_err(), "a certificate from another CA is refused ({refused:?})");
    assert_eq!(backend.requests(), 0, "nothing reached the backend");
    let (status, _) = get(addr, &pki.ca, Some(&trusted), "/open/x").await.expect("a trusted certificate is served");
    assert_eq!(status, 200);

    // The same with curl.
    let files = pki.client_files("curl-a", &trusted);
    let (status, err) = curl(addr, &pki.ca_pem, Some(&files), "/open/x").await;
    assert_eq!(status, "200", "{err}");
    let (status, err) = curl(addr, &pki.ca_pem, None, "/open/x").await;
    assert_eq!(status, "000", "curl without a certificate is refused: {err}");
    assert_eq!(backend.requests(), 2);

    // The truststore is reloaded: once it holds the other CA only, the roles swap for new handshakes.
    let tmp = pki.ca_pem.with_extension("tmp");
    std::fs::write(&tmp, other_ca.cert_pem()).unwrap();
    std::fs::rename(&tmp, &pki.ca_pem).unwrap();
    hgw_tests::eventually("the new truststore is in service", Duration::from_secs(15), || async {
        get(addr, &pki.ca, Some(&stranger), "/open/x").await.ok().filter(|(status, _)| *status == 200)
    })
    .await;
    let refused = get(addr, &pki.ca, Some(&trusted), "/open/x").await;
    assert!(refused.is_err(), "the CA that left the truststore is refused ({refused:?})");
    // A broken truststore is refused and the one in service stays.
    std::fs::write(&pki.ca_pem, "not PEM").unwrap();
    hgw_tests::eventually("the broken truststore is reported", Duration::from_secs(15), || async {
        dp.proc.stderr().contains("previous certificates stay in service").then_some(())
    })
    .await;
    let (status, _) = get(addr, &pki.ca, Some(&stranger), "/open/x").await.expect("still served");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_client_certificates_are_optional_but_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let trusted = pki.ca.issue_client("client-a").unwrap();
    let stranger = TestCa::new("some other CA").unwrap().issue_client("client-x").unwrap();
    let (_agent, dp, _backend) = keyless_gateway(dir.path(), "request", &pki.flags("request")).await;
    let addr = dp.listen;

    let (status, _) = get(addr, &pki.ca, None, "/open/x").await.expect("no certificate is fine");
    assert_eq!(status, 200);
    let (status, _) = get(addr, &pki.ca, Some(&trusted), "/open/x").await.expect("a trusted certificate is fine");
    assert_eq!(status, 200);
    let refused = get(addr, &pki.ca, Some(&stranger), "/open/x").await;
    assert!(refused.is_err(), "a certificate that is sent must be trusted ({refused:?})");
    let (status, err) = curl(addr, &pki.ca_pem, None, "/open/x").await;
    assert_eq!(status, "200", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_plan_admits_the_subscribed_applications_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let app_a = pki.ca.issue_client("application-a").unwrap();
    let app_b = pki.ca.issue_client("application-b").unwrap();

    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let backend = Backend::start("mtls").await;
    let mut api = v4_api("secured", "/secured", &backend.url());
    api["plans"] = json!([{"id": "mtls-plan", "name": "mTLS", "security": {"type": "mtls"}, "status": "PUBLISHED"}]);
    sim.put_api(api).await;
    // Gravitee keeps the application's certificate on the subscription, base64-encoded PEM.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&app_a.cert_pem);
    sim.put_subscription(json!({"id": "sub-a", "api": "secured", "plan": "mtls-plan", "application": "app-a",
        "status": "ACCEPTED", "clientCertificate": encoded, "updatedAt": now_ms()}))
        .await;
    // B subscribed to nothing here; a paused subscription of C's certificate does not open the plan.
    let app_c = pki.ca.issue_client("application-c").unwrap();
    sim.put_subscription(json!({"id": "sub-c", "api": "secured", "plan": "mtls-plan", "application": "app-c",
        "status": "PAUSED", "clientCertificate": app_c.cert_pem, "updatedAt": now_ms()}))
        .await;
    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let flags = pki.flags("request");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dp = Dataplane::start_with(dir.path(), "dp", &agent.tcp_target(), &flags).await;
    dp.wait_ready().await;
    let addr = dp.listen;

    let (status, id) = get(addr, &pki.ca, Some(&app_a), "/secured/x").await.expect("A's certificate is served");
    assert_eq!(status, 200);
    let doc = report_for(&sim, &id).await;
    assert_eq!(
        (&doc["plan-id"], &doc["application-id"], &doc["subscription-id"], &doc["security-type"]),
        (&json!("mtls-plan"), &json!("app-a"), &json!("sub-a"), &json!("MTLS")),
        "{doc}"
    );

    for (what, identity) in [("B, not subscribed", Some(&app_b)), ("C, paused", Some(&app_c)), ("no certificate", None)]
    {
        let (status, id) = get(addr, &pki.ca, identity, "/secured/x").await.expect("an HTTP answer");
        assert_eq!(status, 401, "{what}");
        let doc: Value = report_for(&sim, &id).await;
        assert_eq!((&doc["status"], &doc["error-key"]), (&json!(401), &json!("GATEWAY_PLAN_UNRESOLVABLE")), "{what}");
    }
    let files = pki.client_files("curl-a", &app_a);
    let (status, err) = curl(addr, &pki.ca_pem, Some(&files), "/secured/y").await;
    assert_eq!(status, "200", "{err}");
    let files = pki.client_files("curl-b", &app_b);
    let (status, err) = curl(addr, &pki.ca_pem, Some(&files), "/secured/y").await;
    assert_eq!(status, "401", "{err}");
    assert_eq!(backend.requests(), 2, "only A's requests reached the backend");

    // Over plain HTTP (a second dataplane without TLS) there is no certificate: refused the same way.
    let plain = Dataplane::start(dir.path(), "dp-plain", &agent.tcp_target()).await;
    plain.wait_ready().await;
    let response = reqwest::get(plain.url("/secured/x")).await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"message": "Unauthorized", "http_status_code": 401}));
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_client_certificate_settings_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (cert, key) = (pki.server_cert.display().to_string(), pki.server_key.display().to_string());
    let tls = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    for mode in ["request", "required"] {
        let mut flags = tls.to_vec();
        flags.extend(["--tls-client-auth", mode]);
        let (code, stderr) = dataplane_exit(&flags, &[]).await;
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("--tls-truststore"), "{stderr}");
    }
    let missing = dir.path().join("missing-ca.pem").display().to_string();
    let mut flags = tls.to_vec();
    flags.extend(["--tls-client-auth", "required", "--tls-truststore", &missing]);
    let (code, stderr) = dataplane_exit(&flags, &[]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&missing), "the missing truststore is named: {stderr}");

    let gravitee = [
        ("gravitee_http_secured", "true"),
        ("gravitee_http_ssl_keystore_type", "pem"),
        ("gravitee_http_ssl_keystore_certificates_0_cert", cert.as_str()),
        ("gravitee_http_ssl_keystore_certificates_0_key", key.as_str()),
        ("gravitee_http_ssl_clientAuth", "required"),
    ];
    let (code, stderr) = dataplane_exit(&[], &gravitee).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("gravitee_http_ssl_truststore_path"), "{stderr}");
    for kind in ["jks", "pkcs12"] {
        let mut envs = gravitee.to_vec();
        envs.extend([("gravitee_http_ssl_truststore_type", kind), ("gravitee_http_ssl_truststore_path", "/t.jks")]);
        let (code, stderr) = dataplane_exit(&[], &envs).await;
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("gravitee_http_ssl_truststore_type") && stderr.contains("PEM"), "{stderr}");
    }
    // A usable set: checked, then accepted (--check-config exits 0).
    let mut envs = gravitee.to_vec();
    let ca = pki.ca_pem.display().to_string();
    envs.extend([("gravitee_http_ssl_truststore_type", "pem"), ("gravitee_http_ssl_truststore_path", ca.as_str())]);
    let (code, stderr) = dataplane_exit(&["--check-config"], &envs).await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervising_agent_hands_gravitee_client_auth_variables_to_its_dataplanes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let trusted = pki.ca.issue_client("client-a").unwrap();
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("pool").await;
    std::fs::write(apis.join("api.json"), v4_api("pool", "/pool", &backend.url()).to_string()).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", hgw_tests::free_port()).parse().unwrap();
    let supervising = Agent::supervising(1, listen);
    let extra: Vec<&str> = supervising.iter().map(String::as_str).collect();
    let paths: Vec<String> =
        [&pki.server_cert, &pki.server_key, &pki.ca_pem].iter().map(|p| p.display().to_string()).collect();
    let envs = [
        ("gravitee_http_secured", "true"),
        ("gravitee_http_ssl_keystore_type", "pem"),
        ("gravitee_http_ssl_keystore_certificates_0_cert", paths[0].as_str()),
        ("gravitee_http_ssl_keystore_certificates_0_key", paths[1].as_str()),
        ("GRAVITEE_HTTP_SSL_CLIENTAUTH", "required"),
        ("gravitee_http_ssl_truststore_type", "pem"),
        ("gravitee_http_ssl_truststore_path", paths[2].as_str()),
    ];
    let agent =
        Agent::start_local_with_env(dir.path(), "agent", &apis, &dir.path().join("reports.ndjson"), &extra, &envs)
            .await;
    agent.wait_dataplanes(1).await;
    let (status, _) = get(listen, &pki.ca, Some(&trusted), "/pool/x").await.expect("a trusted certificate is served");
    assert_eq!(status, 200);
    let refused = get(listen, &pki.ca, None, "/pool/x").await;
    assert!(refused.is_err(), "clientAuth=required reached the dataplane: no certificate is refused ({refused:?})");
}

/// Gravitee's `#request.ssl` EL: the client certificate's attributes (first value most specific
/// first, every value through `attributes`, the RFC 2253 DN), the gateway's own certificate and the
/// TLS peer, sent to the backend by a transform-headers step and seen there; without a client
/// certificate every client attribute is null, and plain HTTP has no session at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_attributes_reach_el_as_gravitees() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // A subject with two OUs and an escaped comma, made the way operators make them: openssl, with a
    // CA of its own that joins the truststore.
    let files = openssl_client(dir.path(), "/C=FR/O=Acme, Inc/OU=Payments/OU=Cards/CN=app-a");
    let mut truststore = std::fs::read_to_string(&pki.ca_pem).unwrap();
    truststore.push_str(&std::fs::read_to_string(dir.path().join("openssl-ca.crt")).unwrap());
    std::fs::write(&pki.ca_pem, truststore).unwrap();

    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("ssl-el").await;
    let mut api = v4_api("ssl", "/ssl", &backend.url());
    let header = |name: &str, value: &str| json!({"name": name, "value": value});
    api["flows"] = json!([{"name": "all", "enabled": true,
        "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
        "request": [{"name": "headers", "policy": "transform-headers", "enabled": true, "configuration": {"addHeaders": [
            header("X-Client-Cn", "{#request.ssl.client.cn}"),
            header("X-Client-Ou", "{#request.ssl.client.ou}"),
            header("X-Client-Ous", "{#request.ssl.client.attributes['OU'][0]}|{#request.ssl.client.attributes['2.5.4.11'][1]}"),
            header("X-Client-Dn", "{#request.ssl.client.dn}"),
            header("X-Server-Cn", "{#request.ssl.server.cn}"),
            header("X-Tls-Peer", "{#request.ssl.clientHost}:{#request.ssl.clientPort}"),
            header("X-Acme", "{#request.ssl.client.o == 'Acme\\, Inc'}"),
        ]}}],
        "response": []}]);
    std::fs::write(apis.join("api.json"), api.to_string()).unwrap();
    let reports = dir.path().join("reports.ndjson");
    let agent = Agent::start_local(dir.path(), "ssl-agent", &apis, &reports, &[]).await;
    let flags = pki.flags("request");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dp = Dataplane::start_with(dir.path(), "ssl-dp", agent.unix_target().as_str(), &flags).await;
    dp.wait_ready().await;

    let echo = |identity: Option<(PathBuf, PathBuf)>| {
        let ca = pki.ca_pem.clone();
        let addr = dp.listen;
        async move {
            let resolve = format!("{HOST}:{}:{}", addr.port(), addr.ip());
            let mut command = tokio::process::Command::new("curl");
            command.args(["-sS", "--fail", "--max-time", "10", "--http1.1", "--resolve", &resolve]);
            command.args(["--cacert", ca.to_str().unwrap(), &format!("https://{HOST}:{}/ssl/x", addr.port())]);
            if let Some((cert, key)) = &identity {
                command.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
            }
            let output = command.output().await.expect("curl is installed");
            assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
            serde_json::from_slice::<Value>(&output.stdout).unwrap()["headers"].clone()
        }
    };
    let headers = echo(Some(files)).await;
    assert_eq!(headers["x-client-cn"], "app-a");
    assert_eq!(headers["x-client-ou"], "Cards", "the most specific OU first, as in Java's RFC 2253 name");
    assert_eq!(headers["x-client-ous"], "Cards|Payments");
    assert_eq!(headers["x-client-dn"], "CN=app-a,OU=Cards,OU=Payments,O=Acme\\, Inc,C=FR");
    assert_eq!(headers["x-server-cn"], HOST);
    let peer = headers["x-tls-peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:") && peer.len() > "127.0.0.1:".len(), "{peer}");
    assert_eq!(headers["x-acme"], "true");

    // No client certificate: the client side reads null, the server side is still known.
    let headers = echo(None).await;
    for name in ["x-client-cn", "x-client-dn"] {
        assert!(headers[name].as_str().is_none_or(str::is_empty), "{name}: {}", headers[name]);
    }
    assert_eq!(headers["x-server-cn"], HOST);
    assert_eq!(headers["x-acme"], "false");
    assert_eq!(backend.requests(), 2);
}

/// A client certificate for `subject` (`openssl -subj` form) issued by a CA made with openssl
/// (`openssl-ca.crt` in `dir`): `(cert file, key file)`.
fn openssl_client(dir: &Path, subject: &str) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let output = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = ["-keyout", "openssl-ca.key", "-out", "openssl-ca.crt", "-days", "2", "-subj", "/CN=hgw EL test CA"];
    run(&[&["req", "-x509"][..], &ec, &ca].concat());
    run(&[&["req", "-new"][..], &ec, &["-keyout", "client.key", "-out", "client.csr", "-subj", subject]].concat());
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "openssl-ca.crt",
        "-CAkey",
        "openssl-ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client.ext",
        "-out",
        "client.crt",
    ]);
    (dir.join("client.crt"), dir.join("client.key"))
}
