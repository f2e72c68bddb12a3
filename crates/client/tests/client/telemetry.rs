//! Metric names and labels are binding; labels carry folder paths, never keys or values.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{BudgetConfig, Client, FolderQuery, SecretRef};
use ikit_emulator::{ApiVersion, Fault};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::support::{DB_VALUE, Harness, PROJECT, ua};

type Series = Arc<Mutex<BTreeMap<String, f64>>>;

/// Records every series as `name{k=v,...}` with its running value.
#[derive(Default)]
struct Capture {
    series: Series,
}

struct Handle {
    key: String,
    /// `name_sum{...}`: the running sum of a histogram's observations.
    sum_key: String,
    series: Series,
}

impl metrics::CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self.series.lock().unwrap().entry(self.key.clone()).or_default() += value as f64;
    }

    fn absolute(&self, value: u64) {
        self.series.lock().unwrap().insert(self.key.clone(), value as f64);
    }
}

impl metrics::GaugeFn for Handle {
    fn increment(&self, value: f64) {
        *self.series.lock().unwrap().entry(self.key.clone()).or_default() += value;
    }

    fn decrement(&self, value: f64) {
        *self.series.lock().unwrap().entry(self.key.clone()).or_default() -= value;
    }

    fn set(&self, value: f64) {
        self.series.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl metrics::HistogramFn for Handle {
    fn record(&self, value: f64) {
        // Histograms are counted by observations, and summed under `name_sum`.
        let mut series = self.series.lock().unwrap();
        *series.entry(self.key.clone()).or_default() += 1.0;
        *series.entry(self.sum_key.clone()).or_default() += value;
    }
}

impl Capture {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let mut labels: Vec<String> =
            key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        labels.sort();
        let labels = labels.join(",");
        Arc::new(Handle {
            key: format!("{}{{{labels}}}", key.name()),
            sum_key: format!("{}_sum{{{labels}}}", key.name()),
            series: self.series.clone(),
        })
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

#[tokio::test]
async fn fetch_token_and_rate_limit_metrics_are_labelled_by_folder() {
    let capture = Capture::default();
    let series = capture.series.clone();
    let _guard = metrics::set_default_local_recorder(&capture);
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.get(&SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap()).await.unwrap();
    client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    h.emulator.faults().add(Fault::rate_limited("/api/v4/secrets", 3).times(1));
    client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/shared")).await.unwrap();
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 403));
    client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/shared")).await.unwrap_err();

    let got = series.lock().unwrap().clone();
    let want = [
        // The uncached get read its key by name: only the listing counts as a folder fetch.
        ("infisical_fetch_total{path=/app,source=network}", 1.0),
        ("infisical_fetch_total{path=/shared,source=network}", 1.0),
        ("infisical_fetch_errors_total{error=permission_denied,path=/shared}", 1.0),
        ("infisical_fetch_duration_seconds{path=/app}", 1.0),
        ("infisical_fetch_duration_seconds{path=/shared}", 2.0),
        ("infisical_token_expires_in_seconds{}", 600.0),
        ("infisical_rate_limit_wait_seconds{}", 1.0),
        ("infisical_rate_limit_wait_seconds_sum{}", 3.0),
    ];
    for (series, value) in want {
        assert_eq!(got.get(series), Some(&value), "{series} in {got:#?}");
    }
    let all = format!("{got:?}");
    assert!(!all.contains("DB_URL") && !all.contains(DB_VALUE), "{all}");
}

#[tokio::test]
async fn budget_waits_are_recorded_in_fractional_seconds() {
    let capture = Capture::default();
    let series = capture.series.clone();
    let _guard = metrics::set_default_local_recorder(&capture);
    let h = Harness::start(ApiVersion::V2026).await;
    // Two tokens, eight per second: the login and the first list take them, the second list
    // waits 125 ms, which must not count as a whole second.
    let config = h.config(ua()).with_budget(BudgetConfig { capacity: 2.0, refill_per_sec: 8.0 });
    let client = Client::new(config).unwrap();
    let query = FolderQuery::new(PROJECT, "dev", "/app");
    client.fetch_folder(&query).await.unwrap();
    client.fetch_folder(&query).await.unwrap();
    assert_eq!(h.sleeper.recorded(), vec![Duration::from_millis(125)]);
    let got = series.lock().unwrap().clone();
    assert_eq!(got.get("infisical_rate_limit_wait_seconds{}"), Some(&1.0), "{got:#?}");
    let sum = got.get("infisical_rate_limit_wait_seconds_sum{}").copied().unwrap_or_default();
    assert!((sum - 0.125).abs() < 1e-9, "{got:#?}");
}

#[tokio::test]
async fn cache_metrics_count_hits_misses_and_stale_serves_by_folder() {
    use std::time::Duration;

    use ikit_client::{CachedClient, SealKey, Source};

    let capture = Capture::default();
    let series = capture.series.clone();
    let _guard = metrics::set_default_local_recorder(&capture);
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = ikit_common::testsuite::TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(60);
    let config = CachedClient::builder()
        .ttl(ttl)
        .max_stale(Duration::from_secs(3600))
        .snapshot(dir.path(), SealKey::new([3; 32]));
    let with_l2 =
        config.clone().redis(redis.url(), Some(SealKey::new([4; 32]))).redis_prefix(redis.prefix());
    let cached = with_l2.client(h.client(ua())).build().unwrap();
    let offline = config.client(h.client(ua())).build().unwrap();
    let db_url = SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap();
    let app = FolderQuery::new(PROJECT, "dev", "/app");

    assert_eq!(cached.get(&db_url).await.unwrap().source, Source::Network);
    assert_eq!(cached.get(&db_url).await.unwrap().source, Source::Cache);
    h.advance(ttl * 2);
    assert_eq!(cached.get(&db_url).await.unwrap().source, Source::Cache);
    tokio::time::timeout(Duration::from_secs(10), async {
        while cached.cached_age(&app).await.is_none_or(|age| age >= ttl) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("background revalidation");
    h.emulator.shutdown().await;
    assert_eq!(offline.get(&db_url).await.unwrap().source, Source::Snapshot);

    // Hits are counted per listing and batched into the counters; this makes them exact now.
    cached.flush_metrics();
    let got = series.lock().unwrap().clone();
    let want = [
        ("infisical_cache_miss_total{path=/app}", 2.0),
        ("infisical_cache_hit_total{path=/app}", 1.0),
        ("infisical_cache_stale_total{path=/app,source=cache}", 1.0),
        ("infisical_cache_stale_total{path=/app,source=snapshot}", 1.0),
        ("infisical_cache_stale_age_seconds{path=/app,source=cache}", 1.0),
        ("infisical_cache_stale_age_seconds{path=/app,source=snapshot}", 1.0),
        ("infisical_cache_stale_age_seconds_sum{path=/app,source=cache}", 120.0),
        ("infisical_fetch_total{path=/app,source=cache}", 2.0),
        ("infisical_fetch_total{path=/app,source=snapshot}", 1.0),
        ("infisical_fetch_total{path=/app,source=network}", 2.0),
        ("infisical_cache_l2_up{}", 1.0),
    ];
    for (series, value) in want {
        assert_eq!(got.get(series), Some(&value), "{series} in {got:#?}");
    }
    let all = format!("{got:?}");
    assert!(!all.contains("DB_URL") && !all.contains(DB_VALUE), "{all}");
}

#[tokio::test]
async fn every_cache_hit_is_counted_once_whichever_way_it_reads() {
    use std::time::Duration;

    use ikit_client::{CachedClient, Source};

    let capture = Capture::default();
    let series = capture.series.clone();
    let _guard = metrics::set_default_local_recorder(&capture);
    let h = Harness::start(ApiVersion::V2026).await;
    let cached = CachedClient::builder()
        .client(h.client(ua()))
        .ttl(Duration::from_secs(60))
        .max_stale(Duration::from_secs(3600))
        .build()
        .unwrap();
    let db_url = SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap();
    let app = FolderQuery::new(PROJECT, "dev", "/app");
    assert_eq!(cached.get(&db_url).await.unwrap().source, Source::Network);
    let handle = cached.handle(&db_url).await.unwrap();
    // The handle's resolution read the fresh listing: one hit.
    let mut hits = 1;
    for _ in 0..500 {
        assert_eq!(cached.get(&db_url).await.unwrap().source, Source::Cache);
        assert_eq!(handle.fresh().unwrap().value.value.expose(), DB_VALUE);
        assert_eq!(handle.with_fresh(|s| s.value.expose().len()), Some(DB_VALUE.len()));
        assert_eq!(cached.folder(&app).await.unwrap().source, Source::Cache);
        hits += 4;
    }
    cached.flush_metrics();
    let got = series.lock().unwrap().clone();
    assert_eq!(got.get("infisical_cache_hit_total{path=/app}"), Some(&f64::from(hits)), "{got:#?}");
    assert_eq!(got.get("infisical_fetch_total{path=/app,source=cache}"), Some(&f64::from(hits)));

    // A listing dropped by an invalidation takes its last hits to the counters with it (the
    // flush cannot reach a dropped listing: the count can only come from the drop).
    handle.with_fresh(|_| ()).unwrap();
    drop(handle);
    cached.invalidate("/app").await;
    cached.flush_metrics();
    let got = series.lock().unwrap().clone();
    assert_eq!(got.get("infisical_cache_hit_total{path=/app}"), Some(&f64::from(hits + 1)));
}
