//! Start-up cost of `ikit run -- true`: warm (cached token, one listing request) against `true`
//! alone and the cold path (login + listing). Prints a table; run with `--nocapture`:
//! `cargo test -p ikit --test cli warm_start -- --nocapture`. Asserts what makes warm warm (no
//! login request), never a duration.

use std::time::{Duration, Instant};

use crate::support::Harness;

const ROUNDS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_start_against_true_alone_and_the_cold_path() {
    let h = Harness::start().await;
    let emulator = h.emulator.as_ref().unwrap();
    let logins = || emulator.login_requests("universal-auth").len();

    let mut alone = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let status = std::process::Command::new("true").status().unwrap();
        alone.push(started.elapsed());
        assert!(status.success());
    }

    let mut cold = Vec::new();
    for _ in 0..ROUNDS {
        let home = tempfile::tempdir().unwrap();
        let mut env = h.env();
        env.insert("HOME".into(), home.path().to_str().unwrap().to_owned());
        let before = logins();
        let started = Instant::now();
        h.ikit_with(&env, &["run", "--", "true"]).await.ok();
        cold.push(started.elapsed());
        assert_eq!(logins(), before + 1, "cold: one login");
    }

    h.ikit(&["run", "--", "true"]).await.ok();
    let mut warm = Vec::new();
    for _ in 0..ROUNDS {
        let before = logins();
        let started = Instant::now();
        h.ikit(&["run", "--", "true"]).await.ok();
        warm.push(started.elapsed());
        assert_eq!(logins(), before, "warm: no login");
    }

    let (alone, cold, warm) = (median(alone), median(cold), median(warm));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("ikit run -- true, median of {ROUNDS} (emulator on loopback, debug build):");
    println!("  true alone                 {:8.2} ms", ms(alone));
    println!("  warm (cached token, list)  {:8.2} ms", ms(warm));
    println!("  cold (login + list)        {:8.2} ms", ms(cold));
}
