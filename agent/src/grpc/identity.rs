//! `hgw.v1.Identity`: join tokens and signing requests in, short-lived dataplane certificates out.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hgw_proto::v1::identity_server::Identity;
use hgw_proto::v1::{IssuedCertificate, JoinRequest, JoinResponse, RenewRequest, RenewResponse};
use tonic::{Request, Response, Status};

use crate::identity::join::JoinAuthenticator;
use crate::identity::pki::{CertificateAuthority, Issued};
use crate::identity::{Caller, SpiffeId};

/// A signing request is a few hundred bytes; anything far larger is not one.
const MAX_CSR_BYTES: usize = 16 * 1024;

pub struct IdentityService {
    pub ca: Arc<CertificateAuthority>,
    pub authenticator: Arc<dyn JoinAuthenticator>,
    pub trust_domain: String,
    /// Lifetime of issued dataplane certificates (`--dataplane-cert-ttl`).
    pub lifetime: Duration,
}

impl IdentityService {
    fn answer(&self, id: &SpiffeId, issued: Issued) -> IssuedCertificate {
        let not_after_ms =
            issued.not_after.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        IssuedCertificate {
            certificate_pem: issued.cert_pem,
            ca_pem: self.ca.ca_pem().to_owned(),
            not_after_ms,
            spiffe_id: id.to_string(),
        }
    }

    fn sign(&self, csr_pem: &str, id: &SpiffeId) -> Result<Issued, Status> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument("csr_pem is too large"));
        }
        self.ca.sign_request(csr_pem, id, self.lifetime).map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let JoinRequest { token, dataplane_id, csr_pem } = request.into_inner();
        let grant = match self.authenticator.authenticate(&token, dataplane_id.trim()).await {
            Ok(grant) => grant,
            Err(error) => {
                tracing::warn!(dataplane = %dataplane_id, reason = %error, "join refused");
                return Err(Status::permission_denied(format!("join refused: {error}")));
            }
        };
        let id = SpiffeId::dataplane(&self.trust_domain, &grant.dataplane_id);
        let issued = self.sign(&csr_pem, &id)?;
        tracing::info!(dataplane = %grant.dataplane_id, identity = %id, lifetime_s = self.lifetime.as_secs(), "dataplane joined");
        Ok(Response::new(JoinResponse { certificate: Some(self.answer(&id, issued)) }))
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let Some(Caller::Dataplane(dataplane)) = request.extensions().get::<Caller>().cloned() else {
            return Err(Status::unauthenticated("renewal needs the dataplane's current certificate"));
        };
        let RenewRequest { csr_pem } = request.into_inner();
        let id = SpiffeId::dataplane(&self.trust_domain, &dataplane);
        let issued = self.sign(&csr_pem, &id)?;
        tracing::info!(%dataplane, "dataplane certificate renewed");
        Ok(Response::new(RenewResponse { certificate: Some(self.answer(&id, issued)) }))
    }
}
