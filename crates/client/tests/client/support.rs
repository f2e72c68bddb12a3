//! Shared fixtures: an emulator on port 0 with a pinned clock, a client whose clock and sleeper
//! move the emulator clock too, and a log buffer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ikit_client::{
    AuthMethod, BreakerConfig, BudgetConfig, Client, ClientConfig, Clock, ManualClock, RetryPolicy,
    SleepFuture, Sleeper,
};
use ikit_emulator::{ApiVersion, Emulator, EmulatorClock, EmulatorConfig, RunningEmulator, Seed};
use sha2::Sha256;

pub(crate) const PROJECT: &str = "9b6f8a70-0000-4000-8000-000000000001";
pub(crate) const START_MS: i64 = 1_780_000_000_000;
pub(crate) const JWT_HMAC: &str = "k8s-oidc-hmac-key";
pub(crate) const DB_VALUE: &str = "postgres://app:Sup3r-Secret-Value@db:5432/app";

pub(crate) fn seed_json() -> String {
    serde_json::json!({
        "projects": [{"id": PROJECT, "slug": "demo", "environments": ["dev", "prod"]}],
        "identities": [
            {"id": "id-ua", "name": "ci", "clientId": "ua-client-id", "clientSecret": "ua-client-secret-1",
             "accessTokenTTL": 600, "accessTokenMaxTTL": 3600, "projects": [PROJECT]},
            // Infisical's defaults: TTL = max TTL = 30 days, so every renewal is refused.
            {"id": "id-defaults", "name": "defaults", "clientId": "ua-default-ttl-id",
             "clientSecret": "ua-default-ttl-secret", "projects": [PROJECT]},
            // May describe secrets but not read their values.
            {"id": "id-describe", "name": "describer", "clientId": "ua-describe-id",
             "clientSecret": "ua-describe-secret", "projects": [PROJECT], "describeOnly": true},
            {"id": "id-cloud", "name": "cloud", "projects": [PROJECT],
             "jwtAuth": {"hmacSecret": JWT_HMAC},
             "authMethods": ["aws-auth", "azure-auth", "gcp-auth"]}
        ],
        "folders": [
            {"projectId": PROJECT, "environment": "dev", "path": "/app"},
            {"projectId": PROJECT, "environment": "dev", "path": "/shared"},
            {"projectId": PROJECT, "environment": "dev", "path": "/shared2"},
            {"projectId": PROJECT, "environment": "prod", "path": "/locked"}
        ],
        "secrets": [
            {"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "DB_URL", "value": DB_VALUE},
            {"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "REF", "value": "x-${DB_URL}"},
            {"projectId": PROJECT, "environment": "dev", "path": "/shared", "key": "COMMON", "value": "from-shared"},
            {"projectId": PROJECT, "environment": "dev", "path": "/shared2", "key": "COMMON", "value": "from-shared2"},
            {"projectId": PROJECT, "environment": "prod", "path": "/locked", "key": "K", "value": "v"}
        ],
        "imports": [
            {"projectId": PROJECT, "environment": "dev", "path": "/app",
             "importEnvironment": "dev", "importPath": "/shared", "omitFolderId": true},
            {"projectId": PROJECT, "environment": "dev", "path": "/app",
             "importEnvironment": "dev", "importPath": "/shared2"}
        ],
        "serviceTokens": [
            {"id": "st-id-1", "secret": "st-secret-1", "projectId": PROJECT,
             "scopes": [{"environment": "dev", "secretPath": "/app"}]}
        ],
        "approvalPolicies": [{"projectId": PROJECT, "environment": "prod", "secretPath": "/locked"}]
    })
    .to_string()
}

pub(crate) async fn emulator(version: ApiVersion) -> RunningEmulator {
    let seed = Seed::from_json(&seed_json()).expect("seed parses");
    let config = EmulatorConfig::new(seed)
        .api_version(version)
        .clock(EmulatorClock::fixed(START_MS))
        .rng_seed(1);
    Emulator::start(config).await.expect("emulator starts")
}

/// Sleeps by moving the client clock and the emulator clock together; records every wait with
/// the request count of a watched route at that moment.
pub(crate) struct SharedSleeper {
    pub(crate) client_clock: Arc<ManualClock>,
    pub(crate) emulator_clock: EmulatorClock,
    pub(crate) sleeps: Mutex<Vec<Duration>>,
}

impl SharedSleeper {
    pub(crate) fn recorded(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
}

impl Sleeper for SharedSleeper {
    fn sleep(&self, duration: Duration) -> SleepFuture {
        self.sleeps.lock().unwrap().push(duration);
        self.client_clock.advance_by(duration);
        self.emulator_clock.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

pub(crate) struct Harness {
    pub(crate) emulator: RunningEmulator,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) sleeper: Arc<SharedSleeper>,
}

impl Harness {
    pub(crate) async fn start(version: ApiVersion) -> Self {
        let emulator = emulator(version).await;
        let clock = Arc::new(ManualClock::new(START_MS));
        let sleeper = Arc::new(SharedSleeper {
            client_clock: clock.clone(),
            emulator_clock: emulator.clock().clone(),
            sleeps: Mutex::new(Vec::new()),
        });
        Self { emulator, clock, sleeper }
    }

    /// Moves both clocks.
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance_by(by);
        self.emulator.clock().advance(by);
    }

    pub(crate) fn config(&self, auth: AuthMethod) -> ClientConfig {
        ClientConfig::new(&self.emulator.base_url(), auth)
            .expect("config")
            .with_clock(self.clock.clone())
            .with_sleeper(self.sleeper.clone())
            .with_rng_seed(7)
            .with_retry(RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                max_retry_after: Duration::from_secs(120),
            })
            .with_budget(BudgetConfig { capacity: 1000.0, refill_per_sec: 1000.0 })
            .with_breaker(BreakerConfig {
                failure_threshold: 50,
                open_for: Duration::from_secs(30),
            })
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(10))
    }

    pub(crate) fn client(&self, auth: AuthMethod) -> Client {
        Client::new(self.config(auth)).expect("client")
    }

    pub(crate) fn count(&self, method: &str, route: &str) -> u64 {
        self.emulator.request_count(method, route)
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

pub(crate) fn ua() -> AuthMethod {
    AuthMethod::universal("ua-client-id", "ua-client-secret-1")
}

/// An HS256 JWT with the given claims (what a Kubernetes API server or an OIDC provider would
/// hand out), signed with the emulator identity's key.
pub(crate) fn hs256_jwt(claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_HMAC.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64.encode(mac.finalize().into_bytes()))
}
