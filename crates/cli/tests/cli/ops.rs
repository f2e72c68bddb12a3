//! The operations commands, black-box: the `ikit` binary against `ikit dev`'s stack (emulator,
//! health service) started in process on free ports, pointed at it by `IKIT_DEV_STATE` alone.
//! Every run's stdout and stderr are checked for values the command was not asked to print.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ikit::dev::{DevOptions, DevStack};

/// A started stack and a private HOME for the ikit runs.
struct Stack {
    stack: DevStack,
    dir: tempfile::TempDir,
    state_file: PathBuf,
}

impl Stack {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join(".ikit/dev.json");
        let stack =
            DevStack::start(DevOptions::ephemeral(&state_file)).await.expect("stack starts");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { stack, dir, state_file }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `ikit args...` in the temp dir, with only PATH, HOME and IKIT_DEV_STATE (plus `extra`).
    fn ikit(&self, args: &[&str], extra: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ikit"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("IKIT_DEV_STATE", &self.state_file)
            .env("RUST_LOG", "info")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("ikit runs");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not signalled")
}

/// Fails when stdout or stderr holds any of `values`.
fn assert_no_leak(out: &Output, values: &[&str], what: &str) {
    for v in values {
        assert!(!text(&out.stdout).contains(v), "{what}: stdout holds {v:?}");
        assert!(!text(&out.stderr).contains(v), "{what}: stderr holds {v:?}");
    }
}

async fn in_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

const STDIN_VALUE: &str = "from-stdin-5b1e 'quote' $HOME";
const FILE_VALUE: &str = "-----BEGIN CERT-----\nfile-value-77c2\n-----END CERT-----\n";
const ARG_VALUE: &str = "arg-value-3f9a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_set_get_list_delete_folders_and_check() {
    let s = std::sync::Arc::new(Stack::start().await);
    std::fs::write(s.dir.path().join("cert.pem"), FILE_VALUE).unwrap();
    let secret_values = [STDIN_VALUE, FILE_VALUE.trim(), "file-value-77c2", ARG_VALUE];

    let st = s.clone();
    in_blocking(move || {
        // set: an argument, a file and stdin; the status table masks every value
        let args =
            ["secrets", "set", "OPS_ARG=arg-value-3f9a", "OPS_FILE=@cert.pem", "OPS_STDIN=-"];
        let out = st.ikit(&args, &[], Some(&format!("{STDIN_VALUE}\n")));
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.matches("SECRET CREATED").count(), 3, "{stdout}");
        assert_eq!(stdout.matches("******").count(), 3, "{stdout}");
        assert_no_leak(&out, &secret_values, "secrets set");
        assert!(!args.iter().any(|a| a.contains("from-stdin")), "the stdin value is in no argv");

        // get --plain prints exactly the values asked for, in order
        let out = st.ikit(&["secrets", "get", "OPS_STDIN", "OPS_FILE", "--plain"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{STDIN_VALUE}\n{FILE_VALUE}\n"));

        // a missing key fails, names the key, and prints no value of the others
        let out = st.ikit(&["secrets", "get", "OPS_ARG", "OPS_NOPE"], &[], None);
        assert_eq!(code(&out), 1);
        assert!(text(&out.stderr).contains("OPS_NOPE"), "{}", text(&out.stderr));
        assert_no_leak(&out, &secret_values, "secrets get with a missing key");
        let out = st.ikit(&["secrets", "get", "OPS_ARG", "OPS_NOPE", "--allow-missing"], &[], None);
        assert_eq!(code(&out), 0);
        let stdout = text(&out.stdout);
        assert!(stdout.contains(ARG_VALUE) && stdout.contains("*not found*"), "{stdout}");

        // the listing as JSON holds the values it was asked for
        let out = st.ikit(&["secrets", "-o", "json"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let value_of = |key: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|s| s["secretKey"] == key)
                .map(|s| s["secretValue"].clone())
        };
        assert_eq!(value_of("OPS_FILE"), Some(FILE_VALUE.into()));
        assert_eq!(value_of("OPS_STDIN"), Some(STDIN_VALUE.into()));
        assert_no_leak(&out, &[], "");
        assert!(!text(&out.stderr).contains(ARG_VALUE), "logs hold no value");

        // unchanged and modified
        let out = st.ikit(
            &["secrets", "set", "OPS_ARG=arg-value-3f9a", "OPS_FILE=changed-value-91"],
            &[],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("SECRET VALUE UNCHANGED") && stdout.contains("SECRET VALUE MODIFIED"),
            "{stdout}"
        );
        assert_no_leak(&out, &["changed-value-91", ARG_VALUE], "secrets set again");

        // check: a SecretSpec manifest, missing ones listed by name and a failing exit
        std::fs::write(
            st.dir.path().join("secretspec.toml"),
            "[project]\nname = \"ops\"\nrevision = \"1.0\"\n\n[profiles.default]\n\
             OPS_ARG = { description = \"a\" }\nOPS_MISSING_ONE = { description = \"m\" }\n\
             OPS_OPTIONAL = { description = \"o\", required = false }\n\
             OPS_DEFAULTED = { description = \"d\", default = \"default-value-0c4\" }\n\n\
             [profiles.ci]\nOPS_MISSING_ONE = { required = false }\n",
        )
        .unwrap();
        let out = st.ikit(&["check"], &[], None);
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("OPS_MISSING_ONE"), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("OPS_MISSING_ONE  MISSING"), "{}", text(&out.stdout));
        assert_no_leak(&out, &[ARG_VALUE, "default-value-0c4"], "check");
        let out = st.ikit(&["check", "--profile", "ci"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out = st.ikit(&["check"], &[("SECRETSPEC_PROFILE", "ci")], None);
        assert_eq!(code(&out), 0, "the profile from SECRETSPEC_PROFILE: {}", text(&out.stderr));

        // delete (shared by default), then the keys are gone
        let out = st.ikit(&["secrets", "delete", "OPS_ARG", "OPS_FILE"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out = st.ikit(&["secrets", "get", "OPS_ARG"], &[], None);
        assert_eq!(code(&out), 1, "deleted");

        // folders
        let out = st.ikit(
            &["secrets", "folders", "create", "--path", "/", "--name", "opsdir"],
            &[],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out = st.ikit(&["secrets", "folders", "get", "--path", "/", "-o", "json"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let names: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(names.as_array().unwrap().iter().any(|f| f["name"] == "opsdir"), "{names}");
        let out = st.ikit(
            &["secrets", "folders", "delete", "--path", "/", "--name", "opsdir"],
            &[],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out = st.ikit(&["secrets", "folders", "get", "--path", "/"], &[], None);
        assert!(!text(&out.stdout).contains("opsdir"));

        // --file: a .env file's keys and values, quotes decoded as python-dotenv does
        std::fs::write(
            st.dir.path().join("ops.env"),
            "# comment\nFROM_FILE_A=\"two\\nlines 'q'\"\nexport FROM_FILE_B=plain-b-7d\n",
        )
        .unwrap();
        let out = st.ikit(&["secrets", "set", "--file", "ops.env"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).matches("SECRET CREATED").count(), 2, "{}", text(&out.stdout));
        assert_no_leak(&out, &["plain-b-7d", "lines 'q'"], "secrets set --file");
        let out = st.ikit(&["secrets", "get", "FROM_FILE_A", "FROM_FILE_B", "--plain"], &[], None);
        assert_eq!(text(&out.stdout), "two\nlines 'q'\nplain-b-7d\n");
        let out = st.ikit(&["secrets", "set", "--file", "ops.env", "X=1"], &[], None);
        assert_eq!(code(&out), 2, "--file and arguments exclude each other");

        // the state file points `ikit run` at the stack, but its credentials stay out of the child
        let script = "echo admin=${IKIT_ADMIN_TOKEN:-none} \
                      secret=${INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET:-none} flags=$FEATURE_FLAGS";
        let out = st.ikit(&["run", "--path", "/app", "--", "sh", "-c", script], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "admin=none secret=none flags=search,checkout");

        // bad input: a precise error, exit 2, no panic
        let out = st.ikit(&["secrets", "set", "1BAD=x"], &[], None);
        assert_eq!(code(&out), 2);
        assert!(text(&out.stderr).contains("1BAD"), "{}", text(&out.stderr));
    })
    .await;
    let s = std::sync::Arc::try_unwrap(s).ok().expect("one owner left");
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_rotate_health_and_cache_clear() {
    let s = std::sync::Arc::new(Stack::start().await);
    let admin_token = s.stack.info().admin_token.expose().to_owned();
    let st = s.clone();
    in_blocking(move || {
        // the stack starts with one JWT key: no next key published, so the seed's check fails
        let out = st.ikit(&["verify", "rotation"], &[], None);
        assert_eq!(code(&out), 1, "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains("next key"), "{}", text(&out.stderr));
        let out = st.ikit(&["verify", "rotation", "--allow-no-next"], &[], None);
        assert_eq!(code(&out), 0, "consistent otherwise: {}", text(&out.stdout));

        let out = st.ikit(&["health"], &[], None);
        assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).starts_with("overall: healthy"), "{}", text(&out.stdout));
        let out = st.ikit(&["health", "--json"], &[], None);
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["overall_status"], "healthy");

        // through the health service's admin API
        let out = st.ikit(&["rotate", "jwt", "--force", "--reason", "ops test"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("health-service"), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains("publish_next"), "{}", text(&out.stdout));
        let out = st.ikit(&["verify", "rotation"], &[], None);
        assert_eq!(code(&out), 0, "after a rotation: {}", text(&out.stdout));
        let out = st.ikit(&["verify", "jwks"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains("2 keys"), "current and next: {}", text(&out.stdout));

        let jwks_url = format!("{}/.well-known/jwks.json", st.stack.info().health_url);
        let out = st.ikit(
            &["verify", "jwks", "--url", &jwks_url, "--json"],
            &[("IKIT_DEV_STATE", "")],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true, "{report}");
        let out = st.ikit(&["verify", "jwks", "--url", "http://127.0.0.1:9/jwks.json"], &[], None);
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));

        let out = st.ikit(&["cache", "clear", "/auth/*"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("keys_reloaded=true"), "{}", text(&out.stdout));

        // directly through ikit-keys: the health URL is set without the admin token
        let health_url = st.stack.info().health_url.clone();
        let out = st.ikit(
            &["rotate", "aes", "--force", "--json"],
            &[("IKIT_HEALTH_URL", &health_url)],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["via"], "direct");
        assert!(
            answer["steps"].as_array().unwrap().iter().any(|s| s["action"] == "add_next"),
            "{answer}"
        );
        assert!(text(&out.stderr).contains("no shared rotation lock"), "{}", text(&out.stderr));
        let out = st.ikit(&["verify", "rotation"], &[], None);
        assert_eq!(code(&out), 0, "after a direct rotation: {}", text(&out.stdout));

        // nothing printed anywhere holds the admin token or key material
        for args in [&["health"][..], &["rotate", "all", "--force"], &["verify", "rotation"]] {
            let out = st.ikit(args, &[], None);
            assert_no_leak(
                &out,
                &[&admin_token, "PRIVATE KEY", "ikit-dev-client-secret"],
                &args.join(" "),
            );
        }

        // a refused admin token: the service's reason, never the token
        let wrong = "wrong-admin-token-0123456789abcdef";
        let out = st.ikit(
            &["rotate", "jwt", "--force"],
            &[("IKIT_HEALTH_URL", &health_url), ("IKIT_ADMIN_TOKEN", wrong)],
            None,
        );
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("401: unauthorized"), "{}", text(&out.stderr));
        assert_no_leak(&out, &[wrong], "rotate with a wrong admin token");

        // nothing to clear through: a usage error naming what to set
        let out = st.ikit(&["cache", "clear"], &[("IKIT_DEV_STATE", "")], None);
        assert_eq!(code(&out), 2, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("IKIT_REDIS_URL"), "{}", text(&out.stderr));

        // a broken manifest: exit 2 with the place
        std::fs::write(st.dir.path().join("bad.toml"), "[profiles.default]\nA = 1\n").unwrap();
        let out = st.ikit(&["check", "--manifest", "bad.toml"], &[], None);
        assert_eq!(code(&out), 2, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("profiles.default.A"), "{}", text(&out.stderr));

        // Infisical failing while keys are loaded: degraded, exit 1
        st.stack.emulator().faults().add(ikit_emulator::Fault::status("/api/status", 503));
        let out = st.ikit(&["health"], &[], None);
        assert_eq!(code(&out), 1, "{}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).starts_with("overall: degraded"), "{}", text(&out.stdout));

        // a health service that does not answer is unhealthy
        let out = st.ikit(&["health"], &[("IKIT_HEALTH_URL", "http://127.0.0.1:9")], None);
        assert_eq!(code(&out), 2, "{}", text(&out.stderr));

        // a published kid that is not its key's thumbprint, and an active_kid outside keys_map
        let out = st.ikit(
            &["secrets", "get", "public_jwks", "--path", "/auth/jwt", "--plain"],
            &[],
            None,
        );
        let mut jwks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        jwks["keys"][0]["kid"] = "forged-kid".into();
        let forged = format!("{jwks}\n");
        let out = st.ikit(
            &["secrets", "set", "public_jwks=-", "--path", "/auth/jwt"],
            &[],
            Some(&forged),
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out =
            st.ikit(&["secrets", "set", "active_kid=not-a-kid", "--path", "/auth/aes"], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out = st.ikit(&["verify", "rotation"], &[], None);
        assert_eq!(code(&out), 1, "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("every kid matches its key") && stderr.contains("forged-kid"),
            "{stderr}"
        );
        assert!(stderr.contains("active_kid is in keys_map (not-a-kid)"), "{stderr}");
    })
    .await;
    let s = std::sync::Arc::try_unwrap(s).ok().expect("one owner left");
    s.stack.stop().await;
}

/// `make infisical-workflow-test` and the other `infisical-*` targets, run by make against a
/// stack on free ports (the state file passed as DEV_STATE, the binary under test as IKIT_BIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_make_targets_run_against_the_dev_stack() {
    let s = std::sync::Arc::new(Stack::start().await);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = s.clone();
    in_blocking(move || {
        let make = |target: &str, vars: &[(&str, &str)]| {
            let mut cmd = Command::new("make");
            cmd.arg("-s")
                .arg("-C")
                .arg(&root)
                .arg(target)
                .arg(format!("IKIT_BIN={}", env!("CARGO_BIN_EXE_ikit")))
                .arg(format!("DEV_STATE={}", st.state_file.display()))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", st.home())
                .stdin(Stdio::null());
            for (k, v) in vars {
                cmd.env(k, v);
            }
            cmd.output().expect("make runs")
        };
        let out = make("infisical-workflow-test", &[]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(code(&out), 0, "{all}");
        for step in [
            "login: ok",
            "set: ok",
            "get: ok",
            "export: ok",
            "rotate: ok",
            "verify: ok",
            "workflow: ok",
        ] {
            assert!(all.contains(step), "{step} missing:\n{all}");
        }

        let value = "make-value-d41 with spaces";
        let out =
            make("infisical-secrets-set", &[("SECRET_NAME", "MAKE_KEY"), ("SECRET_VALUE", value)]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert_no_leak(&out, &[value], "make infisical-secrets-set");
        let out = make("infisical-secrets-get", &[("SECRET_NAME", "MAKE_KEY")]);
        assert_eq!(text(&out.stdout), format!("{value}\n"), "{}", text(&out.stderr));
        let out = make("infisical-secrets-list", &[]);
        assert!(text(&out.stdout).contains("MAKE_KEY"), "{}", text(&out.stderr));
        let out = make("infisical-secrets-get", &[]);
        assert_eq!(code(&out), 2, "SECRET_NAME is required");

        for target in [
            "infisical-health",
            "infisical-cache-clear",
            "infisical-rotate-jwt",
            "infisical-rotate-aes",
            "infisical-rotate-all",
            "jwks-check",
        ] {
            let out = make(target, &[]);
            assert_eq!(code(&out), 0, "{target}: {}{}", text(&out.stdout), text(&out.stderr));
        }

        let out = Command::new("make").arg("-s").arg("-C").arg(&root).arg("help").output().unwrap();
        let help = text(&out.stdout);
        for target in [
            "infisical-dev-setup",
            "infisical-health",
            "infisical-migrate",
            "infisical-rotate-jwt",
            "infisical-rotate-aes",
            "infisical-rotate-all",
            "infisical-cache-clear",
            "infisical-secrets-list",
            "infisical-secrets-get",
            "infisical-secrets-set",
            "test-infisical",
            "infisical-workflow-test",
            "jwks-check",
        ] {
            assert!(
                help.contains(&format!("  {target} ")),
                "{target} missing from make help:\n{help}"
            );
        }
    })
    .await;
    let s = std::sync::Arc::try_unwrap(s).ok().expect("one owner left");
    s.stack.stop().await;
}

#[test]
fn completions_and_an_example_in_every_help() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ikit")).args(args).env_clear().output().unwrap()
    };
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef ikit"), ("fish", "complete -c ikit")]
    {
        let out = run(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {}", &script[..script.len().min(200)]);
        assert!(
            script.contains("rotate") && script.contains("secrets"),
            "{shell} knows the commands"
        );
    }
    for command in [
        &["secrets"][..],
        &["secrets", "get"],
        &["secrets", "set"],
        &["secrets", "delete"],
        &["secrets", "folders"],
        &["verify"],
        &["cache"],
        &["rotate"],
        &["verify", "rotation"],
        &["verify", "jwks"],
        &["health"],
        &["cache", "clear"],
        &["check"],
        &["completions"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = run(&args);
        assert_eq!(code(&out), 0, "{args:?}");
        assert!(
            text(&out.stdout).contains("Example"),
            "{args:?} --help shows no example:\n{}",
            text(&out.stdout)
        );
    }
}

/// With `IKIT_REDIS_URL`, a `secrets set` and a `cache clear` reach every replica: each
/// publishes an invalidation of its folder or pattern on Redis (the CLI uses the default
/// `ikit:` prefix; the folder is unique to this test, so other tests' messages do not count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_cache_clear_publish_invalidations_on_redis() {
    use futures_util::StreamExt as _;

    let redis = ikit_common::testsuite::TestRedis::new().await;
    let redis_url = redis.url().to_owned();
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(ikit_common::events::invalidation_channel(
            ikit_common::events::DEFAULT_REDIS_PREFIX,
        ))
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let s = std::sync::Arc::new(Stack::start().await);
    let folder = format!("ops{}", std::process::id());
    let st = s.clone();
    let (f, url) = (folder.clone(), redis_url.clone());
    in_blocking(move || {
        let out =
            st.ikit(&["secrets", "folders", "create", "--path", "/", "--name", &f], &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let path = format!("/{f}");
        let out = st.ikit(
            &["secrets", "set", "REDIS_KEY=value-8e2", "--path", &path],
            &[("IKIT_REDIS_URL", &url)],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let out =
            st.ikit(&["cache", "clear", &format!("/{f}/*")], &[("IKIT_REDIS_URL", &url)], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("redis: published=true"), "{}", text(&out.stdout));

        // a direct rotation (no admin token) tells the replicas to reload the AES ring
        let health_url = st.stack.info().health_url.clone();
        let out = st.ikit(
            &["rotate", "aes", "--force"],
            &[("IKIT_REDIS_URL", &url), ("IKIT_HEALTH_URL", &health_url)],
            None,
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("(direct)"), "{}", text(&out.stdout));
        assert!(!text(&out.stderr).contains("no shared rotation lock"), "Redis is the lock");
    })
    .await;

    let mut seen = Vec::new();
    let wanted = [format!("/{folder}"), format!("/{folder}/*"), "/auth/aes".to_owned()];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !wanted.iter().all(|w| seen.contains(w)) {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .unwrap_or_else(|_| panic!("invalidations {wanted:?} not all seen: {seen:?}"))
            .expect("subscribed");
        let body: serde_json::Value =
            serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
        if let Some(p) = body["pattern"].as_str() {
            seen.push(p.to_owned());
        }
    }
    assert!(!seen.iter().any(|p| p.contains("value-8e2")), "no value on the wire");
    let s = std::sync::Arc::try_unwrap(s).ok().expect("one owner left");
    s.stack.stop().await;
    redis.cleanup().await.ok();
}

/// `make infisical-dev-setup` starts `ikit dev` in the background (here on free ports), the
/// targets find it through the state file, and `make infisical-dev-stop` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_infisical_dev_setup_starts_a_stack_the_targets_use_and_dev_stop_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let state = dir.path().join("dev.json");
    let log = dir.path().join("dev.log");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let make = move |target: &str| {
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&root)
            .arg(target)
            .arg(format!("IKIT_BIN={}", env!("CARGO_BIN_EXE_ikit")))
            .arg(format!("DEV_STATE={}", state.display()))
            .arg(format!("DEV_LOG={}", log.display()))
            .arg("DEV_ARGS=--emulator-addr 127.0.0.1:0 --webhook-addr 127.0.0.1:0 --health-addr 127.0.0.1:0")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("make runs")
    };
    let state_file = dir.path().join("dev.json");
    in_blocking(move || {
        let out = make("infisical-dev-setup");
        assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        let health_url = state["health_url"].as_str().unwrap().to_owned();

        let out = make("infisical-health");
        assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("overall: healthy"), "{}", text(&out.stdout));

        let out = make("infisical-dev-stop");
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let mut stopped = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(health_url.trim_start_matches("http://")).is_err() {
                stopped = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(stopped, "nothing listens on {health_url} after infisical-dev-stop");
    })
    .await;
}

/// A token cached under `~/.ikit/` that the server no longer accepts (here: expired on the
/// emulator's clock) is dropped and the login done again, for reads, writes and key checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_the_server_refuses_is_replaced_by_a_fresh_login() {
    let s = std::sync::Arc::new(Stack::start().await);
    let st = s.clone();
    in_blocking(move || {
        let get = ["secrets", "get", "FEATURE_FLAGS", "--path", "/app", "--plain"];
        let out = st.ikit(&get, &[], None);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(st.home().join(".ikit").exists(), "the token is cached");

        // past the access token's TTL (3600 s) on the server, not on this machine's clock
        st.stack.emulator().clock().advance(std::time::Duration::from_secs(7200));
        let out = st.ikit(&get, &[], None);
        assert_eq!(code(&out), 0, "read after expiry: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "search,checkout\n");

        st.stack.emulator().clock().advance(std::time::Duration::from_secs(7200));
        let out = st.ikit(&["secrets", "set", "AFTER_EXPIRY=1"], &[], None);
        assert_eq!(code(&out), 0, "write after expiry: {}", text(&out.stderr));

        st.stack.emulator().clock().advance(std::time::Duration::from_secs(7200));
        let out = st.ikit(&["verify", "rotation", "--allow-no-next"], &[], None);
        assert_eq!(code(&out), 0, "key check after expiry: {}", text(&out.stderr));
    })
    .await;
    let s = std::sync::Arc::try_unwrap(s).ok().expect("one owner left");
    s.stack.stop().await;
}

/// The two targets no test can run end to end here (`ikit migrate` is its own command;
/// `test-infisical` runs this very suite) call exactly what they say.
#[test]
fn the_migrate_and_test_targets_call_what_they_say() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dry = |target: &str, vars: &[&str]| {
        let out = Command::new("make")
            .arg("-s")
            .arg("-n")
            .arg("-C")
            .arg(&root)
            .arg(target)
            .arg("IKIT_BIN=/opt/ikit")
            .arg("DEV_STATE=/nonexistent/dev.json")
            .args(vars)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        text(&out.stdout).lines().last().unwrap_or_default().to_owned()
    };
    let line = dry("infisical-migrate", &[]);
    assert!(line.ends_with("/opt/ikit migrate plan --mapping 'migrate.toml' .env"), "{line}");
    let line = dry("infisical-migrate", &["MIGRATE_COMMAND=apply", "MIGRATE_SOURCES=a.env b.json"]);
    assert!(
        line.ends_with("/opt/ikit migrate apply --mapping 'migrate.toml' a.env b.json"),
        "{line}"
    );
    let line = dry("test-infisical", &[]);
    assert!(line.ends_with("test -p ikit -p ikit-keys -p ikit-health"), "{line}");
}

/// `make infisical-migrate` runs `ikit migrate` against the dev stack: the plan names the key
/// it would create (never its value) and exits 2, "something to do", for CI to gate on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_infisical_migrate_plans_against_the_dev_stack() {
    let s = std::sync::Arc::new(Stack::start().await);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = s.clone();
    in_blocking(move || {
        let dir = st.dir.path();
        std::fs::write(
            dir.join("migrate.toml"),
            "[defaults]\nenvironment = \"dev\"\nfolder = \"/app\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("app.env"), "MIGRATE_ME=migrate-value-5e1\n").unwrap();
        let args = format!(
            "MIGRATE_ARGS=plan --mapping {} --state-dir {} {}",
            dir.join("migrate.toml").display(),
            dir.join("migrations").display(),
            dir.join("app.env").display()
        );
        let out = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&root)
            .arg("infisical-migrate")
            .arg(format!("IKIT_BIN={}", env!("CARGO_BIN_EXE_ikit")))
            .arg(format!("DEV_STATE={}", st.state_file.display()))
            .arg(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", st.home())
            .output()
            .unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(code(&out), 2, "{all}");
        assert!(all.contains("MIGRATE_ME") && all.contains("create"), "{all}");
        assert_no_leak(&out, &["migrate-value-5e1"], "make infisical-migrate");
    })
    .await;
    let s = std::sync::Arc::try_unwrap(s).ok().expect("one owner left");
    s.stack.stop().await;
}
