//! Fault injection, counters, clock control and the production-like rate limiter, in process
//! and over the admin API.

use std::time::{Duration, Instant};

use ikit_emulator::Fault;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

fn list() -> String {
    format!("/api/v4/secrets?projectId={PROJECT}&environment=dev")
}

#[tokio::test]
async fn status_faults_fire_the_given_number_of_times() {
    let h = start().await;
    let token = h.token().await;
    h.emu.faults().add(Fault::status("/api/v4/secrets", 503).times(2).method("GET"));
    // While the fault is active, another method under the prefix and another route are served.
    let create = h
        .post(
            "/api/v4/secrets/X",
            Some(&token),
            json!({"projectId": PROJECT, "environment": "dev", "secretValue": "x"}),
        )
        .await;
    assert_eq!(create.status, 200, "{}", create.body);
    assert_eq!(h.get("/api/v1/workspace", &token).await.status, 200);
    for _ in 0..2 {
        let a = h.get(&list(), &token).await;
        assert_eq!(a.status, 503);
        assert_eq!(
            a.body,
            json!({"status": "unavailable", "message": "Server is starting up, migrations in progress..."})
        );
    }
    assert_eq!(h.get(&list(), &token).await.status, 200);
    // Other methods and routes were never affected.
    assert_eq!(h.emu.request_count("GET", "/api/v4/secrets"), 3);
}

#[tokio::test]
async fn rate_limit_faults_answer_like_the_real_limiter() {
    let h = start().await;
    let token = h.token().await;
    h.emu.faults().add(Fault::rate_limited("/api/v4", 7).for_duration(Duration::from_secs(10)));
    let a = h.get(&list(), &token).await;
    assert_error(
        &a,
        429,
        "RateLimitExceeded",
        "Rate limit exceeded. Please try again in 7 seconds",
    );
    assert_eq!(a.headers["retry-after"], "7");
    assert_eq!(a.headers["x-ratelimit-remaining"], "0");
    assert_eq!(a.headers["x-ratelimit-reset"], "7");
    assert!(a.headers.contains_key("x-ratelimit-limit"));
    assert_eq!(h.get(&list(), &token).await.status, 429, "still inside the window");
    h.emu.clock().advance(Duration::from_secs(10));
    assert_eq!(
        h.get(&list(), &token).await.status,
        200,
        "the window is measured on the emulator clock"
    );
}

#[tokio::test]
async fn error_rates_and_latency() {
    let h = start().await;
    let token = h.token().await;
    h.emu.faults().add(Fault::status("/api/v4/secrets", 500).rate(0.0));
    assert_eq!(h.get(&list(), &token).await.status, 200, "rate 0 never fires");
    h.emu.faults().clear();
    h.emu.faults().add(Fault::status("/api/v4/secrets", 500).rate(1.0).times(1));
    assert_error(&h.get(&list(), &token).await, 500, "InternalServerError", "Something went wrong");
    h.emu.faults().add(Fault::status("/api/v4/secrets", 504).times(1));
    assert_eq!(h.get(&list(), &token).await.body["error"], "GatewayTimeoutError");
    // A latency fault delays and then lets the request through; it is consumed.
    h.emu.faults().add(Fault::latency("/api/v4/secrets", Duration::from_millis(20)).times(1));
    let before = Instant::now();
    assert_eq!(h.get(&list(), &token).await.status, 200);
    assert!(before.elapsed() >= Duration::from_millis(20), "the latency was injected");
    assert!(h.emu.faults().list().is_empty(), "used-up faults are removed");
}

#[tokio::test]
async fn dropped_connections_are_a_connection_error() {
    let h = start().await;
    let token = h.token().await;
    h.emu.faults().add(Fault::drop_connection("/api/v4/secrets").times(1));
    let err = h.http.get(h.url(&list())).bearer_auth(&token).send().await.expect_err("no answer");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert!(err.status().is_none());
    assert_eq!(h.get(&list(), &token).await.status, 200, "the next connection is served");
}

#[tokio::test]
async fn starting_up_window_covers_every_route() {
    let h = start().await;
    h.emu.faults().add(Fault::starting_up().for_duration(Duration::from_secs(30)));
    let a = h.send(Method::GET, "/api/status", None, None).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["message"], "Server is starting up, migrations in progress...");
    let login = h.login_as(CLIENT_ID, CLIENT_SECRET).await;
    assert_eq!(login.status, 503);
    h.emu.clock().advance(Duration::from_secs(30));
    assert_eq!(h.send(Method::GET, "/api/status", None, None).await.status, 200);
}

#[tokio::test]
async fn counters_match_the_calls_made() {
    let h = start().await;
    let token = h.token().await;
    for _ in 0..3 {
        h.get(&list(), &token).await;
    }
    h.get(&format!("{}&recursive=true", list()), &token).await;
    h.get(&format!("/api/v4/secrets/HOST?projectId={PROJECT}&environment=dev"), &token).await;
    assert_eq!(
        h.emu.request_count("GET", "/api/v4/secrets"),
        4,
        "query strings do not split counters"
    );
    assert_eq!(h.emu.request_count("get", "/api/v4/secrets/HOST"), 1);
    assert_eq!(h.emu.request_count("POST", "/api/v1/auth/universal-auth/login"), 1);
    assert_eq!(h.emu.request_count("DELETE", "/api/v4/secrets"), 0);
    let over_http =
        h.admin(Method::GET, "/__emulator/counters?method=GET&route=/api/v4/secrets", None).await;
    assert_eq!(over_http.body["count"], 4);
    let all = h.admin(Method::GET, "/__emulator/counters", None).await;
    assert_eq!(all.body["counters"].as_array().unwrap().len(), 3, "admin calls are not counted");
    h.emu.reset_counters();
    assert_eq!(h.emu.request_count("GET", "/api/v4/secrets"), 0);
    h.get(&list(), &token).await;
    assert_eq!(h.admin(Method::DELETE, "/__emulator/counters", None).await.status, 204);
    assert_eq!(h.emu.request_count("GET", "/api/v4/secrets"), 0);
}

#[tokio::test]
async fn admin_api_controls_faults_clock_and_shows_logins() {
    let h = start().await;
    let token = h.token().await;
    let added = h
        .admin(
            Method::POST,
            "/__emulator/faults",
            Some(json!({"routePrefix": "/api/v4", "status": 502, "times": 1, "method": "GET"})),
        )
        .await;
    assert_eq!(added.status, 204);
    assert_eq!(
        h.admin(Method::GET, "/__emulator/faults", None).await.body["faults"][0]["status"],
        502
    );
    assert_eq!(h.get(&list(), &token).await.status, 502);
    assert_eq!(h.admin(Method::DELETE, "/__emulator/faults", None).await.status, 204);
    let clock = h.admin(Method::GET, "/__emulator/clock", None).await;
    assert_eq!(clock.body["nowMs"], START_MS);
    let advanced =
        h.admin(Method::POST, "/__emulator/clock/advance", Some(json!({"seconds": 3600}))).await;
    assert_eq!(advanced.body["nowMs"], START_MS + 3_600_000);
    assert_eq!(h.get(&list(), &token).await.body["error"], "TokenError");
    let set =
        h.admin(Method::POST, "/__emulator/clock/set", Some(json!({"unixMs": START_MS}))).await;
    assert_eq!(set.body["nowMs"], START_MS);
    assert_eq!(h.get(&list(), &token).await.status, 200);
    let logins = h.admin(Method::GET, "/__emulator/login-requests/universal-auth", None).await;
    assert_eq!(logins.body["requests"][0]["clientId"], CLIENT_ID);
}

#[tokio::test]
async fn production_rate_limit_mode_uses_per_ip_minute_buckets() {
    let h = start().await;
    let token = h.token().await;
    assert_eq!(
        h.admin(Method::POST, "/__emulator/rate-limit", Some(json!({"enabled": true})))
            .await
            .status,
        204
    );
    for i in 0..60 {
        let a = h.get(&list(), &token).await;
        assert_eq!(a.status, 200, "request {i}");
        assert_eq!(a.headers["x-ratelimit-remaining"], (59 - i).to_string().as_str());
    }
    h.emu.clock().advance(Duration::from_secs(20));
    let refused = h.get(&list(), &token).await;
    assert_error(
        &refused,
        429,
        "RateLimitExceeded",
        "Rate limit exceeded. Please try again in 40 seconds",
    );
    assert_eq!(refused.headers["retry-after"], "40");
    assert_eq!(refused.headers["x-ratelimit-limit"], "60");
    // Another client IP (behind a proxy) has its own bucket; /api/status is exempt.
    let other = h
        .http
        .get(h.url(&list()))
        .bearer_auth(&token)
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(h.send(Method::GET, "/api/status", None, None).await.status, 200);
    h.emu.clock().advance(Duration::from_secs(40));
    assert_eq!(h.get(&list(), &token).await.status, 200, "a new window");
    h.emu.set_rate_limit_mode(false);
    assert!(h.get(&list(), &token).await.headers.get("x-ratelimit-limit").is_none());
}
