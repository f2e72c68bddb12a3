//! The webhook service in the dev stack: `ikit-webhook` built from the stack's settings, its
//! queue and audit log in their own SQLite file of the data directory, and the emulator webhook
//! registered to point at it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use ikit_common::SecretValue;
use ikit_webhook::{Application as Webhook, Options, WebhookSettings};
use serde_json::{Value, json};

use crate::error::CliError;

use super::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_PROJECT_ID, random_token, sqlite_url};

/// A running webhook service.
pub(crate) struct WebhookService {
    pub(crate) base_url: String,
    app: Webhook,
}

impl WebhookService {
    pub(crate) async fn stop(self) {
        self.app.shutdown().await;
    }
}

/// The key of the value MACs in the webhook's stored folder states: kept in the data directory
/// (0600), so a restart with `--data` diffs against what it knew.
fn state_key(data_dir: &Path, keep: bool) -> Result<SecretValue, CliError> {
    let path = data_dir.join("webhook-state-key");
    if keep && let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= ikit_webhook::config::MIN_STATE_KEY_LEN {
            return Ok(SecretValue::new(text));
        }
    }
    let key = random_token("ikit-state-");
    if keep {
        super::write_private(&path, key.expose().as_bytes())?;
    }
    Ok(key)
}

/// Starts the webhook service on `addr` with the stack's settings `env`.
pub(crate) async fn start(
    env: &BTreeMap<String, String>,
    addr: SocketAddr,
    data_dir: &Path,
    keep: bool,
) -> Result<Option<WebhookService>, CliError> {
    let mut env = env.clone();
    env.insert("IKIT_WEBHOOK_ADDR".into(), addr.to_string());
    env.insert("IKIT_DATABASE_URL".into(), sqlite_url(&data_dir.join("webhook.db")));
    env.insert("IKIT_WEBHOOK_STATE_KEY".into(), state_key(data_dir, keep)?.expose().to_owned());
    let settings = WebhookSettings::load(None, &env)
        .map_err(|e| CliError::Dev(format!("ikit-webhook settings: {e}")))?;
    let options = Options { audit_spool_dir: data_dir.join("spool-webhook"), ..Options::default() };
    let app = Webhook::build_with(settings, options)
        .await
        .map_err(|e| CliError::Dev(format!("ikit-webhook did not start: {e}")))?;
    let base_url = format!("http://{}", loopback(app.addr()));
    Ok(Some(WebhookService { base_url, app }))
}

/// An unspecified listen address reads as loopback in URLs.
pub(crate) fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::IpAddr::from([127, 0, 0, 1]), addr.port())
    } else {
        addr
    }
}

/// Registers `hook_url` as a webhook of every demo environment (`/**`), signed with `secret`;
/// hooks left by an earlier run with the same data directory are removed first.
pub(crate) async fn register(
    emulator_url: &str,
    hook_url: &str,
    secret: &str,
) -> Result<(), CliError> {
    let http = reqwest::Client::new();
    let api = format!("{emulator_url}/api");
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: reqwest::Error| CliError::Dev(format!("{what}: {e}"))
    };
    let login: Value = http
        .post(format!("{api}/v1/auth/universal-auth/login"))
        .json(&json!({"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fail("login to the emulator"))?
        .json()
        .await
        .map_err(fail("login to the emulator"))?;
    let token = login["accessToken"].as_str().unwrap_or_default().to_owned();
    let existing: Value = http
        .get(format!("{api}/v1/webhooks?workspaceId={DEMO_PROJECT_ID}"))
        .bearer_auth(&token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fail("list webhooks"))?
        .json()
        .await
        .map_err(fail("list webhooks"))?;
    for hook in existing["webhooks"].as_array().into_iter().flatten() {
        if let Some(id) = hook["id"].as_str() {
            http.delete(format!("{api}/v1/webhooks/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(fail("remove an old webhook"))?;
        }
    }
    for environment in ["dev", "staging", "prod"] {
        http.post(format!("{api}/v1/webhooks"))
            .bearer_auth(&token)
            .json(&json!({
                "projectId": DEMO_PROJECT_ID,
                "environment": environment,
                "webhookUrl": hook_url,
                "webhookSecretKey": secret,
                "secretPath": "/**",
            }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail("register the webhook"))?;
    }
    Ok(())
}
