//! `hgw.v1.RateLimit`: dataplanes' only way to the shared counters.
//!
//! Every hit is resolved against the deployment set this agent runs now ([`DeployedCounters`]): a
//! dataplane names a deployed policy step, the agent supplies its key, limit and period. A dataplane
//! still running an older set may name a step that is gone: that hit alone is refused and the dataplane
//! applies the policy's error strategy.

use std::sync::{Arc, Mutex};

use hgw_proto::counters::MAX_HITS_PER_CALL;
use hgw_proto::v1 as pb;
use hgw_proto::v1::rate_limit_server::RateLimit;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::ratelimit::{CounterStore, DeployedCounters, Hit, Refusal};
use crate::store::{ConfigStore, Snapshot};

pub struct RateLimitService {
    pub counters: Arc<CounterStore>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<ConfigStore>,
    /// The counting steps of the last snapshot seen (rebuilt when the store publishes another one).
    deployed: Mutex<(Arc<Snapshot>, Arc<DeployedCounters>)>,
}

impl RateLimitService {
    pub fn new(counters: Arc<CounterStore>, metrics: Arc<Metrics>, store: Arc<ConfigStore>) -> RateLimitService {
        let snapshot = store.current();
        let deployed = Arc::new(DeployedCounters::new(&snapshot));
        RateLimitService { counters, metrics, store, deployed: Mutex::new((snapshot, deployed)) }
    }

    /// The counting steps of the deployment set the agent runs now.
    fn deployed(&self) -> Arc<DeployedCounters> {
        let current = self.store.current();
        let mut cached = self.deployed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !Arc::ptr_eq(&cached.0, &current) {
            let deployed = Arc::new(DeployedCounters::new(&current));
            *cached = (current, deployed);
        }
        cached.1.clone()
    }

    fn refused(&self, refusal: &Refusal, limit: u64) -> pb::CounterState {
        match refusal {
            Refusal::TableFull => self.metrics.ratelimit_table_full.inc(),
            _ => self.metrics.ratelimit_refused.inc(),
        }
        tracing::debug!(reason = refusal.label(), %refusal, "rate-limit hit refused");
        pb::CounterState { refused: refusal.to_string(), limit, ..Default::default() }
    }
}

#[tonic::async_trait]
impl RateLimit for RateLimitService {
    async fn acquire(&self, request: Request<pb::AcquireRequest>) -> Result<Response<pb::AcquireResponse>, Status> {
        let pb::AcquireRequest { dataplane_id: _, hits } = request.into_inner();
        if hits.len() > MAX_HITS_PER_CALL {
            self.metrics.ratelimit_refused.add(hits.len() as u64);
            return Err(Status::invalid_argument(format!("at most {MAX_HITS_PER_CALL} hits per call")));
        }
        let deployed = self.deployed();
        let resolved: Vec<Result<Hit, Refusal>> = hits.iter().map(|hit| deployed.resolve(hit)).collect();
        let valid: Vec<Hit> = resolved.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        self.metrics.ratelimit_calls.inc();
        self.metrics.ratelimit_hits.add(hits.len() as u64);
        let mut states = match self.counters.acquire(&valid, crate::sync::now_ms()).await {
            Ok(states) => states.into_iter(),
            Err(error) => {
                self.metrics.ratelimit_errors.inc();
                tracing::debug!(%error, "rate-limit counters unavailable");
                return Err(Status::unavailable(format!("rate-limit counters unavailable: {error}")));
            }
        };
        let counters = resolved
            .iter()
            .map(|resolved| match resolved {
                Err(refusal) => self.refused(refusal, 0),
                Ok(hit) => match states.next().flatten() {
                    Some(s) => pb::CounterState {
                        value: s.value,
                        reset_at_ms: s.reset_at_ms,
                        granted: s.granted,
                        refused: String::new(),
                        limit: hit.limit,
                    },
                    None => self.refused(&Refusal::TableFull, hit.limit),
                },
            })
            .collect();
        Ok(Response::new(pb::AcquireResponse { counters }))
    }
}
