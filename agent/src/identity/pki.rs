//! The agent's certificate authority: it signs dataplane, admin and its own server certificates.
//!
//! The CA is made at first start in `{--state-dir}/pki/` (folder 0700, `ca-key.pem` 0600) and reused
//! afterwards; `--pki-dir` points at an operator's CA instead (the same two files, never created there).
//! Leaf certificates carry one SPIFFE URI SAN; the server certificate of the TCP listener is issued in
//! memory at each start and never written.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::SpiffeId;

/// File names inside the PKI folder.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// A CA made by the agent lives ten years: rotating it is a deliberate operator act (see the README).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The TCP listener's certificate is re-issued at every start; a year outlives any agent run.
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start a little in the past so a peer whose clock is behind still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why the CA cannot be used or a certificate not be issued.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("certificate: {0}")]
    Issue(String),
    #[error("certificate signing request: {0}")]
    Csr(String),
}

fn file_error(path: &Path, problem: impl ToString) -> PkiError {
    PkiError::File { path: path.display().to_string(), problem: problem.to_string() }
}

/// The loaded CA.
pub struct CertificateAuthority {
    dir: PathBuf,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// A certificate issued with a key made here (for `hgw-agent pki issue` and the server certificate).
pub struct IssuedKey {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

/// A certificate issued for a key the requester keeps (join and renewal).
pub struct Issued {
    pub cert_pem: String,
    pub not_after: SystemTime,
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, creating it first when `create` and the folder holds none. The folder
    /// and key must not be readable by group or others: the key signs every identity.
    pub fn open(dir: &Path, create: bool) -> Result<CertificateAuthority, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if create && !key_path.exists() && !cert_path.exists() {
            create_private_dir(dir)?;
            make_ca(dir)?;
        }
        let meta = std::fs::metadata(&key_path).map_err(|e| {
            file_error(
                &key_path,
                if create {
                    e.to_string()
                } else {
                    format!("{e} (--pki-dir must hold {CA_CERT_FILE} and {CA_KEY_FILE})")
                },
            )
        })?;
        if meta.mode() & 0o077 != 0 {
            return Err(file_error(
                &key_path,
                format!("the CA key is readable by group or others (mode {:o}); chmod 600 it", meta.mode() & 0o777),
            ));
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| file_error(&key_path, e))?;
        let ca_pem = std::fs::read_to_string(&cert_path).map_err(|e| file_error(&cert_path, e))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| file_error(&key_path, format!("not a PEM private key: {e}")))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| file_error(&cert_path, format!("not a PEM certificate: {e}")))?;
        if !same_public_key(&ca_der, &key) {
            return Err(file_error(&key_path, format!("does not match the certificate in {CA_CERT_FILE}")));
        }
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| file_error(&cert_path, format!("not a CA: {e}")))?;
        Ok(CertificateAuthority { dir: dir.to_owned(), ca_pem, ca_der, issuer })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM), which dataplanes and grpcurl pin.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a client certificate for `id` and a new key.
    pub fn issue_with_key(&self, id: &SpiffeId, lifetime: Duration) -> Result<IssuedKey, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Issue(e.to_string()))?;
        let issued = self.issue(id, &key, lifetime)?;
        Ok(IssuedKey { cert_pem: issued.cert_pem, key_pem: key.serialize_pem(), not_after: issued.not_after })
    }

    /// Issues a client certificate for `id` to the key of a signing request. Only the request's public
    /// key is used (its signature proves the requester holds the key); names come from the grant.
    pub fn sign_request(&self, csr_pem: &str, id: &SpiffeId, lifetime: Duration) -> Result<Issued, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Csr(e.to_string()))?;
        self.issue(id, &csr.public_key, lifetime)
    }

    fn issue(&self, id: &SpiffeId, key: &impl PublicKeyData, lifetime: Duration) -> Result<Issued, PkiError> {
        let uri = rcgen::string::Ia5String::try_from(id.to_string()).map_err(|e| PkiError::Issue(e.to_string()))?;
        let mut params = leaf_params(lifetime);
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.distinguished_name.push(DnType::CommonName, id.to_string());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_after = SystemTime::from(params.not_after);
        let cert = params.signed_by(key, &self.issuer).map_err(|e| PkiError::Issue(e.to_string()))?;
        Ok(Issued { cert_pem: cert.pem(), not_after })
    }

    /// A server certificate for the TCP listener naming `names` (IP addresses or DNS names).
    pub fn server_certificate(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Issue(e.to_string()))?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| PkiError::Issue(e.to_string()))?;
        let base = leaf_params(SERVER_CERT_LIFETIME);
        params.not_before = base.not_before;
        params.not_after = base.not_after;
        params.serial_number = base.serial_number;
        params.key_usages = base.key_usages;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "hgw-agent");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| PkiError::Issue(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.ca_der.clone()], key))
    }

    /// TLS for the TCP listener: the agent's server certificate; client certificates are optional at
    /// the handshake (health, reflection and join need none) but, when presented, must chain to this CA.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(|e| PkiError::Issue(format!("CA certificate: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        let (chain, key) = self.server_certificate(names)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Issue(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The SPIFFE identity in a verified client certificate (its first URI SAN that parses as one), if any
/// in `trust_domain`.
pub fn identity_of(cert: &CertificateDer<'_>, trust_domain: &str) -> Option<SpiffeId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let sans = parsed.subject_alternative_name().ok()??;
    sans.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => {
            SpiffeId::parse(uri).ok().filter(|id| id.trust_domain == trust_domain)
        }
        _ => None,
    })
}

fn same_public_key(cert: &CertificateDer<'_>, key: &KeyPair) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, parsed)| parsed.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
        .unwrap_or(false)
}

fn leaf_params(lifetime: Duration) -> CertificateParams {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + lifetime).into();
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// Creates `dir` with mode 0700, or checks that an existing one is ours and closed to others.
pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let meta = std::fs::metadata(dir).map_err(|e| file_error(dir, e))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(file_error(dir, format!("owned by uid {}, not by this agent", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| file_error(dir, e))?;
    }
    Ok(())
}

fn make_ca(dir: &Path) -> Result<(), PkiError> {
    let key = KeyPair::generate().map_err(|e| PkiError::Issue(e.to_string()))?;
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + CA_LIFETIME).into();
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, "hgw-agent CA");
    let cert = params.self_signed(&key).map_err(|e| PkiError::Issue(e.to_string()))?;
    // The certificate first, then the key is linked into place only if no other agent sharing this
    // state directory made one meanwhile (the key is what `open` checks for).
    write_new(&dir.join(CA_CERT_FILE).with_extension("pem.new"), cert.pem().as_bytes(), 0o644)?;
    let key_tmp = dir.join(CA_KEY_FILE).with_extension("pem.new");
    write_new(&key_tmp, key.serialize_pem().as_bytes(), 0o600)?;
    let won = std::fs::hard_link(&key_tmp, dir.join(CA_KEY_FILE)).is_ok();
    let _ = std::fs::remove_file(&key_tmp);
    if won {
        std::fs::rename(dir.join(CA_CERT_FILE).with_extension("pem.new"), dir.join(CA_CERT_FILE))
            .map_err(|e| file_error(&dir.join(CA_CERT_FILE), e))?;
        tracing::info!(dir = %dir.display(), "created the dataplane certificate authority");
    } else {
        let _ = std::fs::remove_file(dir.join(CA_CERT_FILE).with_extension("pem.new"));
    }
    Ok(())
}

/// Writes a file atomically with `mode` (through a temporary file in the same folder).
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_error(&tmp, e))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let ca = CertificateAuthority::open(&pki, true).unwrap();
        assert_eq!(std::fs::metadata(&pki).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(pki.join(CA_KEY_FILE)).unwrap().mode() & 0o777, 0o600);
        let again = CertificateAuthority::open(&pki, true).unwrap();
        assert_eq!(ca.ca_pem(), again.ca_pem());

        let id = SpiffeId::dataplane("hgw.local", "dp-1");
        let issued = ca.issue_with_key(&id, Duration::from_secs(60)).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(identity_of(&der, "hgw.local"), Some(id));
        assert_eq!(identity_of(&der, "other.domain"), None);
    }

    #[test]
    fn a_request_gets_the_granted_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::open(dir.path(), true).unwrap();
        let key = KeyPair::generate().unwrap();
        // The requester asks to be an admin; the grant says dataplane dp-2.
        let mut wanted = CertificateParams::default();
        wanted.subject_alt_names =
            vec![SanType::URI(rcgen::string::Ia5String::try_from("spiffe://hgw.local/admin/root").unwrap())];
        let csr = wanted.serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca.sign_request(&csr, &SpiffeId::dataplane("hgw.local", "dp-2"), Duration::from_secs(60)).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(identity_of(&der, "hgw.local"), Some(SpiffeId::dataplane("hgw.local", "dp-2")));
        assert!(ca.sign_request("garbage", &SpiffeId::dataplane("hgw.local", "x"), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn an_operator_ca_must_exist_and_keep_its_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let err = CertificateAuthority::open(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--pki-dir must hold"), "{err}");
        CertificateAuthority::open(dir.path(), true).unwrap();
        std::fs::set_permissions(dir.path().join(CA_KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CertificateAuthority::open(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("readable by group or others"), "{err}");
    }
}
