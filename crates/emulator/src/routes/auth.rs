//! Authentication (spec 1.1 to 1.6): the `Caller` extractor, the login endpoints, renew, revoke,
//! token auth and service-token details.

use crate::LockExt;
use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::parse_body;
use super::schema::{Ty, opt, req};

use crate::ApiVersion;
use crate::error::ApiError;
use crate::logic::tokens::{self, TokenRow};
use crate::seed::{SeedJwtAuth, SeedScope};
use crate::server::App;
use crate::store::{Actor, Identity, Store, new_id};

pub(crate) const EXPIRED: &str = "Your token has expired. Please re-authenticate.";
pub(crate) const MALFORMED: &str = "The provided access token is malformed. Please use a valid token or generate a new one and try again.";
const BAD_ALGORITHM: &str = "The access token is signed with an invalid algorithm. Please use a valid token or generate a new one and try again.";
const BAD_SIGNATURE: &str = "The access token signature is invalid. Please use a valid token or generate a new one and try again.";
const LOCKED: &str = "This identity auth method is temporarily locked, please try again later";

/// The claims of an identity access token (spec 1.1).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    identity_id: String,
    client_secret_id: String,
    identity_access_token_id: String,
    auth_token_type: String,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

/// Who is calling.
#[derive(Clone)]
pub(crate) enum Caller {
    Identity {
        identity_id: String,
        name: String,
        projects: Vec<String>,
        /// Lists and describes secrets without reading their values.
        describe_only: bool,
    },
    /// A seeded user token (`users` in the seed): a member of its projects, like an identity,
    /// and the only caller the 2024 server lets manage webhooks.
    User {
        user_id: String,
        email: String,
        projects: Vec<String>,
    },
    ServiceToken {
        id: String,
        name: String,
        project_id: String,
        scopes: Vec<SeedScope>,
    },
}

impl Caller {
    pub(crate) fn actor(&self) -> Actor {
        match self {
            Caller::Identity { identity_id, name, .. } => {
                Actor { id: identity_id.clone(), name: name.clone(), kind: "identity".into() }
            }
            Caller::ServiceToken { id, name, .. } => {
                Actor { id: id.clone(), name: name.clone(), kind: "service".into() }
            }
            Caller::User { user_id, email, .. } => {
                Actor { id: user_id.clone(), name: email.clone(), kind: "user".into() }
            }
        }
    }

    /// The projects of a member caller (identity or user); `None` for a service token.
    pub(crate) fn member_projects(&self) -> Option<&[String]> {
        match self {
            Caller::Identity { projects, .. } | Caller::User { projects, .. } => Some(projects),
            Caller::ServiceToken { .. } => None,
        }
    }

    pub(crate) fn is_service_token(&self) -> bool {
        matches!(self, Caller::ServiceToken { .. })
    }

    /// May read secret values (not a describe-only identity).
    pub(crate) fn reads_values(&self) -> bool {
        !matches!(self, Caller::Identity { describe_only: true, .. })
    }
}

/// The 403 a valid token gets on a route that does not accept its mode.
pub(crate) fn wrong_mode(url: &str) -> ApiError {
    let mut e = ApiError::forbidden("You are not allowed to access this resource");
    e.error = format!("Forbidden access to {url}");
    e
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key("x-api-key") {
            return Err(ApiError::bad_request(
                "API key authentication is not supported anymore. Please switch to identity authentication.",
            ));
        }
        let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized("Token missing"));
        };
        let header = header.to_str().map_err(|_| ApiError::token(MALFORMED))?;
        // The server drops the first 7 characters without looking at them.
        let token = header.get(7..).unwrap_or("");
        let now = app.clock.now_ms();
        let mut store = app.store.locked();
        let org = parts.headers.get("x-infisical-org").map(|v| v.to_str().unwrap_or(""));
        if let Some(rest) = token.strip_prefix("st.") {
            if org.is_some() {
                return Err(ApiError::bad_request(
                    "Service token doesn't support sub organization selector",
                ));
            }
            return service_token(&mut store, rest, now, app.api_version);
        }
        if let Some(org) = org
            && !crate::logic::values::valid_slug(org)
        {
            return Err(ApiError::bad_request("Invalid sub organization slug"));
        }
        if let Some(user) = store
            .users
            .iter()
            .find(|u| bool::from(u.token.as_bytes().ct_eq(token.as_bytes())) && !token.is_empty())
        {
            return Ok(Caller::User {
                user_id: user.id.clone(),
                email: user.email.clone(),
                projects: user.projects.clone(),
            });
        }
        let claims = decode_access_token(&store.jwt_secret, token, now, app.api_version)?;
        if claims.auth_token_type != "identityAccessToken" {
            return Err(ApiError::unauthorized("Token type not supported by the emulator"));
        }
        if let Err(refusal) =
            tokens::check_request(store.token(&claims.identity_access_token_id), now)
        {
            if refusal.delete {
                store.delete_token(&claims.identity_access_token_id);
            }
            return Err(ApiError::unauthorized(refusal.message));
        }
        let Some(caller) = store.identity(&claims.identity_id).map(|i| Caller::Identity {
            identity_id: i.id.clone(),
            name: i.name.clone(),
            projects: i.projects.clone(),
            describe_only: i.describe_only,
        }) else {
            return Err(ApiError::bad_request("Identity does not belong to this organization"));
        };
        if let Some(row) = store.token_mut(&claims.identity_access_token_id) {
            row.num_uses += 1;
        }
        Ok(caller)
    }
}

fn service_token(
    store: &mut Store,
    rest: &str,
    now: i64,
    version: ApiVersion,
) -> Result<Caller, ApiError> {
    let mut parts = rest.splitn(3, '.');
    let id = parts.next().unwrap_or("");
    let secret = parts.next().unwrap_or("");
    let legacy = version == ApiVersion::V2024;
    let Some(token) = store.service_tokens.iter().find(|t| t.id == id).cloned() else {
        // Both generations answer an unknown id 404 (observed on the 2024-10 server too).
        return Err(ApiError::not_found(format!("Service token with ID '{id}' not found")));
    };
    if token.expires_at_ms.is_some_and(|at| at <= now) {
        store.service_tokens.retain(|t| t.id != id);
        let message = "Service token has expired";
        return Err(if legacy {
            ApiError::unauthorized(message)
        } else {
            ApiError::forbidden(message)
        });
    }
    // Only the part of the secret before a further dot counts (the e2ee key is ignored).
    let secret = secret.split('.').next().unwrap_or("");
    if !bool::from(secret.as_bytes().ct_eq(token.secret.as_bytes())) {
        return Err(ApiError::unauthorized("Invalid service token"));
    }
    Ok(Caller::ServiceToken {
        id: token.id,
        name: token.name,
        project_id: token.project_id,
        scopes: token.scopes,
    })
}

/// Verifies an access token against the emulator clock. The 2024 server passed
/// `jsonwebtoken`'s own wording through (`jwt must be provided`, `invalid signature`, ...);
/// current servers explain (spec 1.5). Both answer 403 `TokenError`.
fn decode_access_token(
    secret: &str,
    token: &str,
    now_ms: i64,
    version: ApiVersion,
) -> Result<Claims, ApiError> {
    let legacy = version == ApiVersion::V2024;
    if legacy && token.is_empty() {
        return Err(ApiError::token("jwt must be provided"));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| {
        ApiError::token(match (e.kind(), legacy) {
            (ErrorKind::InvalidAlgorithm, false) => BAD_ALGORITHM,
            (ErrorKind::InvalidSignature, false) => BAD_SIGNATURE,
            (_, false) => MALFORMED,
            (ErrorKind::InvalidAlgorithm, true) => "invalid algorithm",
            (ErrorKind::InvalidSignature, true) => "invalid signature",
            (_, true) => "jwt malformed",
        })
    })?;
    if data.claims.exp.is_some_and(|exp| now_ms / 1000 >= exp) {
        return Err(ApiError::token(if legacy { "jwt expired" } else { EXPIRED }));
    }
    Ok(data.claims)
}

fn encode_access_token(secret: &str, row: &TokenRow, now_ms: i64) -> String {
    let iat = now_ms / 1000;
    let claims = Claims {
        identity_id: row.identity_id.clone(),
        client_secret_id: String::new(),
        identity_access_token_id: row.id.clone(),
        auth_token_type: "identityAccessToken".into(),
        iat,
        exp: tokens::jwt_lifetime_secs(row).map(|s| iat + i64::try_from(s).unwrap_or(i64::MAX / 2)),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("hs256 encoding cannot fail")
}

fn token_answer(jwt: String, row: &TokenRow) -> Response {
    let (expires_in, max_ttl) = tokens::answer_lifetimes(row);
    Json(json!({"accessToken": jwt, "expiresIn": expires_in, "accessTokenMaxTTL": max_ttl, "tokenType": "Bearer"}))
        .into_response()
}

/// Creates a token row for `identity` and answers like every login.
fn issue(store: &mut Store, identity: &Identity, now_ms: i64) -> Response {
    let row = TokenRow {
        id: new_id(),
        identity_id: identity.id.clone(),
        created_at_ms: now_ms,
        last_renewed_at_ms: None,
        ttl_secs: identity.ttl,
        max_ttl_secs: identity.max_ttl,
        period_secs: identity.period,
        num_uses: 0,
        num_uses_limit: identity.num_uses_limit,
        revoked: false,
    };
    let jwt = encode_access_token(&store.jwt_secret, &row, now_ms);
    store.tokens.push(row.clone());
    token_answer(jwt, &row)
}

fn record(app: &App, method: &str, body: &Bytes) {
    app.record_login(method, serde_json::from_slice::<Value>(body).unwrap_or(Value::Null));
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UaLogin {
    client_id: String,
    client_secret: String,
}

pub(crate) async fn universal_login(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    record(&app, "universal-auth", &body);
    let input: UaLogin =
        parse_body(&app, &body, &[req("clientId", Ty::Str), req("clientSecret", Ty::Str)])?;
    let (client_id, client_secret) = (input.client_id.trim(), input.client_secret.trim());
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let Some(identity) = store
        .identities
        .iter_mut()
        .find(|i| i.has_method("universal-auth") && i.client_id.as_deref() == Some(client_id))
    else {
        // The 2024 server looked the client id up first and said so (identity-ua-service.ts
        // of 2024-10); current servers answer every credential failure alike (spec 1.3).
        return Err(if app.api_version == ApiVersion::V2024 {
            ApiError::not_found("No identity with specified client ID was found")
        } else {
            ApiError::unauthorized("Invalid credentials")
        });
    };
    let lockout = identity.lockout.clone();
    if lockout.enabled && identity.locked_until_ms.is_some_and(|until| now < until) {
        return Err(ApiError::unauthorized(LOCKED));
    }
    let expected = identity.client_secret.clone().unwrap_or_default();
    let matches = bool::from(client_secret.as_bytes().ct_eq(expected.as_bytes()));
    if !matches || identity.client_secret.is_none() || identity.secret_state.revoked {
        if lockout.enabled {
            let window = tokens::secs_ms(lockout.counter_reset_seconds);
            identity.failures.retain(|t| now - *t < window);
            identity.failures.push(now);
            if identity.failures.len() >= usize::try_from(lockout.threshold).unwrap_or(usize::MAX) {
                let duration = tokens::secs_ms(lockout.duration_seconds);
                identity.locked_until_ms = Some(now.saturating_add(duration));
                identity.failures.clear();
            }
        }
        return Err(ApiError::unauthorized("Invalid credentials"));
    }
    identity.failures.clear();
    identity.locked_until_ms = None;
    let secret = &mut identity.secret_state;
    if secret.ttl_secs > 0
        && now > secret.created_at_ms.saturating_add(tokens::secs_ms(secret.ttl_secs))
    {
        secret.revoked = true;
        return Err(ApiError::unauthorized("Access denied due to expired client secret"));
    }
    if secret.num_uses_limit > 0 && secret.num_uses >= secret.num_uses_limit {
        secret.revoked = true;
        return Err(ApiError::unauthorized(
            "Access denied due to client secret usage limit reached",
        ));
    }
    secret.num_uses += 1;
    let identity = identity.clone();
    Ok(issue(&mut store, &identity, now))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JwtLogin {
    identity_id: String,
    jwt: String,
}

fn configured_identity(store: &Store, id: &str, method: &str) -> Result<Identity, ApiError> {
    store.identity(id).filter(|i| i.has_method(method)).cloned().ok_or_else(|| {
        ApiError::not_found(format!(
            "{method} method not found for identity with ID '{id}', did you configure it?"
        ))
    })
}

/// The JWT logins. kubernetes-auth, oidc-auth and jwt-auth check the JWT against the
/// identity's keys; azure-auth and gcp-auth accept any well-formed JWT for a configured identity.
pub(crate) async fn jwt_login(
    State(app): State<Arc<App>>,
    method: &'static str,
    body: Bytes,
) -> Result<Response, ApiError> {
    record(&app, method, &body);
    let input: JwtLogin =
        parse_body(&app, &body, &[req("identityId", Ty::Str), req("jwt", Ty::Str)])?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let identity = configured_identity(&store, input.identity_id.trim(), method)?;
    let checked = if matches!(method, "azure-auth" | "gcp-auth") {
        if input.jwt.split('.').count() == 3 { Ok(()) } else { Err("malformed jwt".to_owned()) }
    } else {
        verify_login_jwt(&identity.jwt_auth.clone().unwrap_or_default(), &input.jwt, now)
    };
    checked.map_err(|reason| ApiError::unauthorized(format!("Access denied: {reason}")))?;
    Ok(issue(&mut store, &identity, now))
}

/// Checks a presented JWT: signature against the configured keys, `exp` and `nbf` against the
/// emulator clock, then the bound audience and subject.
fn verify_login_jwt(config: &SeedJwtAuth, jwt: &str, now_ms: i64) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "malformed jwt".to_owned())?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let keys: Vec<DecodingKey> = match header.alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            config.hmac_secret.iter().map(|s| DecodingKey::from_secret(s.as_bytes())).collect()
        }
        Algorithm::ES256 | Algorithm::ES384 => config
            .public_keys_pem
            .iter()
            .filter_map(|p| DecodingKey::from_ec_pem(p.as_bytes()).ok())
            .collect(),
        Algorithm::EdDSA => config
            .public_keys_pem
            .iter()
            .filter_map(|p| DecodingKey::from_ed_pem(p.as_bytes()).ok())
            .collect(),
        _ => config
            .public_keys_pem
            .iter()
            .filter_map(|p| DecodingKey::from_rsa_pem(p.as_bytes()).ok())
            .collect(),
    };
    let claims = keys
        .iter()
        .find_map(|key| jsonwebtoken::decode::<Value>(jwt, key, &validation).ok())
        .ok_or_else(|| "jwt signature could not be verified with the configured keys".to_owned())?
        .claims;
    let now = now_ms / 1000;
    if claims.get("exp").and_then(Value::as_i64).is_some_and(|exp| now >= exp) {
        return Err("jwt expired".into());
    }
    if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| now < nbf) {
        return Err("jwt not active yet".into());
    }
    if let Some(aud) = &config.bound_audience {
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err("jwt audience not allowed".into());
        }
    }
    if let Some(sub) = &config.bound_subject
        && claims.get("sub").and_then(Value::as_str) != Some(sub.as_str())
    {
        return Err("jwt subject not allowed".into());
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AwsLogin {
    identity_id: String,
    #[serde(default = "post")]
    iam_http_request_method: String,
    iam_request_body: String,
    iam_request_headers: String,
}

fn post() -> String {
    "POST".to_owned()
}

/// aws-auth: the body must be what the SDKs build; the SigV4 signature is not sent to AWS.
pub(crate) async fn aws_login(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    record(&app, "aws-auth", &body);
    let input: AwsLogin = parse_body(
        &app,
        &body,
        &[
            req("identityId", Ty::Str),
            opt("iamHttpRequestMethod", Ty::Str),
            req("iamRequestBody", Ty::Str),
            req("iamRequestHeaders", Ty::Str),
        ],
    )?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let identity = configured_identity(&store, input.identity_id.trim(), "aws-auth")?;
    check_aws(&input)
        .map_err(|reason| ApiError::unauthorized(format!("Access denied: {reason}")))?;
    Ok(issue(&mut store, &identity, now))
}

fn check_aws(input: &AwsLogin) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if input.iam_http_request_method != "POST" {
        return Err("iamHttpRequestMethod must be POST".into());
    }
    let body =
        b64.decode(input.iam_request_body.trim()).map_err(|_| "iamRequestBody is not base64")?;
    if body != b"Action=GetCallerIdentity&Version=2011-06-15" {
        return Err("iamRequestBody is not a GetCallerIdentity request".into());
    }
    let headers = b64
        .decode(input.iam_request_headers.trim())
        .map_err(|_| "iamRequestHeaders is not base64")?;
    let headers: serde_json::Map<String, Value> =
        serde_json::from_slice(&headers).map_err(|_| "iamRequestHeaders is not a json object")?;
    for name in ["Authorization", "X-Amz-Date"] {
        if !headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(format!("iamRequestHeaders lacks {name}"));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    access_token: String,
}

pub(crate) async fn renew(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let input: TokenBody = parse_body(&app, &body, &[req("accessToken", Ty::Str)])?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let claims = decode_access_token(&store.jwt_secret, &input.access_token, now, app.api_version)?;
    if claims.auth_token_type != "identityAccessToken" {
        return Err(ApiError::bad_request("Only identity access tokens can be renewed"));
    }
    let id = claims.identity_access_token_id;
    if let Err(refusal) = tokens::check_renew(store.token(&id), now) {
        if refusal.delete {
            store.delete_token(&id);
        }
        return Err(ApiError::unauthorized(refusal.message));
    }
    let row = store.token_mut(&id).expect("checked above");
    row.last_renewed_at_ms = Some(now);
    let row = row.clone();
    let jwt = encode_access_token(&store.jwt_secret, &row, now);
    Ok(token_answer(jwt, &row))
}

pub(crate) async fn revoke(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let input: TokenBody = parse_body(&app, &body, &[req("accessToken", Ty::Str)])?;
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let claims = decode_access_token(&store.jwt_secret, &input.access_token, now, app.api_version)?;
    if claims.auth_token_type != "identityAccessToken" {
        return Err(ApiError::bad_request("Only identity access tokens can be revoked"));
    }
    match store.token_mut(&claims.identity_access_token_id) {
        Some(row) if !row.revoked => row.revoked = true,
        _ => return Err(ApiError::unauthorized(tokens::NOT_FOUND)),
    }
    Ok(Json(json!({"message": "Successfully revoked access token"})).into_response())
}

/// `POST /api/v1/auth/token-auth/identities/:identityId/tokens`.
pub(crate) async fn token_auth(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(identity_id): Path<String>,
) -> Result<Response, ApiError> {
    if caller.is_service_token() {
        return Err(wrong_mode(&format!(
            "/api/v1/auth/token-auth/identities/{identity_id}/tokens"
        )));
    }
    let now = app.clock.now_ms();
    let mut store = app.store.locked();
    let identity = configured_identity(&store, &identity_id, "token-auth")?;
    Ok(issue(&mut store, &identity, now))
}

/// `GET /api/v2/service-token`.
pub(crate) async fn service_token_details(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let Caller::ServiceToken { id, .. } = caller else {
        return Err(wrong_mode("/api/v2/service-token"));
    };
    let store = app.store.locked();
    let token = store
        .service_tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::not_found("Service token not found"))?;
    let created = crate::logic::time::iso_ms(token.created_at_ms);
    Ok(Json(json!({
        "_id": token.id,
        "name": token.name,
        "workspace": token.project_id,
        "expiresAt": token.expires_at_ms.map(crate::logic::time::iso_ms),
        "scopes": token.scopes,
        "encryptedKey": "",
        "iv": "",
        "tag": "",
        "createdAt": created,
        "updatedAt": created,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_round_trip_and_expire_on_the_given_clock() {
        let row = TokenRow {
            id: "tok".into(),
            identity_id: "id".into(),
            created_at_ms: 0,
            last_renewed_at_ms: None,
            ttl_secs: 60,
            max_ttl_secs: 600,
            period_secs: 0,
            num_uses: 0,
            num_uses_limit: 0,
            revoked: false,
        };
        let jwt = encode_access_token("s3cret", &row, 1_000_000);
        let claims = decode_access_token("s3cret", &jwt, 1_059_999, ApiVersion::V2026).unwrap();
        assert_eq!(claims.identity_access_token_id, "tok");
        assert_eq!(claims.exp, Some(1_060));
        assert_eq!(
            decode_access_token("s3cret", &jwt, 1_060_000, ApiVersion::V2026)
                .err()
                .unwrap()
                .message,
            EXPIRED
        );
        assert_eq!(
            decode_access_token("other", &jwt, 0, ApiVersion::V2026).err().unwrap().message,
            BAD_SIGNATURE
        );
        assert_eq!(
            decode_access_token("s3cret", "not.a.jwt", 0, ApiVersion::V2026).err().unwrap().message,
            MALFORMED
        );
    }

    #[test]
    fn aws_bodies_are_checked() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let good = AwsLogin {
            identity_id: "i".into(),
            iam_http_request_method: "POST".into(),
            iam_request_body: b64.encode("Action=GetCallerIdentity&Version=2011-06-15"),
            iam_request_headers: b64.encode(
                r#"{"Authorization":"AWS4-HMAC-SHA256 x","X-Amz-Date":"20260101T000000Z"}"#,
            ),
        };
        assert_eq!(check_aws(&good), Ok(()));
        let bad_body = AwsLogin { iam_request_body: b64.encode("Action=Other"), ..good };
        assert!(check_aws(&bad_body).is_err());
        let no_date = AwsLogin {
            iam_request_body: b64.encode("Action=GetCallerIdentity&Version=2011-06-15"),
            iam_request_headers: b64.encode(r#"{"Authorization":"x"}"#),
            ..bad_body
        };
        assert_eq!(check_aws(&no_date), Err("iamRequestHeaders lacks X-Amz-Date".to_owned()));
    }
}
