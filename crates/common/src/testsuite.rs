//! Test harness (feature `testsuite`): a fresh, uniquely named PostgreSQL database and a unique
//! Redis key prefix per test, on real servers.
//!
//! Servers come from `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When nothing listens there and the
//! `containers` feature is on and a Docker engine answers, testcontainers starts one; otherwise
//! the harness fails with a message that says how to point the tests at servers. A test that
//! needs PostgreSQL or Redis never passes silently without them.
//!
//! These helpers read the two `TEST_*` variables from the process environment: they are test
//! code, not configuration.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::redact_url;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TestSupportError {
    #[error(
        "{service} is not reachable at {url} ({reason}). Start {service} or point the tests at a \
         server: set {var} (e.g. {var}={example}); with a Docker engine, build with \
         `--features containers` to start one automatically"
    )]
    Unreachable {
        service: &'static str,
        var: &'static str,
        example: &'static str,
        url: String,
        reason: String,
    },
    #[error("{service} test setup failed: {reason}")]
    Setup { service: &'static str, reason: String },
}

/// A database created for one test and dropped afterwards.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    pool: PgPool,
    dropped: bool,
}

impl TestDatabase {
    /// A fresh database on the server of `TEST_DATABASE_URL`; panics with directions when no
    /// server can be had.
    pub async fn postgres() -> Self {
        match Self::try_postgres().await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn try_postgres() -> Result<Self, TestSupportError> {
        let url =
            std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        Self::try_postgres_at(&url).await
    }

    /// A fresh database on the server that `admin_url` points at (any existing database there).
    pub async fn try_postgres_at(admin_url: &str) -> Result<Self, TestSupportError> {
        // The probe connection is kept for the setup below when it succeeds.
        let (admin_url, mut admin) = match admin_connect(admin_url).await {
            Ok(conn) => (admin_url.to_owned(), conn),
            Err(e) if is_unreachable(&e) => {
                let url = fallback_postgres(admin_url, e.to_string()).await?;
                let conn = admin_connect(&url).await.map_err(|e| setup("postgresql", e))?;
                (url, conn)
            }
            Err(e) => return Err(setup("postgresql", e)),
        };
        let now = unix_secs();
        let name = format!("ikit_test_{now}_{}", uuid::Uuid::new_v4().simple());
        sweep_stale_databases(&mut admin, now).await;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .map_err(|e| setup("postgresql", e))?;
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let options: PgConnectOptions = url.parse().map_err(|e| setup("postgresql", e))?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| setup("postgresql", e))?;
        Ok(Self { name, url, admin_url, pool, dropped: false })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the test database (for code that builds its own pool).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool and drops the database. `Drop` does the same when this is not called.
    pub async fn cleanup(mut self) -> Result<(), TestSupportError> {
        self.dropped = true;
        self.pool.close().await;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime that is shutting down: clean up on a thread of our own.
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(drop_database(&admin_url, &name))
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
        if let Ok(Err(e)) = cleaned {
            eprintln!("warning: test database {} was not dropped: {e}", self.name);
        }
    }
}

/// Test databases older than this are left over from killed runs and are dropped.
const STALE_AFTER_SECS: u64 = 3 * 3600;

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The creation time encoded in a test database name (`ikit_test_<secs>_<uuid>`).
fn created_secs(name: &str) -> Option<u64> {
    name.strip_prefix("ikit_test_")?.split_once('_')?.0.parse().ok()
}

/// Drops test databases that a killed run left behind (best effort: errors are ignored).
async fn sweep_stale_databases(admin: &mut PgConnection, now: u64) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT datname FROM pg_database WHERE datname LIKE 'ikit\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    else {
        return;
    };
    for name in names {
        if created_secs(&name).is_some_and(|t| now.saturating_sub(t) > STALE_AFTER_SECS) {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

async fn admin_connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), TestSupportError> {
    let mut admin = admin_connect(admin_url).await.map_err(|e| setup("postgresql", e))?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .map_err(|e| setup("postgresql", e))?;
    let _ = admin.close().await;
    Ok(())
}

fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
}

fn setup(service: &'static str, e: impl std::fmt::Display) -> TestSupportError {
    TestSupportError::Setup { service, reason: e.to_string() }
}

/// `url` with its database (path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn docker_available() -> bool {
    std::path::Path::new("/var/run/docker.sock").exists()
}

#[cfg(feature = "containers")]
async fn fallback_postgres(url: &str, reason: String) -> Result<String, TestSupportError> {
    if !docker_available() {
        return Err(unreachable_pg(url, reason));
    }
    containers::postgres_url()
        .await
        .map_err(|e| unreachable_pg(url, format!("{reason}; the Docker engine did not help: {e}")))
}

#[cfg(not(feature = "containers"))]
async fn fallback_postgres(url: &str, reason: String) -> Result<String, TestSupportError> {
    let reason = if docker_available() {
        format!("{reason}; a Docker engine exists but the `containers` feature is off")
    } else {
        reason
    };
    Err(unreachable_pg(url, reason))
}

fn unreachable_pg(url: &str, reason: String) -> TestSupportError {
    TestSupportError::Unreachable {
        service: "postgresql",
        var: "TEST_DATABASE_URL",
        example: DEFAULT_DATABASE_URL,
        url: redact_url(url),
        reason,
    }
}

fn unreachable_redis(url: &str, reason: String) -> TestSupportError {
    TestSupportError::Unreachable {
        service: "redis",
        var: "TEST_REDIS_URL",
        example: DEFAULT_REDIS_URL,
        url: redact_url(url),
        reason,
    }
}

#[cfg(feature = "containers")]
async fn fallback_redis(url: &str, reason: String) -> Result<String, TestSupportError> {
    if !docker_available() {
        return Err(unreachable_redis(url, reason));
    }
    containers::redis_url().await.map_err(|e| {
        unreachable_redis(url, format!("{reason}; the Docker engine did not help: {e}"))
    })
}

#[cfg(not(feature = "containers"))]
async fn fallback_redis(url: &str, reason: String) -> Result<String, TestSupportError> {
    let reason = if docker_available() {
        format!("{reason}; a Docker engine exists but the `containers` feature is off")
    } else {
        reason
    };
    Err(unreachable_redis(url, reason))
}

#[cfg(feature = "containers")]
mod containers {
    //! One PostgreSQL and one Redis container per test process, started on first use and
    //! removed by testcontainers' reaper when the process ends.

    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};
    use tokio::sync::OnceCell;

    use super::TestSupportError;

    static POSTGRES: OnceCell<(ContainerAsync<GenericImage>, String)> = OnceCell::const_new();
    static REDIS: OnceCell<(ContainerAsync<GenericImage>, String)> = OnceCell::const_new();

    fn err(service: &'static str, e: impl std::fmt::Display) -> TestSupportError {
        TestSupportError::Setup { service, reason: format!("testcontainers: {e}") }
    }

    pub(super) async fn postgres_url() -> Result<String, TestSupportError> {
        let (_, url) = POSTGRES
            .get_or_try_init(|| async {
                let container = GenericImage::new("postgres", "16-alpine")
                    .with_exposed_port(5432.tcp())
                    .with_wait_for(WaitFor::message_on_stderr(
                        "database system is ready to accept connections",
                    ))
                    .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
                    .start()
                    .await
                    .map_err(|e| err("postgresql", e))?;
                let host = container.get_host().await.map_err(|e| err("postgresql", e))?;
                let port =
                    container.get_host_port_ipv4(5432).await.map_err(|e| err("postgresql", e))?;
                let url = format!("postgres://postgres@{host}:{port}/postgres");
                // The image restarts once after initdb: wait until it really answers.
                for _ in 0..60 {
                    if super::admin_connect(&url).await.is_ok() {
                        return Ok((container, url));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(err("postgresql", "container never accepted connections"))
            })
            .await?;
        Ok(url.clone())
    }

    pub(super) async fn redis_url() -> Result<String, TestSupportError> {
        let (_, url) = REDIS
            .get_or_try_init(|| async {
                let container = GenericImage::new("redis", "7-alpine")
                    .with_exposed_port(6379.tcp())
                    .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
                    .start()
                    .await
                    .map_err(|e| err("redis", e))?;
                let host = container.get_host().await.map_err(|e| err("redis", e))?;
                let port = container.get_host_port_ipv4(6379).await.map_err(|e| err("redis", e))?;
                Ok::<_, TestSupportError>((container, format!("redis://{host}:{port}")))
            })
            .await?;
        Ok(url.clone())
    }
}

/// A unique key prefix on a Redis server; its keys are deleted afterwards.
pub struct TestRedis {
    url: String,
    prefix: String,
    client: redis::Client,
    cleaned: bool,
}

impl TestRedis {
    /// A fresh prefix on the server of `TEST_REDIS_URL`; panics with directions when no server
    /// can be had.
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn try_new() -> Result<Self, TestSupportError> {
        let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
        Self::try_new_at(&url).await
    }

    pub async fn try_new_at(url: &str) -> Result<Self, TestSupportError> {
        let client = redis::Client::open(url).map_err(|e| setup("redis", e))?;
        let reachable = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        let (url, client) = match reachable {
            Ok(Ok(_)) => (url.to_owned(), client),
            Ok(Err(e)) if !e.is_io_error() && !e.is_connection_refusal() => {
                return Err(setup("redis", e));
            }
            Ok(Err(e)) => {
                let url = fallback_redis(url, e.to_string()).await?;
                let client = redis::Client::open(url.as_str()).map_err(|e| setup("redis", e))?;
                (url, client)
            }
            Err(_) => {
                let url = fallback_redis(url, "timed out".into()).await?;
                let client = redis::Client::open(url.as_str()).map_err(|e| setup("redis", e))?;
                (url, client)
            }
        };
        let prefix = format!("ikit-test:{}:", uuid::Uuid::new_v4().simple());
        Ok(Self { url, prefix, client, cleaned: false })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every key the test writes must start with this (e.g. `ikit-test:3f…:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client.get_multiplexed_async_connection().await
    }

    /// Deletes every key under the prefix. `Drop` does the same when this is not called.
    pub async fn cleanup(mut self) -> redis::RedisResult<usize> {
        self.cleaned = true;
        let mut conn = self.connection().await?;
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> =
                redis::AsyncCommands::scan_match(&mut conn, format!("{}*", self.prefix)).await?;
            let mut keys = Vec::new();
            while let Some(key) = iter.next_item().await {
                keys.push(key?);
            }
            keys
        };
        if !keys.is_empty() {
            redis::AsyncCommands::del::<_, ()>(&mut conn, &keys).await?;
        }
        Ok(keys.len())
    }

    fn delete_keys_blocking(&self) -> redis::RedisResult<usize> {
        let mut conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        let keys: Vec<String> =
            redis::Commands::scan_match::<_, String>(&mut conn, format!("{}*", self.prefix))?
                .collect::<Result<_, _>>()?;
        if !keys.is_empty() {
            redis::Commands::del::<_, ()>(&mut conn, &keys)?;
        }
        Ok(keys.len())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if !self.cleaned
            && let Err(e) = self.delete_keys_blocking()
        {
            eprintln!("warning: test redis keys under {} were not deleted: {e}", self.prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_creation_time_from_a_name() {
        assert_eq!(created_secs("ikit_test_1700000000_3fa2"), Some(1_700_000_000));
        assert_eq!(created_secs("ikit_test_3fa2"), None);
        assert_eq!(created_secs("postgres"), None);
    }

    #[test]
    fn swaps_the_database_in_a_url() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(with_database("postgres://u@h:5432", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}

/// Everything the code under test logs, captured for assertions such as "no secret value
/// appears".
///
/// Captures are process-wide: one global subscriber (installed by the first capture) writes
/// every event, from every thread and task, to each live capture whose filter takes it. A
/// thread-local subscriber would miss events of tasks on other worker threads and, with tests
/// running in parallel, events whose callsite interest another thread cached first; a capture
/// may also see events of tests running beside it, which only makes a "no value leaked"
/// assertion stricter. A test that counts events uses [`LogCapture::start_on_this_thread`].
#[derive(Clone)]
pub struct LogCapture(std::sync::Arc<CaptureSink>);

/// One capture's buffer and the targets it takes.
pub struct CaptureSink {
    filter: tracing_subscriber::filter::Targets,
    /// Only events emitted on this thread, when set.
    thread: Option<std::thread::ThreadId>,
    buffer: std::sync::Mutex<Vec<u8>>,
}

/// The live captures; events go to each.
static CAPTURES: std::sync::Mutex<Vec<std::sync::Weak<CaptureSink>>> =
    std::sync::Mutex::new(Vec::new());
static CAPTURES_LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Stops its capture when dropped.
#[must_use = "the capture stops when the guard is dropped"]
pub struct LogCaptureGuard(std::sync::Arc<CaptureSink>);

impl Drop for LogCaptureGuard {
    fn drop(&mut self) {
        let mut live = CAPTURES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.retain(|c| c.upgrade().is_some_and(|c| !std::sync::Arc::ptr_eq(&c, &self.0)));
        CAPTURES_LIVE.store(live.len(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl LogCapture {
    /// Captures every event matching `filter` (target directives such as `trace` or
    /// `ikit_client=trace,reqwest=trace`) until the returned guard is dropped.
    pub fn start(filter: &str) -> (Self, LogCaptureGuard) {
        Self::start_with(filter, None)
    }

    /// Like [`LogCapture::start`], but takes only events emitted on the calling thread: for a
    /// `#[tokio::test]` on its current-thread runtime, that is the test's own events and none
    /// of the tests running beside it, so the test can count them.
    pub fn start_on_this_thread(filter: &str) -> (Self, LogCaptureGuard) {
        Self::start_with(filter, Some(std::thread::current().id()))
    }

    fn start_with(filter: &str, thread: Option<std::thread::ThreadId>) -> (Self, LogCaptureGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::{Layer, filter::filter_fn};
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let layer =
                tracing_subscriber::fmt::layer().with_ansi(false).with_writer(FanOut).with_filter(
                    filter_fn(|_| CAPTURES_LIVE.load(std::sync::atomic::Ordering::SeqCst) > 0),
                );
            let subscriber = tracing_subscriber::registry().with(layer);
            // A test binary that set its own global subscriber keeps it; captures then see
            // nothing, which their own "the capture works" checks report.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        let sink = std::sync::Arc::new(CaptureSink {
            filter: filter.parse().unwrap_or_else(|_| {
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::level_filters::LevelFilter::TRACE)
            }),
            thread,
            buffer: std::sync::Mutex::new(Vec::new()),
        });
        let mut live = CAPTURES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.push(std::sync::Arc::downgrade(&sink));
        CAPTURES_LIVE.store(live.len(), std::sync::atomic::Ordering::SeqCst);
        drop(live);
        // Callsites first hit while no capture was live may have cached "never": recompute.
        tracing::callsite::rebuild_interest_cache();
        (Self(sink.clone()), LogCaptureGuard(sink))
    }

    /// The captured text so far.
    pub fn text(&self) -> String {
        let bytes = self.0.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The global subscriber's writer: one formatted event, copied to every capture taking it.
struct FanOut;

/// The captures that take one event.
struct EventWriter(Vec<std::sync::Arc<CaptureSink>>);

impl std::io::Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for sink in &self.0 {
            sink.buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for FanOut {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(Vec::new())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let live = CAPTURES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let here = std::thread::current().id();
        EventWriter(
            live.iter()
                .filter_map(std::sync::Weak::upgrade)
                .filter(|sink| sink.thread.is_none_or(|thread| thread == here))
                .filter(|sink| sink.filter.would_enable(meta.target(), meta.level()))
                .collect(),
        )
    }
}
