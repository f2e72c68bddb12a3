//! Output never holds a value or credential nobody asked to print, even with every log on.

use crate::support::{API_KEY, CLIENT_SECRET, DB_URL, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_flow_prints_an_unrequested_value_or_credential_at_trace_level() {
    let mut h = Harness::start().await;
    let mut env = h.env();
    env.insert("RUST_LOG".into(), "trace".into());
    env.insert("INFISICAL_CUSTOM_HEADERS".into(), "X-Proxy-Auth=proxy-credential-77".into());

    // the token is printed by `login` because it was asked for; nothing else is
    let login = h.ikit_with(&env, &["login", "--plain"]).await;
    login.ok();
    let token = login.stdout.trim().to_owned();
    assert!(!login.stderr.is_empty(), "trace logs were captured");
    login.leaks_none(&[CLIENT_SECRET, DB_URL, API_KEY, "proxy-credential-77"]);
    assert!(!login.stderr.contains(&token), "the token is only on stdout");

    let mut runs = vec![
        h.ikit_with(&env, &["run", "--", "true"]).await,
        h.ikit_with(&env, &["export", "-o", "out.env"]).await,
        h.ikit_with(&env, &["export", "--format", "docker", "-o", "d.env"]).await,
        h.ikit_with(&env, &["init", "--force"]).await,
    ];
    // and the offline path, which reads the sealed snapshot
    h.stop_emulator().await;
    runs.push(h.ikit_with(&env, &["run", "--", "true"]).await);
    for run in &runs {
        run.ok();
        run.leaks_none(&[CLIENT_SECRET, DB_URL, API_KEY, "proxy-credential-77", &token]);
    }
    assert!(runs[4].stderr.contains("offline snapshot"));
}
