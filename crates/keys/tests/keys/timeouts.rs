//! Lock calls are bounded: a PostgreSQL or Redis that stops answering (a TCP proxy that stops
//! forwarding, as a packet-dropping network does) does not stall `load()` or a rotation. And the
//! Redis lock's lease must outlast a store call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ikit_common::SecretValue;
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_keys::lock::{PgAdvisoryLock, RedisLock, RotationLock};
use ikit_keys::store::{Folder, KeyStore};
use ikit_keys::{Error, KeyManager, RotationTarget, Trigger};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Env, TTL, policy};

/// A safety net only: a call that stalls fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);
const LOCK_TIMEOUT: Duration = Duration::from_millis(300);

/// Forwards TCP connections to `target` until [`StallingProxy::stall`]; from then on it keeps
/// every connection open, reads what both sides send and forwards nothing, and new connections
/// are accepted and never answered.
struct StallingProxy {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                pumps.spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        return drain(client).await;
                    }
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, flag.clone()), pump(sr, cw, flag));
                });
            }
        });
        Self { addr, stalled, task }
    }

    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        // the pumps live in the accept task's JoinSet: aborting it closes every connection
        self.task.abort();
    }
}

async fn drain(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !stalled.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Stalls the proxy at its first folder read: the rotation has its lock by then.
struct StallOnRead {
    inner: Arc<dyn KeyStore>,
    proxy: Arc<StallingProxy>,
}

impl KeyStore for StallOnRead {
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, ikit_keys::Result<Folder>> {
        self.proxy.stall();
        self.inner.read_folder(folder)
    }

    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, ikit_keys::Result<()>> {
        self.inner.upsert(folder, entries)
    }

    fn delete<'a>(
        &'a self,
        folder: &'a str,
        keys: Vec<String>,
    ) -> BoxFuture<'a, ikit_keys::Result<()>> {
        self.inner.delete(folder, keys)
    }
}

/// Load and rotate through a lock whose backend stops answering: before the lock is taken, and
/// after (the check before the first write).
async fn a_stalled_backend_does_not_stall_load_or_rotation(
    lock_through: impl Fn(SocketAddr) -> Arc<dyn RotationLock>,
    target: SocketAddr,
) {
    let env = Env::new();
    env.manager(1).load().await.unwrap();
    env.clock.advance(policy().jwt_rotation_interval);
    let committed = env.dump("/auth/jwt").await;

    let proxy = Arc::new(StallingProxy::start(target).await);
    let m = env.manager_on(env.store.clone(), 2, Some(lock_through(proxy.addr)));
    proxy.stall();
    let loaded = tokio::time::timeout(WAIT, m.load()).await.expect("load does not stall");
    assert!(loaded.unwrap().busy, "served the committed keys without the lock");
    let token = m.sign(&json!({"sub": "u"}), TTL).unwrap();
    assert_eq!(m.verify::<Value>(&token).unwrap()["sub"], "u");
    let rotated =
        tokio::time::timeout(WAIT, m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled))
            .await
            .expect("rotate does not stall");
    assert!(matches!(rotated, Err(Error::Lock(_))), "{rotated:?}");

    // the backend stops answering while the lock is held: the step stops before writing
    let proxy = Arc::new(StallingProxy::start(target).await);
    let store = Arc::new(StallOnRead { inner: env.store.clone(), proxy: proxy.clone() });
    let m = env.manager_on(store, 3, Some(lock_through(proxy.addr)));
    let rotated =
        tokio::time::timeout(WAIT, m.rotate(RotationTarget::Jwt, false, "", Trigger::Scheduled))
            .await
            .expect("rotate does not stall");
    assert!(matches!(rotated, Err(Error::LockLost)), "{rotated:?}");
    assert_eq!(env.dump("/auth/jwt").await, committed, "nothing was written");
}

#[tokio::test]
async fn a_packet_dropping_postgres_does_not_stall_load_or_rotation() {
    let db = TestDatabase::postgres().await;
    let options: PgConnectOptions = db.url().parse().unwrap();
    let target = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    a_stalled_backend_does_not_stall_load_or_rotation(
        |addr| {
            let options = options.clone().host(&addr.ip().to_string()).port(addr.port());
            Arc::new(PgAdvisoryLock::new(options, "ikit-keys-timeouts").with_timeout(LOCK_TIMEOUT))
        },
        target,
    )
    .await;
    db.cleanup().await.unwrap();
}

/// `host:port` of a `redis://[user:pw@]host:port[/db]` url.
fn redis_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

#[tokio::test]
async fn a_packet_dropping_redis_does_not_stall_load_or_rotation() {
    let redis = TestRedis::new().await;
    let target = tokio::net::lookup_host(redis_addr(redis.url())).await.unwrap().next().unwrap();
    let key = redis.key("ikit-keys-timeouts");
    a_stalled_backend_does_not_stall_load_or_rotation(
        |addr| {
            let client = redis::Client::open(format!("redis://{addr}")).unwrap();
            Arc::new(RedisLock::new(client, key.clone(), 60_000).with_timeout(LOCK_TIMEOUT))
        },
        target,
    )
    .await;
    redis.cleanup().await.unwrap();
}

/// A check extends the Redis lease before each write; a write that may run for the whole store
/// timeout needs a lease longer than that, or another replica takes the lock mid-write.
#[tokio::test]
async fn a_redis_lease_shorter_than_a_store_call_is_refused() {
    let redis = TestRedis::new().await;
    let env = Env::new();
    let lock = |ttl_ms| {
        Arc::new(
            RedisLock::new(redis.client().clone(), redis.key("lease"), ttl_ms)
                .with_timeout(LOCK_TIMEOUT),
        )
    };
    let builder = |ttl_ms, store_timeout| {
        KeyManager::builder(env.store.clone()).lock(lock(ttl_ms)).store_timeout(store_timeout)
    };
    let err = builder(30_000, Duration::from_secs(30)).build().unwrap_err();
    assert!(matches!(&err, Error::UnsafePolicy(m) if m.contains("lease")), "{err}");
    assert!(builder(30_000, Duration::from_secs(29)).build().is_ok());
    // the default store timeout covers the client's default retry budget
    let default = KeyManager::builder(env.store.clone()).lock(lock(60_000)).build();
    assert!(matches!(default, Err(Error::UnsafePolicy(_))));
    assert!(KeyManager::builder(env.store.clone()).lock(lock(150_000)).build().is_ok());
    redis.cleanup().await.unwrap();
}
