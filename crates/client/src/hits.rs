//! Cache hits counted at the cost of one atomic add, then moved into the Prometheus counters.
//!
//! A `metrics::Counter` increment through the Prometheus recorder is a dynamic call and two
//! atomic read-modify-writes (the value and its generation); a hit bumps two of them
//! (`infisical_cache_hit_total` and `infisical_fetch_total{source=cache}`), which was most of a
//! live handle's read. Each listing instead counts its hits in one `AtomicU64`, and the count
//! moves into both counters:
//! - every [`FLUSH_EVERY`], by one process-wide thread (so a scrape lags by at most that),
//! - at once through [`flush_all`] (`CachedClient::flush_metrics`), for an exact scrape or test,
//! - when the listing is dropped (replaced, invalidated, evicted), so no hit is ever lost.
//!
//! The counters keep the recorder they were resolved under (the listing's insert), whichever
//! thread flushes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How often the flusher thread moves pending hits into the counters.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The hits of one listing not yet in its counters, and the counters.
pub(crate) struct Hits {
    pending: AtomicU64,
    counters: [metrics::Counter; 2],
}

/// Every live [`Hits`] of the process, for the flusher; dead ones are pruned at each flush.
static LIVE: Mutex<Vec<Weak<Hits>>> = Mutex::new(Vec::new());

impl Hits {
    /// Hits counted into `counters`, known to the flusher (started on first use).
    pub(crate) fn register(counters: [metrics::Counter; 2]) -> Arc<Self> {
        let hits = Arc::new(Self::new(counters));
        start_flusher();
        live().push(Arc::downgrade(&hits));
        hits
    }

    fn new(counters: [metrics::Counter; 2]) -> Self {
        Self { pending: AtomicU64::new(0), counters }
    }

    /// One hit: a relaxed add (the count needs no ordering with anything else).
    #[inline]
    pub(crate) fn count(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the pending hits into the counters. Each hit is taken by exactly one flush.
    pub(crate) fn flush(&self) {
        // A plain load first: an idle listing's cache line is not written by every tick.
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let n = self.pending.swap(0, Ordering::Relaxed);
        if n > 0 {
            for counter in &self.counters {
                counter.increment(n);
            }
        }
    }

    #[cfg(test)]
    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
}

impl Drop for Hits {
    fn drop(&mut self) {
        self.flush();
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<Weak<Hits>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flushes every live listing's pending hits, and forgets the dropped ones. One flush runs at a
/// time, so when this returns every hit counted before the call is in the counters, including
/// those a concurrent flush (the thread's) had already taken.
pub(crate) fn flush_all() {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Upgraded under the registry's lock, flushed outside it: counters call into the recorder,
    // and dropping the last reference to a listing's hits flushes them (still under `_serial`).
    let alive: Vec<Arc<Hits>> = {
        let mut live = live();
        let mut alive = Vec::with_capacity(live.len());
        live.retain(|weak| match weak.upgrade() {
            Some(hits) => {
                alive.push(hits);
                true
            }
            None => false,
        });
        alive
    };
    for hits in &alive {
        hits.flush();
    }
    drop(alive);
}

/// Starts the flusher thread once per process. Like the coarse clock, it outlives any client;
/// it sleeps in real time because Prometheus scrapes in real time (freshness never depends on
/// it). Without a thread (none could be started) counts still arrive at drops and
/// [`flush_all`].
fn start_flusher() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("ikit-hit-metrics".into()).spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush_all();
            }
        });
        if spawned.is_err() {
            tracing::warn!("cannot start the cache hit flusher, hits reach metrics when flushed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Key, KeyName, Metadata, Recorder, SharedString, Unit};

    /// One counter shared by every key: what the tests here count.
    #[derive(Default)]
    struct Total(Arc<AtomicU64>);

    impl Recorder for Total {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> metrics::Counter {
            metrics::Counter::from_arc(self.0.clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    fn counters(recorder: &Total) -> [metrics::Counter; 2] {
        metrics::with_local_recorder(recorder, || {
            [metrics::counter!("hit"), metrics::counter!("fetch")]
        })
    }

    // The tests use listings the flusher thread does not know, so that nothing but the test
    // moves their counts.

    #[test]
    fn every_hit_reaches_both_counters_exactly_once_across_threads() {
        let recorder = Total::default();
        let hits = Hits::new(counters(&recorder));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        hits.count();
                    }
                });
            }
            // Flushes racing the counting neither lose nor double a hit.
            s.spawn(|| {
                for _ in 0..1_000 {
                    hits.flush();
                }
            });
        });
        hits.flush();
        assert_eq!(hits.pending(), 0);
        assert_eq!(recorder.0.load(Ordering::Relaxed), 2 * 40_000, "both counters, each hit");
        hits.flush();
        assert_eq!(recorder.0.load(Ordering::Relaxed), 2 * 40_000, "a second flush adds nothing");
    }

    #[test]
    fn a_dropped_listing_flushes_its_hits() {
        let recorder = Total::default();
        let hits = Hits::new(counters(&recorder));
        for _ in 0..3 {
            hits.count();
        }
        assert_eq!(recorder.0.load(Ordering::Relaxed), 0, "counted, not yet flushed");
        drop(hits);
        assert_eq!(recorder.0.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn flush_all_reaches_registered_listings() {
        let recorder = Total::default();
        let hits = Hits::register(counters(&recorder));
        hits.count();
        flush_all();
        // The flusher thread may have taken the hit first; either way it is counted once.
        assert_eq!(hits.pending(), 0);
        assert!(live().iter().any(|w| w.ptr_eq(&Arc::downgrade(&hits))));
    }
}
