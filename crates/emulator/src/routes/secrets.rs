//! Secrets, v4 and v3 `raw` (spec 2.1 to 2.6): list with imports, recursion and reference
//! expansion; get by name and version; create, update, delete; the batch routes; approvals.

use crate::LockExt;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{Field, Ty, opt, req};
use super::{Caller, Query, parse_body, validation_status};
use crate::ApiVersion;
use crate::error::{ApiError, issue};
use crate::logic::expand::{Target, expand, format_multiline, rename_references};
use crate::logic::glob::{is_glob, path_matches};
use crate::logic::time::iso_ms;
use crate::logic::values::{normalize_path, trim_value, validate_key};
use crate::server::App;
use crate::store::{Actor, ProjectSnapshot, Secret, Store, Tag, new_id};
use crate::webhook::notify_change;

const HIDDEN: &str = "<hidden-by-infisical>";

/// Which route generation a request came through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gen {
    V3,
    V4,
}

/// A resolved folder address.
struct Place {
    project_id: String,
    env: String,
    path: String,
}

fn vstatus(app: &App, _generation: Gen) -> StatusCode {
    validation_status(app)
}

/// What a secret route does, for the `error` name of its folder-not-found answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Create,
    Update,
    Delete,
    CreateMany,
    UpdateMany,
    DeleteMany,
}

impl Op {
    /// The `name` the secret service gives its folder-not-found error.
    fn error_name(self) -> &'static str {
        match self {
            Op::Get => "GetSecretByName",
            Op::Create => "CreateSecret",
            Op::Update => "UpdateSecret",
            Op::Delete => "DeleteSecret",
            Op::CreateMany => "CreateManySecret",
            Op::UpdateMany => "UpdateManySecret",
            Op::DeleteMany => "DeleteManySecret",
        }
    }

    /// The permission action it needs.
    fn action(self) -> &'static str {
        match self {
            Op::Get => "read",
            Op::Create | Op::CreateMany => "create",
            Op::Update | Op::UpdateMany => "edit",
            Op::Delete | Op::DeleteMany => "delete",
        }
    }
}

/// Resolves the project from the generation's selector fields.
fn project_id(
    store: &Store,
    generation: Gen,
    id: Option<&str>,
    slug: Option<&str>,
) -> Result<String, ApiError> {
    let id = id.filter(|s| !s.is_empty());
    let slug = slug.filter(|s| !s.is_empty());
    match (generation, id, slug) {
        (_, Some(id), _) => Ok(id.to_owned()),
        (Gen::V3, None, Some(slug)) => store
            .project_by_slug(slug)
            .map(|p| p.id.clone())
            .ok_or_else(|| ApiError::not_found(format!("Project with slug '{slug}' not found"))),
        (Gen::V3, None, None) => {
            Err(ApiError::bad_request("You must provide workspaceSlug or workspaceId"))
        }
        (Gen::V4, None, _) => Err(ApiError::bad_request("Missing project id or environment")),
    }
}

fn place(
    app: &App,
    store: &Store,
    generation: Gen,
    project_id: String,
    env: Option<&str>,
    path: Option<&str>,
) -> Result<Place, ApiError> {
    let env = env.filter(|e| !e.is_empty()).ok_or_else(|| {
        if generation == Gen::V4 {
            ApiError::bad_request("Missing project id or environment")
        } else {
            ApiError::validation(
                vstatus(app, generation),
                vec![issue("invalid_type", &["environment"], "Required")],
            )
        }
    })?;
    let path = secret_path(path).ok_or_else(|| {
        ApiError::validation(
            vstatus(app, generation),
            vec![issue("custom", &["secretPath"], "Invalid secret path")],
        )
    })?;
    if store.project(&project_id).is_none() {
        return Err(ApiError::not_found(format!(
            "Project with ID '{project_id}' not found during bot lookup. Are you sure you are using the correct project ID?"
        )));
    }
    // An unknown environment is not an error of its own: no folder lives there, so each
    // operation answers as it does for a missing folder (a list with empty lists).
    Ok(Place { project_id, env: env.to_owned(), path })
}

/// A `secretPath` as the server keeps it: without a leading slash (`app`) it names no folder
/// at all (a list answers empty lists), so it is kept as sent instead of being made absolute.
fn secret_path(raw: Option<&str>) -> Option<String> {
    let raw = raw.unwrap_or("/").trim();
    let normalized = normalize_path(raw)?;
    if raw.is_empty() || raw.starts_with('/') {
        Some(normalized)
    } else {
        Some(normalized.trim_start_matches('/').to_owned())
    }
}

/// A service token with exactly one scope on a literal path replaces the request's project,
/// environment and path with the scope's (spec 1.6).
fn scope_override(caller: &Caller, place: &mut Place) {
    if let Caller::ServiceToken { project_id, scopes, .. } = caller
        && let [scope] = scopes.as_slice()
        && !is_glob(&scope.secret_path)
    {
        place.project_id = project_id.clone();
        place.env = scope.environment.clone();
        place.path = normalize_path(&scope.secret_path).unwrap_or_else(|| "/".into());
    }
}

fn authorize(caller: &Caller, place: &Place, action: &str) -> Result<(), ApiError> {
    let allowed = match caller {
        Caller::Identity { projects, .. } | Caller::User { projects, .. } => {
            projects.contains(&place.project_id)
        }
        Caller::ServiceToken { project_id, scopes, .. } => {
            *project_id == place.project_id
                && scopes.iter().any(|s| {
                    s.environment == place.env && path_matches(&s.secret_path, &place.path)
                })
        }
    };
    if allowed { Ok(()) } else { Err(ApiError::permission_denied(action, "secrets")) }
}

/// A missing folder, named after the operation as the secret service names it.
fn folder_missing(place: &Place, op: Op) -> ApiError {
    let mut e = ApiError::not_found(format!(
        "Folder with path '{}' in environment with slug '{}' not found",
        place.path, place.env
    ));
    e.error = op.error_name().into();
    e
}

/// The approval answer when a change policy covers the folder: nothing is written.
/// The checks every write makes before touching anything, in the server's order: permission, the
/// folder exists, no approval policy covers the path. `Ok(Some(answer))` is the `{approval}`
/// answer to send instead of writing.
fn write_gate(
    store: &Store,
    caller: &Caller,
    place: &Place,
    op: Op,
    now_ms: i64,
) -> Result<Option<Response>, ApiError> {
    authorize(caller, place, op.action())?;
    if store.folder(&place.project_id, &place.env, &place.path).is_none() {
        return Err(folder_missing(place, op));
    }
    Ok(approval(store, place, now_ms))
}

fn approval(store: &Store, place: &Place, now_ms: i64) -> Option<Response> {
    let policy = store.approval_policies.iter().find(|p| {
        p.project_id == place.project_id
            && p.env == place.env
            && path_matches(&p.secret_path, &place.path)
    })?;
    let folder_id = store.folder(&place.project_id, &place.env, &place.path).map(|f| f.id.clone());
    let at = iso_ms(now_ms);
    let id = new_id();
    Some(
        Json(json!({"approval": {
            "id": id,
            "policyId": policy.id,
            "hasMerged": false,
            "status": "open",
            "conflicts": [],
            "slug": format!("{}-approval", &id[..8]),
            "folderId": folder_id,
            "isReplicated": false,
            "committerUserId": null,
            "statusChangedByUserId": null,
            "bypassReason": null,
            "createdAt": at,
            "updatedAt": at,
        }}))
        .into_response(),
    )
}

/// Renders one secret (`secretRawSchema` plus the list/get extras). The 2024 server's schema
/// had `metadata` and no `actor`, rotation or `secretValueHidden` keys; both send
/// `skipMultilineEncoding: false` for a secret created without it.
fn secret_json(
    version: ApiVersion,
    s: &Secret,
    value: Option<&str>,
    path: bool,
    dates: bool,
) -> Value {
    if version == ApiVersion::V2024 {
        return secret_json_2024(s, value, path, dates);
    }
    let mut m = secret_json_head(s, value);
    if dates {
        m.insert("createdAt".into(), json!(iso_ms(s.created_at_ms)));
        m.insert("updatedAt".into(), json!(iso_ms(s.updated_at_ms)));
    }
    m.insert(
        "actor".into(),
        s.actor
            .as_ref()
            .map_or(Value::Null, |a| json!({"actorId": a.id, "actorType": a.kind, "name": a.name})),
    );
    m.insert("isRotatedSecret".into(), json!(false));
    m.insert("rotationId".into(), Value::Null);
    if path {
        m.insert("secretPath".into(), json!(s.path));
    }
    m.insert("secretValueHidden".into(), json!(value.is_none()));
    m.insert("tags".into(), Value::Array(tags_json(s)));
    m.insert("secretMetadata".into(), json!(s.metadata));
    Value::Object(m)
}

/// The keys both generations send first, in the server's order.
fn secret_json_head(s: &Secret, value: Option<&str>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("_id".into(), json!(s.id));
    m.insert("workspace".into(), json!(s.project_id));
    m.insert("environment".into(), json!(s.env));
    m.insert("version".into(), json!(s.version));
    m.insert("type".into(), json!(s.kind));
    m.insert("secretKey".into(), json!(s.key));
    m.insert("secretValue".into(), json!(value.unwrap_or(HIDDEN)));
    m.insert("secretComment".into(), json!(s.comment));
    m.insert("secretReminderNote".into(), json!(s.reminder_note));
    m.insert("secretReminderRepeatDays".into(), json!(s.reminder_repeat_days));
    m.insert("skipMultilineEncoding".into(), json!(s.skip_multiline.unwrap_or(false)));
    m
}

fn tags_json(s: &Secret) -> Vec<Value> {
    s.tags
        .iter()
        .map(|t| json!({"id": t.id, "slug": t.slug, "color": t.color, "name": t.name}))
        .collect()
}

/// The 2024-10 `secretRawSchema` in its key order, plus `secretPath`, `tags` and
/// `secretMetadata`; the legacy `metadata` column is null.
fn secret_json_2024(s: &Secret, value: Option<&str>, path: bool, dates: bool) -> Value {
    let mut m = secret_json_head(s, value);
    m.insert("metadata".into(), Value::Null);
    if dates {
        m.insert("createdAt".into(), json!(iso_ms(s.created_at_ms)));
        m.insert("updatedAt".into(), json!(iso_ms(s.updated_at_ms)));
    }
    if path {
        m.insert("secretPath".into(), json!(s.path));
    }
    m.insert("tags".into(), Value::Array(tags_json(s)));
    m.insert("secretMetadata".into(), json!(s.metadata));
    Value::Object(m)
}

/// The value a reader sees: hidden, raw, or expanded (then multiline-formatted).
/// One `imports` entry of a list before rendering: its fields and the imported secrets.
type ImportEntry = (serde_json::Map<String, Value>, Vec<Secret>);

/// `snapshot` is the project's values when references are to be expanded (taken under the
/// store lock; the expansion itself runs after it is released).
fn shown_value(snapshot: Option<&ProjectSnapshot>, s: &Secret, view: bool) -> Option<String> {
    if !view {
        return None;
    }
    let Some(snapshot) = snapshot else {
        return Some(s.value.clone());
    };
    let origin = Target { env: s.env.clone(), path: s.path.clone(), key: s.key.clone() };
    let expanded = expand(&s.value, &origin, snapshot);
    Some(if s.skip_multiline == Some(true) { format_multiline(&expanded) } else { expanded })
}

/// `GET /api/v4/secrets` and `GET /api/v3/secrets/raw`.
pub(crate) async fn list(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let status = vstatus(&app, generation);
    let view = q.strict_bool("viewSecretValue", true, status)? && caller.reads_values();
    let expand_refs = q.strict_bool("expandSecretReferences", false, status)?;
    let recursive = q.strict_bool("recursive", false, status)?;
    let snake = q.strict_bool("include_imports", false, status)?;
    let include_imports =
        if generation == Gen::V4 { q.strict_bool("includeImports", snake, status)? } else { snake };
    if generation == Gen::V4 {
        q.strict_bool("includePersonalOverrides", false, status)?;
    }
    let store = app.store.locked();
    if app.api_version == ApiVersion::V2024
        && (q.get("environment").is_none_or(str::is_empty)
            || (q.get("workspaceId").is_none_or(str::is_empty)
                && q.get("workspaceSlug").is_none_or(str::is_empty)))
    {
        return Err(ApiError::bad_request("Missing workspace id or environment"));
    }
    let pid = match generation {
        Gen::V4 => project_id(&store, generation, q.get("projectId"), None)?,
        Gen::V3 => project_id(&store, generation, q.get("workspaceId"), q.get("workspaceSlug"))?,
    };
    let mut place =
        place(&app, &store, generation, pid, q.get("environment"), q.get("secretPath"))?;
    scope_override(&caller, &mut place);
    authorize(&caller, &place, "read")?;
    if store.folder(&place.project_id, &place.env, &place.path).is_none() {
        return Ok(Json(json!({"secrets": [], "imports": []})).into_response());
    }
    let folders = if recursive {
        store.subtree(&place.project_id, &place.env, &place.path)
    } else {
        vec![place.path.clone()]
    };
    let tags = tag_filter(&q);
    // Copy out what the answer needs; expansion and rendering run after the lock is released.
    let mut secrets: Vec<Secret> = Vec::new();
    for folder in &folders {
        for s in store.secrets_in(&place.project_id, &place.env, folder) {
            if tags.as_ref().is_none_or(|want| s.tags.iter().any(|t| want.contains(&t.slug))) {
                secrets.push(s.clone());
            }
        }
    }
    // A recursive list carries the imports of every folder it lists.
    let imports: Option<Vec<ImportEntry>> = include_imports.then(|| {
        folders
            .iter()
            .flat_map(|folder| store.imports_of(&place.project_id, &place.env, folder))
            .map(|i| {
                let items: Vec<Secret> = store
                    .secrets_in(&place.project_id, &i.import_env, &i.import_path)
                    .into_iter()
                    .cloned()
                    .collect();
                let mut entry = serde_json::Map::new();
                entry.insert("secretPath".into(), json!(i.import_path));
                entry.insert("environment".into(), json!(i.import_env));
                if !i.omit_folder_id
                    && let Some(f) = store.folder(&place.project_id, &i.import_env, &i.import_path)
                {
                    entry.insert("folderId".into(), json!(f.id));
                }
                (entry, items)
            })
            .collect()
    });
    let snapshot = (view && expand_refs).then(|| {
        let imported = imports.iter().flatten().flat_map(|(_, items)| items.iter());
        let shown = secrets.iter().chain(imported).map(|s| s.value.as_str());
        store.snapshot_for(&place.project_id, shown)
    });
    drop(store);
    let shown = |s: &Secret| shown_value(snapshot.as_ref(), s, view);
    let rendered: Vec<Value> = secrets
        .iter()
        .map(|s| secret_json(app.api_version, s, shown(s).as_deref(), true, true))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert("secrets".into(), Value::Array(rendered));
    if let Some(imports) = imports {
        let imports: Vec<Value> = imports
            .into_iter()
            .map(|(mut entry, items)| {
                let items: Vec<Value> = items
                    .iter()
                    .map(|s| secret_json(app.api_version, s, shown(s).as_deref(), false, false))
                    .collect();
                entry.insert("secrets".into(), Value::Array(items));
                Value::Object(entry)
            })
            .collect();
        body.insert("imports".into(), Value::Array(imports));
    }
    Ok(Json(Value::Object(body)).into_response())
}

/// `GET /api/v1/secret-imports?workspaceId&environment&path`: a folder's imports in order.
pub(crate) async fn list_imports(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let status = validation_status(&app);
    let required = |key: &str| {
        q.get(key).filter(|v| !v.is_empty()).map(str::to_owned).ok_or_else(|| {
            ApiError::validation(
                status,
                vec![super::schema::invalid_type("string", None, &[json!(key)])],
            )
        })
    };
    let (pid, env) = (required("workspaceId")?, required("environment")?);
    let store = app.store.locked();
    let place = place(&app, &store, Gen::V3, pid, Some(&env), q.get("path"))?;
    authorize(&caller, &place, "read")?;
    let folder = store
        .folder(&place.project_id, &place.env, &place.path)
        .ok_or_else(|| folder_missing(&place, Op::Get))?;
    let created = store.project(&place.project_id).map_or(0, |p| p.created_at_ms);
    let imports: Vec<Value> = store
        .imports_of(&place.project_id, &place.env, &place.path)
        .into_iter()
        .enumerate()
        .map(|(i, import)| {
            let env = store.environment(&place.project_id, &import.import_env);
            json!({
                "id": import.id,
                "version": 1,
                "importPath": import.import_path,
                "position": i + 1,
                "createdAt": iso_ms(created),
                "updatedAt": iso_ms(created),
                "folderId": folder.id,
                "isReplication": false,
                "isReplicationSuccess": null,
                "replicationStatus": null,
                "lastReplicated": null,
                "isReserved": false,
                "importEnv": {
                    "name": env.map(|e| e.name.clone()),
                    "slug": import.import_env,
                    "id": env.map(|e| e.id.clone()),
                },
            })
        })
        .collect();
    Ok(Json(json!({"message": "Successfully fetched secret imports", "secretImports": imports}))
        .into_response())
}

fn not_found_quoted(key: &str) -> ApiError {
    ApiError::not_found(format!("Secret with name '{key}' not found"))
}

fn not_found_plain(key: &str) -> ApiError {
    ApiError::not_found(format!("Secret with name {key} not found"))
}

/// `GET /api/v4/secrets/:name` and `GET /api/v3/secrets/raw/:name`.
pub(crate) async fn get_one(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let status = vstatus(&app, generation);
    let view = q.strict_bool("viewSecretValue", true, status)? && caller.reads_values();
    let expand_refs = q.strict_bool("expandSecretReferences", false, status)?;
    let include_imports = q.strict_bool("include_imports", false, status)?;
    let kind = secret_kind(&app, q.get("type"))?;
    let version = match q.get("version") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::validation(
                status,
                vec![issue("invalid_type", &["version"], "Expected number, received nan")],
            )
        })?),
    };
    let key = name.trim().to_owned();
    let store = app.store.locked();
    let pid = match generation {
        Gen::V4 => {
            q.get("projectId").filter(|s| !s.is_empty()).map(str::to_owned).ok_or_else(|| {
                ApiError::validation(
                    status,
                    vec![issue("invalid_type", &["projectId"], "Required")],
                )
            })?
        }
        Gen::V3 => project_id(&store, generation, q.get("workspaceId"), q.get("workspaceSlug"))?,
    };
    if q.get("environment").is_none_or(str::is_empty) && generation == Gen::V4 {
        return Err(ApiError::bad_request("Missing environment"));
    }
    let mut place =
        place(&app, &store, generation, pid, q.get("environment"), q.get("secretPath"))?;
    scope_override(&caller, &mut place);
    authorize(&caller, &place, "read")?;
    if store.folder(&place.project_id, &place.env, &place.path).is_none() {
        return Err(folder_missing(&place, Op::Get));
    }
    // Only users own personal secrets; a service token's `type` is forced to shared.
    if kind == "personal" && !caller.is_service_token() {
        return Err(not_found_quoted(&key));
    }
    let mut found = store.find_secret(&place.project_id, &place.env, &place.path, &key);
    if found.is_none() && include_imports {
        found = store.imports_of(&place.project_id, &place.env, &place.path).into_iter().find_map(
            |i| store.find_secret(&place.project_id, &i.import_env, &i.import_path, &key),
        );
    }
    let secret = found.ok_or_else(|| not_found_quoted(&key))?;
    let secret = match version {
        None => secret.clone(),
        Some(v) => {
            let old = secret.history.iter().find(|h| h.version == v).ok_or_else(|| {
                ApiError::not_found(format!("Secret version {v} not found for secret '{key}'"))
            })?;
            Secret {
                version: old.version,
                key: old.key.clone(),
                value: old.value.clone(),
                comment: old.comment.clone(),
                updated_at_ms: old.created_at_ms,
                ..secret.clone()
            }
        }
    };
    let snapshot = (view && expand_refs)
        .then(|| store.snapshot_for(&place.project_id, std::iter::once(secret.value.as_str())));
    drop(store);
    let value = shown_value(snapshot.as_ref(), &secret, view);
    Ok(Json(json!({"secret": secret_json(app.api_version, &secret, value.as_deref(), true, true)}))
        .into_response())
}

/// `GET /api/v4/secrets/id/:id` (no service tokens) and the v3 equivalent.
pub(crate) async fn get_by_id(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let prefix =
        if generation == Gen::V4 { "/api/v4/secrets/id/" } else { "/api/v3/secrets/raw/id/" };
    if caller.is_service_token() {
        return Err(super::auth::wrong_mode(&format!("{prefix}{id}")));
    }
    let store = app.store.locked();
    let secret = store
        .secrets
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found(format!("Secret with ID '{id}' not found")))?;
    let place = Place {
        project_id: secret.project_id.clone(),
        env: secret.env.clone(),
        path: secret.path.clone(),
    };
    authorize(&caller, &place, "read")?;
    Ok(Json(
        json!({"secret": secret_json(app.api_version, secret, Some(&secret.value), true, true)}),
    )
    .into_response())
}

/// The project, environment and path fields of a write body in either generation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    project_id: Option<String>,
    workspace_id: Option<String>,
    project_slug: Option<String>,
    environment: Option<String>,
    secret_path: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn write_place(
    app: &App,
    store: &Store,
    generation: Gen,
    loc: &Location,
) -> Result<Place, ApiError> {
    let status = vstatus(app, generation);
    let pid = match generation {
        Gen::V4 => loc.project_id.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::validation(status, vec![issue("invalid_type", &["projectId"], "Required")])
        })?,
        Gen::V3 => {
            project_id(store, generation, loc.workspace_id.as_deref(), loc.project_slug.as_deref())?
        }
    };
    if loc.environment.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::validation(
            status,
            vec![issue("invalid_type", &["environment"], "Required")],
        ));
    }
    place(app, store, generation, pid, loc.environment.as_deref(), loc.secret_path.as_deref())
}

/// The `type` of a request: `shared` (default) or `personal`, else zod's enum failure.
fn secret_kind(app: &App, kind: Option<&str>) -> Result<&'static str, ApiError> {
    match kind {
        None | Some("shared") => Ok("shared"),
        Some("personal") => Ok("personal"),
        Some(other) => Err(ApiError::validation(
            validation_status(app),
            vec![json!({
                "received": other,
                "code": "invalid_enum_value",
                "options": ["shared", "personal"],
                "path": ["type"],
                "message": format!("Invalid enum value. Expected 'shared' | 'personal', received '{other}'"),
            })],
        )),
    }
}

/// Machine identities and service tokens own no personal secrets; checked once the folder is
/// known to exist, as the secret service does. `verb` is `create`, `update` or `delete`.
fn refuse_personal(kind: &str, verb: &str) -> Result<(), ApiError> {
    if kind == "personal" {
        return Err(ApiError::bad_request(format!("Must be user to {verb} personal secret")));
    }
    Ok(())
}

/// The location fields of a write body, then the route's own.
fn write_fields(generation: Gen, own: &[Field]) -> Vec<Field> {
    let mut fields = match generation {
        Gen::V3 => vec![opt("workspaceId", Ty::Str), opt("projectSlug", Ty::Str)],
        Gen::V4 => vec![req("projectId", Ty::Str)],
    };
    fields.extend([req("environment", Ty::Str), opt("secretPath", Ty::Str), opt("type", Ty::Str)]);
    fields.extend_from_slice(own);
    fields
}

const WRITE_EXTRAS: &[Field] = &[
    opt("secretComment", Ty::Str),
    opt("tagIds", Ty::Arr),
    opt("skipMultilineEncoding", Ty::Bool),
    opt("secretMetadata", Ty::Arr),
    opt("secretReminderNote", Ty::Str),
    opt("secretReminderRepeatDays", Ty::Num),
];

fn checked_key(app: &App, generation: Gen, key: &str, field: &str) -> Result<String, ApiError> {
    let legacy = generation == Gen::V3 && app.api_version == ApiVersion::V2024;
    validate_key(key, legacy).map_err(|message| {
        ApiError::validation(vstatus(app, generation), vec![issue("custom", &[field], message)])
    })
}

fn already_exists(app: &App) -> ApiError {
    ApiError::bad_request(if app.api_version == ApiVersion::V2024 {
        "Secret already exist"
    } else {
        "Secret already exists"
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(flatten)]
    loc: Location,
    secret_value: String,
    #[serde(default)]
    tag_ids: Vec<String>,
    #[serde(default)]
    secret_comment: String,
    skip_multiline_encoding: Option<bool>,
    #[serde(default)]
    secret_metadata: Vec<Value>,
    secret_reminder_note: Option<String>,
    secret_reminder_repeat_days: Option<u64>,
}

/// Resolves `tagIds` of a write; unknown ids are a 404 naming the slugs that were found.
fn resolve_tags(store: &Store, project_id: &str, ids: &[String]) -> Result<Vec<Tag>, ApiError> {
    let found: Vec<Tag> = store
        .tags
        .iter()
        .filter(|t| t.project_id == project_id && ids.contains(&t.id))
        .cloned()
        .collect();
    if found.len() != ids.iter().collect::<std::collections::HashSet<_>>().len() {
        let slugs: Vec<&str> = found.iter().map(|t| t.slug.as_str()).collect();
        return Err(ApiError::not_found(format!("Tag not found. Found {}", slugs.join(","))));
    }
    Ok(found)
}

/// `tagSlugs=a,b`: keeps secrets carrying any of the tags.
fn tag_filter(q: &Query) -> Option<Vec<String>> {
    let slugs: Vec<String> = q
        .get("tagSlugs")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if slugs.is_empty() { None } else { Some(slugs) }
}

fn changed(app: &Arc<App>, store: &mut Store, place: &Place, actor: &Actor) {
    store.touch_folder(&place.project_id, &place.env, &place.path, app.clock.now_ms());
    notify_change(app, &place.project_id, &place.env, &place.path, Some(actor.clone()));
}

pub(crate) async fn create(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut fields = write_fields(generation, WRITE_EXTRAS);
    fields.push(req("secretValue", Ty::Str));
    let input: CreateBody = parse_body(&app, &body, &fields)?;
    let kind = secret_kind(&app, input.loc.kind.as_deref())?;
    let key = checked_key(&app, generation, &name, "secretName")?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let place = write_place(&app, &store, generation, &input.loc)?;
    if let Some(answer) = write_gate(&store, &caller, &place, Op::Create, now)? {
        return Ok(answer);
    }
    refuse_personal(kind, "create")?;
    if store.find_secret(&place.project_id, &place.env, &place.path, &key).is_some() {
        return Err(already_exists(&app));
    }
    let tags = resolve_tags(&store, &place.project_id, &input.tag_ids)?;
    let actor = caller.actor();
    let mut secret = Secret::new(
        &place.project_id,
        &place.env,
        &place.path,
        &key,
        trim_value(&input.secret_value),
        input.secret_comment.trim().to_owned(),
        input.skip_multiline_encoding,
        Some(actor.clone()),
        now,
    );
    secret.metadata = input.secret_metadata;
    secret.tags = tags;
    secret.reminder_note = input.secret_reminder_note;
    secret.reminder_repeat_days = input.secret_reminder_repeat_days;
    let rendered = secret_json(app.api_version, &secret, Some(&secret.value), true, true);
    store.secrets.push(secret);
    changed(&app, &mut store, &place, &actor);
    Ok(Json(json!({"secret": rendered})).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    #[serde(flatten)]
    loc: Location,
    secret_value: Option<String>,
    new_secret_name: Option<String>,
    secret_comment: Option<String>,
    skip_multiline_encoding: Option<bool>,
    secret_metadata: Option<Vec<Value>>,
    secret_reminder_note: Option<String>,
    secret_reminder_repeat_days: Option<u64>,
    tag_ids: Option<Vec<String>>,
}

struct Change {
    value: Option<String>,
    new_key: Option<String>,
    comment: Option<String>,
    skip_multiline: Option<bool>,
    metadata: Option<Vec<Value>>,
    reminder_note: Option<String>,
    reminder_days: Option<u64>,
    /// Replaces the whole set when given.
    tags: Option<Vec<Tag>>,
}

/// Applies an update to an existing secret and records a new version.
fn apply(secret: &mut Secret, change: Change, actor: &Actor, now: i64) {
    if let Some(v) = change.value {
        secret.value = trim_value(&v);
    }
    if let Some(k) = change.new_key {
        secret.key = k;
    }
    if let Some(c) = change.comment {
        secret.comment = c;
    }
    if change.skip_multiline.is_some() {
        secret.skip_multiline = change.skip_multiline;
    }
    if let Some(m) = change.metadata {
        secret.metadata = m;
    }
    if change.reminder_note.is_some() {
        secret.reminder_note = change.reminder_note;
    }
    if change.reminder_days.is_some() {
        secret.reminder_repeat_days = change.reminder_days;
    }
    if let Some(tags) = change.tags {
        secret.tags = tags;
    }
    secret.actor = Some(actor.clone());
    secret.bump(now);
}

pub(crate) async fn update(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut fields = write_fields(generation, WRITE_EXTRAS);
    fields.push(opt("newSecretName", Ty::Str));
    // The 2024 server required a value on every update (no rename- or comment-only PATCH).
    fields.push(if app.api_version == ApiVersion::V2024 {
        req("secretValue", Ty::Str)
    } else {
        opt("secretValue", Ty::Str)
    });
    let input: UpdateBody = parse_body(&app, &body, &fields)?;
    let kind = secret_kind(&app, input.loc.kind.as_deref())?;
    let key = name.trim().to_owned();
    let new_key = match &input.new_secret_name {
        Some(n) => Some(checked_key(&app, generation, n, "newSecretName")?),
        None => None,
    };
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let place = write_place(&app, &store, generation, &input.loc)?;
    if let Some(answer) = write_gate(&store, &caller, &place, Op::Update, now)? {
        return Ok(answer);
    }
    refuse_personal(kind, "update")?;
    if store.find_secret(&place.project_id, &place.env, &place.path, &key).is_none() {
        return Err(not_found_plain(&key));
    }
    if let Some(n) = &new_key
        && *n != key
        && store.find_secret(&place.project_id, &place.env, &place.path, n).is_some()
    {
        return Err(ApiError::bad_request("Secret with the new name already exists"));
    }
    let tags = match &input.tag_ids {
        Some(ids) => Some(resolve_tags(&store, &place.project_id, ids)?),
        None => None,
    };
    let actor = caller.actor();
    let secret = store
        .find_secret_mut(&place.project_id, &place.env, &place.path, &key)
        .expect("checked above");
    let change = Change {
        value: input.secret_value,
        new_key,
        comment: input.secret_comment.map(|c| c.trim().to_owned()),
        skip_multiline: input.skip_multiline_encoding,
        metadata: input.secret_metadata,
        reminder_note: input.secret_reminder_note,
        reminder_days: input.secret_reminder_repeat_days,
        tags,
    };
    let renamed = change.new_key.clone().filter(|n| *n != key);
    apply(secret, change, &actor, now);
    let rendered = secret_json(app.api_version, secret, Some(&secret.value), true, true);
    if let Some(new_key) = renamed {
        let target = Target { env: place.env.clone(), path: place.path.clone(), key: key.clone() };
        relink(&app, &mut store, &place.project_id, &target, &new_key, &actor);
    }
    changed(&app, &mut store, &place, &actor);
    Ok(Json(json!({"secret": rendered})).into_response())
}

/// Rewrites references to a renamed secret across the project; each rewritten secret gets a
/// new version and its folder's webhooks fire.
fn relink(
    app: &Arc<App>,
    store: &mut Store,
    project_id: &str,
    target: &Target,
    new_key: &str,
    actor: &Actor,
) {
    let now = app.clock.now_ms();
    let mut folders = Vec::new();
    for s in store.secrets.iter_mut().filter(|s| s.project_id == project_id) {
        let rewritten = rename_references(&s.value, &s.env, &s.path, target, new_key);
        if rewritten != s.value {
            s.value = rewritten;
            s.actor = Some(actor.clone());
            s.bump(now);
            folders.push(Place {
                project_id: project_id.to_owned(),
                env: s.env.clone(),
                path: s.path.clone(),
            });
        }
    }
    for place in folders {
        changed(app, store, &place, actor);
    }
}

pub(crate) async fn delete(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: Location = parse_body(&app, &body, &write_fields(generation, &[]))?;
    let kind = secret_kind(&app, input.kind.as_deref())?;
    let key = name.trim().to_owned();
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let place = write_place(&app, &store, generation, &input)?;
    if let Some(answer) = write_gate(&store, &caller, &place, Op::Delete, now)? {
        return Ok(answer);
    }
    refuse_personal(kind, "delete")?;
    let secret = store
        .find_secret(&place.project_id, &place.env, &place.path, &key)
        .cloned()
        .ok_or_else(|| not_found_plain(&key))?;
    store.secrets.retain(|s| s.id != secret.id);
    changed(&app, &mut store, &place, &caller.actor());
    Ok(Json(
        json!({"secret": secret_json(app.api_version, &secret, Some(&secret.value), true, true)}),
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchCreateItem {
    secret_key: String,
    secret_value: String,
    #[serde(default)]
    secret_comment: String,
    skip_multiline_encoding: Option<bool>,
    #[serde(default)]
    secret_metadata: Vec<Value>,
    #[serde(default)]
    tag_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchCreateBody {
    #[serde(flatten)]
    loc: Location,
    secrets: Vec<BatchCreateItem>,
}

fn at_least_one(app: &App, generation: Gen, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::validation(
            vstatus(app, generation),
            vec![issue("too_small", &["secrets"], "Array must contain at least 1 element(s)")],
        ));
    }
    Ok(())
}

pub(crate) async fn batch_create(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    const ITEM: &[Field] = &[
        req("secretKey", Ty::Str),
        req("secretValue", Ty::Str),
        opt("secretComment", Ty::Str),
        opt("skipMultilineEncoding", Ty::Bool),
        opt("secretMetadata", Ty::Arr),
        opt("tagIds", Ty::Arr),
    ];
    let fields = write_fields(generation, &[req("secrets", Ty::Items(ITEM))]);
    let input: BatchCreateBody = parse_body(&app, &body, &fields)?;
    at_least_one(&app, generation, input.secrets.len())?;
    let keys = input
        .secrets
        .iter()
        .map(|s| checked_key(&app, generation, &s.secret_key, "secretKey"))
        .collect::<Result<Vec<_>, _>>()?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let place = write_place(&app, &store, generation, &input.loc)?;
    if let Some(answer) = write_gate(&store, &caller, &place, Op::CreateMany, now)? {
        return Ok(answer);
    }
    let existing: Vec<&str> = keys
        .iter()
        .filter(|k| store.find_secret(&place.project_id, &place.env, &place.path, k).is_some())
        .map(String::as_str)
        .collect();
    if !existing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{}: {}",
            already_exists(&app).message.as_str().unwrap_or_default(),
            existing.join(",")
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if keys.iter().any(|k| !seen.insert(k)) {
        return Err(already_exists(&app));
    }
    let tag_sets = input
        .secrets
        .iter()
        .map(|item| resolve_tags(&store, &place.project_id, &item.tag_ids))
        .collect::<Result<Vec<_>, _>>()?;
    let actor = caller.actor();
    let mut rendered = Vec::new();
    for ((item, key), tags) in input.secrets.into_iter().zip(keys).zip(tag_sets) {
        let mut secret = Secret::new(
            &place.project_id,
            &place.env,
            &place.path,
            &key,
            trim_value(&item.secret_value),
            item.secret_comment.trim().to_owned(),
            item.skip_multiline_encoding,
            Some(actor.clone()),
            now,
        );
        secret.metadata = item.secret_metadata;
        secret.tags = tags;
        rendered.push(secret_json(app.api_version, &secret, Some(&secret.value), true, true));
        store.secrets.push(secret);
    }
    changed(&app, &mut store, &place, &actor);
    Ok(Json(json!({"secrets": rendered})).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchUpdateItem {
    secret_key: String,
    secret_value: Option<String>,
    secret_path: Option<String>,
    secret_comment: Option<String>,
    skip_multiline_encoding: Option<bool>,
    new_secret_name: Option<String>,
    secret_metadata: Option<Vec<Value>>,
    secret_reminder_note: Option<String>,
    secret_reminder_repeat_days: Option<u64>,
    tag_ids: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchUpdateBody {
    #[serde(flatten)]
    loc: Location,
    secrets: Vec<BatchUpdateItem>,
    mode: Option<String>,
}

pub(crate) async fn batch_update(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    const ITEM: &[Field] = &[
        req("secretKey", Ty::Str),
        opt("secretValue", Ty::Str),
        opt("secretPath", Ty::Str),
        opt("secretComment", Ty::Str),
        opt("skipMultilineEncoding", Ty::Bool),
        opt("newSecretName", Ty::Str),
        opt("secretMetadata", Ty::Arr),
        opt("secretReminderNote", Ty::Str),
        opt("secretReminderRepeatDays", Ty::Num),
        opt("tagIds", Ty::Arr),
    ];
    let fields = write_fields(generation, &[req("secrets", Ty::Items(ITEM)), opt("mode", Ty::Str)]);
    let input: BatchUpdateBody = parse_body(&app, &body, &fields)?;
    at_least_one(&app, generation, input.secrets.len())?;
    let mode = input.mode.clone().unwrap_or_else(|| "failOnNotFound".into());
    if !matches!(mode.as_str(), "failOnNotFound" | "upsert" | "ignore") {
        return Err(ApiError::validation(
            vstatus(&app, generation),
            vec![issue(
                "invalid_enum_value",
                &["mode"],
                "Invalid enum value. Expected 'failOnNotFound' | 'upsert' | 'ignore'",
            )],
        ));
    }
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let base = write_place(&app, &store, generation, &input.loc)?;
    // Resolve and check every item before writing anything.
    let mut plan = Vec::new();
    for item in input.secrets {
        let key = item.secret_key.trim().to_owned();
        let new_key = match &item.new_secret_name {
            Some(n) => Some(checked_key(&app, generation, n, "newSecretName")?),
            None => None,
        };
        let path = match &item.secret_path {
            Some(p) => normalize_path(p).ok_or_else(|| {
                ApiError::validation(
                    vstatus(&app, generation),
                    vec![issue("custom", &["secretPath"], "Invalid secret path")],
                )
            })?,
            None => base.path.clone(),
        };
        let place = Place { project_id: base.project_id.clone(), env: base.env.clone(), path };
        if let Some(answer) = write_gate(&store, &caller, &place, Op::UpdateMany, now)? {
            return Ok(answer);
        }
        let exists = store.find_secret(&place.project_id, &place.env, &place.path, &key).is_some();
        if !exists {
            match mode.as_str() {
                "failOnNotFound" if app.api_version == ApiVersion::V2024 => {
                    return Err(ApiError::not_found(format!("Secret does not exist: {key}")));
                }
                "failOnNotFound" => return Err(not_found_plain(&key)),
                "ignore" => continue,
                _ => checked_key(&app, generation, &key, "secretKey").map(|_| ())?,
            }
        }
        if let Some(n) = &new_key
            && *n != key
            && store.find_secret(&place.project_id, &place.env, &place.path, n).is_some()
        {
            return Err(ApiError::bad_request("Secret with the new name already exists"));
        }
        let tags = match &item.tag_ids {
            Some(ids) => Some(resolve_tags(&store, &place.project_id, ids)?),
            None => None,
        };
        plan.push((place, key, new_key, exists, item, tags));
    }
    let actor = caller.actor();
    let mut rendered = Vec::new();
    let mut touched: Vec<Place> = Vec::new();
    for (place, key, new_key, exists, item, tags) in plan {
        if exists {
            let secret = store
                .find_secret_mut(&place.project_id, &place.env, &place.path, &key)
                .expect("checked");
            let change = Change {
                value: item.secret_value,
                new_key,
                comment: item.secret_comment.map(|c| c.trim().to_owned()),
                skip_multiline: item.skip_multiline_encoding,
                metadata: item.secret_metadata,
                reminder_note: item.secret_reminder_note,
                reminder_days: item.secret_reminder_repeat_days,
                tags,
            };
            apply(secret, change, &actor, now);
            rendered.push(secret_json(app.api_version, secret, Some(&secret.value), true, true));
        } else {
            let mut secret = Secret::new(
                &place.project_id,
                &place.env,
                &place.path,
                new_key.as_deref().unwrap_or(&key),
                trim_value(item.secret_value.as_deref().unwrap_or("")),
                item.secret_comment.unwrap_or_default().trim().to_owned(),
                item.skip_multiline_encoding,
                Some(actor.clone()),
                now,
            );
            secret.tags = tags.unwrap_or_default();
            rendered.push(secret_json(app.api_version, &secret, Some(&secret.value), true, true));
            store.secrets.push(secret);
        }
        if !touched.iter().any(|t| t.path == place.path) {
            touched.push(place);
        }
    }
    for place in &touched {
        changed(&app, &mut store, place, &actor);
    }
    Ok(Json(json!({"secrets": rendered})).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchDeleteItem {
    secret_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchDeleteBody {
    #[serde(flatten)]
    loc: Location,
    secrets: Vec<BatchDeleteItem>,
}

pub(crate) async fn batch_delete(
    generation: Gen,
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    const ITEM: &[Field] = &[req("secretKey", Ty::Str), opt("type", Ty::Str)];
    let fields = write_fields(generation, &[req("secrets", Ty::Items(ITEM))]);
    let input: BatchDeleteBody = parse_body(&app, &body, &fields)?;
    at_least_one(&app, generation, input.secrets.len())?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let place = write_place(&app, &store, generation, &input.loc)?;
    if let Some(answer) = write_gate(&store, &caller, &place, Op::DeleteMany, now)? {
        return Ok(answer);
    }
    let mut victims = Vec::new();
    for item in &input.secrets {
        let key = item.secret_key.trim();
        let secret = store
            .find_secret(&place.project_id, &place.env, &place.path, key)
            .cloned()
            .ok_or_else(|| not_found_plain(key))?;
        victims.push(secret);
    }
    store.secrets.retain(|s| !victims.iter().any(|v| v.id == s.id));
    changed(&app, &mut store, &place, &caller.actor());
    let rendered: Vec<Value> = victims
        .iter()
        .map(|s| secret_json(app.api_version, s, Some(&s.value), true, true))
        .collect();
    Ok(Json(json!({"secrets": rendered})).into_response())
}
