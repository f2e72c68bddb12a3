//! The binary refuses bad configuration with exit code 64, naming every bad field.

#[test]
fn bad_configuration_exits_64_naming_every_bad_field() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ikit-webhook"))
        .env_clear()
        .env("IKIT_WEBHOOK_WINDOW", "soon")
        .env("IKIT_WEBHOOK_STATE_KEY", "too-short-state-key")
        .env("IKIT_DATABASE_URL", "mysql://nope")
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "webhook.secret",
        "webhook.window",
        "webhook.state_key",
        "database.url",
        "infisical.project_id",
    ] {
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }
    assert!(!stderr.contains("too-short-state-key"), "a secret was echoed: {stderr}");
}
