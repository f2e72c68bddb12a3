//! The `get` example, run as a process against the emulator.

use std::path::PathBuf;
use std::process::{Command, Output};

use ikit_emulator::ApiVersion;

use crate::support::{DB_VALUE, PROJECT, emulator};

/// The `get` example that `cargo test` built beside this binary. `cargo test` leaves it as
/// `examples/get-<hash>`; only `cargo build --example get` adds a plain `examples/get`, which may
/// be older. The newest of them is the one built for this test run. (`cargo test --all-targets`
/// builds examples as test harnesses instead, which is why `make test` does not use it.)
fn example_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let suffix = std::env::consts::EXE_SUFFIX;
    let built = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no examples folder at {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(suffix).unwrap_or(&name);
            let hashed = stem.strip_prefix("get-").is_some_and(|hash| {
                !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit())
            });
            (stem == "get" || hashed) && (suffix.is_empty() || name.ends_with(suffix))
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max();
    built.map(|(_, path)| path).unwrap_or_else(|| panic!("no `get` example in {}", dir.display()))
}

async fn run(envs: Vec<(&'static str, String)>, args: &'static [&'static str]) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(example_path());
        cmd.env_clear().args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_only_the_value_and_the_source() {
    let emu = emulator(ApiVersion::V2026).await;
    // The example uses the system clock; the emulator clock is pinned in the near future, which
    // only matters for expiry, not for one read.
    let envs = vec![
        ("INFISICAL_API_URL", emu.base_url()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "ua-client-id".to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-client-secret-1".to_owned()),
        ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
    ];
    let ok = run(envs.clone(), &["/app/DB_URL"]).await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8(ok.stdout).unwrap(), format!("{DB_VALUE}\n"));
    assert_eq!(String::from_utf8(ok.stderr).unwrap().trim(), "source=network age=0s");

    let missing = run(envs.clone(), &["/app/NOPE"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");

    let no_project: Vec<_> =
        envs.into_iter().filter(|(k, _)| *k != "INFISICAL_PROJECT_ID").collect();
    let bad = run(no_project, &["/app/DB_URL"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8(bad.stderr).unwrap().contains("INFISICAL_PROJECT_ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_snapshot_when_the_server_is_unreachable() {
    use base64::Engine as _;
    let emu = emulator(ApiVersion::V2026).await;
    let dir = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let envs = vec![
        ("INFISICAL_API_URL", emu.base_url()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "ua-client-id".to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-client-secret-1".to_owned()),
        ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
        ("IKIT_SNAPSHOT_DIR", dir.path().join("snap").display().to_string()),
        ("IKIT_SNAPSHOT_KEY", key),
    ];
    let online = run(envs.clone(), &["/app/DB_URL"]).await;
    assert!(online.status.success(), "{}", String::from_utf8_lossy(&online.stderr));
    assert_eq!(String::from_utf8(online.stderr).unwrap().trim(), "source=network age=0s");
    emu.shutdown().await;

    let offline = run(envs.clone(), &["/app/DB_URL"]).await;
    let stderr = String::from_utf8(offline.stderr).unwrap();
    assert!(offline.status.success(), "{stderr}");
    assert_eq!(String::from_utf8(offline.stdout).unwrap(), format!("{DB_VALUE}\n"));
    // The outage is logged (a warning, the default level), then the source is the last line.
    assert!(stderr.contains("giving up after retries"), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("source=snapshot age="), "{stderr}");

    // Without the snapshot key the same read fails with a one-line reason.
    let no_key: Vec<_> = envs.into_iter().filter(|(k, _)| *k != "IKIT_SNAPSHOT_KEY").collect();
    let refused = run(no_key, &["/app/DB_URL"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8(refused.stderr).unwrap().contains("IKIT_SNAPSHOT_KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_help_and_refuses_stray_arguments() {
    let help = run(vec![], &["--help"]).await;
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.starts_with("usage: get /folder/KEY"), "{text}");
    assert!(text.contains("IKIT_SNAPSHOT_KEY") && text.contains("RUST_LOG"), "{text}");

    let stray = run(vec![], &["/app/DB_URL", "/app/REF"]).await;
    assert_eq!(stray.status.code(), Some(1));
    assert!(String::from_utf8(stray.stderr).unwrap().contains("usage: get"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_rust_log_and_pretty_logs_carry_no_colour_codes_into_a_pipe() {
    let emu = emulator(ApiVersion::V2026).await;
    let envs = vec![
        ("INFISICAL_API_URL", emu.base_url()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "ua-client-id".to_owned()),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-client-secret-1".to_owned()),
        ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
        ("RUST_LOG", "ikit_client=info".to_owned()),
        ("IKIT_LOG_FORMAT", "pretty".to_owned()),
    ];
    let out = run(envs, &["/app/DB_URL"]).await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("logged in to infisical"), "RUST_LOG is honoured: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes in a pipe: {stderr:?}");
    assert!(!stderr.contains(DB_VALUE), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{DB_VALUE}\n"));
}
