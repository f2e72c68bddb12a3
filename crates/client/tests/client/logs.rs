//! A full flow's logs, captured at TRACE, hold no secret value, token or credential.

use ikit_client::{FolderQuery, NewSecret, Scope, SecretRef, SecretUpdate};
use ikit_emulator::{ApiVersion, Fault};

use crate::support::{DB_VALUE, Harness, PROJECT, capture_logs, ua};

#[tokio::test]
async fn a_full_flow_logs_no_secret_value_or_token() {
    let (logs, _guard) =
        capture_logs("ikit_client=trace,reqwest=trace,hyper=trace,hyper_util=trace");
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "dev", "/app");
    let written = "written-value-7f3a9c";
    client.create_secret(&scope, &NewSecret::new("LOGGED", written)).await.unwrap();
    client
        .update_secret(&scope, &SecretUpdate::value("LOGGED", "updated-value-51be"))
        .await
        .unwrap();
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 503).times(1));
    let value =
        client.get_value(&SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap()).await.unwrap();
    assert_eq!(value.expose(), DB_VALUE);
    h.advance(std::time::Duration::from_secs(9 * 60));
    let folder = client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    let debug = format!("{folder:?} {client:?}");
    tracing::info!(folder = ?folder, "debug output of a folder");
    assert!(h.count("POST", "/api/v1/auth/token/renew") == 1);

    // The tokens the emulator issued, fetched the same way for comparison.
    let token = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/universal-auth/login", h.emulator.base_url()))
        .json(
            &serde_json::json!({"clientId": "ua-client-id", "clientSecret": "ua-client-secret-1"}),
        )
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    // JWT header and claims prefixes are shared by every token of this emulator; the signature
    // differs, so compare on the first 20 characters of the claims part.
    let claims_prefix = &token.split('.').nth(1).unwrap()[..20];

    let text = logs.text();
    assert!(text.contains("logged in to infisical"), "logs were captured: {text}");
    assert!(text.contains("retrying infisical request"));
    for forbidden in
        [DB_VALUE, written, "updated-value-51be", "ua-client-secret-1", claims_prefix, "Bearer "]
    {
        assert!(!text.contains(forbidden), "{forbidden:?} leaked into logs");
        assert!(!debug.contains(forbidden), "{forbidden:?} leaked into Debug");
    }
}
