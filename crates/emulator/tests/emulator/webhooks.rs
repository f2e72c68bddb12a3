//! Spec 5.1 to 5.4: signing against captured real deliveries, deliveries to a live receiver
//! checked with an independent HMAC, coalescing, glob matching, recorded status, the API.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use ikit_emulator::logic::signing;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::helpers::*;

const KEY: &str = "whsec-emulator-test";

struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A local receiver: `/hook*` answers 200, `/fail` answers 500.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn ok(
        State(tx): State<mpsc::UnboundedSender<Received>>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let status =
            if uri.path() == "/fail" { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
        let _ = tx.send(Received { path: uri.path().to_owned(), headers, body });
        status
    }
    let app = Router::new()
        .route("/hook", post(ok))
        .route("/hook2", post(ok))
        .route("/fail", post(ok))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery arrives")
        .expect("channel open")
}

/// The emulator's delivery log once it holds `n` entries (it is written after the receiver
/// answers, so it can trail the receiver by a moment).
async fn recorded(h: &Harness, n: usize) -> Vec<ikit_emulator::Delivery> {
    let wait = async {
        loop {
            let log = h.emu.webhook_deliveries();
            if log.len() >= n {
                return log;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("deliveries recorded")
}

fn independent_hmac(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn captured_real_deliveries_verify_with_the_signing_code() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/infisical-webhooks.json"
    ))
    .unwrap();
    let vectors: Value = serde_json::from_str(&text).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for v in vectors["vectors"].as_array().unwrap() {
        let header = v["x_infisical_signature"].as_str().unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let ok = signing::verify(header, v["secret"].as_str().unwrap().as_bytes(), body);
        if v["expect"] == "valid" {
            assert!(ok, "{header}");
            valid += 1;
            // The emulator's body builder reproduces the real bytes and header.
            let parsed: Value = serde_json::from_slice(body).unwrap();
            let project = &parsed["project"];
            let rebuilt = signing::payload_bytes(
                parsed["event"].as_str().unwrap(),
                &[
                    ("workspaceId", Some(project["workspaceId"].clone())),
                    ("environment", Some(project["environment"].clone())),
                    ("secretPath", Some(project["secretPath"].clone())),
                ],
                &[],
                parsed["timestamp"].as_i64().unwrap(),
            );
            assert_eq!(rebuilt, body);
            let ts = parsed["timestamp"].as_i64().unwrap();
            assert_eq!(
                signing::signature_header(ts, v["secret"].as_str().unwrap().as_bytes(), &rebuilt),
                header
            );
        } else {
            assert!(!ok, "{}", v["expect"]);
            invalid += 1;
        }
    }
    assert_eq!((valid, invalid), (5, 2));
}

fn seed_with_hooks(base: &str) -> Value {
    let mut seed = seed();
    seed["webhooks"] = json!([
        {"id": "00000000-0000-4000-8000-0000000000a1", "projectId": PROJECT, "environment": "dev", "secretPath": "/**", "url": format!("{base}/hook"), "secretKey": KEY},
        {"id": "00000000-0000-4000-8000-0000000000a2", "projectId": PROJECT, "environment": "dev", "secretPath": "/app/*", "url": format!("{base}/hook2"), "secretKey": KEY},
        {"id": "00000000-0000-4000-8000-0000000000a3", "projectId": PROJECT, "environment": "prod", "secretPath": "/**", "url": format!("{base}/fail")}
    ]);
    seed
}

#[tokio::test]
async fn deliveries_are_signed_coalesced_and_matched_by_glob() {
    let (base, mut rx) = receiver().await;
    let h =
        start_with(config(&seed_with_hooks(&base)).webhook_coalesce(Duration::from_secs(1))).await;
    let token = h.token().await;
    // A burst: three writes in /app, one in /.
    for key in ["A", "B", "C"] {
        let body = json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/app", "secretValue": key});
        assert_eq!(h.post(&format!("/api/v4/secrets/{key}"), Some(&token), body).await.status, 200);
    }
    let root =
        json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/", "secretValue": "r"});
    assert_eq!(h.post("/api/v4/secrets/ROOT", Some(&token), root).await.status, 200);
    let mut got = vec![next(&mut rx).await, next(&mut rx).await];
    got.sort_by(|a, b| a.body.cmp(&b.body));
    // /app matches "/**" only ("/app/*" needs a folder below /app); / matches "/**".
    assert_eq!(got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/hook", "/hook"]);
    for r in &got {
        assert_eq!(r.headers["user-agent"], "axios/1.7.4");
        assert_eq!(r.headers["content-type"], "application/json");
        let header = r.headers["x-infisical-signature"].to_str().unwrap();
        let (stamp, sig) = header.split_once(';').unwrap();
        assert_eq!(sig, independent_hmac(KEY, &r.body), "independent hmac over the raw body");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(stamp, format!("t={}", body["timestamp"]));
        assert_eq!(body["timestamp"], START_MS, "timestamps come from the emulator clock");
        let top: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(top, ["event", "project", "timestamp"]);
        let project: Vec<&str> =
            body["project"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            project,
            [
                "workspaceId",
                "projectId",
                "projectName",
                "environment",
                "environmentName",
                "secretPath",
                "changedBy",
                "changedByActorType"
            ]
        );
        assert_eq!(body["event"], "secrets.modified");
        assert_eq!(body["project"]["workspaceId"], PROJECT);
        assert_eq!(body["project"]["environmentName"], "Development");
        assert_eq!(body["project"]["changedBy"], "ci");
    }
    let paths: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["project"]["secretPath"].clone())
        .collect();
    assert_eq!(paths, [json!("/"), json!("/app")]);
    let log = recorded(&h, 2).await;
    assert_eq!(log.len(), 2, "one delivery per folder per burst");
    assert!(log.iter().all(|d| d.status == "success"));
    // A change one level below /app reaches the "/app/*" hook as well.
    let deep = json!({"projectId": PROJECT, "environment": "dev", "secretPath": "/app/deep", "secretValue": "x"});
    assert_eq!(h.post("/api/v4/secrets/D2", Some(&token), deep).await.status, 200);
    let mut pair = vec![next(&mut rx).await.path, next(&mut rx).await.path];
    pair.sort();
    assert_eq!(pair, ["/hook", "/hook2"]);
}

#[tokio::test]
async fn failures_are_recorded_on_the_hook() {
    let (base, mut rx) = receiver().await;
    let h = start_with(config(&seed_with_hooks(&base))).await;
    let token = h.token().await;
    let body = json!({"projectId": PROJECT, "environment": "prod", "secretValue": "p"});
    assert_eq!(h.post("/api/v4/secrets/P2", Some(&token), body).await.status, 200);
    let r = next(&mut rx).await;
    assert_eq!(r.path, "/fail");
    assert!(r.headers.get("x-infisical-signature").is_none(), "no key, no signature");
    let delivery = recorded(&h, 1).await.remove(0);
    assert_eq!(delivery.status, "failed");
    let list =
        h.get(&format!("/api/v1/webhooks?projectId={PROJECT}&environment=prod"), &token).await;
    assert_eq!(list.body["webhooks"][0]["lastStatus"], "failed");
    assert_eq!(
        list.body["webhooks"][0]["lastRunErrorMessage"],
        "Request failed with status code 500"
    );
}

#[tokio::test]
async fn webhook_api_and_test_event() {
    let (base, mut rx) = receiver().await;
    let h = start().await;
    let token = h.token().await;
    let created = h
        .post("/api/v1/webhooks", Some(&token), json!({"projectId": PROJECT, "environment": "staging", "webhookUrl": format!("{base}/hook"), "webhookSecretKey": KEY, "secretPath": "/shared"}))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["message"], "Successfully created webhook");
    let hook = &created.body["webhook"];
    assert!(hook.get("url").is_none() && hook.get("secretKey").is_none());
    assert_eq!(hook["environment"]["slug"], "staging");
    let id = hook["id"].as_str().unwrap().to_owned();
    let tested = h.post(&format!("/api/v1/webhooks/{id}/test"), Some(&token), json!({})).await;
    assert_eq!(tested.body["webhook"]["lastStatus"], "success");
    let r = next(&mut rx).await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["event"], "test");
    assert!(body["project"].get("changedBy").is_none());
    assert_eq!(
        r.headers["x-infisical-signature"].to_str().unwrap().split_once(';').unwrap().1,
        independent_hmac(KEY, &r.body)
    );
    // A failing-delivery fault: recorded as failed without contacting the receiver.
    h.emu.faults().fail_webhooks(Some(1));
    let failed = h.post(&format!("/api/v1/webhooks/{id}/test"), Some(&token), json!({})).await;
    assert_eq!(failed.body["webhook"]["lastStatus"], "failed");
    assert_eq!(failed.body["webhook"]["lastRunErrorMessage"], "emulated delivery failure");
    assert!(rx.try_recv().is_err());
    let list = h.get(&format!("/api/v1/webhooks?projectId={PROJECT}"), &token).await;
    assert_eq!(list.body["webhooks"][0]["url"], format!("{base}/hook"));
    let disabled = h
        .send(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(&token),
            Some(json!({"isDisabled": true})),
        )
        .await;
    assert_eq!(disabled.body["webhook"]["isDisabled"], true);
    let deleted =
        h.send(Method::DELETE, &format!("/api/v1/webhooks/{id}"), Some(&token), None).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        h.get(&format!("/api/v1/webhooks?projectId={PROJECT}"), &token).await.body["webhooks"],
        json!([])
    );
    let bad_url = h
        .post(
            "/api/v1/webhooks",
            Some(&token),
            json!({"projectId": PROJECT, "environment": "dev", "webhookUrl": "not a url"}),
        )
        .await;
    assert_eq!(bad_url.status, 422);
}

#[tokio::test]
async fn v2024_payloads_have_the_short_project_object() {
    let (base, mut rx) = receiver().await;
    let h =
        start_with(config(&seed_with_hooks(&base)).api_version(ikit_emulator::ApiVersion::V2024))
            .await;
    let token = h.token().await;
    let body = json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/", "secretValue": "v"});
    assert_eq!(h.post("/api/v3/secrets/raw/OLD", Some(&token), body).await.status, 200);
    let r = next(&mut rx).await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"event":"secrets.modified","project":{{"workspaceId":"{PROJECT}","environment":"dev","secretPath":"/"}},"timestamp":{START_MS}}}"#
        )
    );
}

/// The eight deliveries a real 2024-10 server made on loopback (a single create, update and
/// delete, a burst in `/app`, a batch, the test event): each verifies with the shared secret, its
/// `t=` is the body's timestamp, and the emulator's body builder reproduces the exact bytes.
#[tokio::test]
async fn real_2024_deliveries_verify_and_parse_and_the_emulator_sends_the_same_shape() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/infisical-webhooks-2024-10-real.json"
    ))
    .unwrap();
    let capture: Value = serde_json::from_str(&text).unwrap();
    let secret = capture["secret"].as_str().unwrap();
    let deliveries = capture["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 8);
    let mut events = Vec::new();
    for d in deliveries {
        let header = |name: &str| {
            d["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
                .map(|h| h[1].as_str().unwrap().to_owned())
                .unwrap()
        };
        let body = d["body"].as_str().unwrap();
        assert_eq!(hex::decode(d["bodyHex"].as_str().unwrap()).unwrap(), body.as_bytes());
        let signature = header("x-infisical-signature");
        let (stamp, hmac) = signature.split_once(';').unwrap();
        assert_eq!(hmac, independent_hmac(secret, body.as_bytes()), "{body}");
        assert!(signing::verify(&signature, secret.as_bytes(), body.as_bytes()));
        assert_eq!(
            (header("user-agent"), header("content-type")),
            ("axios/1.7.4".into(), "application/json".into())
        );
        let parsed: Value = serde_json::from_str(body).unwrap();
        let keys: Vec<&str> = parsed.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["event", "project", "timestamp"]);
        let project = &parsed["project"];
        let fields: Vec<&str> = project.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, ["workspaceId", "environment", "secretPath"]);
        let timestamp = parsed["timestamp"].as_i64().unwrap();
        assert_eq!(stamp, format!("t={timestamp}"));
        let rebuilt = signing::payload_bytes(
            parsed["event"].as_str().unwrap(),
            &[
                ("workspaceId", Some(project["workspaceId"].clone())),
                ("environment", Some(project["environment"].clone())),
                ("secretPath", Some(project["secretPath"].clone())),
            ],
            &[],
            timestamp,
        );
        assert_eq!(rebuilt, body.as_bytes());
        events.push((
            parsed["event"].as_str().unwrap().to_owned(),
            project["secretPath"].as_str().unwrap().to_owned(),
        ));
    }
    // The burst in /app arrived as one delivery; the test event names the hook's glob.
    assert_eq!(events.iter().filter(|(e, _)| e == "test").count(), 1);
    assert!(events.contains(&("test".to_owned(), "/**".to_owned())));
    // The emulator in 2024 mode sends the same body for the same hook.
    let (base, mut rx) = receiver().await;
    let mut seed = seed();
    seed["webhooks"] = json!([{"projectId": PROJECT, "environment": "dev", "secretPath": "/**",
                               "url": format!("{base}/hook"), "secretKey": secret}]);
    let h = start_with(config(&seed).api_version(ikit_emulator::ApiVersion::V2024)).await;
    let token = h.token().await;
    let write = json!({"workspaceId": PROJECT, "environment": "dev", "secretPath": "/app", "secretValue": "v"});
    for key in ["W2", "W3", "W4"] {
        assert_eq!(
            h.post(&format!("/api/v3/secrets/raw/{key}"), Some(&token), write.clone()).await.status,
            200
        );
    }
    let r = next(&mut rx).await;
    assert_eq!(
        String::from_utf8(r.body.to_vec()).unwrap(),
        format!(
            r#"{{"event":"secrets.modified","project":{{"workspaceId":"{PROJECT}","environment":"dev","secretPath":"/app"}},"timestamp":{START_MS}}}"#
        )
    );
    let sig = r.headers["x-infisical-signature"].to_str().unwrap();
    assert_eq!(sig, format!("t={START_MS};{}", independent_hmac(secret, &r.body)));
}
