//! One leader: a rotation runs only while holding a [`RotationLock`], so replicas never rotate
//! twice. [`PgAdvisoryLock`] uses a PostgreSQL session advisory lock, [`RedisLock`] `SET NX PX`
//! with a fencing token, and [`LocalLock`] an in-process mutex for a single process.
//!
//! Acquisition never waits: a replica that finds the lock taken skips its rotation, because the
//! holder is doing it. The guard is checked before every storage write, so a holder that lost its
//! lock (connection dropped, key expired) stops instead of writing beside the new leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::error::{Error, Result};

/// A lock that at most one holder has at a time.
pub trait RotationLock: Send + Sync {
    /// Takes the lock if it is free; `None` when another holder has it.
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>>;
}

/// A held lock.
pub trait LockGuard: Send {
    /// Increases with every acquisition (where the backend can tell).
    fn fencing_token(&self) -> u64;
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
    counter: Arc<AtomicU64>,
}

struct LocalGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    token: u64,
}

impl RotationLock for LocalLock {
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(async move {
            Ok(self.mutex.clone().try_lock_owned().ok().map(|guard| {
                let token = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
                Box::new(LocalGuard { _guard: guard, token }) as Box<dyn LockGuard>
            }))
        })
    }
}

impl LockGuard for LocalGuard {
    fn fencing_token(&self) -> u64 {
        self.token
    }

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

/// A PostgreSQL session advisory lock held on a dedicated connection: if the process dies the
/// connection closes and the server frees the lock. The fencing token is a fresh transaction id
/// (`txid_current()`), which only grows.
#[derive(Clone, Debug)]
pub struct PgAdvisoryLock {
    options: PgConnectOptions,
    id: i64,
}

impl PgAdvisoryLock {
    pub fn new(options: PgConnectOptions, name: &str) -> Self {
        Self { options, id: lock_id(name) }
    }

    pub fn from_url(url: &str, name: &str) -> Result<Self> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| Error::Lock(format!("invalid postgres url: {e}")))?;
        Ok(Self::new(options, name))
    }
}

struct PgGuard {
    conn: PgConnection,
    id: i64,
    token: u64,
}

fn pg_err(e: sqlx::Error) -> Error {
    Error::Lock(format!("postgres: {e}"))
}

impl RotationLock for PgAdvisoryLock {
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(async move {
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
            Ok(Some(Box::new(PgGuard { conn, id: self.id, token: token.unsigned_abs() })
                as Box<dyn LockGuard>))
        })
    }
}

impl LockGuard for PgGuard {
    fn fencing_token(&self) -> u64 {
        self.token
    }

    fn check(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let held: bool = sqlx::query_scalar(
                "select exists(select 1 from pg_locks where locktype = 'advisory' and granted \
                 and pid = pg_backend_pid() \
                 and ((classid::bigint << 32) | objid::bigint) = $1)",
            )
            .bind(self.id)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|_| Error::LockLost)?;
            if held { Ok(()) } else { Err(Error::LockLost) }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let mut this = *self;
            let _: bool = sqlx::query_scalar("select pg_advisory_unlock($1)")
                .bind(this.id)
                .fetch_one(&mut this.conn)
                .await
                .map_err(pg_err)?;
            this.conn.close().await.map_err(pg_err)
        })
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
}

impl RedisLock {
    pub fn new(client: redis::Client, key: impl Into<String>, ttl_ms: u64) -> Self {
        Self { client, key: key.into(), ttl_ms }
    }
}

struct RedisGuard {
    conn: redis::aio::MultiplexedConnection,
    key: String,
    token: u64,
    ttl_ms: u64,
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::Lock(format!("redis: {e}"))
}

const EXTEND_IF_OURS: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const DELETE_IF_OURS: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

impl RotationLock for RedisLock {
    fn try_acquire(&self) -> BoxFuture<'_, Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(async move {
            let mut conn =
                self.client.get_multiplexed_async_connection().await.map_err(redis_err)?;
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
                Box::new(RedisGuard { conn, key: self.key.clone(), token, ttl_ms: self.ttl_ms })
                    as Box<dyn LockGuard>
            }))
        })
    }
}

impl LockGuard for RedisGuard {
    fn fencing_token(&self) -> u64 {
        self.token
    }

    fn check(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let extended: i64 = redis::cmd("EVAL")
                .arg(EXTEND_IF_OURS)
                .arg(1)
                .arg(&self.key)
                .arg(self.token)
                .arg(self.ttl_ms)
                .query_async(&mut self.conn)
                .await
                .map_err(redis_err)?;
            if extended == 1 { Ok(()) } else { Err(Error::LockLost) }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
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
        })
    }
}
