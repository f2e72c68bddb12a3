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

pub type Digest32 = [u8; 32];

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

    /// Records a batch of deliveries at once, in order; for each, `true` when it is new and
    /// `false` when it was seen within the TTL (also earlier in the same batch). One pipelined
    /// round trip to Redis for the lot (`SET NX PX` per delivery): the receiver's group-commit
    /// writer checks a whole batch this way instead of one round trip per request. Each entry
    /// is a delivery's [`digest`] and the time it was received.
    pub async fn first_time_many(&self, checks: &[(Digest32, i64)]) -> Vec<bool> {
        if checks.is_empty() {
            return Vec::new();
        }
        if let Some(redis) = &self.redis {
            let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut pipe = redis::pipe();
            for (digest, _) in checks {
                pipe.cmd("SET").arg(self.key(digest)).arg(1).arg("NX").arg("PX").arg(ttl_ms);
            }
            let replies: Option<Vec<Option<String>>> =
                redis.run(|mut c| async move { pipe.query_async(&mut c).await }).await;
            if let Some(replies) = replies.filter(|r| r.len() == checks.len()) {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = ReplayBackend::Redis;
                // Keep the local map too, so a Redis outage right after does not forget them.
                let ttl = self.ttl_ms();
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                for (digest, now_ms) in checks {
                    local.first_time(*digest, *now_ms, ttl);
                }
                return replies.into_iter().map(|r| r.is_some()).collect();
            }
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = ReplayBackend::Memory;
        }
        let ttl = self.ttl_ms();
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        checks.iter().map(|(digest, now_ms)| local.first_time(*digest, *now_ms, ttl)).collect()
    }

    /// Forgets deliveries that were accepted but could not be kept (the queue refused them),
    /// so their redelivery is taken instead of refused as a replay.
    pub async fn forget_many(&self, digests: &[Digest32]) {
        if digests.is_empty() {
            return;
        }
        {
            // Their expiry entries stay behind and are dropped when they expire.
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            for digest in digests {
                local.seen.remove(digest);
            }
        }
        if let Some(redis) = &self.redis {
            let keys: Vec<String> = digests.iter().map(|d| self.key(d)).collect();
            let _: Option<i64> = redis
                .run(|mut c| async move { redis::cmd("DEL").arg(keys).query_async(&mut c).await })
                .await;
        }
    }

    fn key(&self, digest: &Digest32) -> String {
        format!("{}webhook:replay:{}", self.prefix, hex::encode(digest))
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A delivery's replay identity: the SHA-256 of its signature header (the cache never holds
/// the signature itself). Computed by the request's own task, not the shared writer.
pub fn digest(id: &str) -> Digest32 {
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

    #[tokio::test]
    async fn a_batch_refuses_a_replay_within_it_and_across_batches_in_process() {
        let cache = ReplayCache::new(None, "t:", Duration::from_millis(100));
        let (a, b) = (digest("a"), digest("b"));
        // `a` twice in one batch: the second is the replay.
        assert_eq!(
            cache.first_time_many(&[(a, 1_000), (b, 1_000), (a, 1_000)]).await,
            [true, true, false]
        );
        // A later batch: both replays within the TTL, `a` new again after it.
        assert_eq!(cache.first_time_many(&[(b, 1_050), (a, 1_099)]).await, [false, false]);
        assert_eq!(cache.first_time_many(&[(a, 1_100)]).await, [true]);
        // Forgotten (the queue refused it): taken again at once.
        cache.forget_many(&[a]).await;
        assert_eq!(cache.first_time_many(&[(a, 1_101), (a, 1_101)]).await, [true, false]);
        assert_eq!(cache.backend(), ReplayBackend::Memory);
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
