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
use crate::intake::{AuditFor, Fate, Submission};
use crate::openapi::ErrorBody;
use crate::payload::{self, Action};
use crate::replay::{self, Digest32};
use crate::state::AppState;
use crate::store::{Delivery, FolderId};

/// The binding metric of every received request.
pub const METRIC_WEBHOOK_EVENTS: &str = "infisical_webhook_events_total";

/// What the audit row and the metric say about one request.
#[derive(Clone)]
struct Record {
    event: String,
    target: String,
    details: serde_json::Value,
}

/// Infisical's webhook delivery.
#[utoipa::path(
    post,
    path = "/api/v1/infisical/webhook",
    request_body(content = String, content_type = "application/json",
        description = "Infisical's delivery: `secrets.modified` (project, environment, secretPath), \
                       `secret.created|updated|rotated|deleted` (payload.secretKey) or `test`"),
    params(("x-infisical-signature" = String, Header,
        description = "`t=<ms>;<hex>` or `sha256=<hex>`: HMAC-SHA256 of the raw body")),
    responses(
        (status = 200, description = "`test` delivery"),
        (status = 202, description = "queued durably, or recorded and ignored"),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 401, description = "signature missing, malformed or forged; timestamp outside the window", body = ErrorBody),
        (status = 409, description = "a delivery already accepted", body = ErrorBody),
        (status = 413, description = "body over 1 MiB", body = ErrorBody),
        (status = 429, description = "source over its rate; see Retry-After", body = ErrorBody),
        (status = 503, description = "the queue cannot take it now", body = ErrorBody),
    )
)]
pub async fn receive(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let mut record = Record { event: "unknown".into(), target: "-".into(), details: json!({}) };
    let result = handle(&state, source, request, &mut record).await;
    let (status, code, answer, delivery, replay) = match result {
        Ok(Answer { status, body, delivery, replay }) => {
            (status, None, Ok(body), delivery, Some(replay))
        }
        Err(e) => (e.status, Some(e.code), Err(e), None, None),
    };
    let now = state.clock.now_ms();
    let actor =
        format!("webhook:{}", source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()));
    let event = record.event.clone();
    let audit: AuditFor = Box::new(move |fate| {
        let (status, code) = match fate {
            Fate::Accepted => (status, code),
            Fate::Replayed => (StatusCode::CONFLICT, Some(REPLAYED)),
            Fate::QueueRefused => (StatusCode::SERVICE_UNAVAILABLE, Some(QUEUE_UNAVAILABLE)),
        };
        audit_entry(now, actor.clone(), record.clone(), status, code)
    });
    // The replay check, then the queue row and the audit row, in the next group commit: all
    // durable before the answer.
    let committed = state.intake.commit(Submission { delivery, replay, audit }).await;
    let response = match (committed.fate, answer) {
        (Fate::Accepted, Ok(body)) => (status, axum::Json(body)).into_response(),
        (Fate::Accepted, Err(e)) => e.into_response(),
        (Fate::Replayed, _) => {
            ApiError::new(StatusCode::CONFLICT, REPLAYED, "this delivery was already accepted")
                .into_response()
        }
        (Fate::QueueRefused, _) => {
            ApiError::internal(QUEUE_UNAVAILABLE, "the delivery could not be queued")
                .into_response()
        }
    };
    metrics::counter!(METRIC_WEBHOOK_EVENTS,
        "event" => payload::event_label(&event), "status" => response.status().as_u16().to_string())
    .increment(1);
    response
}

/// The same receiver at the path Infisical's own docs show.
#[utoipa::path(
    post,
    path = "/infisical/webhook",
    request_body(content = String, content_type = "application/json",
        description = "as `POST /api/v1/infisical/webhook`"),
    params(("x-infisical-signature" = String, Header, description = "as the main route")),
    responses(
        (status = 202, description = "as `POST /api/v1/infisical/webhook`"),
        (status = 401, description = "as the main route", body = ErrorBody),
    )
)]
pub async fn receive_alias(state: State<Arc<AppState>>, request: Request) -> Response {
    receive(state, request).await
}

const QUEUE_UNAVAILABLE: &str = "queue_unavailable";
const REPLAYED: &str = "replayed";

/// A request's audit entry: never the signature, never a value.
fn audit_entry(
    now: i64,
    actor: String,
    record: Record,
    status: StatusCode,
    code: Option<&'static str>,
) -> AuditEvent {
    let outcome = match status.as_u16() {
        200..=299 => Outcome::Success,
        401 | 403 | 409 | 429 => Outcome::Denied,
        _ => Outcome::Failure,
    };
    let mut details = record.details;
    if let Some(obj) = details.as_object_mut() {
        obj.insert("status".into(), json!(status.as_u16()));
        obj.insert("event".into(), json!(record.event));
        if let Some(code) = code {
            obj.insert("code".into(), json!(code));
        }
    }
    AuditEvent::new(now, actor, "webhook.receive", record.target, outcome).with_details(details)
}

/// A verified request's answer, unless the replay check refuses it; and the delivery to queue
/// before it is sent.
struct Answer {
    status: StatusCode,
    body: serde_json::Value,
    delivery: Option<Delivery>,
    /// The delivery's replay identity and receipt time, checked by the group commit.
    replay: (Digest32, i64),
}

impl Answer {
    fn new(status: StatusCode, body: serde_json::Value, replay: (Digest32, i64)) -> Self {
        Self { status, body, delivery: None, replay }
    }
}

async fn handle(
    state: &AppState,
    source: Option<IpAddr>,
    request: Request,
    record: &mut Record,
) -> Result<Answer, ApiError> {
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
    // Checked for a replay (and refused 409) by the group commit, with the rest of its batch.
    let replay = (replay::digest(&signature), now);
    match delivery.action {
        Action::Test => Ok(Answer::new(StatusCode::OK, json!({"status": "ok"}), replay)),
        Action::Ignored => Ok(Answer::new(
            StatusCode::ACCEPTED,
            json!({"status": "ignored", "event": delivery.event}),
            replay,
        )),
        Action::Refetch { project, environment, path, key } => {
            let project = project.unwrap_or_else(|| state.settings.project_id().to_owned());
            record.target = format!("{project}:{environment}:{path}");
            if let (Some(obj), Some(key)) = (record.details.as_object_mut(), &key) {
                obj.insert("key".into(), json!(key));
            }
            if project != state.settings.project_id() || !state.watches(&environment, &path) {
                return Ok(Answer::new(
                    StatusCode::ACCEPTED,
                    json!({"status": "ignored", "reason": "not watched"}),
                    replay,
                ));
            }
            Ok(Answer {
                status: StatusCode::ACCEPTED,
                body: json!({"status": "queued", "environment": environment, "secretPath": path}),
                delivery: Some(Delivery {
                    id: FolderId::new(&project, &environment, &path),
                    received_ms: now,
                    available_ms: now.saturating_add(state.settings.coalesce_ms()),
                }),
                replay,
            })
        }
    }
}
