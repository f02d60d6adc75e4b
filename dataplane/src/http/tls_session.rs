//! What an HTTPS connection tells EL (`#request.ssl`): the peer, the client's verified certificate
//! and the gateway's own certificate for the name the client asked for.
//!
//! Certificate subjects are parsed on first use and kept for the connection's other requests: most
//! APIs never read them, and an mTLS client sends many requests over one connection.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hgw_el::{DnAttribute, SslSide, X500Principal};
use rustls::sign::CertifiedKey;

/// One HTTPS connection's session, shared by its requests.
pub struct TlsSession {
    peer: SocketAddr,
    peer_host: String,
    /// The DER of the client's leaf certificate, verified by the handshake.
    client: Option<Arc<[u8]>>,
    /// The certificate served to this client (chosen by its SNI name).
    server: Option<Arc<CertifiedKey>>,
    subjects: OnceLock<[Option<X500Principal>; 2]>,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession").field("peer", &self.peer).field("client", &self.client.is_some()).finish()
    }
}

impl TlsSession {
    pub fn new(peer: SocketAddr, client: Option<Arc<[u8]>>, server: Option<Arc<CertifiedKey>>) -> TlsSession {
        TlsSession { peer, peer_host: peer.ip().to_string(), client, server, subjects: OnceLock::new() }
    }

    /// `#request.ssl.clientHost`: the peer's address (Gravitee: the TLS session's peer host).
    pub fn client_host(&self) -> &str {
        &self.peer_host
    }

    /// `#request.ssl.clientPort`.
    pub fn client_port(&self) -> u16 {
        self.peer.port()
    }

    /// `#request.ssl.client` / `#request.ssl.server`: that certificate's subject (`None`: no client
    /// certificate, or one whose subject cannot be read).
    pub fn principal(&self, side: SslSide) -> Option<&X500Principal> {
        let [client, server] = self.subjects.get_or_init(|| {
            [
                self.client.as_deref().and_then(subject),
                self.server.as_ref().and_then(|key| key.cert.first()).and_then(|der| subject(der.as_ref())),
            ]
        });
        match side {
            SslSide::Client => client.as_ref(),
            SslSide::Server => server.as_ref(),
        }
    }
}

/// The subject of the certificate `der`, for EL.
pub fn subject(der: &[u8]) -> Option<X500Principal> {
    use x509_parser::der_parser::asn1_rs::ToDer;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let rdns: Vec<Vec<DnAttribute>> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| DnAttribute {
                    oid: atv.attr_type().to_id_string(),
                    value: atv.as_str().ok().map(str::to_owned),
                    der: atv.attr_value().to_der_vec().unwrap_or_default(),
                })
                .collect()
        })
        .collect();
    Some(X500Principal::new(&rdns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_reads_as_java_prints_it() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "FR");
        dn.push(rcgen::DnType::OrganizationName, "Gravitee, Inc");
        dn.push(rcgen::DnType::OrganizationalUnitName, "Team");
        dn.push(rcgen::DnType::CommonName, "app-a");
        dn.push(rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]), "ops@a.test");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let principal = subject(cert.der()).unwrap();
        assert!(
            principal.dn().starts_with("1.2.840.113549.1.9.1=#"),
            "types without an RFC 2253 keyword are written as hex DER: {}",
            principal.dn()
        );
        assert!(principal.dn().ends_with(",CN=app-a,OU=Team,O=Gravitee\\, Inc,C=FR"), "{}", principal.dn());
        assert_eq!(principal.first("2.5.4.3"), Some("app-a"));
        assert_eq!(principal.all("e"), ["ops@a.test"]);
        assert!(subject(b"not a certificate").is_none());
    }
}
