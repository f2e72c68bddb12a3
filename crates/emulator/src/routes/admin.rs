//! The admin API under `/__emulator/*`: counters, faults, clock, login bodies, webhook
//! deliveries and the rate-limit mode. Every route needs `Authorization: Bearer <admin token>`.

use crate::LockExt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::Query;
use crate::error::ApiError;
use crate::faults::Fault;
use crate::server::App;

/// Proof that the request carried the admin token.
pub(crate) struct Admin;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(app.admin_token.as_bytes()))
            && !presented.is_empty()
        {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("admin token missing or wrong"))
        }
    }
}

pub(crate) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/__emulator/counters", get(counters).delete(reset_counters))
        .route("/__emulator/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/__emulator/faults/webhooks", post(fail_webhooks))
        .route("/__emulator/clock", get(clock))
        .route("/__emulator/clock/advance", post(advance))
        .route("/__emulator/clock/set", post(set_clock))
        .route("/__emulator/clock/resume", post(resume))
        .route("/__emulator/login-requests/{method}", get(login_requests))
        .route("/__emulator/webhook-deliveries", get(deliveries))
        .route("/__emulator/rate-limit", post(rate_limit))
}

async fn counters(State(app): State<Arc<App>>, _: Admin, RawQuery(raw): RawQuery) -> Response {
    let q = Query::parse(raw.as_deref());
    if let (Some(method), Some(route)) = (q.get("method"), q.get("route")) {
        return Json(json!({"method": method.to_ascii_uppercase(), "route": route, "count": app.request_count(method, route), "notModified": app.not_modified_count(method, route)}))
            .into_response();
    }
    let counters = app.counters.locked();
    let list: Vec<_> =
        counters.iter().map(|((m, r), c)| json!({"method": m, "route": r, "count": c})).collect();
    Json(json!({ "counters": list })).into_response()
}

async fn reset_counters(State(app): State<Arc<App>>, _: Admin) -> StatusCode {
    app.counters.locked().clear();
    app.not_modified.locked().clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(app): State<Arc<App>>, _: Admin) -> Response {
    Json(json!({ "faults": app.faults.list() })).into_response()
}

/// The longest latency a fault may add: a test that wants longer wants a dropped connection.
const MAX_FAULT_LATENCY: Duration = Duration::from_secs(3600);

async fn add_fault(
    State(app): State<Arc<App>>,
    _: Admin,
    Json(fault): Json<Fault>,
) -> Result<StatusCode, ApiError> {
    if fault.latency.is_some_and(|l| l > MAX_FAULT_LATENCY) {
        return Err(ApiError::bad_request("latencyMs must be at most 3600000"));
    }
    if fault.status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(ApiError::bad_request("status must be an HTTP status (100 to 599)"));
    }
    app.faults.add(fault);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(app): State<Arc<App>>, _: Admin) -> StatusCode {
    app.faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Times {
    times: Option<u32>,
}

async fn fail_webhooks(State(app): State<Arc<App>>, _: Admin, Json(t): Json<Times>) -> StatusCode {
    app.faults.fail_webhooks(t.times);
    StatusCode::NO_CONTENT
}

fn clock_json(app: &App) -> Response {
    Json(json!({"nowMs": app.clock.now_ms(), "fixed": app.clock.is_fixed()})).into_response()
}

async fn clock(State(app): State<Arc<App>>, _: Admin) -> Response {
    clock_json(&app)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Advance {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    seconds: u64,
}

async fn advance(
    State(app): State<Arc<App>>,
    _: Admin,
    Json(a): Json<Advance>,
) -> Result<Response, ApiError> {
    let by_ms = a
        .seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(a.ms))
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| {
            ApiError::bad_request("seconds and ms add up to more than the clock holds")
        })?;
    let target = app.clock.now_ms().checked_add(by_ms).filter(|t| *t <= MAX_CLOCK_MS);
    if target.is_none() {
        return Err(ApiError::bad_request("the clock would pass the year 9999"));
    }
    app.clock.advance(Duration::from_millis(by_ms.unsigned_abs()));
    Ok(clock_json(&app))
}

/// 9999-12-31T23:59:59.999Z: the last instant an ISO-8601 date (and a JWT `exp` every client
/// can read) holds.
const MAX_CLOCK_MS: i64 = 253_402_300_799_999;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetClock {
    unix_ms: i64,
}

async fn set_clock(
    State(app): State<Arc<App>>,
    _: Admin,
    Json(s): Json<SetClock>,
) -> Result<Response, ApiError> {
    if !(0..=MAX_CLOCK_MS).contains(&s.unix_ms) {
        return Err(ApiError::bad_request("unixMs must be between 0 and 253402300799999"));
    }
    app.clock.set(s.unix_ms);
    Ok(clock_json(&app))
}

async fn resume(State(app): State<Arc<App>>, _: Admin) -> Response {
    app.clock.resume();
    clock_json(&app)
}

async fn login_requests(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(method): Path<String>,
) -> Response {
    Json(json!({ "requests": app.login_requests(&method) })).into_response()
}

async fn deliveries(State(app): State<Arc<App>>, _: Admin) -> Response {
    let list = app.deliveries.locked().clone();
    Json(json!({ "deliveries": list })).into_response()
}

#[derive(Deserialize)]
struct RateLimit {
    enabled: bool,
}

async fn rate_limit(State(app): State<Arc<App>>, _: Admin, Json(r): Json<RateLimit>) -> StatusCode {
    app.set_rate_limit_mode(r.enabled);
    StatusCode::NO_CONTENT
}
