//! Folders, v1 (used by the CLI) and v2 (spec 3.1).

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
use crate::error::{ApiError, issue};
use crate::logic::time::iso_ms;
use crate::logic::values::{join_path, normalize_path, split_parent, valid_folder_name};
use crate::server::App;
use crate::store::{Folder, Store};

const BAD_NAME: &str =
    "Invalid folder name. Only alphanumeric characters, dashes, and underscores are allowed.";

fn folder_json(store: &Store, f: &Folder) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(f.id));
    m.insert("name".into(), json!(f.name));
    m.insert("version".into(), json!(f.version));
    m.insert("createdAt".into(), json!(iso_ms(f.created_at_ms)));
    m.insert("updatedAt".into(), json!(iso_ms(f.updated_at_ms)));
    m.insert("envId".into(), json!(store.environment(&f.project_id, &f.env).map(|e| e.id.clone())));
    m.insert("parentId".into(), json!(f.parent_id));
    m.insert("isReserved".into(), json!(false));
    m.insert("description".into(), json!(f.description));
    m.insert("lastSecretModified".into(), json!(f.last_secret_modified_ms.map(iso_ms)));
    m
}

fn check(
    store: &Store,
    caller: &Caller,
    project_id: &str,
    env: &str,
    action: &str,
) -> Result<(), ApiError> {
    if store.project(project_id).is_none() {
        return Err(ApiError::not_found(format!("Project with ID '{project_id}' not found")));
    }
    if store.environment(project_id, env).is_none() {
        return Err(ApiError::not_found(format!(
            "Environment with slug '{env}' in project with ID '{project_id}' not found"
        )));
    }
    let allowed = match caller {
        Caller::Identity { projects, .. } | Caller::User { projects, .. } => {
            projects.iter().any(|p| p == project_id)
        }
        Caller::ServiceToken { project_id: p, scopes, .. } => {
            p == project_id && scopes.iter().any(|s| s.environment == env)
        }
    };
    if allowed { Ok(()) } else { Err(ApiError::permission_denied(action, "secret-folders")) }
}

fn path_or_422(app: &App, raw: Option<&str>, field: &str) -> Result<String, ApiError> {
    normalize_path(raw.unwrap_or("/")).ok_or_else(|| {
        ApiError::validation(
            validation_status(app),
            vec![issue("custom", &[field], "Invalid path")],
        )
    })
}

fn required<'a>(app: &App, value: Option<&'a str>, field: &str) -> Result<&'a str, ApiError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::validation(
            validation_status(app),
            vec![issue("invalid_type", &[field], "Required")],
        )
    })
}

fn missing_folder(path: &str, env: &str) -> ApiError {
    ApiError::not_found(format!(
        "Folder with path '{path}' in environment with slug '{env}' not found"
    ))
}

/// Creates `name` under `parent` (and any missing folder along `parent`, as the server does),
/// or returns the folder that already has that name.
fn create_folder(
    store: &mut Store,
    project_id: &str,
    env: &str,
    parent: &str,
    name: &str,
    description: Option<String>,
    now: i64,
) -> Result<Folder, ApiError> {
    if !valid_folder_name(name) {
        return Err(ApiError::bad_request(BAD_NAME));
    }
    store.ensure_folders(project_id, env, parent, now);
    let parent_folder = store
        .folder(project_id, env, parent)
        .cloned()
        .ok_or_else(|| missing_folder(parent, env))?;
    let path = join_path(parent, name);
    if let Some(existing) = store.folder(project_id, env, &path) {
        return Ok(existing.clone());
    }
    let folder = Folder {
        description,
        ..Folder::new(project_id, env, path, name, Some(parent_folder.id), now)
    };
    store.folders.push(folder.clone());
    Ok(folder)
}

/// Deletes a folder with everything under it.
fn delete_subtree(store: &mut Store, folder: &Folder) {
    let prefix = format!("{}/", folder.path);
    let inside = |p: &str| p == folder.path || p.starts_with(&prefix);
    store
        .folders
        .retain(|f| !(f.project_id == folder.project_id && f.env == folder.env && inside(&f.path)));
    store
        .secrets
        .retain(|s| !(s.project_id == folder.project_id && s.env == folder.env && inside(&s.path)));
    store
        .imports
        .retain(|i| !(i.project_id == folder.project_id && i.env == folder.env && inside(&i.path)));
}

pub(crate) async fn v1_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let project_id = required(&app, q.get("workspaceId"), "workspaceId")?;
    let env = required(&app, q.get("environment"), "environment")?;
    // The server reads `path` (default `/`); the CLI's `directory` is never consulted.
    let path = path_or_422(&app, q.get("path"), "path")?;
    let store = app.store.locked();
    check(&store, &caller, project_id, env, "read")?;
    let folders: Vec<Value> = store
        .children(project_id, env, &path)
        .into_iter()
        .map(|f| Value::Object(folder_json(&store, f)))
        .collect();
    Ok(Json(json!({ "folders": folders })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    project_id: Option<String>,
    workspace_id: Option<String>,
    environment: String,
    name: String,
    path: Option<String>,
    directory: Option<String>,
    description: Option<String>,
}

/// The create body both folder API versions accept; they differ only in which project field wins.
fn parse_create(app: &App, body: &Bytes) -> Result<CreateBody, ApiError> {
    parse_body(
        app,
        body,
        &[
            opt("projectId", Ty::Str),
            opt("workspaceId", Ty::Str),
            req("environment", Ty::Str),
            req("name", Ty::Str),
            opt("path", Ty::Str),
            opt("directory", Ty::Str),
            opt("description", Ty::Str),
        ],
    )
}

pub(crate) async fn v1_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input = parse_create(&app, &body)?;
    let project_id = required(
        &app,
        input.workspace_id.as_deref().or(input.project_id.as_deref()),
        "workspaceId",
    )?
    .to_owned();
    create_common(&app, &caller, &project_id, input, false)
}

pub(crate) async fn v2_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input = parse_create(&app, &body)?;
    let project_id =
        required(&app, input.project_id.as_deref().or(input.workspace_id.as_deref()), "projectId")?
            .to_owned();
    create_common(&app, &caller, &project_id, input, true)
}

fn create_common(
    app: &App,
    caller: &Caller,
    project_id: &str,
    input: CreateBody,
    with_path: bool,
) -> Result<Response, ApiError> {
    let parent = path_or_422(app, input.path.as_deref().or(input.directory.as_deref()), "path")?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    check(&store, caller, project_id, &input.environment, "create")?;
    let folder = create_folder(
        &mut store,
        project_id,
        &input.environment,
        &parent,
        input.name.trim(),
        input.description,
        now,
    )?;
    let mut rendered = folder_json(&store, &folder);
    if with_path {
        rendered.insert("path".into(), json!(folder.path));
    }
    Ok(Json(json!({ "folder": rendered })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    project_id: Option<String>,
    workspace_id: Option<String>,
    environment: String,
    path: Option<String>,
    directory: Option<String>,
}

/// `DELETE /api/v1/folders/:name` and `DELETE /api/v2/folders/:id`: by id, or by name under
/// the body's path.
pub(crate) async fn delete_folder(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: DeleteBody = parse_body(
        &app,
        &body,
        &[
            opt("projectId", Ty::Str),
            opt("workspaceId", Ty::Str),
            req("environment", Ty::Str),
            opt("path", Ty::Str),
            opt("directory", Ty::Str),
        ],
    )?;
    let id_or_name = id_or_name.as_str();
    let project_id =
        required(&app, input.project_id.as_deref().or(input.workspace_id.as_deref()), "projectId")?
            .to_owned();
    let parent = path_or_422(&app, input.path.as_deref().or(input.directory.as_deref()), "path")?;
    let mut store = app.store.locked();
    check(&store, &caller, &project_id, &input.environment, "delete")?;
    let folder = store
        .folders
        .iter()
        .find(|f| {
            f.project_id == project_id
                && f.env == input.environment
                && f.path != "/"
                && (f.id == id_or_name
                    || (f.name == id_or_name
                        && split_parent(&f.path).is_some_and(|(p, _)| p == parent)))
        })
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Folder with ID '{id_or_name}' not found")))?;
    delete_subtree(&mut store, &folder);
    Ok(Json(json!({ "folder": folder_json(&store, &folder) })).into_response())
}

pub(crate) async fn v2_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let project_id = required(&app, q.get("projectId").or(q.get("workspaceId")), "projectId")?;
    let env = required(&app, q.get("environment"), "environment")?;
    let path = path_or_422(&app, q.get("path").or(q.get("directory")), "path")?;
    let recursive = q.lenient_bool("recursive");
    let store = app.store.locked();
    check(&store, &caller, project_id, env, "read")?;
    let folders: Vec<Value> = if recursive {
        store
            .subtree(project_id, env, &path)
            .into_iter()
            .skip(1)
            .filter_map(|p| store.folder(project_id, env, &p))
            .map(|f| {
                let mut m = folder_json(&store, f);
                let relative =
                    f.path.strip_prefix(&path).unwrap_or(&f.path).trim_start_matches('/');
                m.insert("relativePath".into(), json!(format!("/{relative}")));
                Value::Object(m)
            })
            .collect()
    } else {
        store
            .children(project_id, env, &path)
            .into_iter()
            .map(|f| Value::Object(folder_json(&store, f)))
            .collect()
    };
    Ok(Json(json!({ "folders": folders })).into_response())
}

pub(crate) async fn v2_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = app.store.locked();
    let folder = store
        .folder_by_id(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Folder with ID '{id}' not found")))?;
    check(&store, &caller, &folder.project_id, &folder.env, "read")?;
    let env = store.environment(&folder.project_id, &folder.env).cloned();
    let mut m = folder_json(&store, &folder);
    m.insert(
        "environment".into(),
        json!({"envId": env.as_ref().map(|e| e.id.clone()), "envName": env.as_ref().map(|e| e.name.clone()), "envSlug": folder.env}),
    );
    m.insert("path".into(), json!(folder.path));
    m.insert("projectId".into(), json!(folder.project_id));
    Ok(Json(json!({ "folder": m })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    project_id: String,
    environment: String,
    name: String,
    path: Option<String>,
    description: Option<String>,
}

/// Renames a folder (moving every path under it).
pub(crate) async fn v2_update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: UpdateBody = parse_body(
        &app,
        &body,
        &[
            req("projectId", Ty::Str),
            req("environment", Ty::Str),
            req("name", Ty::Str),
            opt("path", Ty::Str),
            opt("description", Ty::Str),
        ],
    )?;
    let name = input.name.trim().to_owned();
    if !valid_folder_name(&name) {
        return Err(ApiError::bad_request(BAD_NAME));
    }
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    check(&store, &caller, &input.project_id, &input.environment, "edit")?;
    let folder = store
        .folders
        .iter()
        .find(|f| {
            f.id == id
                && f.project_id == input.project_id
                && f.env == input.environment
                && f.path != "/"
        })
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Folder with ID '{id}' not found")))?;
    let (parent, _) = split_parent(&folder.path).expect("non-root folders have a parent");
    let new_path = join_path(&parent, &name);
    if new_path != folder.path && store.folder(&folder.project_id, &folder.env, &new_path).is_some()
    {
        return Err(ApiError::bad_request("Folder with specified name already exists"));
    }
    let old = folder.path.clone();
    let moved = |p: &str| -> Option<String> {
        if p == old {
            Some(new_path.clone())
        } else {
            p.strip_prefix(&format!("{old}/")).map(|rest| format!("{new_path}/{rest}"))
        }
    };
    let (pid, env) = (folder.project_id.clone(), folder.env.clone());
    for f in store.folders.iter_mut().filter(|f| f.project_id == pid && f.env == env) {
        if let Some(p) = moved(&f.path) {
            f.path = p;
        }
    }
    for s in store.secrets.iter_mut().filter(|s| s.project_id == pid && s.env == env) {
        if let Some(p) = moved(&s.path) {
            s.path = p;
        }
    }
    for i in store.imports.iter_mut().filter(|i| i.project_id == pid && i.env == env) {
        if let Some(p) = moved(&i.path) {
            i.path = p;
        }
    }
    let f = store.folders.iter_mut().find(|f| f.id == id).expect("found above");
    f.name = name;
    f.version += 1;
    f.updated_at_ms = now;
    if input.description.is_some() {
        f.description = input.description;
    }
    let _ = input.path;
    let updated = f.clone();
    let rendered = folder_json(&store, &updated);
    Ok(Json(json!({ "folder": rendered })).into_response())
}
