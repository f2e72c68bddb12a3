//! R4: Redis and then PostgreSQL cut mid-load by a TCP proxy in front of each, under the webhook
//! service and a reading replica. Reads go on from L1. Changes accepted while Redis is away are
//! stored, their publish fails and their queue rows are given back (not finished); once Redis is
//! back each is published as stored, once per change. A delivery refused while PostgreSQL is
//! away (503, so Infisical delivers again) is processed after recovery; every request's audit
//! entry is spooled and then flushed, the row count equal to the requests made.
//! (ikit-client's `redis_going_away_degrades_to_l1_and_recovers` and ikit-common's
//! `postgres_outage_spools_then_flushes_in_order` pin the single-crate halves of this.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{CachedClient, Clock as _, SealKey, SecretRef, Source};
use ikit_common::events::{SecretChangeEvent, events_channel};

use crate::hooks::{HOOK_SECRET, HookStack, modified};
use crate::support::{PROJECT, Proxy, eventually, host_port, seed_with, via};

const READS: usize = 1_000;

fn seen_keys(seen: &Arc<Mutex<Vec<SecretChangeEvent>>>) -> Vec<String> {
    seen.lock().unwrap().iter().map(|e| e.path()).collect()
}

/// The ids of the events published on the stack's events channel, collected in the background
/// from the moment this returns.
async fn wire_event_ids(stack: &HookStack) -> Arc<Mutex<Vec<String>>> {
    use futures_util::StreamExt as _;

    let mut pubsub = stack.redis.client().get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(events_channel(stack.redis.prefix())).await.expect("subscribe");
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    tokio::spawn({
        let ids = ids.clone();
        async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let payload: String = msg.get_payload().expect("text payload");
                let event: SecretChangeEvent = serde_json::from_str(&payload).expect("event");
                ids.lock().unwrap().push(event.event_id);
            }
        }
    });
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_redis_then_postgres_cut_under_the_webhook_service_and_a_reader() {
    let stack = HookStack::start(seed_with(vec![], vec![])).await;
    let pg = Proxy::start(&host_port(stack.db.url())).await;
    let rd = Proxy::start(&host_port(stack.redis.url())).await;
    let app = stack
        .app_at(&via(stack.db.url(), pg.addr()), &via(stack.redis.url(), rd.addr()), &[])
        .await;

    // A replica reading through L1 and the shared L2 behind the Redis proxy.
    let reader_config = CachedClient::builder()
        .ttl(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(7200))
        .redis(via(stack.redis.url(), rd.addr()), Some(SealKey::new([9u8; 32])))
        .redis_prefix(stack.redis.prefix());
    let reader = reader_config.client(stack.writer()).build().expect("reader");
    // A replica whose own Redis link stays up: it sees what the service publishes.
    let watcher_config = CachedClient::builder()
        .ttl(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(7200))
        .redis(stack.redis.url(), Some(SealKey::new([9u8; 32])))
        .redis_prefix(stack.redis.prefix());
    let watcher = watcher_config.client(stack.writer()).build().expect("watcher");
    let mut listener = watcher.start_listener().expect("listener");
    listener.subscribed().await;
    let seen: Arc<Mutex<Vec<SecretChangeEvent>>> = Arc::default();
    watcher.subscribe("/**", {
        let seen = seen.clone();
        move |e| seen.lock().unwrap().push(e.clone())
    });
    // Every event Redis carries, as it is on the wire (the subscriber drops repeats).
    let wire = wire_event_ids(&stack).await;
    let api_key = SecretRef::parse(PROJECT, "dev", "/app/API_KEY").expect("ref");
    assert_eq!(reader.get(&api_key).await.expect("warm").source, Source::Network);

    let mut requests = 0usize;
    let mut ts = stack.clock.now_ms();
    // Up: a change goes through.
    stack.update("/app", "API_KEY", "api-key-2").await;
    assert_eq!(stack.post_signed(&app, ts, HOOK_SECRET, &modified(ts, "/app")).await, 202);
    requests += 1;
    eventually("the first event", || {
        let seen = seen.clone();
        async move { seen_keys(&seen).contains(&"/app/API_KEY".to_owned()).then_some(()) }
    })
    .await;

    // Redis cut mid-load: new connections are hung up on at once, so a publish fails fast.
    rd.cut();
    for _ in 0..READS {
        let served = reader.get(&api_key).await.expect("a read while redis is cut");
        assert_eq!(served.source, Source::Cache, "served from L1");
    }
    // Two folders change. Accepted: the queue is in PostgreSQL, the replay cache falls back to
    // memory.
    stack.update("/app", "API_KEY", "api-key-3").await;
    stack.update("/shared", "COMMON", "common-2").await;
    for folder in ["/app", "/shared"] {
        ts += 1;
        assert_eq!(stack.post_signed(&app, ts, HOOK_SECRET, &modified(ts, folder)).await, 202);
        requests += 1;
    }
    // Each is processed as far as it can be: its events stored, the publish tried and failed,
    // the row given back (not finished) with a backoff on the service's clock, which stands
    // still until the test moves it. Waiting for that, not only for the stored events, is what
    // makes the publish fail before Redis is back.
    let rows = eventually("both publishes failed and their rows given back", || {
        let stack = &stack;
        async move {
            let stored = stack.stored_events().await.len();
            let rows = stack.queue_rows().await;
            (stored >= 3 && rows.iter().all(|r| !r.leased)).then_some(rows)
        }
    })
    .await;
    let redone: Vec<(String, Option<String>)> =
        rows.into_iter().map(|r| (r.folder, r.last_error)).collect();
    assert_eq!(
        redone,
        [
            ("/app".to_owned(), Some("redis".to_owned())),
            ("/shared".to_owned(), Some("redis".to_owned()))
        ],
        "a failed publish leaves its row queued to be redone"
    );
    assert_eq!(seen_keys(&seen), ["/app/API_KEY"], "nothing published while redis is cut");
    rd.restore();
    // Let the backoff come due: each row publishes the events it stored.
    eventually("both changes published after redis is back", || {
        let (stack, seen) = (&stack, seen.clone());
        async move {
            stack.clock.advance(1_000);
            (seen.lock().unwrap().len() >= 3 && stack.queue_rows().await.is_empty()).then_some(())
        }
    })
    .await;
    ts = stack.clock.now_ms();

    // PostgreSQL cut mid-load: reads still come from L1, the delivery is refused with a 503
    // (never a 202 for what could not be queued) and audited into the spool.
    pg.cut();
    for _ in 0..READS {
        reader.get(&api_key).await.expect("a read while postgres is cut");
    }
    stack.update("/shared", "COMMON", "common-3").await;
    let body = modified(ts, "/shared");
    let status = stack.post_signed(&app, ts, HOOK_SECRET, &body).await;
    assert_eq!(status, 503, "what could not be queued is refused, never a 202");
    requests += 1;
    eventually("the refused delivery's audit entry in the spool", || {
        let app = &app;
        async move { (app.state().audit.status().spooled >= 1).then_some(()) }
    })
    .await;
    pg.restore();
    // Infisical delivers again (a fresh timestamp each time) until it is queued.
    let mut redeliveries = 0;
    loop {
        ts += 1;
        requests += 1;
        redeliveries += 1;
        let status = stack.post_signed(&app, ts, HOOK_SECRET, &modified(ts, "/shared")).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "refused only while the pool reconnects");
        assert!(redeliveries < 100, "postgres never came back for the service");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the /shared change after postgres is back", || {
        let (seen, clock) = (seen.clone(), stack.clock.clone());
        async move {
            clock.advance(1_000);
            (seen.lock().unwrap().len() >= 4).then_some(())
        }
    })
    .await;
    // Every change delivered to the subscriber once, as the event stored for it (same id: a
    // redone row publishes what it stored, it does not diff again). Sorted: the two rows redone
    // after Redis came back run on two workers in either order.
    let mut stored: Vec<(String, String)> = stack
        .stored_events()
        .await
        .into_iter()
        .map(|(_, e)| {
            let event: SecretChangeEvent = serde_json::from_value(e).expect("stored event");
            (event.path(), event.event_id)
        })
        .collect();
    stored.sort();
    let mut delivered: Vec<(String, String)> =
        seen.lock().unwrap().iter().map(|e| (e.path(), e.event_id.clone())).collect();
    delivered.sort();
    assert_eq!(delivered, stored, "each change delivered once, as stored");
    assert_eq!(
        stored.iter().map(|(path, _)| path.as_str()).collect::<Vec<_>>(),
        ["/app/API_KEY", "/app/API_KEY", "/shared/COMMON", "/shared/COMMON"],
        "one event per change"
    );
    // On the wire, nothing but those events: a repeat (a publish whose reply was lost is sent
    // again) carries the same id, never a second version of the change.
    let wire = eventually("every stored event on the wire", || {
        let (wire, stored) = (wire.clone(), &stored);
        async move {
            let wire = wire.lock().unwrap().clone();
            stored.iter().all(|(_, id)| wire.contains(id)).then_some(wire)
        }
    })
    .await;
    assert!(wire.iter().all(|id| stored.iter().any(|(_, s)| s == id)), "{wire:?} vs {stored:?}");
    // Every request audited exactly once: the spool flushed into the database.
    let rows = eventually("the spool flushed", || {
        let app = &app;
        async move {
            let rows = HookStack::audit_rows(app).await;
            (app.state().audit.status().spooled == 0 && rows.len() >= requests).then_some(rows)
        }
    })
    .await;
    assert_eq!(rows.len(), requests, "one audit row per request, none lost or doubled");
    listener.shutdown().await;
    app.shutdown().await;
}
