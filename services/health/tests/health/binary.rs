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

/// The image's HEALTHCHECK: `ikit-health --healthcheck` exits 0 against a live instance and 1
/// once it is gone, with no other configuration than the listen address.
#[tokio::test]
async fn healthcheck_flag_probes_the_running_service() {
    let emulator = crate::support::emulator(None).await;
    let app = crate::support::spawn_app(crate::support::Options::new(&emulator)).await;
    let addr = app.base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    // off the runtime's thread, so the service keeps answering while the probe waits
    let probe = |addr: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_ikit-health"))
                .arg("--healthcheck")
                .env_clear()
                .env("IKIT_HEALTH_ADDR", addr)
                .output()
                .expect("the binary runs")
        })
    };
    let live = probe(addr.clone()).await.expect("probe task");
    assert_eq!(live.status.code(), Some(0), "{}", String::from_utf8_lossy(&live.stderr));
    app.stop().await;
    let gone = probe(addr).await.expect("probe task");
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect"));
}
