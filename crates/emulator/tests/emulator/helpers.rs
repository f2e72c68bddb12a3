//! Shared set-up: a seeded emulator on port 0 with a pinned clock, and a small HTTP client.

use std::time::Duration;

use ikit_emulator::{ApiVersion, Emulator, EmulatorClock, EmulatorConfig, RunningEmulator, Seed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub(crate) const PROJECT: &str = "6f1c1f4e-0000-4000-8000-000000000001";
pub(crate) const OTHER_PROJECT: &str = "6f1c1f4e-0000-4000-8000-000000000002";
pub(crate) const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
pub(crate) const CLIENT_ID: &str = "ci-client-id";
pub(crate) const CLIENT_SECRET: &str = "ci-client-secret";
pub(crate) const SHORT_ID: &str = "short-client";
pub(crate) const JWT_IDENTITY: &str = "11111111-2222-4333-8444-555555555555";
pub(crate) const HMAC_KEY: &str = "jwt-hmac-key-for-tests";
/// The seeded user's bearer token (webhook management needs a user on the 2024 server).
pub(crate) const USER_TOKEN: &str = "user-token-for-tests";

pub(crate) fn seed() -> Value {
    json!({
        "projects": [
            {"id": PROJECT, "slug": "demo", "name": "Demo", "environments": ["dev", "staging", "prod"]},
            {"id": OTHER_PROJECT, "slug": "other", "environments": ["dev"]}
        ],
        "identities": [
            {"name": "ci", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
             "accessTokenTTL": 3600, "accessTokenMaxTTL": 86400, "projects": [PROJECT],
             "authMethods": ["token-auth"]},
            {"name": "short", "clientId": SHORT_ID, "clientSecret": "short-secret",
             "accessTokenTTL": 100, "accessTokenMaxTTL": 250, "projects": [PROJECT]},
            {"id": JWT_IDENTITY, "name": "workload", "projects": [PROJECT],
             "authMethods": ["aws-auth", "azure-auth", "gcp-auth"],
             "jwtAuth": {"hmacSecret": HMAC_KEY, "boundAudience": "infisical", "boundSubject": "system:serviceaccount:ns:app"}}
        ],
        "secrets": [
            {"projectId": PROJECT, "environment": "dev", "path": "/", "key": "HOST", "value": "db.local"},
            {"projectId": PROJECT, "environment": "dev", "path": "/", "key": "URL", "value": "postgres://${HOST}:${prod.PORT}/${dev.app.NAME}"},
            {"projectId": PROJECT, "environment": "dev", "path": "/", "key": "LOOP", "value": "${LOOP2}"},
            {"projectId": PROJECT, "environment": "dev", "path": "/", "key": "LOOP2", "value": "${LOOP}"},
            {"projectId": PROJECT, "environment": "dev", "path": "/", "key": "MISSING_REF", "value": "x${NOPE}y"},
            {"projectId": PROJECT, "environment": "dev", "path": "/app", "key": "NAME", "value": "appdb"},
            {"projectId": PROJECT, "environment": "dev", "path": "/app/deep", "key": "DEEP", "value": "d"},
            {"projectId": PROJECT, "environment": "prod", "path": "/", "key": "PORT", "value": "5432"},
            {"projectId": PROJECT, "environment": "staging", "path": "/shared", "key": "SHARED_KEY", "value": "from-shared"},
            {"projectId": PROJECT, "environment": "staging", "path": "/shared", "key": "HOST", "value": "shadowed"},
            {"projectId": PROJECT, "environment": "dev", "path": "/locked", "key": "L", "value": "v"}
        ],
        "imports": [
            {"projectId": PROJECT, "environment": "dev", "path": "/", "importEnvironment": "staging", "importPath": "/shared"}
        ],
        "serviceTokens": [
            {"id": "st1", "secret": "st-secret", "projectId": PROJECT, "scopes": [{"environment": "dev", "secretPath": "/app"}]},
            {"id": "st2", "secret": "st2-secret", "projectId": PROJECT,
             "scopes": [{"environment": "dev", "secretPath": "/**"}, {"environment": "prod", "secretPath": "/**"}]},
            {"id": "st-old", "secret": "x", "projectId": PROJECT, "scopes": [{"environment": "dev", "secretPath": "/"}], "expiresAt": START_MS - 1}
        ],
        "users": [
            {"email": "ada@example.com", "token": USER_TOKEN, "projects": [PROJECT]}
        ],
        "approvalPolicies": [
            {"projectId": PROJECT, "environment": "dev", "secretPath": "/locked"}
        ]
    })
}

pub(crate) struct Harness {
    pub(crate) emu: RunningEmulator,
    pub(crate) http: reqwest::Client,
}

pub(crate) fn config(seed: &Value) -> EmulatorConfig {
    EmulatorConfig::new(Seed::from_json(&seed.to_string()).expect("seed parses"))
        .clock(EmulatorClock::fixed(START_MS))
        .webhook_coalesce(Duration::from_millis(50))
        .rng_seed(42)
}

pub(crate) async fn start() -> Harness {
    start_with(config(&seed())).await
}

pub(crate) async fn start_version(version: ApiVersion) -> Harness {
    start_with(config(&seed()).api_version(version)).await
}

pub(crate) async fn start_with(config: EmulatorConfig) -> Harness {
    let emu = Emulator::start(config).await.expect("emulator starts");
    Harness { emu, http: reqwest::Client::new() }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Harness {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url())
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request completes");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Answer { status, headers, body }
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub(crate) async fn login_as(&self, client_id: &str, secret: &str) -> Answer {
        self.post(
            "/api/v1/auth/universal-auth/login",
            None,
            json!({"clientId": client_id, "clientSecret": secret}),
        )
        .await
    }

    pub(crate) async fn token(&self) -> String {
        let a = self.login_as(CLIENT_ID, CLIENT_SECRET).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["accessToken"].as_str().expect("token").to_owned()
    }

    pub(crate) async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let token = self.emu.admin_token().to_owned();
        self.send(method, path, Some(&token), body).await
    }
}

/// Asserts the error body of spec 4.1.
pub(crate) fn assert_error(a: &Answer, status: u16, error: &str, message: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.body["statusCode"], status, "{}", a.body);
    assert_eq!(a.body["error"], error, "{}", a.body);
    assert_eq!(a.body["message"], message, "{}", a.body);
    let req_id = a.body["reqId"].as_str().unwrap_or("");
    assert!(
        req_id.len() == 18
            && req_id.starts_with("req-")
            && req_id[4..].chars().all(|c| c.is_ascii_alphanumeric()),
        "reqId {req_id:?}"
    );
}
