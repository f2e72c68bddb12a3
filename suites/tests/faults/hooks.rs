//! The webhook service on the suite's emulator, with its PostgreSQL and Redis optionally behind
//! proxies the test cuts, and helpers to sign and post deliveries as Infisical does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ikit_client::{
    BreakerConfig, BudgetConfig, Client, ClientConfig, ManualClock, RetryPolicy, Scope,
    SecretUpdate,
};
use ikit_common::audit::{AuditFilter, AuditRecord};
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_common::webhook_signature::sign;
use ikit_emulator::{RunningEmulator, Seed};
use ikit_webhook::{Application, Options, WebhookSettings};
use serde_json::json;

use crate::support::{CLIENT_ID, CLIENT_SECRET, PROJECT, START_MS, emulator, universal};

pub(crate) const HOOK_SECRET: &str = "whsec-suite-Hk42-signing";
pub(crate) const STATE_KEY: &str = "suite-state-key-0123456789abcdef0123";
pub(crate) const HOOK: &str = "/api/v1/infisical/webhook";

pub(crate) struct HookStack {
    pub(crate) emulator: RunningEmulator,
    pub(crate) db: TestDatabase,
    pub(crate) redis: TestRedis,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) spool: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
}

impl HookStack {
    pub(crate) async fn start(seed: Seed) -> Self {
        Self {
            emulator: emulator(seed).await,
            db: TestDatabase::postgres().await,
            redis: TestRedis::new().await,
            clock: Arc::new(ManualClock::new(START_MS)),
            spool: tempfile::tempdir().expect("tempdir"),
            http: reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("http"),
        }
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig::new(&self.emulator.base_url(), universal())
            .expect("client config")
            .with_retry(RetryPolicy {
                max_attempts: 1,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
                max_retry_after: Duration::from_millis(10),
            })
            .with_breaker(BreakerConfig {
                failure_threshold: 1000,
                open_for: Duration::from_millis(1),
            })
            .with_budget(BudgetConfig { capacity: 1e9, refill_per_sec: 1e9 })
            .with_timeouts(Duration::from_secs(2), Duration::from_secs(5))
    }

    /// The service with its database and Redis at the given URLs (proxies, or the real ones).
    pub(crate) async fn app_at(
        &self,
        database_url: &str,
        redis_url: &str,
        extra: &[(&str, &str)],
    ) -> Application {
        let mut env: BTreeMap<String, String> = [
            ("INFISICAL_API_URL", self.emulator.base_url().as_str()),
            ("INFISICAL_PROJECT_ID", PROJECT),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET),
            ("IKIT_DATABASE_URL", database_url),
            ("IKIT_REDIS_URL", redis_url),
            ("IKIT_WEBHOOK_SECRET", HOOK_SECRET),
            ("IKIT_WEBHOOK_STATE_KEY", STATE_KEY),
            ("IKIT_WEBHOOK_ADDR", "127.0.0.1:0"),
            ("IKIT_HEALTH_ADDR", "127.0.0.1:1"),
            ("IKIT_WEBHOOK_COALESCE", "0s"),
            ("IKIT_WEBHOOK_WORKERS", "2"),
            ("IKIT_WEBHOOK_RATE_LIMIT", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let settings = WebhookSettings::load(None, &env).expect("webhook settings");
        let options = Options {
            clock: self.clock.clone(),
            client_config: Some(self.client_config()),
            redis_prefix: self.redis.prefix().to_owned(),
            audit_spool_dir: self.spool.path().join("audit"),
            instance_id: Some("suite".to_owned()),
        };
        Application::build_with(settings, options).await.expect("webhook service starts")
    }

    pub(crate) async fn app(&self, extra: &[(&str, &str)]) -> Application {
        self.app_at(self.db.url(), self.redis.url(), extra).await
    }

    pub(crate) fn writer(&self) -> Client {
        Client::new(self.client_config()).expect("writer")
    }

    /// Changes a value in Infisical (no delivery: the test posts its own).
    pub(crate) async fn update(&self, folder: &str, key: &str, value: &str) {
        self.writer()
            .update_secret(&Scope::new(PROJECT, "dev", folder), &SecretUpdate::value(key, value))
            .await
            .expect("update");
    }

    /// Posts `body` signed at `ts` with `secret`; the status.
    pub(crate) async fn post_signed(
        &self,
        app: &Application,
        ts: i64,
        secret: &str,
        body: &str,
    ) -> u16 {
        let signature = sign(ts, secret.as_bytes(), body.as_bytes());
        self.post_raw(app, Some(&signature), body.as_bytes().to_vec()).await
    }

    pub(crate) async fn post_raw(
        &self,
        app: &Application,
        signature: Option<&str>,
        body: Vec<u8>,
    ) -> u16 {
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{}{HOOK}", app.port()))
            .header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("x-infisical-signature", signature);
        }
        request.body(body).send().await.expect("post").status().as_u16()
    }

    /// Stored per-key events: (folder key, event JSON).
    pub(crate) async fn stored_events(&self) -> Vec<(String, serde_json::Value)> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT folder_key, body FROM webhook_events ORDER BY seq",
        )
        .fetch_all(self.db.pool())
        .await
        .expect("events query")
        .into_iter()
        .map(|(folder, body)| (folder, serde_json::from_str(&body).expect("event json")))
        .collect()
    }

    pub(crate) async fn queued(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_queue")
            .fetch_one(self.db.pool())
            .await
            .expect("queue count")
    }

    /// The queue's rows by folder: whether a worker holds it, and why it was last given back.
    pub(crate) async fn queue_rows(&self) -> Vec<QueueRow> {
        sqlx::query_as::<_, (String, bool, Option<String>)>(
            "SELECT folder, lease_owner IS NOT NULL, last_error FROM webhook_queue ORDER BY folder",
        )
        .fetch_all(self.db.pool())
        .await
        .expect("queue query")
        .into_iter()
        .map(|(folder, leased, last_error)| QueueRow { folder, leased, last_error })
        .collect()
    }

    pub(crate) async fn audit_rows(app: &Application) -> Vec<AuditRecord> {
        app.state()
            .audit
            .query(&AuditFilter {
                action: Some("webhook.receive".into()),
                limit: Some(100_000),
                ..Default::default()
            })
            .await
            .expect("audit query")
    }
}

pub(crate) struct QueueRow {
    pub(crate) folder: String,
    pub(crate) leased: bool,
    pub(crate) last_error: Option<String>,
}

/// Infisical's folder-level `secrets.modified` body.
pub(crate) fn modified(ts: i64, folder: &str) -> String {
    json!({"event": "secrets.modified",
           "project": {"workspaceId": PROJECT, "environment": "dev", "secretPath": folder},
           "timestamp": ts})
    .to_string()
}
