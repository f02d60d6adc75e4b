//! The agent as the dataplane's OAuth2 [`Introspector`]: one `hgw.v1.OAuth2/Introspect` call per
//! token check. Nothing is cached here: the agent caches active answers (never past `exp`), so a
//! revoked or expired token is not kept alive by dataplanes.

use std::time::Duration;

use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use hgw_proto::v1::o_auth2_client::OAuth2Client;
use tonic::transport::Channel;

use crate::api::security::Introspector;

/// How long a request waits for the agent (which bounds its own call to the server at 10 s).
pub const TIMEOUT: Duration = Duration::from_secs(12);

#[derive(Debug, Clone)]
pub struct AgentIntrospector {
    client: OAuth2Client<Channel>,
}

impl AgentIntrospector {
    /// `channel`: a lazily connecting channel to the agent.
    pub fn new(channel: Channel) -> AgentIntrospector {
        AgentIntrospector { client: OAuth2Client::new(channel) }
    }
}

impl Introspector for AgentIntrospector {
    fn introspect(
        &self,
        api_id: &str,
        plan_id: &str,
        token: &str,
    ) -> BoxFuture<'static, Result<pb::IntrospectResponse, String>> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(pb::IntrospectRequest {
            api_id: api_id.to_owned(),
            plan_id: plan_id.to_owned(),
            token: token.to_owned(),
        });
        request.set_timeout(TIMEOUT);
        Box::pin(async move {
            match tokio::time::timeout(TIMEOUT, client.introspect(request)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(format!("agent: {}", status.message())),
                Err(_) => Err(format!("agent did not answer within {TIMEOUT:?}")),
            }
        })
    }
}
