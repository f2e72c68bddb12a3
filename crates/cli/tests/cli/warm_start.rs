//! P6, start-up cost of `ikit run -- true` (`make bench-cli`; run with `--nocapture`:
//! `cargo test -p ikit --test cli warm_start -- --nocapture`). Prints medians and ratios to
//! baselines measured in the same run, rounds interleaved so drift on a shared machine hits both
//! sides alike:
//! - warm (token cached under `~/.ikit/`, the listing revalidated from the snapshot: a 304)
//!   against `true` alone;
//! - cold (empty `HOME`: login + one listing) against the same two requests made by hand: `curl`
//!   logging in, `curl` listing with the token, then `true` (three process starts, the token taken
//!   from the login answer by the test in between, which costs next to nothing).
//!
//! Asserts what makes warm warm (no login, no listing body) and cold cold (one login, one body),
//! never a duration. The `ikit` measured is `target/release/ikit` when it exists and is newer than
//! the debug binary cargo built for this test (`cargo build --release -p ikit` first), else that
//! debug binary; the table says which.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{CLIENT_ID, CLIENT_SECRET, Harness, PROJECT};

const ROUNDS: usize = 15;
const LISTING: &str = "/api/v4/secrets";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The `ikit` to measure and its profile: a release build when one is at least as new as the
/// debug binary under test (an older one may predate the code being measured).
fn ikit_binary() -> (PathBuf, &'static str) {
    let debug = PathBuf::from(env!("CARGO_BIN_EXE_ikit"));
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let release = debug
        .parent()
        .and_then(|dir| dir.parent())
        .map(|target| target.join("release").join(debug.file_name().expect("a file name")));
    if let Some(release) = release
        && let (Some(r), Some(d)) = (modified(&release), modified(&debug))
        && r >= d
    {
        return (release, "release");
    }
    (debug, "debug")
}

/// Runs a command to its end, off the runtime's threads (the emulator answers on them).
async fn timed(mut command: Command) -> (Duration, std::process::Output) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = command.output().expect("the command runs");
        (started.elapsed(), output)
    })
    .await
    .unwrap()
}

/// What a user pays by hand: `curl` logs in, `curl` lists with the token, then `true`.
async fn by_hand(url: &str) -> Duration {
    let body = serde_json::json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET});
    let mut login = Command::new("curl");
    login.args(["-sS", "--fail", "-X", "POST", "-H", "Content-Type: application/json"]);
    login.args(["--data", &body.to_string(), &format!("{url}/api/v1/auth/universal-auth/login")]);
    let (login_took, login) = timed(login).await;
    assert!(login.status.success(), "curl login: {}", String::from_utf8_lossy(&login.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&login.stdout).unwrap();
    let token = answer["accessToken"].as_str().expect("an access token");

    let mut list = Command::new("curl");
    list.args([
        "-sS",
        "--fail",
        "-o",
        "/dev/null",
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    list.arg(format!(
        "{url}{LISTING}?projectId={PROJECT}&environment=dev&secretPath=%2F\
         &expandSecretReferences=true&includeImports=true"
    ));
    let (list_took, list) = timed(list).await;
    assert!(list.status.success(), "curl list: {}", String::from_utf8_lossy(&list.stderr));
    let (true_took, done) = timed(Command::new("true")).await;
    assert!(done.status.success());
    login_took + list_took + true_took
}

fn curl_found() -> bool {
    Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_start_against_true_alone_and_the_cold_path_against_login_and_list_by_hand() {
    let h = Harness::start().await;
    let emulator = h.emulator.as_ref().unwrap();
    let logins = || emulator.login_requests("universal-auth").len();
    let bodies =
        || emulator.request_count("GET", LISTING) - emulator.not_modified_count("GET", LISTING);
    let (binary, profile) = ikit_binary();
    let ikit = |env: &std::collections::BTreeMap<String, String>| {
        let mut command = Command::new(&binary);
        command
            .args(["run", "--", "true"])
            .current_dir(h.work.path())
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null());
        command
    };
    let curl = curl_found();

    // The warm state: one run leaves the token and the snapshot under HOME.
    let (_, first) = timed(ikit(&h.env())).await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    let (mut alone, mut warm, mut cold, mut hand) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (took, done) = timed(Command::new("true")).await;
        assert!(done.status.success());
        alone.push(took);

        let (logins_before, bodies_before) = (logins(), bodies());
        let (took, run) = timed(ikit(&h.env())).await;
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        warm.push(took);
        assert_eq!(logins(), logins_before, "warm: no login");
        assert_eq!(bodies(), bodies_before, "warm: no listing body (a 304)");

        let home = tempfile::tempdir().unwrap();
        let mut env = h.env();
        env.insert("HOME".into(), home.path().to_str().unwrap().to_owned());
        let (logins_before, bodies_before) = (logins(), bodies());
        let (took, run) = timed(ikit(&env)).await;
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        cold.push(took);
        assert_eq!(logins(), logins_before + 1, "cold: one login");
        assert_eq!(bodies(), bodies_before + 1, "cold: one listing downloaded");

        if curl {
            hand.push(by_hand(&h.url).await);
        }
    }

    let (alone, warm, cold) = (median(alone), median(warm), median(cold));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "P6 ikit run -- true, median of {ROUNDS} interleaved rounds ({profile} build {}; \
         emulator on loopback, shared machine):",
        binary.display()
    );
    println!("  {:<44} {:>9} {:>16} {:>8}  goal", "figure", "ms", "baseline ms", "ratio");
    println!("  {:<44} {:>9.2}", "true alone", ms(alone));
    println!(
        "  {:<44} {:>9.2} {:>16.2} {:>7.2}x  <= 20 ms",
        "warm (cached token, 304 from the snapshot)",
        ms(warm),
        ms(alone),
        ratio(warm, alone)
    );
    if hand.is_empty() {
        println!(
            "  {:<44} {:>9.2}   (no curl: the by-hand baseline was not measured)",
            "cold (login + list)",
            ms(cold)
        );
    } else {
        let hand = median(hand);
        println!(
            "  {:<44} {:>9.2} {:>16.2} {:>7.2}x  <= 1.05x",
            "cold (login + list) vs curl, curl, true",
            ms(cold),
            ms(hand),
            ratio(cold, hand)
        );
    }
}
