//! Injected time: the wall clock is `ikit_common::clock` (re-exported from the crate root), and a
//! sleeper for backoff waits lives here.
//!
//! Production code uses [`SystemClock`] and [`TokioSleeper`]; tests use [`ManualClock`] and a
//! sleeper of their own that advances their clocks instead of waiting.

use std::future::Future;
use std::pin::Pin;
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
}
