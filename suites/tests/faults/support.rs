//! Shared fixtures: one seed, clocks that move together, a sleeper that jumps them, a TCP proxy
//! the test can cut, and polling with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{
    AuthMethod, BreakerConfig, BudgetConfig, ClientConfig, Clock, ManualClock, RetryPolicy,
    SleepFuture, Sleeper,
};
use ikit_emulator::{Emulator, EmulatorClock, EmulatorConfig, RunningEmulator, Seed};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub(crate) const PROJECT: &str = "5a17e5a1-0000-4000-8000-000000000017";
pub(crate) const START_MS: i64 = 1_780_000_000_000;
pub(crate) const CLIENT_ID: &str = "suite-client";
pub(crate) const CLIENT_SECRET: &str = "suite-client-secret-Zq81";
/// A value no log, error, metric or audit row may ever hold.
pub(crate) const CANARY: &str = "canary-Vx9-secret-value-7Qe2";

/// The seed every suite test starts from; `extra` adds identities (TTL tests).
pub(crate) fn seed_with(identities: Vec<Value>, secrets: Vec<Value>) -> Seed {
    let mut all_identities = vec![json!({
        "id": "id-suite", "name": "suite", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
        "accessTokenTTL": 3600, "accessTokenMaxTTL": 86400, "projects": [PROJECT]
    })];
    all_identities.extend(identities);
    let mut all_secrets = vec![
        json!({"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "DATABASE_URL", "value": CANARY}),
        json!({"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "API_KEY", "value": "api-key-1"}),
        json!({"projectId": PROJECT, "environment": "dev", "path": "/shared", "key": "COMMON", "value": "common-1"}),
    ];
    all_secrets.extend(secrets);
    let text = json!({
        "projects": [{"id": PROJECT, "slug": "suite", "environments": ["dev", "prod"]}],
        "identities": all_identities,
        "folders": [{"projectId": PROJECT, "environment": "dev", "path": "/auth/jwt"}],
        "secrets": all_secrets,
    })
    .to_string();
    Seed::from_json(&text).expect("seed parses")
}

pub(crate) async fn emulator(seed: Seed) -> RunningEmulator {
    let config = EmulatorConfig::new(seed)
        .clock(EmulatorClock::fixed(START_MS))
        .webhook_coalesce(Duration::from_millis(20))
        .rng_seed(17);
    Emulator::start(config).await.expect("emulator starts")
}

/// The client's clock and the emulator's, moved together.
#[derive(Clone)]
pub(crate) struct Clocks {
    pub(crate) client: Arc<ManualClock>,
    pub(crate) emulator: EmulatorClock,
}

impl Clocks {
    pub(crate) fn new(emulator: &RunningEmulator) -> Self {
        Self { client: Arc::new(ManualClock::new(START_MS)), emulator: emulator.clock().clone() }
    }

    pub(crate) fn advance(&self, by: Duration) {
        self.client.advance_by(by);
        self.emulator.advance(by);
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.client.now_ms()
    }
}

/// Sleeps by moving both clocks by the wait at once (concurrent waits add up, so simulated
/// time only runs ahead of what real time would show, never behind). Every wait is recorded.
pub(crate) struct JumpSleeper {
    clocks: Clocks,
    waits: Mutex<Vec<Duration>>,
}

impl JumpSleeper {
    pub(crate) fn new(clocks: &Clocks) -> Arc<Self> {
        Arc::new(Self { clocks: clocks.clone(), waits: Mutex::new(Vec::new()) })
    }

    pub(crate) fn waits(&self) -> Vec<Duration> {
        self.waits.lock().unwrap().clone()
    }
}

impl Sleeper for JumpSleeper {
    fn sleep(&self, duration: Duration) -> SleepFuture {
        let mut waits = self.waits.lock().unwrap();
        waits.push(duration);
        self.clocks.advance(duration);
        drop(waits);
        Box::pin(std::future::ready(()))
    }
}

/// A client configuration on the injected clocks with test-sized retry, budget and breaker.
pub(crate) fn client_config(
    emulator: &RunningEmulator,
    clocks: &Clocks,
    sleeper: Arc<dyn Sleeper>,
    auth: AuthMethod,
) -> ClientConfig {
    ClientConfig::new(&emulator.base_url(), auth)
        .expect("client config")
        .with_clock(clocks.client.clone())
        .with_sleeper(sleeper)
        .with_rng_seed(17)
        .with_retry(RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(120),
        })
        .with_budget(BudgetConfig { capacity: 1e9, refill_per_sec: 1e9 })
        .with_breaker(BreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(30) })
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(10))
}

pub(crate) fn universal() -> AuthMethod {
    AuthMethod::universal(CLIENT_ID, CLIENT_SECRET)
}

/// A TCP proxy in front of a real server that the test cuts (every open connection dropped,
/// new ones hung up on) and restores.
pub(crate) struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: &str) -> Self {
        let target = target.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (up, conns) = (up.clone(), conns.clone());
            async move {
                while let Ok((mut downstream, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the caller sees the connection closed
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut upstream) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
                        }
                    });
                    conns.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Self { addr, up, conns, accept }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `url` with its host and port replaced by `addr` (a proxy in front of the same server).
pub(crate) fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("url has a scheme");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    let slash = if path.is_empty() && !rest.contains('/') { "" } else { "/" };
    format!("{scheme}://{userinfo}{addr}{slash}{path}")
}

/// The `host:port` of a URL.
pub(crate) fn host_port(url: &str) -> String {
    let rest = url.split_once("://").expect("scheme").1;
    let authority = rest.split('/').next().expect("authority");
    authority.rsplit('@').next().expect("host").to_owned()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 20 s of real time.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of every series of a metric in Prometheus text.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
