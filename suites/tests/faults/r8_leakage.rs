//! R8: one full flow (login and cached reads with L2 and the offline snapshot, a migration, a
//! webhook turned into events, a forced JWT and AES rotation through the health service's admin
//! API) captured at TRACE; then no value, credential or key material in the logs, the errors
//! and debug output met on the way, the metrics, or the audit rows; every file written is 0600.
//! (`ikit login`, `run` and `export` are covered by the CLI's own leak test,
//! `leaks::no_flow_prints_an_unrequested_value_or_credential_at_trace_level`.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use ikit_client::{CachedClient, Client, Clock as _, SealKey, SecretRef};
use ikit_common::audit::AuditFilter;
use ikit_common::testsuite::{LogCapture, TestDatabase};
use ikit_migrate::dotenv::Interpolation;
use ikit_migrate::mapping::Mapping;
use serde_json::json;

use crate::hooks::{HOOK_SECRET, HookStack, STATE_KEY, modified};
use crate::support::{CANARY, CLIENT_ID, CLIENT_SECRET, PROJECT, eventually, seed_with};

const MIGRATED: &str = "migrated-value-Kp3-do-not-log";
const CHANGED: &str = "changed-value-Wm8-do-not-log";
const ADMIN_TOKEN: &str = "suite-admin-token-Rt5-000001";

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_no_value_or_credential_leaks_over_a_full_flow() {
    let (logs, _guard) = LogCapture::start(
        "ikit_client=trace,ikit_webhook=trace,ikit_migrate=trace,ikit_keys=trace,\
         ikit_health=trace,ikit_common=trace,ikit_emulator=debug,reqwest=trace,hyper_util=trace",
    );
    let stack = HookStack::start(seed_with(vec![], vec![])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut said = Vec::new(); // every error and Debug met on the way

    // Login and cached reads: L2 in Redis, sealed; the offline snapshot on disk.
    let config = CachedClient::builder()
        .ttl(Duration::from_secs(60))
        .max_stale(Duration::from_secs(3600))
        .redis(stack.redis.url(), Some(SealKey::new([3u8; 32])))
        .redis_prefix(stack.redis.prefix())
        .snapshot(dir.path().join("snapshots"), SealKey::new([4u8; 32]));
    let cache = config.client(stack.writer()).build().expect("cache");
    let db_url = SecretRef::parse(PROJECT, "dev", "/app/DATABASE_URL").expect("ref");
    let served = cache.get(&db_url).await.expect("read");
    assert_eq!(served.value.value.expose(), CANARY);
    said.push(format!("{:?} {:?}", served.value, cache.client()));
    let missing = SecretRef::parse(PROJECT, "dev", "/app/NOPE").expect("ref");
    said.push(cache.get(&missing).await.err().map(|e| format!("{e} {e:?}")).unwrap_or_default());

    // A migration of a .env file.
    let text = format!("MIGRATED_TOKEN=\"{MIGRATED}\"\nOTHER=plain-other-Qz1\n");
    let sources =
        ikit_migrate::source::from_dotenv(".env", &text, Interpolation::Off).expect("parse");
    let mapping =
        Mapping::from_toml("m", "[defaults]\nenvironment = \"dev\"\nfolder = \"/migrated\"\n")
            .expect("mapping");
    let mapped = mapping.apply(sources).expect("maps");
    let (plan, report) = ikit_migrate::apply::apply(
        cache.client(),
        PROJECT,
        &mapped,
        false,
        b"plan-key",
        &mut |_, _| {},
    )
    .await
    .expect("applies");
    assert_eq!(report.written.len(), 2);
    said.push(plan.render());
    said.push(plan.to_json());
    said.push(format!("{report:?}"));

    // A webhook: the change is refetched, diffed and published.
    let app = stack.app(&[]).await;
    stack.update("/app", "DATABASE_URL", CHANGED).await;
    let ts = stack.clock.now_ms();
    assert_eq!(stack.post_signed(&app, ts, HOOK_SECRET, &modified(ts, "/app")).await, 202);
    let forged = stack.post_signed(&app, ts + 1, "guessed-secret", &modified(ts + 1, "/app")).await;
    assert_eq!(forged, 401);
    eventually("the webhook's event", || {
        let stack = &stack;
        async move { (!stack.stored_events().await.is_empty()).then_some(()) }
    })
    .await;

    // Key rotation through the health service's admin API.
    let health_db = TestDatabase::postgres().await;
    let env: BTreeMap<String, String> = [
        ("INFISICAL_API_URL", stack.emulator.base_url()),
        ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID.to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("IKIT_DATABASE_URL", health_db.url().to_owned()),
        ("IKIT_HEALTH_ADDR", "127.0.0.1:0".to_owned()),
        ("IKIT_WEBHOOK_ADDR", "127.0.0.1:1".to_owned()),
        ("IKIT_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("IKIT_AUDIT_SPOOL_DIR", dir.path().join("health-spool").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let health_config = ikit_health::HealthConfig::load(None, &env).expect("health config");
    let parts = ikit_health::Parts { clock: Some(stack.clock.clone()), cache: None, audit: None };
    let health = ikit_health::Application::build_with(health_config, parts).await.expect("health");
    let http = reqwest::Client::new();
    let rotated = http
        .post(format!("{}/api/v1/infisical/rotate", health.base_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"rotation_type": "both", "force": true, "reason": "leak check"}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(rotated.status().as_u16(), 200);
    said.push(rotated.text().await.expect("body"));
    let metrics = http
        .get(format!("{}/metrics", health.base_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let page = http.get(format!("{}/", health.base_url())).send().await.expect("page");
    said.push(page.text().await.expect("page text"));

    // Key material as stored in Infisical, to look for it.
    let keys = Client::new(stack.client_config())
        .expect("client")
        .fetch_folder(&ikit_client::FolderQuery::new(PROJECT, "dev", "/auth/jwt"))
        .await
        .expect("key folder");
    let mut secrets: Vec<String> = vec![
        CANARY.into(),
        MIGRATED.into(),
        "plain-other-Qz1".into(),
        CHANGED.into(),
        CLIENT_SECRET.into(),
        HOOK_SECRET.into(),
        "guessed-secret".into(),
        STATE_KEY.into(),
        ADMIN_TOKEN.into(),
        "PRIVATE KEY".into(),
    ];
    for secret in &keys.secrets {
        let value = secret.value.expose();
        if value.len() >= 16 {
            secrets.push(value.lines().nth(1).unwrap_or(value).to_owned());
        }
    }
    // An access token of the same identity: its claims part starts like every token the flow
    // used (the signature differs), so its first 20 characters stand for all of them.
    let login: serde_json::Value = http
        .post(format!("{}/api/v1/auth/universal-auth/login", stack.emulator.base_url()))
        .json(&json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    let token = login["accessToken"].as_str().expect("token");
    secrets.push(token.split('.').nth(1).map_or(token, |claims| &claims[..20]).to_owned());

    let mut audit_text = String::new();
    for audit in [&app.state().audit, health.audit()] {
        let rows = audit.query(&AuditFilter { limit: Some(10_000), ..Default::default() }).await;
        let rows = rows.expect("audit rows");
        assert!(!rows.is_empty());
        for row in rows {
            audit_text.push_str(&format!(
                "{} {} {}\n",
                row.event.actor, row.event.target, row.event.details
            ));
        }
    }
    let log_text = logs.text();
    assert!(log_text.contains("ikit"), "the capture works");
    for secret in &secrets {
        assert!(!log_text.contains(secret.as_str()), "leaked into the logs: {secret}");
        assert!(!metrics.contains(secret.as_str()), "leaked into the metrics: {secret}");
        assert!(!audit_text.contains(secret.as_str()), "leaked into the audit log: {secret}");
        for text in &said {
            assert!(!text.contains(secret.as_str()), "leaked into output: {secret} in {text}");
        }
    }

    // Every file written on the way is private.
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    files_under(stack.spool.path(), &mut files);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "snap")), "{files:?}");
    for file in &files {
        let mode = std::fs::metadata(file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
        let bytes = std::fs::read(file).expect("read");
        assert!(
            !String::from_utf8_lossy(&bytes).contains(CANARY),
            "{} holds a value",
            file.display()
        );
    }
    health.shutdown().await.expect("health stops");
    app.shutdown().await;
}
