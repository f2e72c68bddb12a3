//! `spawn_app`: ikit-health on port 0 over the emulator, a fresh PostgreSQL database for the
//! audit log and the rotation lock, and a manual clock shared by the service's client and keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ikit_common::audit::{AuditFilter, AuditRecord, Outcome};
use ikit_common::clock::{Clock, ManualClock, SystemClock};
use ikit_common::testsuite::TestDatabase;
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};
use ikit_health::{Application, HealthConfig, Parts};
use serde_json::{Value, json};

pub(crate) const PROJECT: &str = "8e1d5d2f-0000-4000-8000-0000000000h1";
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token-0000000001";
pub(crate) const PREVIOUS_ADMIN_TOKEN: &str = "test-admin-token-0000000000";
pub(crate) const DAY: i64 = 86_400;

pub(crate) fn seed() -> Seed {
    let seed = json!({
        "projects": [{"id": PROJECT, "slug": "health", "environments": ["dev", "prod"]}],
        "identities": [{"name": "health", "clientId": "health-client", "clientSecret": "health-secret",
                        "accessTokenTTL": 3600, "accessTokenMaxTTL": 86400, "projects": [PROJECT]}],
        "secrets": [{"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "GREETING",
                     "value": "hello"}]
    });
    Seed::from_json(&seed.to_string()).expect("seed")
}

pub(crate) async fn emulator(data_file: Option<PathBuf>) -> RunningEmulator {
    let mut config = EmulatorConfig::new(seed()).rng_seed(7);
    if let Some(file) = data_file {
        config = config.data_file(file);
    }
    Emulator::start(config).await.expect("emulator starts")
}

pub(crate) struct TestApp {
    pub(crate) app: Option<Application>,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) db: TestDatabase,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) struct Options {
    pub(crate) api_url: String,
    pub(crate) env: Vec<(&'static str, String)>,
}

impl Options {
    pub(crate) fn new(emulator: &RunningEmulator) -> Self {
        Self { api_url: emulator.base_url(), env: Vec::new() }
    }

    pub(crate) fn at(api_url: impl Into<String>) -> Self {
        Self { api_url: api_url.into(), env: Vec::new() }
    }

    pub(crate) fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }
}

pub(crate) fn env_map(
    options: &Options,
    db: &TestDatabase,
    dir: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("INFISICAL_API_URL", options.api_url.clone()),
        ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "health-client".to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "health-secret".to_owned()),
        ("IKIT_DATABASE_URL", db.url().to_owned()),
        ("IKIT_HEALTH_ADDR", "127.0.0.1:0".to_owned()),
        ("IKIT_WEBHOOK_ADDR", "127.0.0.1:1".to_owned()),
        ("IKIT_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("IKIT_ADMIN_TOKEN_PREVIOUS", PREVIOUS_ADMIN_TOKEN.to_owned()),
        ("IKIT_AUDIT_SPOOL_DIR", dir.join("spool").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in &options.env {
        env.insert((*k).to_owned(), v.clone());
    }
    env
}

pub(crate) async fn spawn_app(options: Options) -> TestApp {
    spawn_app_with(options, |_, _| None).await
}

/// `cache` may build the service's cache (e.g. with a test Redis prefix) from the settings and
/// the clock.
pub(crate) async fn spawn_app_with(
    options: Options,
    cache: impl FnOnce(&HealthConfig, Arc<dyn Clock>) -> Option<ikit_client::CachedClient>,
) -> TestApp {
    let db = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let env = env_map(&options, &db, dir.path());
    let config = HealthConfig::load(None, &env).expect("valid config");
    // the service's clock starts at real time, so the emulator's tokens look as fresh to it
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let cache = cache(&config, clock.clone());
    let parts = Parts { clock: Some(clock.clone()), cache, audit: None };
    let app = Application::build_with(config, parts).await.expect("app builds");
    let base = app.base_url();
    TestApp { app: Some(app), base, http: reqwest::Client::new(), clock, db, _dir: dir }
}

impl TestApp {
    pub(crate) fn app(&self) -> &Application {
        self.app.as_ref().expect("running")
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("request")
    }

    pub(crate) async fn health(&self) -> (u16, Value) {
        let r = self.get("/api/v1/infisical/health").await;
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    pub(crate) async fn rotate(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request =
            self.http.post(format!("{}/api/v1/infisical/rotate", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.expect("request");
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    pub(crate) async fn jwks(&self) -> Value {
        let r = self.get("/.well-known/jwks.json").await;
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    pub(crate) async fn audit(&self, action: &str, outcome: Option<Outcome>) -> Vec<AuditRecord> {
        let filter = AuditFilter { action: Some(action.into()), outcome, ..Default::default() };
        self.app().audit().query(&filter).await.expect("audit query")
    }

    pub(crate) fn advance_days(&self, days: i64) {
        self.clock.advance(days * DAY * 1000);
    }

    pub(crate) fn clock_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    pub(crate) fn advance_secs(&self, secs: i64) {
        self.clock.advance(secs * 1000);
    }

    pub(crate) async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.expect("clean shutdown");
        }
        let _ = self.db.cleanup().await;
    }
}

/// Kids of a JWKS document.
pub(crate) fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}
