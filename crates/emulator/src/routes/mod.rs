//! The Infisical routes and the admin API, plus the request-parsing helpers they share.

mod admin;
mod auth;
mod folders;
mod projects;
pub(crate) mod schema;
mod secrets;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::ApiVersion;
use crate::error::{ApiError, issue};
use crate::server::{App, OriginalUri};

pub(crate) use auth::Caller;
pub(crate) use secrets::Gen;

pub(crate) fn router(app: Arc<App>) -> Router {
    let v2024 = app.api_version == ApiVersion::V2024;
    let mut r = Router::new()
        .route("/api/status", get(status))
        .route("/api/v1/auth/universal-auth/login", post(auth::universal_login))
        .route(
            "/api/v1/auth/kubernetes-auth/login",
            post(|s, b| auth::jwt_login(s, "kubernetes-auth", b)),
        )
        .route("/api/v1/auth/oidc-auth/login", post(|s, b| auth::jwt_login(s, "oidc-auth", b)))
        .route("/api/v1/auth/jwt-auth/login", post(|s, b| auth::jwt_login(s, "jwt-auth", b)))
        .route("/api/v1/auth/aws-auth/login", post(auth::aws_login))
        .route("/api/v1/auth/azure-auth/login", post(|s, b| auth::jwt_login(s, "azure-auth", b)))
        .route("/api/v1/auth/gcp-auth/login", post(|s, b| auth::jwt_login(s, "gcp-auth", b)))
        .route("/api/v1/auth/token/renew", post(auth::renew))
        .route("/api/v1/auth/token/revoke", post(auth::revoke))
        .route("/api/v1/auth/token-auth/identities/{identity_id}/tokens", post(auth::token_auth))
        .route("/api/v2/service-token", get(auth::service_token_details))
        .route("/api/v3/secrets/raw", get(|s, c, q| secrets::list(Gen::V3, s, c, q)))
        .route(
            "/api/v3/secrets/raw/{name}",
            get(|s, c, p, q| secrets::get_one(Gen::V3, s, c, p, q))
                .post(|s, c, p, b| secrets::create(Gen::V3, s, c, p, b))
                .patch(|s, c, p, b| secrets::update(Gen::V3, s, c, p, b))
                .delete(|s, c, p, b| secrets::delete(Gen::V3, s, c, p, b)),
        )
        .route(
            "/api/v3/secrets/batch/raw",
            post(|s, c, b| secrets::batch_create(Gen::V3, s, c, b))
                .patch(|s, c, b| secrets::batch_update(Gen::V3, s, c, b))
                .delete(|s, c, b| secrets::batch_delete(Gen::V3, s, c, b)),
        )
        .route("/api/v1/secret-imports", get(secrets::list_imports))
        .route("/api/v1/folders", get(folders::v1_list).post(folders::v1_create))
        .route("/api/v1/folders/{name}", delete(folders::delete_folder))
        .route("/api/v2/folders", get(folders::v2_list).post(folders::v2_create))
        .route(
            "/api/v2/folders/{id}",
            get(folders::v2_get).patch(folders::v2_update).delete(folders::delete_folder),
        )
        .route("/api/v1/projects", get(projects::list_projects))
        .route("/api/v1/workspace", get(projects::list_workspaces))
        .route("/api/v1/workspace/{id}", get(projects::get_workspace))
        .route("/api/v1/projects/{id}", get(projects::get_project))
        .route("/api/v1/projects/slug/{slug}", get(projects::get_project_by_slug))
        .route("/api/v1/projects/{id}/environments", post(projects::create_environment))
        .route("/api/v1/projects/{id}/tags", get(projects::list_tags).post(projects::create_tag))
        .route(
            "/api/v1/projects/{id}/tags/slug/{slug}",
            get(|s, c, p| projects::get_tag(s, c, p, true)),
        )
        .route(
            "/api/v1/projects/{id}/tags/{tag_id}",
            get(|s, c, p| projects::get_tag(s, c, p, false)),
        )
        .route("/api/v1/projects/{id}/environments/{env}", get(projects::get_environment))
        .route("/api/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/api/v1/webhooks/{id}", patch(webhooks::update).delete(webhooks::remove))
        .route("/api/v1/webhooks/{id}/test", post(webhooks::test));
    if !v2024 {
        // Not served by the 2024-10 server (its route-not-found 404).
        r = r
            .route(
                "/api/v3/secrets/raw/id/{id}",
                get(|s, c, p| secrets::get_by_id(Gen::V3, s, c, p)),
            )
            .route("/api/health", get(health))
            .route("/api/v4/secrets", get(|s, c, q| secrets::list(Gen::V4, s, c, q)))
            .route("/api/v4/secrets/id/{id}", get(|s, c, p| secrets::get_by_id(Gen::V4, s, c, p)))
            .route(
                "/api/v4/secrets/batch",
                post(|s, c, b| secrets::batch_create(Gen::V4, s, c, b))
                    .patch(|s, c, b| secrets::batch_update(Gen::V4, s, c, b))
                    .delete(|s, c, b| secrets::batch_delete(Gen::V4, s, c, b)),
            )
            .route(
                "/api/v4/secrets/{name}",
                get(|s, c, p, q| secrets::get_one(Gen::V4, s, c, p, q))
                    .post(|s, c, p, b| secrets::create(Gen::V4, s, c, p, b))
                    .patch(|s, c, p, b| secrets::update(Gen::V4, s, c, p, b))
                    .delete(|s, c, p, b| secrets::delete(Gen::V4, s, c, p, b)),
            );
    }
    r.merge(admin::router())
        .fallback(route_not_found)
        .method_not_allowed_fallback(route_not_found)
        .with_state(app)
}

/// Fastify's own 404 for a route it does not know.
async fn route_not_found(req: Request) -> Response {
    let uri =
        req.extensions().get::<OriginalUri>().map_or_else(|| req.uri().clone(), |u| u.0.clone());
    let message = format!("Route {}:{} not found", req.method(), uri);
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"message": message, "error": "Not Found", "statusCode": 404})),
    )
        .into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let date = crate::logic::time::iso_ms(app.clock.now_ms());
    let mut body = json!({
        "date": date,
        "message": "Ok",
        "emailConfigured": false,
        "inviteOnlySignup": false,
        "redisConfigured": true,
        "secretScanningConfigured": false,
        "samlDefaultOrgSlug": null,
    });
    // A newer field (spec 3.3): the 2024 server did not send it.
    if app.api_version == ApiVersion::V2026 {
        body["auditLogStorageDisabled"] = json!(false);
    }
    axum::Json(body).into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok", "message": "Server is alive"})).into_response()
}

/// Query pairs in order; the first occurrence of a key wins.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Query(url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A strict boolean: absent gives `default`, `"true"`/`"false"` parse, anything else fails
    /// validation with the zod issue.
    pub(crate) fn strict_bool(
        &self,
        key: &str,
        default: bool,
        status: StatusCode,
    ) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ApiError::validation(
                status,
                vec![json!({
                    "received": other,
                    "code": "invalid_enum_value",
                    "options": ["true", "false"],
                    "path": [key],
                    "message": format!("Invalid enum value. Expected 'true' | 'false', received '{other}'"),
                })],
            )),
        }
    }

    /// The lenient `booleanSchema`: true unless empty, `0` or `false`.
    pub(crate) fn lenient_bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !matches!(v, "" | "0" | "false"))
    }
}

/// The validation status: 422, except on the 2024 server (401 on every route, logins included).
pub(crate) fn validation_status(app: &App) -> StatusCode {
    if app.api_version == ApiVersion::V2024 {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// Parses a JSON body checked against the route's zod-like `fields`: every failing field is one
/// issue of the validation failure. Bytes that are not JSON reach the server's error handler as
/// Fastify's parser error, which it masks as a 500. An empty body counts as `{}`.
pub(crate) fn parse_body<T: DeserializeOwned>(
    app: &App,
    bytes: &Bytes,
    fields: &[schema::Field],
) -> Result<T, ApiError> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(bytes).map_err(|_| ApiError::internal())?
    };
    let issues = schema::check(&value, fields);
    if !issues.is_empty() {
        return Err(ApiError::validation(validation_status(app), issues));
    }
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        ApiError::validation(validation_status(app), vec![issue("custom", &[], &text)])
    })
}
