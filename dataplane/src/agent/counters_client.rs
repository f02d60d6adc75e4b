//! The rate-limit counters client: the agent as the [`Backend`] of [`crate::policies::counters`].
//! Strict hits of concurrent requests are batched into one `hgw.v1.RateLimit/Acquire` call (a few
//! calls in flight at most; what arrives meanwhile joins the next batch).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use hgw_proto::v1::rate_limit_client::RateLimitClient;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::transport::Channel;

use crate::policies::counters::{Backend, Unavailable};

/// Hits sent in one call at most (what the agent accepts).
const MAX_BATCH: usize = hgw_proto::counters::MAX_HITS_PER_CALL;
/// Calls in flight at once; hits arriving meanwhile wait for the next batch. Strict mode is bound by
/// the round trip, not by the calls: fewer, larger batches cost the agent and Redis less (measured with
/// tests/bench/ratelimit.sh: 1 or 4 in flight gave the same throughput, 1 with 8× fewer Redis calls).
const MAX_IN_FLIGHT: usize = 2;
/// Hits waiting for a batch; past this, hits fail over to the error strategy (never block).
const QUEUE: usize = 65_536;
/// The agent as a [`Backend`]: hits go into a queue that a batching task drains into `Acquire` calls.
pub struct AgentBackend {
    queue: mpsc::Sender<(pb::CounterHit, oneshot::Sender<Result<pb::CounterState, Unavailable>>)>,
}

impl AgentBackend {
    /// Starts the batching task on `channel` (a lazily connecting channel to the agent).
    pub fn start(channel: Channel, dataplane_id: String, timeout: Duration) -> AgentBackend {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(batch_calls(RateLimitClient::new(channel), pending, dataplane_id, timeout));
        AgentBackend { queue }
    }
}

impl Backend for AgentBackend {
    fn acquire(&self, hit: pb::CounterHit) -> BoxFuture<'static, Result<pb::CounterState, Unavailable>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue.try_send((hit, reply));
        Box::pin(async move {
            queued.map_err(|_| Unavailable("rate-limit queue full".into()))?;
            answer.await.map_err(|_| Unavailable("rate-limit call abandoned".into()))?
        })
    }
}

type Waiting = (pb::CounterHit, oneshot::Sender<Result<pb::CounterState, Unavailable>>);

async fn batch_calls(
    client: RateLimitClient<Channel>,
    mut pending: mpsc::Receiver<Waiting>,
    dataplane_id: String,
    timeout: Duration,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(waiting) => batch.push(waiting),
                Err(_) => break,
            }
        }
        let mut client = client.clone();
        let dataplane_id = dataplane_id.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (hits, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let expected = hits.len();
            let mut request = tonic::Request::new(pb::AcquireRequest { dataplane_id, hits });
            request.set_timeout(timeout);
            let answers = match tokio::time::timeout(timeout, client.acquire(request)).await {
                Ok(Ok(response)) => {
                    let counters = response.into_inner().counters;
                    if counters.len() == expected {
                        Ok(counters)
                    } else {
                        Err(Unavailable(format!("the agent answered {} of {expected} hits", counters.len())))
                    }
                }
                Ok(Err(status)) => Err(Unavailable(format!("agent: {}", status.message()))),
                Err(_) => Err(Unavailable(format!("agent did not answer within {timeout:?}"))),
            };
            match answers {
                Ok(counters) => {
                    for (reply, state) in replies.into_iter().zip(counters) {
                        let _ = reply.send(Ok(state));
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "rate-limit call failed");
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
