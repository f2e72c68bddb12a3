//! `GET /api/v1/infisical/events`: the per-key events as Server-Sent Events, for applications in
//! any language. Bearer token: the read-only events token or the admin token. Filters:
//! `pattern` (a key path, folder prefix or glob over `/folder/KEY`) and `environment`.
//! Each frame is `id: <seq>` and `data: <event JSON>` (`project`, `environment`, `folder`, `key`,
//! `path`, `kind`, `version`, `eventId`); a heartbeat comment (`: heartbeat`) every
//! `IKIT_WEBHOOK_HEARTBEAT` (15 s) while idle. A client reconnecting
//! with `Last-Event-ID` gets every retained event after it (the log keeps the newest
//! `IKIT_WEBHOOK_RETENTION`), read from the database, so events stored by any replica arrive.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::LoggedEvent;

/// Events stored by another replica are seen within this.
const POLL: Duration = Duration::from_millis(250);
const BATCH: i64 = 200;

/// Ends every stream when the service shuts down (graceful shutdown waits for connections).
#[derive(Clone)]
pub struct Shutdown(pub CancellationToken);

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub pattern: Option<String>,
    pub environment: Option<String>,
    /// For clients that cannot set the `Last-Event-ID` header.
    #[serde(rename = "lastEventId")]
    pub last_event_id: Option<i64>,
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let given = token.trim().as_bytes();
    [state.settings.events_token.as_ref(), state.settings.base.admin_token.as_ref()]
        .into_iter()
        .flatten()
        .any(|t| bool::from(t.expose().as_bytes().ct_eq(given)))
}

struct Cursor {
    state: Arc<AppState>,
    after: i64,
    buffer: VecDeque<LoggedEvent>,
    pattern: Option<String>,
    environment: Option<String>,
    shutdown: CancellationToken,
}

impl Cursor {
    fn wanted(&self, e: &LoggedEvent) -> bool {
        self.environment.as_deref().is_none_or(|env| env == e.event.environment)
            && self.pattern.as_deref().is_none_or(|p| ikit_client::path_matches(p, &e.event.path()))
    }
}

fn frame(e: &LoggedEvent) -> Event {
    let mut body = serde_json::to_value(&e.event).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("path".into(), e.event.path().into());
    }
    Event::default().id(e.seq.to_string()).data(body.to_string())
}

/// The per-key change events as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/infisical/events",
    params(
        ("authorization" = String, Header, description = "`Bearer <IKIT_EVENTS_TOKEN or IKIT_ADMIN_TOKEN>`"),
        ("last-event-id" = Option<i64>, Header, description = "resume after this event"),
        ("pattern" = Option<String>, Query, description = "key path, folder prefix or glob over `/folder/KEY`"),
        ("environment" = Option<String>, Query, description = "one environment slug"),
        ("lastEventId" = Option<i64>, Query, description = "as the `Last-Event-ID` header"),
    ),
    responses(
        (status = 200, description = "`id: <seq>` and `data: <event JSON>` frames; `: heartbeat` comments",
            content_type = "text/event-stream", body = String),
        (status = 401, description = "no valid token", body = crate::openapi::ErrorBody),
    )
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Extension(Shutdown(shutdown)): Extension<Shutdown>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid events or admin bearer token is required",
        ));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.last_event_id);
    let after = match resume {
        Some(seq) => seq,
        None => {
            state.db.last_seq().await.map_err(|e| ApiError::internal("store_unavailable", e))?
        }
    };
    let heartbeat = state.settings.heartbeat;
    let cursor = Cursor {
        state,
        after,
        buffer: VecDeque::new(),
        pattern: query.pattern.filter(|p| !p.is_empty()),
        environment: query.environment.filter(|e| !e.is_empty()),
        shutdown,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if c.shutdown.is_cancelled() {
                return None;
            }
            if let Some(e) = c.buffer.pop_front() {
                return Some((Ok(frame(&e)), c));
            }
            // Register for the wake-up before reading, so an event stored in between is not slept through.
            let changed = c.state.changed.notified();
            match c.state.db.events_after(c.after, BATCH).await {
                Ok(batch) if !batch.is_empty() => {
                    c.after = batch.last().map_or(c.after, |e| e.seq);
                    let keep: Vec<LoggedEvent> =
                        batch.into_iter().filter(|e| c.wanted(e)).collect();
                    c.buffer.extend(keep);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event stream cannot read the log"),
            }
            tokio::select! {
                () = c.shutdown.cancelled() => return None,
                () = changed => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}
