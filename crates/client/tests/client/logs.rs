//! A full flow's logs, captured at TRACE, hold no secret value, token or credential: the
//! network path, the cache with Redis, an invalidation, and reads from cache and snapshot.

use std::time::Duration;

use ikit_client::{FolderQuery, NewSecret, Scope, SecretRef, SecretUpdate};
use ikit_emulator::{ApiVersion, Fault};

use ikit_common::testsuite::LogCapture;

use crate::support::{DB_VALUE, Harness, PROJECT, ua};

#[tokio::test]
async fn a_full_flow_logs_no_secret_value_or_token() {
    let (logs, _guard) = LogCapture::start(
        "ikit_client=trace,reqwest=trace,hyper=trace,hyper_util=trace,redis=trace",
    );
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
    h.advance(Duration::from_secs(9 * 60));
    let folder = client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    let debug = format!("{folder:?} {client:?}");
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

    // The cache and snapshot flow: L2 in Redis, an invalidation, an outage read from cache and
    // from the snapshot.
    let redis = ikit_common::testsuite::TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ikit_client::CachedClient::builder()
        .ttl(Duration::from_secs(60))
        .max_stale(Duration::from_secs(3600))
        .redis(redis.url(), Some(ikit_client::SealKey::new([1; 32])))
        .redis_prefix(redis.prefix())
        .snapshot(dir.path(), ikit_client::SealKey::new([2; 32]));
    let db_url = SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap();
    let cached = config.clone().client(h.client(ua())).build().unwrap();
    let later = config.client(h.client(ua())).build().unwrap();
    assert_eq!(cached.get(&db_url).await.unwrap().value.value.expose(), DB_VALUE);
    cached.invalidate("/app/*").await;
    cached.get(&db_url).await.unwrap();
    let debug = format!("{debug} {cached:?} {:?}", cached.get(&db_url).await.unwrap());
    let clock = h.clock.clone();
    h.emulator.shutdown().await;
    clock.advance_by(Duration::from_secs(120));
    assert_eq!(cached.get(&db_url).await.unwrap().source, ikit_client::Source::Cache);
    // `later` has an empty L1; L2 answers first, so drop it to reach the snapshot.
    redis.cleanup().await.unwrap();
    let offline = later.get(&db_url).await.unwrap();
    assert_eq!(offline.source, ikit_client::Source::Snapshot);
    let debug = format!("{debug} {offline:?}");

    let text = logs.text();
    assert!(text.contains("logged in to infisical"), "logs were captured: {text}");
    assert!(text.contains("serving a stale listing"), "cache logs were captured: {text}");
    assert!(text.contains("retrying infisical request"));
    for forbidden in
        [DB_VALUE, written, "updated-value-51be", "ua-client-secret-1", claims_prefix, "Bearer "]
    {
        assert!(!text.contains(forbidden), "{forbidden:?} leaked into logs");
        assert!(!debug.contains(forbidden), "{forbidden:?} leaked into Debug");
    }
}
