//! One leader: a rotation runs only while holding a [`RotationLock`], so replicas never rotate
//! twice. [`PgAdvisoryLock`] uses a PostgreSQL session advisory lock, [`RedisLock`] `SET NX PX`
//! with a fencing token, and [`LocalLock`] an in-process mutex for a single process.
//!
//! Acquisition never waits: a replica that finds the lock taken skips its rotation, because the
//! holder is doing it. The guard is checked before every storage write, so a holder that lost its
//! lock (connection dropped, key expired) stops instead of writing beside the new leader.
//!
//! Fencing: a guard whose backend hands out durable, growing tokens ([`LockGuard::fence`]: the
//! PostgreSQL and Redis locks) stamps its [`Fence`] on what it commits: inside `rotation_state`
//! in the JWT folder, and as `rotation_fence` (written just before `keys_map`) in the AES folder.
//! Before each step that writes, the manager re-reads that stamp from the store and refuses the
//! step with [`Error::Fenced`] when it carries the same lock scope and a higher token: a leader
//! that paused past its lock's expiry and still believes it holds it cannot overwrite what a
//! newer leader committed. Limits, precisely:
//! - the stamp is read and then written, not compared-and-set (the key store, Infisical, has no
//!   conditional write): a newer leader that commits between a stale leader's re-read and its
//!   write is not detected by the stamp, only by the lock check before each write;
//! - the stamp is checked once per step, not before each write of the step;
//! - tokens of different locks are not comparable, so a stamp with another scope (for example
//!   after moving from PostgreSQL to Redis) admits any token, and [`LocalLock`] (which has no
//!   token that outlives the process) neither stamps nor is refused;
//! - the Redis token counter (`<key>:fence`) must be durable: if Redis loses it, new tokens start
//!   again at 1 and every step is refused until the counter is set above the stored token
//!   (`SET <key>:fence <stored token>`); the error names both tokens.
//!
//! Timeouts: every PostgreSQL and Redis call of a lock is bounded by its `op_timeout` (default
//! [`DEFAULT_LOCK_TIMEOUT`]), so a database that drops packets turns into an error (`load()` then
//! serves the committed keys, a rotation stops before its next write) instead of a stall. A
//! check that cannot confirm the lock in time counts as [`Error::LockLost`].
//!
//! Leases: a Redis lock lives `ttl` after its last check, and a check precedes every store write.
//! A write may take up to the manager's store timeout, which should cover the client's retry
//! budget (`InfisicalStore::call_budget`); the lock must outlive it, so the manager refuses a
//! lock whose [`RotationLock::lease`] is not longer than the store timeout plus the lock's own
//! timeout.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
#[cfg(feature = "postgres")]
use sqlx::Connection;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::error::{Error, Result};

/// How long a lock call may take before it fails.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A lock that at most one holder has at a time.
pub trait RotationLock: Send + Sync {
    /// Takes the lock if it is free; `None` when another holder has it.
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>>;

    /// How long a held lock lasts after a successful [`LockGuard::check`] without another one;
    /// `None` when it lasts as long as the holder (a session or a process).
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// The bound on each call to the lock's backend.
    fn op_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// Runs one backend call of a lock within `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(Error::Lock(format!("{what} timed out after {limit:?}"))))
}

/// The stamp a holder leaves on what it commits: which lock (`scope`) and the token it held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub scope: String,
    pub token: u64,
}

impl Fence {
    /// Whether a holder with this fence may write over a state stamped `stored`: anything but
    /// a higher token of the same lock.
    pub fn admits(&self, stored: Option<&Fence>) -> bool {
        stored.is_none_or(|s| s.scope != self.scope || s.token <= self.token)
    }
}

/// A held lock.
pub trait LockGuard: Send {
    /// The stamp to fence commits with; `None` when the token does not outlive the process
    /// (nothing is stamped or refused then).
    fn fence(&self) -> Option<Fence> {
        None
    }
    /// Confirms the lock is still held; fails with [`Error::LockLost`] otherwise.
    fn check(&mut self) -> BoxFuture<'_, Result<()>>;
    /// Gives the lock up.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}

/// A 64-bit lock id from a name.
pub fn lock_id(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// An in-process lock, for a single replica (and the file store).
#[derive(Clone, Debug, Default)]
pub struct LocalLock {
    mutex: Arc<tokio::sync::Mutex<()>>,
}

struct LocalGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl RotationLock for LocalLock {
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(async move {
            Ok(self
                .mutex
                .clone()
                .try_lock_owned()
                .ok()
                .map(|guard| Box::new(LocalGuard { _guard: guard }) as Box<dyn LockGuard>))
        })
    }
}

impl LockGuard for LocalGuard {
    fn check(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            drop(self);
            Ok(())
        })
    }
}

#[cfg(feature = "postgres")]
/// A PostgreSQL session advisory lock held on a dedicated connection: if the process dies the
/// connection closes and the server frees the lock. The fencing token is a fresh transaction id
/// (`txid_current()`), which only grows.
#[derive(Clone, Debug)]
pub struct PgAdvisoryLock {
    options: PgConnectOptions,
    id: i64,
    op_timeout: Duration,
}

#[cfg(feature = "postgres")]
impl PgAdvisoryLock {
    pub fn new(options: PgConnectOptions, name: &str) -> Self {
        Self { options, id: lock_id(name), op_timeout: DEFAULT_LOCK_TIMEOUT }
    }

    /// Bounds each call (connect, take, check, release); default [`DEFAULT_LOCK_TIMEOUT`].
    pub fn with_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    pub fn from_url(url: &str, name: &str) -> Result<Self> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| Error::Lock(format!("invalid postgres url: {e}")))?;
        Ok(Self::new(options, name))
    }
}

#[cfg(feature = "postgres")]
struct PgGuard {
    conn: PgConnection,
    id: i64,
    token: u64,
    op_timeout: Duration,
}

#[cfg(feature = "postgres")]
fn pg_err(e: sqlx::Error) -> Error {
    Error::Lock(format!("postgres: {e}"))
}

#[cfg(feature = "postgres")]
/// Whether the session of `conn` holds the advisory lock `id` taken in its single-bigint form
/// (`objsubid = 1`; the two-integer form, `objsubid = 2`, with the same halves does not count).
async fn holds_advisory_lock(conn: &mut PgConnection, id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists(select 1 from pg_locks where locktype = 'advisory' and granted \
         and pid = pg_backend_pid() and objsubid = 1 \
         and ((classid::bigint << 32) | objid::bigint) = $1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

#[cfg(feature = "postgres")]
impl RotationLock for PgAdvisoryLock {
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(bounded(self.op_timeout, "postgres lock acquisition", async move {
            let mut conn = PgConnection::connect_with(&self.options).await.map_err(pg_err)?;
            let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
                .bind(self.id)
                .fetch_one(&mut conn)
                .await
                .map_err(pg_err)?;
            if !taken {
                let _ = conn.close().await;
                return Ok(None);
            }
            let token: i64 = sqlx::query_scalar("select txid_current()")
                .fetch_one(&mut conn)
                .await
                .map_err(pg_err)?;
            Ok(Some(Box::new(PgGuard {
                conn,
                id: self.id,
                token: token.unsigned_abs(),
                op_timeout: self.op_timeout,
            }) as Box<dyn LockGuard>))
        }))
    }

    fn op_timeout(&self) -> Duration {
        self.op_timeout
    }
}

#[cfg(feature = "postgres")]
impl LockGuard for PgGuard {
    fn fence(&self) -> Option<Fence> {
        Some(Fence { scope: format!("postgres:{}", self.id), token: self.token })
    }

    fn check(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let held =
                tokio::time::timeout(self.op_timeout, holds_advisory_lock(&mut self.conn, self.id))
                    .await;
            match held {
                Ok(Ok(true)) => Ok(()),
                _ => Err(Error::LockLost),
            }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let limit = self.op_timeout;
        // on a timeout the connection is dropped, and the server frees the lock with the session
        Box::pin(bounded(limit, "postgres lock release", async move {
            let mut this = *self;
            let _: bool = sqlx::query_scalar("select pg_advisory_unlock($1)")
                .bind(this.id)
                .fetch_one(&mut this.conn)
                .await
                .map_err(pg_err)?;
            this.conn.close().await.map_err(pg_err)
        }))
    }
}

/// A Redis lock: `SET key token NX PX ttl`, where the token comes from `INCR key:fence` and so
/// only grows. `check` extends the expiry only while the key still holds our token, and release
/// deletes it only then.
#[derive(Clone, Debug)]
pub struct RedisLock {
    client: redis::Client,
    key: String,
    ttl_ms: u64,
    op_timeout: Duration,
}

impl RedisLock {
    /// `ttl_ms` must exceed the manager's store timeout plus `op_timeout` (see the module doc).
    pub fn new(client: redis::Client, key: impl Into<String>, ttl_ms: u64) -> Self {
        Self { client, key: key.into(), ttl_ms, op_timeout: DEFAULT_LOCK_TIMEOUT }
    }

    /// Bounds each call (connect, take, check, release); default [`DEFAULT_LOCK_TIMEOUT`].
    pub fn with_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }
}

struct RedisGuard {
    conn: redis::aio::MultiplexedConnection,
    key: String,
    token: u64,
    ttl_ms: u64,
    op_timeout: Duration,
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::Lock(format!("redis: {e}"))
}

const EXTEND_IF_OURS: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const DELETE_IF_OURS: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

impl RotationLock for RedisLock {
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(bounded(self.op_timeout, "redis lock acquisition", async move {
            // the client's own timeouts agree with ours (its defaults are 1 s and 500 ms)
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.op_timeout))
                .set_response_timeout(Some(self.op_timeout));
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(redis_err)?;
            let token: u64 = redis::cmd("INCR")
                .arg(format!("{}:fence", self.key))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let set: Option<String> = redis::cmd("SET")
                .arg(&self.key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            Ok(set.map(|_| {
                Box::new(RedisGuard {
                    conn,
                    key: self.key.clone(),
                    token,
                    ttl_ms: self.ttl_ms,
                    op_timeout: self.op_timeout,
                }) as Box<dyn LockGuard>
            }))
        }))
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.ttl_ms))
    }

    fn op_timeout(&self) -> Duration {
        self.op_timeout
    }
}

impl LockGuard for RedisGuard {
    fn fence(&self) -> Option<Fence> {
        Some(Fence { scope: format!("redis:{}", self.key), token: self.token })
    }

    fn check(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let extended = tokio::time::timeout(
                self.op_timeout,
                redis::cmd("EVAL")
                    .arg(EXTEND_IF_OURS)
                    .arg(1)
                    .arg(&self.key)
                    .arg(self.token)
                    .arg(self.ttl_ms)
                    .query_async::<i64>(&mut self.conn),
            )
            .await;
            match extended {
                Ok(Ok(1)) => Ok(()),
                Ok(Err(e)) if !e.is_timeout() => Err(redis_err(e)),
                _ => Err(Error::LockLost),
            }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let limit = self.op_timeout;
        Box::pin(bounded(limit, "redis lock release", async move {
            let mut this = *self;
            let _: i64 = redis::cmd("EVAL")
                .arg(DELETE_IF_OURS)
                .arg(1)
                .arg(&this.key)
                .arg(this.token)
                .query_async(&mut this.conn)
                .await
                .map_err(redis_err)?;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "postgres")]
    use ikit_common::testsuite::TestDatabase;

    #[test]
    fn a_fence_refuses_only_a_higher_token_of_the_same_lock() {
        let fence = |scope: &str, token| Fence { scope: scope.into(), token };
        let ours = fence("redis:k", 5);
        assert!(ours.admits(None));
        assert!(ours.admits(Some(&fence("redis:k", 4))));
        assert!(ours.admits(Some(&fence("redis:k", 5))), "the holder's own earlier step");
        assert!(!ours.admits(Some(&fence("redis:k", 6))));
        assert!(ours.admits(Some(&fence("postgres:1", 900))), "another lock's tokens");
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn only_the_single_bigint_advisory_lock_counts_as_held() {
        let db = TestDatabase::postgres().await;
        let id = lock_id("ikit-keys objsubid");
        let bytes = id.to_be_bytes();
        let high = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let low = i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        assert!(!holds_advisory_lock(&mut conn, id).await.unwrap());

        // the two-integer form with the same halves: same classid and objid, objsubid 2
        let _: () = sqlx::query("select pg_advisory_lock($1, $2)")
            .bind(high)
            .bind(low)
            .execute(&mut conn)
            .await
            .map(|_| ())
            .unwrap();
        let (classid, objid, subid): (i64, i64, i16) = sqlx::query_as(
            "select classid::bigint, objid::bigint, objsubid from pg_locks \
             where locktype = 'advisory' and pid = pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(((classid << 32) | objid, subid), (id, 2), "the halves collide");
        assert!(!holds_advisory_lock(&mut conn, id).await.unwrap(), "two-integer form");

        let _: () = sqlx::query("select pg_advisory_lock($1)")
            .bind(id)
            .execute(&mut conn)
            .await
            .map(|_| ())
            .unwrap();
        assert!(holds_advisory_lock(&mut conn, id).await.unwrap(), "single-bigint form");
        conn.close().await.unwrap();
        db.cleanup().await.unwrap();
    }
}
