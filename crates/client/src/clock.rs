//! Injected time: the wall clock is `ikit_common::clock` (re-exported from the crate root), and a
//! sleeper for backoff waits lives here.
//!
//! Production code uses [`SystemClock`] and [`TokioSleeper`]; tests use [`ManualClock`] and a
//! sleeper of their own that advances their clocks instead of waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

pub use ikit_common::clock::{Clock, ManualClock, SystemClock};

/// A boxed future returned by a [`Sleeper`].
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Waits for a duration: backoff, `Retry-After` and budget waits all go through it.
pub trait Sleeper: Send + Sync + 'static {
    fn sleep(&self, duration: Duration) -> SleepFuture;
}

/// Sleeps on the tokio timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The system clock every default configuration shares, so a client can tell it from an
/// injected one ([`ReadClock::of`]).
pub(crate) fn system_clock() -> Arc<dyn Clock> {
    static SYSTEM: OnceLock<Arc<dyn Clock>> = OnceLock::new();
    SYSTEM.get_or_init(|| Arc::new(SystemClock)).clone()
}

/// How often the coarse system time is refreshed. Freshness is decided in whole TTLs (seconds
/// at least), so a read may be this much late at no cost, while `clock_gettime` on every cache
/// hit would be a third of the hit.
const COARSE_TICK: Duration = Duration::from_millis(1);

/// Unix milliseconds refreshed every [`COARSE_TICK`] by one background thread for the whole
/// process (`None` when no thread could be started). Started on first use and never stopped:
/// like the runtime's own timer, it outlives any one client.
fn coarse_system_ms() -> Option<&'static AtomicI64> {
    static COARSE: OnceLock<Option<&'static AtomicI64>> = OnceLock::new();
    *COARSE.get_or_init(|| {
        let now: &'static AtomicI64 = Box::leak(Box::new(AtomicI64::new(SystemClock.now_ms())));
        std::thread::Builder::new()
            .name("ikit-coarse-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    now.store(SystemClock.now_ms(), Ordering::Relaxed);
                }
            })
            .ok()
            .map(|_| now)
    })
}

/// The clock the cache decides freshness with on its hot path: the coarse system time when the
/// client runs on the system clock, else the injected clock itself (a test's `ManualClock` is
/// an atomic load already, and must be seen the moment it moves).
#[derive(Clone)]
pub(crate) enum ReadClock {
    Coarse(&'static AtomicI64),
    Injected(Arc<dyn Clock>),
}

impl ReadClock {
    pub(crate) fn of(clock: &Arc<dyn Clock>) -> Self {
        if Arc::ptr_eq(clock, &system_clock())
            && let Some(coarse) = coarse_system_ms()
        {
            return Self::Coarse(coarse);
        }
        Self::Injected(clock.clone())
    }

    #[inline]
    pub(crate) fn now_ms(&self) -> i64 {
        match self {
            Self::Coarse(now) => now.load(Ordering::Relaxed),
            Self::Injected(clock) => clock.now_ms(),
        }
    }
}

/// The time from `earlier` to `later`, zero if the clock went backwards.
pub(crate) fn elapsed(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_is_zero_when_the_clock_goes_backwards() {
        let clock = ManualClock::new(1_000);
        let t0 = clock.now();
        clock.advance_by(Duration::from_secs(5));
        assert_eq!(elapsed(t0, clock.now()), Duration::from_secs(5));
        assert_eq!(elapsed(clock.now(), t0), Duration::ZERO);
        clock.set(0);
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn only_the_default_system_clock_is_read_coarsely() {
        let manual: Arc<dyn Clock> = Arc::new(ManualClock::new(5));
        let read = ReadClock::of(&manual);
        assert!(matches!(read, ReadClock::Injected(_)));
        assert_eq!(read.now_ms(), 5);
        // Another SystemClock was injected on purpose: read as given.
        assert!(matches!(
            ReadClock::of(&(Arc::new(SystemClock) as Arc<dyn Clock>)),
            ReadClock::Injected(_)
        ));
        let coarse = ReadClock::of(&system_clock());
        assert!(matches!(coarse, ReadClock::Coarse(_)));
        let (before, read, after) = (SystemClock.now_ms(), coarse.now_ms(), SystemClock.now_ms());
        // Behind by at most a few ticks (more on a loaded machine), never ahead.
        assert!(read <= after && read > before - 60_000, "{before} {read} {after}");
    }
}
