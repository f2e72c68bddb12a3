//! `ikit run`: exit codes passed through, signals forwarded, secrets over the environment,
//! reserved names kept, `.infisical.json` from `init`, `--watch` restarts.

use crate::support::{API_KEY, CLIENT_SECRET, DB_URL, Harness, PROJECT, wait_for_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_childs_exit_code_and_death_by_signal_are_passed_through() {
    let h = Harness::start().await;
    let run = h.ikit(&["run", "--", "sh", "-c", "exit 7"]).await;
    assert_eq!(run.code, Some(7), "stderr: {}", run.stderr);
    let run = h.ikit(&["run", "--", "sh", "-c", "kill -TERM $$"]).await;
    assert_eq!(run.code, Some(143), "stderr: {}", run.stderr);
    let run = h.ikit(&["run", "--command", "exit 3"]).await;
    assert_eq!(run.code, Some(3));
    let run = h.ikit(&["run"]).await;
    assert_eq!(run.code, Some(2), "no command is a usage error");
    let mut no_credentials = h.env();
    no_credentials.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET");
    no_credentials.remove("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID");
    let run = h.ikit_with(&no_credentials, &["run", "--", "true"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("INFISICAL_TOKEN"), "says what to set: {}", run.stderr);
    let run = h.ikit(&["run", "--", "/nonexistent/program"]).await;
    assert_eq!(run.code, Some(127), "not found, as a shell says it");
    assert!(run.stderr.contains("/nonexistent/program"), "{}", run.stderr);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_sent_to_ikit_run_reaches_the_child() {
    let h = Harness::start().await;
    let ready = h.work_file("ready");
    let got = h.work_file("got");
    let script = format!(
        "trap 'echo term > {got}; exit 5' TERM; echo up > {ready}; while :; do sleep 0.05; done",
        got = got.display(),
        ready = ready.display()
    );
    let mut child = h.command(&h.env(), &["run", "--", "sh", "-c", &script]).spawn().unwrap();
    wait_for_file(&ready, |t| t.contains("up")).await;
    let sent = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "term", "the child got SIGTERM");
    assert_eq!(status.code(), Some(5), "and its exit code came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_secrets_win_over_the_environment_and_reserved_names_are_kept() {
    let h = Harness::start().await;
    let mut env = h.env();
    env.insert("DB_URL".into(), "from-the-environment".into());
    env.insert("UNRELATED".into(), "kept".into());
    let out = h.work_file("env.txt");
    let script =
        format!("printf '%s|%s|%s' \"$DB_URL\" \"$UNRELATED\" \"$PATH\" > {}", out.display());
    let run = h.ikit_with(&env, &["run", "--", "sh", "-c", &script]).await;
    run.ok();
    let got = std::fs::read_to_string(&out).unwrap();
    let path = env["PATH"].clone();
    assert_eq!(got, format!("{DB_URL}|kept|{path}"));
    assert!(run.stderr.contains("secret PATH not injected"), "{}", run.stderr);
    run.leaks_none(&[DB_URL, API_KEY, CLIENT_SECRET, "/secret/bin"]);

    // --env picks another environment
    let run = h.ikit_with(&env, &["run", "--env", "prod", "--", "sh", "-c", &script]).await;
    run.ok();
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("prod-db|"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_path_wins_for_a_key_in_both() {
    let h = Harness::with_secrets(&[
        ("/a", "SHARED", "from-a"),
        ("/b", "SHARED", "from-b"),
        ("/a", "ONLY_A", "a"),
    ])
    .await;
    let out = h.work_file("v");
    let script = format!("printf '%s %s' \"$SHARED\" \"$ONLY_A\" > {}", out.display());
    h.ikit(&["run", "--path", "/a", "--path", "/b", "--", "sh", "-c", &script]).await.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from-b a");
    h.ikit(&["run", "--path", "/b", "--path", "/a", "--", "sh", "-c", &script]).await.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from-a a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_file_written_by_init_is_read_back_by_run() {
    let h = Harness::start().await;
    let mut env = h.env();
    env.remove("INFISICAL_PROJECT_ID");
    let run = h.ikit_with(&env, &["run", "--", "true"]).await;
    assert_eq!(run.code, Some(2), "no project yet: {}", run.stderr);

    h.ikit_with(&env, &["init", "--project-id", PROJECT, "--env", "prod"]).await.ok();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(h.work_file(".infisical.json")).unwrap())
            .unwrap();
    assert_eq!(written["workspaceId"], PROJECT);
    assert_eq!(written["defaultEnvironment"], "prod");

    let out = h.work_file("db");
    let script = format!("printf '%s' \"$DB_URL\" > {}", out.display());
    h.ikit_with(&env, &["run", "--", "sh", "-c", &script]).await.ok();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "prod-db",
        "project and environment from the file"
    );

    let run = h.ikit_with(&env, &["init", "--project-id", "other"]).await;
    assert_eq!(run.code, Some(2), "no overwrite without --force");
    assert!(run.stderr.contains("--force"));
    h.ikit_with(&env, &["init", "--project-id", PROJECT, "--env", "dev", "--force"]).await.ok();
    h.ikit_with(&env, &["run", "--", "sh", "-c", &script]).await.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), DB_URL, "re-initialised to dev");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_restarts_the_child_with_the_new_value_after_a_change() {
    use ikit_client::{AuthMethod, Client, ClientConfig, Scope, SecretUpdate};

    let h = Harness::start().await;
    let log = h.work_file("starts");
    let script = format!(
        "printf '%s\\n' \"$API_KEY\" >> {log}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        log = log.display()
    );
    let mut child = h
        .command(&h.env(), &["run", "--watch", "--watch-interval", "1s", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_for_file(&log, |t| t.lines().count() == 1).await;

    let client = Client::new(
        ClientConfig::new(&h.url, AuthMethod::universal(crate::support::CLIENT_ID, CLIENT_SECRET))
            .unwrap(),
    )
    .unwrap();
    let scope = Scope::new(PROJECT, "dev", "/");
    client
        .update_secret(
            &scope,
            &SecretUpdate::value("API_KEY", ikit_client::SecretValue::new("rotated-value-2")),
        )
        .await
        .unwrap();
    let text = wait_for_file(&log, |t| t.lines().count() >= 2).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], [API_KEY, "rotated-value-2"]);

    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "the child's exit after the forwarded SIGTERM");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2, "one restart per change");
}

/// A stand-in for the webhook service's event stream: records the request, then sends one
/// `data:` frame per message on `events`.
async fn event_stream(
    mut events: tokio::sync::mpsc::Receiver<()>,
) -> (String, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/infisical/events", listener.local_addr().unwrap());
    let (request_tx, request_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ends early");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = request_tx.send(String::from_utf8_lossy(&head).into_owned());
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
            .await
            .unwrap();
        while events.recv().await.is_some() {
            let frame = b"id: 1\ndata: {\"kind\":\"updated\",\"key\":\"API_KEY\"}\n\n";
            if socket.write_all(frame).await.is_err() {
                return;
            }
        }
    });
    (url, request_rx)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_an_event_stream_restarts_on_an_event_without_polling() {
    use ikit_client::{AuthMethod, Client, ClientConfig, Scope, SecretUpdate};

    let h = Harness::start().await;
    let (events, events_rx) = tokio::sync::mpsc::channel(1);
    let (url, request) = event_stream(events_rx).await;
    let mut env = h.env();
    env.insert("IKIT_EVENTS_URL".into(), url);
    env.insert("IKIT_EVENTS_TOKEN".into(), "events-token-1".into());
    let log = h.work_file("starts");
    let script = format!(
        "printf '%s\\n' \"$API_KEY\" >> {log}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        log = log.display()
    );
    // an interval far beyond the test: only the event can cause the restart
    let mut child = h
        .command(&env, &["run", "--watch", "--watch-interval", "1h", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_for_file(&log, |t| t.lines().count() == 1).await;
    let request = request.await.unwrap().to_lowercase();
    assert!(request.starts_with("get /api/v1/infisical/events?environment=dev "), "{request}");
    assert!(request.contains("authorization: bearer events-token-1"), "{request}");

    let client = Client::new(
        ClientConfig::new(&h.url, AuthMethod::universal(crate::support::CLIENT_ID, CLIENT_SECRET))
            .unwrap(),
    )
    .unwrap();
    client
        .update_secret(
            &Scope::new(PROJECT, "dev", "/"),
            &SecretUpdate::value("API_KEY", ikit_client::SecretValue::new("pushed-value-3")),
        )
        .await
        .unwrap();
    events.send(()).await.unwrap();
    let text = wait_for_file(&log, |t| t.lines().count() >= 2).await;
    assert_eq!(text.lines().collect::<Vec<_>>()[..2], [API_KEY, "pushed-value-3"]);

    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_and_restarted() {
    use ikit_client::{AuthMethod, Client, ClientConfig, Scope, SecretUpdate};

    let h = Harness::start().await;
    let log = h.work_file("starts");
    let script = format!(
        "trap '' TERM; printf '%s %s\\n' $$ \"$API_KEY\" >> {log}; while :; do sleep 0.05; done",
        log = log.display()
    );
    let args = [
        "run",
        "--watch",
        "--watch-interval",
        "1s",
        "--restart-grace",
        "200ms",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let mut child = h.command(&h.env(), &args).spawn().unwrap();
    let first = wait_for_file(&log, |t| t.lines().count() == 1).await;
    let first_pid = first.split_whitespace().next().unwrap().to_owned();

    let client = Client::new(
        ClientConfig::new(&h.url, AuthMethod::universal(crate::support::CLIENT_ID, CLIENT_SECRET))
            .unwrap(),
    )
    .unwrap();
    client
        .update_secret(
            &Scope::new(PROJECT, "dev", "/"),
            &SecretUpdate::value("API_KEY", ikit_client::SecretValue::new("after-kill-4")),
        )
        .await
        .unwrap();
    let text = wait_for_file(&log, |t| t.lines().count() >= 2).await;
    let second: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(second[1], "after-kill-4");
    let alive = std::process::Command::new("kill").args(["-0", &first_pid]).status().unwrap();
    assert!(!alive.success(), "the first child, deaf to SIGTERM, was killed");

    // this child ignores SIGTERM too: SIGKILL it and see 128 + 9 come back
    let killed = std::process::Command::new("kill").args(["-KILL", second[0]]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_needs_no_project_id() {
    let h = Harness::start().await;
    let env: std::collections::BTreeMap<String, String> = [
        ("HOME", h.home.path().to_str().unwrap()),
        ("PATH", &std::env::var("PATH").unwrap_or_default()),
        ("INFISICAL_API_URL", h.url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let out = h.work_file("v");
    let script = format!("printf '%s' \"$API_KEY\" > {}", out.display());
    let run = h
        .ikit_with(
            &env,
            &["run", "--token", "st.st-cli.st-cli-secret.key-part", "--", "sh", "-c", &script],
        )
        .await;
    run.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), API_KEY);
    run.leaks_none(&["st-cli-secret"]);
}
