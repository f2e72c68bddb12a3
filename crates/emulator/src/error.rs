//! The crate's error type and the HTTP error bodies of spec 4.1.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// What can go wrong when loading a seed or starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("invalid seed: {0}")]
    Seed(String),
    #[error("failed to bind {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("failed to read or write the data file {path}: {source}")]
    Data { path: std::path::PathBuf, source: std::io::Error },
    #[error("the data file {path} is not valid state: {message}")]
    DataFormat { path: std::path::PathBuf, message: String },
    #[error("failed to build the webhook http client: {0}")]
    HttpClient(String),
}

/// An error answer. Handlers return it; the server renders the body (with the request id and
/// the field order of the emulated server version) once the request is done.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: String,
    pub(crate) message: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self { status, error: error.to_owned(), message: Value::String(message.into()) }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UnauthorizedError", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "ForbiddenError", message)
    }

    pub(crate) fn permission_denied(action: &str, subject: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PermissionDenied",
            format!("You are not allowed to {action} on {subject}"),
        )
    }

    pub(crate) fn token(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "TokenError", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(crate) fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "Something went wrong")
    }

    /// A request-schema failure: `message` is an array of zod-like issues. `status` is 422 on
    /// current servers and 401 on the 2024 v3 routes.
    pub(crate) fn validation(status: StatusCode, issues: Vec<Value>) -> Self {
        Self { status, error: "ValidationFailure".to_owned(), message: Value::Array(issues) }
    }

    /// The body, given the request id (`None` for the 2024 server's 401/403/404 bodies).
    pub(crate) fn body(&self, req_id: Option<&str>) -> Value {
        let mut body = serde_json::Map::new();
        if let Some(req_id) = req_id {
            body.insert("reqId".into(), json!(req_id));
        }
        body.insert("statusCode".into(), json!(self.status.as_u16()));
        body.insert("message".into(), self.message.clone());
        body.insert("error".into(), json!(self.error));
        Value::Object(body)
    }
}

/// One zod-like issue for a validation failure.
pub(crate) fn issue(code: &str, path: &[&str], message: &str) -> Value {
    json!({ "code": code, "path": path, "message": message })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}
