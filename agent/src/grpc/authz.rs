//! Authorization of every gRPC call, in one tower layer in front of all services: it reads the
//! connection's [`Peer`] (TLS client certificate or Unix socket uid), decides whether that caller may
//! use the called service, and hands the services a [`Caller`] to scope what they do.
//!
//! | service | who |
//! |---|---|
//! | `grpc.health.v1.Health`, reflection, `hgw.v1.Identity/Join` | anyone who completed TLS, or the socket |
//! | `hgw.v1.Identity/Renew` | a dataplane certificate |
//! | `hgw.v1.ConfigDiscovery`, `Analytics`, `RateLimit`, `OAuth2`, `Cache` | a dataplane certificate, or the socket |
//! | `hgw.v1.Admin` | an admin certificate, or the socket from the agent's own uid or root |

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tonic::codegen::http;

use crate::identity::{Caller, Peer, Role};

/// Who may use a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Anyone,
    Dataplanes,
    CertifiedDataplanes,
    Admins,
}

fn audience(path: &str) -> Option<Audience> {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    Some(match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Audience::Anyone,
        "hgw.v1.Identity" if path.ends_with("/Join") => Audience::Anyone,
        "hgw.v1.Identity" => Audience::CertifiedDataplanes,
        "hgw.v1.ConfigDiscovery" | "hgw.v1.Analytics" | "hgw.v1.RateLimit" | "hgw.v1.OAuth2" | "hgw.v1.Cache" => {
            Audience::Dataplanes
        }
        "hgw.v1.Admin" => Audience::Admins,
        _ => return None,
    })
}

fn caller(peer: Option<&Peer>) -> Caller {
    match peer {
        Some(Peer::Tls { identity: Some(id), .. }) => match &id.role {
            Role::Dataplane(name) => Caller::Dataplane(name.clone()),
            Role::Admin(name) => Caller::Admin(name.clone()),
        },
        Some(Peer::Unix { uid, .. }) => Caller::Local { uid: *uid },
        Some(Peer::Tls { identity: None, .. }) | None => Caller::Anonymous,
    }
}

/// The decision for one call: the caller, or the status refusing it.
fn decide(path: &str, peer: Option<&Peer>, admin_uids: &[u32]) -> Result<Caller, Status> {
    let caller = caller(peer);
    let Some(audience) = audience(path) else {
        return Err(Status::unimplemented(format!("unknown method {path}")));
    };
    let needs_certificate = || {
        Status::unauthenticated(
            "this call needs a client certificate issued by the agent's CA (hgw-agent pki issue, or join with a token)",
        )
    };
    let allowed = match (audience, &caller) {
        (Audience::Anyone, _) => true,
        (_, Caller::Anonymous) => return Err(needs_certificate()),
        (Audience::Dataplanes, Caller::Dataplane(_) | Caller::Local { .. }) => true,
        (Audience::CertifiedDataplanes, Caller::Dataplane(_)) => true,
        (Audience::Admins, Caller::Admin(_)) => true,
        (Audience::Admins, Caller::Local { uid }) => admin_uids.contains(uid),
        _ => false,
    };
    if allowed {
        Ok(caller)
    } else {
        let who = match &caller {
            Caller::Dataplane(id) => format!("dataplane `{id}`"),
            Caller::Admin(name) => format!("admin `{name}`"),
            Caller::Local { uid } => format!("local uid {uid}"),
            Caller::Anonymous => "anonymous".to_owned(),
        };
        Err(Status::permission_denied(format!("{who} may not call {path}")))
    }
}

/// The layer; `admin_uids` are the socket uids that count as operators (the agent's own and root).
#[derive(Clone)]
pub struct AuthzLayer {
    admin_uids: Arc<Vec<u32>>,
}

impl AuthzLayer {
    pub fn new() -> AuthzLayer {
        let mut uids = vec![nix::unistd::Uid::effective().as_raw(), 0];
        uids.dedup();
        AuthzLayer { admin_uids: Arc::new(uids) }
    }
}

impl Default for AuthzLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Authz<S> {
        Authz { inner, admin_uids: self.admin_uids.clone() }
    }
}

#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    admin_uids: Arc<Vec<u32>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let peer = request.extensions().get::<Peer>();
        match decide(request.uri().path(), peer, &self.admin_uids) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(path = request.uri().path(), peer = ?peer.map(Peer::describe), status = %status.message(), "gRPC call refused");
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SpiffeId;

    fn tls(id: Option<SpiffeId>) -> Peer {
        Peer::Tls { addr: "127.0.0.1:1".parse().unwrap(), identity: id }
    }

    #[test]
    fn the_table() {
        let dp = tls(Some(SpiffeId::dataplane("hgw.local", "dp-1")));
        let admin = tls(Some(SpiffeId::admin("hgw.local", "me")));
        let anonymous = tls(None);
        let root = Peer::Unix { uid: 0, pid: None };
        let other = Peer::Unix { uid: 4242, pid: None };
        let admins = [0u32];
        let ok = |path: &str, peer: &Peer| decide(path, Some(peer), &admins).is_ok();

        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/hgw.v1.Identity/Join",
        ] {
            assert!(ok(path, &anonymous), "{path}");
        }
        for path in ["/hgw.v1.ConfigDiscovery/Stream", "/hgw.v1.Analytics/Report", "/hgw.v1.RateLimit/Acquire"] {
            assert!(!ok(path, &anonymous) && ok(path, &dp) && !ok(path, &admin) && ok(path, &root), "{path}");
        }
        assert!(ok("/hgw.v1.Admin/DumpConfig", &admin) && ok("/hgw.v1.Admin/DumpConfig", &root));
        assert!(!ok("/hgw.v1.Admin/DumpConfig", &dp) && !ok("/hgw.v1.Admin/DumpConfig", &other));
        assert!(!ok("/hgw.v1.Admin/DumpConfig", &anonymous));
        assert!(ok("/hgw.v1.Identity/Renew", &dp) && !ok("/hgw.v1.Identity/Renew", &root));
        assert!(!ok("/evil.Service/Call", &root));
        assert_eq!(decide("/hgw.v1.Admin/DumpConfig", None, &admins).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            decide("/hgw.v1.Admin/DumpConfig", Some(&dp), &admins).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
