//! Pure reliability logic: exponential backoff with full jitter, `Retry-After` parsing, a token
//! bucket request budget and a circuit breaker. Time and randomness are parameters.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::clock::elapsed;

/// How many attempts a request gets and how long to wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included (1 disables retries).
    pub max_attempts: u32,
    /// The ceiling of the first backoff; it doubles with every attempt.
    pub base_delay: Duration,
    /// No single backoff is longer than this.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the call fails as rate limited.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The "full jitter" backoff before retry number `attempt` (0 for the first retry): a uniform
    /// draw from zero to `min(max_delay, base_delay * 2^attempt)`.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base_delay
            .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }
}

/// Works out how long the server asked us to wait: the `Retry-After` header as seconds or as an
/// HTTP date, else the "try again in N seconds" / "in 1 minute" text of the error message.
pub fn parse_retry_after(
    header: Option<&str>,
    message: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(secs) = value.parse::<f64>() {
            // Negative or NaN is no hint at all; a value past what a `Duration` holds (1e20,
            // inf) is "too long", which the caller refuses to wait for.
            if secs.is_nan() || secs < 0.0 {
                return message.and_then(parse_wait_text);
            }
            return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(elapsed(now, at));
        }
    }
    message.and_then(parse_wait_text)
}

/// Finds `in N second(s)` / `in N minute(s)` / `in a minute` in a message.
fn parse_wait_text(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    for window in words.windows(3) {
        if window[0] != "in" {
            continue;
        }
        let amount: u64 = match window[1] {
            "a" | "an" | "one" => 1,
            n => match n.parse() {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        let unit = window[2];
        let secs = if unit.starts_with("second") || unit == "s" || unit == "secs" {
            amount
        } else if unit.starts_with("minute") || unit == "min" || unit == "mins" {
            amount.saturating_mul(60)
        } else if unit.starts_with("hour") {
            amount.saturating_mul(3600)
        } else {
            continue;
        };
        return Some(Duration::from_secs(secs));
    }
    None
}

/// A client-side request budget: `capacity` requests in a burst, refilled at `refill_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

impl BudgetConfig {
    /// A budget that can ever admit a request: a finite capacity of at least one and a finite,
    /// positive refill rate. Anything else would refuse or stall every request.
    pub fn validate(&self) -> Result<(), String> {
        if !self.capacity.is_finite() || self.capacity < 1.0 {
            return Err(format!("budget capacity must be at least 1, got {}", self.capacity));
        }
        if !self.refill_per_sec.is_finite() || self.refill_per_sec <= 0.0 {
            return Err(format!(
                "budget refill rate must be a positive number of requests per second, got {}",
                self.refill_per_sec
            ));
        }
        Ok(())
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        // Under the server's per-IP default of 600 requests per minute.
        Self { capacity: 50.0, refill_per_sec: 8.0 }
    }
}

/// A token bucket over injected time.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    config: BudgetConfig,
    tokens: f64,
    last: SystemTime,
}

impl TokenBucket {
    pub fn new(config: BudgetConfig, now: SystemTime) -> Self {
        Self { config, tokens: config.capacity, last: now }
    }

    fn refill(&mut self, now: SystemTime) {
        let gained = elapsed(self.last, now).as_secs_f64() * self.config.refill_per_sec;
        self.tokens = (self.tokens + gained).min(self.config.capacity);
        if now > self.last {
            self.last = now;
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: SystemTime) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        // A tiny, zero or NaN rate (a config `validate` refuses) must not panic here: the wait is
        // then "forever", which the transport reports as rate limited instead of waiting.
        let missing = 1.0 - self.tokens;
        Err(Duration::try_from_secs_f64(missing / self.config.refill_per_sec)
            .unwrap_or(Duration::MAX))
    }

    pub fn available(&mut self, now: SystemTime) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// When the circuit breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures (network errors and 5xx) that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one trial request is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 8, open_for: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        since: SystemTime,
    },
    /// A trial request went out at `since`. Its verdict may never come (the caller's future was
    /// dropped, or it stopped before sending), so after another `open_for` a new trial goes out:
    /// the breaker can delay requests but never wedge the client.
    HalfOpen {
        since: SystemTime,
    },
}

/// A circuit breaker over injected time.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, state: BreakerState::Closed { failures: 0 } }
    }

    /// May a request go out now? `Err` carries the time until the next trial. An `Ok` while the
    /// circuit is open admits the trial: call once per attempt, right before sending it.
    pub fn allow(&mut self, now: SystemTime) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { since } | BreakerState::HalfOpen { since } => {
                let waited = elapsed(since, now);
                if waited >= self.config.open_for {
                    self.state = BreakerState::HalfOpen { since: now };
                    Ok(())
                } else {
                    // While a trial is out, everyone else waits for its verdict (or its timeout).
                    Err(self.config.open_for - waited)
                }
            }
        }
    }

    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    pub fn on_failure(&mut self, now: SystemTime) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            _ => BreakerState::Open { since: now },
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, BreakerState::Closed { .. })
    }

    /// Whether a request at `now` would be refused: open (or a trial out) and `open_for` not yet
    /// over. Past it the next request is the trial, so a caller that skips the network while
    /// the circuit refuses must not skip that one, or nothing ever closes the circuit again.
    pub fn refuses_at(&self, now: SystemTime) -> bool {
        match self.state {
            BreakerState::Closed { .. } => false,
            BreakerState::Open { since } | BreakerState::HalfOpen { since } => {
                elapsed(since, now) < self.config.open_for
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, ceiling_ms) in
            [(0u32, 100u64), (1, 200), (2, 400), (3, 800), (4, 1000), (40, 1000)]
        {
            let draws: Vec<Duration> =
                (0..200).map(|_| policy.backoff(attempt, &mut rng)).collect();
            let max = draws.iter().max().copied().unwrap();
            let min = draws.iter().min().copied().unwrap();
            assert!(max <= Duration::from_millis(ceiling_ms), "attempt {attempt}: {max:?}");
            // Full jitter spreads over the whole range, not just the top of it.
            assert!(min < Duration::from_millis(ceiling_ms / 4), "attempt {attempt}: {min:?}");
            assert!(max > Duration::from_millis(ceiling_ms * 3 / 4), "attempt {attempt}: {max:?}");
        }
    }

    #[test]
    fn backoff_is_deterministic_for_a_seeded_rng() {
        let policy = RetryPolicy::default();
        let a: Vec<_> =
            (0..5).map(|i| policy.backoff(i, &mut StdRng::seed_from_u64(i as u64))).collect();
        let b: Vec<_> =
            (0..5).map(|i| policy.backoff(i, &mut StdRng::seed_from_u64(i as u64))).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn retry_after_header_seconds_and_http_date() {
        let now = t(0);
        assert_eq!(parse_retry_after(Some("17"), None, now), Some(Duration::from_secs(17)));
        assert_eq!(parse_retry_after(Some(" 0 "), None, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(Some("1.5"), None, now), Some(Duration::from_millis(1500)));
        let date = httpdate::fmt_http_date(t(42));
        assert_eq!(parse_retry_after(Some(&date), None, now), Some(Duration::from_secs(42)));
        // A date in the past means "now".
        let past = httpdate::fmt_http_date(t(0) - Duration::from_secs(10));
        assert_eq!(parse_retry_after(Some(&past), None, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_falls_back_to_the_message() {
        let now = t(0);
        let cases = [
            ("Rate limit exceeded. Please try again in 1 minute", Some(60)),
            ("Rate limit exceeded. Please try again in 12 seconds", Some(12)),
            ("Rate limit exceeded. Please try again in 1 second", Some(1)),
            ("Please try again in a minute.", Some(60)),
            ("Please try again in 2 minutes", Some(120)),
            ("Rate limit exceeded", None),
            ("in the house", None),
        ];
        for (message, want) in cases {
            assert_eq!(
                parse_retry_after(None, Some(message), now),
                want.map(Duration::from_secs),
                "{message}"
            );
        }
        // A garbage header still lets the message speak.
        assert_eq!(
            parse_retry_after(Some("soon"), Some("try again in 3 seconds"), now),
            Some(Duration::from_secs(3))
        );
        // Absurd numbers never panic: too long to wait for, or no hint at all.
        assert_eq!(parse_retry_after(Some("1e20"), None, now), Some(Duration::MAX));
        assert_eq!(parse_retry_after(Some("inf"), None, now), Some(Duration::MAX));
        assert_eq!(
            parse_retry_after(Some("99999999999999999999999"), None, now),
            Some(Duration::MAX)
        );
        assert_eq!(parse_retry_after(Some("NaN"), None, now), None);
        assert_eq!(parse_retry_after(Some("-1"), None, now), None);
        assert_eq!(
            parse_retry_after(Some("-1"), Some("try again in 4 seconds"), now),
            Some(Duration::from_secs(4))
        );
        // The header wins over the message.
        assert_eq!(
            parse_retry_after(Some("5"), Some("try again in 1 minute"), now),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn token_bucket_allows_a_burst_then_refills() {
        let mut bucket =
            TokenBucket::new(BudgetConfig { capacity: 3.0, refill_per_sec: 2.0 }, t(0));
        for _ in 0..3 {
            assert_eq!(bucket.try_take(t(0)), Ok(()));
        }
        assert_eq!(bucket.try_take(t(0)), Err(Duration::from_millis(500)));
        let half = t(0) + Duration::from_millis(500);
        assert_eq!(bucket.try_take(half), Ok(()));
        assert!(bucket.try_take(half).is_err());
        // Never more than the capacity, however long it rested.
        assert!((bucket.available(t(1000)) - 3.0).abs() < 1e-9);
        // A clock going backwards neither refills nor panics.
        assert!(bucket.try_take(t(0)).is_ok());
    }

    #[test]
    fn token_bucket_with_a_tiny_or_zero_rate_never_panics() {
        for rate in [1e-300, f64::MIN_POSITIVE, 0.0, -1.0] {
            let config = BudgetConfig { capacity: 1.0, refill_per_sec: rate };
            let mut bucket = TokenBucket::new(config, t(0));
            assert_eq!(bucket.try_take(t(0)), Ok(()));
            assert_eq!(bucket.try_take(t(1)), Err(Duration::MAX), "rate {rate}");
        }
    }

    #[test]
    fn budget_config_validation() {
        assert!(BudgetConfig::default().validate().is_ok());
        assert!(BudgetConfig { capacity: 1.0, refill_per_sec: 1e-300 }.validate().is_ok());
        for (capacity, refill_per_sec) in [
            (50.0, 0.0),
            (50.0, -1.0),
            (50.0, f64::NAN),
            (50.0, f64::INFINITY),
            (0.5, 1.0),
            (f64::NAN, 1.0),
            (f64::INFINITY, 1.0),
        ] {
            let config = BudgetConfig { capacity, refill_per_sec };
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_and_half_opens() {
        let config = BreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(30) };
        let mut breaker = CircuitBreaker::new(config);
        breaker.on_failure(t(0));
        breaker.on_failure(t(0));
        breaker.on_success();
        breaker.on_failure(t(0));
        breaker.on_failure(t(0));
        assert!(!breaker.is_open(), "a success in between resets the count");
        assert_eq!(breaker.allow(t(0)), Ok(()));
        breaker.on_failure(t(1));
        assert!(breaker.is_open());
        assert!(breaker.refuses_at(t(11)) && !breaker.refuses_at(t(31)), "refuses for open_for");
        assert_eq!(breaker.allow(t(11)), Err(Duration::from_secs(20)));
        // After open_for one trial goes out; others wait for it.
        assert_eq!(breaker.allow(t(31)), Ok(()));
        assert!(breaker.allow(t(31)).is_err());
        // A trial whose verdict never comes (its caller went away) is replaced by a new one
        // after another open period, never leaving the circuit half-open for good.
        assert_eq!(breaker.allow(t(40)), Err(Duration::from_secs(21)));
        assert_eq!(breaker.allow(t(61)), Ok(()));
        assert!(breaker.allow(t(61)).is_err());
        // A failed trial opens the circuit again for a full period.
        breaker.on_failure(t(62));
        assert_eq!(breaker.allow(t(63)), Err(Duration::from_secs(29)));
        assert_eq!(breaker.allow(t(92)), Ok(()));
        breaker.on_success();
        assert!(!breaker.is_open());
        assert_eq!(breaker.allow(t(92)), Ok(()));
    }
}
