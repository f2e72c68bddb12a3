//! A cached get beside a bare `HashMap` lookup (the floor), and single-flight: N concurrent
//! misses of one cold folder, answered by one request to the emulator.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ikit_client::{
    AuthMethod, BudgetConfig, CacheConfig, CachedClient, Client, ClientConfig, SecretRef,
};
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};

const PROJECT: &str = "9b6f8a70-0000-4000-8000-000000000001";
const BATCH: usize = 1_000;

async fn emulator() -> RunningEmulator {
    let seed = serde_json::json!({
        "projects": [{"id": PROJECT, "slug": "bench", "environments": ["dev"]}],
        "identities": [{"id": "id-ua", "name": "bench", "clientId": "bench-id",
                        "clientSecret": "bench-secret", "accessTokenTTL": 86400,
                        "accessTokenMaxTTL": 86400, "projects": [PROJECT]}],
        "folders": [{"projectId": PROJECT, "environment": "dev", "path": "/app"}],
        "secrets": (0..50).map(|i| serde_json::json!({
            "projectId": PROJECT, "environment": "dev", "path": "/app",
            "key": format!("KEY_{i}"), "value": format!("value-{i}")
        })).collect::<Vec<_>>()
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

fn cached_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let emu = rt.block_on(emulator());
    let cache = CachedClient::new(
        client(&emu.base_url()),
        CacheConfig::new(Duration::from_secs(3600), Duration::from_secs(7200)),
    )
    .unwrap();
    let key = SecretRef::parse(PROJECT, "dev", "/app/KEY_7").unwrap();
    rt.block_on(cache.get(&key)).expect("warm");
    let map: HashMap<String, String> =
        (0..50).map(|i| (format!("/app/KEY_{i}"), format!("value-{i}"))).collect();

    let mut group = c.benchmark_group("cached_get");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("hashmap_lookup", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(map.get(black_box("/app/KEY_7")).map(String::len));
            }
        })
    });
    group.bench_function("cached_client_get", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    let served = cache.get(black_box(&key)).await.expect("hit");
                    black_box(served.value.value.expose().len());
                }
            })
        })
    });
    group.finish();
    rt.block_on(emu.shutdown());
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
