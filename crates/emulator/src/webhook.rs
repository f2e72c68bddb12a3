//! Webhook delivery (spec 5.2 to 5.4): changes are gathered per (project, environment, folder)
//! for the coalescing delay, then every enabled hook whose glob matches the folder gets one
//! signed `secrets.modified` POST. Results land in `lastStatus` / `lastRunErrorMessage`.

use crate::LockExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::ApiVersion;
use crate::error::EmulatorError;
use crate::logic::glob::path_matches;
use crate::logic::signing::{payload_bytes, signature_header};
use crate::server::App;
use crate::store::{Actor, Webhook};

/// One attempted delivery, for tests and `/__emulator/webhook-deliveries`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub webhook_id: String,
    pub url: String,
    pub event: String,
    /// The exact body bytes sent (UTF-8 JSON).
    pub body: String,
    pub signature: Option<String>,
    /// `success` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub http_status: Option<u16>,
}

pub(crate) struct Dispatcher {
    coalesce: Duration,
    pending: Mutex<HashSet<(String, String, String)>>,
    client: reqwest::Client,
}

impl Dispatcher {
    pub(crate) fn new(coalesce: Duration) -> Result<Self, EmulatorError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent("axios/1.7.4")
            .build()
            .map_err(|e| EmulatorError::HttpClient(e.to_string()))?;
        Ok(Self { coalesce, pending: Mutex::default(), client })
    }
}

/// Records a change to a folder; the first change of a burst schedules the delivery.
pub(crate) fn notify_change(
    app: &Arc<App>,
    project_id: &str,
    env: &str,
    path: &str,
    actor: Option<Actor>,
) {
    let key = (project_id.to_owned(), env.to_owned(), path.to_owned());
    if !app.dispatcher.pending.locked().insert(key.clone()) {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        tokio::time::sleep(app.dispatcher.coalesce).await;
        app.dispatcher.pending.locked().remove(&key);
        let (project_id, env, path) = key;
        let candidates: Vec<Webhook> = {
            let store = app.store.locked();
            store
                .webhooks
                .iter()
                .filter(|w| w.project_id == project_id && w.env == env && !w.is_disabled)
                .cloned()
                .collect()
        };
        // Globs are user input: matched after the store lock is released.
        let hooks: Vec<Webhook> =
            candidates.into_iter().filter(|w| path_matches(&w.secret_path, &path)).collect();
        if hooks.is_empty() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for hook in hooks {
            let (app, path, actor) = (app.clone(), path.clone(), actor.clone());
            tasks.spawn(async move {
                deliver(&app, &hook, "secrets.modified", &path, actor.as_ref()).await
            });
        }
        while tasks.join_next().await.is_some() {}
        // Each delivery recorded its outcome on its hook; nothing changed when no hook matched.
        app.persist();
    });
}

/// The `project` object of a payload, in the server's key order.
fn project_fields(
    app: &App,
    hook: &Webhook,
    event: &str,
    path: &str,
    actor: Option<&Actor>,
) -> Vec<(&'static str, Option<Value>)> {
    let store = app.store.locked();
    let project = store.project(&hook.project_id);
    let env_name = store.environment(&hook.project_id, &hook.env).map(|e| e.name.clone());
    let pid = Some(Value::from(hook.project_id.clone()));
    if app.api_version == ApiVersion::V2024 {
        return vec![
            ("workspaceId", pid),
            ("environment", Some(hook.env.clone().into())),
            ("secretPath", Some(path.into())),
        ];
    }
    let mut fields = vec![
        ("workspaceId", pid.clone()),
        ("projectId", pid),
        ("projectName", project.map(|p| Value::from(p.name.clone()))),
        ("environment", Some(hook.env.clone().into())),
        ("environmentName", env_name.map(Value::from)),
        ("secretPath", Some(path.into())),
    ];
    if event == "secrets.modified" {
        fields.push(("changedBy", actor.map(|a| Value::from(a.name.clone()))));
        fields.push(("changedByActorType", actor.map(|a| Value::from(a.kind.clone()))));
    }
    fields
}

/// Sends one event to one hook and records the outcome on the hook.
pub(crate) async fn deliver(
    app: &App,
    hook: &Webhook,
    event: &str,
    path: &str,
    actor: Option<&Actor>,
) -> Delivery {
    let timestamp = app.clock.now_ms();
    let body = payload_bytes(event, &project_fields(app, hook, event, path, actor), &[], timestamp);
    let signature =
        hook.secret_key.as_ref().map(|k| signature_header(timestamp, k.as_bytes(), &body));
    let (status, error, http_status) = if app.faults.take_webhook_failure() {
        ("failed", Some("emulated delivery failure".to_owned()), None)
    } else {
        let mut request = app
            .dispatcher
            .client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/plain, */*")
            .body(body.clone());
        if let Some(sig) = &signature {
            request = request.header("x-infisical-signature", sig);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => ("success", None, Some(r.status().as_u16())),
            Ok(r) => (
                "failed",
                Some(format!("Request failed with status code {}", r.status().as_u16())),
                Some(r.status().as_u16()),
            ),
            Err(e) => ("failed", Some(e.to_string()), None),
        }
    };
    {
        let mut store = app.store.locked();
        if let Some(w) = store.webhooks.iter_mut().find(|w| w.id == hook.id) {
            w.last_status = Some(status.to_owned());
            w.last_run_error_message = error.clone();
        }
    }
    let delivery = Delivery {
        webhook_id: hook.id.clone(),
        url: hook.url.clone(),
        event: event.to_owned(),
        body: String::from_utf8(body).expect("json is utf-8"),
        signature,
        status: status.to_owned(),
        error,
        http_status,
    };
    app.deliveries.locked().push(delivery.clone());
    delivery
}
