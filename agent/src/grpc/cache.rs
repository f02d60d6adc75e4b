//! `hgw.v1.Cache`: the entries of `cache-redis` resources for dataplanes' cache steps
//! ([`crate::cache`]).
//!
//! A dataplane names the API and the resource; the agent finds the resource's Redis in the deployment
//! set it runs now and builds the Redis key itself, so a caller can neither reach another Redis nor
//! read or write outside the resource's `gravitee:` keys.

use std::sync::Arc;

use hgw_proto::v1 as pb;
use hgw_proto::v1::cache_server::Cache;
use tonic::{Request, Response, Status};

use crate::cache::{MAX_VALUE_BYTES, RedisCaches};
use crate::store::ConfigStore;

/// The policy's keys are hashes and ids plus the rendered `key` template: far below this.
const MAX_KEY_BYTES: usize = 8 * 1024;

pub struct CacheService {
    pub store: Arc<ConfigStore>,
    pub caches: Arc<RedisCaches>,
}

impl CacheService {
    fn connection(&self, api_id: &str, resource_id: &str, key: &str) -> Result<pb::RedisCacheConnection, Status> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(format!("a cache key is at most {MAX_KEY_BYTES} bytes")));
        }
        let snapshot = self.store.current();
        snapshot
            .apis
            .get(api_id)
            .and_then(|api| api.redis_caches.get(resource_id).cloned())
            .ok_or_else(|| Status::not_found(format!("no cache-redis resource `{resource_id}` in API `{api_id}`")))
    }
}

#[tonic::async_trait]
impl Cache for CacheService {
    async fn get(&self, request: Request<pb::CacheGetRequest>) -> Result<Response<pb::CacheGetResponse>, Status> {
        let pb::CacheGetRequest { api_id, resource_id, key } = request.into_inner();
        let connection = self.connection(&api_id, &resource_id, &key)?;
        let value = self.caches.get(&resource_id, &connection, &key).await;
        Ok(Response::new(pb::CacheGetResponse { found: value.is_some(), value: value.unwrap_or_default() }))
    }

    async fn put(&self, request: Request<pb::CachePutRequest>) -> Result<Response<pb::CachePutResponse>, Status> {
        let pb::CachePutRequest { api_id, resource_id, key, value, time_to_live_seconds } = request.into_inner();
        // The bound entries are read back with (a dataplane stores answers up to 1 MiB, headers and
        // base64 included, well under it).
        if value.len() as u64 > MAX_VALUE_BYTES {
            return Err(Status::invalid_argument(format!("a cache entry is at most {MAX_VALUE_BYTES} bytes")));
        }
        let connection = self.connection(&api_id, &resource_id, &key)?;
        self.caches.put(&resource_id, &connection, &key, &value, time_to_live_seconds).await;
        Ok(Response::new(pb::CachePutResponse {}))
    }
}
