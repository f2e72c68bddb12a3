//! How a step committed by one replica reaches the others: reload when the lock is busy, on an
//! unknown kid, on the scheduler's timer, on change events and published invalidations; and the
//! emergency revoke.

use std::sync::Arc;
use std::time::Duration;

use ikit_client::{AuthMethod, CachedClient, CachedClientBuilder, Client, ClientConfig};
use ikit_common::events::{ChangeKind, SecretChangeEvent};
use ikit_common::testsuite::TestRedis;
use ikit_keys::cipher::AesKeyRing;
use ikit_keys::jwt::{JwtAlgorithm, JwtKey};
use ikit_keys::lock::{LocalLock, RotationLock};
use ikit_keys::rotation::JwtPhase;
use ikit_keys::{Error, KeyKind, KeyManager, RotationTarget, Trigger, spawn_scheduler};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::support::{Env, FailingStore, T0, TTL, long_lived_token, rotate_fully};

/// A safety net only: what never happens fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_rotation_that_finds_the_lock_busy_reloads_the_ring() {
    let env = Env::new();
    let held = Arc::new(LocalLock::default());
    let a = env.manager(1);
    let b = env.manager_on(env.store.clone(), 2, Some(held.clone()));
    a.load().await.unwrap();
    b.load().await.unwrap();
    a.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    assert_ne!(b.jwks().unwrap(), a.jwks().unwrap());
    // another replica holds the lock: b skips the rotation, and reads what the holder committed
    let guard = held.try_acquire().await.unwrap().expect("free lock");
    let outcome = b.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
    assert!(outcome.busy && outcome.steps.is_empty());
    assert_eq!(b.jwks().unwrap(), a.jwks().unwrap());
    guard.release().await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_reloads_the_ring_at_most_once_per_interval() {
    let env = Env::new();
    let counting = Arc::new(FailingStore::new(env.store.clone()));
    let a = env.manager(3);
    let b = env.manager_on(counting.clone(), 4, None);
    a.load().await.unwrap();
    b.load().await.unwrap();
    a.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    // a token of the key a just published, which b has not seen yet
    let token = long_lived_token(&*env.store, "next", json!({"sub": "n"})).await;
    assert!(matches!(b.verify::<Value>(&token), Err(Error::UnknownKid(_))));
    let reads = counting.reads();
    assert_eq!(b.verify_with_reload::<Value>(&token).await.unwrap()["sub"], "n");
    assert_eq!(counting.reads(), reads + 2, "one reload: both folders read once");

    // kids nobody published cost one reload per interval, not one per token
    let mut rng = StdRng::seed_from_u64(5);
    let stranger = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
    let forged = stranger.sign(&json!({"exp": T0 + 3600})).unwrap();
    for _ in 0..3 {
        assert!(matches!(b.verify_with_reload::<Value>(&forged).await, Err(Error::UnknownKid(_))));
    }
    assert_eq!(counting.reads(), reads + 2, "within the interval nothing is read");
    env.clock.advance(30);
    assert!(matches!(b.verify_with_reload::<Value>(&forged).await, Err(Error::UnknownKid(_))));
    assert_eq!(counting.reads(), reads + 4, "past the interval one more reload");

    // the same for a ciphertext under an AES key another replica activated
    rotate_fully(&env, &a, RotationTarget::Aes, Trigger::Manual).await;
    let ct = a.encrypt(b"refresh", b"").unwrap();
    assert!(matches!(b.decrypt(&ct, b""), Err(Error::UnknownKid(_))));
    assert_eq!(&*b.decrypt_with_reload(&ct, b"").await.unwrap(), b"refresh");
}

#[tokio::test]
async fn the_scheduler_reloads_what_another_replica_committed() {
    let env = Env::new();
    let a = env.manager(6);
    let b = Arc::new(env.manager(7));
    a.load().await.unwrap();
    b.load().await.unwrap();
    a.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (task, mut reports) = spawn_scheduler(b.clone(), Duration::from_millis(50), shutdown);
    let first = tokio::time::timeout(WAIT, reports.recv()).await.unwrap().unwrap();
    assert!(first.steps.is_empty(), "nothing is due: {first:?}");
    assert_eq!(b.jwks().unwrap(), a.jwks().unwrap(), "the first tick reloaded");

    // a later change is picked up by a later tick
    a.rotate(RotationTarget::Aes, true, "", Trigger::Manual).await.unwrap();
    let pending = a.health().aes.unwrap().pending_kid;
    assert!(pending.is_some());
    tokio::time::timeout(WAIT, async {
        while b.health().aes.unwrap().pending_kid != pending {
            reports.recv().await.expect("scheduler running");
        }
    })
    .await
    .expect("a tick reloads the ring");
    stop.send(true).unwrap();
    task.await.unwrap();
}

fn cached_client(config: CachedClientBuilder) -> CachedClient {
    // never contacted: the cache is used for its subscriptions and pub/sub only
    let client = ClientConfig::new("http://127.0.0.1:1", AuthMethod::universal("id", "secret"))
        .and_then(Client::new)
        .unwrap();
    config.client(client).build().unwrap()
}

fn change(folder: &str, key: &str, id: &str) -> SecretChangeEvent {
    SecretChangeEvent {
        project: "p".into(),
        environment: "prod".into(),
        folder: folder.into(),
        key: key.into(),
        kind: ChangeKind::Updated,
        version: Some(2),
        event_id: id.into(),
    }
}

#[tokio::test]
async fn a_change_event_under_the_key_folders_reloads_an_attached_manager() {
    let env = Env::new();
    let a = env.manager(8);
    let b = Arc::new(env.manager(9));
    a.load().await.unwrap();
    b.load().await.unwrap();
    let cache = cached_client(
        CachedClient::builder().ttl(Duration::from_secs(60)).max_stale(Duration::from_secs(60)),
    );
    let watch = b.attach(&cache);
    let mut updates = b.ring_updates();
    updates.borrow_and_update();

    a.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    assert!(cache.deliver(&change("/auth/jwt", "public_jwks", "e1")).await);
    tokio::time::timeout(WAIT, updates.changed()).await.unwrap().unwrap();
    assert_eq!(b.jwks().unwrap(), a.jwks().unwrap());

    a.rotate(RotationTarget::Aes, true, "", Trigger::Manual).await.unwrap();
    assert!(cache.deliver(&change("/auth/aes", "keys_map", "e2")).await);
    tokio::time::timeout(WAIT, updates.changed()).await.unwrap().unwrap();
    assert_eq!(b.health().aes.unwrap().pending_kid, a.health().aes.unwrap().pending_kid);
    watch.stop().await;
}

/// The cross-replica path end to end on a real Redis: the leader's committed step publishes an
/// invalidation of the key folder, the other replica's cache listener applies it, and the
/// manager attached to that cache reloads.
#[tokio::test]
async fn committed_steps_publish_an_invalidation_that_reloads_other_replicas() {
    let redis = TestRedis::new().await;
    let config = || {
        CachedClient::builder()
            .ttl(Duration::from_secs(60))
            .max_stale(Duration::from_secs(60))
            .redis(redis.url(), None)
            .redis_prefix(redis.prefix())
    };
    let (cache_a, cache_b) = (cached_client(config()), cached_client(config()));
    let mut listener = cache_b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.unwrap();

    let env = Env::new();
    let a = KeyManager::builder(env.store.clone())
        .clock(env.clock.shared())
        .publisher(Arc::new(cache_a.clone()))
        .build()
        .unwrap();
    let b = Arc::new(env.manager(10));
    a.load().await.unwrap();
    b.load().await.unwrap();
    let _watch = b.attach(&cache_b);
    let mut updates = b.ring_updates();
    updates.borrow_and_update();

    a.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while b.jwks().unwrap() != a.jwks().unwrap() {
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("the published invalidation reloads the other replica");
    listener.shutdown().await;
    redis.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_emergency_revoke_stops_trusting_a_key_at_once_and_is_audited() {
    let env = Env::new();
    let m = env.manager(11);
    m.load().await.unwrap();
    let old_kid = m.health().jwt.unwrap().current_kid;
    let token = m.sign(&json!({"sub": "u"}), TTL).unwrap();
    let steps = m.revoke(KeyKind::Jwt, &old_kid, "key leaked").await.unwrap();
    let actions: Vec<&str> = steps.iter().map(|s| s.action.as_str()).collect();
    assert_eq!(actions, ["publish_next", "revoke"]);
    assert!(matches!(m.verify::<Value>(&token), Err(Error::UnknownKid(k)) if k == old_kid));
    let fresh = m.sign(&json!({"sub": "u"}), TTL).unwrap();
    m.verify::<Value>(&fresh).unwrap();
    let health = m.health().jwt.unwrap();
    assert_ne!(health.current_kid, old_kid);
    assert_eq!((health.phase.as_str(), health.published_kids.len()), ("stable", 1));
    assert!(m.verify_rotation().await.unwrap().ok());
    let entry = env.audit.entries().pop().unwrap();
    assert_eq!(
        (entry.action.as_str(), entry.trigger.as_str(), entry.reason.as_str()),
        ("jwt.revoke", "emergency", "key leaked")
    );
    assert!(entry.kids.contains(&old_kid));

    // a published next key is dropped at once
    m.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    let next_kid = m.health().jwt.unwrap().published_kids[1].clone();
    m.revoke(KeyKind::Jwt, &next_kid, "next leaked").await.unwrap();
    assert_eq!(m.jwt_phase(), Some(JwtPhase::Stable));
    assert!(!m.health().jwt.unwrap().published_kids.contains(&next_kid));
    assert!(!env.dump("/auth/jwt").await.contains_key("next_private_key"));

    // the active AES key is replaced at once and what it encrypted no longer decrypts
    let ct = m.encrypt(b"refresh", b"").unwrap();
    let active = AesKeyRing::kid_of(&ct).unwrap();
    let steps = m.revoke(KeyKind::Aes, &active, "aes key leaked").await.unwrap();
    assert_eq!(steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(), ["revoke"]);
    assert!(matches!(m.decrypt(&ct, b""), Err(Error::RetiredKid(k)) if k == active));
    let now = m.encrypt(b"again", b"").unwrap();
    assert_ne!(AesKeyRing::kid_of(&now).unwrap(), active);
    assert_eq!(&*m.decrypt(&now, b"").unwrap(), b"again");
    assert!(m.verify_rotation().await.unwrap().ok());

    assert!(matches!(m.revoke(KeyKind::Jwt, "nope", "").await, Err(Error::UnknownKid(_))));
    // a replica reading the store agrees
    let replica = env.manager(12);
    replica.reload().await.unwrap();
    assert!(matches!(replica.verify::<Value>(&token), Err(Error::UnknownKid(_))));
    replica.verify::<Value>(&fresh).unwrap();
}
