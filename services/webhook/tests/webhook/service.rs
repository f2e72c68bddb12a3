//! The service around the flows: group commit of the receiver, graceful shutdown, the event
//! stream's heartbeat, the replay cache without Redis, and the OpenAPI document.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ikit_common::audit::ChainStatus;
use ikit_common::clock::Clock;
use ikit_common::events::{ChangeKind, SecretChangeEvent};
use ikit_common::testsuite::TestRedis;
use ikit_common::webhook_signature::sign;
use ikit_emulator::Fault;
use ikit_webhook::redis_link::RedisLink;
use ikit_webhook::replay::{ReplayBackend, ReplayCache, digest};
use serde_json::{Value, json};

use crate::support::{
    EVENTS_TOKEN, PROJECT, SECRET, START_MS, Stack, cached_reader, eventually, post,
};

const HOOK: &str = "/api/v1/infisical/webhook";

fn modified(ts: i64, path: &str) -> String {
    json!({"event": "secrets.modified",
           "project": {"workspaceId": PROJECT, "environment": "dev", "secretPath": path},
           "timestamp": ts})
    .to_string()
}

/// Row of the queue: (lease owner, available at).
async fn queue_row(stack: &Stack, folder: &str) -> Option<(Option<String>, i64)> {
    sqlx::query_as::<_, (Option<String>, i64)>(
        "SELECT lease_owner, available_ms FROM webhook_queue WHERE folder = $1",
    )
    .bind(folder)
    .fetch_optional(stack.db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn concurrent_deliveries_share_commits_and_each_is_queued_and_audited_in_one_chain() {
    let stack = Stack::start().await;
    let app = stack
        .app(&[
            ("IKIT_WEBHOOK_BASELINE", "false"),
            ("IKIT_WEBHOOK_COALESCE", "1h"),
            ("IKIT_WEBHOOK_RATE_LIMIT", "0"),
        ])
        .await;
    // 200 distinct deliveries over 40 folders, all in flight at once.
    let mut requests = Vec::new();
    for n in 0..200i64 {
        let ts = START_MS - n;
        let body = modified(ts, &format!("/g{}", n % 40));
        let sig = sign(ts, SECRET.as_bytes(), body.as_bytes());
        let app = &app;
        requests.push(async move {
            post(app, HOOK, &[("x-infisical-signature", sig.as_str())], body)
                .await
                .status()
                .as_u16()
        });
    }
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    // Every answer came after its writes: 40 queue rows, one per folder, with every delivery
    // counted in its generation, and 200 audit rows in one intact chain.
    assert_eq!(Stack::queued(&app).await, 40);
    let generations: i64 = sqlx::query_scalar("SELECT SUM(generation)::BIGINT FROM webhook_queue")
        .fetch_one(stack.db.pool())
        .await
        .unwrap();
    assert_eq!(generations, 200);
    let rows = Stack::audit_rows(&app).await;
    assert_eq!(rows.len(), 200);
    assert!(rows.iter().all(|r| r.event.details["status"] == json!(202)));
    let seqs: BTreeSet<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 200, "two requests share a chain position");
    assert!(matches!(app.state().audit.verify_chain().await.unwrap(), ChainStatus::Intact { .. }));
    // Commits were shared: fewer batches than requests.
    let batches = app.state().intake.batches();
    assert!(batches < 200, "{batches} batches for 200 requests");
    app.shutdown().await;
}

/// The group commit checks replays for a whole batch (one pipelined `SET NX` per batch): a
/// delivery sent many times at once is taken once, whichever batch each copy lands in, and
/// every copy is audited.
#[tokio::test]
async fn copies_of_a_delivery_sent_at_once_are_taken_once_and_each_audited() {
    let stack = Stack::start().await;
    let app = stack
        .app(&[
            ("IKIT_WEBHOOK_BASELINE", "false"),
            ("IKIT_WEBHOOK_COALESCE", "1h"),
            ("IKIT_WEBHOOK_RATE_LIMIT", "0"),
        ])
        .await;
    // 20 deliveries, each sent 5 times, all 100 requests in flight together.
    let mut requests = Vec::new();
    for n in 0..20i64 {
        let ts = START_MS - n;
        let body = modified(ts, &format!("/r{n}"));
        let sig = sign(ts, SECRET.as_bytes(), body.as_bytes());
        for _ in 0..5 {
            let (app, body, sig) = (&app, body.clone(), sig.clone());
            requests.push(async move {
                let status = post(app, HOOK, &[("x-infisical-signature", sig.as_str())], body)
                    .await
                    .status()
                    .as_u16();
                (n, status)
            });
        }
    }
    let answers = futures_util::future::join_all(requests).await;
    for n in 0..20 {
        let mut statuses: Vec<u16> =
            answers.iter().filter(|(m, _)| *m == n).map(|(_, s)| *s).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [202, 409, 409, 409, 409], "delivery {n}");
    }
    // One generation per folder: the copies queued nothing.
    let generations: i64 = sqlx::query_scalar("SELECT SUM(generation)::BIGINT FROM webhook_queue")
        .fetch_one(stack.db.pool())
        .await
        .unwrap();
    assert_eq!((Stack::queued(&app).await, generations), (20, 20));
    let rows = Stack::audit_rows(&app).await;
    assert_eq!(rows.len(), 100);
    let replays = rows.iter().filter(|r| r.event.details["code"] == json!("replayed")).count();
    assert_eq!(replays, 80);
    // And a copy sent after all that is still a replay (an earlier batch had it).
    let body = modified(START_MS, "/r0");
    let sig = sign(START_MS, SECRET.as_bytes(), body.as_bytes());
    assert_eq!(post(&app, HOOK, &[("x-infisical-signature", &sig)], body).await.status(), 409);
    app.shutdown().await;
}

/// The batched replay check on Redis: one pipelined round trip refuses a copy within the
/// batch, and a later batch on another replica (its own in-process map empty) refuses what
/// the first took; a forgotten delivery is taken again.
#[tokio::test]
async fn the_batched_replay_check_on_redis_refuses_within_a_batch_and_across_replicas() {
    let redis = TestRedis::new().await;
    let replica = || {
        let link = RedisLink::new(redis.url(), Duration::from_secs(2)).expect("redis link");
        ReplayCache::new(Some(Arc::new(link)), redis.prefix(), Duration::from_secs(60))
    };
    let (one, two) = (replica(), replica());
    let (a, b) = (digest("t=1;aa"), digest("t=1;bb"));
    assert_eq!(
        one.first_time_many(&[(a, START_MS), (b, START_MS), (a, START_MS)]).await,
        [true, true, false]
    );
    assert_eq!(one.backend(), ReplayBackend::Redis);
    assert_eq!(two.first_time_many(&[(b, START_MS), (a, START_MS)]).await, [false, false]);
    one.forget_many(&[a]).await;
    assert_eq!(two.first_time_many(&[(a, START_MS), (a, START_MS)]).await, [true, false]);
}

/// A 202 is sent only once its queue row and audit row are committed: each answer, as it
/// arrives, finds both in the database (read on a connection of its own).
#[tokio::test]
async fn every_202_finds_its_queue_row_and_audit_row_already_committed() {
    let stack = Stack::start().await;
    let app = stack
        .app(&[
            ("IKIT_WEBHOOK_BASELINE", "false"),
            ("IKIT_WEBHOOK_COALESCE", "1h"),
            ("IKIT_WEBHOOK_RATE_LIMIT", "0"),
        ])
        .await;
    let requests = (0..100i64).map(|n| {
        let (app, pool) = (&app, stack.db.pool());
        async move {
            let ts = START_MS - n;
            let folder = format!("/c{n}");
            let body = modified(ts, &folder);
            let sig = sign(ts, SECRET.as_bytes(), body.as_bytes());
            let status = post(app, HOOK, &[("x-infisical-signature", sig.as_str())], body)
                .await
                .status()
                .as_u16();
            let queued: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM webhook_queue WHERE folder = $1")
                    .bind(&folder)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            let audited: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE target = $1")
                    .bind(format!("{PROJECT}:dev:{folder}"))
                    .fetch_one(pool)
                    .await
                    .unwrap();
            (status, queued, audited)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|a| *a == (202, 1, 1)), "{answers:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_delivery_the_queue_refuses_is_503_audited_as_such_and_taken_when_redelivered() {
    let stack = Stack::start().await;
    let app =
        stack.app(&[("IKIT_WEBHOOK_BASELINE", "false"), ("IKIT_WEBHOOK_COALESCE", "1h")]).await;
    sqlx::query("ALTER TABLE webhook_queue RENAME TO webhook_queue_away")
        .execute(stack.db.pool())
        .await
        .unwrap();
    let body = modified(START_MS, "/app");
    let sig = sign(START_MS, SECRET.as_bytes(), body.as_bytes());
    let r = post(&app, HOOK, &[("x-infisical-signature", &sig)], body.clone()).await;
    assert_eq!(r.status().as_u16(), 503);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "queue_unavailable");
    let rows = Stack::audit_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.details["status"], json!(503));
    assert_eq!(rows[0].event.details["code"], json!("queue_unavailable"));
    // The queue is back: the same delivery again is not a replay, it is queued.
    sqlx::query("ALTER TABLE webhook_queue_away RENAME TO webhook_queue")
        .execute(stack.db.pool())
        .await
        .unwrap();
    let r = post(&app, HOOK, &[("x-infisical-signature", &sig)], body).await;
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(Stack::queued(&app).await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_the_folder_in_hand_so_another_instance_takes_it_at_once() {
    let stack = Stack::start().await;
    let first = stack
        .app_named("first", &[("IKIT_WEBHOOK_WORKERS", "1"), ("IKIT_WEBHOOK_SHUTDOWN_GRACE", "0s")])
        .await;
    let first_state = first.state().clone();
    let port = first.port();
    stack.register_hook(&first, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SecretChangeEvent>::new()));
    let sink = seen.clone();
    reader.subscribe("/app", move |e: &SecretChangeEvent| sink.lock().unwrap().push(e.clone()));
    // The refetch hangs: the worker holds the folder when the shutdown comes.
    stack
        .emulator
        .faults()
        .add(Fault::latency("/api/v4/secrets", Duration::from_secs(4)).method("GET"));
    let before = stack.emulator.request_count("GET", "/api/v4/secrets");
    stack.update("/app", "DATABASE_URL", "postgres://handed-over").await;
    eventually("the worker's refetch", || {
        let n = stack.emulator.request_count("GET", "/api/v4/secrets");
        async move { (n > before).then_some(()) }
    })
    .await;
    assert_eq!(queue_row(&stack, "/app").await.unwrap().0.as_deref(), Some("first-0"));
    first.shutdown().await;
    // Given back, claimable now (not when the 30 s lease would have run out); no longer
    // listening.
    let (owner, available) = queue_row(&stack, "/app").await.expect("still queued");
    assert_eq!(owner, None);
    assert!(available <= stack.clock.now_ms());
    assert_eq!(first_state.rows_released_at_shutdown.load(Ordering::Relaxed), 1);
    assert_eq!(first_state.rows_finished.load(Ordering::Relaxed), 0);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err());

    stack.emulator.faults().clear();
    // The service clock does not move: the other instance takes the row at once.
    let second = stack
        .app_named("second", &[("IKIT_WEBHOOK_WORKERS", "1"), ("IKIT_WEBHOOK_BASELINE", "false")])
        .await;
    eventually("the event from the second instance", || {
        let n = seen.lock().unwrap().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].key.as_str(), got[0].kind), ("DATABASE_URL", ChangeKind::Updated));
    // Published, then the row is finished: by the second instance.
    let state = second.state().clone();
    eventually("the row finished", || {
        let n = state.rows_finished.load(Ordering::Relaxed);
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert_eq!(queue_row(&stack, "/app").await, None);
    second.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_folder_in_hand_within_the_grace() {
    let stack = Stack::start().await;
    let app = stack.app(&[("IKIT_WEBHOOK_WORKERS", "1")]).await;
    let state = app.state().clone();
    stack.register_hook(&app, "dev").await;
    let (reader, _l) = cached_reader(&stack).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SecretChangeEvent>::new()));
    let sink = seen.clone();
    reader.subscribe("/app", move |e: &SecretChangeEvent| sink.lock().unwrap().push(e.clone()));
    stack
        .emulator
        .faults()
        .add(Fault::latency("/api/v4/secrets", Duration::from_millis(500)).method("GET"));
    let before = stack.emulator.request_count("GET", "/api/v4/secrets");
    stack.update("/app", "API_KEY", "k-finished").await;
    eventually("the worker's refetch", || {
        let n = stack.emulator.request_count("GET", "/api/v4/secrets");
        async move { (n > before).then_some(()) }
    })
    .await;
    app.shutdown().await;
    // Done before shutdown returned: stored, published, the row gone.
    assert_eq!(state.rows_finished.load(Ordering::Relaxed), 1);
    assert_eq!(state.rows_released_at_shutdown.load(Ordering::Relaxed), 0);
    assert_eq!(queue_row(&stack, "/app").await, None);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events WHERE published = 1")
        .fetch_one(stack.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 1);
    eventually("the published event", || {
        let n = seen.lock().unwrap().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_event_stream_sends_heartbeats_at_the_configured_interval() {
    let stack = Stack::start().await;
    let app =
        stack.app(&[("IKIT_WEBHOOK_BASELINE", "false"), ("IKIT_WEBHOOK_HEARTBEAT", "50ms")]).await;
    let mut response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/infisical/events", app.port()))
        .bearer_auth(EVENTS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Nothing happens; the stream still speaks: heartbeat comments (the default, 15 s, would
    // not have sent one before the deadline).
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while text.matches(": heartbeat\n").count() < 2 {
            let chunk = response.chunk().await.unwrap().expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("two heartbeats");
    assert!(!text.contains("data:"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn without_redis_the_replay_cache_works_in_process_and_health_says_so() {
    let stack = Stack::start().await;
    let app = stack
        .app(&[
            ("IKIT_WEBHOOK_BASELINE", "false"),
            ("IKIT_WEBHOOK_COALESCE", "1h"),
            ("IKIT_REDIS_URL", "redis://127.0.0.1:1"),
        ])
        .await;
    let body = modified(START_MS, "/app");
    let sig = sign(START_MS, SECRET.as_bytes(), body.as_bytes());
    let h = [("x-infisical-signature", sig.as_str())];
    assert_eq!(post(&app, HOOK, &h, body.clone()).await.status().as_u16(), 202);
    assert_eq!(post(&app, HOOK, &h, body).await.status().as_u16(), 409);
    assert_eq!(Stack::queued(&app).await, 1);
    let ready: Value = reqwest::get(format!("http://127.0.0.1:{}/readyz", app.port()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["replayCache"], "memory");
    assert_eq!(ready["redis"], "down");
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    let stack = Stack::start().await;
    let app = stack.app(&[("IKIT_WEBHOOK_BASELINE", "false")]).await;
    let base = format!("http://127.0.0.1:{}", app.port());
    let doc: Value =
        reqwest::get(format!("{base}/openapi.json")).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = ikit_webhook::route_table()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    // The table is what the router serves: each route answers its method (whatever the
    // status, never 404 or 405), and what is not in it is not served.
    let http = reqwest::Client::new();
    for (method, path) in &routed {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
        assert!(![404, 405].contains(&r.status().as_u16()), "{method} {path}: {}", r.status());
    }
    assert_eq!(
        http.get(format!("{base}/api/v1/infisical/other")).send().await.unwrap().status(),
        404
    );
    assert_eq!(http.delete(format!("{base}/healthz")).send().await.unwrap().status(), 405);
    app.shutdown().await;
}

#[tokio::test]
async fn mounted_in_an_app_router_a_per_key_delivery_is_refetched_and_its_value_ignored() {
    let stack = Stack::start().await;
    // The application's own router with the receiver merged in, as the crate docs show.
    let service =
        ikit_webhook::Service::start(stack.settings(&[]), stack.options("mounted")).await.unwrap();
    let app = axum::Router::new()
        .route("/own", axum::routing::get(|| async { "the application's route" }))
        .merge(service.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    let (reader, _l) = cached_reader(&stack).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SecretChangeEvent>::new()));
    let sink = seen.clone();
    reader.subscribe("/app", move |e: &SecretChangeEvent| sink.lock().unwrap().push(e.clone()));
    assert_eq!(
        crate::support::read(&reader, "/app", "DATABASE_URL").await.as_deref(),
        Some("postgres://v1")
    );
    // Changed in Infisical (no webhook registered), then announced in the per-key shape with a
    // value that is not the real one: only the refetched value counts.
    stack
        .writer()
        .update_secret(
            &ikit_client::Scope::new(PROJECT, "dev", "/app"),
            &ikit_client::SecretUpdate::value("DATABASE_URL", "postgres://refetched"),
        )
        .await
        .unwrap();
    let ts = stack.clock.now_ms();
    let body = json!({"event": "secret.updated", "timestamp": ts,
                      "project": {"workspaceId": PROJECT},
                      "payload": {"secretKey": "DATABASE_URL", "secretValue": "carried-value-xyz",
                                  "environment": "dev", "secretPath": "/app"}})
    .to_string();
    let sig = sign(ts, SECRET.as_bytes(), body.as_bytes());
    let r = reqwest::Client::new()
        .post(format!("{base}{HOOK}"))
        .header("x-infisical-signature", sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    eventually("the event", || {
        let n = seen.lock().unwrap().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        (got[0].key.as_str(), got[0].kind, got[0].version),
        ("DATABASE_URL", ChangeKind::Updated, Some(2))
    );
    assert_eq!(
        crate::support::read(&reader, "/app", "DATABASE_URL").await.as_deref(),
        Some("postgres://refetched")
    );
    // The carried value is nowhere: not in the stored events, states or audit rows.
    for table in ["webhook_events", "webhook_folder_state", "audit_log"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(stack.db.pool())
            .await
            .unwrap();
        assert!(
            rows.iter()
                .all(|r| !r.contains("carried-value-xyz") && !r.contains("postgres://refetched")),
            "{table}"
        );
    }
    let audit = &service.state().audit;
    let rows = audit
        .query(&ikit_common::audit::AuditFilter {
            action: Some("webhook.receive".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.details["key"], "DATABASE_URL");
    // The application's route and the service's health, metrics and readiness, side by side.
    let own = reqwest::get(format!("{base}/own")).await.unwrap().text().await.unwrap();
    assert_eq!(own, "the application's route");
    let ready: Value = reqwest::get(format!("{base}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(
        (
            &ready["ready"],
            &ready["queue"],
            &ready["infisical"],
            &ready["redis"],
            &ready["replayCache"]
        ),
        (&json!(true), &json!(true), &json!(true), &json!("up"), &json!("redis"))
    );
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "ikit_webhook_change_events_total{kind=\"updated\"}",
        "ikit_webhook_processing_latency_seconds",
        "ikit_webhook_queue_depth",
        "ikit_webhook_queue_oldest_age_seconds",
        "ikit_webhook_refetch_total",
        "infisical_webhook_events_total{event=\"secret.updated\",status=\"202\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    server.abort();
    service.stop().await;
}
