//! The stack each test runs on: the emulator (pinned clock), a fresh PostgreSQL database, a
//! Redis prefix, a manual clock shared with the service, and helpers to drive them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ikit_client::{
    AuthMethod, BreakerConfig, BudgetConfig, Client, ClientConfig, ManualClock, NewSecret,
    RetryPolicy, Scope, SecretUpdate,
};
use ikit_common::audit::{AuditFilter, AuditRecord};
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_emulator::{Emulator, EmulatorClock, EmulatorConfig, RunningEmulator, Seed};
use ikit_webhook::{Application, Options, WebhookSettings};
use serde_json::json;

pub(crate) const PROJECT: &str = "7d1c0b52-0000-4000-8000-00000000000a";
pub(crate) const START_MS: i64 = 1_780_000_000_000;
pub(crate) const SECRET: &str = "whsec-webhook-test-1";
pub(crate) const EVENTS_TOKEN: &str = "events-token-0123456789";
pub(crate) const STATE_KEY: &str = "state-key-0123456789abcdef0123456789";
const CLIENT_ID: &str = "hook-client";
const CLIENT_SECRET: &str = "hook-client-secret";

fn seed() -> Seed {
    let mut secrets = vec![
        json!({"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "DATABASE_URL", "value": "postgres://v1"}),
        json!({"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "API_KEY", "value": "k1"}),
        json!({"projectId": PROJECT, "environment": "dev", "path": "/shared", "key": "COMMON", "value": "c1"}),
        json!({"projectId": PROJECT, "environment": "prod", "path": "/app", "key": "DATABASE_URL", "value": "postgres://prod"}),
    ];
    for i in 0..3 {
        secrets.push(json!({"projectId": PROJECT, "environment": "dev", "path": "/burst", "key": format!("B{i}"), "value": "0"}));
    }
    let text = json!({
        "projects": [{"id": PROJECT, "slug": "hooks", "environments": ["dev", "prod"]}],
        "identities": [{"id": "id-hook", "name": "hook", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
                        "projects": [PROJECT]}],
        "folders": [{"projectId": PROJECT, "environment": "dev", "path": "/auth/jwt"}],
        "secrets": secrets,
        "imports": [{"projectId": PROJECT, "environment": "dev", "path": "/app",
                     "importEnvironment": "dev", "importPath": "/shared"}]
    })
    .to_string();
    Seed::from_json(&text).expect("seed parses")
}

pub(crate) struct Stack {
    pub(crate) emulator: RunningEmulator,
    pub(crate) db: TestDatabase,
    pub(crate) redis: TestRedis,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) spool: tempfile::TempDir,
}

impl Stack {
    pub(crate) async fn start() -> Self {
        let config = EmulatorConfig::new(seed())
            .clock(EmulatorClock::fixed(START_MS))
            .webhook_coalesce(Duration::from_millis(20))
            .rng_seed(3);
        let emulator = Emulator::start(config).await.expect("emulator starts");
        Self {
            emulator,
            db: TestDatabase::postgres().await,
            redis: TestRedis::new().await,
            clock: Arc::new(ManualClock::new(START_MS)),
            spool: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn env(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("INFISICAL_API_URL", self.emulator.base_url().as_str()),
            ("INFISICAL_PROJECT_ID", PROJECT),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET),
            ("IKIT_DATABASE_URL", self.db.url()),
            ("IKIT_REDIS_URL", self.redis.url()),
            ("IKIT_WEBHOOK_SECRET", SECRET),
            ("IKIT_WEBHOOK_STATE_KEY", STATE_KEY),
            ("IKIT_EVENTS_TOKEN", EVENTS_TOKEN),
            ("IKIT_WEBHOOK_ADDR", "127.0.0.1:0"),
            ("IKIT_HEALTH_ADDR", "127.0.0.1:1"),
            ("IKIT_WEBHOOK_COALESCE", "0s"),
            ("IKIT_WEBHOOK_WORKERS", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    pub(crate) fn settings(&self, extra: &[(&str, &str)]) -> WebhookSettings {
        WebhookSettings::load(None, &self.env(extra)).expect("settings load")
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig::new(
            &self.emulator.base_url(),
            AuthMethod::UniversalAuth {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.to_owned().into(),
            },
        )
        .expect("client config")
        .with_retry(RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_retry_after: Duration::from_millis(10),
        })
        .with_breaker(BreakerConfig { failure_threshold: 1000, open_for: Duration::from_millis(1) })
        .with_budget(BudgetConfig { capacity: 100_000.0, refill_per_sec: 100_000.0 })
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5))
    }

    pub(crate) fn options(&self, instance: &str) -> Options {
        Options {
            clock: self.clock.clone(),
            client_config: Some(self.client_config()),
            redis_prefix: self.redis.prefix().to_owned(),
            audit_spool_dir: self.spool.path().join(instance),
            instance_id: Some(instance.to_owned()),
        }
    }

    pub(crate) async fn app(&self, extra: &[(&str, &str)]) -> Application {
        self.app_named("a", extra).await
    }

    pub(crate) async fn app_named(&self, instance: &str, extra: &[(&str, &str)]) -> Application {
        Application::build_with(self.settings(extra), self.options(instance))
            .await
            .expect("app builds")
    }

    /// A client writing to the emulator, as a person or CI would.
    pub(crate) fn writer(&self) -> Client {
        Client::new(self.client_config()).expect("writer")
    }

    /// Registers a project webhook on the emulator pointing at `app`, signed with `SECRET`.
    pub(crate) async fn register_hook(&self, app: &Application, environment: &str) {
        let http = reqwest::Client::new();
        let base = self.emulator.base_url();
        let login: serde_json::Value = http
            .post(format!("{base}/api/v1/auth/universal-auth/login"))
            .json(&json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["accessToken"].as_str().expect("token").to_owned();
        let r = http
            .post(format!("{base}/api/v1/webhooks"))
            .bearer_auth(token)
            .json(&json!({"projectId": PROJECT, "environment": environment, "secretPath": "/**",
                          "webhookUrl": format!("http://127.0.0.1:{}/api/v1/infisical/webhook", app.port()),
                          "webhookSecretKey": SECRET}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "webhook create: {}", r.status());
    }

    pub(crate) async fn update(&self, folder: &str, key: &str, value: &str) {
        self.writer()
            .update_secret(&Scope::new(PROJECT, "dev", folder), &SecretUpdate::value(key, value))
            .await
            .expect("update");
        self.tick();
    }

    pub(crate) async fn create(&self, folder: &str, key: &str, value: &str) {
        self.writer()
            .create_secret(&Scope::new(PROJECT, "dev", folder), &NewSecret::new(key, value))
            .await
            .expect("create");
        self.tick();
    }

    /// One millisecond on both clocks: the emulator's clock is pinned, and two deliveries of one
    /// folder in the same millisecond are the same bytes (a replay).
    pub(crate) fn tick(&self) {
        self.advance(Duration::from_millis(1));
    }

    /// Moves the service's and the emulator's clocks together.
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance_by(by);
        self.emulator.clock().advance(by);
    }

    pub(crate) async fn audit_rows(app: &Application) -> Vec<AuditRecord> {
        app.state()
            .audit
            .query(&AuditFilter {
                action: Some("webhook.receive".into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .expect("audit query")
    }

    pub(crate) async fn queued(app: &Application) -> i64 {
        app.state().db.depth().await.expect("depth").0
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 15 s.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs a body with headers to the service.
pub(crate) async fn post(
    app: &Application,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}{path}", app.port()))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body).send().await.expect("post")
}

/// A minimal SSE reader over the event stream, as a 20-line client in any language would be.
pub(crate) struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub(crate) async fn connect(
        app: &Application,
        query: &str,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut req = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/infisical/events{query}", app.port()))
            .bearer_auth(EVENTS_TOKEN);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = req.send().await.expect("sse connect");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// The next event's id and JSON (heartbeats skipped), within 15 s.
    pub(crate) async fn next(&mut self) -> (i64, serde_json::Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return (id, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within 15 s")
                .expect("stream readable")
                .expect("stream open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A reader with L1 and the shared sealed L2, listening for invalidations and events.
pub(crate) async fn cached_reader(
    stack: &Stack,
) -> (ikit_client::CachedClient, ikit_client::ListenerHandle) {
    use ikit_client::{CachedClient, SealKey};
    let config = CachedClient::builder()
        .ttl(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(7200))
        .redis(stack.redis.url(), Some(SealKey::new([7u8; 32])))
        .redis_prefix(stack.redis.prefix());
    let cache = config.client(stack.writer()).build().expect("cached client");
    let mut listener = cache.start_listener().expect("listener");
    listener.subscribed().await;
    (cache, listener)
}

pub(crate) async fn read(
    cache: &ikit_client::CachedClient,
    folder: &str,
    key: &str,
) -> Option<String> {
    let secret = ikit_common::SecretRef::new(PROJECT, "dev", folder, key).expect("ref");
    match cache.get(&secret).await {
        Ok(served) => Some(served.value.value.expose().to_owned()),
        Err(ikit_client::ClientError::NotFound { .. }) => None,
        Err(e) => panic!("read {folder}/{key}: {e}"),
    }
}
