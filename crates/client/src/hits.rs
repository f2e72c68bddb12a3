//! Cache hits counted without a read-modify-write, then moved into the Prometheus counters.
//!
//! A `metrics::Counter` increment through the Prometheus recorder is a dynamic call and two
//! atomic read-modify-writes (the value and its generation); a hit bumps two of them
//! (`infisical_cache_hit_total` and `infisical_fetch_total{source=cache}`), which was most of a
//! live handle's read. Each listing ([`Hits`]) instead gives every thread that reads it a cell of
//! its own: only that thread writes it (a plain load and store, no `lock` prefix, no cache line
//! shared with other readers), and a flush takes what each cell gained since the last flush. The
//! counts move into both counters:
//! - every [`FLUSH_EVERY`], by one process-wide thread (so a scrape lags by at most that),
//! - at once through [`flush_all`] (`CachedClient::flush_metrics`), for an exact scrape or test,
//! - when the listing is dropped (replaced, invalidated, evicted), so no hit is ever lost.
//!
//! The rule for exact counts: a flush sees every hit that happens before it, i.e. the hits of
//! the flushing thread and of any thread it has synchronised with (joined, received a message
//! from, awaited); a thread still reading may land its latest hits in the next flush instead.
//!
//! A thread finds its cell through a small direct-mapped table of its own (a few dozen slots),
//! keyed by the listing's address and holding only a `Weak` to it: the allocation's address
//! cannot be reused while the `Weak` lives, and no listing value is kept alive by the table.
//! A listing dropped meanwhile has already taken its cells' counts (no thread can count on a
//! listing nobody holds); its cell is forgotten when its slot is reused or the thread exits.
//!
//! The counters keep the recorder they were resolved under (the listing's insert), whichever
//! thread flushes them.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How often the flusher thread moves pending hits into the counters.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The hits of one listing not yet in its counters, and the counters.
pub(crate) struct Hits {
    /// Hits counted by a thread that could not use its table (torn down, or re-entered).
    shared: AtomicU64,
    /// Every thread's cell, with what flushes have taken from it.
    cells: Mutex<Vec<Taken>>,
    counters: [metrics::Counter; 2],
}

/// One thread's count for one listing: only that thread writes it, so a hit is a load and a
/// store. Aligned to its own cache lines so two threads' cells never share one.
#[repr(align(128))]
struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn bump(&self) {
        // Single writer: no read-modify-write needed, and none of the `lock` prefix's cost.
        self.0.store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// A cell and the part of its count the counters already have.
struct Taken {
    cell: Arc<Cell>,
    taken: u64,
}

/// A thread's slot for one listing: which listing (the `Weak` pins the address, not the value)
/// and the thread's cell in it.
struct Mine {
    hits: Weak<Hits>,
    cell: Arc<Cell>,
}

/// Slots in each thread's table: a power of two, a few listings per thread at the least cost.
const SLOTS: usize = 32;

thread_local! {
    static MINE: RefCell<[Option<Mine>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

/// The slot of a listing in a thread's table: a mix of its address.
#[inline]
fn slot_of(hits: *const Hits) -> usize {
    ((hits as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros()))
        as usize
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
        Self { shared: AtomicU64::new(0), cells: Mutex::new(Vec::new()), counters }
    }

    /// One hit, in this thread's cell (a new one on the thread's first hit of this listing).
    #[inline]
    pub(crate) fn count(self: &Arc<Self>) {
        let counted = MINE
            .try_with(|table| {
                let Ok(mut table) = table.try_borrow_mut() else { return false };
                let slot = &mut table[slot_of(Arc::as_ptr(self))];
                if let Some(mine) = slot
                    && std::ptr::eq(mine.hits.as_ptr(), Arc::as_ptr(self))
                {
                    mine.cell.bump();
                    return true;
                }
                let cell = self.new_cell();
                cell.bump();
                let evicted = slot.replace(Mine { hits: Arc::downgrade(self), cell });
                drop(table);
                drop(evicted);
                true
            })
            .unwrap_or(false);
        if !counted {
            self.shared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A cell for the calling thread, known to flushes from now on.
    #[cold]
    fn new_cell(&self) -> Arc<Cell> {
        let cell = Arc::new(Cell(AtomicU64::new(0)));
        lock(&self.cells).push(Taken { cell: cell.clone(), taken: 0 });
        cell
    }

    /// Moves the pending hits into the counters. Each hit is taken by exactly one flush: the
    /// cells are read under their lock, and the counters are bumped before it is released.
    pub(crate) fn flush(&self) {
        let mut cells = lock(&self.cells);
        // A plain load first: an idle listing's cache line is not written by every tick.
        let mut n = match self.shared.load(Ordering::Relaxed) {
            0 => 0,
            _ => self.shared.swap(0, Ordering::Relaxed),
        };
        cells.retain_mut(|t| {
            // Unique (acquire): the owning thread has let go (evicted or exited) after its last
            // store, which the load below therefore sees; the cell can go once taken.
            let orphaned = Arc::get_mut(&mut t.cell).is_some();
            let now = t.cell.0.load(Ordering::Relaxed);
            n += now - t.taken;
            t.taken = now;
            !orphaned
        });
        if n > 0 {
            for counter in &self.counters {
                counter.increment(n);
            }
        }
    }

    #[cfg(test)]
    fn pending(&self) -> u64 {
        let cells = lock(&self.cells);
        self.shared.load(Ordering::Relaxed)
            + cells.iter().map(|t| t.cell.0.load(Ordering::Relaxed) - t.taken).sum::<u64>()
    }

    #[cfg(test)]
    fn cells(&self) -> usize {
        lock(&self.cells).len()
    }
}

impl Drop for Hits {
    fn drop(&mut self) {
        // Whoever drops the last reference synchronised with every thread that counted (each
        // held a reference while counting), so every hit is seen here.
        self.flush();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn live() -> std::sync::MutexGuard<'static, Vec<Weak<Hits>>> {
    lock(&LIVE)
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
        let hits = Arc::new(Hits::new(counters(&recorder)));
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
        // The counting threads are joined: every one of their hits happens before this flush.
        hits.flush();
        assert_eq!(hits.pending(), 0);
        assert_eq!(recorder.0.load(Ordering::Relaxed), 2 * 40_000, "both counters, each hit");
        hits.flush();
        assert_eq!(recorder.0.load(Ordering::Relaxed), 2 * 40_000, "a second flush adds nothing");
    }

    #[test]
    fn a_thread_counts_in_its_own_cell_and_each_flush_takes_only_the_new_hits() {
        let recorder = Total::default();
        let hits = Arc::new(Hits::new(counters(&recorder)));
        for _ in 0..5 {
            hits.count();
        }
        assert_eq!(hits.cells(), 1, "one cell for this thread, however many hits");
        assert_eq!(recorder.0.load(Ordering::Relaxed), 0, "counted, not yet flushed");
        hits.flush();
        assert_eq!(recorder.0.load(Ordering::Relaxed), 10);
        hits.count();
        hits.flush();
        hits.flush();
        assert_eq!(recorder.0.load(Ordering::Relaxed), 12, "only the hit since the last flush");
        assert_eq!(hits.cells(), 1, "this thread still holds its cell");
        // Another thread gets a cell of its own.
        std::thread::scope(|s| {
            s.spawn(|| hits.count());
        });
        assert_eq!(hits.pending(), 1);
        hits.flush();
        assert_eq!(recorder.0.load(Ordering::Relaxed), 14);
        // (Its cell is forgotten at a flush once the thread's table is gone, which happens
        // after the join returns: not asserted, it is a matter of timing.)
    }

    #[test]
    fn a_thread_counting_many_listings_keeps_each_count_apart() {
        // More listings than a thread's table has slots: evicted slots start new cells, and
        // no hit is lost or credited to another listing.
        let recorders: Vec<Total> = (0..3 * SLOTS).map(|_| Total::default()).collect();
        let all: Vec<Arc<Hits>> =
            recorders.iter().map(|r| Arc::new(Hits::new(counters(r)))).collect();
        for round in 1..=3u64 {
            for (i, hits) in all.iter().enumerate() {
                for _ in 0..=(i % 4) {
                    hits.count();
                }
            }
            for hits in &all {
                hits.flush();
            }
            for (i, r) in recorders.iter().enumerate() {
                assert_eq!(r.0.load(Ordering::Relaxed), 2 * round * (i % 4 + 1) as u64, "{i}");
            }
        }
    }

    #[test]
    fn a_dropped_listing_flushes_its_hits() {
        let recorder = Total::default();
        let hits = Arc::new(Hits::new(counters(&recorder)));
        for _ in 0..3 {
            hits.count();
        }
        assert_eq!(recorder.0.load(Ordering::Relaxed), 0, "counted, not yet flushed");
        // This thread's table keeps only a `Weak`: the drop is the last reference.
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
        assert_eq!(recorder.0.load(Ordering::Relaxed), 2);
        assert!(live().iter().any(|w| w.ptr_eq(&Arc::downgrade(&hits))));
    }
}
