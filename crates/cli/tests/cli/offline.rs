//! Infisical unreachable: `run` serves the encrypted offline snapshot and says so, or uses the
//! `--fallback-env` file and says so; with neither it fails clearly. `secrets` reads serve the
//! snapshot too.

use crate::support::{API_KEY, DB_URL, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_emulator_stopped_run_serves_the_snapshot_and_says_so() {
    let mut h = Harness::start().await;
    let out = h.work_file("v");
    let script = format!("printf '%s' \"$API_KEY\" > {}", out.display());
    h.ikit(&["run", "--", "sh", "-c", &script]).await.ok();
    let snapshots = h.home.path().join(".ikit/snapshots");
    let files: Vec<_> = walk(&snapshots);
    assert!(!files.is_empty(), "a snapshot was written");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.windows(API_KEY.len()).any(|w| w == API_KEY.as_bytes()), "sealed");
    }

    h.stop_emulator().await;
    std::fs::remove_file(&out).unwrap();
    let run = h.ikit(&["run", "--", "sh", "-c", &script]).await;
    run.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), API_KEY);
    assert!(run.stderr.contains("offline snapshot"), "said on stderr: {}", run.stderr);
    run.leaks_none(&[API_KEY, DB_URL]);

    // a snapshot older than --max-stale is not served
    let run = h.ikit(&["run", "--max-stale", "0s", "--", "true"]).await;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
}

/// `secrets` and `secrets get` read through the same snapshot as `run`: offline they print the
/// last-good values with the same warning on stderr, and refuse a copy older than --max-stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_emulator_stopped_secrets_reads_serve_the_snapshot_and_say_so() {
    let mut h = Harness::start().await;
    h.ikit(&["secrets", "get", "API_KEY", "--plain"]).await.ok();
    h.stop_emulator().await;

    let get = h.ikit(&["secrets", "get", "API_KEY", "--plain"]).await;
    get.ok();
    assert_eq!(get.stdout, format!("{API_KEY}\n"), "stdout holds only the value");
    assert!(get.stderr.contains("offline snapshot"), "said on stderr: {}", get.stderr);
    get.leaks_none(&[DB_URL]);

    let list = h.ikit(&["secrets", "-o", "json"]).await;
    list.ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let keys: Vec<&str> =
        listed.as_array().unwrap().iter().filter_map(|s| s["secretKey"].as_str()).collect();
    assert!(keys.contains(&"API_KEY") && keys.contains(&"DB_URL"), "{keys:?}");
    assert!(list.stderr.contains("offline snapshot"), "said on stderr: {}", list.stderr);

    let stale = h.ikit(&["secrets", "get", "API_KEY", "--max-stale", "0s"]).await;
    assert_eq!(stale.code, Some(1), "stderr: {}", stale.stderr);
    assert!(stale.stderr.contains("cannot list secrets"), "{}", stale.stderr);
    stale.leaks_none(&[API_KEY, DB_URL]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_snapshot_the_fallback_env_file_is_used_and_said() {
    let mut h = Harness::start().await;
    h.stop_emulator().await;
    let run = h.ikit(&["run", "--", "true"]).await;
    assert_eq!(run.code, Some(1), "unreachable and nothing to fall back on");
    assert!(run.stderr.contains("cannot read secrets"), "{}", run.stderr);

    let fallback = h.work_file(".env");
    std::fs::write(&fallback, "API_KEY='from the file'\n").unwrap();
    let out = h.work_file("v");
    let script = format!("printf '%s' \"$API_KEY\" > {}", out.display());
    let run = h.ikit(&["run", "--fallback-env", ".env", "--", "sh", "-c", &script]).await;
    run.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from the file");
    assert!(run.stderr.contains("fallback file .env"), "{}", run.stderr);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}
