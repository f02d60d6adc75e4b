//! `policy-override-request-method`: the backend is called with another method (Gravitee's
//! override-http-method policy; later steps and EL see the new method too).

use hgw_proto::v1 as pb;
use http::Method;

use super::{Outcome, Policy, PolicyError, RequestExchange, invalid};

#[derive(Debug)]
pub struct OverrideMethod {
    method: Method,
}

impl OverrideMethod {
    pub fn compile(config: pb::OverrideMethodPolicy) -> Result<OverrideMethod, PolicyError> {
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| invalid("method", format!("`{}` is not an HTTP method", config.method)))?;
        Ok(OverrideMethod { method })
    }
}

impl Policy for OverrideMethod {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        exchange.parts.method = self.method.clone();
        Outcome::Continue
    }
}
