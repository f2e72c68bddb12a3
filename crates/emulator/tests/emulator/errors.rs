//! Spec 0, 3.3 and 4.1: Fastify's route-not-found, the 2024 generation, error bodies, ETags,
//! trailing slashes, health endpoints, the admin token.

use ikit_emulator::ApiVersion;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn v2024_serves_no_v4_routes_and_answers_like_fastify() {
    let h = start_version(ApiVersion::V2024).await;
    let token = h.token().await;
    let path = format!("/api/v4/secrets?projectId={PROJECT}&environment=dev");
    let a = h.get(&path, &token).await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        json!({"message": format!("Route GET:{path} not found"), "error": "Not Found", "statusCode": 404})
    );
    let keys: Vec<&str> = a.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["message", "error", "statusCode"]);
    assert_eq!(h.get("/api/health", &token).await.status, 404);
    // The v3 raw routes work, and their validation failures are 401 in this generation.
    let v3 =
        h.get(&format!("/api/v3/secrets/raw?workspaceId={PROJECT}&environment=dev"), &token).await;
    assert_eq!(v3.status, 200);
    let bad = h
        .get(
            &format!("/api/v3/secrets/raw?workspaceId={PROJECT}&environment=dev&recursive=yes"),
            &token,
        )
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["error"], "ValidationFailure");
    assert!(bad.body["message"].is_array());
    // 401/403/404 bodies carry no reqId in 2024.
    let missing = h.send(Method::GET, "/api/v3/secrets/raw", None, None).await;
    assert_eq!(
        missing.body,
        json!({"statusCode": 401, "message": "Token missing", "error": "UnauthorizedError"})
    );
    // Older write quirks: a key with '/' is accepted, a duplicate says "exist".
    let body = json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/", "secretValue": "v"});
    let slash = h.post("/api/v3/secrets/raw/a%2Fb", Some(&token), body.clone()).await;
    assert_eq!(slash.status, 200, "{}", slash.body);
    let dup = h.post("/api/v3/secrets/raw/HOST", Some(&token), body.clone()).await;
    assert_eq!(dup.body["message"], "Secret already exist");
    let mut nowhere = body.clone();
    nowhere["secretPath"] = json!("/does-not-exist");
    let n = h.post("/api/v3/secrets/raw/NEW", Some(&token), nowhere).await;
    assert_eq!((n.status.as_u16(), n.body["error"].as_str()), (404, Some("CreateSecret")));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_fastify_404() {
    let h = start().await;
    let a = h.send(Method::GET, "/api/v9/nothing?x=1", None, None).await;
    assert_eq!(
        a.body,
        json!({"message": "Route GET:/api/v9/nothing?x=1 not found", "error": "Not Found", "statusCode": 404})
    );
    let wrong_method = h.send(Method::PUT, "/api/status", None, None).await;
    assert_eq!(wrong_method.status, 404);
    assert_eq!(wrong_method.body["error"], "Not Found");
}

#[tokio::test]
async fn errors_have_the_spec_body_and_a_request_id() {
    let h = start().await;
    let token = h.token().await;
    let a =
        h.get(&format!("/api/v4/secrets/NOPE?projectId={PROJECT}&environment=dev"), &token).await;
    assert_error(&a, 404, "NotFound", "Secret with name 'NOPE' not found");
    let keys: Vec<&str> = a.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["reqId", "statusCode", "message", "error"]);
    let b =
        h.get(&format!("/api/v4/secrets/NOPE?projectId={PROJECT}&environment=dev"), &token).await;
    assert_ne!(a.body["reqId"], b.body["reqId"]);
    let missing = h.get("/api/v4/secrets?environment=dev", &token).await;
    assert_error(&missing, 400, "BadRequest", "Missing project id or environment");
}

#[tokio::test]
async fn list_responses_carry_an_etag_and_honour_if_none_match() {
    let h = start().await;
    let token = h.token().await;
    let url = h.url(&format!("/api/v4/secrets?projectId={PROJECT}&environment=dev"));
    let first = h.http.get(&url).bearer_auth(&token).send().await.unwrap();
    let etag = first.headers().get("etag").expect("etag").to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let again =
        h.http.get(&url).bearer_auth(&token).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let stale = h
        .http
        .get(&url)
        .bearer_auth(&token)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    // A change produces a new tag.
    let body = json!({"projectId": PROJECT, "environment": "dev", "secretValue": "x"});
    assert_eq!(h.post("/api/v4/secrets/NEW_ONE", Some(&token), body).await.status, 200);
    let changed =
        h.http.get(&url).bearer_auth(&token).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn trailing_slashes_are_ignored() {
    let h = start().await;
    let login = h
        .post(
            "/api/v1/auth/universal-auth/login/",
            None,
            json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}),
        )
        .await;
    assert_eq!(login.status, 200);
    let token = login.body["accessToken"].as_str().unwrap();
    let a = h.get(&format!("/api/v4/secrets/?projectId={PROJECT}&environment=dev"), token).await;
    assert_eq!(a.status, 200);
    assert_eq!(h.emu.request_count("GET", "/api/v4/secrets"), 1);
}

#[tokio::test]
async fn status_and_health() {
    let h = start().await;
    let s = h.send(Method::GET, "/api/status", None, None).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.body["message"], "Ok");
    assert_eq!(s.body["date"], "2026-01-01T00:00:00.000Z");
    assert_eq!(s.headers["content-type"], "application/json; charset=utf-8");
    let health = h.send(Method::GET, "/api/health", None, None).await;
    assert_eq!(health.body, json!({"status": "ok", "message": "Server is alive"}));
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let h = start().await;
    let none = h.send(Method::GET, "/__emulator/counters", None, None).await;
    assert_eq!(none.status, 401);
    let wrong = h.send(Method::GET, "/__emulator/counters", Some("nope"), None).await;
    assert_eq!(wrong.status, 401);
    let ok = h.admin(Method::GET, "/__emulator/counters", None).await;
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("content-type").is_some());
}
