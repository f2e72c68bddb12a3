//! Webhook bodies and signatures (spec 5.2, 5.4): the JSON bytes in the server's key order and
//! `x-infisical-signature: t=<ms>;<hex hmac-sha256(secretKey, body)>`, signed through
//! `ikit_common::webhook_signature`. No IO.

use ikit_common::webhook_signature;
use serde_json::{Map, Value};

/// The `x-infisical-signature` header value for a body sent at `timestamp_ms`: the same signer
/// the webhook service verifies with, so the emulator cannot drift from it.
pub fn signature_header(timestamp_ms: i64, secret: &[u8], body: &[u8]) -> String {
    webhook_signature::sign(timestamp_ms, secret, body)
}

/// Checks a `t=<ms>;<hex>` (or `sha256=<hex>`) header against the raw body, in constant time,
/// whatever its timestamp: the emulator checks the signature, not freshness.
pub fn verify(header: &str, secret: &[u8], body: &[u8]) -> bool {
    let any_time = std::time::Duration::from_millis(i64::MAX.unsigned_abs());
    webhook_signature::verify_at(header, body, &[secret], 0, any_time).is_ok()
}

/// Serialises `{"event", "project": {...}, <extra>..., "timestamp"}` with `timestamp` last, the
/// way `JSON.stringify({...eventBody, timestamp})` does. `project` keeps the caller's field
/// order; fields that are `None` are left out, as `JSON.stringify` drops `undefined`.
pub fn payload_bytes(
    event: &str,
    project: &[(&str, Option<Value>)],
    extra: &[(&str, Value)],
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("event".to_owned(), Value::from(event));
    let fields: Map<String, Value> =
        project.iter().filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v))).collect();
    body.insert("project".to_owned(), Value::Object(fields));
    for (k, v) in extra {
        body.insert((*k).to_owned(), v.clone());
    }
    body.insert("timestamp".to_owned(), Value::from(timestamp_ms));
    serde_json::to_vec(&Value::Object(body)).expect("json values always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_real_body_bytes() {
        let body = payload_bytes(
            "secrets.modified",
            &[
                ("workspaceId", Some("db7d3035-0a4b-48dc-a2e0-a3766e998ada".into())),
                ("projectId", None),
                ("environment", Some("dev".into())),
                ("secretPath", Some("/".into())),
            ],
            &[],
            1795341461073,
        );
        let want = r#"{"event":"secrets.modified","project":{"workspaceId":"db7d3035-0a4b-48dc-a2e0-a3766e998ada","environment":"dev","secretPath":"/"},"timestamp":1795341461073}"#;
        assert_eq!(String::from_utf8(body.clone()).unwrap(), want);
        // The first captured delivery of shared/vectors/infisical-webhooks.json.
        assert_eq!(
            signature_header(1795341461073, b"whsec-test-123", &body),
            "t=1795341461073;28c68726b6e72d0a896aa472359cb61b18db3c1c564f669fa5f78c5ffc8ea1f7"
        );
    }

    #[test]
    fn verify_rejects_tampering_and_malformed_headers() {
        let body = b"{\"a\":1}";
        let header = signature_header(5, b"k", body);
        assert!(verify(&header, b"k", body));
        assert!(!verify(&header, b"k2", body));
        assert!(!verify(&header, b"k", b"{\"a\":2}"));
        assert!(!verify(&header.replace("t=", "x="), b"k", body));
        assert!(!verify("t=5", b"k", body));
        assert!(!verify("t=5;zz", b"k", body));
    }
}
