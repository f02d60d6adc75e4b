//! `hgw.v1.OAuth2`: token introspection for dataplanes' `oauth2` plans ([`crate::oauth2`]).
//!
//! A dataplane names the API and the plan; the agent finds the plan's resource (endpoint and client
//! credentials) in the deployment set it runs now, so a caller can neither choose the server it calls
//! nor learn the credentials.

use std::sync::Arc;

use hgw_proto::v1 as pb;
use hgw_proto::v1::o_auth2_server::OAuth2;
use tonic::{Request, Response, Status};

use crate::oauth2::Introspector;
use crate::store::ConfigStore;

/// Tokens longer than this are refused without a call (no real access token comes close).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

pub struct OAuth2Service {
    pub store: Arc<ConfigStore>,
    pub introspector: Arc<Introspector>,
}

#[tonic::async_trait]
impl OAuth2 for OAuth2Service {
    async fn introspect(
        &self,
        request: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        let pb::IntrospectRequest { api_id, plan_id, token } = request.into_inner();
        if token.len() > MAX_TOKEN_BYTES {
            return Ok(Response::new(pb::IntrospectResponse {
                outcome: pb::IntrospectOutcome::Inactive as i32,
                ..Default::default()
            }));
        }
        let resource = {
            let snapshot = self.store.current();
            snapshot
                .apis
                .get(&api_id)
                .and_then(|api| api.plans.iter().find(|plan| plan.id == plan_id))
                .and_then(|plan| plan.oauth2.as_ref())
                .and_then(|oauth2| oauth2.introspection.clone())
                .ok_or_else(|| Status::not_found(format!("no oauth2 plan `{plan_id}` in API `{api_id}`")))?
        };
        let verdict = self.introspector.introspect(&resource, &token).await;
        Ok(Response::new(verdict.into()))
    }
}
