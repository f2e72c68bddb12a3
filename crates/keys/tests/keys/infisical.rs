//! The key manager over Infisical (played by ikit-emulator) through ikit-client.

use std::sync::Arc;

use ikit_client::{AuthMethod, Client, ClientConfig};
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};
use ikit_keys::infisical::InfisicalStore;
use ikit_keys::store::KeyStore;
use ikit_keys::{Error, RotationTarget, Trigger};
use serde_json::{Value, json};

use crate::support::{Env, FailingStore, TTL, long_lived_token, rotate_fully};

const PROJECT: &str = "7d0c4c1e-0000-4000-8000-00000000aa01";

async fn emulator() -> RunningEmulator {
    let seed = json!({
        "projects": [{"id": PROJECT, "slug": "keys", "environments": ["dev", "prod"]}],
        "identities": [{"id": "id-keys", "name": "keys", "clientId": "keys-client", "clientSecret": "keys-secret",
                        "accessTokenTTL": 3600, "accessTokenMaxTTL": 86400, "projects": [PROJECT]}]
    });
    let config = EmulatorConfig::new(Seed::from_json(&seed.to_string()).expect("seed")).rng_seed(3);
    Emulator::start(config).await.expect("emulator starts")
}

fn store(emulator: &RunningEmulator) -> Arc<InfisicalStore> {
    let config = ClientConfig::new(
        &emulator.base_url(),
        AuthMethod::universal("keys-client", "keys-secret"),
    )
    .unwrap();
    Arc::new(InfisicalStore::new(Client::new(config).unwrap(), PROJECT, "dev"))
}

#[tokio::test]
async fn keys_live_in_infisical_under_the_product_names() {
    let emulator = emulator().await;
    let env = Env::new();
    let store = store(&emulator);
    let m = env.manager_on(store.clone(), 21, None);
    m.load().await.unwrap();
    let jwt = store.read_folder("/auth/jwt").await.unwrap();
    let names: Vec<&str> = jwt.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["current_private_key", "current_public_key", "public_jwks", "rotation_state"]
    );
    assert!(jwt["current_private_key"].value.expose().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // other readers (the CLI, services) list with reference expansion on: the PEM is unchanged
    let config = ClientConfig::new(
        &emulator.base_url(),
        AuthMethod::universal("keys-client", "keys-secret"),
    )
    .unwrap();
    let listing = Client::new(config)
        .unwrap()
        .fetch_folder(&ikit_client::FolderQuery::new(PROJECT, "dev", "/auth/jwt"))
        .await
        .unwrap();
    let pem = listing.secrets.iter().find(|s| s.key == "current_private_key").unwrap();
    assert_eq!(pem.value.expose(), jwt["current_private_key"].value.expose());
    let aes = store.read_folder("/auth/aes").await.unwrap();
    let names: Vec<&str> = aes.keys().map(String::as_str).collect();
    assert_eq!(names, ["active_kid", "current_key", "keys_map"]);

    let token = long_lived_token(&*store, "current", json!({"sub": "u"})).await;
    m.verify::<Value>(&m.sign(&json!({"sub": "u"}), TTL).unwrap()).unwrap();
    let ct = m.encrypt(b"refresh", b"").unwrap();
    rotate_fully(&env, &m, RotationTarget::Both, Trigger::Manual).await;
    assert!(m.verify_rotation().await.unwrap().ok());
    let jwt = store.read_folder("/auth/jwt").await.unwrap();
    assert!(!jwt.contains_key("next_private_key"), "a completed flip leaves no next key");
    assert!(jwt["rotation_state"].version > 1, "state was rewritten through the api");

    // another replica over its own client reads the same keys
    let replica = env.manager_on(self::store(&emulator), 22, None);
    replica.reload().await.unwrap();
    assert_eq!(replica.verify::<Value>(&token).unwrap()["sub"], "u");
    assert_eq!(&*replica.decrypt(&ct, b"").unwrap(), b"refresh");
    assert_eq!(replica.jwks().unwrap(), m.jwks().unwrap());
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_flip_interrupted_over_the_api_is_finished_by_a_fresh_manager() {
    let emulator = emulator().await;
    let env = Env::new();
    let store = store(&emulator);
    let m = env.manager_on(store.clone(), 23, None);
    m.load().await.unwrap();
    let token = long_lived_token(&*store, "current", json!({"sub": "before"})).await;
    m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
    env.clock.advance(crate::support::policy().jwt_rotation_interval);
    m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
    env.clock.advance(crate::support::policy().jwt_overlap);

    let failing = Arc::new(FailingStore::new(store.clone()));
    let crashing = env.manager_on(failing.clone(), 24, None);
    failing.arm(2);
    assert!(matches!(
        crashing.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await,
        Err(Error::Store(_))
    ));
    let fresh = env.manager_on(self::store(&emulator), 25, None);
    let loaded = fresh.load().await.unwrap();
    assert_eq!(loaded.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(), ["repair"]);
    assert!(fresh.verify_rotation().await.unwrap().ok());
    assert_eq!(fresh.health().jwt.unwrap().phase, "flipped");
    assert_eq!(fresh.verify::<Value>(&token).unwrap()["sub"], "before");
    emulator.shutdown().await;
}

#[tokio::test]
async fn deleting_ignores_missing_keys_and_folders() {
    let emulator = emulator().await;
    let store = store(&emulator);
    store.delete("/auth/none", vec!["a".into()]).await.unwrap();
    store
        .upsert("/auth/d", vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        .await
        .unwrap();
    store.delete("/auth/d", vec!["a".into()]).await.unwrap();
    let names: Vec<String> = store.read_folder("/auth/d").await.unwrap().into_keys().collect();
    assert_eq!(names, ["b"]);
    store.delete("/auth/d", vec!["missing".into(), "b".into(), "a".into()]).await.unwrap();
    assert!(store.read_folder("/auth/d").await.unwrap().is_empty());
    store.delete("/auth/d", vec!["b".into()]).await.unwrap();
    emulator.shutdown().await;
}
