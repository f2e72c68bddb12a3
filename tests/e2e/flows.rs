//! The operator flows across replicas, each on its own stack of processes.

use std::collections::BTreeSet;
use std::time::Duration;

use ikit_client::{AuthMethod, CachedClient, Client, ClientConfig, FolderQuery};
use ikit_common::SecretRef;
use ikit_common::events::SecretChangeEvent;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, CLIENT_ID, CLIENT_SECRET, EVENTS_TOKEN, EventStream, Stack, eventually,
};

fn is_greeting_update(event: &Value, project: &str) -> bool {
    event["project"] == project && event["folder"] == "/app" && event["key"] == "GREETING"
}

#[tokio::test]
async fn a_change_reaches_the_subscribers_of_both_webhook_replicas() {
    let mut stack = Stack::start().await;
    let a = stack.webhook("a", &[]).await;
    let b = stack.webhook("b", &[]).await;
    let mut on_a = EventStream::open(&stack, a).await;
    let mut on_b = EventStream::open(&stack, b).await;

    stack.change_greeting("hello-2").await;

    // delivered to a only; b's subscribers see the event a's worker stored
    let from_a = on_a.next(&stack).await;
    let from_b = on_b.next(&stack).await;
    for event in [&from_a, &from_b] {
        assert!(is_greeting_update(event, &stack.project), "{event}");
        assert_eq!(event["kind"], "updated", "{event}");
    }
    assert_eq!(from_a["eventId"], from_b["eventId"], "one change, one event");
    // the event names the key, never the value; no log holds a value or a credential
    assert!(!from_b.to_string().contains("hello-2"), "{from_b}");
    stack.assert_logs_hold_none_of(&[
        "hello-1",
        "hello-2",
        CLIENT_SECRET,
        crate::support::WEBHOOK_SECRET,
        crate::support::STATE_KEY,
        EVENTS_TOKEN,
    ]);
}

#[tokio::test]
async fn a_webhook_to_replica_a_invalidates_a_client_attached_to_replica_b() {
    let mut stack = Stack::start().await;
    let _a = stack.webhook("a", &[]).await;
    let b = stack.webhook("b", &[]).await;
    // an application's cache (an hour's TTL, so only an invalidation can refresh it), fed by
    // replica b's event stream the way `ikit dev`'s bridge feeds it
    let config = ClientConfig::new(
        &stack.emulator.base,
        AuthMethod::UniversalAuth {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.to_owned().into(),
        },
    )
    .expect("client config");
    let client = Client::new(config).expect("client");
    let cache = CachedClient::builder()
        .client(client)
        .ttl(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(3600))
        .build()
        .expect("cache");
    let greeting = SecretRef::new(&stack.project, "dev", "/app", "GREETING").expect("secret ref");
    let folder = FolderQuery::new(&stack.project, "dev", "/app");
    assert_eq!(cache.get(&greeting).await.expect("first read").value.value.expose(), "hello-1");
    assert!(cache.is_cached(&folder).await);
    let mut from_b = EventStream::open(&stack, b).await;

    stack.change_greeting("hello-2").await;
    let event = from_b.next(&stack).await;
    assert!(is_greeting_update(&event, &stack.project), "{event}");
    let event: SecretChangeEvent = serde_json::from_value(event).expect("a change event");
    cache.deliver(&event).await;

    assert!(!cache.is_cached(&folder).await, "the listing was dropped");
    let fresh = cache.get(&greeting).await.expect("read after the change");
    assert_eq!(fresh.value.value.expose(), "hello-2");
}

#[tokio::test]
async fn replica_a_killed_mid_event_leaves_it_to_replica_b() {
    let mut stack = Stack::start().await;
    let a = stack.webhook("a", &[]).await;
    // a's next folder read hangs: a claims the change and stalls inside it
    let status = stack
        .emulator_admin(
            reqwest::Method::POST,
            "/__emulator/faults",
            json!({"method": "GET", "routePrefix": "/api/v", "latencyMs": 60_000, "times": 1}),
        )
        .await;
    assert_eq!(status, 204);
    let reads_before = stack.emulator_api_reads().await;
    stack.change_greeting("hello-2").await;
    let pool = stack.db.pool().clone();
    let owner: String = eventually(&stack, "replica a to lease the change", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT lease_owner FROM webhook_queue WHERE folder = '/app'",
            )
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
            .flatten()
        }
    })
    .await;
    eventually(&stack, "replica a's refetch to be in flight", || {
        let stack = &stack;
        async move { (stack.emulator_api_reads().await > reads_before).then_some(()) }
    })
    .await;
    // b joins while a holds the lease (a replacement pod), then a dies without a word
    let b = stack.webhook("b", &[("IKIT_WEBHOOK_BASELINE", "false")]).await;
    let mut on_b = EventStream::open(&stack, b).await;
    let greeting_events = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_events WHERE body LIKE '%GREETING%'",
        )
        .fetch_one(&pool)
    };
    assert_eq!(
        greeting_events().await.expect("events count"),
        0,
        "a finished the change before it died"
    );
    stack.kill(a);

    let event = on_b.next(&stack).await;
    assert!(is_greeting_update(&event, &stack.project), "{event}");
    assert_eq!(event["kind"], "updated");
    let finisher: Option<String> =
        sqlx::query_scalar("SELECT lease_owner FROM webhook_queue WHERE folder = '/app'")
            .fetch_optional(&pool)
            .await
            .expect("queue read")
            .flatten();
    assert_ne!(finisher.as_deref(), Some(owner.as_str()), "the dead replica still holds the row");
    assert_eq!(
        greeting_events().await.expect("events count"),
        1,
        "the change came out exactly once"
    );
}

#[tokio::test]
async fn a_rotation_through_one_health_process_shows_in_the_jwks_of_both() {
    let mut stack = Stack::start().await;
    let first = stack.health("1").await;
    let second = stack.health("2").await;
    let jwks = |index: usize| {
        let url = format!("{}/.well-known/jwks.json", stack.proc(index).base);
        let http = stack.http.clone();
        async move {
            let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            let kids: BTreeSet<String> = body["keys"]
                .as_array()?
                .iter()
                .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                .collect();
            Some(kids)
        }
    };
    let before = jwks(first).await.expect("jwks of the first");
    assert!(!before.is_empty());
    assert_eq!(jwks(second).await.expect("jwks of the second"), before);

    let response = stack
        .http
        .post(format!("{}/api/v1/infisical/rotate", stack.proc(first).base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"rotation_type": "jwt", "force": true, "reason": "e2e rotation"}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(response.status(), 200, "{}", stack.logs());
    let answer: Value = response.json().await.expect("rotate json");
    assert_eq!(answer["outcome"], "rotated", "{answer}");
    let published: BTreeSet<String> = answer["published_kids"]
        .as_array()
        .expect("published kids")
        .iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    assert!(published.len() > before.len(), "a next key is published: {answer}");

    assert_eq!(jwks(first).await.expect("jwks after"), published);
    // the other process learns of the rotation (invalidation over Redis, or its own reload)
    eventually(&stack, "the second health process to publish the same keys", || {
        let next = jwks(second);
        let published = published.clone();
        async move { next.await.filter(|kids| *kids == published).map(|_| ()) }
    })
    .await;
    stack.assert_logs_hold_none_of(&[ADMIN_TOKEN, CLIENT_SECRET, "hello-1"]);
}

/// The images' HEALTHCHECK is the binary probing itself (distroless has no shell or curl):
/// `--healthcheck` exits 0 while the service answers on its configured address, 1 once it is
/// gone.
#[tokio::test]
async fn the_healthcheck_flags_probe_the_running_services() {
    let mut stack = Stack::start().await;
    let webhook = stack.webhook("a", &[]).await;
    let health = stack.health("1").await;
    let probe = |bin: &'static str, var: &'static str, base: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::support::binary(bin))
                .arg("--healthcheck")
                .env_clear()
                .env(var, base.trim_start_matches("http://"))
                .output()
                .expect("the probe runs")
        })
    };
    let targets = [
        ("ikit-webhook", "IKIT_WEBHOOK_ADDR", webhook),
        ("ikit-health", "IKIT_HEALTH_ADDR", health),
    ];
    for (bin, var, index) in targets {
        let base = stack.proc(index).base.clone();
        let live = probe(bin, var, base).await.expect("probe task");
        assert_eq!(live.status.code(), Some(0), "{bin}: {}", String::from_utf8_lossy(&live.stderr));
    }
    for (bin, var, index) in targets {
        let base = stack.proc(index).base.clone();
        stack.kill(index);
        let gone = probe(bin, var, base).await.expect("probe task");
        assert_eq!(gone.status.code(), Some(1), "{bin} still reported healthy");
    }
}

/// `ikit run --watch` attached to replica b's event stream while the emulator's signed webhook
/// goes to replica a: the change crosses replicas through the shared event log and the child
/// is restarted with the new value. The application starts before replica b exists, as it may
/// in a rollout; the watch reconnects, and the change is made only once it says it has (the
/// stream starts after the last stored event, so an earlier change would never reach it).
#[tokio::test]
async fn run_watch_on_replica_b_restarts_its_child_after_a_change_delivered_to_a() {
    let mut stack = Stack::start().await;
    let _a = stack.webhook("a", &[]).await;
    let b_port = crate::support::free_port();
    let starts = stack.path("starts");
    // the child appends the value it was started with, then waits for SIGTERM (or for ikit to
    // be gone, so a failed run leaves no process behind)
    let script = format!(
        "printf '%s\\n' \"$GREETING\" >> '{}'; trap 'exit 0' TERM; \
         while kill -0 $PPID 2>/dev/null; do sleep 0.05; done",
        starts.display()
    );
    let mut env = stack.cli_env();
    env.insert(
        "IKIT_EVENTS_URL".into(),
        format!("http://127.0.0.1:{b_port}/api/v1/infisical/events"),
    );
    env.insert("IKIT_EVENTS_TOKEN".into(), EVENTS_TOKEN.into());
    // an interval far beyond the test: only an event can cause the restart
    let args =
        ["run", "--watch", "--watch-interval", "1h", "--path", "/app", "--", "sh", "-c", &script];
    let ikit = stack.cli("run", &args, &env);
    let lines = |text: String| text.lines().map(str::to_owned).collect::<Vec<_>>();
    let started = eventually(&stack, "the first start of the child", || {
        let text = std::fs::read_to_string(&starts).unwrap_or_default();
        async move { (!text.is_empty()).then(|| lines(text)) }
    })
    .await;
    assert_eq!(started, ["hello-1"]);
    eventually(&stack, "the watch to find replica b missing", || {
        let output = stack.proc(ikit).output();
        async move { output.contains("event stream unavailable").then_some(()) }
    })
    .await;

    let _b = stack.webhook_on("b", b_port, &[]).await;
    eventually(&stack, "the watch to attach to replica b", || {
        let output = stack.proc(ikit).output();
        async move { output.contains("event stream connected again").then_some(()) }
    })
    .await;
    stack.change_greeting("hello-2").await;

    let restarted = eventually(&stack, "the child's start with the new value", || {
        let text = std::fs::read_to_string(&starts).unwrap_or_default();
        async move { (text.lines().count() >= 2).then(|| lines(text)) }
    })
    .await;
    assert_eq!(restarted[..2], ["hello-1", "hello-2"]);
    assert!(stack.proc(ikit).output().contains("secrets changed, restarting"));

    // SIGTERM reaches the child through ikit, which exits with the child's code
    let status = stack.terminate(ikit).await;
    assert_eq!(status.code(), Some(0), "{}", stack.logs());
    let text = std::fs::read_to_string(&starts).expect("starts file");
    assert_eq!(lines(text), ["hello-1", "hello-2"], "one restart for one change");
    stack.assert_logs_hold_none_of(&["hello-1", "hello-2", CLIENT_SECRET, EVENTS_TOKEN]);
}

/// The parts of `/api/v1/infisical/health`, each one an `ikit_health_status{part}` series.
const HEALTH_PARTS: [&str; 5] =
    ["jwt_system", "aes_system", "infisical_connection", "cache", "audit_log"];

/// `ikit_health_status{part="..."}` values in Prometheus text, by part.
fn health_gauges(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("ikit_health_status{part=\""))
        .filter_map(|rest| {
            let (part, value) = rest.split_once("\"} ")?;
            Some((part.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// docs/health.md's gauge, scraped from a running ikit-health: one series per part, each at
/// the level of the status `/api/v1/infisical/health` gives that part (0 healthy, 1 degraded,
/// 2 unhealthy); with Infisical gone and the keys loaded, `infisical_connection` goes to 1.
#[tokio::test]
async fn the_health_gauge_follows_every_part_and_infisical_going_away() {
    let mut stack = Stack::start().await;
    let health = stack.health("1").await;
    let base = stack.proc(health).base.clone();
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/health.md"),
    )
    .expect("docs/health.md");
    for part in HEALTH_PARTS {
        assert!(docs.contains(&format!("ikit_health_status{{part=\"{part}\"}}")), "{part}");
    }
    let http = stack.http.clone();
    // one scrape and one health answer that agree (a part may move between the two reads)
    let agreeing = || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let metrics =
                http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
            let body: Value = http
                .get(format!("{base}/api/v1/infisical/health"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let gauges = health_gauges(&metrics);
            let levels: std::collections::BTreeMap<String, f64> = HEALTH_PARTS
                .iter()
                .map(|part| {
                    let level = match body[*part]["status"].as_str() {
                        Some("healthy") => 0.0,
                        Some("degraded") => 1.0,
                        Some("unhealthy") => 2.0,
                        other => panic!("{part} has no status: {other:?} in {body}"),
                    };
                    ((*part).to_owned(), level)
                })
                .collect();
            (gauges == levels).then_some(gauges)
        }
    };
    let healthy = eventually(&stack, "a healthy stack's gauges", || {
        let next = agreeing();
        async move { next.await.filter(|g| g.values().all(|v| *v == 0.0)) }
    })
    .await;
    assert!(healthy.keys().map(String::as_str).eq(BTreeSet::from(HEALTH_PARTS)), "{healthy:?}");

    stack.emulator.kill();
    let down = eventually(&stack, "infisical_connection at 1 with the emulator gone", || {
        let next = agreeing();
        async move { next.await.filter(|g| g["infisical_connection"] == 1.0) }
    })
    .await;
    assert_eq!(down["jwt_system"], 0.0, "keys stay served from memory: {down:?}");
    assert_eq!(down["cache"], 0.0, "{down:?}");
}
