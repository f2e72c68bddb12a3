//! The hot path: a bare `HashMap` lookup (the floor), a live `SecretHandle` read and a cached
//! `get` hit at 10, 1,000 and 10,000 secrets per folder, with a Prometheus recorder installed,
//! then one table of the three with their ratios and goals; single-flight: N concurrent misses
//! of one cold folder, answered by one request to the emulator. (The uncached path is measured
//! by the U rows of `make bench`.)

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ikit_client::{AuthMethod, BudgetConfig, CachedClient, Client, ClientConfig, SecretRef};
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};

const PROJECT: &str = "9b6f8a70-0000-4000-8000-000000000001";
const BATCH: usize = 1_000;

/// Folder sizes the hot path is measured at.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn folder_of(n: usize) -> String {
    format!("/s{n}")
}

async fn emulator() -> RunningEmulator {
    emulator_with(|config| config).await
}

async fn emulator_with(tune: impl FnOnce(EmulatorConfig) -> EmulatorConfig) -> RunningEmulator {
    let mut folders =
        vec![serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": "/app"})];
    let mut secrets: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            serde_json::json!({
                "projectId": PROJECT, "environment": "dev", "path": "/app",
                "key": format!("KEY_{i}"), "value": format!("value-{i}")
            })
        })
        .collect();
    for n in SIZES {
        folders.push(
            serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": folder_of(n)}),
        );
        secrets.extend((0..n).map(|i| {
            serde_json::json!({
                "projectId": PROJECT, "environment": "dev", "path": folder_of(n),
                "key": format!("KEY_{i}"), "value": format!("value-{i}")
            })
        }));
    }
    let seed = serde_json::json!({
        "projects": [{"id": PROJECT, "slug": "bench", "environments": ["dev"]}],
        "identities": [{"id": "id-ua", "name": "bench", "clientId": "bench-id",
                        "clientSecret": "bench-secret", "accessTokenTTL": 86400,
                        "accessTokenMaxTTL": 86400, "projects": [PROJECT]}],
        "folders": folders,
        "secrets": secrets
    });
    let seed = Seed::from_json(&seed.to_string()).expect("seed");
    Emulator::start(tune(EmulatorConfig::new(seed))).await.expect("emulator")
}

fn client(base_url: &str) -> Client {
    // The default request budget (8 per second after a burst of 50) would be measured instead.
    let config = ClientConfig::new(base_url, AuthMethod::universal("bench-id", "bench-secret"))
        .expect("config")
        .with_budget(BudgetConfig { capacity: 1e9, refill_per_sec: 1e9 });
    Client::new(config).expect("client")
}

/// A bare map lookup (the floor), a live handle read and a cached `get` hit, at each folder
/// size, with the Prometheus recorder installed as in production (so metric updates count).
fn cached_get(c: &mut Criterion) {
    let _recorder = ikit_common::telemetry::metrics_handle();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let emu = rt.block_on(emulator());
    let cache = CachedClient::builder()
        .client(client(&emu.base_url()))
        .ttl(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(7200))
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let mut group = c.benchmark_group("cached_get");
    // Short samples: the table below is the figure of record; the whole run stays under a minute.
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in SIZES {
        let folder = folder_of(n);
        let probe = format!("KEY_{}", n / 2);
        let key = SecretRef::parse(PROJECT, "dev", &format!("{folder}/{probe}")).unwrap();
        rt.block_on(cache.get(&key)).expect("warm");
        let handle = rt.block_on(cache.handle(&key)).expect("handle");
        let map: HashMap<String, String> =
            (0..n).map(|i| (format!("{folder}/KEY_{i}"), format!("value-{i}"))).collect();
        let path = format!("{folder}/{probe}");
        group.bench_with_input(BenchmarkId::new("hashmap_lookup", n), &n, |b, _| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(map.get(black_box(path.as_str())).map(String::len));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("handle_read", n), &n, |b, _| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let served = black_box(&handle).fresh().expect("fresh");
                    black_box(served.value.value.expose().len());
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("cached_client_get", n), &n, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..BATCH {
                        let served = cache.get(black_box(&key)).await.expect("hit");
                        black_box(served.value.value.expose().len());
                    }
                })
            })
        });
        // The same three, timed side by side for the summary table: interleaved rounds, the
        // best of each kept, so a busy machine slows all three alike instead of one of them.
        let (mut floor, mut handle_ns, mut get_ns) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            floor = floor.min(per_read(|| {
                black_box(map.get(black_box(path.as_str())).map(String::len));
            }));
            handle_ns = handle_ns.min(per_read(|| {
                black_box(black_box(&handle).fresh().expect("fresh").value.value.expose().len());
            }));
            get_ns = get_ns.min(rt.block_on(async {
                let started = Instant::now();
                for _ in 0..READS {
                    let served = cache.get(black_box(&key)).await.expect("hit");
                    black_box(served.value.value.expose().len());
                }
                started.elapsed().as_nanos() as f64 / f64::from(READS)
            }));
        }
        rows.push((n, floor, handle_ns, get_ns));
    }
    group.finish();
    println!("\nhot path, Prometheus recorder installed (ratio to HashMap<String, String>::get):");
    println!("{:<22} {:>10} {:>12} {:>7}  goal", "case", "ns/op", "baseline ns", "ratio");
    for (n, floor, handle_ns, get_ns) in rows {
        let row = |case: &str, ns: f64, goal: f64| {
            let ratio = ns / floor;
            let met = if ratio <= goal && ns < 1000.0 { "met" } else { "MISSED" };
            println!(
                "{:<22} {ns:>10.1} {floor:>12.1} {ratio:>6.2}x  <= {goal}x, < 1 us: {met}",
                format!("{case} @{n}")
            );
        };
        row("handle read", handle_ns, 2.0);
        row("get hit", get_ns, 3.0);
    }
    rt.block_on(emu.shutdown());
}

const READS: u32 = 50_000;
const ROUNDS: usize = 9;

/// Mean nanoseconds of `read` over [`READS`] calls, after a warm-up.
fn per_read(mut read: impl FnMut()) -> f64 {
    for _ in 0..READS / 10 {
        read();
    }
    let started = Instant::now();
    for _ in 0..READS {
        read();
    }
    started.elapsed().as_nanos() as f64 / f64::from(READS)
}

fn single_flight(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let emu = rt.block_on(emulator());
    let base = client(&emu.base_url());
    rt.block_on(base.ensure_token()).expect("login");
    let key = SecretRef::parse(PROJECT, "dev", "/app/KEY_7").unwrap();

    let mut group = c.benchmark_group("single_flight");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let query = ikit_client::FolderQuery::new(PROJECT, "dev", "/app");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_uncached_fetch", |b| {
        b.iter(|| rt.block_on(base.fetch_folder(&query)).expect("fetch"))
    });
    for n in [10usize, 100] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("concurrent_cold_gets", n), &n, |b, &n| {
            b.iter(|| {
                // A fresh L1 each time: every batch starts cold.
                let cache = CachedClient::builder()
                    .client(base.clone())
                    .ttl(Duration::from_secs(3600))
                    .max_stale(Duration::from_secs(7200))
                    .build()
                    .unwrap();
                let before = emu.request_count("GET", "/api/v4/secrets");
                rt.block_on(async {
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let cache = cache.clone();
                            let key = key.clone();
                            tokio::spawn(async move { cache.get(&key).await.map(|_| ()) })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap().expect("get");
                    }
                });
                assert_eq!(emu.request_count("GET", "/api/v4/secrets") - before, 1);
            })
        });
    }
    group.finish();
    rt.block_on(emu.shutdown());
}

criterion_group!(benches, cached_get, single_flight);
criterion_main!(benches);
