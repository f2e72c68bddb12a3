//! Projects and workspaces with their embedded environments (spec 3.2).

use crate::LockExt;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Caller;
use super::schema::{Ty, opt, req};
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
        Caller::Identity { projects, .. } | Caller::User { projects, .. } => {
            projects.iter().any(|p| p == project_id)
        }
        Caller::ServiceToken { project_id: p, .. } => p == project_id,
    }
}

fn all_visible(app: &App, caller: &Caller, url: &str) -> Result<Vec<Value>, ApiError> {
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(url));
    }
    let store = app.store.locked();
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
    let store = app.store.locked();
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

fn environment_json(project: &Project, env: &crate::store::Environment) -> Value {
    let position = project.environments.iter().position(|e| e.id == env.id).map_or(0, |p| p + 1);
    let at = iso_ms(project.created_at_ms);
    json!({"id": env.id, "name": env.name, "slug": env.slug, "position": position, "projectId": project.id,
           "createdAt": at, "updatedAt": at})
}

#[derive(serde::Deserialize)]
pub(crate) struct NewEnvironment {
    name: String,
    slug: String,
}

/// `POST /api/v1/projects/:projectId/environments`.
pub(crate) async fn create_environment(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let status = super::validation_status(&app);
    let input: NewEnvironment =
        super::parse_body(&app, &body, &[req("name", Ty::Str), req("slug", Ty::Str)])?;
    if !crate::logic::values::valid_slug(&input.slug) {
        return Err(ApiError::validation(
            status,
            vec![crate::error::issue("custom", &["slug"], "Must be a valid slug")],
        ));
    }
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(&format!(
            "/api/v1/projects/{project_id}/environments"
        )));
    }
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    if !visible(&caller, &project_id) || store.project(&project_id).is_none() {
        return Err(ApiError::permission_denied("create", "environments"));
    }
    if store.environment(&project_id, &input.slug).is_some() {
        return Err(ApiError::bad_request("Environment with slug already exists"));
    }
    let env = crate::store::Environment {
        id: crate::store::new_id(),
        name: input.name,
        slug: input.slug,
    };
    store.folders.push(crate::store::Folder::new(
        &project_id,
        &env.slug,
        "/".into(),
        "root",
        None,
        now,
    ));
    let project = store.projects.iter_mut().find(|p| p.id == project_id).expect("checked above");
    project.environments.push(env.clone());
    let rendered = environment_json(project, &env);
    Ok(Json(json!({"message": "Successfully created environment", "projectId": project_id, "environment": rendered}))
        .into_response())
}

/// `GET /api/v1/projects/:projectId/environments/:envIdOrSlug`.
pub(crate) async fn get_environment(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project_id, env_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = app.store.locked();
    if !visible(&caller, &project_id) {
        return Err(ApiError::permission_denied("read", "environments"));
    }
    let project = store
        .project(&project_id)
        .ok_or_else(|| ApiError::not_found(format!("Project with ID '{project_id}' not found")))?;
    let env =
        project.environments.iter().find(|e| e.id == env_id || e.slug == env_id).ok_or_else(
            || ApiError::not_found(format!("Environment with id '{env_id}' not found")),
        )?;
    Ok(Json(json!({ "environment": environment_json(project, env) })).into_response())
}

fn tag_json(store: &Store, tag: &crate::store::Tag) -> Value {
    let at = store.project(&tag.project_id).map(|p| iso_ms(p.created_at_ms));
    json!({"id": tag.id, "slug": tag.slug, "color": tag.color, "createdAt": at, "updatedAt": at,
           "createdBy": null, "createdByActorType": null, "projectId": tag.project_id, "name": tag.name})
}

fn tag_access(caller: &Caller, project_id: &str, url: &str) -> Result<(), ApiError> {
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(url));
    }
    if !visible(caller, project_id) {
        return Err(ApiError::permission_denied("read", "tags"));
    }
    Ok(())
}

/// `GET /api/v1/projects/:projectId/tags`.
pub(crate) async fn list_tags(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project_id): Path<String>,
) -> Result<Response, ApiError> {
    tag_access(&caller, &project_id, &format!("/api/v1/projects/{project_id}/tags"))?;
    let store = app.store.locked();
    let tags: Vec<Value> = store
        .tags
        .iter()
        .filter(|t| t.project_id == project_id)
        .map(|t| tag_json(&store, t))
        .collect();
    Ok(Json(json!({ "tags": tags })).into_response())
}

/// `GET /api/v1/projects/:projectId/tags/slug/:slug` and `.../tags/:tagId`.
pub(crate) async fn get_tag(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project_id, id)): Path<(String, String)>,
    by_slug: bool,
) -> Result<Response, ApiError> {
    tag_access(&caller, &project_id, &format!("/api/v1/projects/{project_id}/tags"))?;
    let store = app.store.locked();
    let tag = store
        .tags
        .iter()
        .find(|t| t.project_id == project_id && if by_slug { t.slug == id } else { t.id == id })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Tag with {} '{id}' not found",
                if by_slug { "slug" } else { "ID" }
            ))
        })?;
    Ok(Json(json!({ "tag": tag_json(&store, tag) })).into_response())
}

#[derive(serde::Deserialize)]
pub(crate) struct NewTag {
    slug: String,
    color: Option<String>,
}

/// `POST /api/v1/projects/:projectId/tags`.
pub(crate) async fn create_tag(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let status = super::validation_status(&app);
    let input: NewTag =
        super::parse_body(&app, &body, &[req("slug", Ty::Str), opt("color", Ty::Str)])?;
    if !crate::logic::values::valid_slug(&input.slug) {
        return Err(ApiError::validation(
            status,
            vec![crate::error::issue("custom", &["slug"], "Must be a valid slug")],
        ));
    }
    tag_access(&caller, &project_id, &format!("/api/v1/projects/{project_id}/tags"))?;
    let mut store = app.store.locked();
    if store.tags.iter().any(|t| t.project_id == project_id && t.slug == input.slug) {
        return Err(ApiError::bad_request("Tag already exist"));
    }
    let mut tag = store.tag_or_create(&project_id, &input.slug);
    if let Some(stored) = store.tags.iter_mut().find(|t| t.id == tag.id) {
        stored.color = input.color.map(|c| c.trim().to_owned());
        tag = stored.clone();
    }
    Ok(Json(json!({ "tag": tag_json(&store, &tag) })).into_response())
}
