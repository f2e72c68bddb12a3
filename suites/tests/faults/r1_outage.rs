//! R1: Infisical down for 10 simulated minutes under a cached load of 1,000 reads per simulated
//! second. Every read succeeds; the health endpoint and `/metrics` show the stale serving; once
//! Infisical answers again the same process reads fresh listings and reports healthy.
//!
//! The load runs against the `CachedClient` the health service itself serves from (handed in as
//! `Parts::cache`), so what health reports is about the very reads the test makes.

use std::collections::BTreeMap;
use std::time::Duration;

use ikit_client::{CachedClient, Client, SecretRef, Source};
use ikit_common::testsuite::TestDatabase;
use ikit_emulator::Fault;
use ikit_health::{Application, HealthConfig, Parts};
use serde_json::Value;

use crate::support::{
    CANARY, CLIENT_ID, CLIENT_SECRET, Clocks, JumpSleeper, PROJECT, client_config, emulator,
    metric_sum, seed_with, universal,
};

const TTL: Duration = Duration::from_secs(60);
const MAX_STALE: Duration = Duration::from_secs(30 * 60);
const OUTAGE_SECS: u64 = 600;
const READS_PER_SEC: usize = 1_000;

async fn health(http: &reqwest::Client, app: &Application) -> (u16, Value) {
    let r = http
        .get(format!("{}/api/v1/infisical/health", app.base_url()))
        .send()
        .await
        .expect("health answers");
    (r.status().as_u16(), r.json().await.expect("health json"))
}

async fn stale_in_metrics(http: &reqwest::Client, app: &Application) -> f64 {
    let text = http
        .get(format!("{}/metrics", app.base_url()))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    metric_sum(&text, ikit_client::METRIC_CACHE_STALE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_ten_minutes_without_infisical_under_1000_reads_per_second() {
    let emu = emulator(seed_with(vec![], vec![])).await;
    let clocks = Clocks::new(&emu);
    let sleeper = JumpSleeper::new(&clocks);
    let client = Client::new(client_config(&emu, &clocks, sleeper, universal())).expect("client");
    let cache = CachedClient::builder()
        .client(client)
        .ttl(TTL)
        .max_stale(MAX_STALE)
        .build()
        .expect("cache");

    let db = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = [
        ("INFISICAL_API_URL", emu.base_url()),
        ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID.to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("IKIT_DATABASE_URL", db.url().to_owned()),
        ("IKIT_HEALTH_ADDR", "127.0.0.1:0".to_owned()),
        ("IKIT_WEBHOOK_ADDR", "127.0.0.1:1".to_owned()),
        ("IKIT_AUDIT_SPOOL_DIR", dir.path().join("spool").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = HealthConfig::load(None, &env).expect("health config");
    let parts =
        Parts { clock: Some(clocks.client.clone()), cache: Some(cache.clone()), audit: None };
    let app = Application::build_with(config, parts).await.expect("health starts");
    let http = reqwest::Client::new();

    let keys: Vec<SecretRef> = ["/app/DATABASE_URL", "/app/API_KEY", "/shared/COMMON"]
        .iter()
        .map(|p| SecretRef::parse(PROJECT, "dev", p).expect("ref"))
        .collect();
    for key in &keys {
        cache.get(key).await.expect("warm read");
    }
    let (status, before) = health(&http, &app).await;
    assert_eq!((status, before["overall_status"].as_str()), (200, Some("healthy")), "{before:#}");
    let stale_before = before["cache"]["stale_serves"].as_u64().expect("stale_serves");
    let stale_metric_before = stale_in_metrics(&http, &app).await;

    // Infisical goes away: every API route, /api/status included, drops the connection.
    emu.faults().add(Fault::drop_connection("/api"));
    let mut failures = Vec::new();
    let mut stale_reads = 0u64;
    for second in 0..OUTAGE_SECS {
        clocks.advance(Duration::from_secs(1));
        for i in 0..READS_PER_SEC {
            match cache.get(&keys[i % keys.len()]).await {
                Ok(served) => {
                    if served.source != Source::Network && served.age > TTL {
                        stale_reads += 1;
                    }
                    if i == 0 && served.value.value.expose().is_empty() {
                        failures.push((second, "empty value".to_owned()));
                    }
                }
                Err(e) => failures.push((second, e.to_string())),
            }
        }
        if second == OUTAGE_SECS / 2 {
            let (status, mid) = health(&http, &app).await;
            assert_eq!(status, 200, "degraded still answers 200: {mid:#}");
            assert_eq!(mid["overall_status"], "degraded", "{mid:#}");
            assert_eq!(mid["infisical_connection"]["status"], "degraded", "{mid:#}");
        }
    }
    assert!(failures.is_empty(), "{} failed reads, first {:?}", failures.len(), failures.first());
    let served_reads = OUTAGE_SECS * READS_PER_SEC as u64;
    // Past the TTL (the first minute) every read is a stale one.
    assert!(stale_reads >= served_reads - TTL.as_secs() * READS_PER_SEC as u64, "{stale_reads}");
    let value = cache.get(&keys[0]).await.expect("still served");
    assert_eq!(value.value.value.expose(), CANARY);
    assert!(value.age >= Duration::from_secs(OUTAGE_SECS), "age {:?}", value.age);

    // Staleness is visible: the health page counts stale serves, /metrics the same counter.
    let (_, during) = health(&http, &app).await;
    assert_eq!(during["overall_status"], "degraded", "{during:#}");
    let stale_now = during["cache"]["stale_serves"].as_u64().expect("stale_serves");
    assert!(
        stale_now >= stale_before + stale_reads,
        "{stale_now} < {stale_before} + {stale_reads}"
    );
    assert!(stale_in_metrics(&http, &app).await >= stale_metric_before + stale_reads as f64);

    // Back, with no restart: past the breaker's open window the next read goes out again.
    let lists_before = emu.request_count("GET", "/api/v4/secrets");
    emu.faults().clear();
    clocks.advance(Duration::from_secs(31));
    let fresh = crate::support::eventually("a fresh read after recovery", || {
        let cache = cache.clone();
        let key = keys[0].clone();
        let clocks = clocks.clone();
        async move {
            clocks.advance(Duration::from_secs(1));
            // Refreshed in the background or in line: either way younger than the TTL again.
            let served = cache.get(&key).await;
            let served = served.ok()?;
            (served.age < TTL).then_some(served)
        }
    })
    .await;
    assert_eq!(fresh.value.value.expose(), CANARY);
    assert!(emu.request_count("GET", "/api/v4/secrets") > lists_before, "refetched from Infisical");
    let (status, after) = health(&http, &app).await;
    assert_eq!((status, after["overall_status"].as_str()), (200, Some("healthy")), "{after:#}");
    app.shutdown().await.expect("clean shutdown");
    emu.shutdown().await;
    let _ = db.cleanup().await;
}
