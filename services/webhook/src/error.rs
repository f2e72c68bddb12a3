//! The service's one error type, and the one JSON shape every refused request gets:
//! `{"error": {"code": "<stable code>", "message": "<text>"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ikit_common::webhook_signature::SignatureError;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("audit log: {0}")]
    Audit(#[from] ikit_common::audit::AuditError),
    #[error("infisical: {0}")]
    Infisical(#[from] ikit_client::ClientError),
    #[error("redis: {0}")]
    Redis(String),
    #[error("stored state is unreadable: {0}")]
    State(String),
    #[error("lease lost on {0}")]
    LeaseLost(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

/// A refused request: its status, stable code and message. Never carries a signature, a
/// secret or body bytes.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    pub fn unauthorized(e: &SignatureError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }

    pub fn internal(code: &'static str, e: impl std::fmt::Display) -> Self {
        tracing::error!(code, error = %e, "request failed");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, "the service cannot take this now")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
