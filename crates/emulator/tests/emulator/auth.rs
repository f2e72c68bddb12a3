//! Spec 1.2 to 1.6: logins, renew/revoke rules, per-request checks, service tokens, token auth.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("jwt payload");
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

#[tokio::test]
async fn universal_login_returns_the_four_fields_and_a_real_jwt() {
    let h = start().await;
    let a = h.login_as(&format!("  {CLIENT_ID} "), CLIENT_SECRET).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let keys: Vec<&str> = a.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["accessToken", "expiresIn", "accessTokenMaxTTL", "tokenType"]);
    assert_eq!(a.body["expiresIn"], 3600);
    assert_eq!(a.body["accessTokenMaxTTL"], 86400);
    assert_eq!(a.body["tokenType"], "Bearer");
    let c = claims(a.body["accessToken"].as_str().unwrap());
    assert_eq!(c["authTokenType"], "identityAccessToken");
    assert_eq!(c["iat"], START_MS / 1000);
    assert_eq!(c["exp"], START_MS / 1000 + 3600);
    assert!(c["identityAccessTokenId"].is_string() && c["identityId"].is_string());
    let recorded = h.emu.login_requests("universal-auth");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["clientId"], format!("  {CLIENT_ID} "));
}

#[tokio::test]
async fn bad_credentials_then_lockout() {
    let h = start().await;
    let unknown = h.login_as("nobody", "x").await;
    assert_error(&unknown, 401, "UnauthorizedError", "Invalid credentials");
    for _ in 0..3 {
        assert_error(
            &h.login_as(CLIENT_ID, "wrong").await,
            401,
            "UnauthorizedError",
            "Invalid credentials",
        );
    }
    let locked = h.login_as(CLIENT_ID, CLIENT_SECRET).await;
    assert_error(
        &locked,
        401,
        "UnauthorizedError",
        "This identity auth method is temporarily locked, please try again later",
    );
    h.emu.clock().advance(Duration::from_secs(301));
    assert_eq!(h.login_as(CLIENT_ID, CLIENT_SECRET).await.status, 200);
}

#[tokio::test]
async fn expired_jwt_is_403_token_error_after_clock_advance() {
    let h = start().await;
    let token = h.token().await;
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_eq!(h.get(&path, &token).await.status, 200);
    h.emu.clock().advance(Duration::from_secs(3600));
    let a = h.get(&path, &token).await;
    assert_error(&a, 403, "TokenError", "Your token has expired. Please re-authenticate.");
    let renew = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": token})).await;
    assert_error(&renew, 403, "TokenError", "Your token has expired. Please re-authenticate.");
}

#[tokio::test]
async fn token_problems_are_reported_like_the_server() {
    let h = start().await;
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    let none = h.send(Method::GET, &path, None, None).await;
    assert_error(&none, 401, "UnauthorizedError", "Token missing");
    let malformed = h.get(&path, "garbage").await;
    assert_eq!(malformed.status, 403);
    assert_eq!(malformed.body["error"], "TokenError");
    let api_key = h.http.get(h.url(&path)).header("x-api-key", "k").send().await.unwrap();
    assert_eq!(api_key.status(), 400);
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"identityId": "x", "clientSecretId": "", "identityAccessTokenId": "y", "authTokenType": "identityAccessToken", "iat": 1}),
        &EncodingKey::from_secret(b"not-the-emulator-secret"),
    )
    .unwrap();
    assert_eq!(h.get(&path, &forged).await.body["error"], "TokenError");
}

#[tokio::test]
async fn renew_keeps_the_token_id_and_moves_exp() {
    let h = start().await;
    let token = h.token().await;
    h.emu.clock().advance(Duration::from_secs(1000));
    let a = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": token})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["expiresIn"], 3600);
    let renewed = a.body["accessToken"].as_str().unwrap();
    assert_eq!(claims(renewed)["identityAccessTokenId"], claims(&token)["identityAccessTokenId"]);
    assert_eq!(claims(renewed)["exp"], START_MS / 1000 + 1000 + 3600);
    // Renewal counts TTL from the renewal: at +4000 s the old JWT has expired but the new one works.
    h.emu.clock().advance(Duration::from_secs(3000));
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_eq!(h.get(&path, renewed).await.status, 200);
    assert_eq!(h.get(&path, &token).await.status, 403);
}

#[tokio::test]
async fn renew_past_max_ttl_deletes_the_token() {
    let h = start().await;
    let a = h.login_as(SHORT_ID, "short-secret").await;
    let token = a.body["accessToken"].as_str().unwrap().to_owned();
    // TTL 100 s, max TTL 250 s: at +60 s a renewal is fine (60 + 100 <= 250).
    h.emu.clock().advance(Duration::from_secs(60));
    let first = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": token})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let renewed = first.body["accessToken"].as_str().unwrap().to_owned();
    // At +151 s, 151 + 100 > 250: the renewal destroys the token although it had time left.
    h.emu.clock().advance(Duration::from_secs(91));
    let second = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": renewed})).await;
    assert_error(
        &second,
        401,
        "UnauthorizedError",
        "Failed to renew MI access token past its Max TTL expiration",
    );
    let again = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": renewed})).await;
    assert_error(&again, 401, "UnauthorizedError", "No identity access token found");
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_error(
        &h.get(&path, &renewed).await,
        401,
        "UnauthorizedError",
        "No identity access token found",
    );
}

#[tokio::test]
async fn jwt_exp_is_checked_before_the_db_ttl() {
    // JWT exp and DB TTL end together; the JWT check runs first, so the answer is 403.
    let h = start().await;
    let a = h.login_as(SHORT_ID, "short-secret").await;
    let token = a.body["accessToken"].as_str().unwrap().to_owned();
    h.emu.clock().advance(Duration::from_secs(99));
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_eq!(h.get(&path, &token).await.status, 200);
    h.emu.clock().advance(Duration::from_millis(1500));
    let expired = h.get(&path, &token).await;
    assert_eq!(expired.status, 403, "JWT exp comes first: {}", expired.body);
}

#[tokio::test]
async fn revoke_kills_every_jwt_of_the_row() {
    let h = start().await;
    let token = h.token().await;
    let renewed = h
        .post("/api/v1/auth/token/renew", None, json!({"accessToken": token}))
        .await
        .body["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = h.post("/api/v1/auth/token/revoke", None, json!({"accessToken": token})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, json!({"message": "Successfully revoked access token"}));
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_error(
        &h.get(&path, &renewed).await,
        401,
        "UnauthorizedError",
        "No identity access token found",
    );
}

fn workload_jwt(aud: &str, exp_offset: i64) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "system:serviceaccount:ns:app", "aud": aud, "exp": START_MS / 1000 + exp_offset}),
        &EncodingKey::from_secret(HMAC_KEY.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_style_logins_verify_the_presented_token() {
    let h = start().await;
    for method in ["kubernetes-auth", "oidc-auth", "jwt-auth"] {
        let path = format!("/api/v1/auth/{method}/login");
        let ok = h
            .post(
                &path,
                None,
                json!({"identityId": JWT_IDENTITY, "jwt": workload_jwt("infisical", 60)}),
            )
            .await;
        assert_eq!(ok.status, 200, "{method}: {}", ok.body);
        let bad_aud = h
            .post(
                &path,
                None,
                json!({"identityId": JWT_IDENTITY, "jwt": workload_jwt("other", 60)}),
            )
            .await;
        assert_eq!(bad_aud.status, 401, "{method}");
        let expired = h
            .post(
                &path,
                None,
                json!({"identityId": JWT_IDENTITY, "jwt": workload_jwt("infisical", -1)}),
            )
            .await;
        assert_eq!(expired.status, 401, "{method}");
        assert_eq!(h.emu.login_requests(method).len(), 3);
    }
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "system:serviceaccount:ns:app", "aud": "infisical"}),
        &EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    let a = h
        .post(
            "/api/v1/auth/jwt-auth/login",
            None,
            json!({"identityId": JWT_IDENTITY, "jwt": forged}),
        )
        .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn cloud_logins_check_shape_and_record_the_body() {
    let h = start().await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = json!({
        "identityId": JWT_IDENTITY,
        "iamHttpRequestMethod": "POST",
        "iamRequestBody": b64.encode("Action=GetCallerIdentity&Version=2011-06-15"),
        "iamRequestHeaders": b64.encode(r#"{"Authorization":"AWS4-HMAC-SHA256 Credential=x","X-Amz-Date":"20260101T000000Z","Host":"sts.us-east-1.amazonaws.com"}"#),
    });
    let ok = h.post("/api/v1/auth/aws-auth/login", None, body.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(h.emu.login_requests("aws")[0], body);
    let mut bad = body.clone();
    bad["iamRequestBody"] = json!(b64.encode("Action=AssumeRole"));
    assert_eq!(h.post("/api/v1/auth/aws-auth/login", None, bad).await.status, 401);
    let missing =
        h.post("/api/v1/auth/aws-auth/login", None, json!({"identityId": JWT_IDENTITY})).await;
    assert_eq!(missing.status, 422);
    assert!(missing.body["message"].is_array());
    for method in ["azure-auth", "gcp-auth"] {
        let path = format!("/api/v1/auth/{method}/login");
        let ok = h.post(&path, None, json!({"identityId": JWT_IDENTITY, "jwt": "a.b.c"})).await;
        assert_eq!(ok.status, 200, "{method}");
        let bad =
            h.post(&path, None, json!({"identityId": JWT_IDENTITY, "jwt": "not-a-jwt"})).await;
        assert_error(&bad, 401, "UnauthorizedError", "Access denied: malformed jwt");
    }
    // An identity without the method configured is refused.
    let unknown = h
        .post("/api/v1/auth/gcp-auth/login", None, json!({"identityId": "nope", "jwt": "a.b.c"}))
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn token_auth_issues_tokens_for_configured_identities() {
    let h = start().await;
    let token = h.token().await;
    let ci_id = claims(&token)["identityId"].as_str().unwrap().to_owned();
    let a = h
        .post(
            &format!("/api/v1/auth/token-auth/identities/{ci_id}/tokens"),
            Some(&token),
            json!({"name": "t"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["tokenType"], "Bearer");
    let other = h
        .post(
            &format!("/api/v1/auth/token-auth/identities/{JWT_IDENTITY}/tokens"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(other.status, 404);
}

#[tokio::test]
async fn service_tokens_are_validated_and_scoped() {
    let h = start().await;
    let details = h.get("/api/v2/service-token", "st.st1.st-secret.e2ee-key-ignored").await;
    assert_eq!(details.status, 200, "{}", details.body);
    assert_eq!(details.body["workspace"], PROJECT);
    assert_eq!(details.body["scopes"], json!([{"environment": "dev", "secretPath": "/app"}]));
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_error(
        &h.get(&path, "st.nope.x").await,
        404,
        "NotFound",
        "Service token with ID 'nope' not found",
    );
    assert_error(
        &h.get(&path, "st.st1.wrong").await,
        401,
        "UnauthorizedError",
        "Invalid service token",
    );
    assert_error(
        &h.get(&path, "st.st-old.x").await,
        403,
        "ForbiddenError",
        "Service token has expired",
    );
    // The expired token was deleted.
    assert_eq!(h.get(&path, "st.st-old.x").await.status, 404);
    // Single literal scope: environment and path come from the token, not the query.
    let overridden = h
        .get(
            &format!("/api/v4/secrets?projectId={PROJECT}&environment=prod&secretPath=/"),
            "st.st1.st-secret",
        )
        .await;
    assert_eq!(overridden.status, 200, "{}", overridden.body);
    let keys: Vec<&str> = overridden.body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["secretKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["NAME"]);
    // Several scopes: no override, and the request must fit one of them.
    let prod = h
        .get(&format!("/api/v4/secrets?projectId={PROJECT}&environment=prod"), "st.st2.st2-secret")
        .await;
    assert_eq!(prod.body["secrets"][0]["secretKey"], "PORT");
    let staging = h
        .get(
            &format!("/api/v4/secrets?projectId={PROJECT}&environment=staging"),
            "st.st2.st2-secret",
        )
        .await;
    assert_eq!(staging.status, 403);
    assert_eq!(staging.body["error"], "PermissionDenied");
}

#[tokio::test]
async fn identities_see_only_their_projects() {
    let h = start().await;
    let token = h.token().await;
    let a =
        h.get(&format!("/api/v4/secrets?projectId={OTHER_PROJECT}&environment=dev"), &token).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["error"], "PermissionDenied");
    let ws = h.get("/api/v1/workspace", &token).await;
    let ids: Vec<&str> = ws.body["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [PROJECT]);
    let envs: Vec<&str> = ws.body["workspaces"][0]["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["dev", "staging", "prod"]);
    assert_eq!(ws.body["workspaces"][0]["environments"][2]["name"], "Production");
    let by_slug = h.get("/api/v1/projects/slug/demo", &token).await;
    assert_eq!(by_slug.body["project"]["id"], PROJECT);
    assert_eq!(
        h.get(&format!("/api/v1/projects/{PROJECT}"), &token).await.body["project"]["slug"],
        "demo"
    );
    assert_eq!(h.get("/api/v1/projects", &token).await.body["projects"][0]["_id"], PROJECT);
}

#[tokio::test]
async fn use_limits_end_a_token() {
    let mut seed = seed();
    seed["identities"][0]["accessTokenNumUsesLimit"] = json!(2);
    let h = start_with(config(&seed)).await;
    let token = h.token().await;
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    assert_eq!(h.get(&path, &token).await.status, 200);
    assert_eq!(h.get(&path, &token).await.status, 200);
    let third = h.get(&path, &token).await;
    assert_error(
        &third,
        401,
        "UnauthorizedError",
        "Unable to renew because access token number of uses limit reached",
    );
    // The row was deleted.
    let renew = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": token})).await;
    assert_error(&renew, 401, "UnauthorizedError", "No identity access token found");
}

#[tokio::test]
async fn periodic_tokens_report_the_period() {
    let mut seed = seed();
    seed["identities"][0]["accessTokenPeriod"] = json!(600);
    let h = start_with(config(&seed)).await;
    let a = h.login_as(CLIENT_ID, CLIENT_SECRET).await;
    assert_eq!(a.body["expiresIn"], 600);
    assert_eq!(a.body["accessTokenMaxTTL"], 1_000_000_000u64);
    assert_eq!(claims(a.body["accessToken"].as_str().unwrap())["exp"], START_MS / 1000 + 600);
}

#[tokio::test]
async fn routes_refuse_token_modes_they_do_not_accept() {
    let h = start().await;
    let token = h.token().await;
    let st = "st.st2.st2-secret";
    let listed =
        h.get(&format!("/api/v4/secrets?projectId={PROJECT}&environment=dev"), &token).await;
    let id = listed.body["secrets"][0]["id"].as_str().unwrap().to_owned();
    let by_id = h.get(&format!("/api/v4/secrets/id/{id}"), st).await;
    assert_eq!(by_id.status, 403);
    assert_eq!(by_id.body["error"], format!("Forbidden access to /api/v4/secrets/id/{id}"));
    assert_eq!(h.get(&format!("/api/v4/secrets/id/{id}"), &token).await.body["secret"]["id"], id);
    assert_eq!(h.get("/api/v2/service-token", &token).await.status, 403);
    // Sub-organisation selection is refused for service tokens.
    let org = h
        .http
        .get(h.url(&format!("/api/v4/secrets?projectId={PROJECT}&environment=dev")))
        .bearer_auth(st)
        .header("x-infisical-org", "sub-org")
        .send()
        .await
        .unwrap();
    assert_eq!(org.status(), 400);
    let body: Value = org.json().await.unwrap();
    assert_eq!(body["message"], "Service token doesn't support sub organization selector");
}

#[tokio::test]
async fn jwt_logins_verify_rsa_and_ec_signatures_with_configured_public_keys() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let read = |name: &str| std::fs::read_to_string(format!("{data}{name}")).unwrap();
    let mut seed = seed();
    seed["identities"][2]["jwtAuth"] = json!({
        "publicKeysPem": [read("jwt-rs256-public.pem"), read("jwt-es256-public.pem")],
        "boundSubject": "system:serviceaccount:ns:app"
    });
    let h = start_with(config(&seed)).await;
    let claims = json!({"sub": "system:serviceaccount:ns:app", "exp": START_MS / 1000 + 60});
    let rs = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(read("jwt-rs256-private.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    let es = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(read("jwt-es256-private.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    for jwt in [&rs, &es] {
        let a = h
            .post(
                "/api/v1/auth/kubernetes-auth/login",
                None,
                json!({"identityId": JWT_IDENTITY, "jwt": jwt}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // HS256 is refused when no hmac secret is configured, and a tampered payload fails.
    let hs = workload_jwt("infisical", 60);
    assert_eq!(
        h.post("/api/v1/auth/jwt-auth/login", None, json!({"identityId": JWT_IDENTITY, "jwt": hs}))
            .await
            .status,
        401
    );
    let mut parts: Vec<String> = es.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"sub":"system:serviceaccount:ns:app","exp":9999999999}"#);
    let tampered = parts.join(".");
    let t = h
        .post(
            "/api/v1/auth/oidc-auth/login",
            None,
            json!({"identityId": JWT_IDENTITY, "jwt": tampered}),
        )
        .await;
    assert_eq!(t.status, 401);
    assert_eq!(t.body["error"], "UnauthorizedError");
}

#[tokio::test]
async fn client_secret_ttl_and_use_limits_revoke_the_secret() {
    let mut seed = seed();
    seed["identities"][0]["clientSecretNumUsesLimit"] = json!(2);
    seed["identities"][1]["clientSecretTTL"] = json!(60);
    let h = start_with(config(&seed)).await;
    assert_eq!(h.login_as(CLIENT_ID, CLIENT_SECRET).await.status, 200);
    assert_eq!(h.login_as(CLIENT_ID, CLIENT_SECRET).await.status, 200);
    let used_up = h.login_as(CLIENT_ID, CLIENT_SECRET).await;
    assert_error(
        &used_up,
        401,
        "UnauthorizedError",
        "Access denied due to client secret usage limit reached",
    );
    assert_error(
        &h.login_as(CLIENT_ID, CLIENT_SECRET).await,
        401,
        "UnauthorizedError",
        "Invalid credentials",
    );
    assert_eq!(h.login_as(SHORT_ID, "short-secret").await.status, 200);
    h.emu.clock().advance(Duration::from_secs(61));
    let expired = h.login_as(SHORT_ID, "short-secret").await;
    assert_error(&expired, 401, "UnauthorizedError", "Access denied due to expired client secret");
}
