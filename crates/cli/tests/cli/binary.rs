//! The `ikit` binary: `ikit dev` prints the URLs, serves, and stops cleanly on SIGTERM.

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ikit_dev_prints_the_urls_serves_and_stops_on_sigterm() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("dev.json");
    let any = "127.0.0.1:0";
    let mut child = Command::new(env!("CARGO_BIN_EXE_ikit"))
        .args(["dev", "--emulator-addr", any, "--webhook-addr", any, "--health-addr", any])
        .arg("--state-file")
        .arg(&state_file)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ikit runs");
    // the state file is written once everything is up
    let mut state = None;
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&state_file) {
            state = serde_json::from_str::<serde_json::Value>(&text).ok();
            if state.is_some() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let state = state.expect("the state file appears");
    let health_url = state["health_url"].as_str().unwrap().to_owned();
    let r = reqwest::get(format!("{health_url}/api/v1/infisical/health")).await.unwrap();
    assert_eq!(r.status(), 200);

    let killed = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        (status, out)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "a clean stop on SIGTERM");
    assert!(status.1.contains(&health_url), "the URLs are printed:\n{}", status.1);
    assert!(status.1.contains("Try next:"));
    assert!(reqwest::get(format!("{health_url}/healthz")).await.is_err(), "nothing listens after");
}
