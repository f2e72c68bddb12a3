//! The caching client against the emulator and a real Redis: single-flight, outage fallbacks
//! (cache, snapshot, max_stale), fan-out invalidation, subscriptions, Redis failures, and what
//! lands in Redis and on disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{
    AuthMethod, CachedClient, CachedClientBuilder, ClientError, FolderQuery, Invalidated,
    Invalidator, SealKey, SecretRef, Source, events_channel,
};
use ikit_common::events::{ChangeKind, SecretChangeEvent};
use ikit_common::testsuite::{LogCapture, TestRedis};
use ikit_emulator::{ApiVersion, Fault};

use crate::support::{DB_VALUE, Harness, PROJECT, ua};

const TTL: Duration = Duration::from_secs(60);
const MAX_STALE: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(10);

fn key() -> SealKey {
    SealKey::new([42; 32])
}

fn db_url() -> SecretRef {
    SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap()
}

/// The change event for `/app/DB_URL` updated to `version`.
fn db_url_updated(version: u64, event_id: &str) -> SecretChangeEvent {
    SecretChangeEvent {
        project: PROJECT.into(),
        environment: "dev".into(),
        folder: "/app".into(),
        key: "DB_URL".into(),
        kind: ChangeKind::Updated,
        version: Some(version),
        event_id: event_id.into(),
    }
}

fn app() -> FolderQuery {
    FolderQuery::new(PROJECT, "dev", "/app")
}

fn cached(h: &Harness, config: CachedClientBuilder) -> CachedClient {
    config.client(h.client(ua())).build().unwrap()
}

fn with_redis(redis: &TestRedis, url: &str) -> CachedClientBuilder {
    CachedClient::builder()
        .ttl(TTL)
        .max_stale(MAX_STALE)
        .redis(url, Some(key()))
        .redis_prefix(redis.prefix())
}

/// A client that tries once and opens its circuit after two failures, for `open_for`.
fn quick_to_open(h: &Harness, open_for: Duration) -> ikit_client::Client {
    ikit_client::Client::new(
        h.config(ua())
            .with_breaker(ikit_client::BreakerConfig { failure_threshold: 2, open_for })
            .with_retry(ikit_client::RetryPolicy {
                max_attempts: 1,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                max_retry_after: Duration::from_secs(1),
            }),
    )
    .unwrap()
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_cold_gets_make_one_request() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let cache = cached(&h, with_redis(&redis, redis.url()));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&db_url()).await })
        })
        .collect();
    let mut sources = Vec::new();
    for task in tasks {
        let served = task.await.unwrap().unwrap();
        assert_eq!(served.value.value.expose(), DB_VALUE);
        sources.push(served.source);
    }
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1, "one request for 100 cold gets");
    assert_eq!(sources.iter().filter(|s| **s == Source::Network).count(), 1);
    assert_eq!(sources.iter().filter(|s| **s == Source::Cache).count(), 99);

    // A second replica finds the listing in L2 without asking Infisical.
    let other = cached(&h, with_redis(&redis, redis.url()));
    let served = other.get(&db_url()).await.unwrap();
    assert_eq!((served.source, served.value.value.expose()), (Source::Cache, DB_VALUE));
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1);
}

#[tokio::test]
async fn cached_gets_share_one_indexed_secret_and_keep_listings_of_other_flags_apart() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    let first = cache.get(&db_url()).await.unwrap();
    let second = cache.get(&db_url()).await.unwrap();
    assert_eq!((first.source, second.source), (Source::Network, Source::Cache));
    assert!(Arc::ptr_eq(&first.value, &second.value), "a hit copies nothing");
    // Imports resolved once, at insert, with the client's import order (a later import wins).
    let common = SecretRef::parse(PROJECT, "dev", "/app/COMMON").unwrap();
    assert_eq!(cache.get(&common).await.unwrap().value.value.expose(), "from-shared2");
    let missing = SecretRef::parse(PROJECT, "dev", "/app/NOPE").unwrap();
    assert!(matches!(cache.get(&missing).await, Err(ClientError::NotFound { .. })));
    // A listing of the same folder with other flags is another entry, not this one.
    let recursive = app().recursive(true);
    assert!(!cache.is_cached(&recursive).await);
    assert_eq!(cache.folder(&recursive).await.unwrap().source, Source::Network);
    assert_eq!(cache.get(&db_url()).await.unwrap().source, Source::Cache);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
}

#[tokio::test]
async fn a_value_hidden_from_the_identity_is_refused_from_a_fresh_listing_never_shown() {
    let h = Harness::start(ApiVersion::V2026).await;
    let describer = AuthMethod::universal("ua-describe-id", "ua-describe-secret");
    let cache = CachedClient::builder()
        .ttl(TTL)
        .max_stale(MAX_STALE)
        .client(h.client(describer))
        .build()
        .unwrap();
    // The listing itself is readable: keys and versions, every value masked.
    let listing = cache.folder(&app()).await.unwrap();
    assert!(!listing.value.secrets.is_empty());
    assert!(listing.value.secrets.iter().all(|s| s.value_hidden));
    // A get from that fresh listing (twice: the second finds it in L1): a permission error
    // naming the secret, never the mask as a value, and no request beyond the listing.
    for _ in 0..2 {
        let refused = cache.get(&db_url()).await.expect_err("a hidden value is refused");
        assert!(
            matches!(&refused, ClientError::PermissionDenied { secret: Some(k), .. } if k == "DB_URL"),
            "{refused}"
        );
        assert!(!refused.to_string().contains("hidden-by-infisical"), "{refused}");
    }
    assert!(cache.handle(&db_url()).await.is_err(), "no live handle on a hidden value");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1);
    // The uncached read by name is masked and refused the same way.
    let by_name = cache.client().get(&db_url()).await.expect_err("refused by name");
    assert!(matches!(by_name, ClientError::PermissionDenied { .. }), "{by_name}");
    assert_eq!(h.count("GET", "/api/v4/secrets/DB_URL"), 1);
}

#[tokio::test]
async fn a_live_handle_follows_change_events_and_the_fetcher() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    let handle = cache.handle(&db_url()).await.unwrap();
    let first = handle.fresh().expect("resolved at once");
    assert_eq!(first.value.value.expose(), DB_VALUE);
    let again = handle.value().await.unwrap();
    assert!(Arc::ptr_eq(&first.value, &again.value), "a read is a load, not a copy");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1);

    // The value changes and its change event arrives: the slot is cleared, the next read
    // fetches the new value, and the fetcher swaps it in for every clone of the handle.
    let scope = ikit_client::Scope::new(PROJECT, "dev", "/app");
    let update = ikit_client::SecretUpdate::value("DB_URL", "v2");
    h.client(ua()).update_secret(&scope, &update).await.unwrap();
    let clone = handle.clone();
    cache.deliver(&db_url_updated(2, "h1")).await;
    assert!(clone.fresh().is_none(), "the event cleared the slot");
    let served = handle.value().await.unwrap();
    assert_eq!((served.source, served.value.value.expose()), (Source::Network, "v2"));
    assert_eq!(clone.fresh().unwrap().value.value.expose(), "v2");

    // A handle on an imported key follows its import; the fetcher refills it on any read.
    let common = cache.handle(&SecretRef::parse(PROJECT, "dev", "/app/COMMON").unwrap()).await;
    let common = common.unwrap();
    assert_eq!(common.fresh().unwrap().value.value.expose(), "from-shared2");
    cache.invalidate("/other").await;
    assert!(common.fresh().is_some(), "an unrelated invalidation leaves it");
    cache.invalidate("/shared2/COMMON").await;
    assert!(common.fresh().is_none() && handle.fresh().is_none(), "the listing was dropped");
    cache.folder(&app()).await.unwrap();
    assert_eq!(handle.fresh().unwrap().value.value.expose(), "v2");
    assert_eq!(common.fresh().unwrap().value.value.expose(), "from-shared2");

    // Past the TTL a slot is not fresh; the read goes through the cache again.
    h.advance(TTL);
    assert!(handle.fresh().is_none());
    assert_eq!(handle.value().await.unwrap().source, Source::Cache, "stale while revalidating");
    let missing = SecretRef::parse(PROJECT, "dev", "/app/NOPE").unwrap();
    assert!(matches!(cache.handle(&missing).await, Err(ClientError::NotFound { .. })));
}

/// A hit reads a per-thread copy of its L1 shard and of its handle's slot (checked against the
/// original with one atomic load instead of pinning it): a thread that read a listing before
/// it was invalidated elsewhere never gets it from its copies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_copy_never_serves_an_invalidated_listing() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    let handle = cache.handle(&db_url()).await.unwrap();
    // Each round, the reader reads through the handle, and through `get` when asked to.
    let (go, rounds) = std::sync::mpsc::channel::<bool>();
    let (reads, results) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Handle::current();
    let reader = {
        let (cache, handle) = (cache.clone(), handle.clone());
        // Its own thread, so its copies are its own; misses run on the test's runtime.
        std::thread::spawn(move || {
            for with_get in rounds {
                let got = with_get.then(|| {
                    let got = runtime.block_on(cache.get(&db_url())).unwrap();
                    (got.source, got.value.value.expose().to_owned())
                });
                let by_handle = handle.with_fresh(|s| s.value.expose().to_owned());
                reads.send((got, by_handle)).unwrap();
            }
        })
    };
    let read = |with_get: bool| {
        go.send(with_get).unwrap();
        results.recv_timeout(WAIT).unwrap()
    };
    let (v1, v2) = (DB_VALUE.to_owned(), "v2".to_owned());
    let hit = |v: &str| (Some((Source::Cache, v.to_owned())), Some(v.to_owned()));
    assert_eq!(read(true), hit(&v1), "copies made");
    assert_eq!(read(true), hit(&v1), "and read");

    // Changed behind the cache, then invalidated here: the reader's copies are outdated.
    let scope = ikit_client::Scope::new(PROJECT, "dev", "/app");
    let update = ikit_client::SecretUpdate::value("DB_URL", "v2");
    h.client(ua()).update_secret(&scope, &update).await.unwrap();
    assert_eq!(cache.invalidate("/app").await.local, 1);
    assert_eq!(read(false), (None, None), "the handle's slot was cleared");
    // The get misses (its shard copy is not used) and refills the slot for the handle.
    assert_eq!(read(true), (Some((Source::Network, v2.clone())), Some(v2.clone())));
    assert_eq!(read(true), hit(&v2));
    // Dropped by a change event, not refilled: neither copy serves the listing.
    cache.deliver(&db_url_updated(3, "copies")).await;
    assert!(!cache.is_cached(&app()).await);
    assert_eq!(read(false), (None, None));
    assert_eq!(read(true), (Some((Source::Network, v2.clone())), Some(v2)));
    drop(go);
    reader.join().unwrap();
    assert_eq!(h.count("GET", "/api/v4/secrets"), 3, "one listing, then one per drop");
}

#[tokio::test]
async fn stale_listings_are_revalidated_with_the_etag() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    let first = cache.folder(&app()).await.unwrap();
    h.advance(TTL * 2);
    // Past the TTL but within max_stale: served at once, refreshed in the background.
    let stale = cache.folder(&app()).await.unwrap();
    assert_eq!((stale.source, stale.age), (Source::Cache, TTL * 2));
    tokio::time::timeout(WAIT, async {
        while cache.cached_age(&app()).await.is_none_or(|age| age >= TTL) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("background revalidation");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
    // Past max_stale the read waits for a conditional fetch; the server answers 304.
    h.advance(MAX_STALE * 2);
    let revalidated = cache.folder(&app()).await.unwrap();
    assert_eq!(revalidated.source, Source::Network);
    assert!(
        revalidated.value.secrets.iter().any(|s| s.key == "DB_URL" && s.value.expose() == DB_VALUE)
    );
    assert_eq!(h.count("GET", "/api/v4/secrets"), 3, "first fetch, background refresh, 304");
    // Both revalidations were answered 304, so the first listing is still the one served.
    assert!(Arc::ptr_eq(&first.value, &revalidated.value), "a 304 reuses the cached listing");
}

#[tokio::test]
async fn an_outage_is_served_from_cache_then_snapshot_until_max_stale() {
    let h = Harness::start(ApiVersion::V2026).await;
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snapshots");
    let config = CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(&snaps, key());
    let first = cached(&h, config.clone());
    let fresh = first.get(&db_url()).await.unwrap();
    assert_eq!(fresh.source, Source::Network);

    // Written atomically, private, sealed.
    let files = snapshot_files(&snaps);
    assert_eq!(files.len(), 1, "{files:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files[0]), 0o600);
        assert_eq!(mode(&snaps), 0o700);
    }
    let sealed = std::fs::read(&files[0]).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("Sup3r-Secret"));

    // Two clients made while the emulator still answers; then it goes away.
    let second = cached(&h, config.clone());
    let third = cached(&h, config.clone());
    let Harness { emulator, clock, sleeper } = h;
    emulator.shutdown().await;

    clock.advance_by(TTL * 2);
    let from_cache = first.get(&db_url()).await.unwrap();
    assert_eq!(from_cache.source, Source::Cache);
    assert_eq!(from_cache.age, TTL * 2);
    assert_eq!(from_cache.value.value.expose(), DB_VALUE);

    let from_snapshot = second.get(&db_url()).await.unwrap();
    assert_eq!(from_snapshot.source, Source::Snapshot);
    assert_eq!(from_snapshot.value.value.expose(), DB_VALUE);
    // The retries before giving up moved the injected clock a little further.
    let waited: Duration = sleeper.recorded().iter().sum();
    assert!(from_snapshot.age >= TTL * 2 && from_snapshot.age <= TTL * 2 + waited);

    clock.advance_by(MAX_STALE);
    for client in [&first, &second] {
        match client.get(&db_url()).await {
            Err(ClientError::TooStale { age, max_stale }) => {
                assert!(age > MAX_STALE && max_stale == MAX_STALE, "{age:?}");
            }
            other => panic!("expected too stale, got {:?}", other.map(|s| s.source)),
        }
    }

    // A flipped byte is rejected with a clear error, whatever the age.
    let mut flipped = sealed.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    std::fs::write(&files[0], &flipped).unwrap();
    let err = third.get(&db_url()).await.unwrap_err();
    assert!(matches!(&err, ClientError::Snapshot(m) if m.contains("corrupt or foreign")), "{err}");

    // No snapshot for a folder never read: the network error itself.
    let shared_query = FolderQuery::new(PROJECT, "dev", "/shared");
    let err = third.folder(&shared_query).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: None, .. }), "{err}");
    // The /app snapshot under /shared's name is foreign: the folder is bound in.
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{PROJECT}:dev:r0i1e1v1p0t:/shared").as_bytes());
    let shared_file = snaps.join(format!("{}.snap", hex::encode(&digest[..16])));
    std::fs::write(&shared_file, &sealed).unwrap();
    let err = third.folder(&shared_query).await.unwrap_err();
    assert!(matches!(&err, ClientError::Snapshot(m) if m.contains("foreign")), "{err}");
}

#[tokio::test]
async fn an_open_circuit_is_answered_from_cache_and_snapshot_without_a_request() {
    let h = Harness::start(ApiVersion::V2026).await;
    let dir = tempfile::tempdir().unwrap();
    let config = CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(dir.path(), key());
    let client = quick_to_open(&h, Duration::from_secs(600));
    let cache = config.clone().client(client.clone()).build().unwrap();
    cache.get(&db_url()).await.unwrap();
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 503));
    for _ in 0..2 {
        client.fetch_folder(&app()).await.unwrap_err();
    }
    assert!(client.circuit_open());
    let requests = h.count("GET", "/api/v4/secrets");

    h.advance(TTL * 2);
    let stale = cache.get(&db_url()).await.unwrap();
    assert_eq!((stale.source, stale.age), (Source::Cache, TTL * 2));
    let offline = config.client(client).build().unwrap();
    let snap = offline.get(&db_url()).await.unwrap();
    assert_eq!((snap.source, snap.age), (Source::Snapshot, TTL * 2));
    assert_eq!(snap.value.value.expose(), DB_VALUE);
    assert_eq!(h.count("GET", "/api/v4/secrets"), requests, "nothing sent while open");
}

#[tokio::test]
async fn an_error_status_is_not_answered_from_the_snapshot() {
    let h = Harness::start(ApiVersion::V2026).await;
    let dir = tempfile::tempdir().unwrap();
    let config = CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(dir.path(), key());
    cached(&h, config.clone()).get(&db_url()).await.unwrap();
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 503));
    let err = cached(&h, config).get(&db_url()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: Some(503), .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_and_change_events_reach_another_replica_through_redis() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let a = cached(&h, with_redis(&redis, redis.url()));
    let b = cached(&h, with_redis(&redis, redis.url()));
    a.get(&db_url()).await.unwrap();
    let served = b.get(&db_url()).await.unwrap();
    assert_eq!(served.source, Source::Cache, "from L2");
    assert!(b.is_cached(&app()).await);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1);

    // Redis holds the listing sealed only.
    let mut conn = redis.connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", redis.prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert!(!keys.is_empty());
    for k in &keys {
        // Listings are strings; the import index holds sets of key names.
        let kind: String = redis::cmd("TYPE").arg(k).query_async(&mut conn).await.unwrap();
        let value: Vec<u8> = if kind == "set" {
            let members: Vec<String> =
                redis::cmd("SMEMBERS").arg(k).query_async(&mut conn).await.unwrap();
            members.concat().into_bytes()
        } else {
            redis::cmd("GET").arg(k).query_async(&mut conn).await.unwrap()
        };
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains(DB_VALUE) && !text.contains("Sup3r"), "{k} holds plain text");
        assert!(!text.contains("from-shared"), "{k} holds an imported value in plain text");
    }

    let mut listener = b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    let mut applied = b.invalidations();
    let mut events = b.subscribe_stream("/app/*", 16);
    let called = Arc::new(Mutex::new(Vec::new()));
    let seen = called.clone();
    b.subscribe("/shared", move |e| seen.lock().unwrap().push(e.key.clone()));

    a.invalidate("/app/*").await;
    let pattern = tokio::time::timeout(WAIT, applied.recv()).await.expect("in time").unwrap();
    assert_eq!(pattern, "/app/*");
    assert!(!b.is_cached(&app()).await, "b's L1 dropped by a's invalidation");
    assert_eq!(b.get(&db_url()).await.unwrap().source, Source::Network);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);

    // Per-key events, with a duplicate by (key, version) dropped.
    let event = |key: &str, folder: &str, version: Option<u64>, id: &str| SecretChangeEvent {
        project: PROJECT.into(),
        environment: "dev".into(),
        folder: folder.into(),
        key: key.into(),
        kind: if version.is_some() { ChangeKind::Updated } else { ChangeKind::Deleted },
        version,
        event_id: id.into(),
    };
    // Published the way the webhook service does: L2 cleared once by the publisher, then the
    // coalesced invalidation, then the events.
    let publisher = Invalidator::connect(redis.url(), redis.prefix()).await.unwrap();
    let publish = |e: SecretChangeEvent| {
        let publisher = publisher.clone();
        async move { assert!(publisher.publish(&[e]).await.unwrap().published) }
    };
    publish(event("DB_URL", "/app", Some(2), "e1")).await;
    publish(event("DB_URL", "/app", Some(2), "e1-again")).await;
    publish(event("COMMON", "/shared", Some(5), "e2")).await;
    publish(event("DB_URL", "/app", None, "e3")).await;
    let first = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(
        (first.key.as_str(), first.version, first.kind),
        ("DB_URL", Some(2), ChangeKind::Updated)
    );
    let second = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(
        (second.event_id.as_str(), second.kind),
        ("e3", ChangeKind::Deleted),
        "duplicate dropped"
    );
    assert_eq!(*called.lock().unwrap(), ["COMMON"]);
    assert!(!b.is_cached(&app()).await, "a change event drops the folder listing");
    // From L2 too: the next read asks Infisical instead of refilling L1 from the old copy.
    assert_eq!(b.get(&db_url()).await.unwrap().source, Source::Network);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 3);
    listener.shutdown().await;
}

#[tokio::test]
async fn invalidating_an_imported_folder_drops_importing_listings_from_l2() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let a = cached(&h, with_redis(&redis, redis.url()));
    a.get(&db_url()).await.unwrap();
    a.folder(&FolderQuery::new(PROJECT, "dev", "/shared2")).await.unwrap();
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
    // /app imports /shared: a change there drops /app from L1 and L2, and leaves /shared2.
    a.invalidate("/shared/COMMON").await;
    assert!(!a.is_cached(&app()).await);
    let b = cached(&h, with_redis(&redis, redis.url()));
    assert_eq!(b.get(&db_url()).await.unwrap().source, Source::Network);
    let shared2 = b.folder(&FolderQuery::new(PROJECT, "dev", "/shared2")).await.unwrap();
    assert_eq!(shared2.source, Source::Cache, "unrelated listing kept in L2");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 3);

    // A sealed value copied under another key does not open there: it is ignored.
    let l2_key =
        |folder: &str| format!("{}cache:{PROJECT}:dev:r0i1e1v1p0t:{folder}", redis.prefix());
    let mut conn = redis.connection().await.unwrap();
    let sealed: Vec<u8> =
        redis::cmd("GET").arg(l2_key("/shared2")).query_async(&mut conn).await.unwrap();
    redis::cmd("SET")
        .arg(l2_key("/shared"))
        .arg(sealed)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let c = cached(&h, with_redis(&redis, redis.url()));
    let shared = c.folder(&FolderQuery::new(PROJECT, "dev", "/shared")).await.unwrap();
    assert_eq!(shared.source, Source::Network);
    assert_eq!(shared.value.secrets[0].value.expose(), "from-shared");
}

/// A TCP proxy in front of Redis that the test can cut (closing every connection and refusing
/// new ones) and restore.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
    /// Bumped by `freeze`: connections made before stop forwarding but stay open.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let generation = tokio::sync::watch::Sender::new(0u64);
        let g = generation.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut frozen = g.subscribe();
                frozen.mark_unchanged();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = frozen.changed() => {
                                // Silent but open: hold both sockets until cut or dropped.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                }));
            }
        });
        Self { addr, open, conns, accept, generation }
    }

    fn freeze(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

pub(crate) fn host_port(url: &str) -> String {
    let rest = url.trim_start_matches("redis://");
    let authority = rest.split('/').next().unwrap();
    authority.rsplit('@').next().unwrap().to_owned()
}

#[tokio::test]
async fn redis_going_away_degrades_to_l1_and_recovers() {
    // Counted below: only this test's own events (other tests log the same warnings).
    let (logs, _guard) = LogCapture::start_on_this_thread("ikit_client=debug");
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let proxy = Proxy::start(host_port(redis.url())).await;
    let cache = cached(&h, with_redis(&redis, &proxy.url()));
    let shared = |folder: &str| FolderQuery::new(PROJECT, "dev", folder);
    let l2_key =
        |folder: &str| format!("{}cache:{PROJECT}:dev:r0i1e1v1p0t:{folder}", redis.prefix());
    let conn = redis.connection().await.unwrap();
    let exists = |k: String| {
        let mut conn = conn.clone();
        async move { redis::cmd("EXISTS").arg(k).query_async::<i64>(&mut conn).await.unwrap() }
    };

    cache.get(&db_url()).await.unwrap();
    assert!(cache.l2_up());
    assert_eq!(exists(l2_key("/app")).await, 1);

    proxy.cut();
    // Reads go on: from L1, and from Infisical for what L1 lacks, with no error.
    assert_eq!(cache.get(&db_url()).await.unwrap().source, Source::Cache);
    let shared_one = cache.folder(&shared("/shared")).await.unwrap();
    assert_eq!(shared_one.source, Source::Network);
    assert!(!cache.l2_up(), "l2 marked down");
    assert_eq!(exists(l2_key("/shared")).await, 0, "nothing written while down");
    // While down, Redis is not tried again before retry_every: this read is L1 + network only.
    assert_eq!(cache.folder(&shared("/shared2")).await.unwrap().source, Source::Network);
    // After retry_every it is tried again, fails again, and nothing more is logged.
    h.advance(Duration::from_secs(2));
    cache.invalidate("/shared2").await;
    assert_eq!(cache.folder(&shared("/shared2")).await.unwrap().source, Source::Network);
    assert!(!cache.l2_up());

    proxy.restore();
    h.advance(Duration::from_secs(2));
    cache.invalidate("/shared").await;
    let again = cache.folder(&shared("/shared")).await.unwrap();
    assert_eq!(again.source, Source::Network);
    assert!(cache.l2_up(), "l2 back");
    assert_eq!(exists(l2_key("/shared")).await, 1, "written again after recovery");
    let text = logs.text();
    assert_eq!(text.matches("redis cache unavailable").count(), 1, "{text}");
    assert_eq!(text.matches("redis cache is back").count(), 1, "{text}");

    // The listener loses its subscription with the cut, comes back after the restore, and then
    // applies an invalidation published by another replica.
    let mut listener = cache.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    assert!(cache.is_cached(&shared("/shared")).await);
    proxy.cut();
    tokio::time::timeout(WAIT, listener.disconnected()).await.expect("listener saw the cut");
    proxy.restore();
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener resubscribed");
    // What was published while it was away is lost: L1 is dropped on reconnecting.
    assert!(!cache.is_cached(&shared("/shared")).await, "L1 dropped after a reconnect");
    let mut applied = cache.invalidations();
    let other = cached(&h, with_redis(&redis, redis.url()));
    assert!(other.invalidate("/shared2").await.published);
    let pattern = tokio::time::timeout(WAIT, applied.recv()).await.expect("arrived").unwrap();
    assert_eq!(pattern, "/shared2");
    listener.shutdown().await;
}

#[tokio::test]
async fn a_waiter_finishes_when_the_fetching_caller_is_cancelled() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    h.emulator.faults().add(Fault::latency("/api/v4/secrets", Duration::from_secs(30)).times(1));
    let leader = tokio::spawn({
        let cache = cache.clone();
        async move { cache.folder(&app()).await.map(|s| s.source) }
    });
    requests_reach(&h, 1).await;
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.folder(&app()).await.map(|s| s.source) }
    });
    // Let the waiter queue behind the leader's flight, then cancel the leader.
    tokio::task::yield_now().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let served = tokio::time::timeout(WAIT, waiter).await.expect("waiter finished").unwrap();
    assert_eq!(served.unwrap(), Source::Network);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2, "the waiter fetched for itself");
    assert!(cache.is_cached(&app()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_on_a_failing_fetch_get_its_error_without_asking_again() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    // The leader's first attempt is held, so all 100 callers are queued behind its flight rather
    // than arriving after it ended (late callers rightly start a flight of their own). Faults are
    // evaluated in order and a status ends the evaluation, so the latency goes first.
    h.emulator.faults().add(Fault::latency("/api/v4/secrets", Duration::from_millis(500)).times(1));
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 503));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&db_url()).await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Unavailable { status: Some(503), .. }), "{err}");
    }
    // One flight with its retries (max_attempts 4), not one per caller.
    assert!(h.count("GET", "/api/v4/secrets") <= 4, "{}", h.count("GET", "/api/v4/secrets"));
}

/// Waits until the emulator has received `n` folder reads.
async fn requests_reach(h: &Harness, n: u64) {
    tokio::time::timeout(WAIT, async {
        while h.count("GET", "/api/v4/secrets") < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("request reached the emulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_fetch_keeps_its_answer_out_of_the_cache() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = with_redis(&redis, redis.url()).snapshot(dir.path(), key());
    let cache = cached(&h, config);
    h.emulator.faults().add(Fault::latency("/api/v4/secrets", Duration::from_millis(300)).times(1));
    let reading = tokio::spawn({
        let cache = cache.clone();
        async move { cache.folder(&app()).await }
    });
    requests_reach(&h, 1).await;
    cache.invalidate("/app").await;
    let served = reading.await.unwrap().unwrap();
    assert_eq!(served.source, Source::Network, "the caller still gets its answer");
    assert!(!cache.is_cached(&app()).await, "not stored in L1");
    assert!(snapshot_files(dir.path()).is_empty(), "nor in the snapshot");
    let l2_key = format!("{}cache:{PROJECT}:dev:r0i1e1v1p0t:/app", redis.prefix());
    let mut conn = redis.connection().await.unwrap();
    let exists: i64 = redis::cmd("EXISTS").arg(l2_key).query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0, "nor in L2");
    assert_eq!(cache.folder(&app()).await.unwrap().source, Source::Network);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
}

#[tokio::test]
async fn a_read_right_after_the_local_drop_does_not_refill_from_the_old_l2_copy() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let cache = cached(&h, with_redis(&redis, redis.url()));
    assert_eq!(cache.folder(&app()).await.unwrap().source, Source::Network);
    let mut applied = cache.invalidations();
    let invalidating = tokio::spawn({
        let cache = cache.clone();
        async move { cache.invalidate("/app").await }
    });
    // As soon as L1 is dropped, read again: L2 must already be gone.
    assert_eq!(tokio::time::timeout(WAIT, applied.recv()).await.unwrap().unwrap(), "/app");
    let served = cache.folder(&app()).await.unwrap();
    invalidating.await.unwrap();
    assert_eq!(served.source, Source::Network, "not the pre-invalidation L2 copy");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
}

#[tokio::test]
async fn past_the_revalidate_window_a_healthy_infisical_is_waited_for() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    cache.folder(&app()).await.unwrap();
    // ttl + stale_while_revalidate (default ttl) has passed, max_stale has not.
    h.advance(TTL * 2 + Duration::from_secs(1));
    let served = cache.folder(&app()).await.unwrap();
    assert_eq!((served.source, served.age), (Source::Network, Duration::ZERO));
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
    // While Infisical fails, the same age is served stale up to max_stale.
    h.advance(TTL * 2 + Duration::from_secs(1));
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 503));
    let stale = cache.folder(&app()).await.unwrap();
    // (the retries before giving up moved the injected clock a little further)
    assert_eq!(stale.source, Source::Cache);
    assert!(stale.age > TTL * 2 && stale.age < MAX_STALE, "{:?}", stale.age);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_background_refresh_drops_the_listing_from_l1_and_l2() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let cache = cached(&h, with_redis(&redis, redis.url()));
    cache.folder(&app()).await.unwrap();
    let l2_key = format!("{}cache:{PROJECT}:dev:r0i1e1v1p0t:/app", redis.prefix());
    let mut conn = redis.connection().await.unwrap();
    let exists = |conn: &mut redis::aio::MultiplexedConnection| {
        let k = l2_key.clone();
        let mut conn = conn.clone();
        async move { redis::cmd("EXISTS").arg(k).query_async::<i64>(&mut conn).await.unwrap() }
    };
    assert_eq!(exists(&mut conn).await, 1);
    // The identity loses access: the next background refresh gets a definite 403.
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 403));
    h.advance(TTL + Duration::from_secs(1));
    assert_eq!(cache.folder(&app()).await.unwrap().source, Source::Cache, "served stale once");
    tokio::time::timeout(WAIT, async {
        while cache.is_cached(&app()).await {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("listing dropped from L1");
    assert_eq!(exists(&mut conn).await, 0, "and from L2");
    let err = cache.folder(&app()).await.unwrap_err();
    assert!(matches!(err, ClientError::PermissionDenied { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_subscriber_does_not_stop_the_listener() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let a = cached(&h, with_redis(&redis, redis.url()));
    let b = cached(&h, with_redis(&redis, redis.url()));
    let mut listener = b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    b.subscribe("/app", move |_| {
        *counted.lock().unwrap() += 1;
        panic!("subscriber bug");
    });
    let mut applied = b.invalidations();
    let mut conn = redis.connection().await.unwrap();
    let event = db_url_updated(9, "boom");
    redis::cmd("PUBLISH")
        .arg(events_channel(redis.prefix()))
        .arg(serde_json::to_string(&event).unwrap())
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    assert_eq!(tokio::time::timeout(WAIT, applied.recv()).await.unwrap().unwrap(), "/app/DB_URL");
    // The panic is behind us; a later invalidation from another replica still arrives.
    a.invalidate("/shared").await;
    let next = tokio::time::timeout(WAIT, applied.recv()).await.expect("listener alive").unwrap();
    assert_eq!(next, "/shared");
    assert_eq!(*calls.lock().unwrap(), 1);
    listener.shutdown().await;
}

#[tokio::test]
async fn repeated_events_still_drop_the_cache_and_kinds_are_told_apart() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    let mut events = cache.subscribe_stream("/app", 16);
    let event = |kind: ChangeKind, version: Option<u64>, id: &str| SecretChangeEvent {
        project: PROJECT.into(),
        environment: "dev".into(),
        folder: "/app".into(),
        key: "DB_URL".into(),
        kind,
        version,
        event_id: id.into(),
    };
    cache.folder(&app()).await.unwrap();
    assert!(cache.deliver(&event(ChangeKind::Created, Some(1), "e1")).await);
    assert!(!cache.is_cached(&app()).await);
    cache.folder(&app()).await.unwrap();
    // A repeat is not delivered again, but the cache is still dropped.
    assert!(!cache.deliver(&event(ChangeKind::Created, Some(1), "e1-again")).await);
    assert!(!cache.is_cached(&app()).await, "a repeat drops the listing too");
    // A deletion at the same version is another event; so is a re-creation after it.
    assert!(cache.deliver(&event(ChangeKind::Deleted, Some(1), "e3")).await);
    assert!(cache.deliver(&event(ChangeKind::Created, Some(1), "e4")).await);
    assert!(!cache.deliver(&event(ChangeKind::Created, Some(1), "e4-again")).await);
    let mut ids = Vec::new();
    while let Ok(e) = events.try_recv() {
        ids.push(e.event_id);
    }
    assert_eq!(ids, ["e1", "e3", "e4"]);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_step_over_budget_still_publishes_and_leaves_l2_up() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let slow = with_redis(&redis, redis.url()).redis_scan_budget(Duration::ZERO);
    let a = cached(&h, slow);
    let b = cached(&h, with_redis(&redis, redis.url()));
    let mut listener = b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    let mut applied = b.invalidations();
    a.folder(&app()).await.unwrap();
    assert!(a.l2_up());
    let done = a.invalidate("/app").await;
    assert_eq!(done, Invalidated { local: 1, published: true, l2_cleared: false });
    assert!(a.l2_up(), "an overrun is not an outage");
    let pattern = tokio::time::timeout(WAIT, applied.recv()).await.expect("published").unwrap();
    assert_eq!(pattern, "/app");
    listener.shutdown().await;
}

/// Accepts connections and never answers (a blackholing Redis); counts the connections.
struct Blackhole {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let held = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                held.lock().unwrap().push(stream);
            }
        });
        Self { addr, accepted, task }
    }

    fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_against_a_blackholing_redis_try_to_connect_once() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let hole = Blackhole::start().await;
    let cache = cached(&h, with_redis(&redis, &format!("redis://{}", hole.addr)));
    let queries: Vec<FolderQuery> = ["/app", "/shared", "/shared2"]
        .into_iter()
        .flat_map(|f| {
            let q = FolderQuery::new(PROJECT, "dev", f);
            [q.clone(), q.recursive(true)]
        })
        .collect();
    let tasks: Vec<_> = queries
        .into_iter()
        .map(|q| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.folder(&q).await.map(|s| s.source) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Source::Network);
    }
    assert!(!cache.l2_up());
    // One attempt, then the retry window (on the client clock, which has not moved) holds
    // everyone else off.
    assert_eq!(hole.connections(), 1);
}

#[tokio::test]
async fn stale_serves_are_logged_at_debug_only() {
    let (logs, _guard) = LogCapture::start("ikit_client=info");
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    cache.folder(&app()).await.unwrap();
    h.advance(TTL + Duration::from_secs(1));
    assert_eq!(cache.folder(&app()).await.unwrap().source, Source::Cache);
    let text = logs.text();
    assert!(text.contains("logged in to infisical"), "info logs are captured: {text}");
    assert!(!text.contains("serving a stale listing"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pubsub_connection_is_found_by_ping_and_replaced() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let proxy = Proxy::start(host_port(redis.url())).await;
    let config = with_redis(&redis, &proxy.url()).redis_ping_every(Duration::from_millis(50));
    let cache = cached(&h, config);
    let mut listener = cache.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    // The connection stays open but nothing goes through any more.
    proxy.freeze();
    tokio::time::timeout(WAIT, listener.disconnected()).await.expect("silence noticed");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener resubscribed");
    let mut applied = cache.invalidations();
    let other = cached(&h, with_redis(&redis, redis.url()));
    assert!(other.invalidate("/app").await.published);
    loop {
        let pattern = tokio::time::timeout(WAIT, applied.recv()).await.expect("arrived").unwrap();
        // ("*" is the drop of L1 after reconnecting, if it lands after we subscribed.)
        if pattern == "/app" {
            break;
        }
        assert_eq!(pattern, "*");
    }
    listener.shutdown().await;
}

/// The three routes a cold read may use, counted together.
fn reads_and_logins(h: &Harness) -> u64 {
    h.count("POST", "/api/v1/auth/universal-auth/login")
        + h.count("GET", "/api/v4/secrets")
        + h.count("GET", "/api/v3/secrets/raw")
}

#[tokio::test]
async fn a_304_leaves_the_snapshot_alone_and_an_outage_decodes_it_once() {
    let h = Harness::start(ApiVersion::V2026).await;
    let dir = tempfile::tempdir().unwrap();
    let config = CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(dir.path(), key());
    let client = quick_to_open(&h, Duration::from_secs(6 * 3600));
    let cache = config.clone().client(client.clone()).build().unwrap();
    cache.get(&db_url()).await.unwrap();
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1);
    // Sealing draws a fresh nonce, so any rewrite changes the bytes.
    let written = std::fs::read(&files[0]).unwrap();

    // Past the TTL and the revalidate window the read waits for a revalidation: a 304.
    h.advance(TTL * 3);
    let revalidated = cache.get(&db_url()).await.unwrap();
    assert_eq!((revalidated.source, revalidated.age), (Source::Network, Duration::ZERO));
    assert_eq!(h.count("GET", "/api/v4/secrets"), 2);
    assert_eq!(std::fs::read(&files[0]).unwrap(), written, "an unchanged listing is not rewritten");
    // Once its timestamp is a quarter of max_stale behind, a 304 does refresh it.
    h.advance(MAX_STALE / 4);
    cache.get(&db_url()).await.unwrap();
    let refreshed = std::fs::read(&files[0]).unwrap();
    assert_ne!(refreshed, written);
    let refreshed_at = ikit_client::Clock::now_ms(&*h.clock);

    // The outage: the circuit opens, and a new process (fresh L1) reads many times.
    h.emulator.faults().add(Fault::status("/api/v4/secrets", 503));
    for _ in 0..2 {
        client.fetch_folder(&app()).await.unwrap_err();
    }
    assert!(client.circuit_open());
    let offline = config.client(client).build().unwrap();
    for n in 0..50u64 {
        let served = offline.get(&db_url()).await.unwrap();
        assert_eq!(served.source, Source::Snapshot);
        assert_eq!(served.value.value.expose(), DB_VALUE);
        let now = ikit_client::Clock::now_ms(&*h.clock);
        let age = Duration::from_millis((now - refreshed_at).unsigned_abs());
        assert_eq!(served.age, age, "read {n}");
        h.advance(Duration::from_secs(10));
        if n == 0 {
            // Whatever happens to the file now, the decoded copy serves the outage.
            std::fs::remove_file(&files[0]).unwrap();
        }
    }
    assert_eq!(offline.snapshot_file_reads(), 1, "one decode for fifty offline reads");
}

/// A new process (empty L1, no L2) revalidates its snapshot's listing with the snapshot's
/// ETag, on either API generation: a 304 serves it as confirmed (network, age 0, in L1) with no
/// body sent and no rewrite of the file; a change made since is fetched whole and rewrites it.
#[tokio::test]
async fn a_new_process_revalidates_its_snapshot_instead_of_downloading_the_listing() {
    for (version, route) in
        [(ApiVersion::V2026, "/api/v4/secrets"), (ApiVersion::V2024, "/api/v3/secrets/raw")]
    {
        let h = Harness::start(version).await;
        let dir = tempfile::tempdir().unwrap();
        let config =
            CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(dir.path(), key());
        let listings = || h.count("GET", route);
        let not_modified = || h.emulator.not_modified_count("GET", route);

        let first = cached(&h, config.clone());
        assert_eq!(first.get(&db_url()).await.unwrap().source, Source::Network);
        let files = snapshot_files(dir.path());
        assert_eq!(files.len(), 1, "{route}");
        // Sealing draws a fresh nonce, so any rewrite changes the bytes.
        let written = std::fs::read(&files[0]).unwrap();
        assert_eq!((listings(), not_modified()), (1, 0), "{route}: the first process downloads");

        h.advance(Duration::from_secs(5));
        let second = cached(&h, config.clone());
        let served = second.get(&db_url()).await.unwrap();
        assert_eq!((served.source, served.age), (Source::Network, Duration::ZERO), "{route}");
        assert_eq!(served.value.value.expose(), DB_VALUE);
        assert_eq!((listings(), not_modified()), (2, 1), "{route}: answered 304, no body");
        assert_eq!(std::fs::read(&files[0]).unwrap(), written, "{route}: the file is left alone");
        assert_eq!(second.snapshot_file_reads(), 1);
        let again = second.get(&db_url()).await.unwrap();
        assert_eq!(again.source, Source::Cache, "{route}: the confirmed listing is in L1");
        assert_eq!(listings(), 2);

        // Changed between processes: the ETag no longer matches, the listing comes whole.
        let scope = ikit_client::Scope::new(PROJECT, "dev", "/app");
        let update = ikit_client::SecretUpdate::value("DB_URL", "changed-between-runs");
        h.client(ua()).update_secret(&scope, &update).await.unwrap();
        let third = cached(&h, config.clone());
        let served = third.get(&db_url()).await.unwrap();
        assert_eq!(served.source, Source::Network);
        assert_eq!(served.value.value.expose(), "changed-between-runs", "{route}");
        assert_eq!((listings(), not_modified()), (3, 1), "{route}: a 200 this time");
        assert_ne!(std::fs::read(&files[0]).unwrap(), written, "{route}: the file is replaced");

        // And the replaced file carries the new ETag: the next process gets a 304 again.
        let fourth = cached(&h, config);
        let served = fourth.get(&db_url()).await.unwrap();
        assert_eq!(served.value.value.expose(), "changed-between-runs");
        assert_eq!((listings(), not_modified()), (4, 2), "{route}");
    }
}

#[tokio::test]
async fn the_api_generation_is_remembered_beside_the_snapshot() {
    let h = Harness::start(ApiVersion::V2024).await;
    let dir = tempfile::tempdir().unwrap();
    let config = CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(dir.path(), key());
    let cold = cached(&h, config.clone());
    assert_eq!(cold.get(&db_url()).await.unwrap().value.value.expose(), DB_VALUE);
    assert_eq!(reads_and_logins(&h), 3, "login, the v4 probe, the v3 listing");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1);

    // The next process, same snapshot directory: it knows the generation before asking.
    let warm = cached(&h, config);
    assert_eq!(warm.client().api_version(), ikit_client::ApiVersion::V3);
    assert_eq!(warm.get(&db_url()).await.unwrap().value.value.expose(), DB_VALUE);
    assert_eq!(reads_and_logins(&h) - 3, 2, "a warm start: login and the listing");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1, "never probed v4 again");
}

#[tokio::test]
async fn a_write_through_the_cache_is_seen_by_the_next_read() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = cached(&h, CachedClient::builder().ttl(TTL).max_stale(MAX_STALE));
    let handle = cache.handle(&db_url()).await.unwrap();
    assert_eq!(cache.get(&db_url()).await.unwrap().source, Source::Cache);
    let scope = ikit_client::Scope::new(PROJECT, "dev", "/app");

    let updated = ikit_client::SecretUpdate::value("DB_URL", "written-here");
    cache.update_secret(&scope, &updated).await.unwrap();
    assert!(handle.fresh().is_none(), "the write dropped the handle's listing");
    let read = cache.get(&db_url()).await.unwrap();
    assert_eq!((read.source, read.value.value.expose()), (Source::Network, "written-here"));
    assert_eq!(handle.fresh().unwrap().value.value.expose(), "written-here");

    let added = [ikit_client::NewSecret::new("ADDED", "a1")];
    cache.batch_upsert_with(&scope, &added, &mut |_| {}).await.unwrap();
    let added_ref = SecretRef::parse(PROJECT, "dev", "/app/ADDED").unwrap();
    assert_eq!(cache.get(&added_ref).await.unwrap().value.value.expose(), "a1");

    cache.delete_secret(&scope, "ADDED", ikit_client::SecretType::Shared).await.unwrap();
    assert!(matches!(cache.get(&added_ref).await, Err(ClientError::NotFound { .. })));

    // A conditional update through the cache refuses a moved version and drops nothing wrong.
    let stale_version = read.value.version - 1;
    let err = cache.update_secret_if_version(&scope, &updated, stale_version).await.unwrap_err();
    assert!(matches!(err, ClientError::VersionConflict { .. }), "{err:?}");
    assert_eq!(cache.get(&db_url()).await.unwrap().value.value.expose(), "written-here");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 5, "one listing after each write, none per hit");
}
