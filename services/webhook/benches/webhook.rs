//! `make bench-webhook` (also part of `make bench`): the service's receiver against a bare axum
//! handler in the same run, on PostgreSQL and on SQLite (the embedded default). Drives signed
//! `secrets.modified` deliveries (each unique, so the replay cache passes them) over keep-alive
//! connections, closed loop with 32 in flight, then paced at half the service's own
//! throughput; prints requests/s and p50/p99 for each. Then the saturated figures again with
//! the server's runtime on 1, 2 and 4 worker threads.
//!
//! The servers run on their own Tokio runtime, the load generator on another, so the figures
//! are the server's, not a shared scheduler's. Real PostgreSQL (queue and audit log) and Redis
//! (replay cache); the emulator as Infisical. `IKIT_BENCH_SECS` sets the seconds per run (3).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use ikit_client::{AuthMethod, ClientConfig};
use ikit_common::clock::{Clock, SystemClock};
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_common::webhook_signature::sign;
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};
use ikit_webhook::{Application, Options, WebhookSettings};
use tokio::runtime::Runtime;

const PROJECT: &str = "b0b0b0b0-0000-4000-8000-000000000001";
const SECRET: &str = "whsec-bench";
const IN_FLIGHT: usize = 32;

/// Every delivery of the whole run is different bytes (else the replay cache answers 409).
static SENT: AtomicI64 = AtomicI64::new(0);

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

fn figures(mut latencies: Vec<Duration>, failed: usize, elapsed: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        failed,
    }
}

fn run_for() -> Duration {
    let secs = std::env::var("IKIT_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

/// Closed loop (`pace` None) or paced at `pace` requests/s in total.
async fn drive(url: String, pace: Option<f64>, run: Duration) -> Figures {
    let http = reqwest::Client::builder().pool_max_idle_per_host(IN_FLIGHT).build().unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            let interval = pace.map(|p| Duration::from_secs_f64(IN_FLIGHT as f64 / p));
            let mut next =
                Instant::now() + interval.unwrap_or_default() * worker as u32 / IN_FLIGHT as u32;
            while started.elapsed() < run {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                let n = SENT.fetch_add(1, Ordering::Relaxed);
                let ts = SystemClock.now_ms();
                let body = format!(
                    r#"{{"event":"secrets.modified","project":{{"workspaceId":"{PROJECT}","environment":"dev","secretPath":"/f{}"}},"timestamp":{ts},"n":{n}}}"#,
                    n % 50
                );
                let sig = sign(ts, SECRET.as_bytes(), body.as_bytes());
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("x-infisical-signature", sig)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status().is_success()) {
                    latencies.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    figures(all, failed, started.elapsed())
}

fn print(name: &str, f: &Figures) {
    let failed = if f.failed > 0 { format!("   ({} failed)", f.failed) } else { String::new() };
    println!(
        "{name:<44} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms{failed}",
        f.rps,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    );
}

fn server_runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// The bare handler: what axum costs with nothing behind it.
fn start_bare(rt: &Runtime) -> String {
    rt.block_on(async {
        let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", bare.local_addr().unwrap());
        tokio::spawn(async move {
            let app = Router::new().route(
                "/hook",
                post(|body: axum::body::Bytes| async move {
                    (axum::http::StatusCode::ACCEPTED, body.len().to_string())
                }),
            );
            axum::serve(bare, app).await.unwrap();
        });
        url
    })
}

struct Env<'a> {
    emulator: &'a RunningEmulator,
    redis: &'a TestRedis,
    dir: &'a Path,
}

fn start_service(rt: &Runtime, env: &Env<'_>, database_url: &str, name: &str) -> Application {
    let vars: BTreeMap<String, String> = [
        ("INFISICAL_API_URL", env.emulator.base_url().as_str()),
        ("INFISICAL_PROJECT_ID", PROJECT),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "b"),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "b-secret"),
        ("IKIT_DATABASE_URL", database_url),
        ("IKIT_REDIS_URL", env.redis.url()),
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
    let settings = WebhookSettings::load(None, &vars).expect("settings");
    let options = Options {
        client_config: Some(
            ClientConfig::new(&env.emulator.base_url(), AuthMethod::universal("b", "b-secret"))
                .unwrap(),
        ),
        redis_prefix: env.redis.prefix().to_owned(),
        audit_spool_dir: env.dir.join(format!("spool-{name}")),
        ..Options::default()
    };
    rt.block_on(Application::build_with(settings, options)).expect("service starts")
}

fn url_of(app: &Application) -> String {
    format!("http://127.0.0.1:{}/api/v1/infisical/webhook", app.port())
}

fn main() {
    let run = run_for();
    let support = server_runtime(1);
    let driver = server_runtime(2);
    let seed = format!(
        r#"{{"projects":[{{"id":"{PROJECT}","slug":"bench","environments":["dev"]}}],
            "identities":[{{"id":"id-b","name":"b","clientId":"b","clientSecret":"b-secret","projects":["{PROJECT}"]}}]}}"#
    );
    let (emulator, pg, redis) = support.block_on(async {
        let emulator =
            Emulator::start(EmulatorConfig::new(Seed::from_json(&seed).unwrap())).await.unwrap();
        (emulator, TestDatabase::postgres().await, TestRedis::new().await)
    });
    let dir = tempfile::tempdir().unwrap();
    let env = Env { emulator: &emulator, redis: &redis, dir: dir.path() };
    let sqlite_url = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());

    let server = server_runtime(2);
    let bare_url = start_bare(&server);
    let on_pg = start_service(&server, &env, pg.url(), "pg");
    let on_sqlite = start_service(&server, &env, &sqlite_url("bench.db"), "sqlite");
    let targets = [("PostgreSQL", url_of(&on_pg)), ("SQLite", url_of(&on_sqlite))];

    // Warm up everything once.
    for url in [&bare_url, &targets[0].1, &targets[1].1] {
        driver.block_on(drive(url.clone(), Some(200.0), Duration::from_secs(1)));
    }
    println!(
        "webhook receiver, {IN_FLIGHT} in flight, {}s per run, server runtime 2 worker threads",
        run.as_secs()
    );
    let bare_max = driver.block_on(drive(bare_url.clone(), None, run));
    print("bare axum handler, saturated", &bare_max);
    let mut summary = Vec::new();
    for (db, url) in &targets {
        let max = driver.block_on(drive(url.clone(), None, run));
        print(&format!("ikit-webhook on {db}, saturated"), &max);
        let half = (max.rps / 2.0).max(1.0);
        let bare_half = driver.block_on(drive(bare_url.clone(), Some(half), run));
        print(&format!("bare axum handler, {half:.0} req/s"), &bare_half);
        let service_half = driver.block_on(drive(url.clone(), Some(half), run));
        print(&format!("ikit-webhook on {db}, {half:.0} req/s"), &service_half);
        summary.push(format!(
            "{db}: {:.1}% of the bare handler's throughput (goal >= 50%); p99 at half load \
             {:.2} ms (goal < 5 ms)",
            100.0 * max.rps / bare_max.rps,
            service_half.p99.as_secs_f64() * 1e3
        ));
    }
    for line in &summary {
        println!("{line}");
    }
    server.block_on(on_pg.shutdown());
    server.block_on(on_sqlite.shutdown());
    drop(server);

    println!("saturated, by the server runtime's worker threads:");
    for threads in [1, 2, 4] {
        let server = server_runtime(threads);
        let bare_url = start_bare(&server);
        let on_pg = start_service(&server, &env, pg.url(), &format!("pg-{threads}"));
        let on_sqlite = start_service(
            &server,
            &env,
            &sqlite_url(&format!("threads-{threads}.db")),
            &format!("sqlite-{threads}"),
        );
        let bare = driver.block_on(drive(bare_url, None, run));
        let pg_max = driver.block_on(drive(url_of(&on_pg), None, run));
        let sqlite_max = driver.block_on(drive(url_of(&on_sqlite), None, run));
        print(&format!("{threads} threads: bare axum handler"), &bare);
        print(&format!("{threads} threads: ikit-webhook on PostgreSQL"), &pg_max);
        print(&format!("{threads} threads: ikit-webhook on SQLite"), &sqlite_max);
        server.block_on(on_pg.shutdown());
        server.block_on(on_sqlite.shutdown());
    }
    support.block_on(emulator.shutdown());
}
