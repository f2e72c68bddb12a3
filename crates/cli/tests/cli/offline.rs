//! Infisical unreachable: `run` serves the encrypted offline snapshot and says so, or uses the
//! `--fallback-env` file and says so; with neither it fails clearly.

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
