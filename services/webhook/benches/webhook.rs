//! `make bench-webhook` (also part of `make bench`): the service's receiver against a bare axum
//! handler in the same run. Drives signed `secrets.modified` deliveries (each unique, so the
//! replay cache passes them) over keep-alive connections, closed loop with 32 in flight, then
//! paced at half the service's own throughput; prints requests/s and p50/p99 for each.
//! Real PostgreSQL (queue and audit log) and Redis (replay cache); the emulator as Infisical.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use ikit_client::{AuthMethod, ClientConfig};
use ikit_common::clock::{Clock, SystemClock};
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_common::webhook_signature::sign;
use ikit_emulator::{Emulator, EmulatorConfig, Seed};
use ikit_webhook::{Application, Options, WebhookSettings};

const PROJECT: &str = "b0b0b0b0-0000-4000-8000-000000000001";
const SECRET: &str = "whsec-bench";
const IN_FLIGHT: usize = 32;
const RUN: Duration = Duration::from_secs(3);

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures { rps: latencies.len() as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99) }
}

/// Closed loop (`pace` None) or paced at `pace` requests/s in total.
async fn drive(url: String, pace: Option<f64>) -> Figures {
    let http = reqwest::Client::builder().pool_max_idle_per_host(IN_FLIGHT).build().unwrap();
    let counter = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let (http, url, counter) = (http.clone(), url.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let interval = pace.map(|p| Duration::from_secs_f64(IN_FLIGHT as f64 / p));
            let mut next = Instant::now() + interval.unwrap_or_default() * worker as u32 / IN_FLIGHT as u32;
            while started.elapsed() < RUN {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let ts = SystemClock.now_ms() + n % 1000;
                let body = format!(
                    r#"{{"event":"secrets.modified","project":{{"workspaceId":"{PROJECT}","environment":"dev","secretPath":"/f{}"}},"timestamp":{ts}}}"#,
                    n % 50
                );
                let sig = sign(ts, SECRET.as_bytes(), body.as_bytes());
                let t = Instant::now();
                let r = http.post(&url).header("x-infisical-signature", sig).header("content-type", "application/json").body(body).send().await;
                if matches!(&r, Ok(r) if r.status().is_success()) {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    figures(all, started.elapsed())
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        f.rps,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    // The bare handler: what axum costs with nothing behind it.
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_url = format!("http://{}/hook", bare.local_addr().unwrap());
    tokio::spawn(async move {
        let app = Router::new().route(
            "/hook",
            post(|body: axum::body::Bytes| async move {
                (axum::http::StatusCode::ACCEPTED, body.len().to_string())
            }),
        );
        axum::serve(bare, app).await.unwrap();
    });

    let seed = format!(
        r#"{{"projects":[{{"id":"{PROJECT}","slug":"bench","environments":["dev"]}}],
            "identities":[{{"id":"id-b","name":"b","clientId":"b","clientSecret":"b-secret","projects":["{PROJECT}"]}}]}}"#
    );
    let emulator =
        Emulator::start(EmulatorConfig::new(Seed::from_json(&seed).unwrap())).await.unwrap();
    let db = TestDatabase::postgres().await;
    let redis = TestRedis::new().await;
    let spool = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = [
        ("INFISICAL_API_URL", emulator.base_url().as_str()),
        ("INFISICAL_PROJECT_ID", PROJECT),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "b"),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "b-secret"),
        ("IKIT_DATABASE_URL", db.url()),
        ("IKIT_REDIS_URL", redis.url()),
        ("IKIT_WEBHOOK_SECRET", SECRET),
        ("IKIT_WEBHOOK_STATE_KEY", "bench-state-key-0123456789abcdef0123"),
        ("IKIT_WEBHOOK_ADDR", "127.0.0.1:0"),
        ("IKIT_HEALTH_ADDR", "127.0.0.1:1"),
        ("IKIT_WEBHOOK_RATE_LIMIT", "0"),
        ("IKIT_WEBHOOK_BASELINE", "false"),
        ("IKIT_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = WebhookSettings::load(None, &env).expect("settings");
    let options = Options {
        client_config: Some(
            ClientConfig::new(&emulator.base_url(), AuthMethod::universal("b", "b-secret"))
                .unwrap(),
        ),
        redis_prefix: redis.prefix().to_owned(),
        audit_spool_dir: spool.path().to_owned(),
        ..Options::default()
    };
    let app = Application::build_with(settings, options).await.expect("service starts");
    let service_url = format!("http://127.0.0.1:{}/api/v1/infisical/webhook", app.port());

    // Warm both up.
    drive(bare_url.clone(), Some(200.0)).await;
    drive(service_url.clone(), Some(200.0)).await;

    println!("webhook receiver, {IN_FLIGHT} in flight, {}s per run", RUN.as_secs());
    let bare_max = drive(bare_url.clone(), None).await;
    print("bare axum handler, saturated", &bare_max);
    let service_max = drive(service_url.clone(), None).await;
    print("ikit-webhook, saturated", &service_max);
    let half = (service_max.rps / 2.0).max(1.0);
    let bare_half = drive(bare_url, Some(half)).await;
    print(&format!("bare axum handler, {half:.0} req/s"), &bare_half);
    let service_half = drive(service_url, Some(half)).await;
    print(&format!("ikit-webhook, {half:.0} req/s"), &service_half);
    println!(
        "ikit-webhook / bare throughput: {:.1}% (goal >= 50%); p99 at half load {:.2} ms (goal < 5 ms)",
        100.0 * service_max.rps / bare_max.rps,
        service_half.p99.as_secs_f64() * 1e3
    );
    app.shutdown().await;
    emulator.shutdown().await;
}
