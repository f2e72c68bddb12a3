//! `ikit login`: the token on one line, a failure on one line without a credential, the token
//! cached sealed and private for the next commands.

use crate::support::{API_KEY, CLIENT_ID, CLIENT_SECRET, DB_URL, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_plain_prints_exactly_the_token_and_the_token_works() {
    let h = Harness::start().await;
    let mut env = h.env();
    env.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID");
    env.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET");
    let run = h
        .ikit_with(
            &env,
            &[
                "login",
                "--method",
                "universal-auth",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
                "--silent",
                "--plain",
            ],
        )
        .await;
    run.ok();
    let lines: Vec<&str> = run.stdout.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stdout);
    assert!(lines[0].ends_with('\n'));
    let token = lines[0].trim_end();
    assert!(!token.is_empty() && !token.contains(' '));
    assert_eq!(run.stderr, "", "--silent --plain prints nothing else");
    run.leaks_none(&[CLIENT_SECRET, DB_URL]);

    // a flag completes what the variables hold
    let mut partial = h.env();
    partial.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET");
    h.ikit_with(&partial, &["login", "--client-secret", CLIENT_SECRET, "--plain"]).await.ok();

    // the printed token is a working INFISICAL_TOKEN
    let mut env = h.env();
    env.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID");
    env.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET");
    env.insert("INFISICAL_TOKEN".into(), token.to_owned());
    let run = h.ikit_with(&env, &["export", "--format", "dotenv-export"]).await;
    run.ok();
    assert!(run.stdout.contains(&format!("export API_KEY='{API_KEY}'")), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_one_line_naming_the_method_and_the_reason_without_the_secret() {
    let h = Harness::start().await;
    let wrong = "wrong-secret-Zk81";
    let run = h
        .ikit(&[
            "login",
            "--method",
            "universal-auth",
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            wrong,
            "--plain",
        ])
        .await;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
    assert!(lines[0].contains("universal-auth"), "{}", lines[0]);
    assert!(lines[0].to_lowercase().contains("invalid"), "the server's reason: {}", lines[0]);
    run.leaks_none(&[wrong, CLIENT_SECRET]);

    let run = h.ikit(&["login", "--method", "user"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("universal-auth"), "{}", run.stderr);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_cached_sealed_and_private_and_reused_without_a_login() {
    use std::os::unix::fs::PermissionsExt as _;

    let h = Harness::start().await;
    let run = h.ikit(&["login", "--plain", "--silent"]).await;
    run.ok();
    let token = run.stdout.trim().to_owned();
    let dir = h.home.path().join(".ikit/tokens");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "the token is sealed");
    assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(h.home.path().join(".ikit")).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let emulator = h.emulator.as_ref().unwrap();
    let logins = || emulator.login_requests("universal-auth").len();
    let before = logins();
    h.ikit(&["run", "--", "sh", "-c", "test -n \"$API_KEY\""]).await.ok();
    assert_eq!(logins(), before, "the cached token was used");
    // a server speaking v4 (what a client assumes) needs no generation file; v3 is kept once,
    // beside the snapshots (crates/client/tests/client/cache.rs)
    assert!(!h.home.path().join(".ikit/snapshots/api-generation").exists());
    assert!(!h.home.path().join(".ikit/state.json").exists());

    // a cache file that does not open means one login
    let mut broken = std::fs::read(&files[0]).unwrap();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    std::fs::write(&files[0], &broken).unwrap();
    h.ikit(&["run", "--", "sh", "-c", "test -n \"$API_KEY\""]).await.ok();
    assert_eq!(logins(), before + 1);

    // a cached token the server revoked is dropped and replaced by one login
    let run = h.ikit(&["login", "--plain", "--silent"]).await;
    let token = run.ok().stdout.trim().to_owned();
    let revoked = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/token/revoke", h.url))
        .json(&serde_json::json!({"accessToken": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let before = logins();
    let run = h.ikit(&["run", "--", "sh", "-c", "test -n \"$API_KEY\""]).await;
    run.ok();
    assert_eq!(logins(), before + 1, "stderr: {}", run.stderr);
}
