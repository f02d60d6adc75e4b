//! `retry`: makes the endpoint call again while it fails or the `condition` (EL over `#response`)
//! holds, as Gravitee's policy wraps its endpoint invoker: at most `maxRetries` more attempts, each
//! bounded by `timeout` ms and `delay` ms apart, the request body replayed from memory. With
//! `lastResponse` the last attempt's answer is relayed even when the condition holds; otherwise a
//! call that never succeeds answers 502. The step only arms the retry: the exchange runs it around
//! the endpoint call.

use std::sync::Arc;
use std::time::Duration;

use hgw_proto::v1 as pb;

use super::{Outcome, Policy, PolicyError, RequestExchange, invalid};

/// How the endpoint call is retried.
#[derive(Debug)]
pub struct RetrySettings {
    pub condition: Option<hgw_el::Expression>,
    pub max_retries: u32,
    pub timeout: Duration,
    pub delay: Duration,
    pub last_response: bool,
}

#[derive(Debug)]
pub struct Retry {
    settings: Arc<RetrySettings>,
}

impl Retry {
    pub fn compile(config: pb::RetryPolicy) -> Result<Retry, PolicyError> {
        let condition = match config.condition.trim() {
            "" => None,
            text => Some(hgw_el::parse(text).map_err(|e| invalid("retry.condition", format!("EL {e}")))?),
        };
        Ok(Retry {
            settings: Arc::new(RetrySettings {
                condition,
                max_retries: config.max_retries.max(1),
                timeout: Duration::from_millis(config.timeout_ms.max(1)),
                delay: Duration::from_millis(config.delay_ms),
                last_response: config.last_response,
            }),
        })
    }
}

impl Policy for Retry {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        *exchange.retry = Some(self.settings.clone());
        Outcome::Continue
    }

    fn uses_el(&self) -> bool {
        // The condition reads the response through the EL request info.
        self.settings.condition.is_some()
    }
}
