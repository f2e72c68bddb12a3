//! Issue 11: answers as the real 2024-10 server gave them on loopback (status, `error`,
//! message, body keys), and the 2026 counterpart where the spec rules it.

use ikit_emulator::ApiVersion;
use serde_json::{Value, json};

use crate::helpers::*;

fn body_keys(body: &Value) -> Vec<&str> {
    body.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default()
}

#[tokio::test]
async fn item6_an_unknown_client_id_is_404_in_2024_and_401_in_2026() {
    let old = start_version(ApiVersion::V2024).await;
    let a = old.login_as("nobody", "x").await;
    assert_eq!(
        a.body,
        json!({"statusCode": 404, "message": "No identity with specified client ID was found", "error": "NotFound"})
    );
    assert_eq!(body_keys(&a.body), ["statusCode", "message", "error"]);
    let new = start().await;
    assert_error(
        &new.login_as("nobody", "x").await,
        401,
        "UnauthorizedError",
        "Invalid credentials",
    );
}
