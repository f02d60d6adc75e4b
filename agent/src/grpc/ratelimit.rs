//! `hgw.v1.RateLimit`: dataplanes' only way to the shared counters.

use std::sync::Arc;

use hgw_proto::v1 as pb;
use hgw_proto::v1::rate_limit_server::RateLimit;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::ratelimit::{CounterStore, Hit};

/// Hits one call may carry: a dataplane batches the requests waiting at one moment, far fewer than this.
const MAX_HITS_PER_CALL: usize = 10_000;

pub struct RateLimitService {
    pub counters: Arc<CounterStore>,
    pub metrics: Arc<Metrics>,
}

/// Converts and checks one wire hit (the dataplane is trusted, but a bad message must not reach Redis).
fn hit(index: usize, wire: pb::CounterHit) -> Result<Hit, Status> {
    let pb::CounterHit { key, limit, period_ms, subscription, count, lease } = wire;
    if key.is_empty() || period_ms == 0 {
        return Err(Status::invalid_argument(format!("hits[{index}]: a key and a period are required")));
    }
    Ok(Hit { key, limit, period_ms, subscription, count, lease })
}

#[tonic::async_trait]
impl RateLimit for RateLimitService {
    async fn acquire(&self, request: Request<pb::AcquireRequest>) -> Result<Response<pb::AcquireResponse>, Status> {
        let pb::AcquireRequest { dataplane_id: _, hits } = request.into_inner();
        if hits.len() > MAX_HITS_PER_CALL {
            return Err(Status::invalid_argument(format!("at most {MAX_HITS_PER_CALL} hits per call")));
        }
        let hits = hits.into_iter().enumerate().map(|(i, h)| hit(i, h)).collect::<Result<Vec<_>, _>>()?;
        self.metrics.ratelimit_calls.inc();
        self.metrics.ratelimit_hits.add(hits.len() as u64);
        match self.counters.acquire(&hits, crate::sync::now_ms()).await {
            Ok(states) => Ok(Response::new(pb::AcquireResponse {
                counters: states
                    .into_iter()
                    .map(|s| pb::CounterState { value: s.value, reset_at_ms: s.reset_at_ms, granted: s.granted })
                    .collect(),
            })),
            Err(error) => {
                self.metrics.ratelimit_errors.inc();
                tracing::debug!(%error, "rate-limit counters unavailable");
                Err(Status::unavailable(format!("rate-limit counters unavailable: {error}")))
            }
        }
    }
}
