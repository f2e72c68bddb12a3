//! The HTTP surface: health, liveness and readiness, JWKS, metrics, the status page and the two
//! admin actions. Errors answer `{"error": <stable code>, "message": <sentence>}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use ikit_common::SecretValue;
use ikit_common::audit::Outcome;
use ikit_keys::{RotationTarget, Trigger};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::rules::{self, Part, Status};

type Shared = State<Arc<AppState>>;

/// Every route of the service: (method, path, handler). [`router`] is built from this table
/// alone, and a test holds `/openapi.json` to the same set, so neither can grow a route the
/// other lacks.
fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        (Method::GET, "/", get(status_page)),
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/readyz", get(readyz)),
        (Method::GET, "/api/v1/infisical/health", get(health)),
        (Method::GET, "/.well-known/jwks.json", get(jwks)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::POST, "/api/v1/infisical/rotate", post(rotate)),
        (Method::POST, "/api/v1/infisical/cache/invalidate", post(invalidate)),
        (Method::GET, "/openapi.json", get(crate::openapi::document)),
    ]
}

/// The (method, path) of every route the router serves.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|(method, path, _)| (method, path)).collect()
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "the process answers", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Every binding metric name of the product, registered at zero so the first scrape has them.
pub const BINDING_METRICS: &[&str] = &[
    ikit_client::METRIC_FETCH_TOTAL,
    ikit_client::METRIC_FETCH_ERRORS,
    ikit_client::METRIC_FETCH_DURATION,
    ikit_client::METRIC_CACHE_HIT,
    ikit_client::METRIC_CACHE_MISS,
    "jwt_key_rotation_total",
    "aes_key_rotation_total",
    "infisical_webhook_events_total",
];

pub(crate) fn register_metrics() {
    // the recorder must be installed before the first metric is touched
    let _ = ikit_common::telemetry::metrics_handle();
    for name in BINDING_METRICS {
        if name.ends_with("_seconds") {
            metrics::describe_histogram!(
                *name,
                metrics::Unit::Seconds,
                "Infisical fetch latency by folder"
            );
            metrics::histogram!(*name).record(0.0);
        } else {
            metrics::counter!(*name).increment(0);
        }
    }
    for method in ["scheduled", "forced", "manual", "webhook"] {
        metrics::counter!("jwt_key_rotation_total", "method" => method).increment(0);
        metrics::counter!("aes_key_rotation_total", "method" => method).increment(0);
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": code, "message": message.into()}))).into_response()
}

// ---------------------------------------------------------------- health

/// The parts of `/api/v1/infisical/health`, in their display order.
pub(crate) async fn parts(state: &AppState) -> Vec<(&'static str, Part)> {
    let keys = state.keys.health();
    let now = state.clock.now_secs();
    let load_error = state.load_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let keys_loaded = keys.jwt.is_some() || keys.aes.is_some();
    let (probe, (redis_configured, redis_up)) = tokio::join!(state.probe(), state.redis_up());
    let stale = sum_metric(
        &ikit_common::telemetry::metrics_handle().render(),
        ikit_client::METRIC_CACHE_STALE,
    );
    vec![
        (
            "jwt_system",
            rules::jwt_part(keys.jwt.as_ref(), keys.last_jwt.as_ref(), load_error.as_deref(), now),
        ),
        (
            "aes_system",
            rules::aes_part(keys.aes.as_ref(), keys.last_aes.as_ref(), load_error.as_deref(), now),
        ),
        (
            "infisical_connection",
            rules::infisical_part(&state.status_url, &probe, state.config.slow_probe, keys_loaded),
        ),
        ("cache", rules::cache_part(redis_configured, redis_up, stale)),
        ("audit_log", rules::audit_part(&state.audit.status(), state.audit_backend)),
    ]
}

/// The sum of every series of a counter in Prometheus text.
fn sum_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Every part's status, a sentence to act on, and the figures behind it (docs/health.md).
#[utoipa::path(get, path = "/api/v1/infisical/health", tag = "health",
    responses(
        (status = 200, description = "healthy or degraded: `overall_status` and one object per part", body = Object),
        (status = 503, description = "unhealthy: same body", body = Object),
    ))]
pub(crate) async fn health(State(state): Shared) -> Response {
    let parts = parts(&state).await;
    let overall = rules::overall(parts.iter().map(|(_, p)| p));
    let mut body = serde_json::Map::new();
    body.insert("overall_status".into(), json!(overall));
    for (name, part) in &parts {
        body.insert((*name).into(), part.to_json());
    }
    body.insert("timestamp".into(), json!(state.clock.now_ms()));
    let code =
        if overall == Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, [(header::CACHE_CONTROL, "no-store")], axum::Json(Value::Object(body))).into_response()
}

/// Readiness: both key rings are loaded.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "keys loaded", body = String, content_type = "text/plain"),
        (status = 503, description = "keys not loaded yet", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): Shared) -> Response {
    let ring = state.keys.ring();
    let aes_active = ring.aes.as_ref().is_some_and(|a| a.active().is_some());
    if ring.jwt.is_some() && aes_active {
        (StatusCode::OK, "ready").into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "keys are not loaded yet")
    }
}

// ---------------------------------------------------------------- jwks, metrics

/// The published JWT verification keys (RFC 7517), with `ETag` and `Cache-Control: max-age`.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    params(("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier answer")),
    responses(
        (status = 200, description = "the key set", body = Object),
        (status = 304, description = "unchanged since the given ETag"),
        (status = 503, description = "keys not loaded yet", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn jwks(State(state): Shared, headers: HeaderMap) -> Response {
    let Ok(jwks) = state.keys.jwks() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "keys are not loaded yet");
    };
    let body = serde_json::to_vec(&jwks).unwrap_or_default();
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let cache_control =
        format!("public, max-age={}", state.config.policy.jwks_cache_max_age.max(0));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let headers = [
        (header::CACHE_CONTROL, cache_control),
        (header::ETAG, etag),
        (header::CONTENT_TYPE, "application/json".to_owned()),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, body).into_response()
}

/// One gauge per health part (0 healthy, 1 degraded, 2 unhealthy), refreshed at each scrape so
/// alerts can use the same rules as `/api/v1/infisical/health` (rotation overdue or failed, audit
/// log behind, Infisical unreachable). Labels: the five part names.
pub const METRIC_HEALTH_STATUS: &str = "ikit_health_status";

pub(crate) fn status_level(status: Status) -> f64 {
    match status {
        Status::Healthy => 0.0,
        Status::Degraded => 1.0,
        Status::Unhealthy => 2.0,
    }
}

/// Prometheus text exposition: the binding metrics and `ikit_health_status` per part.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): Shared) -> Response {
    for (name, part) in parts(&state).await {
        metrics::gauge!(METRIC_HEALTH_STATUS, "part" => name).set(status_level(part.status));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ikit_common::telemetry::metrics_handle().render(),
    )
        .into_response()
}

// ---------------------------------------------------------------- admin

/// Who called: the index of the accepted token, compared in constant time against every one.
fn authorize(tokens: &[SecretValue], headers: &HeaderMap) -> Option<usize> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))?
        .trim()
        .as_bytes();
    let mut found = None;
    for (i, token) in tokens.iter().enumerate() {
        // every token is compared, so the time does not say which one (or whether one) matched
        if bool::from(token.expose().as_bytes().ct_eq(presented)) {
            found = Some(i);
        }
    }
    found
}

fn actor(index: usize) -> &'static str {
    if index == 0 { "admin" } else { "admin:previous-token" }
}

fn unauthorized(admin_enabled: bool) -> Response {
    let message = if admin_enabled {
        "a valid admin bearer token is required"
    } else {
        "admin endpoints are disabled: set IKIT_ADMIN_TOKEN"
    };
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RotationType {
    Jwt,
    Aes,
    Both,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    rotation_type: RotationType,
    #[serde(default)]
    force: bool,
    reason: String,
}

const MAX_REASON: usize = 500;

impl RotationType {
    fn name(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Aes => "aes",
            Self::Both => "both",
        }
    }

    fn target(self) -> RotationTarget {
        match self {
            Self::Jwt => RotationTarget::Jwt,
            Self::Aes => RotationTarget::Aes,
            Self::Both => RotationTarget::Both,
        }
    }
}

/// Rotates the JWT key, the AES key or both now (audited). `force` skips the schedule, never
/// the overlap or the activation delay.
#[utoipa::path(post, path = "/api/v1/infisical/rotate", tag = "admin",
    request_body = crate::openapi::RotateBody,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`outcome` is `rotated` or `nothing_due`, with the steps taken and the kids now published", body = Object),
        (status = 400, description = "the body is not a rotate request", body = crate::openapi::ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = crate::openapi::ErrorBody),
        (status = 409, description = "another rotation is running", body = crate::openapi::ErrorBody),
        (status = 502, description = "the rotation failed (Infisical refused or is unreachable)", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn rotate(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    const ACTION: &str = "admin.rotate";
    let Some(who) = authorize(&state.config.admin_tokens, &headers) else {
        state
            .record(
                "anonymous",
                ACTION,
                "keys",
                Outcome::Denied,
                json!({"reason": "missing or wrong admin token", "outcome": "unauthorized"}),
            )
            .await;
        return unauthorized(!state.config.admin_tokens.is_empty());
    };
    let who = actor(who);
    let request = match serde_json::from_slice::<RotateRequest>(&body) {
        Ok(r) if r.reason.trim().is_empty() || r.reason.len() > MAX_REASON => {
            Err(format!("reason must be 1 to {MAX_REASON} characters: say why you rotate"))
        }
        Ok(r) => Ok(r),
        Err(e) => Err(format!(
            "expected {{\"rotation_type\": \"jwt\"|\"aes\"|\"both\", \"force\": bool, \"reason\": \"...\"}}: {e}"
        )),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            state
                .record(who, ACTION, "keys", Outcome::Failure, json!({"outcome": "bad_request"}))
                .await;
            return error(StatusCode::BAD_REQUEST, "bad_request", message);
        }
    };
    let target = request.rotation_type.name();
    let details = |outcome: &str| json!({"reason": request.reason, "force": request.force, "outcome": outcome});
    // one admin rotation per replica at a time; across replicas the rotation lock decides
    let Ok(_running) = state.rotating.try_lock() else {
        state.record(who, ACTION, target, Outcome::Failure, details("busy")).await;
        return error(StatusCode::CONFLICT, "busy", "another rotation is running");
    };
    let trigger = if request.force { Trigger::Forced } else { Trigger::Manual };
    let result = state
        .keys
        .rotate(request.rotation_type.target(), request.force, &request.reason, trigger)
        .await;
    match result {
        Ok(outcome) if outcome.busy => {
            state.record(who, ACTION, target, Outcome::Failure, details("busy")).await;
            error(StatusCode::CONFLICT, "busy", "another replica holds the rotation lock")
        }
        Ok(outcome) => {
            let summary = if outcome.steps.is_empty() { "nothing_due" } else { "rotated" };
            state.record(who, ACTION, target, Outcome::Success, details(summary)).await;
            let keys = state.keys.health();
            axum::Json(json!({
                "outcome": summary,
                "rotation_type": target,
                "force": request.force,
                "rotations": outcome.rotations(),
                "steps": outcome.steps,
                "published_kids": keys.jwt.as_ref().map(|j| j.published_kids.clone()),
                "current_kid": keys.jwt.as_ref().map(|j| j.current_kid.clone()),
                "active_kid": keys.aes.as_ref().and_then(|a| a.active_kid.clone()),
            }))
            .into_response()
        }
        Err(ikit_keys::Error::RotationInProgress(message)) => {
            state.record(who, ACTION, target, Outcome::Failure, details("busy")).await;
            error(StatusCode::CONFLICT, "busy", message)
        }
        Err(e) => {
            let message = e.to_string();
            state.record(who, ACTION, target, Outcome::Failure, details(&message)).await;
            error(StatusCode::BAD_GATEWAY, "rotation_failed", message)
        }
    }
}

const MAX_PATTERN: usize = 512;

/// Drops matching cache entries here, in Redis and on every replica (audited).
#[utoipa::path(post, path = "/api/v1/infisical/cache/invalidate", tag = "admin",
    params(("pattern" = String, Query, description = "a path, folder prefix or glob starting with `/`, e.g. `/auth/*`")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "what was dropped: `local`, `published`, `l2_cleared`, `keys_reloaded`", body = Object),
        (status = 400, description = "bad pattern", body = crate::openapi::ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn invalidate(
    State(state): Shared,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    const ACTION: &str = "admin.cache.invalidate";
    let pattern = query.ok().and_then(|Query(q)| q.get("pattern").cloned());
    let target = pattern.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "-".to_owned());
    let Some(who) = authorize(&state.config.admin_tokens, &headers) else {
        state
            .record(
                "anonymous",
                ACTION,
                &target,
                Outcome::Denied,
                json!({"reason": "missing or wrong admin token", "outcome": "unauthorized"}),
            )
            .await;
        return unauthorized(!state.config.admin_tokens.is_empty());
    };
    let who = actor(who);
    let pattern = match pattern {
        Some(p)
            if (p.starts_with('/') || p.starts_with('*'))
                && p.len() <= MAX_PATTERN
                && !p.chars().any(char::is_control) =>
        {
            p
        }
        _ => {
            state
                .record(who, ACTION, &target, Outcome::Failure, json!({"outcome": "bad_request"}))
                .await;
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "pattern must be a path, a folder prefix or a glob starting with / (e.g. /auth/*)",
            );
        }
    };
    let done = state.cache.invalidate(&pattern).await;
    // the keys are read uncached: a change there needs the ring reloaded, not a cache dropped
    let keys_reloaded = match state.keys.on_change(&pattern).await {
        Ok(reloaded) => reloaded,
        Err(e) => {
            tracing::warn!(error = %e, "key ring reload after an invalidation failed");
            false
        }
    };
    let answer = json!({
        "pattern": pattern,
        "local": done.local,
        "published": done.published,
        "l2_cleared": done.l2_cleared,
        "keys_reloaded": keys_reloaded,
    });
    state
        .record(
            who,
            ACTION,
            &pattern,
            Outcome::Success,
            json!({"reason": "admin request", "outcome": answer}),
        )
        .await;
    axum::Json(answer).into_response()
}

// ---------------------------------------------------------------- status page

/// The server-rendered status page.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "HTML status page", body = String, content_type = "text/html")))]
pub(crate) async fn status_page(State(state): Shared) -> Response {
    let parts = parts(&state).await;
    let filter = ikit_common::audit::AuditFilter {
        limit: Some(10),
        newest_first: true,
        ..Default::default()
    };
    let audit = state.audit.query(&filter).await.map_err(|e| e.to_string());
    let events: Vec<_> =
        state.events.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect();
    let page = crate::page::render(&crate::page::PageData {
        now: state.clock.now_secs(),
        parts: &parts,
        keys: &state.keys.health(),
        audit: audit.as_deref().map_err(String::as_str),
        events: &events,
    });
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_admin_token_is_accepted_and_nothing_else() {
        let tokens =
            vec![SecretValue::new("first-token-000001"), SecretValue::new("second-token-00002")];
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(authorize(&tokens, &with("Bearer first-token-000001")), Some(0));
        assert_eq!(authorize(&tokens, &with("Bearer second-token-00002")), Some(1));
        assert_eq!(authorize(&tokens, &with("Bearer first-token-00000")), None);
        assert_eq!(authorize(&tokens, &with("first-token-000001")), None);
        assert_eq!(authorize(&tokens, &HeaderMap::new()), None);
        assert_eq!(authorize(&[], &with("Bearer ")), None);
    }

    #[test]
    fn counters_are_summed_over_their_series() {
        let text = "# TYPE x_total counter\nx_total{path=\"/a\"} 2\nx_total{path=\"/b\"} 3\nx_total_other 9\n";
        assert_eq!(sum_metric(text, "x_total"), 5);
        assert_eq!(sum_metric(text, "y_total"), 0);
    }
}
