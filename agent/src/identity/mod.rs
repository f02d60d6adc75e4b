//! Who may talk to the agent: the certificate authority of its dataplanes ([`pki`]), join tokens
//! ([`join`]), the Unix socket's folder and peer checks ([`socket`]), and the identities every gRPC call
//! is authorized by ([`SpiffeId`], [`Caller`]).
//!
//! Identities are SPIFFE-style URI SANs, as Istio and Linkerd name workloads:
//! `spiffe://{trust domain}/dataplane/{id}` and `spiffe://{trust domain}/admin/{name}`.

pub mod issue;
pub mod join;
pub mod pki;
pub mod socket;

use std::fmt;

/// The trust domain when `--trust-domain` is not given: a name that is never a real DNS domain, so two
/// installations that keep it still have distinct CAs (the CA, not the name, is what is trusted).
pub const DEFAULT_TRUST_DOMAIN: &str = "hgw.local";

/// What an identity is allowed to be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// A dataplane: config for its own id, analytics, rate-limit counters.
    Dataplane(String),
    /// An operator: the `hgw.v1.Admin` views.
    Admin(String),
}

/// A parsed `spiffe://{trust domain}/{dataplane|admin}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub role: Role,
}

/// Why a name cannot be an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{0}` is not spiffe://{{trust domain}}/dataplane/{{id}} or spiffe://{{trust domain}}/admin/{{name}}")]
    Form(String),
    #[error(
        "`{0}`: ids and names are 1 to 128 characters of letters, digits, `.`, `-` and `_`, starting with a letter or digit"
    )]
    Name(String),
    #[error("`{0}` is not a trust domain (lower-case letters, digits, `.`, `-`)")]
    TrustDomain(String),
}

/// Checks a dataplane id or admin name: it becomes a URI path segment, so keep it to a safe alphabet.
pub fn check_name(name: &str) -> Result<(), IdError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(IdError::Name(name.to_owned())) }
}

pub fn check_trust_domain(domain: &str) -> Result<(), IdError> {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
        && !domain.starts_with(['.', '-']);
    if ok { Ok(()) } else { Err(IdError::TrustDomain(domain.to_owned())) }
}

impl SpiffeId {
    pub fn dataplane(trust_domain: &str, id: &str) -> SpiffeId {
        SpiffeId { trust_domain: trust_domain.to_owned(), role: Role::Dataplane(id.to_owned()) }
    }

    pub fn admin(trust_domain: &str, name: &str) -> SpiffeId {
        SpiffeId { trust_domain: trust_domain.to_owned(), role: Role::Admin(name.to_owned()) }
    }

    pub fn parse(uri: &str) -> Result<SpiffeId, IdError> {
        let form = || IdError::Form(uri.to_owned());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(form)?;
        let mut parts = rest.split('/');
        let (Some(domain), Some(kind), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(form());
        };
        check_trust_domain(domain)?;
        check_name(name)?;
        let role = match kind {
            "dataplane" => Role::Dataplane(name.to_owned()),
            "admin" => Role::Admin(name.to_owned()),
            _ => return Err(form()),
        };
        Ok(SpiffeId { trust_domain: domain.to_owned(), role })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::Dataplane(id) => write!(f, "spiffe://{}/dataplane/{id}", self.trust_domain),
            Role::Admin(name) => write!(f, "spiffe://{}/admin/{name}", self.trust_domain),
        }
    }
}

/// The peer of one gRPC connection, attached by the listener (TLS handshake or SO_PEERCRED) and read by
/// the authorization layer. It is the tonic connect-info of every request on that connection.
#[derive(Debug, Clone)]
pub enum Peer {
    /// TCP with TLS; `identity` is the SPIFFE id of the client certificate, `None` without one.
    Tls { addr: std::net::SocketAddr, identity: Option<SpiffeId> },
    /// The Unix socket; the kernel-reported uid of the connecting process (already checked against
    /// `--grpc-socket-allow-uid` when the connection was accepted).
    Unix { uid: u32, pid: Option<i32> },
}

impl Peer {
    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Peer::Tls { addr, identity: Some(id) } => format!("{addr} ({id})"),
            Peer::Tls { addr, identity: None } => format!("{addr} (no certificate)"),
            Peer::Unix { uid, pid: Some(pid) } => format!("unix uid {uid} pid {pid}"),
            Peer::Unix { uid, pid: None } => format!("unix uid {uid}"),
        }
    }
}

/// Who is calling, as the authorization layer decided it. Services read it from the request's
/// extensions to tag what they receive (analytics) or scope what they answer (config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A dataplane proven by a certificate: it may act under this id only.
    Dataplane(String),
    /// A local process on the Unix socket with an allowed uid: the agent's own supervised dataplanes
    /// or an operator on the host. It may use any dataplane id (the socket is the trust boundary).
    Local { uid: u32 },
    /// An operator with an admin certificate.
    Admin(String),
    /// A TLS client without a certificate: only health, reflection and `Identity/Join`.
    Anonymous,
}

impl Caller {
    /// The dataplane id this caller is bound to, if any.
    pub fn bound_dataplane(&self) -> Option<&str> {
        match self {
            Caller::Dataplane(id) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip() {
        let id = SpiffeId::parse("spiffe://hgw.local/dataplane/dp-1").unwrap();
        assert_eq!(id, SpiffeId::dataplane("hgw.local", "dp-1"));
        assert_eq!(id.to_string(), "spiffe://hgw.local/dataplane/dp-1");
        assert_eq!(SpiffeId::parse("spiffe://x.y/admin/me").unwrap().role, Role::Admin("me".into()));
        for bad in [
            "http://hgw.local/dataplane/a",
            "spiffe://hgw.local/dataplane",
            "spiffe://hgw.local/dataplane/a/b",
            "spiffe://hgw.local/other/a",
            "spiffe://HGW/dataplane/a",
            "spiffe://hgw.local/dataplane/../x",
            "spiffe://hgw.local/dataplane/",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
