//! `latency`: the request waits `delay`, then goes on (Gravitee's latency policy, request phase).

use std::time::Duration;

use hgw_proto::v1 as pb;
use http::StatusCode;

use super::{Outcome, Policy, Reply, RequestExchange, Verdict};

#[derive(Debug)]
pub struct Latency {
    delay: Duration,
    /// A step without a time unit: Gravitee fails each request with a bare 500 (see the proto).
    broken: bool,
}

impl Latency {
    pub fn compile(config: pb::LatencyPolicy) -> Latency {
        Latency { delay: Duration::from_millis(config.delay_ms), broken: config.broken }
    }
}

impl Policy for Latency {
    fn on_request(&self, _exchange: &mut RequestExchange<'_>) -> Outcome {
        if self.broken {
            return Outcome::Respond(Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, "Internal Server Error"));
        }
        if self.delay.is_zero() {
            return Outcome::Continue;
        }
        let delay = self.delay;
        Outcome::Wait(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Verdict::default()
        }))
    }
}
