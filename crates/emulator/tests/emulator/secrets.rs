//! Spec 2.x and 3.1: listing (flags, recursion, imports, expansion), get by name and version,
//! writes with trimming and key rules, batches, approvals, folders.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn keys(body: &Value) -> Vec<String> {
    body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["secretKey"].as_str().unwrap().to_owned())
        .collect()
}

fn value_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body["secrets"].as_array().unwrap().iter().find(|s| s["secretKey"] == key).unwrap()["secretValue"].as_str().unwrap()
}

fn list_path(extra: &str) -> String {
    format!("/api/v4/secrets?projectId={PROJECT}&environment=dev{extra}")
}

#[tokio::test]
async fn list_returns_the_secret_schema() {
    let h = start().await;
    let token = h.token().await;
    let a = h.get(&list_path("&secretPath=/app"), &token).await;
    assert_eq!(a.status, 200);
    let s = &a.body["secrets"][0];
    let fields: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
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
            "createdAt",
            "updatedAt",
            "actor",
            "isRotatedSecret",
            "rotationId",
            "secretPath",
            "secretValueHidden",
            "tags",
            "secretMetadata"
        ]
    );
    assert_eq!(s["id"], s["_id"]);
    assert_eq!(s["workspace"], PROJECT);
    assert_eq!((s["secretKey"].as_str(), s["secretValue"].as_str()), (Some("NAME"), Some("appdb")));
    assert_eq!(s["secretPath"], "/app");
    assert_eq!(s["version"], 1);
    assert_eq!(s["secretValueHidden"], false);
    assert!(a.body.get("imports").is_none(), "no imports unless asked");
    let hidden = h.get(&list_path("&secretPath=/app&viewSecretValue=false"), &token).await;
    assert_eq!(hidden.body["secrets"][0]["secretValue"], "<hidden-by-infisical>");
    assert_eq!(hidden.body["secrets"][0]["secretValueHidden"], true);
}

#[tokio::test]
async fn boolean_flags_are_strict_on_v4() {
    let h = start().await;
    let token = h.token().await;
    for flag in [
        "recursive=yes",
        "include_imports=1",
        "includeImports=TRUE",
        "expandSecretReferences=",
        "viewSecretValue=no",
    ] {
        let a = h.get(&list_path(&format!("&{flag}")), &token).await;
        assert_eq!(a.status, 422, "{flag}: {}", a.body);
        assert_eq!(a.body["error"], "ValidationFailure");
        let issues = a.body["message"].as_array().expect("message is an array of issues");
        assert_eq!(issues[0]["path"][0], flag.split('=').next().unwrap());
    }
    // Unknown keys are ignored; both spellings of the imports flag work.
    assert_eq!(
        h.get(&list_path("&whatever=1&includeImports=true&include_imports=true"), &token)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn recursive_lists_every_folder_below() {
    let h = start().await;
    let token = h.token().await;
    let flat = h.get(&list_path("&secretPath=/app&recursive=false"), &token).await;
    assert_eq!(keys(&flat.body), ["NAME"]);
    let deep = h.get(&list_path("&secretPath=/app&recursive=true"), &token).await;
    assert_eq!(keys(&deep.body), ["NAME", "DEEP"]);
    assert_eq!(deep.body["secrets"][1]["secretPath"], "/app/deep");
    let missing = h.get(&list_path("&secretPath=/nowhere"), &token).await;
    assert_eq!(missing.status, 200);
    assert_eq!(missing.body, json!({"secrets": [], "imports": []}));
}

#[tokio::test]
async fn imports_are_listed_with_both_flag_generations() {
    let h = start().await;
    let token = h.token().await;
    for flags in ["&include_imports=true", "&includeImports=true&include_imports=false"] {
        let a = h.get(&list_path(flags), &token).await;
        let imports = a.body["imports"].as_array().expect("imports");
        assert_eq!(imports.len(), 1, "{flags}");
        assert_eq!(imports[0]["secretPath"], "/shared");
        assert_eq!(imports[0]["environment"], "staging");
        assert!(imports[0]["folderId"].is_string());
        let imported: Vec<&str> = imports[0]["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["secretKey"].as_str().unwrap())
            .collect();
        assert_eq!(imported, ["HOST", "SHARED_KEY"]);
        assert!(imports[0]["secrets"][0].get("createdAt").is_none());
    }
}

#[tokio::test]
async fn imports_without_folder_id_can_be_seeded() {
    let mut seed = seed();
    seed["imports"][0]["omitFolderId"] = json!(true);
    let h = start_with(config(&seed)).await;
    let token = h.token().await;
    let a = h.get(&list_path("&include_imports=true"), &token).await;
    assert!(a.body["imports"][0].get("folderId").is_none());
}

#[tokio::test]
async fn references_expand_only_when_asked() {
    let h = start().await;
    let token = h.token().await;
    let raw = h.get(&list_path("&expandSecretReferences=false"), &token).await;
    assert_eq!(value_of(&raw.body, "URL"), "postgres://${HOST}:${prod.PORT}/${dev.app.NAME}");
    let a = h.get(&list_path("&expandSecretReferences=true"), &token).await;
    assert_eq!(value_of(&a.body, "URL"), "postgres://db.local:5432/appdb");
    assert_eq!(value_of(&a.body, "LOOP"), "${LOOP}");
    assert_eq!(value_of(&a.body, "MISSING_REF"), "x${NOPE}y");
    // Hidden values are not expanded.
    let hidden =
        h.get(&list_path("&expandSecretReferences=true&viewSecretValue=false"), &token).await;
    assert_eq!(value_of(&hidden.body, "URL"), "<hidden-by-infisical>");
    // A local reference also finds keys through the folder's imports.
    let body = json!({"projectId": PROJECT, "environment": "dev", "secretValue": "${SHARED_KEY}"});
    h.post("/api/v4/secrets/VIA_IMPORT", Some(&token), body).await;
    let one = h.get(&format!("/api/v4/secrets/VIA_IMPORT?projectId={PROJECT}&environment=dev&expandSecretReferences=true"), &token).await;
    assert_eq!(one.body["secret"]["secretValue"], "from-shared");
}

#[tokio::test]
async fn writes_trim_values_and_keep_versions() {
    let h = start().await;
    let token = h.token().await;
    let create = h
        .post("/api/v4/secrets/NEW", Some(&token), json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/app", "secretValue": "  v1\n\n"}))
        .await;
    assert_eq!(create.status, 200, "{}", create.body);
    assert_eq!(create.body["secret"]["secretValue"], "v1\n");
    assert_eq!(create.body["secret"]["actor"]["name"], "ci");
    let update = h
        .send(
            Method::PATCH,
            "/api/v4/secrets/NEW",
            Some(&token),
            Some(json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/app", "secretValue": " v2 "})),
        )
        .await;
    assert_eq!(update.body["secret"]["secretValue"], "v2");
    assert_eq!(update.body["secret"]["version"], 2);
    let base = format!("/api/v4/secrets/NEW?projectId={PROJECT}&environment=dev&secretPath=/app");
    assert_eq!(h.get(&base, &token).await.body["secret"]["secretValue"], "v2");
    let v1 = h.get(&format!("{base}&version=1"), &token).await;
    assert_eq!(
        (v1.body["secret"]["secretValue"].as_str(), v1.body["secret"]["version"].as_u64()),
        (Some("v1\n"), Some(1))
    );
    // v3 raw reads the same data with workspaceId or workspaceSlug.
    let v3 = h
        .get("/api/v3/secrets/raw/NEW?workspaceSlug=demo&environment=dev&secretPath=/app", &token)
        .await;
    assert_eq!(v3.body["secret"]["secretValue"], "v2");
    let dup = h.post("/api/v4/secrets/NEW", Some(&token), json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/app", "secretValue": "x"})).await;
    assert_error(&dup, 400, "BadRequest", "Secret already exists");
}

#[tokio::test]
async fn rename_and_delete_with_a_json_body() {
    let h = start().await;
    let token = h.token().await;
    let loc = json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/app"});
    let mut rename = loc.clone();
    rename["newSecretName"] = json!("DB_NAME");
    let a =
        h.send(Method::PATCH, "/api/v3/secrets/raw/NAME", Some(&token), Some(rename.clone())).await;
    assert_eq!(a.body["secret"]["secretKey"], "DB_NAME", "{}", a.body);
    let again = h.send(Method::PATCH, "/api/v3/secrets/raw/NAME", Some(&token), Some(rename)).await;
    assert_error(&again, 404, "NotFound", "Secret with name NAME not found");
    let mut clash = loc.clone();
    clash["newSecretName"] = json!("DB_NAME");
    h.post("/api/v3/secrets/raw/OTHER", Some(&token), json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/app", "secretValue": "o"})).await;
    let c = h.send(Method::PATCH, "/api/v3/secrets/raw/OTHER", Some(&token), Some(clash)).await;
    assert_error(&c, 400, "BadRequest", "Secret with the new name already exists");
    let d = h
        .send(Method::DELETE, "/api/v3/secrets/raw/DB_NAME", Some(&token), Some(loc.clone()))
        .await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["secret"]["secretKey"], "DB_NAME");
    let gone = h.send(Method::DELETE, "/api/v3/secrets/raw/DB_NAME", Some(&token), Some(loc)).await;
    assert_error(&gone, 404, "NotFound", "Secret with name DB_NAME not found");
}

#[tokio::test]
async fn key_rules_and_write_errors() {
    let h = start().await;
    let token = h.token().await;
    let body = json!({"projectId": PROJECT, "environment": "dev", "secretValue": "v"});
    for bad in ["a%2Fb", "a:b"] {
        let a = h.post(&format!("/api/v4/secrets/{bad}"), Some(&token), body.clone()).await;
        assert_eq!(a.status, 422, "{bad}");
        assert_eq!(
            a.body["message"][0]["message"],
            "Secret name cannot contain colon or forward slash."
        );
    }
    // Spaces, dots, dashes, unicode and a leading digit are fine.
    assert_eq!(
        h.post("/api/v4/secrets/1%20odd.key-%C3%A9", Some(&token), body.clone()).await.status,
        200
    );
    let mut nowhere = body.clone();
    nowhere["secretPath"] = json!("/nope");
    let n = h.post("/api/v4/secrets/K", Some(&token), nowhere).await;
    assert_error(
        &n,
        404,
        "CreateSecret",
        "Folder with path '/nope' in environment with slug 'dev' not found",
    );
    let mut personal = body.clone();
    personal["type"] = json!("personal");
    let p = h.post("/api/v4/secrets/K", Some(&token), personal).await;
    assert_error(&p, 400, "BadRequest", "Must be user to create personal secret");
}

#[tokio::test]
async fn approval_policies_answer_approval_and_write_nothing() {
    let h = start().await;
    let token = h.token().await;
    let loc = json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/locked", "secretValue": "new"});
    let a = h.post("/api/v4/secrets/NEWKEY", Some(&token), loc.clone()).await;
    assert_eq!(a.status, 200);
    assert!(a.body.get("secret").is_none());
    assert_eq!(a.body["approval"]["status"], "open");
    let upd = h.send(Method::PATCH, "/api/v4/secrets/L", Some(&token), Some(loc)).await;
    assert!(upd.body["approval"].is_object());
    let list = h.get(&list_path("&secretPath=/locked"), &token).await;
    assert_eq!(keys(&list.body), ["L"]);
    assert_eq!(value_of(&list.body, "L"), "v");
}

#[tokio::test]
async fn batch_routes_with_modes() {
    let h = start().await;
    let token = h.token().await;
    let loc = |secrets: Value| json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/app", "secrets": secrets});
    let created = h
        .post("/api/v4/secrets/batch", Some(&token), loc(json!([{"secretKey": "B1", "secretValue": " one "}, {"secretKey": "B2", "secretValue": "two"}])))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["secrets"][0]["secretValue"], "one");
    let empty = h.post("/api/v4/secrets/batch", Some(&token), loc(json!([]))).await;
    assert_eq!(empty.status, 422);
    let patch = |body| h.send(Method::PATCH, "/api/v4/secrets/batch", Some(&token), Some(body));
    let mut fail = loc(
        json!([{"secretKey": "B1", "secretValue": "1"}, {"secretKey": "NOPE", "secretValue": "x"}]),
    );
    let failed = patch(fail.clone()).await;
    assert_error(&failed, 404, "NotFound", "Secret with name NOPE not found");
    fail["mode"] = json!("ignore");
    let ignored = patch(fail.clone()).await;
    assert_eq!(keys(&ignored.body), ["B1"]);
    fail["mode"] = json!("upsert");
    let upserted = patch(fail.clone()).await;
    assert_eq!(keys(&upserted.body), ["B1", "NOPE"]);
    let list = h.get(&list_path("&secretPath=/app"), &token).await;
    assert_eq!(keys(&list.body), ["B1", "B2", "NAME", "NOPE"]);
    assert_eq!(value_of(&list.body, "B1"), "1");
    let del = h.send(Method::DELETE, "/api/v3/secrets/batch/raw", Some(&token), Some(json!({
        "workspaceId": PROJECT, "environment": "dev", "secretPath": "/app", "secrets": [{"secretKey": "B1"}, {"secretKey": "B2"}]
    }))).await;
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(keys(&h.get(&list_path("&secretPath=/app"), &token).await.body), ["NAME", "NOPE"]);
}

#[tokio::test]
async fn folders_v1_and_v2() {
    let h = start().await;
    let token = h.token().await;
    let created = h
        .post(
            "/api/v1/folders",
            Some(&token),
            json!({"name": "svc", "workspaceId": PROJECT, "environment": "dev", "path": "/"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let nested = h
        .post(
            "/api/v2/folders",
            Some(&token),
            json!({"projectId": PROJECT, "environment": "dev", "name": "inner", "path": "/svc"}),
        )
        .await;
    assert_eq!(nested.body["folder"]["path"], "/svc/inner");
    let bad = h
        .post(
            "/api/v2/folders",
            Some(&token),
            json!({"projectId": PROJECT, "environment": "dev", "name": "a.b"}),
        )
        .await;
    assert_eq!(bad.status, 400);
    let v1 = h
        .get(&format!("/api/v1/folders?environment=dev&workspaceId={PROJECT}&directory=/"), &token)
        .await;
    let names: Vec<&str> = v1.body["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "locked", "svc"]);
    let rec = h
        .get(
            &format!(
                "/api/v2/folders?projectId={PROJECT}&environment=dev&path=/svc&recursive=true"
            ),
            &token,
        )
        .await;
    assert_eq!(rec.body["folders"][0]["relativePath"], "/inner");
    let id = nested.body["folder"]["id"].as_str().unwrap();
    let one = h.get(&format!("/api/v2/folders/{id}"), &token).await;
    assert_eq!(one.body["folder"]["environment"]["envSlug"], "dev");
    // A secret written into the new folder, then the folder deleted with everything in it.
    let w = h.post("/api/v4/secrets/IN", Some(&token), json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/svc/inner", "secretValue": "x"})).await;
    assert_eq!(w.status, 200);
    let d = h
        .send(
            Method::DELETE,
            "/api/v1/folders/svc",
            Some(&token),
            Some(json!({"workspaceId": PROJECT, "environment": "dev", "directory": "/"})),
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    let after = h.get(&list_path("&secretPath=/svc/inner"), &token).await;
    assert_eq!(after.body, json!({"secrets": [], "imports": []}));
}

#[tokio::test]
async fn renaming_rewrites_references_elsewhere() {
    let h = start().await;
    let token = h.token().await;
    let loc = json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/", "newSecretName": "DB_HOST"});
    let a = h.send(Method::PATCH, "/api/v4/secrets/HOST", Some(&token), Some(loc)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let raw = h.get(&list_path(""), &token).await;
    assert_eq!(value_of(&raw.body, "URL"), "postgres://${DB_HOST}:${prod.PORT}/${dev.app.NAME}");
    let expanded = h.get(&list_path("&expandSecretReferences=true"), &token).await;
    assert_eq!(value_of(&expanded.body, "URL"), "postgres://db.local:5432/appdb");
}

#[tokio::test]
async fn environments_can_be_added_and_read() {
    let h = start().await;
    let token = h.token().await;
    let created = h
        .post(
            &format!("/api/v1/projects/{PROJECT}/environments"),
            Some(&token),
            json!({"name": "QA", "slug": "qa"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["environment"]["slug"], "qa");
    let dup = h
        .post(
            &format!("/api/v1/projects/{PROJECT}/environments"),
            Some(&token),
            json!({"name": "QA", "slug": "qa"}),
        )
        .await;
    assert_eq!(dup.status, 400);
    let one = h.get(&format!("/api/v1/projects/{PROJECT}/environments/qa"), &token).await;
    assert_eq!(one.body["environment"]["name"], "QA");
    // The new environment has a root folder and shows in the project.
    let body = json!({"projectId": PROJECT, "environment": "qa", "secretValue": "v"});
    assert_eq!(h.post("/api/v4/secrets/Q", Some(&token), body).await.status, 200);
    let ws = h.get(&format!("/api/v1/workspace/{PROJECT}"), &token).await;
    assert_eq!(ws.body["workspace"]["environments"][3]["slug"], "qa");
}

#[tokio::test]
async fn tags_attach_filter_and_validate() {
    let mut seed = seed();
    seed["secrets"][5]["tags"] = json!(["backend"]);
    let h = start_with(config(&seed)).await;
    let token = h.token().await;
    let tagged = h.get(&list_path("&secretPath=/app"), &token).await;
    assert_eq!(tagged.body["secrets"][0]["tags"][0]["slug"], "backend");
    let created = h
        .post(
            &format!("/api/v1/projects/{PROJECT}/tags"),
            Some(&token),
            json!({"slug": "ops", "color": "#fff"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let ops_id = created.body["tag"]["id"].as_str().unwrap().to_owned();
    let by_slug = h.get(&format!("/api/v1/projects/{PROJECT}/tags/slug/ops"), &token).await;
    assert_eq!(by_slug.body["tag"]["id"], ops_id.as_str());
    let body =
        json!({"projectId": PROJECT, "environment": "dev", "secretValue": "v", "tagIds": [ops_id]});
    assert_eq!(h.post("/api/v4/secrets/TAGGED", Some(&token), body).await.status, 200);
    let filtered = h.get(&list_path("&tagSlugs=ops,nothing"), &token).await;
    assert_eq!(keys(&filtered.body), ["TAGGED"]);
    let bad =
        json!({"projectId": PROJECT, "environment": "dev", "secretValue": "v", "tagIds": ["nope"]});
    let refused = h.post("/api/v4/secrets/BADTAG", Some(&token), bad).await;
    assert_error(&refused, 404, "NotFound", "Tag not found. Found ");
    let batch = json!({"projectId": PROJECT, "environment": "dev", "secrets": [{"secretKey": "BT", "secretValue": "b", "tagIds": [ops_id]}]});
    assert_eq!(h.post("/api/v4/secrets/batch", Some(&token), batch).await.status, 200);
    let untag = json!({"projectId": PROJECT, "environment": "dev", "secrets": [{"secretKey": "TAGGED", "tagIds": []}]});
    assert_eq!(
        h.send(Method::PATCH, "/api/v4/secrets/batch", Some(&token), Some(untag)).await.status,
        200
    );
    assert_eq!(keys(&h.get(&list_path("&tagSlugs=ops"), &token).await.body), ["BT"]);
    let all = h.get(&format!("/api/v1/projects/{PROJECT}/tags"), &token).await;
    assert_eq!(all.body["tags"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_reference_resolves_through_the_earliest_import_that_has_the_key() {
    let mut seed = seed();
    let secrets = seed["secrets"].as_array_mut().unwrap();
    secrets.push(json!({"projectId": PROJECT, "environment": "staging", "path": "/first", "key": "PICK", "value": "from-first"}));
    secrets.push(json!({"projectId": PROJECT, "environment": "prod", "path": "/second", "key": "PICK", "value": "from-second"}));
    secrets.push(json!({"projectId": PROJECT, "environment": "dev", "path": "/consumer", "key": "REF", "value": "${PICK}"}));
    let imports = seed["imports"].as_array_mut().unwrap();
    imports.push(json!({"projectId": PROJECT, "environment": "dev", "path": "/consumer", "importEnvironment": "staging", "importPath": "/first"}));
    imports.push(json!({"projectId": PROJECT, "environment": "dev", "path": "/consumer", "importEnvironment": "prod", "importPath": "/second"}));
    let h = start_with(config(&seed)).await;
    let token = h.token().await;
    let one = h
        .get(&format!("/api/v4/secrets/REF?projectId={PROJECT}&environment=dev&secretPath=/consumer&expandSecretReferences=true"), &token)
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["secret"]["secretValue"], "from-first");
}
