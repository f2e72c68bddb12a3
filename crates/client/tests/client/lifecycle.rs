//! Token lifecycle against the emulator's TTL rules, with both clocks moved together.

use std::time::Duration;

use ikit_client::{AuthMethod, FolderQuery};
use ikit_emulator::ApiVersion;

use crate::support::{Harness, PROJECT, ua};

const LOGIN: &str = "/api/v1/auth/universal-auth/login";
const RENEW: &str = "/api/v1/auth/token/renew";
const MIN: Duration = Duration::from_secs(60);

fn query() -> FolderQuery {
    FolderQuery::new(PROJECT, "dev", "/app")
}

#[tokio::test]
async fn thirty_days_with_ttl_10_min_and_max_ttl_1_h_never_fail() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let total = Duration::from_secs(30 * 24 * 3600);
    // Irregular gaps under the 2-minute renewal window (80% to 100% of the TTL) so renewals
    // land at many offsets; a longer idle gap would simply mean a fresh login.
    let gaps = [97, 119, 83, 111, 101].map(Duration::from_secs);
    let mut elapsed = Duration::ZERO;
    let mut requests = 0u64;
    let mut failures = Vec::new();
    // Steps where the emulator saw a renewal and a login in the same call: the client falls back
    // to a login only when the server rejected its renewal.
    let mut rejected_renewals = Vec::new();
    let mut i = 0;
    // Time since the token was last issued. Only calls near the renewal window (8 minutes in)
    // can change anything, so earlier ones are skipped while the clocks still move: the run
    // sends about one call per token instead of five, and stays on the injected clocks.
    let mut token_age = Duration::MAX;
    let quiet = Duration::from_secs(8 * 60 - 30);
    while elapsed < total {
        if token_age >= quiet {
            let (logins_before, renewals_before) = (h.count("POST", LOGIN), h.count("POST", RENEW));
            if let Err(e) = client.fetch_folder(&query()).await {
                failures.push((elapsed.as_secs(), e.to_string()));
            }
            let (logins_now, renewals_now) = (h.count("POST", LOGIN), h.count("POST", RENEW));
            if (renewals_now > renewals_before && logins_now > logins_before)
                || renewals_now > renewals_before + 1
            {
                rejected_renewals.push(elapsed.as_secs());
            }
            if logins_now > logins_before || renewals_now > renewals_before {
                token_age = Duration::ZERO;
            }
            requests += 1;
        }
        let gap = gaps[i % gaps.len()];
        token_age = token_age.saturating_add(gap);
        i += 1;
        h.advance(gap);
        elapsed += gap;
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(h.count("GET", "/api/v4/secrets"), requests, "no request was retried");
    // Every renewal the emulator received was accepted: none was followed by a fallback login
    // (nor repeated), and no secrets request had to be sent again after a token error (the
    // GET count above equals the number of calls).
    assert!(
        rejected_renewals.is_empty(),
        "{} renewals rejected, first at +{:?} s",
        rejected_renewals.len(),
        rejected_renewals.first()
    );
    let logins = h.count("POST", LOGIN);
    let renewals = h.count("POST", RENEW);
    // A login at most every (max TTL - TTL - largest gap), at least every max TTL; the rest of
    // the time renewals every 8 to 10 minutes.
    let max_gap = gaps.iter().max().unwrap().as_secs();
    assert!(logins <= total.as_secs() / (3600 - 600 - max_gap) + 1, "{logins} logins");
    assert!(logins >= total.as_secs() / 3600, "{logins} logins");
    assert!(renewals >= 4 * logins, "{renewals} renewals for {logins} logins");
}

#[tokio::test]
async fn a_renewal_that_would_pass_max_ttl_is_replaced_by_a_login() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (1, 0));
    // Minute 8: 8 + 10 <= 60, a renewal.
    h.advance(MIN * 8);
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (1, 1));
    // Renew at 16, 24, 32, 40, 48.
    for _ in 0..5 {
        h.advance(MIN * 8);
        client.fetch_folder(&query()).await.unwrap();
    }
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (1, 6));
    // Minute 56: renewing would reach 66 > 60 and the server would destroy the token.
    h.advance(MIN * 8);
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (2, 6));
}

#[tokio::test]
async fn concurrent_callers_share_one_renewal() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.ensure_token().await.unwrap();
    h.advance(MIN * 9);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.fetch_folder(&query()).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (1, 1));
    assert_eq!(h.count("GET", "/api/v4/secrets"), 16);
}

#[tokio::test]
async fn a_token_the_server_calls_expired_triggers_one_login_and_a_retry() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.fetch_folder(&query()).await.unwrap();
    // Only the server clock moves (a skewed client clock): the client still trusts its token,
    // the server answers 403 TokenError for the expired JWT, the client logs in once and retries.
    h.emulator.clock().advance(MIN * 11);
    let folder = client.fetch_folder(&query()).await.unwrap();
    assert!(!folder.secrets.is_empty());
    assert_eq!(h.count("POST", LOGIN), 2);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 3);
}

#[tokio::test]
async fn a_failed_renewal_falls_back_to_a_login() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.fetch_folder(&query()).await.unwrap();
    h.emulator.faults().add(ikit_emulator::Fault::status(RENEW, 500).times(1));
    h.advance(MIN * 9);
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (2, 1));
    // The fresh token renews normally later.
    h.advance(MIN * 9);
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!((h.count("POST", LOGIN), h.count("POST", RENEW)), (2, 2));
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_login() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    client.fetch_folder(&query()).await.unwrap();
    client.revoke_token().await.unwrap();
    assert_eq!(h.count("POST", "/api/v1/auth/token/revoke"), 1);
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!(h.count("POST", LOGIN), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_login_times_out_for_everyone_and_never_wedges() {
    let h = Harness::start(ApiVersion::V2026).await;
    // Real time here: the point is the request timeout, which only real time can show.
    let config = h
        .config(ua())
        .with_timeouts(Duration::from_secs(1), Duration::from_millis(300))
        .with_retry(ikit_client::RetryPolicy {
            max_attempts: 1,
            ..ikit_client::RetryPolicy::default()
        });
    let client = ikit_client::Client::new(config).unwrap();
    h.emulator.faults().add(ikit_emulator::Fault::latency(LOGIN, Duration::from_secs(5)));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.fetch_folder(&query()).await }));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ikit_client::ClientError::Unavailable { status: None, ref reason } if reason.starts_with("request timed out: ")),
            "{err:?}"
        );
    }
    h.emulator.faults().clear();
    client.fetch_folder(&query()).await.unwrap();
    // Every caller tried its own login after the one before it failed; none hung.
    assert_eq!(h.count("POST", LOGIN), 5);
}

#[tokio::test]
async fn a_login_hit_by_a_server_error_is_retried() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    h.emulator.faults().add(ikit_emulator::Fault::status(LOGIN, 502).times(2));
    client.fetch_folder(&query()).await.unwrap();
    assert_eq!(h.count("POST", LOGIN), 3);
}

/// Infisical's default identity (TTL = max TTL = 30 days): a renewal can never extend the token,
/// so the server refuses every one. The client must log in again near expiry and never send a
/// renewal, let alone loop on refused ones.
#[tokio::test]
async fn with_the_default_ttl_equal_to_max_ttl_the_client_logs_in_again_and_never_renews() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(AuthMethod::universal("ua-default-ttl-id", "ua-default-ttl-secret"));
    let day = Duration::from_secs(24 * 3600);
    let days = 120u32;
    let mut failures = Vec::new();
    for d in 0..days {
        if let Err(e) = client.fetch_folder(&query()).await {
            failures.push((d, e.to_string()));
        }
        h.advance(day);
    }
    assert!(failures.is_empty(), "{} failed reads, first: {:?}", failures.len(), failures.first());
    assert_eq!(h.count("POST", RENEW), 0, "a renewal is never sent when TTL = max TTL");
    let logins = h.count("POST", LOGIN);
    // One login per token lifetime (renewed at 80% of 30 days, i.e. every 24 days at most and
    // at least every 30): a login storm would show as one per read.
    assert!((4..=6).contains(&logins), "{logins} logins in {days} days");
    assert_eq!(h.count("GET", "/api/v4/secrets"), u64::from(days), "no read was sent twice");
}
