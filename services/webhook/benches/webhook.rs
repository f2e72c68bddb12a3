//! `make bench-webhook` (also part of `make bench`): the service's receiver against a bare axum
//! handler in the same run, on PostgreSQL and on SQLite (the embedded default).
//!
//! Every answer of the receiver waits for a durable commit (queue row and audit row), so with
//! `c` requests in flight a closed loop cannot pass `c / commit time` requests/s however cheap
//! the handler is (Little's law), while the bare handler is bound by CPU alone and saturates at
//! the lowest concurrency. Comparing at one concurrency favours one or the other, so the
//! saturated figures are printed at 32, 128 and 512 in flight (a real Infisical sends
//! deliveries concurrently from its queue) and the headline compares capacities: each server's
//! best level. Then p50/p99 paced at half the service's capacity beside the database's own
//! durable-commit floor measured in the same run (no answer that waits for a commit can beat
//! it); then the capacities again with the server's runtime on 1, 2 and 4 worker threads.
//!
//! The servers run on their own Tokio runtime, the load generator on another. Real
//! PostgreSQL (queue and audit log) and Redis (replay cache); the emulator as Infisical.
//! `IKIT_BENCH_SECS` sets the seconds per run (3).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ikit_client::{AuthMethod, ClientConfig};
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};
use ikit_webhook::{Application, Options, WebhookSettings};
use tokio::runtime::Runtime;

#[allow(dead_code, unreachable_pub)]
mod loadgen;
use loadgen::{Load, Target, commit_floor, drive, start_bare};

const PROJECT: &str = "b0b0b0b0-0000-4000-8000-000000000001";
const SECRET: &str = "whsec-bench";
/// Requests in flight of the saturated runs.
const IN_FLIGHT: [usize; 3] = [32, 128, 512];

/// (req/s, in flight) of the best level.
type Best = (f64, usize);

fn better(best: &mut Best, load: &Load, in_flight: usize) {
    if load.rps > best.0 {
        *best = (load.rps, in_flight);
    }
}

fn run_for() -> Duration {
    let secs = std::env::var("IKIT_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print(name: &str, f: &Load) {
    let failed = if f.failed > 0 { format!("   ({} failed)", f.failed) } else { String::new() };
    println!(
        "{name:<52} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms{failed}",
        f.rps,
        ms(f.p50),
        ms(f.p99)
    );
}

fn server_runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn target(url: &str) -> Target<'_> {
    Target { url, secret: SECRET, project: PROJECT, folders: 50 }
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

    let floor_db = support.block_on(TestDatabase::postgres());
    let floors = [
        ("PostgreSQL", support.block_on(commit_floor(floor_db.url(), 300))),
        ("SQLite", support.block_on(commit_floor(&sqlite_url("floor.db"), 300))),
    ];
    for (db, (p50, p99)) in &floors {
        println!(
            "{db} durable commit floor (one-row transactions, one at a time): p50 {:.2} ms   p99 {:.2} ms",
            ms(*p50),
            ms(*p99)
        );
    }

    let server = server_runtime(2);
    let bare_url = server.block_on(start_bare());
    let on_pg = start_service(&server, &env, pg.url(), "pg");
    let on_sqlite = start_service(&server, &env, &sqlite_url("bench.db"), "sqlite");
    let targets = [("PostgreSQL", url_of(&on_pg)), ("SQLite", url_of(&on_sqlite))];

    // Warm up everything once.
    for url in [&bare_url, &targets[0].1, &targets[1].1] {
        driver.block_on(drive(&target(url), 32, Some(200.0), Duration::from_secs(1)));
    }
    println!("webhook receiver, {}s per run, server runtime 2 worker threads", run.as_secs());
    let mut bare_best = (0.0, 0);
    let mut best: BTreeMap<&str, Best> = BTreeMap::new();
    for in_flight in IN_FLIGHT {
        let bare = driver.block_on(drive(&target(&bare_url), in_flight, None, run));
        print(&format!("{in_flight} in flight: bare axum handler"), &bare);
        better(&mut bare_best, &bare, in_flight);
        for (db, url) in &targets {
            let max = driver.block_on(drive(&target(url), in_flight, None, run));
            print(&format!("{in_flight} in flight: ikit-webhook on {db}"), &max);
            println!("{:>52} {:.2}x the bare handler at this level", "", max.rps / bare.rps);
            better(best.entry(db).or_insert((0.0, 0)), &max, in_flight);
        }
    }
    let mut summary = Vec::new();
    for ((db, url), (_, (floor_p50, floor_p99))) in targets.iter().zip(&floors) {
        let (max, at) = best[db];
        let half = (max / 2.0).max(1.0);
        let bare_half = driver.block_on(drive(&target(&bare_url), at, Some(half), run));
        print(&format!("bare axum handler, {half:.0} req/s"), &bare_half);
        let service_half = driver.block_on(drive(&target(url), at, Some(half), run));
        print(&format!("ikit-webhook on {db}, {half:.0} req/s"), &service_half);
        summary.push(format!(
            "{db}: capacity {max:.0} req/s at {at} in flight, {:.2}x the bare handler's \
             {:.0} req/s at {} (goal >= 0.5x); p99 at half load {:.2} ms (goal < 5 ms; the \
             durable-commit floor in this run: p50 {:.2} ms, p99 {:.2} ms; p99 / floor p99 {:.2}x)",
            max / bare_best.0,
            bare_best.0,
            bare_best.1,
            ms(service_half.p99),
            ms(*floor_p50),
            ms(*floor_p99),
            service_half.p99.as_secs_f64() / floor_p99.as_secs_f64()
        ));
    }
    for line in &summary {
        println!("{line}");
    }
    server.block_on(on_pg.shutdown());
    server.block_on(on_sqlite.shutdown());
    drop(server);

    println!("capacity (best of {IN_FLIGHT:?} in flight), by the server runtime's worker threads:");
    for threads in [1, 2, 4] {
        let server = server_runtime(threads);
        let bare_url = server.block_on(start_bare());
        let on_pg = start_service(&server, &env, pg.url(), &format!("pg-{threads}"));
        let on_sqlite = start_service(
            &server,
            &env,
            &sqlite_url(&format!("threads-{threads}.db")),
            &format!("sqlite-{threads}"),
        );
        let (mut bare, mut pg_max, mut sqlite_max) = ((0.0, 0), (0.0, 0), (0.0, 0));
        for in_flight in IN_FLIGHT {
            let load = |url: &str| driver.block_on(drive(&target(url), in_flight, None, run));
            better(&mut bare, &load(&bare_url), in_flight);
            better(&mut pg_max, &load(&url_of(&on_pg)), in_flight);
            better(&mut sqlite_max, &load(&url_of(&on_sqlite)), in_flight);
        }
        for (name, (rps, at)) in [
            ("bare axum handler", bare),
            ("ikit-webhook on PostgreSQL", pg_max),
            ("ikit-webhook on SQLite", sqlite_max),
        ] {
            println!(
                "{:<52} {rps:>8.0} req/s at {at} in flight   {:.2}x the bare handler",
                format!("{threads} threads: {name}"),
                rps / bare.0
            );
        }
        server.block_on(on_pg.shutdown());
        server.block_on(on_sqlite.shutdown());
    }
    support.block_on(emulator.shutdown());
}
