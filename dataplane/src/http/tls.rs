//! TLS to backends (`https://` endpoints) with rustls and the `ring` provider.
//!
//! Trust is the system roots (read once per process, so corporate CAs installed on the host work) plus
//! the CAs of the endpoint's `ssl.trustStore`. Hostname verification is on unless the definition turns
//! it off; `trustAll` accepts any certificate and is only ever set explicitly.

use std::sync::{Arc, OnceLock};

use hgw_proto::v1 as pb;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// An endpoint's TLS options as the agent sent them. Equal options share one client (and its pool).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    pub trust_all: bool,
    pub verify_hostname: bool,
    /// Extra trusted CAs (PEM bundle), empty for system roots only.
    pub trusted_ca_pem: String,
    /// Client certificate chain and key (PEM), for mTLS to the endpoint.
    pub client_identity: Option<(String, String)>,
}

/// Why TLS options cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("trusted CA PEM: {0}")]
    TrustedCa(String),
    #[error("client certificate PEM: {0}")]
    ClientCert(String),
    #[error("client key PEM: {0}")]
    ClientKey(String),
    #[error("client certificate and key need each other")]
    IncompleteIdentity,
    #[error("rustls: {0}")]
    Rustls(String),
}

impl TryFrom<pb::TlsOptions> for TlsOptions {
    type Error = TlsError;

    fn try_from(options: pb::TlsOptions) -> Result<Self, Self::Error> {
        let pb::TlsOptions {
            trust_all,
            disable_hostname_verification,
            trusted_ca_pem,
            client_cert_pem,
            client_key_pem,
        } = options;
        let client_identity = match (client_cert_pem.trim().is_empty(), client_key_pem.trim().is_empty()) {
            (true, true) => None,
            (false, false) => Some((client_cert_pem, client_key_pem)),
            _ => return Err(TlsError::IncompleteIdentity),
        };
        let options =
            TlsOptions { trust_all, verify_hostname: !disable_hostname_verification, trusted_ca_pem, client_identity };
        // Parse now, so a bad PEM is refused with the update rather than at the first request.
        options.client_config()?;
        Ok(options)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The host's trusted roots, read once (it costs milliseconds and the files rarely change).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's trusted certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system root certificates found: https endpoints need a trustStore");
        }
        tracing::debug!(added, ignored, "system root certificates loaded");
        roots
    })
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

impl TlsOptions {
    /// The rustls configuration (without ALPN: the connector sets it from the HTTP version).
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = builder.dangerous().with_custom_certificate_verifier(self.verifier()?);
        match &self.client_identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert_pem, key_pem)) => {
                let chain = parse_certs(cert_pem).map_err(TlsError::ClientCert)?;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                    .map_err(|e| TlsError::ClientKey(e.to_string()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::Rustls(e.to_string()))
            }
        }
    }

    /// How the server's certificate is checked.
    fn verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        let provider = provider();
        Ok(if self.trust_all {
            Arc::new(TrustAll(provider.signature_verification_algorithms))
        } else {
            let mut roots = system_roots().clone();
            if !self.trusted_ca_pem.trim().is_empty() {
                for cert in parse_certs(&self.trusted_ca_pem).map_err(TlsError::TrustedCa)? {
                    roots.add(cert).map_err(|e| TlsError::TrustedCa(e.to_string()))?;
                }
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            if self.verify_hostname { webpki } else { Arc::new(AnyHostname(webpki)) }
        })
    }
}

/// A configuration for clients that never speak TLS (plain `http://` endpoints): trusts nothing.
pub fn plain_only_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// `trustAll`: any certificate, any name. Handshake signatures are still checked, so the peer must
/// hold the key of the certificate it shows.
#[derive(Debug)]
struct TrustAll(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for TrustAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `hostnameVerifier: false`: the chain must still lead to a trusted root, whatever name it carries.
#[derive(Debug)]
struct AnyHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Pki {
        ca_pem: String,
        leaf: CertificateDer<'static>,
    }

    /// A CA and a leaf for `names`.
    fn pki(names: &[&str]) -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Pki { ca_pem: ca_cert.pem(), leaf: leaf.der().clone() }
    }

    fn verify(options: &TlsOptions, pki: &Pki, host: &str) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        options.verifier().unwrap().verify_server_cert(&pki.leaf, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn custom_ca_is_trusted_and_hostname_checked() {
        let pki = pki(&["backend.test"]);
        let options = TlsOptions { verify_hostname: true, trusted_ca_pem: pki.ca_pem.clone(), ..Default::default() };
        assert!(verify(&options, &pki, "backend.test").is_ok());
        let wrong_name = verify(&options, &pki, "other.test").unwrap_err();
        assert!(matches!(wrong_name, rustls::Error::InvalidCertificate(_)), "{wrong_name:?}");

        let no_hostname = TlsOptions { verify_hostname: false, ..options.clone() };
        assert!(verify(&no_hostname, &pki, "other.test").is_ok(), "name not checked");
    }

    #[test]
    fn unknown_ca_is_refused_unless_trust_all() {
        let pki = pki(&["backend.test"]);
        let system_only = TlsOptions { verify_hostname: true, ..Default::default() };
        let refused = verify(&system_only, &pki, "backend.test").unwrap_err();
        assert!(matches!(refused, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)), "{refused:?}");
        // Hostname verification off does not mean any issuer.
        let no_hostname = TlsOptions { verify_hostname: false, ..Default::default() };
        assert!(verify(&no_hostname, &pki, "other.test").is_err());
        let trust_all = TlsOptions { trust_all: true, ..Default::default() };
        assert!(verify(&trust_all, &pki, "other.test").is_ok());
    }

    #[test]
    fn bad_pem_is_refused_at_conversion() {
        let bad_ca = pb::TlsOptions { trusted_ca_pem: "not a pem".into(), ..Default::default() };
        assert!(matches!(TlsOptions::try_from(bad_ca), Err(TlsError::TrustedCa(_))));
        let half = pb::TlsOptions { client_cert_pem: pki(&["x"]).ca_pem, ..Default::default() };
        assert_eq!(TlsOptions::try_from(half), Err(TlsError::IncompleteIdentity));
        let ok = TlsOptions::try_from(pb::TlsOptions::default()).unwrap();
        assert!(ok.verify_hostname && !ok.trust_all, "verification is the default");
    }

    #[test]
    fn client_identity_builds() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client".to_owned()]).unwrap().self_signed(&key).unwrap();
        let options = TlsOptions::try_from(pb::TlsOptions {
            client_cert_pem: cert.pem(),
            client_key_pem: key.serialize_pem(),
            ..Default::default()
        })
        .unwrap();
        assert!(options.client_config().unwrap().client_auth_cert_resolver.has_certs());
        let bad_key = pb::TlsOptions { client_cert_pem: cert.pem(), client_key_pem: "x".into(), ..Default::default() };
        assert!(matches!(TlsOptions::try_from(bad_key), Err(TlsError::ClientKey(_))));
    }
}
