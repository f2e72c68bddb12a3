//! The queue's coalescing rule at the store: a folder changed again while it was refetched is
//! given back for the end of the window, and every change of the window goes in one refetch.

use ikit_common::testsuite::TestDatabase;
use ikit_webhook::store::{Db, Delivery, FolderId};

const NOW: i64 = 1_780_000_000_000;
const WINDOW: i64 = 100;

fn delivery(received_ms: i64) -> Delivery {
    Delivery {
        id: FolderId { project: "p".into(), environment: "dev".into(), folder: "/app".into() },
        received_ms,
        available_ms: received_ms + WINDOW,
    }
}

async fn changes_during_a_refetch_wait_out_the_window(db: Db) {
    db.migrate().await.expect("migrate");
    db.enqueue_many(&[delivery(NOW)]).await.expect("enqueue");
    assert!(db.claim("w", NOW, NOW + 60_000).await.expect("claim").is_none(), "in its window");
    let first = db.claim("w", NOW + WINDOW, NOW + 60_000).await.expect("claim").expect("ready");

    // Two more changes while the worker refetches; it finishes at NOW + 150.
    db.enqueue_many(&[delivery(NOW + 120), delivery(NOW + 130)]).await.expect("enqueue");
    db.finish(&first, "w", NOW + 150 + WINDOW).await.expect("finish");
    assert!(
        db.claim("w", NOW + 150, NOW + 60_000).await.expect("claim").is_none(),
        "given back for the end of the window, not at once"
    );
    let second = db.claim("w", NOW + 250, NOW + 60_000).await.expect("claim").expect("ready");
    assert_eq!(second.generation, first.generation + 2, "both changes in one refetch");

    // Nothing came in meanwhile: the row is done.
    db.finish(&second, "w", NOW + 300 + WINDOW).await.expect("finish");
    assert_eq!(db.depth().await.expect("depth").0, 0);
}

#[tokio::test]
async fn on_postgres_changes_during_a_refetch_wait_out_the_window() {
    let test_db = TestDatabase::postgres().await;
    changes_during_a_refetch_wait_out_the_window(Db::Postgres(test_db.pool().clone())).await;
}

#[tokio::test]
async fn on_sqlite_changes_during_a_refetch_wait_out_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("queue.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    changes_during_a_refetch_wait_out_the_window(Db::Sqlite(pool)).await;
}
