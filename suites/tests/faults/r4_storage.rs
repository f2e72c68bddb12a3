//! R4: Redis and then PostgreSQL cut mid-load by a TCP proxy in front of each, under the webhook
//! service and a reading replica. Reads go on from L1; a change accepted while Redis is away is
//! published once it is back; a delivery refused while PostgreSQL is away (503, so Infisical
//! delivers again) is processed after recovery; every request's audit entry is spooled and then
//! flushed, the row count equal to the requests made.
//! (ikit-client's `redis_going_away_degrades_to_l1_and_recovers` and ikit-common's
//! `postgres_outage_spools_then_flushes_in_order` pin the single-crate halves of this.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ikit_client::{CachedClient, Clock as _, SealKey, SecretRef, Source};
use ikit_common::events::SecretChangeEvent;

use crate::hooks::{HOOK_SECRET, HookStack, modified};
use crate::support::{PROJECT, Proxy, eventually, host_port, seed_with, via};

const READS: usize = 1_000;

fn seen_keys(seen: &Arc<Mutex<Vec<SecretChangeEvent>>>) -> Vec<String> {
    seen.lock().unwrap().iter().map(|e| e.path()).collect()
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
    seen.lock().unwrap().clear();

    // Redis cut mid-load.
    rd.cut();
    for _ in 0..READS {
        let served = reader.get(&api_key).await.expect("a read while redis is cut");
        assert_eq!(served.source, Source::Cache, "served from L1");
    }
    stack.update("/app", "API_KEY", "api-key-3").await;
    ts += 1;
    // Accepted: the queue is in PostgreSQL, the replay cache falls back to memory.
    assert_eq!(stack.post_signed(&app, ts, HOOK_SECRET, &modified(ts, "/app")).await, 202);
    requests += 1;
    // Processed as far as it can be (events stored), but not publishable yet.
    eventually("the change stored while redis is cut", || {
        let stack = &stack;
        async move { (stack.stored_events().await.len() >= 2).then_some(()) }
    })
    .await;
    assert!(seen.lock().unwrap().is_empty(), "nothing can be published while redis is cut");
    rd.restore();
    // The row went back with a backoff on the service's clock: let it come due.
    let published = eventually("the event published after redis is back", || {
        let (seen, clock) = (seen.clone(), stack.clock.clone());
        async move {
            clock.advance(1_000);
            let keys = seen_keys(&seen);
            keys.contains(&"/app/API_KEY".to_owned()).then_some(keys)
        }
    })
    .await;
    assert_eq!(published, vec!["/app/API_KEY".to_owned()], "exactly the one change");
    ts = stack.clock.now_ms();

    // PostgreSQL cut mid-load: reads still come from L1, the delivery is refused with a 503
    // (never a 202 for what could not be queued) and audited into the spool.
    pg.cut();
    for _ in 0..READS {
        reader.get(&api_key).await.expect("a read while postgres is cut");
    }
    stack.update("/shared", "COMMON", "common-2").await;
    let body = modified(ts, "/shared");
    assert_eq!(stack.post_signed(&app, ts, HOOK_SECRET, &body).await, 503);
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
            seen_keys(&seen).contains(&"/shared/COMMON".to_owned()).then_some(())
        }
    })
    .await;
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
