//! The emulated clock: JWT `exp`, token TTLs, lockouts, fault windows and webhook timestamps all
//! read it, so tests move time instead of sleeping.

use crate::LockExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A clock that either follows real time from a starting instant or is pinned to one instant.
/// Cloning shares the clock.
#[derive(Clone)]
pub struct EmulatorClock {
    state: Arc<Mutex<ClockState>>,
}

struct ClockState {
    base_ms: i64,
    /// `Some` while the clock runs: time since this instant is added to `base_ms`.
    running_since: Option<Instant>,
}

impl std::fmt::Debug for EmulatorClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorClock").field("now_ms", &self.now_ms()).finish()
    }
}

impl EmulatorClock {
    /// A running clock that starts at `start_ms`.
    pub fn running_from(start_ms: i64) -> Self {
        let state = ClockState { base_ms: start_ms, running_since: Some(Instant::now()) };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// A clock pinned at `at_ms`: it moves only through [`advance`](Self::advance) and
    /// [`set`](Self::set).
    pub fn fixed(at_ms: i64) -> Self {
        Self { state: Arc::new(Mutex::new(ClockState { base_ms: at_ms, running_since: None })) }
    }

    /// A running clock starting at the system's current time.
    pub fn system() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::running_from(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the Unix epoch, in emulated time.
    pub fn now_ms(&self) -> i64 {
        let state = self.state.locked();
        let elapsed = state.running_since.map_or(0, |since| since.elapsed().as_millis());
        state.base_ms.saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    /// Moves the clock forward (it keeps running or stays pinned, as it was).
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.locked();
        state.base_ms =
            state.base_ms.saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// Pins the clock at `unix_ms`; it stays there until advanced, set again or resumed.
    pub fn set(&self, unix_ms: i64) {
        let mut state = self.state.locked();
        state.base_ms = unix_ms;
        state.running_since = None;
    }

    /// Lets a pinned clock run again from where it stands.
    pub fn resume(&self) {
        let now = self.now_ms();
        let mut state = self.state.locked();
        state.base_ms = now;
        state.running_since = Some(Instant::now());
    }

    /// Whether the clock is pinned.
    pub fn is_fixed(&self) -> bool {
        self.state.locked().running_since.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_moves_saturate() {
        let clock = EmulatorClock::fixed(i64::MAX - 5);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now_ms(), i64::MAX);
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let clock = EmulatorClock::fixed(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
        clock.set(50);
        assert_eq!(clock.now_ms(), 50);
        let shared = clock.clone();
        shared.advance(Duration::from_millis(5));
        assert_eq!(clock.now_ms(), 55);
        assert!(clock.is_fixed());
        clock.resume();
        assert!(!clock.is_fixed());
        assert!(clock.now_ms() >= 55);
    }
}
