//! `--data FILE` persistence across restarts, and the binary itself.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state.json");
    let h = start_with(config(&seed()).data_file(&data)).await;
    let token = h.token().await;
    let body = json!({"projectId": PROJECT, "environment": "dev", "secretValue": "kept"});
    assert_eq!(h.post("/api/v4/secrets/PERSISTED", Some(&token), body).await.status, 200);
    h.emu.shutdown().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Restart with an empty seed: the data file wins, and the old token still works.
    let restarted = start_with(config(&json!({})).data_file(&data)).await;
    let a = restarted
        .get(&format!("/api/v4/secrets/PERSISTED?projectId={PROJECT}&environment=dev"), &token)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["secret"]["secretValue"], "kept");
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("state.json")], "no temp files left behind");
}

#[test]
fn the_binary_serves_a_seed_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("seed.json");
    std::fs::write(&seed_file, seed().to_string()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ikit-emulator"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--admin-token",
            "adm",
            "--api-version",
            "2024",
            "--webhook-delay-ms",
            "10",
        ])
        .arg("--seed")
        .arg(&seed_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let url = first_line(&mut child.0);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, v4, admin) = rt.block_on(async {
        let http = reqwest::Client::new();
        let status = http.get(format!("{url}/api/status")).send().await.unwrap().status();
        let v4 = http.get(format!("{url}/api/v4/secrets")).send().await.unwrap().status();
        let admin = http
            .get(format!("{url}/__emulator/clock"))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap()
            .status();
        (status, v4, admin)
    });
    assert_eq!((status.as_u16(), v4.as_u16(), admin.as_u16()), (200, 404, 200));
    let killed = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status().unwrap();
    assert!(killed.success());
    assert!(child.0.wait().unwrap().success(), "exits 0 on SIGTERM");
}

/// The announced URL. A generous bound turns a binary that never announces into a failure instead
/// of a suite that hangs; it is not a timing assertion (start-up time is measured by `make bench`).
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("the emulator announced no URL");
    line.trim().to_owned()
}

/// Kills the child when a failed assertion unwinds, so no emulator outlives its test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_bad_seed_is_refused_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("seed.json");
    std::fs::write(&seed_file, r#"{"projects": [], "unknownKey": 1}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ikit-emulator"))
        .args(["--addr", "127.0.0.1:0", "--admin-token", "adm", "--seed"])
        .arg(&seed_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid seed"));
}
