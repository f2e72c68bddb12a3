//! Invalidation across replicas sharing Redis: an invalidation is never undone by a fetch that
//! overlaps it, the standalone publisher clears L2 once and by name, scopes keep projects and
//! environments apart, a refused login of our own keeps the shared copy, and stored
//! timestamps that make no sense are never served as fresh.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{
    AuthMethod, CachedClient, CachedClientBuilder, ClientError, FolderQuery, InvalidationScope,
    Invalidator, Scope, SealKey, SecretRef, SecretUpdate, Source, events_channel,
    invalidation_channel,
};
use ikit_common::events::{ChangeKind, InvalidationMessage, SecretChangeEvent};
use ikit_common::testsuite::TestRedis;
use ikit_emulator::ApiVersion;
use rand::SeedableRng as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::cache::host_port;
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

fn folder(env: &str, path: &str) -> FolderQuery {
    FolderQuery::new(PROJECT, env, path)
}

fn with_redis(redis: &TestRedis, url: &str) -> CachedClientBuilder {
    CachedClient::builder()
        .ttl(TTL)
        .max_stale(MAX_STALE)
        .redis(url, Some(key()))
        .redis_prefix(redis.prefix())
}

fn l2_key(redis: &TestRedis, env: &str, folder: &str) -> String {
    format!("{}cache:{PROJECT}:{env}:r0i1e1v1p0t:{folder}", redis.prefix())
}

async fn exists(redis: &TestRedis, key: &str) -> bool {
    let mut conn = redis.connection().await.unwrap();
    redis::cmd("EXISTS").arg(key).query_async::<i64>(&mut conn).await.unwrap() == 1
}

/// A TCP proxy in front of Redis that, while armed, holds every client-to-server chunk
/// carrying one of its markers (a command name as sent on the wire) until released; the rest,
/// and every reply, flows freely.
struct HoldProxy {
    addr: SocketAddr,
    markers: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Chunks held so far.
    held: watch::Sender<usize>,
    /// Bumped by `release`.
    released: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

/// A command name as it appears on the wire (`$7\r\nPUBLISH\r\n`).
fn resp(command: &str) -> Vec<u8> {
    format!("${}\r\n{command}\r\n", command.len()).into_bytes()
}

impl HoldProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let markers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let held = watch::Sender::new(0usize);
        let released = watch::Sender::new(0u64);
        let (m, h, r) = (markers.clone(), held.clone(), released.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream.clone()).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let (m, h, r) = (m.clone(), h.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        let hold = m
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|marker| chunk.windows(marker.len()).any(|w| w == marker));
                        if hold {
                            let mut release = r.subscribe();
                            release.mark_unchanged();
                            h.send_modify(|n| *n += 1);
                            if release.changed().await.is_err() {
                                return;
                            }
                        }
                        if to_server.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                });
            }
        });
        Self { addr, markers, held, released, accept }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn hold(&self, commands: &[&str]) {
        *self.markers.lock().unwrap() = commands.iter().map(|c| resp(c)).collect();
    }

    /// Waits until `n` chunks have been held.
    async fn held(&self, n: usize) {
        let mut held = self.held.subscribe();
        tokio::time::timeout(WAIT, held.wait_for(|h| *h >= n)).await.expect("held").unwrap();
    }

    /// Disarms and lets every held chunk go.
    fn release(&self) {
        self.markers.lock().unwrap().clear();
        self.released.send_modify(|g| *g += 1);
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_landing_inside_an_invalidation_cannot_put_the_old_listing_back() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let (proxy_a, proxy_b) = (
        HoldProxy::start(host_port(redis.url())).await,
        HoldProxy::start(host_port(redis.url())).await,
    );
    // Long Redis timeouts: the held steps must wait for the test, not give up.
    let config = |url: String| with_redis(&redis, &url).redis_op_timeout(Duration::from_secs(30));
    let a = config(proxy_a.url()).client(h.client(ua())).build().unwrap();
    let b = config(proxy_b.url()).client(h.client(ua())).build().unwrap();
    let mut listener = b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    // b's data connection is made (and the write script loaded) before anything is held.
    b.folder(&folder("dev", "/shared")).await.unwrap();
    let mut applied = b.invalidations();

    // b reads DB_URL; its answer (the old value) is held on its way into L2.
    proxy_b.hold(&["EVALSHA", "SET"]);
    let reading = tokio::spawn({
        let b = b.clone();
        async move { b.get(&db_url()).await }
    });
    proxy_b.held(1).await;

    // The value changes; a's invalidation runs and is held after its L2 step, before publishing.
    let scope = Scope::new(PROJECT, "dev", "/app");
    h.client(ua()).update_secret(&scope, &SecretUpdate::value("DB_URL", "v2")).await.unwrap();
    proxy_a.hold(&["PUBLISH"]);
    let invalidating = tokio::spawn({
        let a = a.clone();
        async move { a.invalidate_in(&InvalidationScope::of(PROJECT, "dev"), "/app").await }
    });
    proxy_a.held(1).await;

    // b's fetch lands inside the invalidation: its caller gets the old answer...
    proxy_b.release();
    let served = reading.await.unwrap().unwrap();
    assert_eq!((served.source, served.value.value.expose()), (Source::Network, DB_VALUE));
    // ...then the invalidation completes.
    proxy_a.release();
    let done = invalidating.await.unwrap();
    assert!(done.published && done.l2_cleared, "{done:?}");
    let pattern = tokio::time::timeout(WAIT, applied.recv()).await.expect("applied").unwrap();
    assert_eq!(pattern, "/app");

    // The old listing was not written back: L2 is empty and every replica reads the new value.
    assert!(!exists(&redis, &l2_key(&redis, "dev", "/app")).await, "old listing back in L2");
    let again = b.get(&db_url()).await.unwrap();
    assert_eq!((again.source, again.value.value.expose()), (Source::Network, "v2"));
    let c = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    assert_eq!(c.get(&db_url()).await.unwrap().value.value.expose(), "v2");
    listener.shutdown().await;
}

/// Every message on the invalidation and events channels until `events` events have arrived.
async fn collect(
    pubsub: &mut redis::aio::PubSub,
    prefix: &str,
    events: usize,
) -> (Vec<InvalidationMessage>, Vec<SecretChangeEvent>) {
    use futures_util::StreamExt as _;
    let (mut invalidations, mut changes) = (Vec::new(), Vec::new());
    let mut stream = pubsub.on_message();
    while changes.len() < events {
        let msg = tokio::time::timeout(WAIT, stream.next()).await.expect("message").unwrap();
        let payload = msg.get_payload_bytes();
        if msg.get_channel_name() == invalidation_channel(prefix) {
            invalidations.push(serde_json::from_slice(payload).unwrap());
        } else {
            changes.push(serde_json::from_slice(payload).unwrap());
        }
    }
    (invalidations, changes)
}

fn change(env: &str, folder: &str, key: &str, id: &str) -> SecretChangeEvent {
    SecretChangeEvent {
        project: PROJECT.into(),
        environment: env.into(),
        folder: folder.into(),
        key: key.into(),
        kind: ChangeKind::Updated,
        version: Some(2),
        event_id: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_clears_l2_once_by_name_and_coalesces_events_per_folder() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let a = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    // /app imports /shared and /shared2.
    for path in ["/app", "/shared", "/shared2"] {
        a.folder(&folder("dev", path)).await.unwrap();
    }
    let b = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    let mut listener = b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    for path in ["/app", "/shared"] {
        assert_eq!(b.folder(&folder("dev", path)).await.unwrap().source, Source::Cache);
    }

    // A subscriber drops its L1 only: an event published by hand leaves L2 alone.
    let mut applied = b.invalidations();
    let mut conn = redis.connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(events_channel(redis.prefix()))
        .arg(serde_json::to_string(&change("dev", "/app", "DB_URL", "by-hand")).unwrap())
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    let pattern = tokio::time::timeout(WAIT, applied.recv()).await.expect("delivered").unwrap();
    assert_eq!(pattern, "/app/DB_URL");
    assert!(!b.is_cached(&folder("dev", "/app")).await);
    assert!(exists(&redis, &l2_key(&redis, "dev", "/app")).await, "a subscriber cleared L2");

    // 200 changes in /shared through the publisher, which holds no seal key: it cannot open a
    // listing, so the importing /app goes through the import index.
    let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(invalidation_channel(redis.prefix())).await.unwrap();
    pubsub.subscribe(events_channel(redis.prefix())).await.unwrap();
    let publisher = Invalidator::connect(redis.url(), redis.prefix()).await.unwrap();
    let events: Vec<SecretChangeEvent> =
        (0..200).map(|i| change("dev", "/shared", &format!("K{i}"), &format!("e{i}"))).collect();
    let done = publisher.publish(&events).await.unwrap();
    assert!(done.published && done.l2_cleared, "{done:?}");
    let (invalidations, changes) = collect(&mut pubsub, redis.prefix(), 200).await;
    assert_eq!(
        invalidations,
        [InvalidationMessage::new(&InvalidationScope::of(PROJECT, "dev"), "/shared")],
        "one invalidation for the folder, before its events"
    );
    assert_eq!(changes, events, "every event, in order");
    assert!(!exists(&redis, &l2_key(&redis, "dev", "/shared")).await);
    assert!(!exists(&redis, &l2_key(&redis, "dev", "/app")).await, "the importer is dropped");
    assert!(exists(&redis, &l2_key(&redis, "dev", "/shared2")).await, "the rest is kept");
    // And from every replica's L1 (the one invalidation, then the events, are applied in order).
    let c = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    let requests = h.count("GET", "/api/v4/secrets");
    tokio::time::timeout(WAIT, async {
        while b.is_cached(&folder("dev", "/shared")).await {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("b dropped /shared");
    assert_eq!(c.folder(&folder("dev", "/app")).await.unwrap().source, Source::Network);
    assert_eq!(c.folder(&folder("dev", "/shared2")).await.unwrap().source, Source::Cache);
    assert_eq!(h.count("GET", "/api/v4/secrets"), requests + 1);
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_keep_projects_and_environments_apart() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let b = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    let mut listener = b.start_listener().expect("redis configured");
    tokio::time::timeout(WAIT, listener.subscribed()).await.expect("listener subscribed");
    let prod = InvalidationScope::of(PROJECT, "prod");
    let mut prod_events = b.subscribe_stream_in(&prod, "/locked", 16);
    let dev_calls = Arc::new(Mutex::new(Vec::new()));
    let seen = dev_calls.clone();
    b.subscribe_in(&InvalidationScope::of(PROJECT, "dev"), "/locked", move |e| {
        seen.lock().unwrap().push(e.event_id.clone());
    });
    let mut everywhere = b.subscribe_stream("/locked", 16);
    b.folder(&folder("prod", "/locked")).await.unwrap();
    let mut applied = b.invalidations();

    // A dev change of /locked/K neither fires the prod subscriber nor drops the prod listing.
    let publisher = Invalidator::connect(redis.url(), redis.prefix()).await.unwrap();
    publisher.publish(&[change("dev", "/locked", "K", "dev-1")]).await.unwrap();
    let first = tokio::time::timeout(WAIT, everywhere.recv()).await.expect("delivered").unwrap();
    assert_eq!(first.event_id, "dev-1");
    assert_eq!(*dev_calls.lock().unwrap(), ["dev-1"]);
    assert!(prod_events.try_recv().is_err(), "a dev change reached a prod subscriber");
    assert!(b.is_cached(&folder("prod", "/locked")).await);
    assert!(exists(&redis, &l2_key(&redis, "prod", "/locked")).await);
    // Nor does a dev or another project's invalidation.
    publisher.invalidate(&InvalidationScope::of(PROJECT, "dev"), "/locked").await.unwrap();
    let other_project = InvalidationScope { project: Some("other".into()), environment: None };
    publisher.invalidate(&other_project, "/").await.unwrap();
    // Applied in order: once the last one is, so are the others.
    while tokio::time::timeout(WAIT, applied.recv()).await.expect("applied").unwrap() != "/" {}
    assert!(b.is_cached(&folder("prod", "/locked")).await);
    assert!(exists(&redis, &l2_key(&redis, "prod", "/locked")).await);

    // The prod change does both.
    publisher.publish(&[change("prod", "/locked", "K", "prod-1")]).await.unwrap();
    let got = tokio::time::timeout(WAIT, prod_events.recv()).await.expect("delivered").unwrap();
    assert_eq!((got.environment.as_str(), got.event_id.as_str()), ("prod", "prod-1"));
    assert!(!exists(&redis, &l2_key(&redis, "prod", "/locked")).await);
    tokio::time::timeout(WAIT, async {
        while b.is_cached(&folder("prod", "/locked")).await {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("prod listing dropped");
    assert_eq!(*dev_calls.lock().unwrap(), ["dev-1"]);
    listener.shutdown().await;
}

#[tokio::test]
async fn a_refused_login_of_our_own_serves_stale_and_keeps_the_shared_copy() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let healthy = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    healthy.get(&db_url()).await.unwrap();
    // Another pod whose client secret was rotated under it.
    let wrong = AuthMethod::universal("ua-client-id", "rotated-away");
    let locked_out = with_redis(&redis, redis.url()).client(h.client(wrong)).build().unwrap();
    h.advance(TTL + Duration::from_secs(1));
    let served = locked_out.get(&db_url()).await.unwrap();
    assert_eq!((served.source, served.value.value.expose()), (Source::Cache, DB_VALUE));
    assert!(served.age > TTL && served.age < MAX_STALE, "{:?}", served.age);
    assert!(exists(&redis, &l2_key(&redis, "dev", "/app")).await, "the fleet's copy was wiped");
    // Past max_stale the login failure itself is reported.
    h.advance(MAX_STALE);
    let err = locked_out.get(&db_url()).await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { .. }), "{err}");
}

/// A listing as the cache stores it: `saved_at_ms`, an empty ETag, the listing JSON.
fn stored_listing(saved_at_ms: i64, value: &str) -> Vec<u8> {
    let mut plain = saved_at_ms.to_be_bytes().to_vec();
    plain.extend_from_slice(&0u16.to_be_bytes());
    let listing = serde_json::json!({"secrets": [{"secretKey": "DB_URL", "secretValue": value}]});
    plain.extend_from_slice(listing.to_string().as_bytes());
    plain
}

#[tokio::test]
async fn absurd_stored_timestamps_are_never_served_as_fresh() {
    let h = Harness::start(ApiVersion::V2026).await;
    let redis = TestRedis::new().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // An L2 copy dated far in the future: not a fresh hit.
    let redis_key = l2_key(&redis, "dev", "/app");
    let sealed = ikit_client::internals::seal(
        &key(),
        redis_key.as_bytes(),
        &stored_listing(i64::MAX, "planted"),
        &mut rng,
    );
    let mut conn = redis.connection().await.unwrap();
    redis::cmd("SET").arg(&redis_key).arg(sealed).query_async::<()>(&mut conn).await.unwrap();
    let cache = with_redis(&redis, redis.url()).client(h.client(ua())).build().unwrap();
    let served = cache.get(&db_url()).await.unwrap();
    assert_eq!((served.source, served.value.value.expose()), (Source::Network, DB_VALUE));

    // Snapshots dated at either end of time, with Infisical unreachable: neither a panic nor a
    // stale value, a clear error.
    let dir = tempfile::tempdir().unwrap();
    let cache_key = format!("{PROJECT}:dev:r0i1e1v1p0t:/app");
    use sha2::Digest as _;
    let file = dir
        .path()
        .join(format!("{}.snap", hex::encode(&sha2::Sha256::digest(cache_key.as_bytes())[..16])));
    let aad = format!("ikit-snapshot:{cache_key}");
    let client = h.client(ua());
    h.emulator.shutdown().await;
    for saved_at in [i64::MIN, i64::MAX] {
        let plain = stored_listing(saved_at, "planted");
        std::fs::write(
            &file,
            ikit_client::internals::seal(&key(), aad.as_bytes(), &plain, &mut rng),
        )
        .unwrap();
        let config =
            CachedClient::builder().ttl(TTL).max_stale(MAX_STALE).snapshot(dir.path(), key());
        let offline = config.client(client.clone()).build().unwrap();
        match offline.get(&db_url()).await {
            Err(ClientError::TooStale { max_stale, .. }) => assert_eq!(max_stale, MAX_STALE),
            other => {
                panic!("saved at {saved_at}: expected too stale, got {:?}", other.map(|s| s.source))
            }
        }
    }
}
