//! R6: bad webhooks among a 10,000-request signed burst. Each bad kind gets its status; a forged,
//! stale or malformed delivery for a folder that really changed never makes an event; every
//! request is audited; and every real change comes out exactly once: nothing lost, nothing
//! doubled. (The per-kind status, code and audit row are also pinned by ikit-webhook's
//! `each_rejection_has_its_status_an_audit_row_and_queues_nothing`.)

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use ikit_common::webhook_signature::sign;
use serde_json::json;

use crate::hooks::{HOOK_SECRET, HookStack, modified};
use crate::support::{PROJECT, START_MS, eventually, seed_with};

const FOLDERS: usize = 40;
const BURST: usize = 10_000;
const IN_FLIGHT: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Good,
    Forged,
    Replayed,
    Stale,
    Malformed,
    Unknown,
    Oversized,
    Unsigned,
}

impl Kind {
    fn expected(self) -> u16 {
        match self {
            Kind::Good | Kind::Unknown => 202,
            Kind::Forged | Kind::Stale | Kind::Unsigned => 401,
            Kind::Replayed => 409,
            Kind::Malformed => 400,
            Kind::Oversized => 413,
        }
    }
}

/// Request `i` of the run: a good delivery, except every 50th which is one of the bad kinds.
fn request(i: usize) -> (Kind, Option<String>, Vec<u8>) {
    let ts = START_MS + i as i64;
    let bad = [
        Kind::Forged,
        Kind::Replayed,
        Kind::Stale,
        Kind::Malformed,
        Kind::Unknown,
        Kind::Oversized,
        Kind::Unsigned,
    ];
    let kind = if i % 50 == 49 { bad[(i / 50) % bad.len()] } else { Kind::Good };
    let secret = HOOK_SECRET.as_bytes();
    match kind {
        Kind::Good => {
            let body = modified(ts, &format!("/b{}", i % FOLDERS));
            (kind, Some(sign(ts, secret, body.as_bytes())), body.into_bytes())
        }
        Kind::Forged => {
            let body = modified(ts, "/forged");
            (kind, Some(sign(ts, b"a-guessed-secret", body.as_bytes())), body.into_bytes())
        }
        Kind::Replayed => {
            // The exact bytes of good request 0, accepted long before.
            let body = modified(START_MS, "/b0");
            (kind, Some(sign(START_MS, secret, body.as_bytes())), body.into_bytes())
        }
        Kind::Stale => {
            let old = ts - 301_000;
            let body = modified(old, "/forged");
            (kind, Some(sign(old, secret, body.as_bytes())), body.into_bytes())
        }
        Kind::Malformed => {
            let body = format!("{{\"event\":\"secrets.modified\",\"project\":{ts}");
            (kind, Some(sign(ts, secret, body.as_bytes())), body.into_bytes())
        }
        Kind::Unknown => {
            let body = json!({"event": "secrets.reminder-expired",
                              "project": {"workspaceId": PROJECT, "environment": "dev", "secretPath": "/forged"},
                              "timestamp": ts})
            .to_string();
            (kind, Some(sign(ts, secret, body.as_bytes())), body.into_bytes())
        }
        Kind::Oversized => {
            let mut body = modified(ts, "/forged").into_bytes();
            body.resize(1024 * 1024 + 1, b' ');
            (kind, Some(sign(ts, secret, &body)), body)
        }
        Kind::Unsigned => (kind, None, modified(ts, "/forged").into_bytes()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_bad_webhooks_in_a_10000_request_signed_burst() {
    let mut secrets: Vec<serde_json::Value> = (0..FOLDERS)
        .map(|f| json!({"projectId": PROJECT, "environment": "dev", "path": format!("/b{f}"), "key": "V", "value": "0"}))
        .collect();
    secrets.push(json!({"projectId": PROJECT, "environment": "dev", "path": "/forged", "key": "V", "value": "0"}));
    let stack = Arc::new(HookStack::start(seed_with(vec![], secrets)).await);
    let app = Arc::new(stack.app(&[]).await);
    // The service's clock at the end of the burst's timestamps: all within the 5-minute window.
    stack.clock.advance(BURST as i64);

    // Every folder really changed, /forged included: only a good delivery may turn that into
    // an event.
    for f in 0..FOLDERS {
        stack.update(&format!("/b{f}"), "V", "1").await;
    }
    stack.update("/forged", "V", "1").await;

    // Request 0 first, so the replays that follow are replays of something accepted.
    let (_, sig, body) = request(0);
    assert_eq!(stack.post_raw(&app, sig.as_deref(), body).await, 202);
    let results: Vec<(usize, Kind, u16)> = futures_util::stream::iter(1..BURST)
        .map(|i| {
            let (stack, app) = (stack.clone(), app.clone());
            async move {
                let (kind, sig, body) = request(i);
                (i, kind, stack.post_raw(&app, sig.as_deref(), body).await)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let wrong: Vec<_> =
        results.iter().filter(|(_, kind, status)| *status != kind.expected()).collect();
    assert!(wrong.is_empty(), "{} wrong statuses, first {:?}", wrong.len(), wrong.first());
    for (_, kind, _) in &results {
        *per_kind.entry(*kind).or_default() += 1;
    }
    assert_eq!(per_kind.len(), 8, "every kind was sent: {per_kind:?}");

    // Every real change comes out exactly once; the forged folder never does.
    let events = eventually("an event for every changed folder", || {
        let stack = stack.clone();
        async move {
            let events = stack.stored_events().await;
            (events.len() >= FOLDERS && stack.queued().await == 0).then_some(events)
        }
    })
    .await;
    let mut folders: Vec<String> = events
        .iter()
        .map(|(_, e)| {
            assert_eq!(
                (e["key"].as_str(), e["kind"].as_str()),
                (Some("V"), Some("updated")),
                "{e}"
            );
            e["folder"].as_str().expect("folder").to_owned()
        })
        .collect();
    folders.sort();
    let mut want: Vec<String> = (0..FOLDERS).map(|f| format!("/b{f}")).collect();
    want.sort();
    assert_eq!(folders, want, "one event per changed folder, none for /forged");

    // Every request audited, with the status it got.
    let rows = HookStack::audit_rows(&app).await;
    assert_eq!(rows.len(), BURST, "one audit row per request");
    let accepted = rows.iter().filter(|r| r.event.details["status"] == json!(202)).count();
    assert_eq!(accepted, 1 + per_kind[&Kind::Good] + per_kind[&Kind::Unknown]);
    let app = Arc::try_unwrap(app).ok().expect("sole owner");
    app.shutdown().await;
}
