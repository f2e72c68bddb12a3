//! R3: the access token over 1,000 simulated days, TTL 6 h and max TTL 3 days, with calls at
//! irregular gaps, some longer than the TTL. No call fails, no renewal is refused (the emulator
//! destroys a token renewed past its max TTL, so a refused renewal shows as a renewal and a login
//! in one call), and no call wedges (each is bounded in real time).
//! (ikit-client's `thirty_days_with_ttl_10_min_and_max_ttl_1_h_never_fail` does 30 days at
//! renewal-window spacing.)

use std::time::Duration;

use ikit_client::{AuthMethod, Client, FolderQuery};
use serde_json::json;

use crate::support::{Clocks, JumpSleeper, PROJECT, client_config, emulator, seed_with};

const LOGIN: &str = "/api/v1/auth/universal-auth/login";
const RENEW: &str = "/api/v1/auth/token/renew";
const DAYS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_a_thousand_days_of_token_ttl_and_max_ttl() {
    let identity = json!({"id": "id-ttl", "name": "ttl", "clientId": "ttl-client",
                          "clientSecret": "ttl-client-secret", "accessTokenTTL": 6 * 3600,
                          "accessTokenMaxTTL": 3 * 86400, "projects": [PROJECT]});
    let emu = emulator(seed_with(vec![identity], vec![])).await;
    let clocks = Clocks::new(&emu);
    let sleeper = JumpSleeper::new(&clocks);
    let auth = AuthMethod::universal("ttl-client", "ttl-client-secret");
    let client = Client::new(client_config(&emu, &clocks, sleeper, auth)).expect("client");
    let query = FolderQuery::new(PROJECT, "dev", "/app");
    // Minutes: mostly inside the renewal window of a 6-hour token, sometimes past the TTL.
    let gaps = [293, 301, 337, 289, 311, 419, 297, 307].map(|m| Duration::from_secs(m * 60));
    let total = Duration::from_secs(DAYS * 86_400);
    let (mut elapsed, mut calls, mut i) = (Duration::ZERO, 0u64, 0usize);
    let mut failures = Vec::new();
    let mut refused_renewals = Vec::new();
    while elapsed < total {
        let before = (emu.request_count("POST", LOGIN), emu.request_count("POST", RENEW));
        let call = tokio::time::timeout(Duration::from_secs(10), client.fetch_folder(&query)).await;
        match call {
            Err(_) => panic!("a call wedged at +{} s", elapsed.as_secs()),
            Ok(Err(e)) => failures.push((elapsed.as_secs(), e.to_string())),
            Ok(Ok(_)) => {}
        }
        let after = (emu.request_count("POST", LOGIN), emu.request_count("POST", RENEW));
        if (after.1 > before.1 && after.0 > before.0) || after.1 > before.1 + 1 {
            refused_renewals.push(elapsed.as_secs());
        }
        calls += 1;
        let gap = gaps[i % gaps.len()];
        i += 1;
        clocks.advance(gap);
        elapsed += gap;
    }
    assert!(failures.is_empty(), "{} failed, first {:?}", failures.len(), failures.first());
    assert!(refused_renewals.is_empty(), "renewals refused at {refused_renewals:?}");
    assert_eq!(emu.request_count("GET", "/api/v4/secrets"), calls, "no call needed a retry");
    let (logins, renewals) = (emu.request_count("POST", LOGIN), emu.request_count("POST", RENEW));
    // At least one login per max TTL, and renewals doing most of the work in between.
    assert!(logins >= DAYS / 3, "{logins} logins");
    assert!(renewals > logins, "{renewals} renewals, {logins} logins");
    emu.shutdown().await;
}
