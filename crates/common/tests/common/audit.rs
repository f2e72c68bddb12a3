//! The audit log against PostgreSQL and SQLite: record, query, tamper detection, concurrent
//! writers, and the spool while the database is away.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ikit_common::audit::{
    AuditError, AuditEvent, AuditFilter, AuditLog, AuditOptions, BreakReason, ChainStatus, Outcome,
    Recorded,
};
use ikit_common::clock::ManualClock;
use ikit_common::testsuite::TestDatabase;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tempfile::TempDir;

use crate::proxy::Proxy;

const T0: i64 = 1_700_000_000_000;

/// Raw SQL access to the same database, for tampering.
enum Raw {
    Pg(PgPool),
    Lite(SqlitePool),
}

impl Raw {
    async fn exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Raw::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Raw::Lite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
    }

    /// What an administrator with direct database access would do to get past the trigger.
    async fn disable_append_only(&self) {
        let sql = match self {
            Raw::Pg(_) => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            Raw::Lite(_) => "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete",
        };
        self.exec(sql).await.unwrap();
    }
}

struct Fixture {
    log: AuditLog,
    raw: Raw,
    clock: Arc<ManualClock>,
    spool: TempDir,
    _db: Option<TestDatabase>,
    _dir: Option<TempDir>,
}

fn options(spool: &Path, clock: &Arc<ManualClock>) -> AuditOptions {
    AuditOptions::new(spool).spool_capacity(100).clock(clock.clone())
}

async fn sqlite_pool(path: &Path) -> SqlitePool {
    let connect = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new().max_connections(4).connect_with(connect).await.unwrap()
}

impl Fixture {
    async fn postgres() -> Self {
        let db = TestDatabase::postgres().await;
        let clock = Arc::new(ManualClock::new(T0));
        let spool = TempDir::new().unwrap();
        let log = AuditLog::postgres(db.pool().clone(), options(spool.path(), &clock)).unwrap();
        Self { log, raw: Raw::Pg(db.pool().clone()), clock, spool, _db: Some(db), _dir: None }
    }

    async fn sqlite() -> Self {
        let dir = TempDir::new().unwrap();
        let pool = sqlite_pool(&dir.path().join("audit.db")).await;
        let clock = Arc::new(ManualClock::new(T0));
        let spool = TempDir::new().unwrap();
        let log = AuditLog::sqlite(pool.clone(), options(spool.path(), &clock)).unwrap();
        Self { log, raw: Raw::Lite(pool), clock, spool, _db: None, _dir: Some(dir) }
    }
}

fn event(n: i64) -> AuditEvent {
    AuditEvent::new(T0 + n, "svc-a", "secret.read", format!("/auth/k{n}"), Outcome::Success)
}

async fn record_n(log: &AuditLog, n: i64) {
    for i in 1..=n {
        assert!(
            matches!(log.record(event(i)).await.unwrap(), Recorded::Stored { seq } if seq == i)
        );
    }
}

async fn all_targets(log: &AuditLog) -> Vec<String> {
    let filter = AuditFilter { limit: Some(10_000), ..AuditFilter::default() };
    log.query(&filter).await.unwrap().into_iter().map(|r| r.event.target).collect()
}

async fn record_and_query(f: Fixture) {
    let log = &f.log;
    let events = [
        AuditEvent::new(
            T0 + 10,
            "alice",
            "secret.update",
            "/auth/jwt/current_private_key",
            Outcome::Success,
        )
        .with_request_id("req-1")
        .with_details(json!({"version": 3, "reason": {"kind": "manual", "by": "ops"}})),
        AuditEvent::new(T0 + 20, "scheduler", "key.rotate", "kid-abc", Outcome::Success),
        AuditEvent::new(T0 + 30, "alice", "secret.update", "/db/password", Outcome::Denied),
        AuditEvent::new(T0 + 40, "webhook", "webhook.receive", "evt-77", Outcome::Failure)
            .with_details(json!({"status": 401})),
        AuditEvent::new(T0 + 50, "alice", "key.rotate", "kid-def", Outcome::Success),
    ];
    for (i, e) in events.iter().enumerate() {
        let got = log.record(e.clone()).await.unwrap();
        assert_eq!(got, Recorded::Stored { seq: i as i64 + 1 });
    }

    let all = log.query(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    for (record, event) in all.iter().zip(&events) {
        assert_eq!(&record.event, event, "round trip of seq {}", record.seq);
        assert_eq!(record.hash.len(), 64);
    }

    let seqs = |filter: AuditFilter| async move {
        log.query(&filter).await.unwrap().into_iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    let by_action = AuditFilter { action: Some("key.rotate".into()), ..Default::default() };
    assert_eq!(seqs(by_action).await, [2, 5]);
    let by_actor = AuditFilter { actor: Some("alice".into()), ..Default::default() };
    assert_eq!(seqs(by_actor).await, [1, 3, 5]);
    let by_target = AuditFilter { target: Some("/db/password".into()), ..Default::default() };
    assert_eq!(seqs(by_target).await, [3]);
    let by_outcome = AuditFilter { outcome: Some(Outcome::Failure), ..Default::default() };
    assert_eq!(seqs(by_outcome).await, [4]);
    let window =
        AuditFilter { since_ms: Some(T0 + 20), until_ms: Some(T0 + 50), ..Default::default() };
    assert_eq!(seqs(window).await, [2, 3, 4]);
    let latest_two = AuditFilter { limit: Some(2), newest_first: true, ..Default::default() };
    assert_eq!(seqs(latest_two).await, [5, 4]);
    let combined = AuditFilter {
        actor: Some("alice".into()),
        action: Some("secret.update".into()),
        since_ms: Some(T0 + 15),
        ..Default::default()
    };
    assert_eq!(seqs(combined).await, [3]);

    assert_eq!(log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 5 });
    assert!(log.status().is_healthy());
}

async fn refuses_updates_and_catches_them(f: Fixture) {
    record_n(&f.log, 5).await;
    // The append-only trigger refuses an ordinary UPDATE or DELETE.
    let refused = f.raw.exec("UPDATE audit_log SET target = '/x' WHERE seq = 3").await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    assert!(f.raw.exec("DELETE FROM audit_log WHERE seq = 3").await.is_err());
    assert_eq!(f.log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 5 });

    f.raw.disable_append_only().await;
    f.raw.exec("UPDATE audit_log SET target = '/somewhere/else' WHERE seq = 3").await.unwrap();
    assert_eq!(
        f.log.verify_chain().await.unwrap(),
        ChainStatus::Broken { seq: 3, reason: BreakReason::ContentChanged }
    );
}

async fn catches_deleted_rows(f: Fixture) {
    record_n(&f.log, 6).await;
    f.raw.disable_append_only().await;
    f.raw.exec("DELETE FROM audit_log WHERE seq = 6").await.unwrap();
    assert_eq!(
        f.log.verify_chain().await.unwrap(),
        ChainStatus::Broken { seq: 6, reason: BreakReason::Missing }
    );
    f.raw.exec("DELETE FROM audit_log WHERE seq = 4").await.unwrap();
    assert_eq!(
        f.log.verify_chain().await.unwrap(),
        ChainStatus::Broken { seq: 4, reason: BreakReason::Missing }
    );
}

/// Two writers with their own pools (two replicas) never fork the chain.
async fn concurrent_writers(f: Fixture, other: AuditLog) {
    let mut tasks = Vec::new();
    for (w, log) in [f.log.clone(), other].into_iter().enumerate() {
        for i in 0..20 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let e = AuditEvent::new(
                    T0,
                    format!("writer-{w}"),
                    "test.write",
                    format!("{w}-{i}"),
                    Outcome::Success,
                );
                log.record(e).await.unwrap()
            }));
        }
    }
    // Verifying while writers append never reports tampering (it reads one snapshot).
    let verifier = f.log.clone();
    let verifying = tokio::spawn(async move {
        for _ in 0..10 {
            let status = verifier.verify_chain().await.unwrap();
            assert!(matches!(status, ChainStatus::Intact { .. }), "{status:?}");
        }
    });
    let mut seqs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Recorded::Stored { seq } => seqs.push(seq),
            other => panic!("not stored: {other:?}"),
        }
    }
    verifying.await.unwrap();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    assert_eq!(f.log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 40 });
}

#[tokio::test]
async fn postgres_record_and_query() {
    record_and_query(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_record_and_query() {
    record_and_query(Fixture::sqlite().await).await;
}

#[tokio::test]
async fn postgres_update_is_caught() {
    refuses_updates_and_catches_them(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_update_is_caught() {
    refuses_updates_and_catches_them(Fixture::sqlite().await).await;
}

#[tokio::test]
async fn postgres_delete_is_caught() {
    catches_deleted_rows(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_delete_is_caught() {
    catches_deleted_rows(Fixture::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writers_keep_one_chain() {
    let f = Fixture::postgres().await;
    let db = f._db.as_ref().unwrap();
    let pool = PgPoolOptions::new().max_connections(4).connect(db.url()).await.unwrap();
    let spool = TempDir::new().unwrap();
    let other = AuditLog::postgres(pool, options(spool.path(), &f.clock)).unwrap();
    concurrent_writers(f, other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writers_keep_one_chain() {
    let f = Fixture::sqlite().await;
    let pool = sqlite_pool(&f._dir.as_ref().unwrap().path().join("audit.db")).await;
    let spool = TempDir::new().unwrap();
    let other = AuditLog::sqlite(pool, options(spool.path(), &f.clock)).unwrap();
    concurrent_writers(f, other).await;
}

/// A pool that reaches the test database through a proxy the test can take down.
async fn proxied_pool(db: &TestDatabase) -> (Proxy, PgPool) {
    let direct: PgConnectOptions = db.url().parse().unwrap();
    let target = tokio::net::lookup_host((direct.get_host(), direct.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    let via_proxy = direct.host("127.0.0.1").port(proxy.addr().port());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(via_proxy);
    (proxy, pool)
}

/// Waits (bounded) until the background flusher has emptied the spool.
async fn drained(log: &AuditLog) {
    let mut depth = log.watch_spool_depth();
    tokio::time::timeout(Duration::from_secs(30), depth.wait_for(|d| *d == 0))
        .await
        .expect("the spool drains on its own")
        .unwrap();
}

/// PostgreSQL goes away behind a proxy and comes back: N events spool, a record made while they
/// wait joins the queue instead of flushing it inline, and the background flusher lands them
/// all in order without any further call.
#[tokio::test]
async fn postgres_outage_spools_then_flushes_in_order() {
    const N: i64 = 5;
    let db = TestDatabase::postgres().await;
    let (proxy, pool) = proxied_pool(&db).await;
    let clock = Arc::new(ManualClock::new(T0));
    let spool = TempDir::new().unwrap();
    let log = AuditLog::postgres(pool, options(spool.path(), &clock)).unwrap();

    record_n(&log, 2).await;
    proxy.set_up(false);
    for i in 1..=N {
        let got = log.record(event(100 + i)).await.unwrap();
        assert_eq!(got, Recorded::Spooled { depth: i as usize });
    }
    let status = log.status();
    assert_eq!((status.spooled, log.spool_depth()), (N as usize, N as usize));
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(!status.is_healthy());
    let files = std::fs::read_dir(spool.path()).unwrap().count();
    assert_eq!(files, N as usize);

    // Back up: a record does not flush the backlog inline (however long ago the failure was);
    // it queues behind it.
    proxy.set_up(true);
    clock.advance(AuditOptions::DEFAULT_RETRY_AFTER.as_millis() as i64 + 1);
    assert_eq!(log.record(event(150)).await.unwrap(), Recorded::Spooled { depth: N as usize + 1 });

    drained(&log).await;
    let last = log.record(event(200)).await.unwrap();
    assert_eq!(last, Recorded::Stored { seq: 2 + N + 2 });

    let mut expected: Vec<String> = (1..=2).map(|i| format!("/auth/k{i}")).collect();
    expected.extend((1..=N).map(|i| format!("/auth/k{}", 100 + i)));
    expected.push("/auth/k150".into());
    expected.push("/auth/k200".into());
    assert_eq!(all_targets(&log).await, expected);
    assert_eq!(log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 2 + N as u64 + 2 });
    assert!(log.status().is_healthy(), "{:?}", log.status());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}

/// The flusher keeps retrying on its own while the database stays away, and lands the backlog
/// once it is back, with no record or explicit flush after the outage.
#[tokio::test]
async fn background_flusher_retries_until_the_database_is_back() {
    let db = TestDatabase::postgres().await;
    let (proxy, pool) = proxied_pool(&db).await;
    let clock = Arc::new(ManualClock::new(T0));
    let spool = TempDir::new().unwrap();
    let retry = Duration::from_millis(50);
    let log = AuditLog::postgres(pool, options(spool.path(), &clock).retry_after(retry)).unwrap();
    assert_eq!(log.retry_after(), retry);
    log.migrate().await.unwrap();
    proxy.set_up(false);
    for i in 1..=3 {
        assert_eq!(log.record(event(i)).await.unwrap(), Recorded::Spooled { depth: i as usize });
    }
    // While it is down, flushes fail and everything stays.
    assert!(log.flush_spool().await.is_err());
    assert_eq!(log.spool_depth(), 3);
    proxy.set_up(true);
    drained(&log).await;
    assert_eq!(all_targets(&log).await, ["/auth/k1", "/auth/k2", "/auth/k3"]);
    assert!(log.status().is_healthy(), "{:?}", log.status());
}

/// A log that opens a spool left by an earlier run flushes it without waiting for a record.
#[tokio::test]
async fn a_spool_left_by_an_earlier_run_flushes_on_open() {
    let f = Fixture::sqlite().await;
    let spool = TempDir::new().unwrap();
    for n in 1..=2u64 {
        let body = serde_json::to_string(&event(n as i64)).unwrap();
        std::fs::write(spool.path().join(format!("{n:020}.json")), body).unwrap();
    }
    let Raw::Lite(pool) = &f.raw else { unreachable!() };
    let log = AuditLog::sqlite(pool.clone(), options(spool.path(), &f.clock)).unwrap();
    drained(&log).await;
    assert_eq!(all_targets(&log).await, ["/auth/k1", "/auth/k2"]);
}

/// SQLite pool closed: N events spool; a log over a working pool and the same spool
/// directory (the process after a restart) flushes exactly N rows, in order.
#[tokio::test]
async fn sqlite_outage_spools_then_flushes_in_order() {
    const N: i64 = 7;
    let f = Fixture::sqlite().await;
    record_n(&f.log, 1).await;
    let Raw::Lite(pool) = &f.raw else { unreachable!() };
    pool.close().await;
    for i in 1..=N {
        let got = f.log.record(event(10 + i)).await.unwrap();
        assert_eq!(got, Recorded::Spooled { depth: i as usize });
    }
    assert_eq!(f.log.status().spooled, N as usize);
    // An explicit flush while the database is still away fails and keeps everything.
    assert!(matches!(f.log.flush_spool().await, Err(AuditError::Database(_))));
    assert_eq!(f.log.status().spooled, N as usize);
    drop(f.log);

    let pool = sqlite_pool(&f._dir.as_ref().unwrap().path().join("audit.db")).await;
    let log = AuditLog::sqlite(pool, options(f.spool.path(), &f.clock)).unwrap();
    assert_eq!(log.status().spooled, N as usize);
    assert_eq!(log.flush_spool().await.unwrap(), N as usize);
    let mut expected = vec!["/auth/k1".to_owned()];
    expected.extend((1..=N).map(|i| format!("/auth/k{}", 10 + i)));
    assert_eq!(all_targets(&log).await, expected);
    assert_eq!(log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 1 + N as u64 });
    assert!(log.status().is_healthy());
    assert_eq!(log.flush_spool().await.unwrap(), 0);
}

/// After an explicit flush succeeds, the next record goes straight to the database even
/// though the retry delay of the earlier failure has not run out.
#[tokio::test]
async fn successful_flush_ends_the_retry_delay() {
    let db = TestDatabase::postgres().await;
    let (proxy, pool) = proxied_pool(&db).await;
    let clock = Arc::new(ManualClock::new(T0));
    let spool = TempDir::new().unwrap();
    let log = AuditLog::postgres(pool, options(spool.path(), &clock)).unwrap();
    record_n(&log, 1).await;
    proxy.set_up(false);
    assert_eq!(log.record(event(2)).await.unwrap(), Recorded::Spooled { depth: 1 });
    proxy.set_up(true);
    assert_eq!(log.flush_spool().await.unwrap(), 1);
    assert_eq!(log.record(event(3)).await.unwrap(), Recorded::Stored { seq: 3 });
}

/// A full spool refuses the event with an error and says so in the status.
#[tokio::test]
async fn full_spool_is_an_error_not_a_drop() {
    // A recorder of this test's own (the test runs on one thread), so other tests that spool
    // at the same time cannot make the figures below hold.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let dir = TempDir::new().unwrap();
    let pool = sqlite_pool(&dir.path().join("audit.db")).await;
    pool.close().await;
    let clock = Arc::new(ManualClock::new(T0));
    let spool = TempDir::new().unwrap();
    let log = AuditLog::sqlite(pool, options(spool.path(), &clock).spool_capacity(3)).unwrap();
    for i in 1..=3 {
        assert_eq!(log.record(event(i)).await.unwrap(), Recorded::Spooled { depth: i as usize });
    }
    let err = log.record(event(4)).await.unwrap_err();
    assert!(matches!(err, AuditError::SpoolFull { capacity: 3 }), "{err}");
    let status = log.status();
    assert!(status.is_spool_full());
    assert_eq!((status.spooled, status.capacity), (3, 3));
    assert!(status.last_error.as_deref().unwrap_or("").contains("full"), "{status:?}");
    assert_eq!(status.last_error_ms, Some(T0));
    let text = metrics.render();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(lines.contains(&"audit_events_total{outcome=\"spool_full\"} 1"), "{text}");
    assert!(lines.contains(&"audit_events_total{outcome=\"spooled\"} 3"), "{text}");
    assert!(lines.contains(&"audit_spool_depth 3"), "{text}");
}

#[tokio::test]
async fn refuses_events_the_database_would_choke_on() {
    let f = Fixture::sqlite().await;
    let bad = AuditEvent::new(T0, "svc\0", "a", "t", Outcome::Success);
    assert!(matches!(f.log.record(bad).await, Err(AuditError::InvalidEvent(_))));
    let empty = AuditEvent::new(T0, "svc", "", "t", Outcome::Success);
    assert!(matches!(f.log.record(empty).await, Err(AuditError::InvalidEvent(_))));
    assert!(f.log.query(&AuditFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn connect_by_url_creates_the_sqlite_file() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}/nested/dir/audit.db", dir.path().display());
    let spool = TempDir::new().unwrap();
    let log = AuditLog::connect(&url, AuditOptions::new(spool.path())).unwrap();
    assert!(matches!(log.record(event(1)).await.unwrap(), Recorded::Stored { seq: 1 }));
    assert!(dir.path().join("nested/dir/audit.db").exists());
    // A directory that cannot be created (its parent is a file) is named in the error.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let url = format!("sqlite://{}/sub/audit.db", file.display());
    match AuditLog::connect(&url, AuditOptions::new(spool.path())) {
        Err(AuditError::CreateDir { path, .. }) => assert_eq!(path, file.join("sub")),
        other => panic!("expected CreateDir, got {:?}", other.err()),
    }
    assert!(matches!(
        AuditLog::connect("mysql://x", AuditOptions::new(spool.path())),
        Err(AuditError::UnsupportedUrl)
    ));
}

/// An unreadable spool file is set aside (kept for an operator), not flushed and not a blocker.
#[tokio::test]
async fn corrupt_spool_entry_is_set_aside() {
    let f = Fixture::sqlite().await;
    let spool = TempDir::new().unwrap();
    let write = |n: u64, body: &str| {
        std::fs::write(spool.path().join(format!("{n:020}.json")), body).unwrap();
    };
    write(1, &serde_json::to_string(&event(1)).unwrap());
    write(2, "{ torn");
    write(3, &serde_json::to_string(&event(3)).unwrap());
    let log = AuditLog::sqlite(
        match &f.raw {
            Raw::Lite(p) => p.clone(),
            Raw::Pg(_) => unreachable!(),
        },
        options(spool.path(), &f.clock),
    )
    .unwrap();
    assert_eq!(log.status().spooled, 3);
    assert_eq!(log.flush_spool().await.unwrap(), 2);
    assert_eq!(all_targets(&log).await, ["/auth/k1", "/auth/k3"]);
    assert!(spool.path().join(format!("{:020}.corrupt", 2)).exists());
    assert_eq!(log.status().spooled, 0);
}

/// A batch is one transaction: consecutive seqs in order, one intact chain with single records
/// around it; an invalid event in the batch is refused alone.
async fn record_many_appends_a_batch(f: Fixture) {
    let log = &f.log;
    record_n(log, 2).await;
    let mut batch: Vec<AuditEvent> = (3..=7).map(event).collect();
    batch.insert(2, AuditEvent::new(T0, "", "secret.read", "/x", Outcome::Success));
    let got = log.record_many(batch).await;
    assert_eq!(got.len(), 6);
    assert!(matches!(got[2], Err(AuditError::InvalidEvent(_))), "{:?}", got[2]);
    let seqs: Vec<i64> = got
        .iter()
        .filter_map(|r| match r {
            Ok(Recorded::Stored { seq }) => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [3, 4, 5, 6, 7]);
    assert_eq!(log.record(event(8)).await.unwrap(), Recorded::Stored { seq: 8 });
    assert!(log.record_many(Vec::new()).await.is_empty());
    let expected: Vec<String> = (1..=8).map(|i| format!("/auth/k{i}")).collect();
    assert_eq!(all_targets(log).await, expected);
    assert_eq!(log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 8 });
}

#[tokio::test]
async fn postgres_record_many_appends_a_batch() {
    record_many_appends_a_batch(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_record_many_appends_a_batch() {
    record_many_appends_a_batch(Fixture::sqlite().await).await;
}

/// The database away: the whole batch spools in order, and lands in order once it is back.
#[tokio::test]
async fn postgres_record_many_spools_a_batch_the_database_refuses() {
    let db = TestDatabase::postgres().await;
    let (proxy, pool) = proxied_pool(&db).await;
    let clock = Arc::new(ManualClock::new(T0));
    let spool = TempDir::new().unwrap();
    let log = AuditLog::postgres(pool, options(spool.path(), &clock)).unwrap();
    record_n(&log, 1).await;
    proxy.set_up(false);
    let got = log.record_many((2..=4).map(event).collect()).await;
    let depths: Vec<Recorded> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        depths,
        [1, 2, 3].map(|depth| Recorded::Spooled { depth }),
        "spooled one after the other"
    );
    proxy.set_up(true);
    drained(&log).await;
    let expected: Vec<String> = (1..=4).map(|i| format!("/auth/k{i}")).collect();
    assert_eq!(all_targets(&log).await, expected);
    assert_eq!(log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 4 });
}

/// The caller's statements and the audit rows commit together or not at all.
#[tokio::test]
async fn record_many_with_commits_the_callers_rows_and_the_audit_rows_together() {
    use ikit_common::audit::{SqlArg, Statement};
    let f = Fixture::postgres().await;
    let Raw::Pg(pool) = &f.raw else { unreachable!("a postgres fixture") };
    sqlx::query("CREATE TABLE side (k TEXT PRIMARY KEY)").execute(pool).await.unwrap();
    let insert = |k: &str| Statement {
        sql: "INSERT INTO side (k) VALUES ($1)".into(),
        args: vec![SqlArg::Text(k.into())],
    };
    let got = f.log.record_many_with(&[event(1), event(2)], &[insert("a")]).await.unwrap();
    assert_eq!(got, [Recorded::Stored { seq: 1 }, Recorded::Stored { seq: 2 }]);
    // A failing statement (duplicate key): neither its rows nor the audit rows are kept.
    let refused = f.log.record_many_with(&[event(3)], &[insert("b"), insert("a")]).await;
    assert!(matches!(refused, Err(AuditError::Database(_))), "{refused:?}");
    let side: Vec<String> =
        sqlx::query_scalar("SELECT k FROM side ORDER BY k").fetch_all(pool).await.unwrap();
    assert_eq!(side, ["a"]);
    assert_eq!(all_targets(&f.log).await, ["/auth/k1", "/auth/k2"]);
    assert_eq!(f.log.record(event(4)).await.unwrap(), Recorded::Stored { seq: 3 });
    assert_eq!(f.log.verify_chain().await.unwrap(), ChainStatus::Intact { rows: 3 });
}
