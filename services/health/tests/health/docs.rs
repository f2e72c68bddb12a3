//! The OpenAPI document against the router: the same routes, served at `/openapi.json`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{Options, emulator, spawn_app};

fn table() -> BTreeSet<(String, String)> {
    ikit_health::route_table()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path.to_owned()))
        .collect()
}

#[test]
fn openapi_document_lists_exactly_the_routes_the_router_serves() {
    let documented: BTreeSet<_> = ikit_health::openapi::documented_routes().into_iter().collect();
    let served = table();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in /openapi.json: {undocumented:?}");
    assert!(phantom.is_empty(), "in /openapi.json but not served: {phantom:?}");
    assert!(served.contains(&("POST".to_owned(), "/api/v1/infisical/rotate".to_owned())));
    assert!(served.len() >= 9, "{served:?}");
}

#[tokio::test]
async fn openapi_json_is_served_as_3_1_and_every_documented_route_answers() {
    let emulator = emulator(None).await;
    let app = spawn_app(Options::new(&emulator)).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "ikit-health");
    // the admin actions say they need the bearer token, and the scheme is defined
    let rotate = &doc["paths"]["/api/v1/infisical/rotate"]["post"];
    assert_eq!(rotate["security"][0]["admin_token"], serde_json::json!([]), "{rotate}");
    assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer");
    let body_schema = &doc["components"]["schemas"]["RotateBody"]["properties"];
    for field in ["rotation_type", "force", "reason"] {
        assert!(body_schema.get(field).is_some(), "RotateBody lacks {field}: {body_schema}");
    }
    // black box: every documented route is routed (neither 404 nor 405) on the live server
    for (method, path) in ikit_health::openapi::documented_routes() {
        let url = format!("{}{path}", app.base);
        let request = match method.as_str() {
            "GET" => app.http.get(&url),
            "POST" => app.http.post(&url),
            other => panic!("unexpected method {other} for {path}"),
        };
        let status = request.send().await.expect("request").status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path} answered {status}");
    }
    app.stop().await;
}
