//! TLS termination for clients (HTTPS on the gateway port), with rustls and the `ring` provider.
//!
//! Several certificates may be served from one port: each is chosen by the name the client sends in
//! SNI, matched against the certificate's DNS subject alternative names (`*.example.com` matches one
//! label: `a.example.com`, not `example.com` nor `a.b.example.com`; an exact name wins over a
//! wildcard, and the first certificate over later ones). The first certificate is the default, for
//! clients that send no SNI (or an IP address) and for names no certificate has.
//!
//! The PEM files are polled ([`Reloader`]): when their contents change, the certificates are rebuilt
//! and swapped in one step ([`ArcSwap`]), so new handshakes get the new ones while established
//! connections go on with what they negotiated. With client certificate authentication the
//! truststore is polled with them; a new one swaps the whole server configuration ([`Acceptor`]),
//! since rustls keeps the client verifier there. A replacement that cannot be used (unreadable,
//! not PEM, a key that is not the certificate's — as happens for a moment when the certificate is
//! replaced before its key) is logged and the previous certificates stay in service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to complete its TLS handshake: a connection that never finishes it
/// would otherwise hold a socket (and delay the shutdown drain) for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a set of certificates cannot be served. Messages name the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("no certificate is configured")]
    Empty,
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a readable PEM certificate chain ({problem})")]
    BadCertificate { path: PathBuf, problem: String },
    #[error(
        "{path}: no unencrypted PEM private key in the file (PKCS#8 `BEGIN PRIVATE KEY`, PKCS#1 `BEGIN RSA PRIVATE KEY` or SEC1 `BEGIN EC PRIVATE KEY`)"
    )]
    NoKey { path: PathBuf },
    #[error("{path}: the private key cannot be used ({problem})")]
    BadKey { path: PathBuf, problem: String },
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: the truststore cannot be used ({problem})")]
    BadTruststore { path: PathBuf, problem: String },
}

/// Client certificate authentication: the CAs client certificates must chain to (a PEM bundle,
/// reloaded with the certificates) and whether a certificate is mandatory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVerification {
    pub truststore: PathBuf,
    /// `false`: asked for, but a client without one is served (a wrong one is still refused).
    pub required: bool,
}

/// The verifier for `client` from the truststore's contents `pem`: webpki path validation to its
/// CAs, with the CAs' names sent as hints so clients holding several certificates pick the right one.
fn client_verifier(
    client: &ClientVerification,
    pem: &[u8],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, CertificateError> {
    let path = &client.truststore;
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_chain(path, pem)? {
        roots.add(cert).map_err(|e| CertificateError::BadTruststore { path: path.clone(), problem: e.to_string() })?;
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()));
    let builder = if client.required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| CertificateError::BadTruststore { path: path.clone(), problem: e.to_string() })
}

/// A server configuration serving `resolver`'s certificates, verifying clients with `verifier`.
fn server_config(
    resolver: &Arc<SniResolver>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    h2: bool,
) -> Result<ServerConfig, rustls::Error> {
    // The provider's safe defaults: TLS 1.3 and 1.2 only, forward-secret suites only.
    let builder = ServerConfig::builder_with_provider(Arc::new(provider())).with_safe_default_protocol_versions()?;
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = if h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}

/// Hands out the server configuration in service to each handshake. A new truststore needs a new
/// configuration (rustls fixes the client verifier in it), swapped in as one step like certificates.
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<ArcSwap<ServerConfig>>,
    resolver: Arc<SniResolver>,
}

impl Acceptor {
    /// The acceptor for a new connection's handshake.
    pub fn current(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// `(certificate file, notAfter as Unix seconds)` of each certificate in service.
    pub fn certificate_expiries(&self) -> Vec<(String, i64)> {
        self.resolver.current.load().expiries.clone()
    }

    /// The certificate a handshake for the SNI name `sni` is served (EL's `#request.ssl.server`).
    pub fn certificate_for(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        self.resolver.current.load().choose(sni).clone()
    }
}

/// The certificates in service, indexed by the names they answer for.
pub struct Certificates {
    /// In configuration order; the first one is the default.
    keys: Vec<Arc<CertifiedKey>>,
    /// Lower-case DNS names → index in `keys`.
    exact: HashMap<String, usize>,
    /// `*.example.com` is stored as `example.com` → index in `keys`.
    wildcard: HashMap<String, usize>,
    /// `(certificate file, notAfter as Unix seconds)` per entry of `keys`, for `/metrics`.
    expiries: Vec<(String, i64)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("count", &self.keys.len())
            .field("names", &self.exact.keys().chain(self.wildcard.keys()).collect::<Vec<_>>())
            .finish()
    }
}

impl Certificates {
    /// The certificate for the SNI name `sni` (the default one without a match).
    pub fn choose(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let index = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        &self.keys[index.copied().unwrap_or(0)]
    }

    /// Builds the certificates from the files' contents (`(cert PEM, key PEM)` per entry of `files`).
    fn build(files: &[CertKeyFiles], contents: &[(Vec<u8>, Vec<u8>)]) -> Result<Certificates, CertificateError> {
        if files.is_empty() {
            return Err(CertificateError::Empty);
        }
        let provider = provider();
        let mut certificates =
            Certificates { keys: Vec::new(), exact: HashMap::new(), wildcard: HashMap::new(), expiries: Vec::new() };
        for (index, (paths, (cert_pem, key_pem))) in files.iter().zip(contents).enumerate() {
            let chain = parse_chain(&paths.cert, cert_pem)?;
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => CertificateError::NoKey { path: paths.key.clone() },
                other => CertificateError::BadKey { path: paths.key.clone(), problem: other.to_string() },
            })?;
            let names = dns_names(&chain[0]);
            certificates.expiries.push((paths.cert.display().to_string(), not_after(&chain[0])));
            let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    CertificateError::KeyMismatch { cert: paths.cert.clone(), key: paths.key.clone() }
                }
                other => CertificateError::BadKey { path: paths.key.clone(), problem: other.to_string() },
            })?;
            for name in names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => certificates.wildcard.entry(parent.to_owned()),
                    None => certificates.exact.entry(name),
                };
                // The first certificate naming a host keeps it.
                table.or_insert(index);
            }
            certificates.keys.push(Arc::new(certified));
        }
        Ok(certificates)
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::BadCertificate { path: path.to_owned(), problem: e.to_string() })?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate { path: path.to_owned() });
    }
    if let Err(e) = x509_parser::parse_x509_certificate(chain[0].as_ref()) {
        return Err(CertificateError::BadCertificate { path: path.to_owned(), problem: e.to_string() });
    }
    Ok(chain)
}

/// The lower-case DNS names of the certificate's subject alternative names (its common name is not
/// used: clients ignore it too).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether the leaf certificate of `cert` is outside its validity period now (worth a warning: the
/// clients will refuse it).
fn expired(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref()).is_ok_and(|(_, parsed)| !parsed.validity().is_valid())
}

/// The leaf's notAfter as Unix seconds (0 if it cannot be read: parse_chain already checked it).
fn not_after(cert: &CertificateDer<'_>) -> i64 {
    x509_parser::parse_x509_certificate(cert.as_ref()).map_or(0, |(_, parsed)| parsed.validity().not_after.timestamp())
}

/// rustls asks this for a certificate during each handshake; it reads the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    current: ArcSwap<Certificates>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().choose(hello.server_name()).clone())
    }
}

/// The bytes of each `(certificate, key)` pair of files, in configuration order.
type Contents = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads every file; the error names the first one that cannot be read.
fn read_all(files: &[CertKeyFiles]) -> Result<Contents, CertificateError> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|source| CertificateError::Read { path: path.to_owned(), source });
    files.iter().map(|f| Ok((read(&f.cert)?, read(&f.key)?))).collect()
}

/// The truststore's bytes, when clients are verified.
fn read_truststore(client: Option<&ClientVerification>) -> Result<Option<Vec<u8>>, CertificateError> {
    client
        .map(|client| {
            std::fs::read(&client.truststore)
                .map_err(|source| CertificateError::Read { path: client.truststore.clone(), source })
        })
        .transpose()
}

/// A digest of all the files' contents: what "changed" means for reloading (mtimes can stay equal
/// across a fast replacement, and copying a file can change its mtime without changing it).
fn fingerprint(contents: &[(Vec<u8>, Vec<u8>)], truststore: Option<&[u8]>) -> [u8; 32] {
    let mut hash = Sha256::new();
    if let Some(truststore) = truststore {
        hash.update((truststore.len() as u64).to_le_bytes());
        hash.update(truststore);
    }
    for (cert, key) in contents {
        for part in [cert, key] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    }
    hash.finalize().into()
}

/// The TLS side of the HTTPS listener: the acceptor handshakes use, and the [`Reloader`] that keeps
/// its certificates current.
pub struct ServerTls {
    pub acceptor: Acceptor,
    pub reloader: Reloader,
}

impl ServerTls {
    /// Reads and checks the certificates (a bad file is an error here, at startup); `h2` offers
    /// HTTP/2 in ALPN besides HTTP/1.1.
    pub fn load(
        files: Vec<CertKeyFiles>,
        h2: bool,
        client: Option<&ClientVerification>,
    ) -> Result<ServerTls, CertificateError> {
        let contents = read_all(&files)?;
        let certificates = Certificates::build(&files, &contents)?;
        for (index, (paths, key)) in files.iter().zip(&certificates.keys).enumerate() {
            let names = dns_names(&key.cert[0]);
            tracing::info!(cert = %paths.cert.display(), ?names, default = index == 0, "serving a TLS certificate");
            if expired(&key.cert[0]) {
                tracing::warn!(cert = %paths.cert.display(), "the certificate is expired or not yet valid");
            }
        }
        let resolver = Arc::new(SniResolver { current: ArcSwap::from_pointee(certificates) });
        let truststore = read_truststore(client)?;
        let verifier = match (client, &truststore) {
            (Some(client), Some(pem)) => {
                tracing::info!(
                    truststore = %client.truststore.display(),
                    required = client.required,
                    "asking HTTPS clients for a certificate"
                );
                Some(client_verifier(client, pem)?)
            }
            _ => None,
        };
        let config = server_config(&resolver, verifier, h2)
            .map_err(|e| CertificateError::BadKey { path: files[0].key.clone(), problem: e.to_string() })?;
        let acceptor = Acceptor { config: Arc::new(ArcSwap::from_pointee(config)), resolver: resolver.clone() };
        let reloader = Reloader {
            seen: fingerprint(&contents, truststore.as_deref()),
            files,
            resolver,
            client: client.cloned(),
            h2,
            acceptor: acceptor.clone(),
            last_error: None,
        };
        Ok(ServerTls { acceptor, reloader })
    }
}

/// What one look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Same contents as the certificates in service (or as the last refused replacement).
    Unchanged,
    /// New certificates are in service.
    Swapped,
    /// The files changed but cannot be used; the previous certificates stay. The message names the file.
    Refused(String),
}

/// Watches the certificate files and swaps in new certificates when their contents change.
pub struct Reloader {
    files: Vec<CertKeyFiles>,
    resolver: Arc<SniResolver>,
    /// Client verification, whose truststore is watched with the certificates.
    client: Option<ClientVerification>,
    h2: bool,
    /// Where a configuration with a new truststore's verifier is swapped in.
    acceptor: Acceptor,
    /// Fingerprint of the contents in service.
    seen: [u8; 32],
    /// The last refusal, so a broken file is logged once, not at every poll.
    last_error: Option<String>,
}

impl Reloader {
    /// Reads the files once and swaps if they changed and are usable (blocking file I/O).
    pub fn poll(&mut self) -> Reload {
        let outcome = match read_all(&self.files).and_then(|c| Ok((c, read_truststore(self.client.as_ref())?))) {
            Ok((contents, truststore)) => {
                let print = fingerprint(&contents, truststore.as_deref());
                if print == self.seen {
                    Ok(false)
                } else {
                    self.rebuild(&contents, truststore.as_deref()).map(|()| {
                        self.seen = print;
                        true
                    })
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(false) => {
                // Back to the contents in service after a bad replacement: nothing to say.
                self.last_error = None;
                Reload::Unchanged
            }
            Ok(true) => {
                self.last_error = None;
                Reload::Swapped
            }
            Err(e) => {
                let message = e.to_string();
                if self.last_error.as_deref() == Some(message.as_str()) {
                    return Reload::Unchanged;
                }
                self.last_error = Some(message.clone());
                Reload::Refused(message)
            }
        }
    }

    /// Builds the certificates (and the client verifier) from the files' contents and swaps them in,
    /// or changes nothing when any of them cannot be used.
    fn rebuild(&self, contents: &Contents, truststore: Option<&[u8]>) -> Result<(), CertificateError> {
        let certificates = Certificates::build(&self.files, contents)?;
        let config = match (&self.client, truststore) {
            (Some(client), Some(pem)) => {
                let verifier = client_verifier(client, pem)?;
                let config = server_config(&self.resolver, Some(verifier), self.h2).map_err(|e| {
                    CertificateError::BadTruststore { path: client.truststore.clone(), problem: e.to_string() }
                })?;
                Some(config)
            }
            _ => None,
        };
        self.resolver.current.store(Arc::new(certificates));
        if let Some(config) = config {
            self.acceptor.config.store(Arc::new(config));
        }
        Ok(())
    }

    /// Polls every `interval` until `cancel`, logging each swap and each new refusal.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let polled = tokio::task::spawn_blocking(move || {
                let outcome = self.poll();
                (self, outcome)
            })
            .await;
            let Ok((reloader, outcome)) = polled else {
                tracing::error!("the TLS certificate reload task panicked; certificates are no longer reloaded");
                return;
            };
            self = reloader;
            match outcome {
                Reload::Unchanged => {}
                Reload::Swapped => {
                    let files: Vec<String> = self.files.iter().map(|f| f.cert.display().to_string()).collect();
                    let truststore = self.client.as_ref().map(|c| c.truststore.display().to_string());
                    tracing::info!(
                        certificates = ?files,
                        ?truststore,
                        "TLS certificates reloaded; new handshakes use them"
                    );
                }
                Reload::Refused(error) => tracing::error!(
                    %error,
                    "the changed TLS certificate files cannot be used; the previous certificates stay in service"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, (cert, key): &(String, String)) -> CertKeyFiles {
        let files = CertKeyFiles { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    fn dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hgw-tls-server-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sni_chooses_by_san_with_a_default() {
        let dir = dir("sni");
        let files = vec![
            write(&dir, "default", &issue(&["default.test"])),
            write(&dir, "a", &issue(&["a.test", "*.wild.test"])),
            write(&dir, "b", &issue(&["b.test", "a.test"])),
        ];
        let contents = read_all(&files).unwrap();
        let certs = Certificates::build(&files, &contents).unwrap();
        let which = |sni| certs.keys.iter().position(|k| Arc::ptr_eq(k, certs.choose(sni))).unwrap();
        assert_eq!(which(None), 0);
        assert_eq!(which(Some("unknown.test")), 0);
        assert_eq!(which(Some("a.test")), 1, "the first certificate naming a host keeps it");
        assert_eq!(which(Some("B.TEST.")), 2, "names compare without case or the root dot");
        assert_eq!(which(Some("x.wild.test")), 1);
        assert_eq!(which(Some("wild.test")), 0, "a wildcard needs a label");
        assert_eq!(which(Some("x.y.wild.test")), 0, "a wildcard matches one label only");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let dir = dir("bad");
        let good = write(&dir, "good", &issue(&["a.test"]));
        let other = issue(&["b.test"]);
        let missing = CertKeyFiles { cert: good.cert.clone(), key: dir.join("missing.key") };
        let error = ServerTls::load(vec![missing], true, None).err().unwrap().to_string();
        assert!(error.contains("missing.key"), "{error}");
        let mismatch = CertKeyFiles { cert: good.cert.clone(), key: write(&dir, "other", &other).key };
        let error = ServerTls::load(vec![mismatch], true, None).err().unwrap();
        assert!(matches!(error, CertificateError::KeyMismatch { .. }), "{error}");
        let swapped = CertKeyFiles { cert: good.key.clone(), key: good.cert.clone() };
        assert!(matches!(ServerTls::load(vec![swapped], true, None), Err(CertificateError::NoCertificate { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_swaps_good_files_and_keeps_the_old_on_bad_ones() {
        let dir = dir("reload");
        let files = write(&dir, "site", &issue(&["a.test"]));
        let mut tls = ServerTls::load(vec![files.clone()], true, None).unwrap();
        let serving = |tls: &ServerTls| tls.reloader.resolver.current.load().choose(None).cert[0].clone();
        let first = serving(&tls);
        assert_eq!(tls.reloader.poll(), Reload::Unchanged);
        write(&dir, "site", &issue(&["a.test"]));
        assert_eq!(tls.reloader.poll(), Reload::Swapped);
        let second = serving(&tls);
        assert_ne!(first, second);
        std::fs::write(&files.key, "garbage").unwrap();
        assert!(matches!(tls.reloader.poll(), Reload::Refused(e) if e.contains("site.key")));
        assert_eq!(tls.reloader.poll(), Reload::Unchanged, "a refusal is reported once");
        assert_eq!(serving(&tls), second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
