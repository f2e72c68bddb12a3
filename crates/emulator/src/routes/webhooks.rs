//! The project webhook API (spec 5.1). Deliveries themselves are in `crate::webhook`.

use crate::LockExt;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{Ty, opt, req};
use super::{Caller, Query, parse_body, validation_status};
use crate::ApiVersion;
use crate::error::{ApiError, issue};
use crate::logic::time::iso_ms;
use crate::server::App;
use crate::store::{Store, Webhook, new_id};

fn webhook_json(store: &Store, w: &Webhook, with_url: bool) -> Value {
    let env = store.environment(&w.project_id, &w.env);
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(w.id));
    m.insert("secretPath".into(), json!(w.secret_path));
    m.insert("lastStatus".into(), json!(w.last_status));
    m.insert("lastRunErrorMessage".into(), json!(w.last_run_error_message));
    m.insert("isDisabled".into(), json!(w.is_disabled));
    m.insert("createdAt".into(), json!(iso_ms(w.created_at_ms)));
    m.insert("updatedAt".into(), json!(iso_ms(w.updated_at_ms)));
    m.insert("envId".into(), json!(env.map(|e| e.id.clone())));
    m.insert("type".into(), json!(w.kind));
    m.insert("projectId".into(), json!(w.project_id));
    m.insert(
        "environment".into(),
        json!({"id": env.map(|e| e.id.clone()), "name": env.map(|e| e.name.clone()), "slug": w.env}),
    );
    if with_url {
        m.insert("url".into(), json!(w.url));
    }
    Value::Object(m)
}

/// Webhook management: project members; on the 2024 server only users (an identity token was
/// refused like a service token, 403).
fn member(app: &App, caller: &Caller, project_id: &str) -> Result<(), ApiError> {
    let identity_refused =
        app.api_version == ApiVersion::V2024 && matches!(caller, Caller::Identity { .. });
    match caller.member_projects() {
        _ if identity_refused => Err(super::auth::wrong_mode("/api/v1/webhooks")),
        Some(projects) if projects.iter().any(|p| p == project_id) => Ok(()),
        Some(_) => Err(ApiError::permission_denied("read", "webhooks")),
        None => Err(super::auth::wrong_mode("/api/v1/webhooks")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(rename = "type", default = "general")]
    kind: String,
    project_id: String,
    environment: String,
    webhook_url: String,
    webhook_secret_key: Option<String>,
    #[serde(default = "root")]
    secret_path: String,
}

fn general() -> String {
    "general".into()
}

fn root() -> String {
    "/".into()
}

pub(crate) async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let status = validation_status(&app);
    let input: CreateBody = parse_body(
        &app,
        &body,
        &[
            opt("type", Ty::Str),
            req("projectId", Ty::Str),
            req("environment", Ty::Str),
            req("webhookUrl", Ty::Str),
            opt("webhookSecretKey", Ty::Str),
            opt("secretPath", Ty::Str),
        ],
    )?;
    if url::Url::parse(&input.webhook_url).is_err() {
        return Err(ApiError::validation(
            status,
            vec![issue("invalid_string", &["webhookUrl"], "Invalid url")],
        ));
    }
    if input.kind == "slack" && !input.webhook_url.contains("hooks.slack.com") {
        return Err(ApiError::bad_request("Invalid Slack webhook URL"));
    }
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    member(&app, &caller, &input.project_id)?;
    if store.environment(&input.project_id, &input.environment).is_none() {
        return Err(ApiError::not_found(format!(
            "Environment with slug '{}' not found",
            input.environment
        )));
    }
    let hook = Webhook {
        id: new_id(),
        project_id: input.project_id,
        env: input.environment,
        secret_path: input.secret_path,
        url: input.webhook_url,
        secret_key: input.webhook_secret_key.filter(|k| !k.is_empty()),
        kind: input.kind,
        is_disabled: false,
        last_status: None,
        last_run_error_message: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let rendered = webhook_json(&store, &hook, false);
    store.webhooks.push(hook);
    Ok(Json(json!({"message": "Successfully created webhook", "webhook": rendered}))
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    is_disabled: bool,
}

fn find(store: &Store, id: &str) -> Result<Webhook, ApiError> {
    store
        .webhooks
        .iter()
        .find(|w| w.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Webhook with ID '{id}' not found")))
}

pub(crate) async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: UpdateBody = parse_body(&app, &body, &[req("isDisabled", Ty::Bool)])?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    member(&app, &caller, &find(&store, &id)?.project_id)?;
    let hook = store.webhooks.iter_mut().find(|w| w.id == id).expect("found above");
    hook.is_disabled = input.is_disabled;
    hook.updated_at_ms = now;
    let hook = hook.clone();
    Ok(Json(json!({"message": "Successfully updated webhook", "webhook": webhook_json(&store, &hook, false)})).into_response())
}

pub(crate) async fn remove(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut store = app.store.locked();
    let hook = find(&store, &id)?;
    member(&app, &caller, &hook.project_id)?;
    let rendered = webhook_json(&store, &hook, false);
    store.webhooks.retain(|w| w.id != id);
    Ok(Json(json!({"message": "Successfully deleted webhook", "webhook": rendered}))
        .into_response())
}

/// Sends the `test` event now and answers with the recorded outcome.
pub(crate) async fn test(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hook = {
        let store = app.store.locked();
        let hook = find(&store, &id)?;
        member(&app, &caller, &hook.project_id)?;
        hook
    };
    let path = hook.secret_path.clone();
    crate::webhook::deliver(&app, &hook, "test", &path, None).await;
    let store = app.store.locked();
    let hook = find(&store, &id)?;
    Ok(Json(json!({"message": "Successfully tested webhook", "webhook": webhook_json(&store, &hook, false)})).into_response())
}

pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let project_id = q.get("projectId").or(q.get("workspaceId")).unwrap_or("").to_owned();
    member(&app, &caller, &project_id)?;
    let store = app.store.locked();
    let hooks: Vec<Value> = store
        .webhooks
        .iter()
        .filter(|w| w.project_id == project_id)
        .filter(|w| q.get("environment").is_none_or(|e| e == w.env))
        .filter(|w| q.get("secretPath").is_none_or(|p| p == w.secret_path))
        .map(|w| webhook_json(&store, w, true))
        .collect();
    Ok(Json(json!({"message": "Successfully fetched webhook", "webhooks": hooks})).into_response())
}
