//! The manager's other entry points: policy refusal, imports, reload, verification, health,
//! metrics, the scheduler and rejection of tampered input.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ikit_common::SecretValue;
use ikit_keys::cipher::AesKeyRing;
use ikit_keys::jwt::{JwtAlgorithm, JwtKey};
use ikit_keys::policy::{HOUR, Policy};
use ikit_keys::store::KeyStore;
use ikit_keys::{Error, KeyManager, RotationTarget, Trigger, spawn_scheduler};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::support::{Env, FailingStore, T0, TTL, policy, rotate_fully};

#[test]
fn an_unsafe_policy_is_refused_at_load() {
    let env = Env::new();
    let unsafe_policy = Policy { max_token_ttl: 30 * HOUR, ..Policy::default() };
    let err = KeyManager::builder(env.store.clone()).policy(unsafe_policy).build().unwrap_err();
    assert!(matches!(&err, Error::UnsafePolicy(m) if m.contains("max_token_ttl")), "{err}");
    let err =
        KeyManager::builder(env.store.clone()).folders("/auth/x", "/auth/x").build().unwrap_err();
    assert!(matches!(err, Error::UnsafePolicy(_)));
}

#[tokio::test]
async fn readers_fail_clearly_before_load() {
    let env = Env::new();
    let m = env.manager(1);
    assert!(matches!(m.sign(&json!({}), TTL), Err(Error::NotLoaded)));
    assert!(matches!(m.encrypt(b"x", b""), Err(Error::NotLoaded)));
}

#[tokio::test]
async fn tampered_tokens_and_ciphertexts_are_rejected_through_the_manager() {
    let env = Env::new();
    let m = env.manager(2);
    m.load().await.unwrap();
    let token = m.sign(&json!({"sub": "u", "role": "user"}), TTL).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(json!({"sub": "u", "role": "admin"}).to_string());
    assert!(matches!(m.verify::<Value>(&parts.join(".")), Err(Error::InvalidSignature)));
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap())
            .unwrap();
    let hs = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": header["kid"]}).to_string()),
        token.split('.').nth(1).unwrap(),
        token.split('.').nth(2).unwrap()
    );
    assert!(matches!(m.verify::<Value>(&hs), Err(Error::AlgorithmMismatch { .. })));

    let ct = m.encrypt(b"refresh", b"user-1").unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(&ct).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    assert!(matches!(m.decrypt(&URL_SAFE_NO_PAD.encode(&bytes), b"user-1"), Err(Error::Tampered)));
    assert!(matches!(m.decrypt(&ct, b"user-2"), Err(Error::Tampered)));
}

#[tokio::test]
async fn imports_keep_tokens_and_ciphertexts_made_outside() {
    let env = Env::new();
    let m = env.manager(3);
    // a team's existing signing key and AES keys, as they were in environment variables
    let mut rng = StdRng::seed_from_u64(99);
    let env_key = JwtKey::generate(JwtAlgorithm::EdDSA, &mut rng).unwrap();
    let old_token = env_key.sign(&json!({"sub": "from-env", "exp": T0 + 3600})).unwrap();
    let step = m.import_jwt_key(env_key.pem(), "move off env").await.unwrap();
    assert_eq!(step.kids, [env_key.kid().to_owned()]);

    let aes_bytes = [[1u8; 32], [2u8; 32]];
    let mut keys = BTreeMap::new();
    keys.insert("legacy-1".to_owned(), SecretValue::new(STANDARD.encode(aes_bytes[0])));
    keys.insert("legacy-2".to_owned(), SecretValue::new(STANDARD.encode(aes_bytes[1])));
    m.import_aes_keys(&keys, "legacy-2", "move off env").await.unwrap();
    m.load().await.unwrap();

    assert_eq!(m.verify::<Value>(&old_token).unwrap()["sub"], "from-env");
    assert_eq!(m.health().jwt.unwrap().algorithm, "EdDSA");
    let legacy_ring = AesKeyRing::from_keys_map(&env.dump("/auth/aes").await["keys_map"]).unwrap();
    let legacy_ct =
        legacy_ring.get("legacy-1").unwrap().key.seal(&mut rng, b"old data", b"").unwrap();
    assert_eq!(&*m.decrypt(&URL_SAFE_NO_PAD.encode(legacy_ct), b"").unwrap(), b"old data");
    assert_eq!(AesKeyRing::kid_of(&m.encrypt(b"new", b"").unwrap()).unwrap(), "legacy-2");
    assert!(m.verify_rotation().await.unwrap().ok());

    // a second signing key goes in as the next key; a third is refused while it is pending
    let second = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
    m.import_jwt_key(second.pem(), "second").await.unwrap();
    assert_eq!(m.health().jwt.unwrap().phase, "next_published");
    let third = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
    assert!(matches!(
        m.import_jwt_key(third.pem(), "third").await,
        Err(Error::RotationInProgress(_))
    ));
    // the same kid with other material is refused
    let mut clash = BTreeMap::new();
    clash.insert("legacy-1".to_owned(), SecretValue::new(STANDARD.encode([9u8; 32])));
    assert!(matches!(m.import_aes_keys(&clash, "legacy-1", "").await, Err(Error::InvalidKey(_))));
    let audit = env.actions();
    assert!(
        audit.contains(&"jwt.import".to_owned()) && audit.contains(&"aes.import".to_owned()),
        "{audit:?}"
    );
    assert!(env.audit.entries().iter().all(|e| !e.outcome.contains("PRIVATE")));
}

#[tokio::test]
async fn verify_rotation_reports_a_broken_jwks_and_a_dangling_active_kid() {
    let env = Env::new();
    let m = env.manager(4);
    m.load().await.unwrap();
    m.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    assert!(m.verify_rotation().await.unwrap().ok());
    env.store
        .upsert("/auth/jwt", vec![("public_jwks".into(), r#"{"keys":[]}"#.into())])
        .await
        .unwrap();
    env.store.upsert("/auth/aes", vec![("active_kid".into(), "nope".into())]).await.unwrap();
    let report = m.verify_rotation().await.unwrap();
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["public_jwks holds required keys", "active_kid is in keys_map"]);
    // load repairs both
    let loaded = m.load().await.unwrap();
    assert_eq!(loaded.steps.len(), 2);
    assert!(m.verify_rotation().await.unwrap().ok());
}

#[tokio::test]
async fn reload_swaps_the_ring_seen_by_another_replica() {
    let env = Env::new();
    let (a, b) = (Arc::new(env.manager(5)), Arc::new(env.manager(6)));
    a.load().await.unwrap();
    b.load().await.unwrap();
    let before = b.jwks().unwrap();
    rotate_fully(&env, &a, RotationTarget::Both, Trigger::Manual).await;
    let fresh_token = a.sign(&json!({"sub": "new"}), TTL).unwrap();
    assert_eq!(b.jwks().unwrap(), before, "b has not reloaded yet");
    assert!(matches!(b.verify::<Value>(&fresh_token), Err(Error::UnknownKid(_))));

    // readers keep working while the ring is swapped under them
    let reader = {
        let b = b.clone();
        let token = b.sign(&json!({"sub": "old"}), TTL).unwrap();
        tokio::spawn(async move {
            for _ in 0..200 {
                b.verify::<Value>(&token).unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for _ in 0..5 {
        b.reload().await.unwrap();
    }
    reader.await.unwrap();
    assert_eq!(b.jwks().unwrap(), a.jwks().unwrap());
    assert_eq!(b.verify::<Value>(&fresh_token).unwrap()["sub"], "new");
    let ct = a.encrypt(b"x", b"").unwrap();
    assert_eq!(&*b.decrypt(&ct, b"").unwrap(), b"x");
}

/// A run builds the ring from the folders it settled and wrote: each is read once (the in-process
/// lock does not fence), only an untouched folder is read again, and the ring installed is the
/// one a fresh reload builds.
#[tokio::test]
async fn runs_read_each_folder_once_and_install_what_they_wrote() {
    let env = Env::new();
    let counting = Arc::new(FailingStore::new(env.store.clone()));
    let m = env.manager_on(counting.clone(), 7, None);
    m.load().await.unwrap();
    assert_eq!(counting.reads(), 2, "load reads each folder once");
    let before = m.jwks().unwrap();
    m.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    assert_eq!(counting.reads(), 4, "the jwt folder once, and the untouched aes folder");
    assert_ne!(m.jwks().unwrap(), before, "the ring holds the published next key");
    m.rotate(RotationTarget::Both, true, "", Trigger::Manual).await.unwrap();
    assert_eq!(counting.reads(), 6, "each folder once");
    let installed = m.health();
    assert!(installed.aes.as_ref().unwrap().pending_kid.is_some(), "the new aes key is loaded");
    m.reload().await.unwrap();
    assert_eq!(m.health(), installed);
    assert_eq!(env.dump("/auth/jwt").await["public_jwks"], m.jwks().unwrap().to_string());
}

fn counter(rendered: &str, name: &str, method: &str) -> u64 {
    rendered
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{method=\"{method}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn rotations_are_counted_by_method() {
    let handle = ikit_common::telemetry::metrics_handle();
    let env = Env::new();
    let m = env.manager(7);
    m.load().await.unwrap();
    let before = handle.render();
    let actions = rotate_fully(&env, &m, RotationTarget::Both, Trigger::Webhook).await;
    assert_eq!(actions, ["publish_next", "add_next", "flip", "activate"]);
    let after = handle.render();
    for name in ["jwt_key_rotation_total", "aes_key_rotation_total"] {
        assert_eq!(
            counter(&after, name, "webhook"),
            counter(&before, name, "webhook") + 1,
            "{name}\n{after}"
        );
    }
}

#[tokio::test]
async fn the_scheduler_runs_due_rotations_and_stops_on_shutdown() {
    let env = Env::new();
    let m = Arc::new(env.manager(8));
    m.load().await.unwrap();
    assert!(m.due().is_empty());
    env.clock.set(T0 + policy().aes_rotation_interval);
    assert_eq!(m.due().len(), 2, "both systems are due");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (task, mut reports) = spawn_scheduler(m.clone(), Duration::from_secs(3600), shutdown);
    let first = reports.recv().await.expect("first tick report");
    let actions: Vec<&str> = first.steps.iter().map(|s| s.action.as_str()).collect();
    assert_eq!(actions, ["publish_next", "add_next"]);
    stop.send(true).unwrap();
    task.await.unwrap();
    let health = m.health();
    assert_eq!(health.jwt.as_ref().unwrap().phase, "next_published");
    assert!(health.aes.as_ref().unwrap().pending_kid.is_some());
    assert_eq!(health.last_jwt.as_ref().unwrap().trigger, Trigger::Scheduled);
    assert_eq!(
        health.jwt.as_ref().unwrap().next_step_at,
        T0 + policy().aes_rotation_interval + policy().jwt_overlap
    );
}

#[tokio::test]
async fn health_reports_ages_and_next_due_rotation() {
    let env = Env::new();
    let m = env.manager(9);
    m.load().await.unwrap();
    env.clock.advance(1000);
    let health = m.health();
    let jwt = health.jwt.unwrap();
    assert_eq!(
        (jwt.algorithm.as_str(), jwt.current_age_seconds, jwt.phase.as_str()),
        ("ES256", 1000, "stable")
    );
    assert_eq!(jwt.next_step_at, T0 + policy().jwt_rotation_interval);
    let aes = health.aes.unwrap();
    assert_eq!(aes.active_age_seconds, Some(1000));
    assert_eq!(aes.next_step_at, T0 + policy().aes_rotation_interval);
    assert_eq!(health.loaded_at, Some(T0));
    let text = serde_json::to_string(&m.health()).unwrap();
    assert!(!text.contains("PRIVATE"));
}

#[tokio::test]
async fn steps_reach_the_common_audit_log() {
    use ikit_common::audit::{AuditFilter, AuditLog, AuditOptions, Outcome};
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("audit.db").display());
    let log = AuditLog::connect(&url, AuditOptions::new(dir.path().join("spool"))).unwrap();
    let m = KeyManager::builder(env.store.clone())
        .clock(env.clock.shared())
        .audit(Arc::new(log.clone()))
        .rng(StdRng::seed_from_u64(10))
        .build()
        .unwrap();
    m.load().await.unwrap();
    m.rotate(RotationTarget::Jwt, true, "incident 42", Trigger::Forced).await.unwrap();
    env.clock.advance(policy().jwt_overlap);
    m.rotate(RotationTarget::Jwt, false, "incident 42", Trigger::Forced).await.unwrap();
    let records = log.query(&AuditFilter::default()).await.unwrap();
    let actions: Vec<&str> = records.iter().map(|r| r.event.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "key.jwt.init",
            "key.aes.init",
            "key.aes.activate_first",
            "key.jwt.publish_next",
            "key.jwt.flip"
        ]
    );
    let flip = &records[4].event;
    assert_eq!((flip.actor.as_str(), flip.outcome), ("ikit-keys/forced", Outcome::Success));
    assert_eq!(flip.details["reason"], "incident 42");
    assert_eq!(flip.time_ms, (T0 + policy().jwt_overlap) * 1000);
    assert!(matches!(
        log.verify_chain().await.unwrap(),
        ikit_common::audit::ChainStatus::Intact { rows: 5 }
    ));
}

#[tokio::test]
async fn a_change_under_auth_reloads_and_others_do_not() {
    let env = Env::new();
    let (a, b) = (env.manager(11), env.manager(12));
    a.load().await.unwrap();
    b.load().await.unwrap();
    a.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await.unwrap();
    assert!(!b.on_change("/app/DB_URL").await.unwrap());
    assert_ne!(b.jwks().unwrap(), a.jwks().unwrap());
    assert!(b.on_change("/auth/*").await.unwrap());
    assert_eq!(b.jwks().unwrap(), a.jwks().unwrap());
}

#[tokio::test]
async fn no_key_material_reaches_the_logs() {
    let (buffer, _guard) = ikit_common::testsuite::LogCapture::start("trace");

    let env = Env::new();
    // the default audit sink logs every step
    let m = KeyManager::builder(env.store.clone())
        .clock(env.clock.shared())
        .rng(StdRng::seed_from_u64(12))
        .build()
        .unwrap();
    m.load().await.unwrap();
    rotate_fully(&env, &m, RotationTarget::Both, Trigger::Manual).await;
    let mut rng = StdRng::seed_from_u64(13);
    let imported = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
    m.import_jwt_key(imported.pem(), "log check").await.unwrap();
    let _ = m.encrypt(b"refresh-token-plaintext", b"").unwrap();
    let _ = format!("{m:?} {:?} {:?}", m.ring(), m.health());

    let logs = buffer.text();
    assert!(logs.contains("key audit"), "the steps were logged: {logs}");
    let mut secrets: Vec<String> = Vec::new();
    for (name, value) in env.dump("/auth/jwt").await {
        if name.ends_with("private_key") {
            secrets.extend(value.lines().filter(|l| !l.starts_with("-----")).map(str::to_owned));
        }
    }
    let ring = AesKeyRing::from_keys_map(&env.dump("/auth/aes").await["keys_map"]).unwrap();
    secrets.extend(ring.keys().map(|k| k.key.to_base64().expose().to_owned()));
    secrets.extend(
        imported.pem().expose().lines().filter(|l| !l.starts_with("-----")).map(str::to_owned),
    );
    assert!(secrets.len() >= 5);
    let debug = format!("{:?}", m.ring());
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a key leaked into the logs");
        assert!(!debug.contains(secret.as_str()), "a key leaked into Debug");
    }
    assert!(!logs.contains("refresh-token-plaintext"));
}

#[tokio::test]
async fn load_serves_committed_keys_when_the_lock_backend_is_down() {
    use ikit_keys::lock::PgAdvisoryLock;
    let env = Env::new();
    env.manager(14).load().await.unwrap();
    // nothing listens on port 1: every lock attempt fails to connect
    let down = Arc::new(
        PgAdvisoryLock::from_url("postgres://postgres@127.0.0.1:1/postgres", "x").unwrap(),
    );
    let m = env.manager_on(env.store.clone(), 15, Some(down));
    let outcome = m.load().await.unwrap();
    assert!(outcome.busy && outcome.steps.is_empty());
    let token = m.sign(&json!({"sub": "u"}), TTL).unwrap();
    assert_eq!(m.verify::<Value>(&token).unwrap()["sub"], "u");
    // but rotating without the lock is refused
    assert!(matches!(
        m.rotate(RotationTarget::Jwt, true, "", Trigger::Manual).await,
        Err(Error::Lock(_))
    ));
}

#[tokio::test]
async fn a_lone_private_key_is_adopted_and_a_stray_next_key_is_never_dropped() {
    let env = Env::new();
    let mut rng = StdRng::seed_from_u64(16);
    let lone = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
    let token = lone.sign(&json!({"sub": "old", "exp": T0 + 3600})).unwrap();
    env.store
        .upsert("/auth/jwt", vec![("current_private_key".into(), lone.pem().clone())])
        .await
        .unwrap();
    let m = env.manager(17);
    let loaded = m.load().await.unwrap();
    assert_eq!(loaded.steps[0].action, "adopt");
    assert_eq!(m.verify::<Value>(&token).unwrap()["sub"], "old");
    assert!(m.verify_rotation().await.unwrap().ok());

    let other = Env::new();
    let stray = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
    other
        .store
        .upsert("/auth/jwt", vec![("next_private_key".into(), stray.pem().clone())])
        .await
        .unwrap();
    assert!(matches!(other.manager(18).load().await, Err(Error::State(_))));
    assert!(
        other.dump("/auth/jwt").await.contains_key("next_private_key"),
        "the stray key is kept"
    );
}

#[tokio::test]
async fn sign_sets_iat_and_exp_within_the_max_token_ttl_and_verify_requires_exp() {
    let env = Env::new();
    let m = env.manager(19);
    m.load().await.unwrap();
    let token = m.sign(&json!({"sub": "u"}), TTL).unwrap();
    let claims: Value = m.verify(&token).unwrap();
    assert_eq!((claims["iat"].as_i64(), claims["exp"].as_i64()), (Some(T0), Some(T0 + 600)));
    let max = policy().max_token_ttl;
    let too_long = Duration::from_secs(max as u64 + 1);
    assert!(
        matches!(m.sign(&json!({}), too_long), Err(Error::TokenTtl { max: m, .. }) if m == max)
    );
    assert!(matches!(m.sign(&json!({}), Duration::ZERO), Err(Error::TokenTtl { .. })));
    m.sign(&json!({}), Duration::from_secs(max as u64)).unwrap();
    assert!(matches!(m.sign(&json!({"exp": T0 + 99_999}), TTL), Err(Error::Sign(_))));
    assert!(matches!(m.sign(&json!("text"), TTL), Err(Error::Sign(_))));
    env.clock.advance(600 + policy().clock_skew - 1);
    m.verify::<Value>(&token).unwrap();
    env.clock.advance(1);
    assert!(matches!(m.verify::<Value>(&token), Err(Error::TokenExpired)));

    // a token without exp would verify forever: refused by default
    let current = env.dump("/auth/jwt").await["current_private_key"].clone();
    let forever = JwtKey::from_pem(&current).unwrap().sign(&json!({"sub": "u"})).unwrap();
    assert!(matches!(m.verify::<Value>(&forever), Err(Error::MissingClaim("exp"))));

    // issuer and audience
    let api = KeyManager::builder(env.store.clone())
        .clock(env.clock.shared())
        .issuer("https://auth.test")
        .audience("api")
        .build()
        .unwrap();
    api.reload().await.unwrap();
    let for_api = api.sign(&json!({"aud": "api"}), TTL).unwrap();
    let claims: Value = api.verify(&for_api).unwrap();
    assert_eq!(claims["iss"], "https://auth.test");
    assert!(matches!(m.verify::<Value>(&for_api), Err(Error::InvalidAudience)));
    let unaddressed = m.sign(&json!({}), TTL).unwrap();
    assert!(matches!(api.verify::<Value>(&unaddressed), Err(Error::InvalidAudience)));
    let other_issuer = m.sign(&json!({"aud": "api", "iss": "https://evil.test"}), TTL).unwrap();
    assert!(matches!(api.verify::<Value>(&other_issuer), Err(Error::InvalidIssuer)));
}
