//! The health service's HTTP API as the operations commands use it (`IKIT_HEALTH_URL`, admin
//! bearer `IKIT_ADMIN_TOKEN`): health, JWKS, and the two admin actions (rotate, invalidate).
//! [`exit_for_status`] is the pure mapping of `overall_status` to `ikit health`'s exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use ikit_common::SecretValue;
use serde_json::{Value, json};

use crate::CliError;

/// How long an admin call may take (a rotation writes several folders through Infisical).
const TIMEOUT: Duration = Duration::from_secs(150);
/// How long a read (health, JWKS) may take: a health check that hangs is an answer too.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the health service is and, for admin actions, its token.
pub struct HealthApi {
    base: String,
    admin_token: Option<SecretValue>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HealthApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthApi")
            .field("base", &ikit_common::config::redact_url(&self.base))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

fn get<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `ikit health`'s exit code: 0 healthy, 1 degraded, 2 unhealthy (and for anything else).
pub fn exit_for_status(overall: Option<&str>) -> u8 {
    match overall {
        Some("healthy") => 0,
        Some("degraded") => 1,
        _ => 2,
    }
}

impl HealthApi {
    /// From `IKIT_HEALTH_URL` (and `IKIT_ADMIN_TOKEN`); `None` when the URL is not set.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Option<Self>, CliError> {
        let Some(url) = get(env, "IKIT_HEALTH_URL") else { return Ok(None) };
        Self::new(url, get(env, "IKIT_ADMIN_TOKEN").map(SecretValue::new)).map(Some)
    }

    pub fn new(url: &str, admin_token: Option<SecretValue>) -> Result<Self, CliError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            CliError::Usage(format!(
                "IKIT_HEALTH_URL {}: {e}",
                ikit_common::config::redact_url(url)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CliError::Usage(
                "IKIT_HEALTH_URL must start with http:// or https://".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| CliError::Failed(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { base: url.trim_end_matches('/').to_owned(), admin_token, http })
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin_token.is_some()
    }

    pub fn base(&self) -> String {
        ikit_common::config::redact_url(&self.base)
    }

    fn unreachable(&self, what: &str, e: &reqwest::Error) -> CliError {
        let why = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        CliError::Failed(format!("{what}: {} {why}", self.base()))
    }

    async fn answer(
        &self,
        what: &str,
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<(u16, Value), CliError> {
        let response = response.map_err(|e| self.unreachable(what, &e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.unreachable(what, &e))?;
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// `GET /api/v1/infisical/health`: the status code and the body (503 is an answer, not an
    /// error).
    pub async fn health(&self) -> Result<(u16, Value), CliError> {
        let url = format!("{}/api/v1/infisical/health", self.base);
        let (status, body) =
            self.answer("health", self.http.get(url).timeout(READ_TIMEOUT).send().await).await?;
        if body.get("overall_status").is_none() {
            return Err(CliError::Failed(format!(
                "health: {} answered {status} without overall_status",
                self.base()
            )));
        }
        Ok((status, body))
    }

    /// `GET /.well-known/jwks.json`.
    pub async fn jwks(&self) -> Result<Value, CliError> {
        let url = format!("{}/.well-known/jwks.json", self.base);
        let (status, body) =
            self.answer("jwks", self.http.get(url).timeout(READ_TIMEOUT).send().await).await?;
        if status != 200 {
            return Err(CliError::Failed(format!(
                "jwks: {} answered {status}{}",
                self.base(),
                reason(&body)
            )));
        }
        Ok(body)
    }

    fn admin(&self, what: &str) -> Result<&SecretValue, CliError> {
        self.admin_token.as_ref().ok_or_else(|| {
            CliError::Usage(format!(
                "{what}: IKIT_ADMIN_TOKEN is needed for the health service's admin API"
            ))
        })
    }

    async fn admin_post(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, CliError> {
        let token = self.admin(what)?;
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(
                |_| CliError::Usage("IKIT_ADMIN_TOKEN holds characters a header cannot".into()),
            )?;
        auth.set_sensitive(true);
        let (status, body) = self
            .answer(what, request.header(reqwest::header::AUTHORIZATION, auth).send().await)
            .await?;
        if status != 200 {
            return Err(CliError::Failed(format!(
                "{what}: the health service answered {status}{}",
                reason(&body)
            )));
        }
        Ok(body)
    }

    /// `POST /api/v1/infisical/rotate`; `kind` is `jwt`, `aes` or `both`.
    pub async fn rotate(&self, kind: &str, force: bool, reason: &str) -> Result<Value, CliError> {
        let url = format!("{}/api/v1/infisical/rotate", self.base);
        let body = json!({"rotation_type": kind, "force": force, "reason": reason});
        self.admin_post("rotate", self.http.post(url).json(&body)).await
    }

    /// `POST /api/v1/infisical/cache/invalidate?pattern=...`.
    pub async fn invalidate(&self, pattern: &str) -> Result<Value, CliError> {
        let url = format!("{}/api/v1/infisical/cache/invalidate", self.base);
        self.admin_post("cache clear", self.http.post(url).query(&[("pattern", pattern)])).await
    }
}

/// `: <code>: <message>` from the service's error body, when it has one.
fn reason(body: &Value) -> String {
    match (body.get("error").and_then(Value::as_str), body.get("message").and_then(Value::as_str)) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        (None, Some(message)) => format!(": {message}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_status_maps_to_the_documented_exit_codes() {
        assert_eq!(exit_for_status(Some("healthy")), 0);
        assert_eq!(exit_for_status(Some("degraded")), 1);
        assert_eq!(exit_for_status(Some("unhealthy")), 2);
        assert_eq!(exit_for_status(Some("surprising")), 2);
        assert_eq!(exit_for_status(None), 2);
    }

    #[test]
    fn configuration_from_the_env_map() {
        let env: BTreeMap<String, String> = BTreeMap::new();
        assert!(HealthApi::from_env(&env).unwrap().is_none());
        let env: BTreeMap<String, String> = [
            ("IKIT_HEALTH_URL".to_owned(), "http://127.0.0.1:8000/".to_owned()),
            ("IKIT_ADMIN_TOKEN".to_owned(), "a-very-long-admin-token-value".to_owned()),
        ]
        .into();
        let api = HealthApi::from_env(&env).unwrap().unwrap();
        assert!(api.has_admin_token());
        assert_eq!(api.base(), "http://127.0.0.1:8000");
        assert!(!format!("{api:?}").contains("a-very-long-admin-token-value"));
        let env: BTreeMap<String, String> =
            [("IKIT_HEALTH_URL".to_owned(), "ftp://x".to_owned())].into();
        assert!(matches!(HealthApi::from_env(&env), Err(CliError::Usage(_))));
    }

    #[test]
    fn error_bodies_give_their_reason() {
        assert_eq!(
            reason(&json!({"error": "busy", "message": "another rotation is running"})),
            ": busy: another rotation is running"
        );
        assert_eq!(reason(&Value::Null), "");
    }
}
