//! ikit-emulator: an Infisical-compatible HTTP server for tests and `make dev`, faithful to the
//! behaviour described in `shared/spec/infisical-api.md` (odd corners included), with fault
//! injection, request counters and a controllable clock under `/__emulator/*`.
//!
//! Code map: `logic` holds the pure rules (reference expansion, value trimming, key checks,
//! globs, webhook signing, token renewal, rate-limit buckets); `store` the state; `routes` the
//! Infisical and admin endpoints; `server` the connection loop and the per-request pipeline
//! (counters, faults, error bodies, ETags); `webhook` the coalescing delivery worker.

// Handlers return `ApiError` by value: it is built once per failed request in a test server,
// so boxing it would buy nothing but noise.
#![allow(clippy::result_large_err)]

pub mod clock;
mod error;
pub mod faults;
pub mod logic;
mod persist;
mod routes;
pub mod seed;
mod server;
mod store;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use clock::EmulatorClock;
pub use error::EmulatorError;
pub use faults::{Fault, Faults};
pub use seed::Seed;
pub use webhook::Delivery;

/// `Mutex::lock` that survives a poisoned lock: a panic in one request (a bug) must not turn
/// every later request, `/api/status` included, into a failure until restart. The guarded data
/// are plain values that stay consistent between statements.
pub(crate) trait LockExt<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> LockExt<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which server generation to play.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiVersion {
    /// Upstream code of 2024-10: no `/api/v4` routes, no `/api/health`, v3 validation failures
    /// answered 401, error bodies of 401/403/404 without `reqId`, short webhook payloads.
    V2024,
    /// Current servers.
    #[default]
    V2026,
}

impl std::str::FromStr for ApiVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2024" => Ok(ApiVersion::V2024),
            "2026" => Ok(ApiVersion::V2026),
            other => Err(format!("unknown api version {other:?}: use 2024 or 2026")),
        }
    }
}

/// How to start an emulator. `EmulatorConfig::new(seed)` gives the documented defaults.
pub struct EmulatorConfig {
    /// Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    pub seed: Seed,
    /// Bearer token for `/__emulator/*`. Default: a random one (read it back with
    /// [`RunningEmulator::admin_token`]).
    pub admin_token: String,
    /// Default [`ApiVersion::V2026`].
    pub api_version: ApiVersion,
    /// When set, state is loaded from this file if it exists and saved after every change.
    pub data_file: Option<PathBuf>,
    /// How long changes to one folder are gathered into one webhook delivery. Default 1 s.
    pub webhook_coalesce: Duration,
    /// The clock. Default: running from the system time at start.
    pub clock: Option<EmulatorClock>,
    /// Start with the production-like per-IP rate limiter on. Default off (self-hosted).
    pub rate_limit_mode: bool,
    /// Seed for the fault-rate random numbers. Default: from entropy.
    pub rng_seed: Option<u64>,
}

impl EmulatorConfig {
    pub fn new(seed: Seed) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed,
            admin_token: format!("admin-{}", uuid::Uuid::new_v4().simple()),
            api_version: ApiVersion::V2026,
            data_file: None,
            webhook_coalesce: Duration::from_secs(1),
            clock: None,
            rate_limit_mode: false,
            rng_seed: None,
        }
    }

    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = token.into();
        self
    }

    pub fn api_version(mut self, version: ApiVersion) -> Self {
        self.api_version = version;
        self
    }

    pub fn data_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_file = Some(path.into());
        self
    }

    pub fn webhook_coalesce(mut self, delay: Duration) -> Self {
        self.webhook_coalesce = delay;
        self
    }

    pub fn clock(mut self, clock: EmulatorClock) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn rate_limit_mode(mut self, on: bool) -> Self {
        self.rate_limit_mode = on;
        self
    }

    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}

/// Entry point: `Emulator::start(config).await`.
pub struct Emulator;

impl Emulator {
    /// Binds, loads the seed (or the data file) and serves in the background.
    pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
        server::start(config).await
    }
}

/// A running emulator. Dropping it leaves the server running until the runtime ends; call
/// [`shutdown`](Self::shutdown) to stop it.
pub struct RunningEmulator {
    app: Arc<server::App>,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT` (routes live under `/api/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_token(&self) -> &str {
        &self.app.admin_token
    }

    pub fn clock(&self) -> &EmulatorClock {
        &self.app.clock
    }

    pub fn faults(&self) -> &Faults {
        &self.app.faults
    }

    /// Requests received for `method` and `route` (the path without query or trailing slash).
    pub fn request_count(&self, method: &str, route: &str) -> u64 {
        self.app.request_count(method, route)
    }

    /// Of [`request_count`](Self::request_count)'s requests, those answered 304 (an
    /// `If-None-Match` that matched: no body sent).
    pub fn not_modified_count(&self, method: &str, route: &str) -> u64 {
        self.app.not_modified_count(method, route)
    }

    pub fn reset_counters(&self) {
        self.app.counters.locked().clear();
        self.app.not_modified.locked().clear();
    }

    /// Bodies received by `/api/v1/auth/<method>/login`, oldest first (`method` like
    /// `universal-auth` or `aws-auth`; the `-auth` suffix may be left out).
    pub fn login_requests(&self, method: &str) -> Vec<serde_json::Value> {
        self.app.login_requests(method)
    }

    /// Webhook deliveries attempted so far, oldest first.
    pub fn webhook_deliveries(&self) -> Vec<Delivery> {
        self.app.deliveries.locked().clone()
    }

    /// Turns the production-like per-IP rate limiter on or off.
    pub fn set_rate_limit_mode(&self, on: bool) {
        self.app.set_rate_limit_mode(on);
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
