//! The crate's error type and the pure classification of server error responses
//! (`infisical-api.md` 1.5 and 4.1).

use std::time::Duration;

use crate::wire::ErrorBody;

/// Everything that can go wrong using this crate: the one error type of its API (settings and
/// secret-reference errors convert into it). Callers branch on the variant; [`ClientError::kind`]
/// names it for metrics. Where a request was about one secret, `secret` and `folder` say which.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The secret, folder or project does not exist.
    #[error("not found: {message}")]
    NotFound { message: String, secret: Option<String>, folder: Option<String> },
    /// The identity may not do this (403 `PermissionDenied` and other non-token 403s), or may
    /// not read the value.
    #[error("permission denied: {message}")]
    PermissionDenied { message: String, secret: Option<String>, folder: Option<String> },
    /// The server refused the request as malformed (400, 422, or a 2024 server's 401
    /// `ValidationFailure`), or the caller passed something invalid.
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    /// Login failed, or the token was rejected again right after a fresh login.
    #[error("authentication failed: {message}")]
    Auth { message: String },
    /// The server rate-limited us for longer than we are willing to wait, or retries ran out.
    #[error("rate limited by infisical (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// A conditional update found the secret at another version than the one it was read at.
    #[error(
        "secret {key} in {folder} is at version {found}, not {expected}: it changed since it was read"
    )]
    VersionConflict { key: String, folder: String, expected: u64, found: u64 },
    /// A write was accepted as a change request that needs approval: nothing was written yet.
    #[error("change is pending approval")]
    PendingApproval { approval_id: Option<String> },
    /// Infisical could not be reached (`status` is `None`) or answered 5xx, after retries.
    #[error("infisical unavailable: {reason}")]
    Unavailable { status: Option<u16>, reason: String },
    /// The server redirected to another origin (scheme, host or port). Not followed: the request
    /// carries credentials that must only reach the configured server.
    #[error(
        "infisical at {from} redirected to another origin, {to}: not followed, credentials are \
         only sent to the configured server (point INFISICAL_API_URL at the new address)"
    )]
    Redirect { from: String, to: String },
    /// Too many consecutive failures: requests are not sent until the breaker half-opens.
    #[error("infisical circuit open, next trial in {retry_in:?}")]
    CircuitOpen { retry_in: Duration },
    /// Another error status.
    #[error("infisical answered {status} {error}: {message}")]
    Api { status: u16, error: String, message: String },
    /// A response body that could not be decoded.
    #[error("invalid response from infisical: {0}")]
    Decode(String),
    /// The client configuration is invalid.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A login credential could not be read (token file, cloud metadata service).
    #[error("cannot obtain login credential: {0}")]
    Credential(String),
    /// An offline snapshot exists but cannot be trusted (corrupt, truncated, wrong key, or
    /// written for another project, environment or folder).
    #[error("offline snapshot rejected: {0}")]
    Snapshot(String),
    /// Infisical is unreachable and the last good copy is older than `max_stale`.
    #[error(
        "infisical unreachable and the last good copy is {}s old, past max_stale of {}s",
        age.as_secs(),
        max_stale.as_secs()
    )]
    TooStale { age: Duration, max_stale: Duration },
    /// Redis failed a step that could not be skipped (publishing an invalidation).
    #[error("redis failed: {0}")]
    Redis(String),
}

impl From<ikit_common::ConfigErrors> for ClientError {
    fn from(e: ikit_common::ConfigErrors) -> Self {
        Self::Config(e.to_string())
    }
}

impl From<ikit_common::SecretRefError> for ClientError {
    fn from(e: ikit_common::SecretRefError) -> Self {
        Self::InvalidInput { message: e.to_string() }
    }
}

impl ClientError {
    /// A `NotFound` about no particular secret.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound { message: message.into(), secret: None, folder: None }
    }

    pub(crate) fn permission_denied(message: impl Into<String>) -> Self {
        Self::PermissionDenied { message: message.into(), secret: None, folder: None }
    }

    /// Names the secret and folder a request was about, where the error has room for them and
    /// does not name them yet.
    pub(crate) fn about(mut self, folder: &str, key: &str) -> Self {
        if let Self::NotFound { secret, folder: f, .. }
        | Self::PermissionDenied { secret, folder: f, .. } = &mut self
        {
            secret.get_or_insert_with(|| key.to_owned());
            f.get_or_insert_with(|| folder.to_owned());
        }
        self
    }

    /// The secret the error is about, when it is about one.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Self::NotFound { secret, .. } | Self::PermissionDenied { secret, .. } => {
                secret.as_deref()
            }
            Self::VersionConflict { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The folder the error is about, when it is about one.
    pub fn folder(&self) -> Option<&str> {
        match self {
            Self::NotFound { folder, .. } | Self::PermissionDenied { folder, .. } => {
                folder.as_deref()
            }
            Self::VersionConflict { folder, .. } => Some(folder),
            _ => None,
        }
    }

    /// A short, stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Auth { .. } => "auth",
            Self::RateLimited { .. } => "rate_limited",
            Self::PendingApproval { .. } => "pending_approval",
            Self::VersionConflict { .. } => "version_conflict",
            Self::Unavailable { .. } => "unavailable",
            Self::Redirect { .. } => "redirect",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Api { .. } => "api",
            Self::Decode(_) => "decode",
            Self::Config(_) => "config",
            Self::Credential(_) => "credential",
            Self::Snapshot(_) => "snapshot",
            Self::TooStale { .. } => "too_stale",
            Self::Redis(_) => "redis",
        }
    }

    /// True when Infisical could not be reached at all: a network-level failure or an open
    /// circuit. This is when a last-good copy may be served instead.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unavailable { status: None, .. } | Self::CircuitOpen { .. })
    }
}

/// What an error response means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// 401, or 403 `TokenError`: log in again and retry once.
    ReAuth,
    /// 404 from the framework: this server has no such route (a 2024 server and v4).
    RouteNotFound,
    NotFound,
    PermissionDenied,
    InvalidInput,
    RateLimited,
    /// 502, 503, 504: worth retrying.
    Unavailable,
    /// Any other 5xx: reported, not retried.
    ServerError,
    Other,
}

/// Classifies an error status and its (leniently decoded) body.
pub(crate) fn classify(status: u16, body: &ErrorBody) -> ErrorClass {
    let error = body.error.as_deref().unwrap_or("");
    match status {
        401 if error == "ValidationFailure" => ErrorClass::InvalidInput,
        401 => ErrorClass::ReAuth,
        403 if error == "TokenError" => ErrorClass::ReAuth,
        403 => ErrorClass::PermissionDenied,
        404 if is_route_not_found(error, &body.message_text()) => ErrorClass::RouteNotFound,
        404 => ErrorClass::NotFound,
        400 | 413 | 422 => ErrorClass::InvalidInput,
        429 => ErrorClass::RateLimited,
        502..=504 => ErrorClass::Unavailable,
        500..=599 => ErrorClass::ServerError,
        _ => ErrorClass::Other,
    }
}

/// Fastify's own 404 says `error: "Not Found"` and `message: "Route GET:/api/v4/... not found"`;
/// a missing secret says `error: "NotFound"`.
fn is_route_not_found(error: &str, message: &str) -> bool {
    error == "Not Found" || (message.starts_with("Route ") && message.ends_with("not found"))
}

/// True when the response proves the request was rejected before any handler ran, so even a
/// non-idempotent request may be sent again: the rate limiter's 429, or the 503 a server gives
/// to every request while its migrations run.
pub(crate) fn proves_not_processed(status: u16, body: &ErrorBody) -> bool {
    match status {
        429 => true,
        503 => {
            body.status.as_deref() == Some("unavailable")
                || body.message_text().to_ascii_lowercase().contains("starting up")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ErrorBody {
        ErrorBody::decode(json.as_bytes())
    }

    #[test]
    fn classifies_token_and_permission_errors_by_the_error_field() {
        let cases = [
            (401, r#"{"message":"Token missing","error":"UnauthorizedError"}"#, ErrorClass::ReAuth),
            (401, r#"{"message":"No identity access token found"}"#, ErrorClass::ReAuth),
            (
                403,
                r#"{"error":"TokenError","message":"Your token has expired."}"#,
                ErrorClass::ReAuth,
            ),
            (
                403,
                r#"{"error":"PermissionDenied","message":"You are not allowed to read"}"#,
                ErrorClass::PermissionDenied,
            ),
            (403, r#"{"error":"ForbiddenError","message":"x"}"#, ErrorClass::PermissionDenied),
            (
                404,
                r#"{"message":"Route GET:/api/v4/secrets?x=1 not found","error":"Not Found","statusCode":404}"#,
                ErrorClass::RouteNotFound,
            ),
            (
                404,
                r#"{"message":"Secret with name 'X' not found","error":"NotFound"}"#,
                ErrorClass::NotFound,
            ),
            (404, r#"{"message":"Folder missing","error":"CreateSecret"}"#, ErrorClass::NotFound),
            (
                401,
                r#"{"error":"ValidationFailure","message":[{"message":"bad"}]}"#,
                ErrorClass::InvalidInput,
            ),
            (422, r#"{"error":"ValidationFailure","message":[]}"#, ErrorClass::InvalidInput),
            (
                400,
                r#"{"error":"BadRequest","message":"Secret already exists"}"#,
                ErrorClass::InvalidInput,
            ),
            (429, r#"{"error":"RateLimitExceeded","message":"x"}"#, ErrorClass::RateLimited),
            (503, "not json at all", ErrorClass::Unavailable),
            (502, "", ErrorClass::Unavailable),
            (504, r#"{"error":"GatewayTimeoutError"}"#, ErrorClass::Unavailable),
            (500, r#"{"message":"Something went wrong"}"#, ErrorClass::ServerError),
            (410, r#"{"error":"Gone"}"#, ErrorClass::Other),
        ];
        for (status, json, want) in cases {
            assert_eq!(classify(status, &body(json)), want, "{status} {json}");
        }
    }

    #[test]
    fn only_rejections_before_any_handler_allow_repeating_a_create() {
        assert!(proves_not_processed(429, &body(r#"{"error":"RateLimitExceeded"}"#)));
        assert!(proves_not_processed(
            503,
            &body(
                r#"{"status":"unavailable","message":"Server is starting up, migrations in progress..."}"#
            )
        ));
        assert!(!proves_not_processed(503, &body("<html>bad gateway</html>")));
        assert!(!proves_not_processed(502, &body("")));
        assert!(!proves_not_processed(500, &body(r#"{"message":"Something went wrong"}"#)));
    }

    #[test]
    fn every_variant_has_its_own_kind_and_settings_and_reference_errors_convert() {
        let d = Duration::from_secs(1);
        let s = || "x".to_owned();
        let cases = [
            (ClientError::not_found("x"), "not_found"),
            (ClientError::permission_denied("x"), "permission_denied"),
            (ClientError::InvalidInput { message: s() }, "invalid_input"),
            (ClientError::Auth { message: s() }, "auth"),
            (ClientError::RateLimited { retry_after: None }, "rate_limited"),
            (
                ClientError::VersionConflict { key: s(), folder: s(), expected: 1, found: 2 },
                "version_conflict",
            ),
            (ClientError::PendingApproval { approval_id: None }, "pending_approval"),
            (ClientError::Unavailable { status: None, reason: s() }, "unavailable"),
            (ClientError::Redirect { from: s(), to: s() }, "redirect"),
            (ClientError::CircuitOpen { retry_in: d }, "circuit_open"),
            (ClientError::Api { status: 418, error: s(), message: s() }, "api"),
            (ClientError::Decode(s()), "decode"),
            (ClientError::Config(s()), "config"),
            (ClientError::Credential(s()), "credential"),
            (ClientError::Snapshot(s()), "snapshot"),
            (ClientError::TooStale { age: d, max_stale: d }, "too_stale"),
            (ClientError::Redis(s()), "redis"),
        ];
        let mut kinds: Vec<&str> = cases.iter().map(|(e, _)| e.kind()).collect();
        for (err, want) in &cases {
            assert_eq!(err.kind(), *want, "{err:?}");
        }
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), cases.len(), "kinds are distinct");

        let reference: ClientError =
            ikit_common::SecretRef::parse("p", "dev", "no-slash").unwrap_err().into();
        assert_eq!(reference.kind(), "invalid_input");
        assert!(reference.to_string().contains("no-slash"), "{reference}");
        let settings: ClientError = ikit_common::Settings::load(
            None,
            &[("IKIT_CACHE_TTL".to_owned(), "soon".to_owned())].into_iter().collect(),
        )
        .unwrap_err()
        .into();
        assert_eq!(settings.kind(), "config");
        assert!(settings.to_string().contains("IKIT_CACHE_TTL"), "{settings}");
        // Where the request was about one secret, the error says which and where.
        let about = ClientError::not_found("gone").about("/app", "DB_URL");
        assert_eq!((about.secret(), about.folder()), (Some("DB_URL"), Some("/app")));
    }

    #[test]
    fn unreachable_means_network_level_or_open_circuit() {
        assert!(ClientError::Unavailable { status: None, reason: "x".into() }.is_unreachable());
        assert!(ClientError::CircuitOpen { retry_in: Duration::ZERO }.is_unreachable());
        assert!(
            !ClientError::Unavailable { status: Some(503), reason: "x".into() }.is_unreachable()
        );
        assert!(!ClientError::not_found("x").is_unreachable());
    }
}
