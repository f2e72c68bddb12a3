//! The receiving side: every rejection with its status, code and audit row, nothing queued;
//! every shared vector accepted and refused with one byte changed.

use std::time::Duration;

use ikit_common::audit::Outcome;
use ikit_common::webhook_signature::sign;
use serde_json::{Value, json};

use crate::support::{PROJECT, SECRET, START_MS, Stack, post};

const HOOK: &str = "/api/v1/infisical/webhook";

fn modified(ts: i64, env: &str, path: &str) -> String {
    json!({"event": "secrets.modified",
           "project": {"workspaceId": PROJECT, "environment": env, "secretPath": path},
           "timestamp": ts})
    .to_string()
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn each_rejection_has_its_status_an_audit_row_and_queues_nothing() {
    let stack = Stack::start().await;
    // Nothing becomes claimable for an hour, so the queue shows exactly what was accepted.
    let app =
        stack.app(&[("IKIT_WEBHOOK_BASELINE", "false"), ("IKIT_WEBHOOK_COALESCE", "1h")]).await;
    let now = START_MS;
    let body = modified(now, "dev", "/app");
    let good = sign(now, SECRET.as_bytes(), body.as_bytes());
    let stale_body = modified(now - 301_000, "dev", "/app");
    let stale = sign(now - 301_000, SECRET.as_bytes(), stale_body.as_bytes());
    let other_t = sign(now + 1, SECRET.as_bytes(), body.as_bytes());
    let forged = sign(now, b"not-the-secret", body.as_bytes());
    let junk = "{not json";
    let junk_sig = sign(now, SECRET.as_bytes(), junk.as_bytes());
    let huge = vec![b' '; 1024 * 1024 + 1];
    let huge_sig = sign(now, SECRET.as_bytes(), &huge);

    let cases: Vec<(&str, Vec<(&str, &str)>, Vec<u8>, u16, &str)> = vec![
        ("missing signature", vec![], body.clone().into_bytes(), 401, "signature_missing"),
        (
            "forged",
            vec![("x-infisical-signature", &forged)],
            body.clone().into_bytes(),
            401,
            "signature_mismatch",
        ),
        (
            "malformed header",
            vec![("x-infisical-signature", "t=1;zz")],
            body.clone().into_bytes(),
            401,
            "signature_malformed",
        ),
        (
            "stale",
            vec![("x-infisical-signature", &stale)],
            stale_body.clone().into_bytes(),
            401,
            "timestamp_outside_window",
        ),
        (
            "t differs from body",
            vec![("x-infisical-signature", &other_t)],
            body.clone().into_bytes(),
            401,
            "timestamp_mismatch",
        ),
        (
            "too large",
            vec![("x-infisical-signature", &huge_sig)],
            huge.clone(),
            413,
            "body_too_large",
        ),
        (
            "malformed json",
            vec![("x-infisical-signature", &junk_sig)],
            junk.as_bytes().to_vec(),
            400,
            "malformed_body",
        ),
    ];
    for (name, headers, body, want_status, want_code) in &cases {
        let (status, code) = code(post(&app, HOOK, headers, body.clone()).await).await;
        assert_eq!((status, code.as_str()), (*want_status, *want_code), "{name}");
    }
    assert_eq!(Stack::queued(&app).await, 0, "a rejected request queued something");

    // A chunked body with no length is cut at the limit too (raw HTTP: no client sets this up).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port())).await.unwrap();
        let head = format!(
            "POST {HOOK} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-infisical-signature: {huge_sig}\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 128 * 1024];
        for _ in 0..9 {
            let _ = tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
            let _ = tcp.write_all(&chunk).await;
            let _ = tcp.write_all(b"\r\n").await;
        }
        let mut answer = vec![0u8; 4096];
        let n = tcp.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("body_too_large"), "{text}");
    }

    // Accepted once, then a replay.
    let r = post(&app, HOOK, &[("x-infisical-signature", &good)], body.clone()).await;
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(Stack::queued(&app).await, 1);
    let (status, c) = code(
        post(&app, "/infisical/webhook", &[("x-infisical-signature", &good)], body.clone()).await,
    )
    .await;
    assert_eq!((status, c.as_str()), (409, "replayed"));
    assert_eq!(Stack::queued(&app).await, 1, "a replay queued something");

    // `test` answers 200, an unprocessed event 202; neither queues.
    for (event, want) in [("test", 200), ("secrets.reminder-expired", 202)] {
        let b = json!({"event": event, "project": {"workspaceId": PROJECT, "environment": "dev", "secretPath": "/"}, "timestamp": now}).to_string();
        let s = sign(now, SECRET.as_bytes(), b.as_bytes());
        assert_eq!(
            post(&app, HOOK, &[("x-infisical-signature", &s)], b).await.status().as_u16(),
            want,
            "{event}"
        );
    }
    assert_eq!(Stack::queued(&app).await, 1);

    // Every request is one audit row with its status and code, never the signature.
    let rows = Stack::audit_rows(&app).await;
    assert_eq!(rows.len(), cases.len() + 1 + 2 + 2, "{rows:#?}");
    for (i, (name, _, _, want_status, want_code)) in cases.iter().enumerate() {
        let d = &rows[i].event.details;
        assert_eq!(d["status"], json!(want_status), "{name}");
        assert_eq!(d["code"], json!(want_code), "{name}");
        assert_ne!(rows[i].event.outcome, Outcome::Success, "{name}");
    }
    let accepted = &rows[cases.len() + 1];
    assert_eq!(accepted.event.details["status"], json!(202));
    assert_eq!(accepted.event.target, format!("{PROJECT}:dev:/app"));
    assert_eq!(rows[cases.len() + 2].event.details["code"], json!("replayed"));
    for row in &rows {
        let text = serde_json::to_string(&row.event.details).unwrap();
        assert!(
            !text.contains(&good[16..]) && !text.contains(&forged[16..]),
            "signature in audit: {text}"
        );
    }
    // The binding metric counted them.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", app.port()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"infisical_webhook_events_total{event="secrets.modified",status="409"}"#),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_source_over_its_rate_gets_429_with_retry_after() {
    let stack = Stack::start().await;
    let app = stack
        .app(&[
            ("IKIT_WEBHOOK_BASELINE", "false"),
            ("IKIT_WEBHOOK_RATE_LIMIT", "1"),
            ("IKIT_WEBHOOK_RATE_BURST", "2"),
        ])
        .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let r = post(&app, HOOK, &[], "{}").await;
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(code(r).await.1, "rate_limited");
        }
    }
    assert_eq!(statuses, [401, 401, 429]);
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    let rows = Stack::audit_rows(&app).await;
    assert_eq!(rows.last().unwrap().event.details["status"], json!(429));
    app.shutdown().await;
}

/// (secret, header, body, valid) for every delivery of both shared vector files.
fn vectors() -> Vec<(String, String, Vec<u8>, bool)> {
    let mut out = Vec::new();
    let v: Value = serde_json::from_str(include_str!("data/infisical-webhooks.json")).unwrap();
    for c in v["vectors"].as_array().unwrap() {
        out.push((
            c["secret"].as_str().unwrap().to_owned(),
            c["x_infisical_signature"].as_str().unwrap().to_owned(),
            c["body"].as_str().unwrap().as_bytes().to_vec(),
            c["expect"] == "valid",
        ));
    }
    let real: Value =
        serde_json::from_str(include_str!("data/infisical-webhooks-2024-10-real.json")).unwrap();
    for d in real["deliveries"].as_array().unwrap() {
        let header = d["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("x-infisical-signature"))
            .map(|h| h[1].as_str().unwrap().to_owned())
            .unwrap();
        out.push((
            real["secret"].as_str().unwrap().to_owned(),
            header,
            hex::decode(d["bodyHex"].as_str().unwrap()).unwrap(),
            true,
        ));
    }
    out
}

#[tokio::test]
async fn every_shared_vector_is_accepted_in_its_window_and_refused_with_one_byte_changed() {
    let stack = Stack::start().await;
    // Both capture secrets at once, as during a rotation; a one-second window around each.
    let app = stack
        .app(&[
            ("IKIT_WEBHOOK_BASELINE", "false"),
            ("IKIT_WEBHOOK_SECRET", "whsec-test-123"),
            ("IKIT_WEBHOOK_SECRET_PREVIOUS", "whsec-real-2026-11-27"),
            ("IKIT_WEBHOOK_WINDOW", "1s"),
        ])
        .await;
    let all = vectors();
    assert_eq!(all.len(), 15);
    let mut accepted = 0;
    for (secret, header, body, valid) in &all {
        let t: i64 = header[2..header.find(';').unwrap()].parse().unwrap();
        stack.clock.set(t + 500);
        let h = [("x-infisical-signature", header.as_str())];
        let mut changed = body.clone();
        changed[body.len() / 2] ^= 0x01;
        let (status, c) = code(post(&app, HOOK, &h, changed).await).await;
        assert_eq!((status, c.as_str()), (401, "signature_mismatch"), "changed byte of {header}");
        let status = post(&app, HOOK, &h, body.clone()).await.status().as_u16();
        if *valid {
            let is_test = body.windows(14).any(|w| w == b"\"event\":\"test\"");
            assert_eq!(status, if is_test { 200 } else { 202 }, "{header}");
            accepted += 1;
        } else if secret == "whsec-test-124" {
            // Same bytes as the first vector, which is accepted already: a replay here; the
            // wrong-secret case itself is checked below with only that secret configured.
            assert_eq!(status, 409, "{header}");
        } else {
            assert_eq!(status, 401, "{header}");
        }
        // Outside the window the same delivery is refused.
        stack.clock.set(t + 1_500);
        assert_eq!(post(&app, HOOK, &h, body.clone()).await.status().as_u16(), 401);
    }
    assert_eq!(accepted, 13);
    app.shutdown().await;

    let (secret, header, body, _) = all.iter().find(|v| v.0 == "whsec-test-124").unwrap();
    let other = stack
        .app_named("b", &[("IKIT_WEBHOOK_BASELINE", "false"), ("IKIT_WEBHOOK_SECRET", secret)])
        .await;
    let t: i64 = header[2..header.find(';').unwrap()].parse().unwrap();
    stack.clock.set(t);
    let r = post(&other, HOOK, &[("x-infisical-signature", header)], body.clone()).await;
    assert_eq!(code(r).await, (401, "signature_mismatch".to_owned()));
    other.shutdown().await;
    let _ = Duration::ZERO;
}
