//! The entries of `cache-redis` resources, as Gravitee's Redis cache resource keeps them: the value
//! under `gravitee:{key}` (then `:{deployment}` with `releaseCache`), written with `SETEX` for the
//! shorter of the resource's and the entry's time to live (`SET` when neither has one).
//!
//! The agent holds each resource's Redis (address, password, TLS) and one small pool per resource,
//! opened at the first use; dataplanes ask through `hgw.v1.Cache`. As Gravitee's resource, the cache
//! fails open: a Redis that cannot be reached or answers an error is a miss on read and a dropped
//! entry on write, logged here at most once per [`WARN_INTERVAL`] per resource, never a failed request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hgw_proto::v1 as pb;

use crate::redis::{Redis, RedisConfig, RedisNode, Topology};
use crate::secret::Secret;

/// Gravitee's Redis cache resource prefixes every key with this.
pub const KEY_PREFIX: &str = "gravitee:";
/// The largest entry read back: a larger value (written by something else) is a miss, so an answer
/// never exceeds what a dataplane accepts in one message.
pub const MAX_VALUE_BYTES: u64 = 3 * 1024 * 1024;
/// Connections per resource: entries are small and each command is one round trip.
const POOL_SIZE: usize = 4;
/// Resources with an open pool at most; past it, the pools are dropped and reopened on use.
const MAX_CLIENTS: usize = 256;
const WARN_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct RedisCaches {
    /// Pools by resource id (the id carries a digest of the resource's configuration, so a changed
    /// address or password is a new id and a new pool).
    clients: Mutex<HashMap<String, Redis>>,
    warned: Mutex<HashMap<String, Instant>>,
}

impl RedisCaches {
    pub fn new() -> RedisCaches {
        RedisCaches::default()
    }

    /// The entry under `key`; `None` when there is none or Redis could not be read.
    pub async fn get(&self, resource_id: &str, connection: &pb::RedisCacheConnection, key: &str) -> Option<Vec<u8>> {
        let redis = self.client(resource_id, connection)?;
        match redis.get_bytes_bounded(&redis_key(connection, key), MAX_VALUE_BYTES).await {
            Ok(Some(value)) if value.len() as u64 <= MAX_VALUE_BYTES => Some(value),
            Ok(Some(_)) => {
                self.warn(resource_id, "an entry larger than 3 MiB is read as a miss");
                None
            }
            Ok(None) => None,
            Err(e) => {
                self.warn(resource_id, &format!("read as a miss: {e}"));
                None
            }
        }
    }

    /// Stores `value` under `key` for the time Gravitee's resource gives it.
    pub async fn put(
        &self,
        resource_id: &str,
        connection: &pb::RedisCacheConnection,
        key: &str,
        value: &[u8],
        element_ttl: u64,
    ) {
        let Some(redis) = self.client(resource_id, connection) else {
            return;
        };
        let key = redis_key(connection, key);
        let ttl = time_to_live(connection.time_to_live_seconds, element_ttl);
        let mut command = ::redis::cmd("SET");
        command.arg(&key).arg(value);
        if ttl > 0 {
            command.arg("EX").arg(ttl);
        }
        if let Err(e) = redis.query::<()>(&command).await {
            self.warn(resource_id, &format!("entry not stored: {e}"));
        }
    }

    fn client(&self, resource_id: &str, connection: &pb::RedisCacheConnection) -> Option<Redis> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(redis) = clients.get(resource_id) {
            return Some(redis.clone());
        }
        let redis = match Redis::new(&redis_config(connection)) {
            Ok(redis) => redis,
            Err(e) => {
                drop(clients);
                self.warn(resource_id, &format!("cannot reach Redis: {e}"));
                return None;
            }
        };
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        tracing::info!(resource = resource_id, redis = %redis.describe(), "cache-redis resource: Redis pool opened");
        clients.insert(resource_id.to_owned(), redis.clone());
        Some(redis)
    }

    fn warn(&self, resource_id: &str, what: &str) {
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.get(resource_id).is_some_and(|at| now.duration_since(*at) < WARN_INTERVAL) {
            return;
        }
        if warned.len() >= MAX_CLIENTS {
            warned.clear();
        }
        warned.insert(resource_id.to_owned(), now);
        tracing::warn!(
            resource = resource_id,
            "cache-redis resource: {what} (the cache fails open; next warning for it in 30 s at the earliest)"
        );
    }
}

/// Gravitee's `RedisDelegate.buildKey`.
pub fn redis_key(connection: &pb::RedisCacheConnection, key: &str) -> String {
    let mut redis_key = String::with_capacity(KEY_PREFIX.len() + key.len() + 24);
    redis_key.push_str(KEY_PREFIX);
    redis_key.push_str(key);
    if connection.release_cache {
        redis_key.push(':');
        redis_key.push_str(&connection.deployed_at);
    }
    redis_key
}

/// Gravitee's `RedisDelegate.resolveTtl`: the entry's own time to live when the resource has none or
/// a longer one; 0: no expiry.
pub fn time_to_live(resource: u64, element: u64) -> u64 {
    if element > 0 && (resource == 0 || resource > element) { element } else { resource }
}

fn redis_config(connection: &pb::RedisCacheConnection) -> RedisConfig {
    let node = |host: &str, port: u32| RedisNode {
        host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        port: u16::try_from(port).unwrap_or(crate::redis::DEFAULT_PORT),
    };
    let topology = if connection.sentinel_nodes.is_empty() {
        Topology::Standalone(node(&connection.host, connection.port))
    } else {
        Topology::Sentinel {
            master: connection.sentinel_master.clone(),
            sentinels: connection.sentinel_nodes.iter().map(|n| node(&n.host, n.port)).collect(),
        }
    };
    RedisConfig {
        topology,
        tls: connection.use_ssl,
        username: None,
        password: (!connection.password.is_empty()).then(|| Secret::new(connection.password.clone())),
        db: 0,
        ca_pem: None,
        timeout: Duration::from_millis(connection.timeout_ms.clamp(1, 60_000)),
        pool_size: POOL_SIZE,
        insecure: connection.trust_all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_time_to_live_as_gravitees_resource() {
        let mut connection = pb::RedisCacheConnection::default();
        assert_eq!(redis_key(&connection, "api:1:2:3"), "gravitee:api:1:2:3");
        connection.release_cache = true;
        connection.deployed_at = "1700000000000".into();
        assert_eq!(redis_key(&connection, "api:1:2:3"), "gravitee:api:1:2:3:1700000000000");
        assert_eq!(time_to_live(0, 0), 0);
        assert_eq!(time_to_live(0, 30), 30);
        assert_eq!(time_to_live(60, 0), 60);
        assert_eq!(time_to_live(60, 30), 30);
        assert_eq!(time_to_live(10, 30), 10);
    }
}
