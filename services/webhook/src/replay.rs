//! The replay cache: a delivery accepted once is refused after (409). Shared by every replica
//! through Redis (`SET NX` with the window as TTL); while Redis is away, an in-process map
//! stands in (visible in health as `memory`), so one replica still refuses its own replays.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::redis_link::RedisLink;

/// Where the last check was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayBackend {
    Redis,
    Memory,
}

pub struct ReplayCache {
    redis: Option<Arc<RedisLink>>,
    prefix: String,
    ttl: Duration,
    local: Mutex<Local>,
    last: Mutex<ReplayBackend>,
}

/// The in-process stand-in: delivery key -> expiry (ms). Expired entries are swept at most
/// once a second, not on every request: a sweep walks every delivery of the window.
#[derive(Default)]
struct Local {
    seen: HashMap<String, i64>,
    next_sweep_ms: i64,
}

const SWEEP_EVERY_MS: i64 = 1_000;

impl ReplayCache {
    pub fn new(redis: Option<Arc<RedisLink>>, prefix: &str, ttl: Duration) -> Self {
        let backend = if redis.is_some() { ReplayBackend::Redis } else { ReplayBackend::Memory };
        Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            local: Mutex::new(Local::default()),
            last: Mutex::new(backend),
        }
    }

    pub fn backend(&self) -> ReplayBackend {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a delivery; `true` when it is new, `false` when it was seen within the TTL.
    /// `id` is the delivery's signature header (hashed: the key never holds the signature).
    pub async fn first_time(&self, id: &str, now_ms: i64) -> bool {
        let key = self.key(id);
        if let Some(redis) = &self.redis {
            let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let k = key.clone();
            let set: Option<Option<String>> = redis
                .run(|mut c| async move {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut c)
                        .await
                })
                .await;
            if let Some(reply) = set {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = ReplayBackend::Redis;
                // Keep the local map too, so a Redis outage right after does not forget it.
                self.remember_local(key, now_ms);
                return reply.is_some();
            }
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = ReplayBackend::Memory;
        }
        self.remember_local(key, now_ms)
    }

    /// Forgets a delivery that was accepted but could not be kept (the queue refused it), so
    /// its redelivery is taken instead of refused as a replay.
    pub async fn forget(&self, id: &str) {
        let key = self.key(id);
        self.local.lock().unwrap_or_else(|p| p.into_inner()).seen.remove(&key);
        if let Some(redis) = &self.redis {
            let _: Option<i64> = redis
                .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
                .await;
        }
    }

    fn key(&self, id: &str) -> String {
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        format!("{}webhook:replay:{digest}", self.prefix)
    }

    fn remember_local(&self, key: String, now_ms: i64) -> bool {
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms >= local.next_sweep_ms {
            local.seen.retain(|_, until| *until > now_ms);
            local.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
        match local.seen.get(&key) {
            Some(&until) if until > now_ms => false,
            _ => {
                local.seen.insert(key, now_ms.saturating_add(ttl));
                true
            }
        }
    }
}
