//! The replay cache: a delivery accepted once is refused after (409). Shared by every replica
//! through Redis (`SET NX` with the window as TTL); while Redis is away, an in-process map
//! stands in (visible in health as `memory`), so one replica still refuses its own replays.

use std::collections::{HashMap, VecDeque};
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

/// The in-process stand-in: delivery digest -> expiry (ms), and the same entries in the order
/// they were taken, which (one TTL for all) is the order they expire in, so expired entries are
/// dropped from the front as time passes, never by walking the whole map: at thousands of
/// deliveries a second the window holds millions of them. 32 bytes a key, not its hex text.
#[derive(Default)]
struct Local {
    seen: HashMap<Digest32, i64>,
    by_expiry: VecDeque<(i64, Digest32)>,
}

type Digest32 = [u8; 32];

impl Local {
    /// Drops what expired by `now_ms`. An entry taken again after it expired sits in the
    /// queue twice; only the entry whose expiry the map still holds removes it.
    fn sweep(&mut self, now_ms: i64) {
        while let Some(&(until, digest)) = self.by_expiry.front() {
            if until > now_ms {
                break;
            }
            self.by_expiry.pop_front();
            if self.seen.get(&digest) == Some(&until) {
                self.seen.remove(&digest);
            }
        }
    }

    /// `true` when `digest` was not seen within the TTL; records it either way.
    fn first_time(&mut self, digest: Digest32, now_ms: i64, ttl_ms: i64) -> bool {
        self.sweep(now_ms);
        match self.seen.get(&digest) {
            Some(&until) if until > now_ms => false,
            _ => {
                let until = now_ms.saturating_add(ttl_ms);
                self.seen.insert(digest, until);
                self.by_expiry.push_back((until, digest));
                true
            }
        }
    }
}

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
        let digest = digest(id);
        if let Some(redis) = &self.redis {
            let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let k = self.key(&digest);
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
                self.remember_local(digest, now_ms);
                return reply.is_some();
            }
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = ReplayBackend::Memory;
        }
        self.remember_local(digest, now_ms)
    }

    /// Forgets a delivery that was accepted but could not be kept (the queue refused it), so
    /// its redelivery is taken instead of refused as a replay.
    pub async fn forget(&self, id: &str) {
        let digest = digest(id);
        // Its queue entry stays behind and is dropped when it expires.
        self.local.lock().unwrap_or_else(|p| p.into_inner()).seen.remove(&digest);
        if let Some(redis) = &self.redis {
            let key = self.key(&digest);
            let _: Option<i64> = redis
                .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
                .await;
        }
    }

    fn key(&self, digest: &Digest32) -> String {
        format!("{}webhook:replay:{}", self.prefix, hex::encode(digest))
    }

    fn remember_local(&self, digest: Digest32, now_ms: i64) -> bool {
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        self.local.lock().unwrap_or_else(|p| p.into_inner()).first_time(digest, now_ms, ttl)
    }
}

fn digest(id: &str) -> Digest32 {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_map_refuses_within_the_ttl_and_takes_again_after() {
        let mut local = Local::default();
        let (a, b) = (digest("a"), digest("b"));
        assert!(local.first_time(a, 1_000, 100));
        assert!(!local.first_time(a, 1_099, 100));
        assert!(local.first_time(b, 1_050, 100));
        // `a` expired at 1_100 and was swept; `b` (until 1_150) is kept.
        assert!(local.first_time(a, 1_100, 100));
        assert!(!local.first_time(b, 1_100, 100));
        assert_eq!(local.seen.len(), 2);
    }

    #[test]
    fn sweeping_drops_expired_entries_only_once_each() {
        let mut local = Local::default();
        for n in 0..1_000 {
            assert!(local.first_time(digest(&n.to_string()), n, 10));
        }
        // Everything taken before 990 expired; the last ten are kept.
        local.sweep(999);
        assert_eq!((local.seen.len(), local.by_expiry.len()), (10, 10));
        // A forgotten key taken again is queued twice; its first, stale entry leaves it be.
        let again = digest("again");
        assert!(local.first_time(again, 1_000, 10));
        local.seen.remove(&again);
        assert!(local.first_time(again, 1_005, 10));
        local.sweep(1_010);
        assert!(local.seen.contains_key(&again));
        local.sweep(1_015);
        assert!(local.seen.is_empty() && local.by_expiry.is_empty());
    }
}
