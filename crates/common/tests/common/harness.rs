//! The test harness itself: databases and prefixes are created, isolated and removed.

use ikit_common::testsuite::{TestDatabase, TestRedis, TestSupportError};
use sqlx::Row;

async fn database_exists(name: &str) -> bool {
    let probe = TestDatabase::postgres().await;
    let found = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(probe.pool())
        .await
        .unwrap()
        .is_some();
    probe.cleanup().await.unwrap();
    found
}

#[tokio::test]
async fn test_database_is_fresh_and_dropped() {
    let db = TestDatabase::postgres().await;
    let name = db.name().to_owned();
    assert!(name.starts_with("ikit_test_"), "{name}");
    let current: String =
        sqlx::query("SELECT current_database()").fetch_one(db.pool()).await.unwrap().get(0);
    assert_eq!(current, name);
    let tables: i64 =
        sqlx::query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
    assert_eq!(tables, 0);
    assert!(db.url().contains(&name));
    db.cleanup().await.unwrap();
    assert!(!database_exists(&name).await);

    // Dropping without cleanup() removes it too, even with connections still open.
    let db = TestDatabase::postgres().await;
    let name = db.name().to_owned();
    let _held = db.pool().acquire().await.unwrap();
    drop(_held);
    drop(db);
    assert!(!database_exists(&name).await);
}

#[tokio::test]
async fn unreachable_servers_fail_with_directions() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = TestDatabase::try_postgres_at(&format!("postgres://u:pw@127.0.0.1:{port}/x"))
        .await
        .err()
        .expect("no server there");
    let msg = err.to_string();
    assert!(matches!(err, TestSupportError::Unreachable { .. }), "{msg}");
    assert!(msg.contains("TEST_DATABASE_URL"), "{msg}");
    assert!(!msg.contains("pw"), "{msg}");

    let err = TestRedis::try_new_at(&format!("redis://127.0.0.1:{port}"))
        .await
        .err()
        .expect("no server there");
    assert!(err.to_string().contains("TEST_REDIS_URL"), "{err}");
}

#[tokio::test]
async fn redis_prefix_is_unique_and_cleaned() {
    let a = TestRedis::new().await;
    let b = TestRedis::new().await;
    assert_ne!(a.prefix(), b.prefix());
    let mut conn = a.connection().await.unwrap();
    for i in 0..3 {
        redis::cmd("SET")
            .arg(a.key(&format!("k{i}")))
            .arg("v")
            .exec_async(&mut conn)
            .await
            .unwrap();
    }
    redis::cmd("SET").arg(b.key("other")).arg("v").exec_async(&mut conn).await.unwrap();
    let other_key = b.key("other");
    let prefix = a.prefix().to_owned();
    assert_eq!(a.cleanup().await.unwrap(), 3);
    let left: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    // The other prefix is untouched until its own cleanup (here: Drop).
    let exists: bool = redis::cmd("EXISTS").arg(&other_key).query_async(&mut conn).await.unwrap();
    assert!(exists);
    drop(b);
    let exists: bool = redis::cmd("EXISTS").arg(&other_key).query_async(&mut conn).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn databases_left_by_killed_runs_are_swept() {
    let db = TestDatabase::postgres().await;
    let stale = format!("ikit_test_1000_{}", db.name().rsplit('_').next().unwrap());
    sqlx::raw_sql(&format!("CREATE DATABASE \"{stale}\"")).execute(db.pool()).await.unwrap();
    let fresh = TestDatabase::postgres().await; // sweeps on creation
    let left: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&stale)
        .fetch_optional(fresh.pool())
        .await
        .unwrap();
    assert_eq!(left, None, "{stale} was not swept");
    // Recent test databases (this test's own) are left alone.
    assert!(database_exists(db.name()).await);
    fresh.cleanup().await.unwrap();
    db.cleanup().await.unwrap();
}

#[test]
fn log_capture_sees_every_thread_keeps_to_its_filter_and_stops_with_its_guard() {
    let (capture, guard) = ikit_common::testsuite::LogCapture::start("common=trace");
    let (all, all_guard) = ikit_common::testsuite::LogCapture::start("trace");
    tracing::info!(answer = 42, "captured event");
    std::thread::spawn(|| tracing::info!("from another thread")).join().unwrap();
    tracing::info!(target: "elsewhere", "outside the filter");
    drop(guard);
    tracing::info!("after the guard");
    let text = capture.text();
    assert!(text.contains("captured event") && text.contains("answer=42"), "{text}");
    assert!(text.contains("from another thread"), "{text}");
    assert!(!text.contains("outside the filter"), "{text}");
    assert!(!text.contains("after the guard"), "{text}");
    let everything = all.text();
    assert!(everything.contains("outside the filter") && everything.contains("after the guard"));
    drop(all_guard);
}
