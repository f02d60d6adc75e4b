//! The sim's HTTPS identity: a fresh CA per run (clients must be told to trust it, exactly like a
//! private Cloud Gate CA via `--cloud-gate-ca`) and a server certificate for the loopback names.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::certs::TestCa;

/// Names the server certificate covers: every way a test can spell the loopback address.
pub const SERVER_NAMES: &[&str] = &["127.0.0.1", "localhost", "::1"];

/// The CA certificate (to write to `ca.pem`) and the server TLS configuration it vouches for.
pub struct SimTls {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Installs ring as rustls' process-wide provider; a no-op when something else already did.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Generates the CA and server certificate and a config offering h2 and HTTP/1.1 through ALPN, so
/// clients of either protocol are exercised.
pub fn generate() -> anyhow::Result<SimTls> {
    install_crypto_provider();
    let ca = TestCa::new("hgw-cloudgate-sim CA")?;
    let leaf = ca.issue_server(SERVER_NAMES)?;
    let certs = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())?];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SimTls { ca_pem: ca.cert_pem().to_owned(), server_config: Arc::new(config) })
}
