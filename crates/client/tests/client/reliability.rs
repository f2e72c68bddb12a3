//! Retries, Retry-After, budget exhaustion and the circuit breaker against injected faults.

use std::time::Duration;

use ikit_client::{
    BreakerConfig, Client, ClientError, FolderQuery, NewSecret, RetryPolicy, Scope, SecretRef,
};
use ikit_emulator::{ApiVersion, Fault};

use crate::support::{Harness, PROJECT, ua};

const LIST: &str = "/api/v4/secrets";

fn query() -> FolderQuery {
    FolderQuery::new(PROJECT, "dev", "/app")
}

#[tokio::test]
async fn a_429_storm_is_obeyed_to_the_second() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    // Every list answers 429 "retry after 30 s" for 70 emulated seconds.
    h.emulator.faults().add(Fault::rate_limited(LIST, 30).for_duration(Duration::from_secs(70)));
    let started = h.emulator.clock().now_ms();
    client.fetch_folder(&query()).await.unwrap();
    // Requests at +0 s and +30 s and +60 s got 429; the one at +90 s succeeded. Had the client
    // come back before Retry-After, the window would have eaten all four attempts.
    assert_eq!(h.count("GET", LIST), 4);
    assert_eq!(h.sleeper.recorded(), vec![Duration::from_secs(30); 3]);
    assert_eq!(h.emulator.clock().now_ms() - started, 90_000);
}

#[tokio::test]
async fn the_production_rate_limiter_is_obeyed() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    // The production-like limiter: 60 secrets requests per minute, then 429.
    h.emulator.set_rate_limit_mode(true);
    for _ in 0..130 {
        client.fetch_folder(&query()).await.unwrap();
    }
    // Paced by the server's x-ratelimit-* headers: when a window is used up the client waits
    // for its reset instead of collecting a 429, so every request went through the first time.
    assert_eq!(h.count("GET", LIST), 130, "no request was refused and sent again");
    let waits: Vec<Duration> = h.sleeper.recorded();
    assert_eq!(waits.len(), 2, "one wait per used-up window: {waits:?}");
    assert!(waits.iter().all(|w| *w >= Duration::from_secs(1)), "{waits:?}");
}

#[tokio::test]
async fn a_burst_of_uncached_gets_is_paced_by_the_production_limiter_without_a_429() {
    let h = Harness::start(ApiVersion::V2026).await;
    // The production-like limiter from the start: 60 secrets requests a minute per address.
    h.emulator.set_rate_limit_mode(true);
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "dev", "/app");
    let keys: Vec<String> = (0..100).map(|n| format!("BURST_{n:03}")).collect();
    let items: Vec<NewSecret> =
        keys.iter().map(|k| NewSecret::new(k.clone(), format!("v-{k}"))).collect();
    client.batch_create(&scope, &items).await.unwrap();
    // 100 concurrent by-name gets of distinct keys: more than the window has left.
    let tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            let client = client.clone();
            let secret = SecretRef::new(PROJECT, "dev", "/app", key).unwrap();
            tokio::spawn(async move { client.get(&secret).await.map(|(s, _)| s) })
        })
        .collect();
    for (task, key) in tasks.into_iter().zip(&keys) {
        let secret = task.await.unwrap().unwrap();
        assert_eq!(
            (secret.key.as_str(), secret.value.expose()),
            (key.as_str(), &*format!("v-{key}"))
        );
    }
    // One request per get: the window the headers announced was spent, then the rest waited
    // for its reset instead of collecting 429s and sending again.
    let sent: u64 = keys.iter().map(|k| h.count("GET", &format!("{LIST}/{k}"))).sum();
    assert_eq!(sent, 100, "no request was refused and sent again");
    let waits = h.sleeper.recorded();
    assert!(!waits.is_empty(), "100 requests do not fit one window of 60");
    assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)), "{waits:?}");
}

#[tokio::test]
async fn a_long_retry_after_is_not_waited_for() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    h.emulator.faults().add(Fault::rate_limited(LIST, 600).times(1));
    let err = client.fetch_folder(&query()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(600)),
        "{err:?}"
    );
    assert_eq!(h.count("GET", LIST), 1);
    assert!(h.sleeper.recorded().is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_within_the_budget_then_unavailable() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    // Two 503s then success: retried with backoff.
    h.emulator.faults().add(Fault::status(LIST, 503).times(2));
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!(h.count("GET", LIST), 3);
    let backoffs = h.sleeper.recorded();
    assert_eq!(backoffs.len(), 2);
    assert!(
        backoffs[0] <= Duration::from_millis(100) && backoffs[1] <= Duration::from_millis(200),
        "{backoffs:?}"
    );

    // 502 forever: four attempts (the policy), then Unavailable with the status.
    h.emulator.reset_counters();
    h.emulator.faults().add(Fault::status(LIST, 502));
    let err = client.fetch_folder(&query()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: Some(502), .. }), "{err:?}");
    assert!(!err.is_unreachable());
    assert_eq!(h.count("GET", LIST), 4);

    // A 500 is not retried.
    h.emulator.faults().clear();
    h.emulator.reset_counters();
    h.emulator.faults().add(Fault::status(LIST, 500).times(1));
    let err = client.fetch_folder(&query()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: Some(500), .. }), "{err:?}");
    assert!(err.to_string().contains("status 500"), "the message shows the status: {err}");
    assert_eq!(h.count("GET", LIST), 1);
}

#[tokio::test]
async fn dropped_connections_are_retried_then_unreachable() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    h.emulator.faults().add(Fault::drop_connection(LIST).times(1));
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!(h.count("GET", LIST), 2);

    h.emulator.faults().add(Fault::drop_connection(LIST));
    h.emulator.reset_counters();
    let err = client.fetch_folder(&query()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: None, .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert_eq!(h.count("GET", LIST), 4);
}

#[tokio::test]
async fn a_create_is_not_repeated_after_a_dropped_connection_but_is_after_a_429() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    let scope = Scope::new(PROJECT, "dev", "/app");
    let route = "/api/v4/secrets/ONCE";
    h.emulator.faults().add(Fault::drop_connection(route).times(1));
    let err = client.create_secret(&scope, &NewSecret::new("ONCE", "v")).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: None, .. }), "{err:?}");
    assert_eq!(h.count("POST", route), 1, "the create may have reached the server");

    // A 429 or the 503 of a starting server prove nothing was processed: safe to repeat.
    h.emulator.faults().add(Fault::rate_limited(route, 2).times(1));
    h.emulator.faults().add(Fault::starting_up().method("POST").times(1));
    client.create_secret(&scope, &NewSecret::new("ONCE", "v")).await.unwrap();
    assert_eq!(h.count("POST", route), 4);
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures() {
    let h = Harness::start(ApiVersion::V2026).await;
    let config = h
        .config(ua())
        .with_retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() })
        .with_breaker(BreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(30) });
    let client = Client::new(config).unwrap();
    client.ensure_token().await.unwrap();
    h.emulator.faults().add(Fault::status(LIST, 503));
    for _ in 0..3 {
        let err = client.fetch_folder(&query()).await.unwrap_err();
        assert!(matches!(err, ClientError::Unavailable { .. }), "{err:?}");
    }
    assert!(client.circuit_open());
    let err = client.fetch_folder(&query()).await.unwrap_err();
    assert!(matches!(err, ClientError::CircuitOpen { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert_eq!(h.count("GET", LIST), 3, "no request while open");
    // After the open period one trial goes out; it succeeds and closes the circuit.
    h.emulator.faults().clear();
    h.advance(Duration::from_secs(31));
    client.fetch_folder(&query()).await.unwrap();
    assert!(!client.circuit_open());
    assert_eq!(h.count("GET", LIST), 4);
}

#[tokio::test]
async fn the_request_budget_spaces_out_bursts() {
    let h = Harness::start(ApiVersion::V2026).await;
    let config = h
        .config(ua())
        .with_budget(ikit_client::BudgetConfig { capacity: 5.0, refill_per_sec: 1.0 });
    let client = Client::new(config).unwrap();
    for _ in 0..10 {
        client.fetch_folder(&query()).await.unwrap();
    }
    // 11 requests (1 login + 10 lists) with 5 in the bucket: 6 waits of one second each.
    let waits = h.sleeper.recorded();
    assert_eq!(waits.len(), 6, "{waits:?}");
    let total: Duration = waits.iter().sum();
    assert_eq!(total.as_secs_f64().round() as u64, 6);
}

#[tokio::test]
async fn a_budget_that_can_never_admit_a_request_is_a_config_error() {
    let h = Harness::start(ApiVersion::V2026).await;
    for (capacity, refill_per_sec) in [(10.0, 0.0), (10.0, -1.0), (10.0, f64::NAN), (0.0, 1.0)] {
        let config =
            h.config(ua()).with_budget(ikit_client::BudgetConfig { capacity, refill_per_sec });
        match Client::new(config) {
            Err(ClientError::Config(message)) => assert!(message.contains("budget"), "{message}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a budget of {capacity}/{refill_per_sec} was accepted"),
        }
    }
    assert_eq!(h.count("POST", "/api/v1/auth/universal-auth/login"), 0);
}

/// A client whose breaker opens after three failures for 30 s, with no retries.
fn breaker_client(h: &Harness, budget: ikit_client::BudgetConfig) -> Client {
    let config = h
        .config(ua())
        .with_retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() })
        .with_breaker(BreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(30) })
        .with_budget(budget);
    Client::new(config).unwrap()
}

async fn open_the_circuit(h: &Harness, client: &Client) {
    client.ensure_token().await.unwrap();
    h.emulator.faults().add(Fault::status(LIST, 503));
    for _ in 0..3 {
        client.fetch_folder(&query()).await.unwrap_err();
    }
    assert!(client.circuit_open());
    h.emulator.faults().clear();
}

#[tokio::test]
async fn the_trial_request_survives_a_budget_wait() {
    let h = Harness::start(ApiVersion::V2026).await;
    // Four tokens, one every 50 s: the login and the three failures empty the bucket, so when
    // the circuit half-opens 31 s later the trial has to wait 19 s for its token.
    let client =
        breaker_client(&h, ikit_client::BudgetConfig { capacity: 4.0, refill_per_sec: 0.02 });
    open_the_circuit(&h, &client).await;
    h.advance(Duration::from_secs(31));
    client.fetch_folder(&query()).await.unwrap();
    assert!(!client.circuit_open());
    assert_eq!(h.count("GET", LIST), 4, "the trial was sent");
    let waits = h.sleeper.recorded();
    assert!(!waits.is_empty() && waits[0] > Duration::from_secs(18), "{waits:?}");
}

#[tokio::test]
async fn a_dropped_trial_does_not_wedge_the_breaker() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client =
        breaker_client(&h, ikit_client::BudgetConfig { capacity: 1000.0, refill_per_sec: 1000.0 });
    open_the_circuit(&h, &client).await;
    h.advance(Duration::from_secs(31));
    // The trial hangs on the server; its caller gives up (drops the future) once the server has
    // it, so neither a success nor a failure is ever reported to the breaker.
    h.emulator.faults().add(Fault::latency(LIST, Duration::from_secs(3600)).times(1));
    let query = query();
    let trial = client.fetch_folder(&query);
    let server_has_it = async {
        while h.count("GET", LIST) < 4 {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        result = trial => panic!("the trial should hang, got {:?}", result.map(|_| ())),
        () = server_has_it => {}
    }
    // Right after, the trial's slot is still taken...
    let err = client.fetch_folder(&query).await.unwrap_err();
    assert!(matches!(err, ClientError::CircuitOpen { .. }), "{err:?}");
    // ...but after another open period a new trial goes out and closes the circuit.
    h.advance(Duration::from_secs(31));
    client.fetch_folder(&query).await.unwrap();
    assert!(!client.circuit_open());
    assert_eq!(h.count("GET", LIST), 5);
}
