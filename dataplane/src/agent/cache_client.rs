//! The agent as the dataplane's [`RemoteCache`]: `hgw.v1.Cache` calls for the entries of `cache-redis`
//! resources. A read that fails or takes longer than [`GET_TIMEOUT`] is a miss (the endpoint is called,
//! as Gravitee's resource fails open); a write runs in the background and is dropped on failure (or when
//! [`MAX_PUTS_IN_FLIGHT`] are already under way).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use hgw_proto::v1::cache_client::CacheClient;
use tonic::transport::Channel;

use crate::policies::cache::RemoteCache;

/// How long a request waits for a cache read (the agent bounds each Redis command by the resource's
/// `timeout`, 2 s by default).
pub const GET_TIMEOUT: Duration = Duration::from_secs(3);
const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Failures are logged at most this often.
const WARN_INTERVAL_MS: u64 = 30_000;
/// Writes in flight at most: past it (an agent or Redis slower than the traffic), new entries are
/// dropped rather than queued, so a slow cache never piles up tasks and memory in the dataplane.
const MAX_PUTS_IN_FLIGHT: usize = 256;

#[derive(Debug)]
pub struct AgentCache {
    client: CacheClient<Channel>,
    /// Epoch milliseconds of the last warning.
    warned_at: Arc<AtomicU64>,
    puts_in_flight: Arc<AtomicUsize>,
}

impl AgentCache {
    /// `channel`: a lazily connecting channel to the agent.
    pub fn new(channel: Channel) -> AgentCache {
        AgentCache {
            client: CacheClient::new(channel),
            warned_at: Arc::new(AtomicU64::new(0)),
            puts_in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Logs `what` at most once per [`WARN_INTERVAL_MS`] (a dead agent would otherwise log every request).
fn warn_sometimes(warned_at: &AtomicU64, what: std::fmt::Arguments<'_>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let last = warned_at.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= WARN_INTERVAL_MS
        && warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!("cache-redis: {what} (next such warning in 30 s at the earliest)");
    }
}

impl RemoteCache for AgentCache {
    fn get(&self, api_id: &str, resource_id: &str, key: &str) -> BoxFuture<'static, Option<Bytes>> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(pb::CacheGetRequest {
            api_id: api_id.to_owned(),
            resource_id: resource_id.to_owned(),
            key: key.to_owned(),
        });
        request.set_timeout(GET_TIMEOUT);
        let warned_at = self.warned_at.clone();
        Box::pin(async move {
            match tokio::time::timeout(GET_TIMEOUT, client.get(request)).await {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    response.found.then(|| Bytes::from(response.value))
                }
                Ok(Err(status)) => {
                    let (code, message) = (status.code(), status.message());
                    warn_sometimes(&warned_at, format_args!("a read failed and is a miss: {code:?} {message}"));
                    None
                }
                Err(_) => {
                    warn_sometimes(&warned_at, format_args!("the agent did not answer a read within {GET_TIMEOUT:?}"));
                    None
                }
            }
        })
    }

    fn put(&self, api_id: &str, resource_id: &str, key: String, value: Vec<u8>, time_to_live: u64) {
        if self.puts_in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_PUTS_IN_FLIGHT {
            self.puts_in_flight.fetch_sub(1, Ordering::AcqRel);
            warn_sometimes(
                &self.warned_at,
                format_args!("{MAX_PUTS_IN_FLIGHT} writes in flight: an entry was dropped"),
            );
            return;
        }
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(pb::CachePutRequest {
            api_id: api_id.to_owned(),
            resource_id: resource_id.to_owned(),
            key,
            value,
            time_to_live_seconds: time_to_live,
        });
        request.set_timeout(PUT_TIMEOUT);
        let (warned_at, in_flight) = (self.warned_at.clone(), self.puts_in_flight.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(PUT_TIMEOUT, client.put(request)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    let (code, message) = (status.code(), status.message());
                    warn_sometimes(&warned_at, format_args!("an entry was not stored: {code:?} {message}"));
                }
                Err(_) => {
                    warn_sometimes(&warned_at, format_args!("the agent did not take an entry within {PUT_TIMEOUT:?}"))
                }
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
