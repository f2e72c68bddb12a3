//! Issue 11: answers as the real 2024-10 server gave them on loopback (status, `error`,
//! message, body keys), and the 2026 counterpart where the spec rules it.

use ikit_emulator::ApiVersion;
use serde_json::{Value, json};

use crate::helpers::*;

fn body_keys(body: &Value) -> Vec<&str> {
    body.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default()
}

#[tokio::test]
async fn item6_an_unknown_client_id_is_404_in_2024_and_401_in_2026() {
    let old = start_version(ApiVersion::V2024).await;
    let a = old.login_as("nobody", "x").await;
    assert_eq!(
        a.body,
        json!({"statusCode": 404, "message": "No identity with specified client ID was found", "error": "NotFound"})
    );
    assert_eq!(body_keys(&a.body), ["statusCode", "message", "error"]);
    let new = start().await;
    assert_error(
        &new.login_as("nobody", "x").await,
        401,
        "UnauthorizedError",
        "Invalid credentials",
    );
}

async fn v2024() -> (Harness, String) {
    let h = start_version(ApiVersion::V2024).await;
    let token = h.token().await;
    (h, token)
}

fn folder_names(body: &Value) -> Vec<&str> {
    body["folders"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect()
}

fn raw_list(extra: &str) -> String {
    format!("/api/v3/secrets/raw?workspaceId={PROJECT}&environment=dev{extra}")
}

/// A body as the 2024 server's validation failure has it.
fn validation(issues: Value) -> Value {
    json!({"statusCode": 401, "message": issues, "error": "ValidationFailure"})
}

#[tokio::test]
async fn item1_v1_folder_lists_read_path_not_directory() {
    for version in [ApiVersion::V2024, ApiVersion::V2026] {
        let h = start_version(version).await;
        let token = h.token().await;
        let base = format!("/api/v1/folders?environment=dev&workspaceId={PROJECT}");
        let below = h.get(&format!("{base}&path=/app"), &token).await;
        assert_eq!(folder_names(&below.body), ["deep"]);
        // `directory` is not read: the listing is the root's.
        let directory = h.get(&format!("{base}&directory=/app"), &token).await;
        assert_eq!(folder_names(&directory.body), ["app", "locked"]);
        let both = h.get(&format!("{base}&directory=/&path=/app"), &token).await;
        assert_eq!(folder_names(&both.body), ["deep"]);
        let missing = h.get(&format!("{base}&path=/nope"), &token).await;
        assert_eq!((missing.status.as_u16(), missing.body.clone()), (200, json!({"folders": []})));
    }
}

#[tokio::test]
async fn item2_a_2024_update_without_a_value_is_a_validation_failure() {
    let (h, token) = v2024().await;
    let rename = json!({"workspaceId": PROJECT, "environment": "dev", "newSecretName": "HOST2"});
    let a = h
        .send(
            reqwest::Method::PATCH,
            "/api/v3/secrets/raw/HOST",
            Some(&token),
            Some(rename.clone()),
        )
        .await;
    assert_eq!(
        a.body,
        validation(
            json!([{"code": "invalid_type", "expected": "string", "received": "undefined", "path": ["secretValue"], "message": "Required"}])
        )
    );
    assert_eq!(a.status, 401);
    // Nothing was renamed.
    let list = h.get(&raw_list(""), &token).await;
    assert!(list.body["secrets"].as_array().unwrap().iter().any(|s| s["secretKey"] == "HOST"));
    // A 2026 server accepts the rename-only update.
    let new = start().await;
    let t = new.token().await;
    let ok =
        new.send(reqwest::Method::PATCH, "/api/v3/secrets/raw/HOST", Some(&t), Some(rename)).await;
    assert_eq!((ok.status.as_u16(), ok.body["secret"]["secretKey"].as_str()), (200, Some("HOST2")));
}

#[tokio::test]
async fn item3_skip_multiline_encoding_is_false_when_never_set() {
    for version in [ApiVersion::V2024, ApiVersion::V2026] {
        let h = start_version(version).await;
        let token = h.token().await;
        let body = json!({"workspaceId": PROJECT, "environment": "dev", "secretValue": "v"});
        let created = h.post("/api/v3/secrets/raw/PLAIN", Some(&token), body).await;
        assert_eq!(
            created.body["secret"]["skipMultilineEncoding"],
            json!(false),
            "{}",
            created.body
        );
        let list = h.get(&raw_list(""), &token).await;
        for s in list.body["secrets"].as_array().unwrap() {
            assert_eq!(s["skipMultilineEncoding"], json!(false), "{s}");
        }
    }
}

#[tokio::test]
async fn item4_a_secret_path_without_a_leading_slash_names_no_folder() {
    let (h, token) = v2024().await;
    let a = h.get(&raw_list("&secretPath=app&include_imports=true"), &token).await;
    assert_eq!((a.status.as_u16(), a.body.clone()), (200, json!({"secrets": [], "imports": []})));
    let slash = h.get(&raw_list("&secretPath=/app"), &token).await;
    assert_eq!(slash.body["secrets"][0]["secretKey"], "NAME");
}

#[tokio::test]
async fn item5_2024_validation_failures_are_401_with_zod_issues() {
    let (h, token) = v2024().await;
    let login = h.post("/api/v1/auth/universal-auth/login", None, json!({"clientId": 5})).await;
    assert_eq!(login.status, 401);
    assert_eq!(
        login.body,
        validation(json!([
            {"code": "invalid_type", "expected": "string", "received": "number", "path": ["clientId"], "message": "Expected string, received number"},
            {"code": "invalid_type", "expected": "string", "received": "undefined", "path": ["clientSecret"], "message": "Required"}
        ]))
    );
    let renew = h.post("/api/v1/auth/token/renew", None, json!({})).await;
    assert_eq!(
        renew.body,
        validation(
            json!([{"code": "invalid_type", "expected": "string", "received": "undefined", "path": ["accessToken"], "message": "Required"}])
        )
    );
    let url = h.url("/api/v1/auth/universal-auth/login");
    let text = h
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("clientId=x")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 401);
    assert_eq!(
        text.json::<Value>().await.unwrap(),
        validation(
            json!([{"code": "invalid_type", "expected": "object", "received": "string", "path": [], "message": "Expected object, received string"}])
        )
    );
    let broken = h
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"clientId\":")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 500);
    assert_eq!(
        broken.json::<Value>().await.unwrap(),
        json!({"statusCode": 500, "message": "Something went wrong", "error": "InternalServerError"})
    );
    let no_env = h.get(&format!("/api/v3/secrets/raw?workspaceId={PROJECT}"), &token).await;
    assert_eq!(
        no_env.body,
        json!({"statusCode": 400, "message": "Missing workspace id or environment", "error": "BadRequest"})
    );
    // Current servers answer schema failures 422.
    let new = start().await;
    let current = new.post("/api/v1/auth/universal-auth/login", None, json!({})).await;
    assert_eq!(current.status, 422);
    assert_eq!(current.body["message"][0]["path"], json!(["clientId"]));
}

#[tokio::test]
async fn item7_a_recursive_list_returns_the_imports_of_sub_folders() {
    let mut s = seed();
    s["imports"].as_array_mut().unwrap().push(json!(
        {"projectId": PROJECT, "environment": "dev", "path": "/app", "importEnvironment": "prod", "importPath": "/"}
    ));
    let h = start_with(config(&s).api_version(ApiVersion::V2024)).await;
    let token = h.token().await;
    let rec = h.get(&raw_list("&recursive=true&include_imports=true"), &token).await;
    let imports: Vec<(&str, &str)> = rec.body["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["environment"].as_str().unwrap(), i["secretPath"].as_str().unwrap()))
        .collect();
    assert_eq!(imports, [("staging", "/shared"), ("prod", "/")]);
    let flat = h.get(&raw_list("&include_imports=true"), &token).await;
    assert_eq!(flat.body["imports"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn item8_an_unknown_environment_is_a_missing_folder() {
    let (h, token) = v2024().await;
    let list =
        h.get(&format!("/api/v3/secrets/raw?workspaceId={PROJECT}&environment=nope"), &token).await;
    assert_eq!(
        (list.status.as_u16(), list.body.clone()),
        (200, json!({"secrets": [], "imports": []}))
    );
    let get = h
        .get(&format!("/api/v3/secrets/raw/HOST?workspaceId={PROJECT}&environment=nope"), &token)
        .await;
    assert_eq!(
        get.body,
        json!({"statusCode": 404, "message": "Folder with path '/' in environment with slug 'nope' not found", "error": "GetSecretByName"})
    );
    let create = h
        .post(
            "/api/v3/secrets/raw/X",
            Some(&token),
            json!({"workspaceId": PROJECT, "environment": "nope", "secretValue": "v"}),
        )
        .await;
    assert_eq!(
        (create.status.as_u16(), create.body["error"].as_str()),
        (404, Some("CreateSecret"))
    );
}

#[tokio::test]
async fn item9_folder_misses_come_first_and_are_named_after_the_operation() {
    let (h, token) = v2024().await;
    let nowhere = json!({"workspaceId": PROJECT, "environment": "prod", "secretPath": "/nope", "secretValue": "v"});
    let message = "Folder with path '/nope' in environment with slug 'prod' not found";
    let get = h
        .get(
            &format!(
                "/api/v3/secrets/raw/NOPE?workspaceId={PROJECT}&environment=prod&secretPath=/nope"
            ),
            &token,
        )
        .await;
    assert_eq!(
        get.body,
        json!({"statusCode": 404, "message": message, "error": "GetSecretByName"})
    );
    let patch = h
        .send(
            reqwest::Method::PATCH,
            "/api/v3/secrets/raw/NOPE",
            Some(&token),
            Some(nowhere.clone()),
        )
        .await;
    assert_eq!(patch.body, json!({"statusCode": 404, "message": message, "error": "UpdateSecret"}));
    let delete = h
        .send(
            reqwest::Method::DELETE,
            "/api/v3/secrets/raw/NOPE",
            Some(&token),
            Some(nowhere.clone()),
        )
        .await;
    assert_eq!(
        delete.body,
        json!({"statusCode": 404, "message": message, "error": "DeleteSecret"})
    );
    let mut batch = nowhere.clone();
    batch["secrets"] = json!([{"secretKey": "B1", "secretValue": "1"}]);
    let many = h.post("/api/v3/secrets/batch/raw", Some(&token), batch).await;
    assert_eq!(
        many.body,
        json!({"statusCode": 404, "message": message, "error": "CreateManySecret"})
    );
    // Batch messages name the keys.
    let root = json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/",
                      "secrets": [{"secretKey": "B1", "secretValue": "1"}, {"secretKey": "HOST", "secretValue": "2"}]});
    let dup = h.post("/api/v3/secrets/batch/raw", Some(&token), root).await;
    assert_eq!(
        dup.body,
        json!({"statusCode": 400, "message": "Secret already exist: HOST", "error": "BadRequest"})
    );
    let update = json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/",
                        "secrets": [{"secretKey": "B1", "secretValue": "1"}]});
    let missing = h
        .send(reqwest::Method::PATCH, "/api/v3/secrets/batch/raw", Some(&token), Some(update))
        .await;
    assert_eq!(
        missing.body,
        json!({"statusCode": 404, "message": "Secret does not exist: B1", "error": "NotFound"})
    );
    let ghost = "00000000-0000-4000-8000-00000000dead";
    let project =
        h.get(&format!("/api/v3/secrets/raw?workspaceId={ghost}&environment=dev"), &token).await;
    assert_eq!(
        project.body,
        json!({"statusCode": 404, "error": "NotFound",
               "message": format!("Project with ID '{ghost}' not found during bot lookup. Are you sure you are using the correct project ID?")})
    );
}

#[tokio::test]
async fn item10_bodies_over_one_mebibyte_are_refused() {
    let big =
        json!({"workspaceId": PROJECT, "environment": "dev", "secretValue": "x".repeat(1 << 20)});
    let (old, token) = v2024().await;
    let a = old.post("/api/v3/secrets/raw/BIG", Some(&token), big.clone()).await;
    assert_eq!(
        a.body,
        json!({"statusCode": 500, "message": "Something went wrong", "error": "InternalServerError"})
    );
    assert_eq!(
        old.get(&format!("/api/v3/secrets/raw/BIG?workspaceId={PROJECT}&environment=dev"), &token)
            .await
            .status,
        404
    );
    let new = start().await;
    let t = new.token().await;
    let b = new.post("/api/v3/secrets/raw/BIG", Some(&t), big).await;
    assert_eq!(b.status, 413);
    assert_eq!(b.body["statusCode"], 413);
    // Just under the limit is accepted.
    let fits =
        json!({"workspaceId": PROJECT, "environment": "dev", "secretValue": "x".repeat(1000)});
    assert_eq!(new.post("/api/v3/secrets/raw/FITS", Some(&t), fits).await.status, 200);
}

#[tokio::test]
async fn item11_a_folder_under_a_missing_parent_creates_the_parents() {
    let (h, token) = v2024().await;
    let created = h
        .post(
            "/api/v1/folders",
            Some(&token),
            json!({"name": "c", "workspaceId": PROJECT, "environment": "dev", "path": "/a/b"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let base = format!("/api/v1/folders?environment=dev&workspaceId={PROJECT}");
    assert_eq!(folder_names(&h.get(&format!("{base}&path=/a"), &token).await.body), ["b"]);
    assert_eq!(folder_names(&h.get(&format!("{base}&path=/a/b"), &token).await.body), ["c"]);
}

#[tokio::test]
async fn item12_personal_and_bogus_secret_types() {
    let (h, token) = v2024().await;
    let get = |t: &str| {
        format!("/api/v3/secrets/raw/HOST?workspaceId={PROJECT}&environment=dev&type={t}")
    };
    let personal = h.get(&get("personal"), &token).await;
    assert_eq!(personal.status, 404);
    assert_eq!(personal.body["error"], "NotFound");
    let bogus = h.get(&get("bogus"), &token).await;
    assert_eq!(bogus.status, 401);
    assert_eq!(bogus.body["error"], "ValidationFailure");
    assert_eq!(bogus.body["message"][0]["path"], json!(["type"]));
    let del = h
        .send(
            reqwest::Method::DELETE,
            "/api/v3/secrets/raw/HOST",
            Some(&token),
            Some(json!({"workspaceId": PROJECT, "environment": "dev", "type": "personal"})),
        )
        .await;
    assert_eq!(
        del.body,
        json!({"statusCode": 400, "message": "Must be user to delete personal secret", "error": "BadRequest"})
    );
    assert_eq!(h.get(&get("shared"), &token).await.status, 200, "the shared secret survived");
}

#[tokio::test]
async fn item15_bodies_headers_and_keys_as_the_2024_server_sends_them() {
    let (h, token) = v2024().await;
    // No reqId in any 2024 error body.
    let bad = h.get(&format!("/api/v3/secrets/raw?workspaceId={PROJECT}"), &token).await;
    assert_eq!(body_keys(&bad.body), ["statusCode", "message", "error"]);
    // The secret object of 2024: no 2026-only keys, `metadata` and `secretMetadata` present.
    let body = json!({"workspaceId": PROJECT, "environment": "dev", "secretValue": "v", "secretComment": "  note  "});
    let created = h.post("/api/v3/secrets/raw/NEWK", Some(&token), body).await;
    assert_eq!(created.body["secret"]["secretComment"], "note");
    assert_eq!(
        body_keys(&created.body["secret"]),
        [
            "id",
            "_id",
            "workspace",
            "environment",
            "version",
            "type",
            "secretKey",
            "secretValue",
            "secretComment",
            "secretReminderNote",
            "secretReminderRepeatDays",
            "skipMultilineEncoding",
            "metadata",
            "createdAt",
            "updatedAt",
            "secretPath",
            "tags",
            "secretMetadata"
        ]
    );
    // CORS and an ETag on every answer, a POST included; 304 on a match even for a POST.
    let origin = h.emu.base_url();
    assert_eq!(created.headers["access-control-allow-origin"], origin.as_str());
    assert_eq!(created.headers["access-control-allow-credentials"], "true");
    let etag = created.headers["etag"].to_str().unwrap().to_owned();
    assert!(bad.headers.contains_key("etag"));
    let login_body = json!({"clientId": "nobody", "clientSecret": "x"});
    let first = h.post("/api/v1/auth/universal-auth/login", None, login_body.clone()).await;
    let tag = first.headers["etag"].to_str().unwrap().to_owned();
    let again = h
        .http
        .post(h.url("/api/v1/auth/universal-auth/login"))
        .header("if-none-match", &tag)
        .json(&login_body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_ne!(tag, etag);
    // OPTIONS like @fastify/cors.
    let pre = h
        .http
        .request(reqwest::Method::OPTIONS, h.url("/api/v3/secrets/raw"))
        .header("origin", "http://elsewhere")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-methods"], "GET,HEAD,PUT,PATCH,POST,DELETE");
    assert_eq!(pre.headers()["access-control-allow-headers"], "authorization");
    let not_preflight = h
        .http
        .request(reqwest::Method::OPTIONS, h.url("/api/v3/secrets/raw"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_preflight.status(), 400);
    // `/api/status` without the newer `auditLogStorageDisabled`.
    let status = h.send(reqwest::Method::GET, "/api/status", None, None).await;
    assert_eq!(status.body["message"], "Ok");
    assert!(status.body.get("auditLogStorageDisabled").is_none());
}

#[tokio::test]
async fn item13_2024_routes_serve_secret_imports_and_not_secrets_by_id() {
    let (h, token) = v2024().await;
    let imports = h
        .get(
            &format!("/api/v1/secret-imports?workspaceId={PROJECT}&environment=dev&path=/"),
            &token,
        )
        .await;
    assert_eq!(imports.status, 200, "{}", imports.body);
    assert_eq!(imports.body["message"], "Successfully fetched secret imports");
    let first = &imports.body["secretImports"][0];
    assert_eq!(
        (first["importPath"].as_str(), first["importEnv"]["slug"].as_str()),
        (Some("/shared"), Some("staging"))
    );
    assert_eq!(first["position"], 1);
    let list = h.get(&raw_list(""), &token).await;
    let id = list.body["secrets"][0]["id"].as_str().unwrap();
    let path = format!("/api/v3/secrets/raw/id/{id}");
    let by_id = h.get(&path, &token).await;
    assert_eq!(
        by_id.body,
        json!({"message": format!("Route GET:{path} not found"), "error": "Not Found", "statusCode": 404})
    );
    // 2026 serves both.
    let new = start().await;
    let t = new.token().await;
    assert_eq!(new.get(&path.replace(id, "nope"), &t).await.body["error"], "NotFound");
}

#[tokio::test]
async fn item14_2024_webhook_management_needs_a_user_token() {
    let (h, token) = v2024().await;
    let hook = json!({"projectId": PROJECT, "environment": "dev", "webhookUrl": "http://127.0.0.1:9/hook", "secretPath": "/**"});
    let refused = h.post("/api/v1/webhooks", Some(&token), hook.clone()).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["error"], "Forbidden access to /api/v1/webhooks");
    let created = h.post("/api/v1/webhooks", Some(USER_TOKEN), hook.clone()).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let listed = h.get(&format!("/api/v1/webhooks?projectId={PROJECT}"), USER_TOKEN).await;
    assert_eq!(listed.body["webhooks"].as_array().unwrap().len(), 1);
    // The user reads secrets like a project member.
    let secret = h.get(&raw_list(""), USER_TOKEN).await;
    assert_eq!(secret.status, 200);
    assert!(!secret.body["secrets"].as_array().unwrap().is_empty());
    // A 2026 server lets identities manage hooks.
    let new = start().await;
    let t = new.token().await;
    assert_eq!(new.post("/api/v1/webhooks", Some(&t), hook).await.status, 200);
}

#[tokio::test]
async fn item15_token_errors_use_the_2024_wording() {
    let (h, token) = v2024().await;
    let list = raw_list("");
    let empty = h.http.get(h.url(&list)).header("authorization", "Bearer ").send().await.unwrap();
    assert_eq!(empty.status(), 403);
    assert_eq!(
        empty.json::<Value>().await.unwrap(),
        json!({"statusCode": 403, "message": "jwt must be provided", "error": "TokenError"})
    );
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.c2lnbmF0dXJl");
    let bad = h.get(&list, &forged).await;
    assert_eq!(
        bad.body,
        json!({"statusCode": 403, "message": "invalid signature", "error": "TokenError"})
    );
    let unknown = h.get(&list, "st.nope.secret").await;
    assert_eq!(
        unknown.body,
        json!({"statusCode": 404, "message": "Service token with ID 'nope' not found", "error": "NotFound"})
    );
}

#[tokio::test]
async fn item16_with_the_default_ttls_every_renewal_is_refused() {
    for version in [ApiVersion::V2024, ApiVersion::V2026] {
        let mut s = seed();
        s["identities"].as_array_mut().unwrap().push(json!(
            {"name": "defaults", "clientId": "defaults-id", "clientSecret": "defaults-secret", "projects": [PROJECT]}
        ));
        let h = start_with(config(&s).api_version(version)).await;
        let login = h.login_as("defaults-id", "defaults-secret").await;
        assert_eq!(
            (login.body["expiresIn"].as_u64(), login.body["accessTokenMaxTTL"].as_u64()),
            (Some(2_592_000), Some(2_592_000))
        );
        let token = login.body["accessToken"].as_str().unwrap().to_owned();
        // One second after login, now + TTL is past created + max TTL: refused, and the token is gone.
        h.emu.clock().advance(std::time::Duration::from_secs(1));
        let renew = h.post("/api/v1/auth/token/renew", None, json!({"accessToken": token})).await;
        assert_eq!(renew.status, 401, "{}", renew.body);
        assert_eq!(
            renew.body["message"],
            "Failed to renew MI access token past its Max TTL expiration"
        );
        assert_eq!(h.get(&raw_list(""), &token).await.status, 401);
        // Logging in again is the way out.
        assert_eq!(h.login_as("defaults-id", "defaults-secret").await.status, 200);
    }
}

#[tokio::test]
async fn item15_cors_headers_ride_on_fault_answers_too() {
    let h = start().await;
    h.emu.faults().add(ikit_emulator::Fault::status("/api/v3", 500).times(1));
    let a = h.send(reqwest::Method::GET, "/api/v3/secrets/raw", None, None).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.headers["access-control-allow-origin"], h.emu.base_url().as_str());
    assert!(a.headers.contains_key("etag"));
}
