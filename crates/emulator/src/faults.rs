//! Fault injection: latency, error statuses, 429s, dropped connections, a "starting up" window
//! and failing webhook deliveries. Time windows use the emulator clock.

use crate::LockExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::clock::EmulatorClock;

/// One fault rule. Matches requests whose path starts with `route_prefix` (and whose method is
/// `method`, when given). Build with the constructors and chain the setters:
/// `Fault::status("/api/v4/secrets", 503).times(2)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub method: Option<String>,
    pub route_prefix: String,
    #[serde(with = "opt_millis", rename = "latencyMs", default)]
    pub latency: Option<Duration>,
    pub status: Option<u16>,
    pub retry_after_secs: Option<u64>,
    #[serde(default)]
    pub drop_connection: bool,
    pub times: Option<u32>,
    #[serde(with = "opt_millis", rename = "forDurationMs", default)]
    pub for_duration: Option<Duration>,
    pub rate: Option<f64>,
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl Fault {
    fn on(route_prefix: &str) -> Self {
        Fault {
            method: None,
            route_prefix: route_prefix.to_owned(),
            latency: None,
            status: None,
            retry_after_secs: None,
            drop_connection: false,
            times: None,
            for_duration: None,
            rate: None,
        }
    }

    /// Answers with `status` (429 answers like the rate limiter, 503 like a starting server).
    pub fn status(route_prefix: &str, status: u16) -> Self {
        Fault { status: Some(status), ..Self::on(route_prefix) }
    }

    /// Delays matching requests, which then proceed normally.
    pub fn latency(route_prefix: &str, latency: Duration) -> Self {
        Fault { latency: Some(latency), ..Self::on(route_prefix) }
    }

    /// A 429 with `retry-after: secs`.
    pub fn rate_limited(route_prefix: &str, retry_after_secs: u64) -> Self {
        Fault {
            status: Some(429),
            retry_after_secs: Some(retry_after_secs),
            ..Self::on(route_prefix)
        }
    }

    /// Closes the TCP connection without answering.
    pub fn drop_connection(route_prefix: &str) -> Self {
        Fault { drop_connection: true, ..Self::on(route_prefix) }
    }

    /// Every `/api` route answers 503 "starting up" (limit it with `times` or `for_duration`).
    pub fn starting_up() -> Self {
        Self::status("/api", 503)
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    pub fn for_duration(mut self, d: Duration) -> Self {
        self.for_duration = Some(d);
        self
    }

    pub fn rate(mut self, probability: f64) -> Self {
        self.rate = Some(probability);
        self
    }

    pub fn with_latency(mut self, d: Duration) -> Self {
        self.latency = Some(d);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

struct Installed {
    fault: Fault,
    added_ms: i64,
    used: u32,
}

#[derive(Default)]
struct FaultState {
    faults: Vec<Installed>,
    /// `Some(None)`: every delivery fails; `Some(Some(n))`: the next n fail.
    failing_webhooks: Option<Option<u32>>,
}

/// What the faults decided for one request.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub latency: Duration,
    pub status: Option<(u16, Option<u64>)>,
    pub drop_connection: bool,
}

/// The installed faults. Cloning shares them.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    clock: EmulatorClock,
}

impl Faults {
    pub fn new(clock: EmulatorClock) -> Self {
        Self { state: Arc::default(), clock }
    }

    pub fn add(&self, fault: Fault) {
        let added_ms = self.clock.now_ms();
        self.state.locked().faults.push(Installed { fault, added_ms, used: 0 });
    }

    /// Removes every fault, including failing webhook deliveries.
    pub fn clear(&self) {
        let mut state = self.state.locked();
        state.faults.clear();
        state.failing_webhooks = None;
    }

    pub fn list(&self) -> Vec<Fault> {
        self.state.locked().faults.iter().map(|i| i.fault.clone()).collect()
    }

    /// Makes webhook deliveries fail (`None`: all of them; `Some(n)`: the next n) without
    /// contacting the receiver; they are recorded as `failed`.
    pub fn fail_webhooks(&self, times: Option<u32>) {
        self.state.locked().failing_webhooks = Some(times);
    }

    /// Consumes one failing delivery if any is configured.
    pub(crate) fn take_webhook_failure(&self) -> bool {
        let mut state = self.state.locked();
        match &mut state.failing_webhooks {
            None => false,
            Some(None) => true,
            Some(Some(0)) => {
                state.failing_webhooks = None;
                false
            }
            Some(Some(n)) => {
                *n -= 1;
                true
            }
        }
    }

    /// Applies the faults to one request: latency adds up; the first status or drop wins.
    pub(crate) fn evaluate(&self, method: &str, path: &str, rng: &mut impl Rng) -> Outcome {
        let now_ms = self.clock.now_ms();
        let mut state = self.state.locked();
        let mut outcome = Outcome::default();
        for installed in &mut state.faults {
            let f = &installed.fault;
            if !path.starts_with(&f.route_prefix)
                || f.method.as_deref().is_some_and(|m| m != method)
            {
                continue;
            }
            if f.times.is_some_and(|n| installed.used >= n) {
                continue;
            }
            if let Some(d) = f.for_duration {
                let until = installed
                    .added_ms
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                if now_ms >= until {
                    continue;
                }
            }
            if let Some(p) = f.rate
                && rng.r#gen::<f64>() >= p
            {
                continue;
            }
            installed.used += 1;
            if let Some(l) = f.latency {
                outcome.latency = outcome.latency.saturating_add(l);
            }
            if f.drop_connection {
                outcome.drop_connection = true;
                break;
            }
            if let Some(s) = f.status {
                outcome.status = Some((s, f.retry_after_secs));
                break;
            }
        }
        state.faults.retain(|i| i.fault.times.is_none_or(|n| i.used < n));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn times_and_windows_limit_faults() {
        let clock = EmulatorClock::fixed(0);
        let faults = Faults::new(clock.clone());
        let mut rng = StdRng::seed_from_u64(1);
        faults.add(Fault::status("/api/v4", 503).times(2).method("GET"));
        faults.add(Fault::rate_limited("/api", 7).for_duration(Duration::from_secs(10)));
        let first = faults.evaluate("GET", "/api/v4/secrets", &mut rng);
        assert_eq!(first.status, Some((503, None)));
        assert_eq!(faults.evaluate("GET", "/api/v4/secrets", &mut rng).status, Some((503, None)));
        assert_eq!(
            faults.evaluate("GET", "/api/v4/secrets", &mut rng).status,
            Some((429, Some(7)))
        );
        assert_eq!(faults.evaluate("POST", "/api/v3/x", &mut rng).status, Some((429, Some(7))));
        clock.advance(Duration::from_secs(10));
        assert_eq!(faults.evaluate("GET", "/api/v4/secrets", &mut rng), Outcome::default());
        assert_eq!(faults.evaluate("GET", "/other", &mut rng), Outcome::default());
    }

    #[test]
    fn rates_and_latency() {
        let faults = Faults::new(EmulatorClock::fixed(0));
        let mut rng = StdRng::seed_from_u64(7);
        faults.add(Fault::latency("/a", Duration::from_millis(5)));
        faults.add(Fault::status("/a", 500).rate(0.0));
        faults.add(Fault::drop_connection("/a").rate(1.0));
        let out = faults.evaluate("GET", "/a", &mut rng);
        assert_eq!(out.latency, Duration::from_millis(5));
        assert!(out.drop_connection);
        assert_eq!(out.status, None);
    }

    #[test]
    fn huge_latencies_saturate_instead_of_overflowing() {
        let faults = Faults::new(EmulatorClock::fixed(0));
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..3 {
            faults.add(Fault::latency("/a", Duration::MAX));
        }
        assert_eq!(faults.evaluate("GET", "/a", &mut rng).latency, Duration::MAX);
    }

    #[test]
    fn failing_webhooks_count_down() {
        let faults = Faults::new(EmulatorClock::fixed(0));
        assert!(!faults.take_webhook_failure());
        faults.fail_webhooks(Some(1));
        assert!(faults.take_webhook_failure());
        assert!(!faults.take_webhook_failure());
        faults.fail_webhooks(None);
        assert!(faults.take_webhook_failure());
        faults.clear();
        assert!(!faults.take_webhook_failure());
    }
}
