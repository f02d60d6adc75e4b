//! Counters in Redis, in Gravitee's layout, so hgw agents and Gravitee gateways sharing a Redis count
//! together: a hash per key with `counter`, `limit`, `reset` (epoch ms) and `subscription`, expiring
//! when its window ends.

use super::{CounterError, CounterState, Hit};
use crate::redis::Redis;

/// One atomic step per key (a single key, so it runs on Redis Cluster too).
///
/// Gravitee's script adds the weight with `HINCRBY` and, on a hash without `limit`, stores `limit`,
/// `reset` and `subscription` and sets the expiry. Leases extend it: they are granted only up to the
/// limit and counted when granted. The expiry is relative (`PEXPIRE period`) rather than `PEXPIREAT
/// reset`, so a clock difference between this host and Redis cannot leave a counter without expiry.
///
/// KEYS[1] = counter key; ARGV = count, lease, limit, period ms, reset ms, subscription.
/// Returns {counter after, reset ms, granted}.
const SCRIPT: &str = r"
local key = KEYS[1]
local count = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local reset = redis.call('HGET', key, 'reset')
if (not reset) or redis.call('HEXISTS', key, 'limit') == 0 then
  reset = ARGV[5]
  redis.call('HSET', key, 'limit', ARGV[3], 'reset', reset, 'subscription', ARGV[6])
  redis.call('PEXPIRE', key, ARGV[4])
end
local before = tonumber(redis.call('HGET', key, 'counter') or '0')
local granted = 0
if lease > 0 and before < limit then
  granted = math.min(lease, limit - before)
end
local after = redis.call('HINCRBY', key, 'counter', count + granted)
return {after, tonumber(reset), granted}
";

pub struct RedisCounters {
    redis: Redis,
    script: ::redis::Script,
}

impl RedisCounters {
    pub fn new(redis: Redis) -> RedisCounters {
        RedisCounters { redis, script: ::redis::Script::new(SCRIPT) }
    }

    /// Runs the script once per key, all keys at once: the multiplexed connection pipelines them, so a
    /// batch costs about one round trip whatever its size.
    pub async fn apply(&self, groups: &[Hit], now_ms: i64) -> Result<Vec<CounterState>, CounterError> {
        let calls = groups.iter().map(|hit| {
            let mut invocation = self.script.key(&hit.key);
            invocation
                .arg(hit.count)
                .arg(hit.lease)
                .arg(hit.limit)
                .arg(hit.period_ms.max(1))
                .arg(now_ms.saturating_add(hit.period_ms as i64))
                .arg(&hit.subscription);
            async move {
                let (value, reset_at_ms, granted): (i64, i64, i64) = self.redis.invoke_script(&invocation).await?;
                if value < 0 || granted < 0 {
                    return Err(CounterError::Reply(format!("counter {value}, granted {granted} for {}", hit.key)));
                }
                Ok(CounterState { value: value as u64, reset_at_ms, granted: granted as u64 })
            }
        });
        futures::future::try_join_all(calls).await
    }
}
