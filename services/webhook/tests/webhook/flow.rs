//! End to end: a change in the emulator, its real signed webhook, the durable queue, the diff,
//! the subscribers, the caches and the SSE stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{Scope, SecretType};
use ikit_common::events::{ChangeKind, SecretChangeEvent};
use ikit_emulator::Fault;
use serde_json::Value;

use crate::support::{PROJECT, SseClient, Stack, cached_reader, eventually, read};

fn kinds(events: &[SecretChangeEvent]) -> Vec<(String, String, ChangeKind)> {
    let mut out: Vec<_> =
        events.iter().map(|e| (e.folder.clone(), e.key.clone(), e.kind)).collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// Events seen by a subscriber, collected in the background.
fn collect(cache: &ikit_client::CachedClient, pattern: &str) -> Arc<Mutex<Vec<SecretChangeEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    cache.subscribe(pattern, move |e: &SecretChangeEvent| sink.lock().unwrap().push(e.clone()));
    seen
}

async fn wait_for(seen: &Arc<Mutex<Vec<SecretChangeEvent>>>, n: usize) -> Vec<SecretChangeEvent> {
    eventually(&format!("{n} events"), || {
        let got = seen.lock().unwrap().clone();
        async move { (got.len() >= n).then_some(got) }
    })
    .await
}

async fn stored_events(stack: &Stack) -> Vec<(String, String, String)> {
    sqlx::query_as::<_, (String, String, String)>(
        "SELECT folder_key, event_id, body FROM webhook_events ORDER BY seq",
    )
    .fetch_all(stack.db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn an_update_reaches_the_subscriber_the_stream_and_both_caches_and_create_delete_follow() {
    let stack = Stack::start().await;
    let app = stack.app(&[]).await;
    stack.register_hook(&app, "dev").await;
    let (reader_a, _la) = cached_reader(&stack).await;
    let (reader_b, _lb) = cached_reader(&stack).await;
    let seen = collect(&reader_a, "/app");
    let mut stream = SseClient::connect(&app, "?environment=dev", None).await;
    assert_eq!(read(&reader_a, "/app", "DATABASE_URL").await.as_deref(), Some("postgres://v1"));
    assert_eq!(read(&reader_b, "/app", "DATABASE_URL").await.as_deref(), Some("postgres://v1"));

    stack.update("/app", "DATABASE_URL", "postgres://v2").await;
    let got = wait_for(&seen, 1).await;
    assert_eq!(kinds(&got), [("/app".into(), "DATABASE_URL".into(), ChangeKind::Updated)]);
    assert_eq!(got[0].version, Some(2));
    let (first_id, frame) = stream.next().await;
    assert_eq!(frame["key"], "DATABASE_URL");
    assert_eq!(frame["folder"], "/app");
    assert_eq!(frame["kind"], "updated");
    assert_eq!(frame["path"], "/app/DATABASE_URL");
    // Both readers had the old value in L1; both now read the new one.
    assert_eq!(read(&reader_a, "/app", "DATABASE_URL").await.as_deref(), Some("postgres://v2"));
    assert_eq!(read(&reader_b, "/app", "DATABASE_URL").await.as_deref(), Some("postgres://v2"));

    stack.create("/app", "NEW_KEY", "n1").await;
    let got = wait_for(&seen, 2).await;
    assert_eq!((got[1].key.as_str(), got[1].kind), ("NEW_KEY", ChangeKind::Created));
    stack
        .writer()
        .delete_secret(&Scope::new(PROJECT, "dev", "/app"), "API_KEY", SecretType::Shared)
        .await
        .unwrap();
    stack.tick();
    let got = wait_for(&seen, 3).await;
    assert_eq!((got[2].key.as_str(), got[2].kind), ("API_KEY", ChangeKind::Deleted));
    let (second_id, frame) = stream.next().await;
    assert!(second_id > first_id);
    assert_eq!((frame["key"].as_str(), frame["kind"].as_str()), (Some("NEW_KEY"), Some("created")));
    assert_eq!(stream.next().await.1["kind"], "deleted");
    assert_eq!(read(&reader_b, "/app", "API_KEY").await, None);
    // Exactly these three, nothing for the untouched keys.
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(stored_events(&stack).await.len(), 3);
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_in_an_imported_folder_is_announced_for_the_importer() {
    let stack = Stack::start().await;
    let app = stack.app(&[]).await;
    stack.register_hook(&app, "dev").await;
    let mut stream = SseClient::connect(&app, "?pattern=/app/*", None).await;
    stack.update("/shared", "COMMON", "c2").await;
    let (_, frame) = stream.next().await;
    assert_eq!((frame["folder"].as_str(), frame["key"].as_str()), (Some("/app"), Some("COMMON")));
    assert_eq!(frame["kind"], "updated");
    app.shutdown().await;
}

/// Deliveries the emulator has made, once there are `n` and each was answered 202.
async fn answered(stack: &Stack, n: usize) {
    eventually(&format!("{n} deliveries answered"), || {
        let d = stack.emulator.webhook_deliveries();
        async move { (d.len() >= n && d.iter().all(|d| d.http_status == Some(202))).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_folder_changed_during_its_refetch_is_refetched_again_only_after_the_window() {
    let stack = Stack::start().await;
    let app = stack.app(&[("IKIT_WEBHOOK_COALESCE", "100ms")]).await;
    stack.register_hook(&app, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let seen = collect(&reader, "/burst");
    let refetches = || stack.emulator.request_count("GET", "/api/v4/secrets");
    stack.update("/burst", "B0", "2").await;
    answered(&stack, 1).await;
    // The refetch at the window's end takes 500 ms, and B1 changes meanwhile.
    stack
        .emulator
        .faults()
        .add(Fault::latency("/api/v4/secrets", Duration::from_millis(500)).method("GET").times(1));
    let before = refetches();
    stack.advance(Duration::from_millis(100));
    eventually("the refetch", || {
        let started = refetches() > before;
        async move { started.then_some(()) }
    })
    .await;
    stack.update("/burst", "B1", "2").await;
    answered(&stack, 2).await;
    // The slow refetch read B1 too (its answer was made after the change).
    let got = wait_for(&seen, 2).await;
    assert_eq!(
        kinds(&got),
        [
            ("/burst".into(), "B0".into(), ChangeKind::Updated),
            ("/burst".into(), "B1".into(), ChangeKind::Updated),
        ]
    );
    // B1's delivery came in during that refetch, so the folder is queued again, for the end of
    // a window from the refetch's end on the service's clock, which does not move by itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(refetches() - before, 1, "not refetched back to back");
    stack.advance(Duration::from_millis(100));
    eventually("the refetch after the window", || {
        let n = refetches() - before;
        async move { (n == 2).then_some(()) }
    })
    .await;
    // It found nothing new: the same change never yields a second event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn five_changes_in_one_folder_make_one_refetch_and_five_exact_events() {
    let stack = Stack::start().await;
    // Rows wait 100 ms of the service's clock for more changes; the clock moves only when told.
    let app = stack.app(&[("IKIT_WEBHOOK_COALESCE", "100ms")]).await;
    stack.register_hook(&app, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let seen = collect(&reader, "/burst");
    for i in 0..3 {
        stack.update("/burst", &format!("B{i}"), "1").await;
    }
    stack.create("/burst", "B3", "new").await;
    stack.create("/burst", "B4", "new").await;
    // Every delivery the emulator made has been answered before the clock moves.
    let deliveries = eventually("the emulator's deliveries", || {
        let d = stack.emulator.webhook_deliveries();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            (!d.is_empty()).then_some(d)
        }
    })
    .await;
    assert!(deliveries.iter().all(|d| d.http_status == Some(202)), "{deliveries:?}");
    let before = stack.emulator.request_count("GET", "/api/v4/secrets");
    stack.advance(Duration::from_millis(100));
    let got = wait_for(&seen, 5).await;
    assert_eq!(
        kinds(&got),
        [
            ("/burst".into(), "B0".into(), ChangeKind::Updated),
            ("/burst".into(), "B1".into(), ChangeKind::Updated),
            ("/burst".into(), "B2".into(), ChangeKind::Updated),
            ("/burst".into(), "B3".into(), ChangeKind::Created),
            ("/burst".into(), "B4".into(), ChangeKind::Created),
        ]
    );
    // Give any second refetch a chance to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.emulator.request_count("GET", "/api/v4/secrets") - before, 1);
    assert_eq!(seen.lock().unwrap().len(), 5);
    app.shutdown().await;
}

#[tokio::test]
async fn infisical_down_when_the_webhook_arrives_gets_202_and_the_events_come_after() {
    let stack = Stack::start().await;
    let app = stack.app(&[]).await;
    stack.register_hook(&app, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let seen = collect(&reader, "/app");
    // Reads fail from now on; the emulator still sends its webhook.
    stack.emulator.faults().add(Fault::status("/api/v4/secrets", 503).method("GET"));
    stack.update("/app", "DATABASE_URL", "postgres://v3").await;
    let delivery = eventually("the delivery", || {
        let d = stack.emulator.webhook_deliveries();
        async move { d.into_iter().next() }
    })
    .await;
    assert_eq!(delivery.http_status, Some(202));
    // The worker tried and failed; the row is still queued.
    eventually("a failed attempt", || {
        let pool = stack.db.pool().clone();
        async move {
            let row: Option<(Option<String>,)> =
                sqlx::query_as("SELECT last_error FROM webhook_queue")
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            row.and_then(|r| r.0).filter(|e| e == "unavailable")
        }
    })
    .await;
    assert!(seen.lock().unwrap().is_empty());
    stack.emulator.faults().clear();
    stack.advance(Duration::from_secs(2));
    let got = wait_for(&seen, 1).await;
    assert_eq!(kinds(&got), [("/app".into(), "DATABASE_URL".into(), ChangeKind::Updated)]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_service_killed_after_the_202_processes_the_event_once_after_restart() {
    let stack = Stack::start().await;
    let first = stack.app_named("first", &[("IKIT_WEBHOOK_LEASE", "5s")]).await;
    stack.register_hook(&first, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let seen = collect(&reader, "/app");
    // The refetch hangs long enough to kill the service in the middle of it.
    stack
        .emulator
        .faults()
        .add(Fault::latency("/api/v4/secrets", Duration::from_secs(3)).method("GET"));
    let before = stack.emulator.request_count("GET", "/api/v4/secrets");
    stack.update("/app", "DATABASE_URL", "postgres://v4").await;
    eventually("the worker's refetch", || {
        let n = stack.emulator.request_count("GET", "/api/v4/secrets");
        async move { (n > before).then_some(()) }
    })
    .await;
    drop(first);
    stack.emulator.faults().clear();
    let second = stack.app_named("second", &[("IKIT_WEBHOOK_LEASE", "5s")]).await;
    // The dead worker's lease runs out on the service clock; then the row is redone.
    stack.advance(Duration::from_secs(6));
    let got = wait_for(&seen, 1).await;
    assert_eq!(kinds(&got), [("/app".into(), "DATABASE_URL".into(), ChangeKind::Updated)]);
    eventually("an empty queue", || {
        let state = second.state().clone();
        async move { (state.db.depth().await.unwrap().0 == 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.lock().unwrap().len(), 1, "processed twice");
    assert_eq!(stored_events(&stack).await.len(), 1);
    second.shutdown().await;
}

#[tokio::test]
async fn an_sse_client_reconnecting_with_last_event_id_misses_nothing() {
    let stack = Stack::start().await;
    let app = stack.app(&[]).await;
    stack.register_hook(&app, "dev").await;
    let mut stream = SseClient::connect(&app, "", None).await;
    stack.update("/app", "DATABASE_URL", "postgres://v5").await;
    let (last, frame) = stream.next().await;
    assert_eq!(frame["key"], "DATABASE_URL");
    drop(stream);
    // While disconnected: two more changes.
    stack.update("/app", "API_KEY", "k2").await;
    stack.create("/burst", "LATE", "x").await;
    eventually("both stored", || {
        let stack = &stack;
        async move { (stored_events(stack).await.len() == 3).then_some(()) }
    })
    .await;
    let mut resumed = SseClient::connect(&app, "", Some(last)).await;
    let (a, fa) = resumed.next().await;
    let (b, fb) = resumed.next().await;
    assert!(last < a && a < b);
    let mut keys =
        vec![fa["key"].as_str().unwrap().to_owned(), fb["key"].as_str().unwrap().to_owned()];
    keys.sort();
    assert_eq!(keys, ["API_KEY", "LATE"]);
    // A wrong token is refused.
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/infisical/events", app.port()))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    app.shutdown().await;
}

#[tokio::test]
async fn two_instances_on_one_queue_leave_every_view_right() {
    const FOLDERS: usize = 50;
    const KEYS: usize = 10;
    let stack = Stack::start().await;
    let writer = stack.writer();
    for f in 0..FOLDERS {
        if let Err(e) = writer.create_folder(PROJECT, "dev", "/", &format!("f{f}")).await {
            panic!("create folder f{f}: {e}");
        }
    }
    let a = stack.app_named("a", &[("IKIT_WEBHOOK_WORKERS", "3")]).await;
    let b = stack.app_named("b", &[("IKIT_WEBHOOK_WORKERS", "3")]).await;
    stack.register_hook(&a, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let (other_reader, _l2) = cached_reader(&stack).await;
    let seen = collect(&reader, "/");
    let other_seen = collect(&other_reader, "/");
    // Both readers hold every folder in L1 before the changes.
    for f in 0..FOLDERS {
        for r in [&reader, &other_reader] {
            assert_eq!(read(r, &format!("/f{f}"), "K0").await, None);
        }
    }
    // Refetches take a while, so while `a`'s workers (woken by the deliveries) are busy, ready
    // rows wait and `b`'s workers must take their share from the same queue.
    stack
        .emulator
        .faults()
        .add(Fault::latency("/api/v4/secrets", Duration::from_millis(60)).method("GET"));
    // 1,000 changes: every key of every folder created, then updated.
    let mut want: BTreeMap<(String, String), String> = BTreeMap::new();
    for round in 0..2 {
        for f in 0..FOLDERS {
            let folder = format!("/f{f}");
            let scope = Scope::new(PROJECT, "dev", &folder);
            let keys = 0..KEYS;
            let secrets: Vec<ikit_client::NewSecret> = keys
                .map(|k| {
                    let value = format!("v{round}-{f}-{k}");
                    want.insert((folder.clone(), format!("K{k}")), value.clone());
                    ikit_client::NewSecret::new(format!("K{k}"), value)
                })
                .collect();
            writer.batch_upsert(&scope, &secrets).await.unwrap();
            stack.tick();
        }
    }
    assert_eq!(2 * FOLDERS * KEYS, 1_000);
    // In every subscriber's view, every key's last event carries its final version.
    let mut views = Vec::new();
    for view in [&seen, &other_seen] {
        let got = eventually("the events of every change", || {
            let got = view.lock().unwrap().clone();
            let want = &want;
            async move {
                let mut last: BTreeMap<(String, String), &SecretChangeEvent> = BTreeMap::new();
                for e in &got {
                    last.insert((e.folder.clone(), e.key.clone()), e);
                }
                let done = want.keys().all(|k| last.get(k).is_some_and(|e| e.version == Some(2)));
                done.then_some(got.clone())
            }
        })
        .await;
        views.push(got);
    }
    stack.emulator.faults().clear();
    // Both instances worked the queue.
    let (by_a, by_b) = (
        a.state().rows_finished.load(std::sync::atomic::Ordering::Relaxed),
        b.state().rows_finished.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(by_a > 0 && by_b > 0, "rows finished: a {by_a}, b {by_b}");
    // No event twice with different content: per event id one content, and per change
    // (folder, key, version) one content, in each view and in the stored log, whichever
    // instance made it.
    let strip = |e: &SecretChangeEvent| {
        let mut v = serde_json::to_value(e).unwrap();
        v.as_object_mut().unwrap().remove("eventId");
        v
    };
    let stored: Vec<SecretChangeEvent> = stored_events(&stack)
        .await
        .into_iter()
        .map(|(_, _, body)| serde_json::from_str(&body).unwrap())
        .collect();
    for events in views.iter().chain([&stored]) {
        let mut by_id: BTreeMap<&str, &SecretChangeEvent> = BTreeMap::new();
        let mut per_change: BTreeMap<(String, String, Option<u64>), Value> = BTreeMap::new();
        for e in events {
            if let Some(other) = by_id.insert(e.event_id.as_str(), e) {
                assert_eq!(strip(other), strip(e), "one event id, two contents");
            }
            let v = strip(e);
            if let Some(other) =
                per_change.insert((e.folder.clone(), e.key.clone(), e.version), v.clone())
            {
                assert_eq!(other, v, "two different events for one change");
            }
        }
        // Every key's final version is among them (a burst may fold its create and update
        // into one event, never drop the last).
        for (folder, key) in want.keys() {
            assert!(
                per_change.contains_key(&(folder.clone(), key.clone(), Some(2))),
                "{folder}/{key}"
            );
        }
    }
    // Every key's final value is right in every reader (both miss L1 and refetch).
    for ((folder, key), value) in &want {
        for r in [&reader, &other_reader] {
            let got = read(r, folder, key).await;
            assert_eq!(got.as_deref(), Some(value.as_str()), "{folder}/{key}");
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_embedded_default_on_sqlite_queues_diffs_and_streams() {
    let stack = Stack::start().await;
    let file = stack.spool.path().join("embedded.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let app = stack.app(&[("IKIT_DATABASE_URL", &url)]).await;
    stack.register_hook(&app, "dev").await;
    let mut stream = SseClient::connect(&app, "?pattern=/app/*", None).await;
    stack.update("/app", "DATABASE_URL", "postgres://sqlite-v2").await;
    stack.create("/app", "ADDED", "a").await;
    let (first, a) = stream.next().await;
    let (second, b) = stream.next().await;
    assert!(first < second);
    // One refetch or two, the events name exactly the two changes.
    let mut got = [a, b]
        .map(|f| (f["key"].as_str().unwrap().to_owned(), f["kind"].as_str().unwrap().to_owned()));
    got.sort();
    assert_eq!(
        got,
        [
            ("ADDED".to_owned(), "created".to_owned()),
            ("DATABASE_URL".to_owned(), "updated".to_owned())
        ]
    );
    let deliveries = stack.emulator.webhook_deliveries().len();
    assert!(deliveries >= 1);
    assert_eq!(Stack::audit_rows(&app).await.len(), deliveries, "audited in the same SQLite file");
    app.shutdown().await;
}
