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
    local: Mutex<HashMap<String, i64>>,
    last: Mutex<ReplayBackend>,
}

impl ReplayCache {
    pub fn new(redis: Option<Arc<RedisLink>>, prefix: &str, ttl: Duration) -> Self {
        let backend = if redis.is_some() { ReplayBackend::Redis } else { ReplayBackend::Memory };
        Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            local: Mutex::new(HashMap::new()),
            last: Mutex::new(backend),
        }
    }

    pub fn backend(&self) -> ReplayBackend {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a delivery; `true` when it is new, `false` when it was seen within the TTL.
    /// `id` is the delivery's signature header (hashed: the key never holds the signature).
    pub async fn first_time(&self, id: &str, now_ms: i64) -> bool {
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        let key = format!("{}webhook:replay:{digest}", self.prefix);
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

    fn remember_local(&self, key: String, now_ms: i64) -> bool {
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, until| *until > now_ms);
        match map.get(&key) {
            Some(_) => false,
            None => {
                map.insert(key, now_ms.saturating_add(ttl));
                true
            }
        }
    }
}
