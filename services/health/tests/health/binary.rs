//! The binary: bad settings exit 64 naming every bad field, without echoing a token.

use std::process::Command;

#[test]
fn bad_settings_exit_64_and_name_every_bad_field() {
    let output = Command::new(env!("CARGO_BIN_EXE_ikit-health"))
        .env_clear()
        .env("INFISICAL_API_URL", "http://127.0.0.1:9")
        .env("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "id")
        .env("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "secret")
        .env("IKIT_HEALTH_ADDR", "not-an-address")
        .env("IKIT_JWT_ROTATION_INTERVAL", "sometimes")
        .env("IKIT_ADMIN_TOKEN_PREVIOUS", "leaky-short")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for field in ["listen.health", "keys.jwt_rotation_interval", "admin.token_previous"] {
        assert!(stderr.contains(field), "{field} not named in:\n{stderr}");
    }
    assert!(!stderr.contains("leaky-short"), "a token was echoed:\n{stderr}");
}
