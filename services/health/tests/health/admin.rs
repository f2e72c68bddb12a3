//! The admin side: bearer tokens, audit rows, rotation through the leader lock, the schedule,
//! and cache invalidation through the client's fan-out.

use std::time::Duration;

use ikit_client::{CachedClient, Client, ClientConfig};
use ikit_common::audit::Outcome;
use ikit_common::testsuite::TestRedis;
use ikit_keys::jwt::{JwkSet, VerifyOptions};
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, DAY, Options, PREVIOUS_ADMIN_TOKEN, emulator, kids, spawn_app, spawn_app_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_without_the_token_are_refused_and_audited() {
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;
    let body = json!({"rotation_type": "jwt", "force": true, "reason": "try"});
    let before = kids(&t.jwks().await);

    let (status, answer) = t.rotate(None, body.clone()).await;
    assert_eq!((status, answer["error"].as_str()), (401, Some("unauthorized")));
    let (status, _) = t.rotate(Some("test-admin-token-0000000009"), body.clone()).await;
    assert_eq!(status, 401);
    let r = t
        .http
        .post(format!("{}/api/v1/infisical/cache/invalidate?pattern=/app/*", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(kids(&t.jwks().await), before, "nothing rotated");

    let denied = t.audit("admin.rotate", Some(Outcome::Denied)).await;
    assert_eq!(denied.len(), 2, "both refusals are audit rows");
    assert!(denied.iter().all(|r| r.event.actor == "anonymous"));
    assert_eq!(t.audit("admin.cache.invalidate", Some(Outcome::Denied)).await.len(), 1);

    // the second (previous) token is accepted while the first is rotated
    let bad = json!({"rotation_type": "rsa", "reason": "x"});
    let (status, answer) = t.rotate(Some(PREVIOUS_ADMIN_TOKEN), bad).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_request")), "{answer}");
    let no_reason = json!({"rotation_type": "jwt", "reason": " "});
    assert_eq!(t.rotate(Some(ADMIN_TOKEN), no_reason).await.0, 400);
    let failures = t.audit("admin.rotate", Some(Outcome::Failure)).await;
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].event.actor, "admin:previous-token");
    t.stop().await;
    emu.shutdown().await;
}

/// Publish next -> JWKS holds current and next -> flip after the overlap -> a token signed
/// before the flip still verifies and a new one carries the new kid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_next_then_flips_and_old_tokens_keep_verifying() {
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;
    let old = kids(&t.jwks().await);
    assert_eq!(old.len(), 1);

    let body = json!({"rotation_type": "jwt", "force": false, "reason": "quarterly"});
    let (status, answer) = t.rotate(Some(ADMIN_TOKEN), body.clone()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("nothing_due")), "{answer}");

    t.advance_days(61); // past the 60-day schedule
    let (status, answer) = t.rotate(Some(ADMIN_TOKEN), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["steps"][0]["action"], "publish_next", "{answer}");
    let published = kids(&t.jwks().await);
    assert_eq!(published.len(), 2, "current and next are published: {published:?}");
    assert!(published.contains(&old[0]));
    let next = published.iter().find(|k| **k != old[0]).unwrap().clone();
    let health = t.health().await.1;
    assert_eq!(health["jwt_system"]["phase"], "next_published");
    assert_eq!(health["jwt_system"]["current_kid"], old[0].as_str(), "next does not sign yet");

    // just before the flip, the old key still signs
    t.advance_secs(DAY - 60);
    let before_flip = t.app().keys().sign(&json!({"sub": "before"}), HALF_HOUR).unwrap();
    t.advance_secs(120);
    let (status, answer) = t.rotate(Some(ADMIN_TOKEN), body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["steps"].as_array().unwrap().iter().any(|s| s["action"] == "flip"), "{answer}");
    assert_eq!(answer["current_kid"], next.as_str());

    let jwks = JwkSet::from_json(&t.jwks().await).unwrap();
    let now = t.clock_secs();
    let claims: Value = jwks
        .verify_at(&before_flip, now, &VerifyOptions::default())
        .expect("old token still verifies");
    assert_eq!(claims["sub"], "before");
    let after = t.app().keys().sign(&json!({"sub": "after"}), HALF_HOUR).unwrap();
    assert_eq!(kid_of(&after), next, "a new token carries the new kid");
    assert_eq!(kid_of(&before_flip), old[0]);
    assert!(jwks.verify_at::<Value>(&after, now, &VerifyOptions::default()).is_ok());

    let rows = t.audit("admin.rotate", Some(Outcome::Success)).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].event.details["reason"], "quarterly");
    t.stop().await;
    emu.shutdown().await;
}

const HALF_HOUR: Duration = Duration::from_secs(1800);

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_rotations_rotate_once() {
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;
    let before = kids(&t.jwks().await);
    let body = json!({"rotation_type": "jwt", "force": true, "reason": "incident"});
    let (a, b) = tokio::join!(
        t.rotate(Some(ADMIN_TOKEN), body.clone()),
        t.rotate(Some(ADMIN_TOKEN), body.clone())
    );
    let answers = [a, b];
    let acted: Vec<&(u16, Value)> = answers
        .iter()
        .filter(|(s, v)| *s == 200 && v["steps"].as_array().is_some_and(|s| !s.is_empty()))
        .collect();
    assert_eq!(acted.len(), 1, "exactly one call rotated: {answers:?}");
    for (status, answer) in &answers {
        assert!(
            *status == 200 || (*status == 409 && answer["error"] == "busy"),
            "the other call is busy or finds nothing to do: {status} {answer}"
        );
    }
    let published = kids(&t.jwks().await);
    let new: Vec<&String> = published.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(new.len(), 1, "one new key, not two: {published:?}");
    t.stop().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_rotates_without_anyone_asking() {
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu).env("IKIT_ROTATION_CHECK_EVERY", "50ms")).await;
    let old = kids(&t.jwks().await);
    let mut runs = t.app().scheduled_runs();
    t.advance_days(91); // past both the JWT (60 d) and the AES (90 d) schedules
    let seen = *runs.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(30), runs.wait_for(|n| *n >= seen + 2))
        .await
        .expect("the scheduler runs")
        .unwrap();
    let published = kids(&t.jwks().await);
    assert_eq!(published.len(), 2, "the schedule published a next key: {published:?}");
    assert!(published.contains(&old[0]));
    let rows = t.audit("key.jwt.publish_next", None).await;
    assert_eq!(rows.len(), 1, "one scheduled step, however many ticks ran");
    assert_eq!(rows[0].event.actor, "ikit-keys/scheduled");
    assert!(!t.audit("key.aes.add_next", None).await.is_empty(), "aes is due too");
    t.stop().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_goes_through_the_fan_out_and_says_what_it_did() {
    let emu = emulator(None).await;
    let redis = TestRedis::new().await;
    let prefix = redis.prefix().to_owned();
    let url = redis.url().to_owned();
    let options = Options::new(&emu).env("IKIT_REDIS_URL", url.clone());
    let t = spawn_app_with(options, move |config, clock| {
        let client = Client::new(
            ClientConfig::from_settings(&config.settings).unwrap().with_clock(clock.clone()),
        )
        .unwrap();
        let cache = CachedClient::builder()
            .ttl(Duration::from_secs(300))
            .max_stale(Duration::from_secs(3600))
            .redis(url, None)
            .redis_prefix(prefix);
        Some(cache.client(client).build().unwrap())
    })
    .await;
    let query = ikit_client::FolderQuery::new(crate::support::PROJECT, "dev", "/app");
    t.app().cache().folder(&query).await.unwrap();
    assert!(t.app().cache().is_cached(&query).await);

    let r = t
        .http
        .post(format!("{}/api/v1/infisical/cache/invalidate?pattern=/app/*", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["local"], 1, "{answer}");
    assert_eq!(answer["published"], true, "{answer}");
    assert_eq!(answer["l2_cleared"], true, "{answer}");
    assert_eq!(answer["keys_reloaded"], false);
    assert!(!t.app().cache().is_cached(&query).await);
    let health = t.health().await.1;
    assert_eq!(health["cache"]["redis"], "up", "{health:#}");

    let bad = t
        .http
        .post(format!("{}/api/v1/infisical/cache/invalidate?pattern=app", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let rows = t.audit("admin.cache.invalidate", None).await;
    let outcomes: Vec<Outcome> = rows.iter().map(|r| r.event.outcome).collect();
    assert_eq!(outcomes, [Outcome::Success, Outcome::Failure]);
    assert_eq!(rows[0].event.target, "/app/*");
    t.stop().await;
    let _ = redis.cleanup().await;
    emu.shutdown().await;
}

/// Runs on one thread so the capture sees the service's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn no_token_or_key_material_reaches_the_logs() {
    let (logs, _guard) = ikit_common::testsuite::LogCapture::start("trace");
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;
    let body = json!({"rotation_type": "both", "force": true, "reason": "log check"});
    assert_eq!(t.rotate(Some(PREVIOUS_ADMIN_TOKEN), body.clone()).await.0, 200);
    assert_eq!(t.rotate(Some("wrong-admin-token-000000000"), body).await.0, 401);
    let _ = t.get("/").await;
    let _ = t.health().await;
    let text = logs.text();
    assert!(text.contains("ikit-health listening"), "the capture works");
    for secret in
        [ADMIN_TOKEN, PREVIOUS_ADMIN_TOKEN, "wrong-admin-token", "health-secret", "PRIVATE KEY"]
    {
        assert!(!text.contains(secret), "{secret} leaked into the logs");
    }
    t.stop().await;
    emu.shutdown().await;
}

/// Another replica holding the rotation lock: the call answers 409 `busy` and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_while_another_replica_holds_the_lock_is_busy() {
    use ikit_keys::lock::{PgAdvisoryLock, RotationLock};
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;
    let before = kids(&t.jwks().await);
    let name = format!("ikit-keys-rotation:{}:dev", crate::support::PROJECT);
    let other = PgAdvisoryLock::from_url(t.db.url(), &name).unwrap();
    let held = other.try_acquire().await.unwrap().expect("the other replica takes the lock");

    let body = json!({"rotation_type": "both", "force": true, "reason": "while busy"});
    let (status, answer) = t.rotate(Some(ADMIN_TOKEN), body.clone()).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("busy")), "{answer}");
    assert_eq!(kids(&t.jwks().await), before, "nothing was written");
    let rows = t.audit("admin.rotate", Some(Outcome::Failure)).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.details["outcome"], "busy");

    held.release().await.unwrap();
    let (status, answer) = t.rotate(Some(ADMIN_TOKEN), body).await;
    assert_eq!(status, 200, "free again: {answer}");
    assert_eq!(kids(&t.jwks().await).len(), 2, "now the next key is published");
    t.stop().await;
    emu.shutdown().await;
}
