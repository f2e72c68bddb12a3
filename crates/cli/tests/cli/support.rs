//! Black-box fixtures: the Infisical emulator on port 0 with one project and one machine
//! identity, a private HOME and working directory per test, and the `ikit` binary run with a
//! clean environment holding only what the test gives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};

pub(crate) const PROJECT: &str = "4c1f2a3b-0000-4000-8000-00000000c11e";
pub(crate) const CLIENT_ID: &str = "cli-client-id";
pub(crate) const CLIENT_SECRET: &str = "cli-client-secret-Xq93";
pub(crate) const DB_URL: &str = "postgres://app:Sup3r-Secret-Db@db:5432/app";
pub(crate) const API_KEY: &str = "api-key-value-7f3e";

/// Values a dotenv writer gets wrong: quotes of both kinds, `$` and `${…}`, backslashes
/// (trailing too), `#`, `=`, unicode, surrounding spaces, newlines and a carriage return.
pub(crate) fn troublesome() -> Vec<(&'static str, &'static str)> {
    vec![
        ("T_SINGLE", "it's"),
        ("T_DOUBLE", "say \"hi\""),
        ("T_DOLLAR", "$HOME and ${HOME} and $(id) and `id`"),
        ("T_BACKSLASH", "C:\\path\\to\\"),
        ("T_MIDDLE_BACKSLASH", "a\\nb\\\\c"),
        ("T_HASH", "value # not a comment"),
        ("T_EQUALS", "a=b=c"),
        ("T_UNICODE", "żółć 🚀 日本"),
        ("T_SPACES", "  padded  "),
        ("T_NEWLINES", "line one\nline two\n"),
        ("T_CR", "win\r\nline"),
        ("T_MIXED", "'\"`$\\ #\t!"),
        ("T_EMPTY", ""),
    ]
}

fn seed(extra: &[(&str, &str, &str)]) -> String {
    let mut secrets = vec![
        serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": "/", "key": "DB_URL", "value": DB_URL}),
        serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": "/", "key": "API_KEY", "value": API_KEY}),
        serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": "/", "key": "PATH", "value": "/secret/bin"}),
        serde_json::json!({"projectId": PROJECT, "environment": "prod", "path": "/", "key": "DB_URL", "value": "prod-db"}),
    ];
    for (path, key, value) in extra {
        secrets.push(serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": path, "key": key, "value": value}));
    }
    let folders: Vec<serde_json::Value> = extra
        .iter()
        .map(|(path, _, _)| *path)
        .filter(|p| *p != "/")
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|p| serde_json::json!({"projectId": PROJECT, "environment": "dev", "path": p}))
        .collect();
    serde_json::json!({
        "projects": [{"id": PROJECT, "slug": "cli", "environments": ["dev", "prod"]}],
        "identities": [
            {"id": "id-cli", "name": "cli", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
             "accessTokenTTL": 3600, "accessTokenMaxTTL": 7200, "projects": [PROJECT]}
        ],
        "folders": folders,
        "serviceTokens": [
            {"id": "st-cli", "secret": "st-cli-secret", "projectId": PROJECT,
             "scopes": [{"environment": "dev", "secretPath": "/"}]}
        ],
        "secrets": secrets,
    })
    .to_string()
}

pub(crate) struct Harness {
    pub(crate) emulator: Option<RunningEmulator>,
    pub(crate) url: String,
    pub(crate) home: tempfile::TempDir,
    pub(crate) work: tempfile::TempDir,
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::with_secrets(&[]).await
    }

    /// Extra secrets `(folder, key, value)` in `dev`.
    pub(crate) async fn with_secrets(extra: &[(&str, &str, &str)]) -> Self {
        let seed = Seed::from_json(&seed(extra)).expect("seed parses");
        let emulator = Emulator::start(EmulatorConfig::new(seed)).await.expect("emulator starts");
        let url = emulator.base_url();
        Self {
            emulator: Some(emulator),
            url,
            home: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) async fn stop_emulator(&mut self) {
        if let Some(e) = self.emulator.take() {
            e.shutdown().await;
        }
    }

    /// The variables of a machine-identity login to the emulator, plus HOME.
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        [
            ("HOME", self.home.path().to_str().unwrap()),
            ("PATH", &std::env::var("PATH").unwrap_or_default()),
            ("INFISICAL_DOMAIN", self.url.as_str()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET),
            ("INFISICAL_PROJECT_ID", PROJECT),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub(crate) fn command(&self, env: &BTreeMap<String, String>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ikit"));
        command
            .args(args)
            .current_dir(self.work.path())
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `ikit args` with [`Harness::env`] to its end.
    pub(crate) async fn ikit(&self, args: &[&str]) -> Run {
        self.ikit_with(&self.env(), args).await
    }

    pub(crate) async fn ikit_with(&self, env: &BTreeMap<String, String>, args: &[&str]) -> Run {
        let mut command = self.command(env, args);
        let output = tokio::task::spawn_blocking(move || command.output().expect("ikit runs"))
            .await
            .unwrap();
        Run::from(output)
    }

    pub(crate) fn work_file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// A finished `ikit` run.
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub(crate) fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "ikit failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Neither stream holds any of `values`.
    pub(crate) fn leaks_none(&self, values: &[&str]) {
        for v in values {
            assert!(!self.stdout.contains(v), "stdout holds {v:?}:\n{}", self.stdout);
            assert!(!self.stderr.contains(v), "stderr holds {v:?}:\n{}", self.stderr);
        }
    }
}

/// Waits (bounded) until `path` holds text for which `done` is true; returns it.
pub(crate) async fn wait_for_file(path: &Path, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..600 {
        if let Some(text) = std::fs::read_to_string(path).ok().filter(|t| done(t)) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never reached the expected content", path.display());
}
