//! `ikit dev` in process on port 0: the stack answers, the state file is private and complete,
//! the first keys exist, and `--data` keeps them across a restart.

use ikit::dev::{DevOptions, DevStack};
use serde_json::Value;

const STATE_FIELDS: [&str; 9] = [
    "emulator_url",
    "webhook_url",
    "health_url",
    "admin_token",
    "webhook_secret",
    "project_id",
    "environment",
    "client_id",
    "client_secret",
];

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_stack_starts_with_keys_and_writes_a_private_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join(".ikit/dev.json");
    let stack = DevStack::start(DevOptions::ephemeral(&state_file)).await.expect("stack starts");
    let info = stack.info();

    let (status, health) = get_json(&format!("{}/api/v1/infisical/health", info.health_url)).await;
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["overall_status"], "healthy", "{health:#}");
    let active = health["aes_system"]["active_kid"].as_str().expect("first AES key").to_owned();
    let (_, jwks) = get_json(&format!("{}/.well-known/jwks.json", info.health_url)).await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "first JWT key published");

    let page = reqwest::get(format!("{}/", info.health_url)).await.unwrap().text().await.unwrap();
    assert!(page.contains(&active), "the status page lists the active kid");

    // the demo project answers through the stack's own credentials
    let login = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/universal-auth/login", info.emulator_url))
        .json(&serde_json::json!({"clientId": info.client_id, "clientSecret": info.client_secret.expose()}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    let text = std::fs::read_to_string(&state_file).expect("state file written");
    let state: Value = serde_json::from_str(&text).unwrap();
    for field in STATE_FIELDS {
        assert!(state.get(field).is_some(), "{field} missing from {text}");
    }
    assert_eq!(state["health_url"], info.health_url.as_str());
    assert_eq!(state["admin_token"], info.admin_token.expose());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state file holds credentials");
    }
    let banner = info.banner(&state_file);
    for needle in [info.health_url.as_str(), info.emulator_url.as_str(), info.admin_token.expose()]
    {
        assert!(banner.contains(needle), "{needle} missing from the banner");
    }
    assert_eq!(banner.matches("\n  curl ").count(), 3, "three commands to try:\n{banner}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_keeps_keys_and_tokens_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("dev.json");
    let options =
        DevOptions { data: Some(dir.path().join("data")), ..DevOptions::ephemeral(&state_file) };

    let first = DevStack::start(options.clone()).await.expect("first start");
    let (_, health) =
        get_json(&format!("{}/api/v1/infisical/health", first.info().health_url)).await;
    let kid = health["jwt_system"]["current_kid"].as_str().unwrap().to_owned();
    let token = first.info().admin_token.expose().to_owned();
    first.stop().await;

    let second = DevStack::start(options).await.expect("second start");
    let (status, health) =
        get_json(&format!("{}/api/v1/infisical/health", second.info().health_url)).await;
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["jwt_system"]["current_kid"], kid.as_str(), "the same signing key");
    assert_eq!(second.info().admin_token.expose(), token, "the same admin token");
    let audit = second
        .health()
        .audit()
        .query(&ikit_common::audit::AuditFilter {
            action: Some("key.jwt.init".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "the keys were created once, in the first run");
    second.stop().await;
}

/// A secret changed in the emulator -> the emulator's signed webhook -> the webhook service's
/// diff -> a per-key `updated` event at a subscriber of the stack's cache, whose cached listing
/// of the folder is dropped so the next read goes to Infisical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_reaches_a_subscriber_as_a_per_key_event_and_the_cache_misses() {
    use ikit_client::{AuthMethod, Client, ClientConfig, FolderQuery, Scope, SecretUpdate};

    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(DevOptions::ephemeral(dir.path().join("dev.json")))
        .await
        .expect("stack starts");
    let info = stack.info();
    let webhook = info.webhook_url.clone().expect("the webhook service is part of the stack");
    let (status, ready) = get_json(&format!("{webhook}/readyz")).await;
    assert_eq!(status, 200, "{ready}");

    let cache = stack.health().cache();
    let query = FolderQuery::new(&info.project_id, "dev", "/app");
    let first = cache.folder(&query).await.expect("first read");
    assert_eq!(first.source.as_str(), "network");
    assert!(cache.is_cached(&query).await);
    let mut events = cache.subscribe_stream("/app", 16);

    let writer = Client::new(
        ClientConfig::new(
            &info.emulator_url,
            AuthMethod::universal(&info.client_id, info.client_secret.expose()),
        )
        .unwrap(),
    )
    .unwrap();
    writer
        .update_secret(
            &Scope::new(&info.project_id, "dev", "/app"),
            &SecretUpdate::value("FEATURE_FLAGS", "search,checkout,returns"),
        )
        .await
        .expect("update in the emulator");

    let event = tokio::time::timeout(std::time::Duration::from_secs(30), events.recv())
        .await
        .expect("the event arrives")
        .expect("stream open");
    assert_eq!(event.key, "FEATURE_FLAGS");
    assert_eq!(event.folder, "/app");
    assert_eq!(event.environment, "dev");
    assert_eq!(event.kind, ikit_common::events::ChangeKind::Updated);
    assert!(events.try_recv().is_err(), "one event, for exactly that key");
    assert!(!cache.is_cached(&query).await, "the cached listing was dropped");
    let again = cache.folder(&query).await.unwrap();
    assert_eq!(again.source.as_str(), "network", "the next read misses the cache");
    let flags = again.value.secrets.iter().find(|s| s.key == "FEATURE_FLAGS").unwrap();
    assert_eq!(flags.value.expose(), "search,checkout,returns");

    let page = reqwest::get(format!("{}/", info.health_url)).await.unwrap().text().await.unwrap();
    assert!(page.contains("/app/FEATURE_FLAGS"), "the status page lists the change event");
    stack.stop().await;
}
