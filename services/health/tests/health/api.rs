//! The read side: health parts, liveness and readiness, JWKS caching headers, metrics, the
//! status page.

use crate::support::{Options, emulator, kids, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_part_and_the_jwks_can_be_cached() {
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;

    assert_eq!(t.get("/healthz").await.status(), 200);
    assert_eq!(t.get("/readyz").await.status(), 200);
    let (status, health) = t.health().await;
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["overall_status"], "healthy", "{health:#}");
    for part in ["jwt_system", "aes_system", "infisical_connection", "cache", "audit_log"] {
        assert_eq!(health[part]["status"], "healthy", "{part}: {health:#}");
        assert!(health[part]["detail"].as_str().is_some_and(|d| !d.is_empty()), "{part}");
    }
    let active = health["aes_system"]["active_kid"].as_str().expect("active kid").to_owned();
    assert!(health["infisical_connection"]["latency_ms"].as_u64().is_some());
    assert_eq!(health["infisical_connection"]["token"], "valid");
    // The seeded identity's tokens live an hour: what is left is reported, in seconds.
    let left = health["infisical_connection"]["token_expires_in_seconds"].as_u64();
    assert!(left.is_some_and(|s| s > 0 && s <= 3600), "{health:#}");
    assert_eq!(health["audit_log"]["backend"], "postgres");
    assert!(health["timestamp"].as_i64().is_some());
    let current = health["jwt_system"]["current_kid"].as_str().expect("current kid").to_owned();

    let r = t.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let jwks: serde_json::Value = r.json().await.unwrap();
    assert_eq!(kids(&jwks), [current]);
    let again = t
        .http
        .get(format!("{}/.well-known/jwks.json", t.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);

    let page = t.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(&active), "the status page lists the active kid");
    assert!(!html.contains("<script"), "no script on the status page");
    t.stop().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_hold_every_binding_name_from_the_first_scrape() {
    let emu = emulator(None).await;
    let t = spawn_app(Options::new(&emu)).await;
    let r = t.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for name in [
        "infisical_fetch_total",
        "infisical_fetch_errors_total",
        "infisical_fetch_duration_seconds",
        "infisical_cache_hit_total",
        "infisical_cache_miss_total",
        "jwt_key_rotation_total",
        "aes_key_rotation_total",
        "infisical_webhook_events_total",
    ] {
        assert!(
            text.lines().any(|l| !l.starts_with('#') && l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert_eq!(ikit_health::BINDING_METRICS.len(), 8);
    t.stop().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_infisical_is_down_and_healthy_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("emulator.json");
    let emu = emulator(Some(data.clone())).await;
    let addr = emu.local_addr();
    let t = spawn_app(Options::new(&emu)).await;
    let query = ikit_client::FolderQuery::new(crate::support::PROJECT, "dev", "/app");
    let first = t.app().cache().folder(&query).await.expect("first read");
    assert_eq!(first.source.as_str(), "network");
    assert_eq!(t.health().await.1["overall_status"], "healthy");

    emu.shutdown().await;
    let (status, health) = t.health().await;
    assert_eq!(status, 200, "degraded still answers 200: {health:#}");
    assert_eq!(health["overall_status"], "degraded", "{health:#}");
    assert_eq!(health["infisical_connection"]["status"], "degraded");
    assert_eq!(health["jwt_system"]["status"], "healthy", "the loaded keys still sign");
    // the cache still serves what it had once the listing is past its ttl
    t.advance_secs(600);
    let served = t.app().cache().folder(&query).await.expect("served from cache while down");
    assert_eq!(served.source.as_str(), "cache");
    assert_eq!(t.get("/.well-known/jwks.json").await.status(), 200);

    let back = ikit_emulator::Emulator::start(
        ikit_emulator::EmulatorConfig::new(crate::support::seed()).addr(addr).data_file(&data),
    )
    .await
    .expect("emulator restarts on the same address");
    let (status, health) = t.health().await;
    assert_eq!(
        (status, &health["overall_status"]),
        (200, &serde_json::json!("healthy")),
        "{health:#}"
    );
    t.stop().await;
    back.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_unhealthy_when_the_keys_cannot_be_loaded() {
    // nothing listens on port 9 of loopback: Infisical is unreachable from the start
    let t = spawn_app(Options::at("http://127.0.0.1:9")).await;
    let (status, health) = t.health().await;
    assert_eq!(status, 503, "{health:#}");
    assert_eq!(health["overall_status"], "unhealthy");
    assert_eq!(health["jwt_system"]["status"], "unhealthy");
    assert_eq!(health["aes_system"]["status"], "unhealthy");
    assert!(
        health["jwt_system"]["detail"].as_str().unwrap().contains("no JWT signing key is loaded"),
        "{health:#}"
    );
    assert_eq!(health["infisical_connection"]["status"], "unhealthy");
    assert_eq!(t.get("/readyz").await.status(), 503);
    assert_eq!(t.get("/.well-known/jwks.json").await.status(), 503);
    assert_eq!(t.get("/healthz").await.status(), 200, "liveness does no IO");
    t.stop().await;
}
