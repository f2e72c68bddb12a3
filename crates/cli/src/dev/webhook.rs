//! The webhook service's place in the dev stack.
//!
//! PLUG POINT: `ikit-webhook` (services/webhook) is not part of the workspace's library surface
//! yet. When it is, [`start`] builds it from `env` (the stack's settings, which already carry
//! `IKIT_WEBHOOK_SECRET`) on `addr` with its queue in `data_dir`, and returns it; everything else
//! (registering the emulator webhook, the banner, the state file, shutdown) already follows from
//! a `Some`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use crate::error::CliError;

use super::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_PROJECT_ID};

type StopFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A running webhook service.
pub(crate) struct WebhookService {
    pub(crate) base_url: String,
    stop: Box<dyn FnOnce() -> StopFuture + Send>,
}

impl WebhookService {
    pub(crate) async fn stop(self) {
        (self.stop)().await;
    }
}

/// Starts the webhook service; `None` while it is not part of the build (see the module docs).
pub(crate) async fn start(
    _env: &BTreeMap<String, String>,
    _addr: SocketAddr,
    _data_dir: &Path,
) -> Result<Option<WebhookService>, CliError> {
    Ok(None)
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
