//! The rotation state machine end to end over a file store.

use ikit_keys::cipher::{AesKeyRing, AesKeyState};
use ikit_keys::rotation::JwtPhase;
use ikit_keys::{Error, RotationTarget, Trigger};
use serde_json::{Value, json};

use crate::support::{Env, T0, TTL, long_lived_token, policy, rotate_fully};

#[tokio::test]
async fn a_token_signed_before_the_flip_verifies_until_retirement_and_not_after() {
    let env = Env::new();
    let m = env.manager(1);
    let p = policy();
    let loaded = m.load().await.unwrap();
    assert_eq!(
        loaded.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(),
        ["init", "init", "activate_first"]
    );
    let old_kid = m.health().jwt.unwrap().current_kid;
    let old = long_lived_token(&*env.store, "current", json!({"sub": "before-flip"})).await;
    let old_with_exp = m.sign(&json!({"sub": "x"}), TTL).unwrap();
    assert_eq!(header_kid(&old), old_kid);
    m.verify::<Value>(&old_with_exp).unwrap();

    // not due yet: nothing happens
    let outcome =
        m.rotate(RotationTarget::Jwt, false, "too early", Trigger::Scheduled).await.unwrap();
    assert!(outcome.steps.is_empty(), "{outcome:?}");

    env.clock.set(T0 + p.jwt_rotation_interval);
    let outcome = m.rotate(RotationTarget::Jwt, false, "due", Trigger::Scheduled).await.unwrap();
    assert_eq!(
        outcome.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(),
        ["publish_next"]
    );
    let next_kid = outcome.steps[0].kids[0].clone();
    let jwks = m.jwks().unwrap();
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, [old_kid.as_str(), next_kid.as_str()], "jwks holds current and next");
    assert_eq!(m.jwt_phase(), Some(JwtPhase::NextPublished));
    // the next key is published but does not sign yet
    let during = m.sign(&json!({"sub": "during"}), TTL).unwrap();
    assert_eq!(header_kid(&during), old_kid);
    m.verify::<Value>(&during).unwrap();
    let during = long_lived_token(&*env.store, "current", json!({"sub": "during"})).await;

    env.clock.advance(p.jwt_overlap);
    let outcome =
        m.rotate(RotationTarget::Jwt, false, "overlap over", Trigger::Scheduled).await.unwrap();
    assert_eq!(outcome.rotations(), 1);
    assert_eq!(m.jwt_phase(), Some(JwtPhase::Flipped));
    let after = m.sign(&json!({"sub": "after-flip"}), TTL).unwrap();
    assert_eq!(header_kid(&after), next_kid);
    m.verify::<Value>(&after).unwrap();
    let after = long_lived_token(&*env.store, "current", json!({"sub": "after-flip"})).await;
    for token in [&old, &during, &after] {
        m.verify::<Value>(token).unwrap();
    }
    // a token the manager signed expires with its ttl, long before its key is retired
    assert!(matches!(m.verify::<Value>(&old_with_exp), Err(Error::TokenExpired)));

    // one second before retirement the old key still verifies
    env.clock.advance(p.jwt_overlap - 1);
    assert!(
        m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled)
            .await
            .unwrap()
            .steps
            .is_empty()
    );
    assert_eq!(m.verify::<Value>(&old).unwrap()["sub"], "before-flip");

    env.clock.advance(1);
    let outcome = m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
    assert_eq!(outcome.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(), ["retire"]);
    for token in [&old, &during] {
        assert!(matches!(m.verify::<Value>(token), Err(Error::UnknownKid(k)) if k == old_kid));
    }
    m.verify::<Value>(&after).unwrap();
    assert_eq!(m.jwks().unwrap()["keys"].as_array().unwrap().len(), 1);
    assert_eq!(m.jwt_phase(), Some(JwtPhase::Stable));
    assert!(m.verify_rotation().await.unwrap().ok());

    // a second replica reading the same store agrees
    let replica = env.manager(2);
    replica.reload().await.unwrap();
    assert_eq!(replica.jwks().unwrap(), m.jwks().unwrap());
    assert!(replica.verify::<Value>(&old).is_err());
    assert_eq!(env.actions().iter().filter(|a| a.starts_with("jwt.")).count(), 4);
}

fn header_kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ciphertexts_of_three_successive_active_keys_decrypt_after_the_third_rotation() {
    let env = Env::new();
    let m = env.manager(3);
    m.load().await.unwrap();
    let mut made = Vec::new();
    for round in 0..4 {
        let plaintext = format!("refresh-token-{round}");
        let ct = m.encrypt(plaintext.as_bytes(), b"user-42").unwrap();
        made.push((AesKeyRing::kid_of(&ct).unwrap(), ct, plaintext));
        if round < 3 {
            let actions = rotate_fully(&env, &m, RotationTarget::Aes, Trigger::Manual).await;
            assert_eq!(actions, ["add_next", "activate"]);
        }
    }
    let kids: std::collections::BTreeSet<&str> = made.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kids.len(), 4, "each round encrypted under a new active key");
    for (_, ct, plaintext) in &made {
        assert_eq!(&*m.decrypt(ct, b"user-42").unwrap(), plaintext.as_bytes());
    }
    let ring = m.ring();
    let aes = ring.aes.as_ref().unwrap();
    assert_eq!(aes.keys().filter(|k| k.state == AesKeyState::DecryptOnly).count(), 3);
    assert_eq!(aes.active().unwrap().key.kid(), made[3].0);
    // re-encryption moves old data to the active key
    let moved = m.reencrypt(&made[0].1, b"user-42").unwrap();
    assert_eq!(AesKeyRing::kid_of(&moved).unwrap(), made[3].0);
    assert_eq!(&*m.decrypt(&moved, b"user-42").unwrap(), made[0].2.as_bytes());
    assert!(m.verify_rotation().await.unwrap().ok());
}

#[tokio::test]
async fn aes_schedule_waits_for_activation_and_retires_only_when_forced_and_old() {
    let env = Env::new();
    let m = env.manager(4);
    let p = policy();
    m.load().await.unwrap();
    let first = m.encrypt(b"first", b"").unwrap();
    env.clock.set(T0 + p.aes_rotation_interval);
    let outcome = m.rotate(RotationTarget::Aes, false, "", Trigger::Scheduled).await.unwrap();
    assert_eq!(outcome.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(), ["add_next"]);
    // the pending key is loaded but does not encrypt yet
    assert_eq!(
        AesKeyRing::kid_of(&m.encrypt(b"x", b"").unwrap()).unwrap(),
        AesKeyRing::kid_of(&first).unwrap()
    );
    let dump = env.dump("/auth/aes").await;
    assert!(dump.contains_key("next_key"));
    env.clock.advance(p.aes_activation_delay);
    let outcome = m.rotate(RotationTarget::Aes, false, "", Trigger::Scheduled).await.unwrap();
    assert_eq!(outcome.rotations(), 1);
    assert!(!env.dump("/auth/aes").await.contains_key("next_key"));

    // old enough, but not forced: never retired
    env.clock.advance(p.aes_retire_after);
    let outcome = m.rotate(RotationTarget::Aes, false, "", Trigger::Scheduled).await.unwrap();
    assert!(outcome.steps.iter().all(|s| s.action != "retire"), "{outcome:?}");
    assert_eq!(&*m.decrypt(&first, b"").unwrap(), b"first");

    let outcome =
        m.rotate(RotationTarget::Aes, true, "retire old keys", Trigger::Forced).await.unwrap();
    assert_eq!(outcome.steps[0].action, "retire");
    assert!(matches!(m.decrypt(&first, b""), Err(Error::RetiredKid(_))));
    let ring = m.ring();
    assert_eq!(
        ring.aes.as_ref().unwrap().keys().filter(|k| k.state == AesKeyState::Retired).count(),
        1
    );
    assert!(m.verify_rotation().await.unwrap().ok());
}

/// `force` skips the schedule, never the overlap: a forced rotation publishes the next key (and
/// adds the next AES key) at once, and the new keys sign and encrypt only once every replica and
/// every verifier caching JWKS has had the overlap (the activation delay) to learn them.
#[tokio::test]
async fn a_forced_rotation_publishes_now_and_flips_only_after_the_overlap() {
    let env = Env::new();
    let m = env.manager(5);
    let p = policy();
    m.load().await.unwrap();
    let old = m.sign(&json!({"sub": "a"}), TTL).unwrap();
    let old_ct = m.encrypt(b"x", b"").unwrap();
    let outcome =
        m.rotate(RotationTarget::Both, true, "key leaked", Trigger::Forced).await.unwrap();
    let actions: Vec<&str> = outcome.steps.iter().map(|s| s.action.as_str()).collect();
    assert_eq!(actions, ["publish_next", "add_next"]);
    assert_eq!(outcome.rotations(), 0);
    assert_eq!(m.jwt_phase(), Some(JwtPhase::NextPublished));
    assert_eq!(header_kid(&m.sign(&json!({}), TTL).unwrap()), header_kid(&old), "not signing yet");
    let same_key = AesKeyRing::kid_of(&m.encrypt(b"y", b"").unwrap()).unwrap();
    assert_eq!(same_key, AesKeyRing::kid_of(&old_ct).unwrap(), "not encrypting yet");
    let health = m.health();
    assert_eq!(health.jwt.as_ref().unwrap().published_kids.len(), 2);
    assert_eq!(health.jwt.as_ref().unwrap().next_step_at, T0 + p.jwt_overlap);
    assert_eq!(health.aes.as_ref().unwrap().next_step_at, T0 + p.aes_activation_delay);
    assert_eq!(health.last_aes.as_ref().unwrap().detail, "add_next");

    // forcing again changes nothing while the overlap runs
    let again = m.rotate(RotationTarget::Both, true, "again", Trigger::Forced).await.unwrap();
    assert!(again.steps.is_empty(), "{again:?}");
    env.clock.advance(p.aes_activation_delay - 1);
    assert!(
        m.rotate(RotationTarget::Both, true, "", Trigger::Forced).await.unwrap().steps.is_empty()
    );
    env.clock.advance(1);
    let activated = m.rotate(RotationTarget::Both, false, "", Trigger::Scheduled).await.unwrap();
    assert_eq!(activated.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(), ["activate"]);
    assert_ne!(AesKeyRing::kid_of(&m.encrypt(b"z", b"").unwrap()).unwrap(), same_key);

    env.clock.set(T0 + p.jwt_overlap - 1);
    assert!(
        m.rotate(RotationTarget::Jwt, true, "", Trigger::Forced).await.unwrap().steps.is_empty()
    );
    env.clock.advance(1);
    let flipped = m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
    assert_eq!(flipped.rotations(), 1);
    assert_eq!(m.jwt_phase(), Some(JwtPhase::Flipped));
    assert_ne!(header_kid(&m.sign(&json!({}), TTL).unwrap()), header_kid(&old));
    assert_eq!(m.health().jwt.unwrap().published_kids.len(), 2, "the old key stays published");
}
