//! The hot path: a bare `HashMap` lookup (the floor), a live `SecretHandle` read and a cached
//! `get` hit at 10, 1,000 and 10,000 secrets per folder, with a Prometheus recorder installed,
//! then a table of the three with their ratios; and single-flight: N concurrent misses of one
//! cold folder, answered by one request to the emulator.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ikit_client::{
    AuthMethod, BudgetConfig, CacheConfig, CachedClient, Client, ClientConfig, SecretRef,
};
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};

const PROJECT: &str = "9b6f8a70-0000-4000-8000-000000000001";
const BATCH: usize = 1_000;

/// Folder sizes the hot path is measured at.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn folder_of(n: usize) -> String {
    format!("/s{n}")
}

async fn emulator() -> RunningEmulator {
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
    Emulator::start(EmulatorConfig::new(seed)).await.expect("emulator")
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
    let cache = CachedClient::new(
        client(&emu.base_url()),
        CacheConfig::new(Duration::from_secs(3600), Duration::from_secs(7200)),
    )
    .unwrap();
    let mut rows = Vec::new();
    let mut group = c.benchmark_group("cached_get");
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
        // The same three, timed side by side for the summary table.
        let floor = per_read(|| {
            black_box(map.get(black_box(path.as_str())).map(String::len));
        });
        let handle_ns = per_read(|| {
            black_box(black_box(&handle).fresh().expect("fresh").value.value.expose().len());
        });
        let get_ns = rt.block_on(async {
            let started = Instant::now();
            for _ in 0..READS {
                let served = cache.get(black_box(&key)).await.expect("hit");
                black_box(served.value.value.expose().len());
            }
            started.elapsed().as_nanos() as f64 / READS as f64
        });
        rows.push((n, floor, handle_ns, get_ns));
    }
    group.finish();
    println!("\nhot path, ns per read (ratio to the HashMap<String, String> lookup):");
    println!("{:>8} {:>10} {:>18} {:>18}", "secrets", "hashmap", "handle read", "get hit");
    for (n, floor, handle_ns, get_ns) in rows {
        println!(
            "{n:>8} {floor:>10.1} {handle_ns:>10.1} ({:>4.1}x) {get_ns:>10.1} ({:>4.1}x)",
            handle_ns / floor,
            get_ns / floor
        );
    }
    rt.block_on(emu.shutdown());
}

const READS: u32 = 200_000;

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
                let cache = CachedClient::new(
                    base.clone(),
                    CacheConfig::new(Duration::from_secs(3600), Duration::from_secs(7200)),
                )
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
