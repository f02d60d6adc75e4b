//! HTTPS on the gateway port: the real dataplane terminates TLS with one certificate per SNI name and a
//! default, negotiates HTTP/2 through ALPN, proxies to an API's backend, picks up rotated certificate
//! files without dropping connections, keeps its certificates when a replacement is broken, and refuses
//! unusable settings with exit 64. An agent supervising dataplanes hands Gravitee's HTTPS variables on.
//! Under HTTP/2 load (h2load), certificates rotating every 150 ms cost no request.
//!
//! Clients: curl (hostname verification against the test CA, HTTP/2) and a rustls client in the test
//! that records which certificate the server presented and which protocol ALPN chose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hgw_tests::gateway::{Agent, Dataplane, dataplane_exit};
use hgw_tests::{Backend, TestCa, eventually, free_port, run_to_exit, v4_api};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::client::TlsStream;

/// Longest wait for a reload (the dataplane polls every 200 ms here) on a loaded 2-core machine.
const RELOAD: Duration = Duration::from_secs(15);

/// Accepts whatever the server presents: the test compares it with the certificate it expects.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to `addr` sending `sni` (none: the server sees no SNI, as for an IP address).
async fn connect(addr: SocketAddr, sni: Option<&str>, alpn: &[&str]) -> TlsStream<tokio::net::TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the dataplane");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake")
}

/// The leaf certificate presented for `sni`.
async fn presented(addr: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    let tls = connect(addr, sni, &["http/1.1"]).await;
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// Checks that the server presents `expected` (PEM) for `sni`; `what` says which case this is.
async fn assert_presented(addr: SocketAddr, sni: Option<&str>, expected: &str, what: &str) {
    let got = presented(addr, sni).await;
    assert!(got == der(expected), "{what} (SNI {sni:?}): the server presented another certificate");
}

fn der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap().to_vec()
}

/// Writes `contents` to `path` through a rename, as configuration management tools replace files.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Site {
    cert_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn site(dir: &Path, ca: &TestCa, label: &str, names: &[&str]) -> Site {
    let issued = ca.issue_server(names).unwrap();
    let (cert, key) = (dir.join(format!("{label}.crt")), dir.join(format!("{label}.key")));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    Site { cert_pem: issued.cert_pem, cert, key }
}

/// `curl` over HTTPS with `host` resolved to the dataplane and verified against the test CA: the HTTP
/// version it used and the status.
async fn curl(addr: SocketAddr, ca: &Path, host: &str, path: &str, http2: bool) -> (String, String) {
    let url = format!("https://{host}:{}{path}", addr.port());
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--max-time", "10"]);
    command.args(["--resolve", &resolve, "--cacert", ca.to_str().unwrap(), &url]);
    command.arg(if http2 { "--http2" } else { "--http1.1" });
    let output = command.output().await.expect("curl is installed");
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The `subject=` line `openssl s_client` prints for the certificate presented for `sni` (`None`
/// when openssl is not installed).
async fn openssl_subject(addr: SocketAddr, sni: Option<&str>) -> Option<String> {
    let mut command = tokio::process::Command::new("openssl");
    command.args(["s_client", "-connect", &addr.to_string()]);
    match sni {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let output = command.stdin(std::process::Stdio::null()).output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Some(text.lines().find(|line| line.starts_with("subject=")).unwrap_or(&text).to_owned())
}

/// A GET on an established connection (HTTP/1.1 keep-alive): its status.
async fn get_on(sender: &mut hyper::client::conn::http1::SendRequest<String>, host: &str, path: &str) -> u16 {
    let request = hyper::Request::get(path).header("host", host).body(String::new()).unwrap();
    sender.send_request(request).await.expect("a response on the open connection").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_chooses_certificates_by_sni_speaks_h2_and_reloads_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("hgw edge test CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let fallback = site(dir.path(), &ca, "default", &["default.test"]);
    let alpha = site(dir.path(), &ca, "alpha", &["alpha.test"]);
    let beta = site(dir.path(), &ca, "beta", &["beta.test", "*.beta.test"]);

    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("tls-backend").await;
    std::fs::write(apis.join("api.json"), v4_api("pub", "/pub", &backend.url()).to_string()).unwrap();
    let agent = Agent::start_local(dir.path(), "agent", &apis, &dir.path().join("reports.ndjson"), &[]).await;
    let mut flags: Vec<String> = Vec::new();
    for site in [&fallback, &alpha, &beta] {
        flags.extend(["--tls-cert".into(), site.cert.display().to_string()]);
        flags.extend(["--tls-key".into(), site.key.display().to_string()]);
    }
    flags.extend(["--tls-reload-interval".into(), "200ms".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dp = Dataplane::start_with(dir.path(), "dp", agent.unix_target().as_str(), &flags).await;
    dp.wait_ready().await;
    let addr = dp.listen;

    // SNI picks the certificate naming the host; no SNI or an unknown name gets the first one.
    assert_presented(addr, Some("alpha.test"), &alpha.cert_pem, "alpha.test").await;
    assert_presented(addr, Some("beta.test"), &beta.cert_pem, "beta.test").await;
    assert_presented(addr, Some("www.beta.test"), &beta.cert_pem, "*.beta.test").await;
    assert_presented(addr, Some("a.www.beta.test"), &fallback.cert_pem, "a wildcard is one label").await;
    assert_presented(addr, Some("other.test"), &fallback.cert_pem, "unknown name").await;
    assert_presented(addr, None, &fallback.cert_pem, "no SNI").await;

    // The same through OpenSSL's client, when installed.
    if let Some(subject) = openssl_subject(addr, Some("beta.test")).await {
        assert!(subject.contains("beta.test"), "openssl -servername beta.test: {subject}");
        let subject = openssl_subject(addr, None).await.unwrap();
        assert!(subject.contains("default.test"), "openssl -noservername: {subject}");
    }

    // ALPN: h2 when the client offers it, HTTP/1.1 otherwise.
    let h2 = connect(addr, Some("alpha.test"), &["h2", "http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = connect(addr, Some("alpha.test"), &["http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop((h2, h1));

    // A real client, verifying the hostname against the CA, through the API to the backend.
    for (host, http2, expected) in
        [("alpha.test", true, "2 200"), ("beta.test", true, "2 200"), ("alpha.test", false, "1.1 200")]
    {
        let (out, err) = curl(addr, &ca_path, host, "/pub/x", http2).await;
        assert_eq!(out, expected, "curl {host} (http2: {http2}): {err}");
    }
    // curl checks the name: the default certificate does not name beta's hosts' neighbours.
    let (out, err) = curl(addr, &ca_path, "gamma.test", "/pub/x", true).await;
    assert!(out.starts_with("0 000") && !err.is_empty(), "gamma.test gets default.test's certificate: {out} {err}");
    let served = backend.requests();
    assert!(served >= 3, "the backend saw the HTTPS requests ({served})");

    // TLS on /metrics: a plaintext request to the HTTPS port is a failed handshake, and each
    // certificate's expiry is a gauge (Unix time), here a year from now as issued.
    let failed = "hgw_dataplane_tls_handshake_failures_total{reason=\"failed\"}";
    let before_failures =
        hgw_tests::gateway::prometheus_value(&dp.metrics().await, failed).expect("the counter is shown");
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain.write_all(b"GET /pub/x HTTP/1.1\r\nHost: alpha.test\r\n\r\n").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read(&mut [0u8; 64])).await;
    eventually("the failed handshake is counted", RELOAD, || async {
        (hgw_tests::gateway::prometheus_value(&dp.metrics().await, failed)? > before_failures).then_some(())
    })
    .await;
    let page = dp.metrics().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for site in [&fallback, &alpha, &beta] {
        let series = format!("hgw_dataplane_tls_certificate_not_after_seconds{{cert=\"{}\"}}", site.cert.display());
        let not_after =
            hgw_tests::gateway::prometheus_value(&page, &series).unwrap_or_else(|| panic!("{series} in {page}"));
        assert!((not_after - now - 365.0 * 86_400.0).abs() < 2.0 * 86_400.0, "{series} = {not_after}");
    }

    // An HTTP/1.1 keep-alive connection opened before the rotation.
    let before = connect(addr, Some("alpha.test"), &["http/1.1"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(before)).await.unwrap();
    let open = tokio::spawn(connection);
    assert_eq!(get_on(&mut sender, "alpha.test", "/pub/before").await, 200);

    // Rotation: alpha gets a new certificate and key; new handshakes see it after a poll.
    let rotated = ca.issue_server(&["alpha.test"]).unwrap();
    replace(&alpha.cert, &rotated.cert_pem);
    replace(&alpha.key, &rotated.key_pem);
    eventually("the rotated certificate is served", RELOAD, || async {
        (presented(addr, Some("alpha.test")).await == der(&rotated.cert_pem)).then_some(())
    })
    .await;
    assert_presented(addr, Some("beta.test"), &beta.cert_pem, "the others stay").await;
    let (out, err) = curl(addr, &ca_path, "alpha.test", "/pub/x", true).await;
    assert_eq!(out, "2 200", "{err}");
    // The connection from before goes on.
    assert_eq!(get_on(&mut sender, "alpha.test", "/pub/after").await, 200);
    assert!(!open.is_finished(), "the connection opened before the rotation is still open");

    // A broken replacement: logged (with the file, without the key), the rotated certificate stays.
    let secret_line = "MIIBrokenKeyMaterialThatMustNotBeLogged";
    replace(&alpha.key, &format!("-----BEGIN PRIVATE KEY-----\n{secret_line}\n-----END PRIVATE KEY-----\n"));
    eventually("the broken key is reported", RELOAD, || async {
        let log = dp.proc.stderr();
        log.contains("previous certificates stay in service").then_some(log)
    })
    .await;
    let log = dp.proc.stderr();
    assert!(log.contains(&alpha.key.display().to_string()), "the error names the file: {log}");
    assert!(!log.contains(secret_line), "no key material in the logs");
    assert_presented(addr, Some("alpha.test"), &rotated.cert_pem, "the broken replacement is not served").await;
    let (out, err) = curl(addr, &ca_path, "alpha.test", "/pub/x", true).await;
    assert_eq!(out, "2 200", "{err}");
    assert_eq!(get_on(&mut sender, "alpha.test", "/pub/still").await, 200);
}

/// What one h2load run did: `(requests, succeeded, 2xx)` from its summary lines.
fn h2load_counts(output: &str) -> Option<(u64, u64, u64)> {
    let number_before = |line: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).collect();
        words.iter().position(|w| *w == word).and_then(|i| words.get(i.checked_sub(1)?)).and_then(|n| n.parse().ok())
    };
    let requests = output.lines().find(|l| l.starts_with("requests:"))?;
    let codes = output.lines().find(|l| l.starts_with("status codes:"))?;
    Some((number_before(requests, "total")?, number_before(requests, "succeeded")?, number_before(codes, "2xx")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_http2_load_without_a_failed_request() {
    if which("h2load").is_none() {
        assert!(std::env::var_os("CI").is_none(), "h2load (nghttp2-client) is missing; scripts/test.sh installs it");
        eprintln!("SKIPPED: h2load is not installed (apt-get install nghttp2-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("hgw rotation test CA").unwrap();
    let only = site(dir.path(), &ca, "only", &["only.test"]);
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("rotation-backend").await;
    std::fs::write(apis.join("api.json"), v4_api("pub", "/pub", &backend.url()).to_string()).unwrap();
    let agent = Agent::start_local(dir.path(), "agent", &apis, &dir.path().join("reports.ndjson"), &[]).await;
    let (cert, key) = (only.cert.display().to_string(), only.key.display().to_string());
    let flags = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str(), "--tls-reload-interval", "100ms"];
    let dp = Dataplane::start_with(dir.path(), "dp", agent.unix_target().as_str(), &flags).await;
    dp.wait_ready().await;
    let addr = dp.listen;

    // New certificates every 150 ms while h2load runs, in rounds (each opens new connections, so
    // handshakes meet both the old and the new certificates).
    let rotating = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pairs: Vec<_> = (0..20).map(|_| ca.issue_server(&["only.test"]).unwrap()).collect();
    let rotator = {
        let (rotating, cert, key) = (rotating.clone(), only.cert.clone(), only.key.clone());
        std::thread::spawn(move || {
            let mut rotations = 0usize;
            // Bounded: at most 400 rotations (a minute), however long h2load takes.
            while rotating.load(std::sync::atomic::Ordering::Relaxed) && rotations < 400 {
                let issued = &pairs[rotations % pairs.len()];
                // Key first, then certificate: a poll between the two sees a mismatch and keeps the
                // previous pair, which is what a careless rotation does.
                replace(&key, &issued.key_pem);
                replace(&cert, &issued.cert_pem);
                rotations += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
            rotations
        })
    };
    let url = format!("https://{addr}/pub/load");
    let mut total = 0;
    for round in 0..6 {
        let output = tokio::process::Command::new("h2load")
            .args(["-n", "300", "-c", "4", "-m", "8", &url])
            .output()
            .await
            .expect("run h2load");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (requests, succeeded, ok) = h2load_counts(&text).unwrap_or_else(|| panic!("h2load summary: {text}"));
        assert_eq!((requests, succeeded, ok), (300, 300, 300), "round {round}: every request succeeded: {text}");
        total += succeeded;
    }
    rotating.store(false, std::sync::atomic::Ordering::Relaxed);
    let rotations = rotator.join().unwrap();
    assert!(rotations >= 2, "the certificate rotated during the load ({rotations} times)");
    // The original pair is not among the rotated ones: once any rotation applied, it is gone.
    assert!(presented(addr, None).await != der(&only.cert_pem), "a rotated certificate is being served");
    assert_eq!(total, 1800);
    assert!(!dp.proc.stderr().contains("panicked"));
}

/// The path of `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_https_settings_exit_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("hgw edge test CA").unwrap();
    let good = site(dir.path(), &ca, "good", &["good.test"]);
    let other = site(dir.path(), &ca, "other", &["other.test"]);
    let cert = good.cert.display().to_string();
    let other_key = other.key.display().to_string();
    let missing = dir.path().join("missing.key").display().to_string();

    for kind in ["jks", "pkcs12"] {
        let (code, stderr) = dataplane_exit(&["--tls-keystore-type", kind], &[]).await;
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("openssl pkcs12") && stderr.contains("PEM"), "how to convert: {stderr}");
        let gravitee = [("gravitee_http_secured", "true"), ("gravitee_http_ssl_keystore_type", kind)];
        let (code, stderr) = dataplane_exit(&[], &gravitee).await;
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("gravitee_http_ssl_keystore_type") && stderr.contains("openssl"), "{stderr}");
    }
    let (code, stderr) = dataplane_exit(&["--tls-cert", &cert, "--tls-key", &missing], &[]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&missing), "the missing file is named: {stderr}");
    let gravitee = [
        ("GRAVITEE_HTTP_SECURED", "true"),
        ("GRAVITEE_HTTP_SSL_KEYSTORE_TYPE", "pem"),
        ("GRAVITEE_HTTP_SSL_KEYSTORE_CERTIFICATES_0_CERT", cert.as_str()),
        ("GRAVITEE_HTTP_SSL_KEYSTORE_CERTIFICATES_0_KEY", missing.as_str()),
    ];
    let (code, stderr) = dataplane_exit(&[], &gravitee).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&missing), "the missing file is named: {stderr}");
    let (code, stderr) = dataplane_exit(&["--tls-cert", &cert, "--tls-key", &other_key], &[]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("is not the private key"), "{stderr}");

    // An agent supervising dataplanes refuses, at start, settings its dataplanes would refuse.
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let (apis, socket) = (apis.display().to_string(), dir.path().join("agent.sock").display().to_string());
    let state = dir.path().join("state").display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--local-apis", &apis, "--grpc-socket", &socket, "--node-listen", "127.0.0.1:0"];
    let bin = hgw_tests::bin_path("hgw-dataplane").display().to_string();
    args.extend(["--dataplanes", "1", "--dataplane-listen", &listen, "--dataplane-bin", &bin]);
    let envs = [
        ("HGW_STATE_DIR", state.as_str()),
        ("gravitee_http_secured", "true"),
        ("gravitee_http_ssl_keystore_certificates_0_cert", cert.as_str()),
        ("gravitee_http_ssl_keystore_certificates_0_key", missing.as_str()),
    ];
    let (code, _, stderr) = run_to_exit("hgw-agent", &args, &envs, Duration::from_secs(20)).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("dataplanes refuse") && stderr.contains(&missing), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervising_agent_hands_gravitee_https_variables_to_its_dataplanes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("hgw edge test CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let fallback = site(dir.path(), &ca, "default", &["default.test"]);
    let alpha = site(dir.path(), &ca, "alpha", &["alpha.test"]);
    let apis = dir.path().join("apis");
    std::fs::create_dir(&apis).unwrap();
    let backend = Backend::start("pool").await;
    std::fs::write(apis.join("api.json"), v4_api("pool", "/pool", &backend.url()).to_string()).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let supervising = Agent::supervising(2, listen);
    let extra: Vec<&str> = supervising.iter().map(String::as_str).collect();
    let paths: Vec<String> =
        [&fallback.cert, &fallback.key, &alpha.cert, &alpha.key].iter().map(|p| p.display().to_string()).collect();
    let envs = [
        ("gravitee_http_secured", "true"),
        ("gravitee_http_alpn", "true"),
        ("gravitee_http_ssl_keystore_type", "pem"),
        ("gravitee_http_ssl_keystore_certificates_0_cert", paths[0].as_str()),
        ("gravitee_http_ssl_keystore_certificates_0_key", paths[1].as_str()),
        ("gravitee_http_ssl_keystore_certificates_1_cert", paths[2].as_str()),
        ("gravitee_http_ssl_keystore_certificates_1_key", paths[3].as_str()),
    ];
    let agent =
        Agent::start_local_with_env(dir.path(), "agent", &apis, &dir.path().join("reports.ndjson"), &extra, &envs)
            .await;
    agent.wait_dataplanes(2).await;
    for _ in 0..4 {
        // Several connections: the kernel spreads them over both dataplanes.
        let (out, err) = curl(listen, &ca_path, "alpha.test", "/pool/x", true).await;
        assert_eq!(out, "2 200", "{err}");
        assert_presented(listen, None, &fallback.cert_pem, "no SNI").await;
    }
}
