//! The receiving side: `POST /api/v1/infisical/webhook` (and `/infisical/webhook`). Every
//! request, accepted or not, is audited (never the signature, never a value) and counted in
//! `infisical_webhook_events_total{event,status}`. A verified change is queued durably before
//! the 202; nothing waits for Infisical here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ikit_common::audit::{AuditEvent, Outcome};
use ikit_common::webhook_signature::{self, SIGNATURE_HEADER, SignatureError};
use serde_json::json;

use crate::error::ApiError;
use crate::payload::{self, Action};
use crate::state::AppState;
use crate::store::FolderId;

/// The binding metric of every received request.
pub const METRIC_WEBHOOK_EVENTS: &str = "infisical_webhook_events_total";

/// What the audit row and the metric say about one request.
struct Record {
    event: String,
    target: String,
    details: serde_json::Value,
}

pub async fn receive(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let mut record = Record { event: "unknown".into(), target: "-".into(), details: json!({}) };
    let result = handle(&state, source, request, &mut record).await;
    let (status, code, response) = match result {
        Ok((status, body)) => (status, None, (status, axum::Json(body)).into_response()),
        Err(e) => (e.status, Some(e.code), e.into_response()),
    };
    let now = state.clock.now_ms();
    let outcome = match status.as_u16() {
        200..=299 => Outcome::Success,
        401 | 403 | 409 | 429 => Outcome::Denied,
        _ => Outcome::Failure,
    };
    let actor =
        format!("webhook:{}", source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()));
    let mut details = record.details;
    if let Some(obj) = details.as_object_mut() {
        obj.insert("status".into(), json!(status.as_u16()));
        obj.insert("event".into(), json!(record.event));
        if let Some(code) = code {
            obj.insert("code".into(), json!(code));
        }
    }
    let audit = AuditEvent::new(now, actor, "webhook.receive", record.target, outcome)
        .with_details(details);
    if let Err(e) = state.audit.record(audit).await {
        tracing::error!(error = %e, "cannot audit a webhook request");
    }
    metrics::counter!(METRIC_WEBHOOK_EVENTS,
        "event" => payload::event_label(&record.event), "status" => status.as_u16().to_string())
    .increment(1);
    response
}

async fn handle(
    state: &AppState,
    source: Option<IpAddr>,
    request: Request,
    record: &mut Record,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    if let (Some(limiter), Some(ip)) = (&state.limiter, source)
        && let Err(not_until) = limiter.check_key(&ip)
    {
        use governor::clock::Clock as _;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this source",
        );
        e.retry_after_secs = Some(wait.as_secs().max(1));
        return Err(e);
    }
    let limit = state.settings.body_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
    let body: Body = request.into_body();
    // Reads at most `limit` bytes: a longer body (chunked, or lying about its length) stops there.
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            // axum reports the limit as `length limit exceeded`, somewhere in the chain.
            let mut too_long = false;
            let mut cause: Option<&dyn std::error::Error> = Some(&e);
            while let Some(c) = cause {
                too_long |= c.to_string().contains("length limit");
                cause = c.source();
            }
            return Err(if too_long {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body_unreadable",
                    "the body could not be read",
                )
            });
        }
    };
    let Some(signature) = signature else {
        return Err(ApiError::unauthorized(&SignatureError::Missing));
    };
    let now = state.clock.now_ms();
    let window = state.settings.window;
    let verified = webhook_signature::verify_at(&signature, &body, &state.secrets(), now, window)
        .map_err(|e| ApiError::unauthorized(&e))?;
    record.details = json!({"secretIndex": verified.secret_index});
    let delivery = payload::decode(&body)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", m))?;
    record.event = delivery.event.clone();
    verified
        .check_body_timestamp(delivery.timestamp_ms, now, window)
        .map_err(|e| ApiError::unauthorized(&e))?;
    if !state.replay.first_time(&signature, now).await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replayed",
            "this delivery was already accepted",
        ));
    }
    match delivery.action {
        Action::Test => Ok((StatusCode::OK, json!({"status": "ok"}))),
        Action::Ignored => {
            Ok((StatusCode::ACCEPTED, json!({"status": "ignored", "event": delivery.event})))
        }
        Action::Refetch { project, environment, path, key } => {
            let project = project.unwrap_or_else(|| state.settings.project_id().to_owned());
            record.target = format!("{project}:{environment}:{path}");
            if let (Some(obj), Some(key)) = (record.details.as_object_mut(), &key) {
                obj.insert("key".into(), json!(key));
            }
            if project != state.settings.project_id() || !state.watches(&environment, &path) {
                return Ok((
                    StatusCode::ACCEPTED,
                    json!({"status": "ignored", "reason": "not watched"}),
                ));
            }
            let id = FolderId::new(&project, &environment, &path);
            let coalesce = i64::try_from(state.settings.coalesce.as_millis()).unwrap_or(0);
            state
                .db
                .enqueue(&id, now, now.saturating_add(coalesce))
                .await
                .map_err(|e| ApiError::internal("queue_unavailable", e))?;
            state.wake.notify_waiters();
            Ok((
                StatusCode::ACCEPTED,
                json!({"status": "queued", "environment": environment, "secretPath": path}),
            ))
        }
    }
}
