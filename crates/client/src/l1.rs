//! L1: the in-process listings, read without a lock, an await or an allocation.
//!
//! Reads vastly outnumber writes (a write is a fetch, a revalidation or an invalidation), so
//! each of a few shards is an immutable map behind an `ArcSwap`: a read is one atomic load and
//! one hash lookup; a write copies its shard under the shard's writer lock and swaps it in.
//! The bound is the number of listings: past it, the least recently fetched listing leaves.
//! Listings older than `max_age` (the cache's `max_stale`, past which nothing serves them) are
//! swept by writes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A map keyed by L1 slots, which are already seeded hashes: hashed again by nothing.
pub(crate) type SlotMap<V> = HashMap<u64, V, BuildHasherDefault<SlotHasher>>;

/// Passes a slot through as its own hash.
#[derive(Default)]
pub(crate) struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` slots are hashed here; anything else is folded in rather than lost.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, slot: u64) {
        self.0 = slot;
    }
}

/// Shards: enough that a write copies a small map, few enough to scan when evicting.
const SHARDS: usize = 16;

/// What L1 needs of a stored listing.
pub(crate) trait Aged {
    /// When the listing was fetched (or last confirmed), in unix milliseconds.
    fn fetched_at_ms(&self) -> i64;
}

pub(crate) struct L1<E> {
    shards: Box<[Shard<E>]>,
    len: AtomicUsize,
    max_entries: usize,
    max_age_ms: i64,
}

/// What a shard's readers load: shared (`Arc`) so that a reader may keep a per-thread copy of
/// the shard checked against it (`arc_swap::Cache`, see `CachedClient::get`).
pub(crate) type ShardMap<E> = Arc<ArcSwap<SlotMap<Arc<E>>>>;

struct Shard<E> {
    map: ShardMap<E>,
    /// Serialises this shard's writers (readers never take it).
    write: Mutex<()>,
}

impl<E: Aged> L1<E> {
    pub(crate) fn new(max_entries: u64, max_age: std::time::Duration) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard {
                map: Arc::new(ArcSwap::from_pointee(SlotMap::default())),
                write: Mutex::new(()),
            })
            .collect();
        Self {
            shards,
            len: AtomicUsize::new(0),
            max_entries: usize::try_from(max_entries.max(1)).unwrap_or(usize::MAX),
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn shard(&self, slot: u64) -> &Shard<E> {
        // The slot is a hash, used as is by the shard's map: its low bits pick the bucket and
        // its top seven the tag, so the shard is picked by bits neither uses.
        &self.shards[((slot >> 32) as usize) % SHARDS]
    }

    /// The shard holding `slot`, for a reader that keeps its own copy of it.
    #[inline]
    pub(crate) fn shard_map(&self, slot: u64) -> &ShardMap<E> {
        &self.shard(slot).map
    }

    /// Runs `read` on the listing in `slot`, without cloning it.
    #[inline]
    pub(crate) fn peek<R>(&self, slot: u64, read: impl FnOnce(&Arc<E>) -> R) -> Option<R> {
        self.shard(slot).map.load().get(&slot).map(read)
    }

    pub(crate) fn get(&self, slot: u64) -> Option<Arc<E>> {
        self.peek(slot, Arc::clone)
    }

    /// Stores `entry` in `slot`, sweeping listings older than `max_age` at `now_ms` from its
    /// shard, then evicting the least recently fetched listing while over the bound.
    pub(crate) fn insert(&self, slot: u64, entry: Arc<E>, now_ms: i64) {
        let horizon = now_ms.saturating_sub(self.max_age_ms);
        self.edit(slot, |map| {
            let before = map.len();
            map.retain(|_, e| e.fetched_at_ms() >= horizon);
            map.insert(slot, entry);
            map.len() as isize - before as isize
        });
        while self.len.load(Ordering::Acquire) > self.max_entries {
            if !self.evict_oldest(slot) {
                break;
            }
        }
    }

    /// Removes whatever is in `slot`.
    pub(crate) fn remove(&self, slot: u64) {
        self.edit(slot, |map| -isize::from(map.remove(&slot).is_some()));
    }

    /// Removes `entry` from `slot` if it is still the one stored there.
    pub(crate) fn remove_if_same(&self, slot: u64, entry: &Arc<E>) {
        if self.peek(slot, |e| Arc::ptr_eq(e, entry)) != Some(true) {
            return;
        }
        self.edit(slot, |map| {
            let same = map.get(&slot).is_some_and(|e| Arc::ptr_eq(e, entry));
            if same {
                map.remove(&slot);
            }
            -isize::from(same)
        });
    }

    /// The slots whose listing `doomed` picks, removed; how many.
    pub(crate) fn remove_where(&self, doomed: impl Fn(&E) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            if !shard.map.load().values().any(|e| doomed(e)) {
                continue;
            }
            let _writer = shard.write.lock().unwrap_or_else(|e| e.into_inner());
            let mut map = SlotMap::clone(&shard.map.load());
            let before = map.len();
            map.retain(|_, e| !doomed(e));
            let gone = before - map.len();
            shard.map.store(Arc::new(map));
            self.len.fetch_sub(gone, Ordering::AcqRel);
            removed += gone;
        }
        removed
    }

    /// Copies `slot`'s shard, lets `change` edit it (returning the change in length) and swaps
    /// the copy in.
    fn edit(&self, slot: u64, change: impl FnOnce(&mut SlotMap<Arc<E>>) -> isize) {
        let shard = self.shard(slot);
        let _writer = shard.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = SlotMap::clone(&shard.map.load());
        let delta = change(&mut map);
        shard.map.store(Arc::new(map));
        if delta >= 0 {
            self.len.fetch_add(delta.unsigned_abs(), Ordering::AcqRel);
        } else {
            self.len.fetch_sub(delta.unsigned_abs(), Ordering::AcqRel);
        }
    }

    /// Evicts the least recently fetched listing other than `keep`; false when there is none.
    fn evict_oldest(&self, keep: u64) -> bool {
        let oldest = self
            .shards
            .iter()
            .flat_map(|shard| {
                let map = shard.map.load_full();
                map.iter()
                    .filter(|(slot, _)| **slot != keep)
                    .map(|(slot, e)| (*slot, e.clone()))
                    .collect::<Vec<_>>()
            })
            .min_by_key(|(_, e)| e.fetched_at_ms());
        match oldest {
            Some((slot, entry)) => {
                self.remove_if_same(slot, &entry);
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct At(i64);
    impl Aged for At {
        fn fetched_at_ms(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn the_least_recently_fetched_listing_leaves_past_the_bound() {
        let l1 = L1::new(3, Duration::from_secs(3600));
        for (slot, at) in [(1u64, 10), (2, 5), (3, 20)] {
            l1.insert(slot, Arc::new(At(at)), 30);
        }
        l1.insert(4, Arc::new(At(30)), 30);
        assert_eq!(l1.len(), 3);
        assert!(l1.get(2).is_none(), "fetched first, evicted first");
        assert_eq!([1, 3, 4].map(|s| l1.get(s).map(|e| e.0)), [Some(10), Some(20), Some(30)]);
        // Replacing a slot does not count twice.
        l1.insert(4, Arc::new(At(31)), 31);
        assert_eq!(l1.len(), 3);
        assert_eq!(l1.peek(4, |e| e.0), Some(31));
    }

    #[test]
    fn writes_sweep_listings_past_max_age_and_removals_are_exact() {
        let l1 = L1::new(100, Duration::from_millis(1_000));
        // Slots 0 and 16 share a shard (as do all slots below 2^32).
        l1.insert(0, Arc::new(At(0)), 0);
        l1.insert(16, Arc::new(At(2_000)), 2_000);
        assert!(l1.get(0).is_none(), "older than max_age at the write");
        assert_eq!(l1.len(), 1);
        let stored = l1.get(16).unwrap();
        l1.remove_if_same(16, &Arc::new(At(2_000)));
        assert!(l1.get(16).is_some(), "another listing of the slot is left alone");
        l1.remove_if_same(16, &stored);
        assert!(l1.get(16).is_none());
        for slot in 0..40 {
            l1.insert(slot, Arc::new(At(3_000 + slot as i64)), 3_000);
        }
        assert_eq!(l1.remove_where(|e| e.0 % 2 == 0), 20);
        assert_eq!(l1.len(), 20);
        l1.remove(1);
        l1.remove(1);
        assert_eq!(l1.len(), 19);
    }
}
