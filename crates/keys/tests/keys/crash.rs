//! A failure injected before every storage write of a rotation step, then a fresh manager: the
//! folders end consistent, every key that was committed is still there, and the rotation
//! completes.

use std::sync::Arc;

use ikit_keys::cipher::AesKeyRing;
use ikit_keys::rotation::JwtPhase;
use ikit_keys::{Error, KeyManager, RotationTarget, Trigger};
use serde_json::{Value, json};

use crate::support::{Env, FailingStore, TTL, long_lived_token, policy};

#[derive(Clone, Copy, Debug)]
enum Scenario {
    JwtInit,
    JwtPublish,
    JwtFlip,
    JwtRetire,
    AesInit,
    AesAdd,
    AesActivate,
    AesRetire,
}

/// Brings a fresh store to the state just before the scenario's step and returns the tokens and
/// ciphertexts made so far.
async fn prepare(env: &Env, scenario: Scenario) -> (Vec<String>, Vec<String>) {
    use Scenario::*;
    let p = policy();
    let m = env.manager(11);
    if matches!(scenario, JwtInit | AesInit) {
        return (vec![], vec![]);
    }
    m.load().await.unwrap();
    let mut tokens = vec![long_lived_token(&*env.store, "current", json!({"n": 0})).await];
    let mut cts = vec![m.encrypt(b"c0", b"").unwrap()];
    match scenario {
        JwtPublish => env.clock.advance(p.jwt_rotation_interval),
        JwtFlip | JwtRetire => {
            env.clock.advance(p.jwt_rotation_interval);
            m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
            env.clock.advance(p.jwt_overlap);
            if matches!(scenario, JwtRetire) {
                m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.unwrap();
                tokens.push(long_lived_token(&*env.store, "current", json!({"n": 1})).await);
                env.clock.advance(p.jwt_overlap);
            }
        }
        AesAdd => env.clock.advance(p.aes_rotation_interval),
        AesActivate | AesRetire => {
            env.clock.advance(p.aes_rotation_interval);
            m.rotate(RotationTarget::Aes, false, "", Trigger::Scheduled).await.unwrap();
            env.clock.advance(p.aes_activation_delay);
            if matches!(scenario, AesRetire) {
                m.rotate(RotationTarget::Aes, false, "", Trigger::Scheduled).await.unwrap();
                cts.push(m.encrypt(b"c1", b"").unwrap());
                env.clock.advance(p.aes_retire_after);
            }
        }
        _ => {}
    }
    (tokens, cts)
}

async fn step(m: &KeyManager, scenario: Scenario) -> ikit_keys::Result<()> {
    use Scenario::*;
    match scenario {
        JwtInit | AesInit => m.load().await.map(drop),
        JwtPublish | JwtFlip | JwtRetire => {
            m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled).await.map(drop)
        }
        AesAdd | AesActivate => {
            m.rotate(RotationTarget::Aes, false, "", Trigger::Scheduled).await.map(drop)
        }
        AesRetire => m.rotate(RotationTarget::Aes, true, "", Trigger::Forced).await.map(drop),
    }
}

/// What must hold once the step has completed.
fn assert_done(m: &KeyManager, scenario: Scenario, tokens: &[String], cts: &[String]) {
    use Scenario::*;
    let health = m.health();
    let (jwt, aes) = (health.jwt.unwrap(), health.aes.unwrap());
    match scenario {
        JwtInit => assert_eq!(jwt.phase, "stable"),
        JwtPublish => {
            assert_eq!((jwt.phase.as_str(), jwt.published_kids.len()), ("next_published", 2))
        }
        JwtFlip => assert_eq!((jwt.phase.as_str(), jwt.published_kids.len()), ("flipped", 2)),
        JwtRetire => assert_eq!((jwt.phase.as_str(), jwt.published_kids.len()), ("stable", 1)),
        AesInit => assert!(aes.active_kid.is_some()),
        AesAdd => assert!(aes.pending_kid.is_some()),
        AesActivate => assert_eq!((aes.pending_kid.as_ref(), aes.decrypt_only), (None, 1)),
        AesRetire => {
            assert_eq!((aes.decrypt_only, aes.retired, aes.pending_kid.is_some()), (0, 1, true))
        }
    }
    for (i, token) in tokens.iter().enumerate() {
        let retired = matches!(scenario, JwtRetire) && i == 0;
        let result = m.verify::<Value>(token);
        assert_eq!(result.is_ok(), !retired, "{scenario:?} token {i}: {result:?}");
    }
    for (i, ct) in cts.iter().enumerate() {
        let retired = matches!(scenario, AesRetire) && i == 0;
        let result = m.decrypt(ct, b"");
        if retired {
            assert!(matches!(result, Err(Error::RetiredKid(_))), "{scenario:?}");
        } else {
            assert_eq!(
                &*result.unwrap(),
                format!("c{i}").as_bytes(),
                "{scenario:?} ciphertext {i}"
            );
        }
    }
}

async fn crash_at_every_write(scenario: Scenario) -> usize {
    let mut index = 0;
    loop {
        let env = Env::new();
        let (tokens, cts) = prepare(&env, scenario).await;
        // the key a retire step removes may be gone once its commit is written; nothing else may
        let before_kids = kids_in(&env, !matches!(scenario, Scenario::JwtRetire)).await;
        let failing = Arc::new(FailingStore::new(env.store.clone()));
        let m = env.manager_on(failing.clone(), 12, None);
        failing.arm(index);
        let result = step(&m, scenario).await;
        if !failing.injected() {
            // the step has `index` writes: every one of them has had a failure before it
            result.unwrap();
            assert_done(&m, scenario, &tokens, &cts);
            assert_eq!(failing.writes(), index);
            return index;
        }
        assert!(matches!(result, Err(Error::Store(_))), "{scenario:?} write {index}: {result:?}");

        // a fresh manager over the same store loads a consistent state and loses no key
        let fresh = env.manager(13);
        fresh.load().await.unwrap();
        let report = fresh.verify_rotation().await.unwrap();
        assert!(report.ok(), "{scenario:?} write {index}: {:?}", report.failures());
        let after_kids = kids_in(&env, true).await;
        for kid in &before_kids {
            assert!(after_kids.contains(kid), "{scenario:?} write {index}: key {kid} lost");
        }
        for (i, token) in tokens.iter().enumerate() {
            match fresh.verify::<Value>(token) {
                Ok(_) => {}
                Err(Error::UnknownKid(_)) if matches!(scenario, Scenario::JwtRetire) && i == 0 => {}
                Err(e) => panic!("{scenario:?} write {index}: token {i}: {e}"),
            }
        }
        for (i, ct) in cts.iter().enumerate() {
            match fresh.decrypt(ct, b"") {
                Ok(plain) => assert_eq!(&*plain, format!("c{i}").as_bytes()),
                Err(Error::RetiredKid(_)) if matches!(scenario, Scenario::AesRetire) && i == 0 => {}
                Err(e) => panic!("{scenario:?} write {index}: ciphertext {i}: {e}"),
            }
        }
        // and the next rotation call completes the step (a forced one too: force only starts a
        // rotation, so repeating it once the next key is added does nothing more)
        step(&fresh, scenario).await.unwrap();
        assert_done(&fresh, scenario, &tokens, &cts);
        assert!(fresh.verify_rotation().await.unwrap().ok());
        let again = (env.dump("/auth/jwt").await, env.dump("/auth/aes").await);
        step(&fresh, scenario).await.unwrap();
        let after = (env.dump("/auth/jwt").await, env.dump("/auth/aes").await);
        assert_eq!(after, again, "{scenario:?}: repeating the call changes nothing");
        index += 1;
    }
}

/// Every key id stored in either folder (committed keys, published keys, the AES key map).
async fn kids_in(env: &Env, with_previous: bool) -> Vec<String> {
    let mut kids = Vec::new();
    let jwt = env.dump("/auth/jwt").await;
    if let Some(state) = jwt.get("rotation_state") {
        let state: Value = serde_json::from_str(state).unwrap();
        kids.push(state["current_kid"].as_str().unwrap().to_owned());
        if let Some(next) = state["next"]["kid"].as_str() {
            kids.push(next.to_owned());
        }
        if with_previous {
            for p in state["previous"].as_array().unwrap() {
                kids.push(p["kid"].as_str().unwrap().to_owned());
            }
        }
    }
    if let Some(map) = env.dump("/auth/aes").await.get("keys_map") {
        let ring = AesKeyRing::from_keys_map(map).unwrap();
        kids.extend(ring.keys().map(|k| k.key.kid().to_owned()));
    }
    kids
}

#[tokio::test]
async fn jwt_steps_survive_a_crash_before_every_write() {
    let mut counts = Vec::new();
    for scenario in
        [Scenario::JwtInit, Scenario::JwtPublish, Scenario::JwtFlip, Scenario::JwtRetire]
    {
        counts.push((scenario, crash_at_every_write(scenario).await));
    }
    // load on an empty store creates both systems: 4 jwt writes, then 2 + 4 aes writes
    let writes: Vec<usize> = counts.iter().map(|c| c.1).collect();
    assert_eq!(writes, [10, 4, 5, 2], "{counts:?}");
}

#[tokio::test]
async fn aes_steps_survive_a_crash_before_every_write() {
    let mut counts = Vec::new();
    for scenario in
        [Scenario::AesInit, Scenario::AesAdd, Scenario::AesActivate, Scenario::AesRetire]
    {
        counts.push((scenario, crash_at_every_write(scenario).await));
    }
    // a forced rotation retires the old key (1 write) and adds the next one (2 writes)
    let writes: Vec<usize> = counts.iter().map(|c| c.1).collect();
    assert_eq!(writes, [10, 2, 4, 3], "{counts:?}");
}

#[tokio::test]
async fn a_flip_interrupted_after_its_commit_is_finished_by_load() {
    let env = Env::new();
    let (tokens, _) = prepare(&env, Scenario::JwtFlip).await;
    let failing = Arc::new(FailingStore::new(env.store.clone()));
    let m = env.manager_on(failing.clone(), 12, None);
    // write 0 is the state commit; stop before the private key slot is rewritten
    failing.arm(1);
    assert!(step(&m, Scenario::JwtFlip).await.is_err());
    let dump = env.dump("/auth/jwt").await;
    let state: Value = serde_json::from_str(&dump["rotation_state"]).unwrap();
    assert_eq!(state["next"], Value::Null, "the flip is committed");
    assert!(
        dump.contains_key("next_private_key"),
        "the new current key still sits in the next slot"
    );

    let fresh = env.manager(13);
    let loaded = fresh.load().await.unwrap();
    assert_eq!(loaded.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(), ["repair"]);
    assert_eq!(fresh.jwt_phase(), Some(JwtPhase::Flipped));
    assert!(!env.dump("/auth/jwt").await.contains_key("next_private_key"));
    fresh.verify::<Value>(&tokens[0]).unwrap();
    let new = fresh.sign(&json!({}), TTL).unwrap();
    fresh.verify::<Value>(&new).unwrap();
}
