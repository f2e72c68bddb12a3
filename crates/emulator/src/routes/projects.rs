//! Projects and workspaces with their embedded environments (spec 3.2).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Caller;
use crate::error::ApiError;
use crate::logic::time::iso_ms;
use crate::server::App;
use crate::store::{Project, Store};

fn project_json(store: &Store, p: &Project) -> Value {
    let created = iso_ms(p.created_at_ms);
    json!({
        "id": p.id,
        "_id": p.id,
        "name": p.name,
        "description": null,
        "type": "secret-manager",
        "defaultProduct": "secret-manager",
        "slug": p.slug,
        "autoCapitalization": false,
        "orgId": store.org_id,
        "createdAt": created,
        "updatedAt": created,
        "version": 3,
        "upgradeStatus": null,
        "pitVersionLimit": 10,
        "kmsCertificateKeyId": null,
        "auditLogsRetentionDays": null,
        "hasDeleteProtection": false,
        "secretSharing": true,
        "showSnapshotsLegacy": false,
        "secretDetectionIgnoreValues": [],
        "environments": p.environments.iter().map(|e| json!({"id": e.id, "name": e.name, "slug": e.slug})).collect::<Vec<_>>(),
    })
}

fn visible(caller: &Caller, project_id: &str) -> bool {
    match caller {
        Caller::Identity { projects, .. } => projects.iter().any(|p| p == project_id),
        Caller::ServiceToken { project_id: p, .. } => p == project_id,
    }
}

fn all_visible(app: &App, caller: &Caller, url: &str) -> Result<Vec<Value>, ApiError> {
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(url));
    }
    let store = app.store.lock().expect("store lock");
    Ok(store
        .projects
        .iter()
        .filter(|p| visible(caller, &p.id))
        .map(|p| project_json(&store, p))
        .collect())
}

pub(crate) async fn list_projects(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    Ok(Json(json!({ "projects": all_visible(&app, &caller, "/api/v1/projects")? })).into_response())
}

pub(crate) async fn list_workspaces(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    Ok(Json(json!({ "workspaces": all_visible(&app, &caller, "/api/v1/workspace")? }))
        .into_response())
}

fn one(
    app: &App,
    caller: &Caller,
    find: impl Fn(&Project) -> bool,
    what: &str,
) -> Result<Value, ApiError> {
    let store = app.store.lock().expect("store lock");
    let project = store
        .projects
        .iter()
        .find(|p| find(p))
        .ok_or_else(|| ApiError::not_found(format!("Project {what} not found")))?;
    if !visible(caller, &project.id) {
        return Err(ApiError::permission_denied("read", "project"));
    }
    Ok(project_json(&store, project))
}

pub(crate) async fn get_workspace(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = one(&app, &caller, |p| p.id == id, &format!("with ID '{id}'"))?;
    Ok(Json(json!({ "workspace": p })).into_response())
}

pub(crate) async fn get_project(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(&format!("/api/v1/projects/{id}")));
    }
    let p = one(&app, &caller, |p| p.id == id, &format!("with ID '{id}'"))?;
    Ok(Json(json!({ "project": p })).into_response())
}

pub(crate) async fn get_project_by_slug(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(&format!("/api/v1/projects/slug/{slug}")));
    }
    let p = one(&app, &caller, |p| p.slug == slug, &format!("with slug '{slug}'"))?;
    Ok(Json(json!({ "project": p })).into_response())
}
