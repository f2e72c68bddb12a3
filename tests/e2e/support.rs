//! The compose topology as processes on loopback: `ikit-emulator`, `ikit-webhook` replicas and
//! `ikit-health`, built by cargo next to this test executable, over the machine's PostgreSQL (a
//! fresh database per stack) and Redis. Each stack has its own project id, and every Redis key
//! and message the services write is scoped by project, so stacks running in parallel do not
//! see each other (the binaries have no key-prefix setting).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ikit_common::testsuite::{TestDatabase, TestRedis};
use serde_json::{Value, json};

pub(crate) const WEBHOOK_SECRET: &str = "e2e-webhook-secret-0001";
pub(crate) const STATE_KEY: &str = "e2e-state-key-0123456789abcdef0123456789";
pub(crate) const EVENTS_TOKEN: &str = "e2e-events-token-0123456789";
pub(crate) const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
pub(crate) const EMULATOR_TOKEN: &str = "e2e-emulator-admin-token";
pub(crate) const CLIENT_ID: &str = "e2e-client";
pub(crate) const CLIENT_SECRET: &str = "e2e-client-secret";
/// How long any one wait of the suite may take before it fails with the processes' logs.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// A binary of the workspace: next to this test executable's `deps/` folder, where `cargo test
/// --workspace` and `make e2e` build it.
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{name} is not built at {}: run `make e2e` (or `cargo build -p ikit-webhook -p ikit-health \
         -p ikit-emulator -p ikit --bins` first); `cargo test --workspace` builds it too",
        path.display()
    );
    path
}

/// A loopback port nobody listens on right now (the process started next binds it).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// One child process with its output in a log file; killed (SIGKILL) when dropped.
pub(crate) struct Proc {
    pub(crate) name: String,
    /// `http://127.0.0.1:<port>` for a service; empty for a process that listens nowhere.
    pub(crate) base: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &str,
        bin: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        port: Option<u16>,
        dir: &Path,
    ) -> Self {
        let work = dir.join(name);
        std::fs::create_dir_all(&work).expect("process dir");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(binary(bin))
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Self {
            name: name.to_owned(),
            base: port.map(|port| format!("http://127.0.0.1:{port}")).unwrap_or_default(),
            child: Some(child),
            log,
        }
    }

    /// The process's output so far, for failure messages.
    pub(crate) fn logs(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!(
            "--- {} ({})\n{}",
            self.name,
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// SIGKILL: no graceful shutdown, leases and rows stay as they were.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (through `kill(1)`: the suite has no libc binding); a process already gone
    /// is not an error here, its exit is what the caller looks at.
    fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it yields a value, or fails naming `what` with the stack's logs.
pub(crate) async fn eventually<T, F, Fut>(stack: &Stack, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", stack.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) struct Stack {
    pub(crate) project: String,
    pub(crate) db: TestDatabase,
    /// The machine's Redis (its key prefix is unused: the binaries have no prefix setting).
    pub(crate) redis: TestRedis,
    pub(crate) http: reqwest::Client,
    pub(crate) emulator: Proc,
    /// The port the emulator delivers webhooks to: replica `a`.
    pub(crate) hook_port: u16,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Stack {
    /// The emulator with a project of its own (`/app/GREETING`, the key folders, a webhook to
    /// the port replica `a` will listen on) and a fresh PostgreSQL database. No service yet.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let project = uuid::Uuid::new_v4().to_string();
        let hook_port = free_port();
        let seed = json!({
            "projects": [{"id": project, "slug": format!("e2e-{}", &project[..8]), "environments": ["dev"]}],
            "identities": [{"name": "e2e", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
                            "accessTokenTTL": 3600, "accessTokenMaxTTL": 86400, "projects": [project]}],
            "folders": [{"projectId": project, "environment": "dev", "path": "/auth/jwt"},
                        {"projectId": project, "environment": "dev", "path": "/auth/aes"}],
            "secrets": [{"projectId": project, "environment": "dev", "path": "/app", "key": "GREETING", "value": "hello-1"}],
            "webhooks": [{"projectId": project, "environment": "dev", "secretPath": "/**",
                          "url": format!("http://127.0.0.1:{hook_port}/api/v1/infisical/webhook"),
                          "secretKey": WEBHOOK_SECRET}]
        });
        let seed_file = dir.path().join("seed.json");
        std::fs::write(&seed_file, seed.to_string()).expect("write seed");
        let port = free_port();
        let args = [
            "--addr".to_owned(),
            format!("127.0.0.1:{port}"),
            "--seed".to_owned(),
            seed_file.display().to_string(),
            "--admin-token".to_owned(),
            EMULATOR_TOKEN.to_owned(),
            "--webhook-delay-ms".to_owned(),
            "50".to_owned(),
        ];
        let env = BTreeMap::from([("RUST_LOG".to_owned(), "warn".to_owned())]);
        let emulator =
            Proc::spawn("emulator", "ikit-emulator", &args, &env, Some(port), dir.path());
        let stack = Self {
            project,
            db: TestDatabase::postgres().await,
            redis: TestRedis::new().await,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http"),
            emulator,
            hook_port,
            procs: Vec::new(),
            dir,
        };
        let url = format!("{}/api/status", stack.emulator.base);
        stack.wait_for_ok(&url, "the emulator").await;
        stack
    }

    fn shared_env(&self) -> BTreeMap<String, String> {
        [
            ("INFISICAL_API_URL", self.emulator.base.as_str()),
            ("INFISICAL_PROJECT_ID", self.project.as_str()),
            ("IKIT_INFISICAL_ENVIRONMENT", "dev"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET),
            ("IKIT_DATABASE_URL", self.db.url()),
            ("IKIT_REDIS_URL", self.redis.url()),
            ("IKIT_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Starts an `ikit-webhook` replica (`a` listens on the port the webhook is registered
    /// with) and waits until it is ready.
    pub(crate) async fn webhook(&mut self, name: &str, extra: &[(&str, &str)]) -> usize {
        let port = if name == "a" { self.hook_port } else { free_port() };
        self.webhook_on(name, port, extra).await
    }

    /// [`Stack::webhook`] on a port chosen beforehand, for a client told the address before the
    /// replica exists.
    pub(crate) async fn webhook_on(
        &mut self,
        name: &str,
        port: u16,
        extra: &[(&str, &str)],
    ) -> usize {
        let mut env = self.shared_env();
        for (k, v) in [
            ("IKIT_WEBHOOK_ADDR", format!("127.0.0.1:{port}")),
            ("IKIT_HEALTH_ADDR", format!("127.0.0.1:{}", free_port())),
            ("IKIT_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("IKIT_WEBHOOK_STATE_KEY", STATE_KEY.to_owned()),
            ("IKIT_EVENTS_TOKEN", EVENTS_TOKEN.to_owned()),
            ("IKIT_WEBHOOK_COALESCE", "0s".to_owned()),
            ("IKIT_WEBHOOK_LEASE", "2s".to_owned()),
            ("IKIT_WEBHOOK_WORKERS", "2".to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let proc = Proc::spawn(
            &format!("webhook-{name}"),
            "ikit-webhook",
            &[],
            &env,
            Some(port),
            self.dir.path(),
        );
        self.add_ready(proc).await
    }

    /// Starts an `ikit-health` process and waits until its keys are loaded.
    pub(crate) async fn health(&mut self, name: &str) -> usize {
        let port = free_port();
        let mut env = self.shared_env();
        let spool = self.dir.path().join(format!("spool-{name}"));
        for (k, v) in [
            ("IKIT_HEALTH_ADDR", format!("127.0.0.1:{port}")),
            ("IKIT_WEBHOOK_ADDR", format!("127.0.0.1:{}", free_port())),
            ("IKIT_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("IKIT_AUDIT_SPOOL_DIR", spool.display().to_string()),
            ("IKIT_ROTATION_CHECK_EVERY", "1s".to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        let proc = Proc::spawn(
            &format!("health-{name}"),
            "ikit-health",
            &[],
            &env,
            Some(port),
            self.dir.path(),
        );
        self.add_ready(proc).await
    }

    async fn add_ready(&mut self, proc: Proc) -> usize {
        let url = format!("{}/readyz", proc.base);
        let name = proc.name.clone();
        self.procs.push(proc);
        let index = self.procs.len() - 1;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.procs[index].exited() {
                panic!("{name} exited with {status}\n{}", self.logs());
            }
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return index;
            }
            if Instant::now() > deadline {
                panic!("{name} never became ready\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A path inside the stack's temporary folder (removed with the stack).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The variables `ikit` reads for a machine-identity login to this stack's emulator and
    /// project, a HOME of its own, and the caller's PATH (for the shell the child runs in).
    pub(crate) fn cli_env(&self) -> BTreeMap<String, String> {
        let home = self.path("ikit-home");
        std::fs::create_dir_all(&home).expect("ikit home");
        [
            ("HOME", home.display().to_string()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("INFISICAL_DOMAIN", self.emulator.base.clone()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID.to_owned()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("INFISICAL_PROJECT_ID", self.project.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts the `ikit` CLI with `args` and `env` (it listens nowhere, so there is no
    /// readiness to wait for); its output goes to `ikit-<name>.log`.
    pub(crate) fn cli(
        &mut self,
        name: &str,
        args: &[&str],
        env: &BTreeMap<String, String>,
    ) -> usize {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let proc = Proc::spawn(&format!("ikit-{name}"), "ikit", &args, env, None, self.dir.path());
        self.procs.push(proc);
        self.procs.len() - 1
    }

    /// SIGTERM, then the exit status (failing with the logs if it takes longer than
    /// [`PATIENCE`]).
    pub(crate) async fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        self.procs[index].terminate();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.procs[index].exited() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("{} ignored SIGTERM\n{}", self.procs[index].name, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn proc(&self, index: usize) -> &Proc {
        &self.procs[index]
    }

    pub(crate) fn kill(&mut self, index: usize) {
        self.procs[index].kill();
    }

    /// Fails when any process's log holds one of `values` (credentials, secret values).
    pub(crate) fn assert_logs_hold_none_of(&self, values: &[&str]) {
        for proc in std::iter::once(&self.emulator).chain(&self.procs) {
            let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
            assert!(!text.is_empty() || proc.name == "emulator", "{} logged nothing", proc.name);
            for value in values {
                assert!(!text.contains(value), "{} logged a secret ({value:?})", proc.name);
            }
        }
    }

    pub(crate) fn logs(&self) -> String {
        std::iter::once(&self.emulator)
            .chain(&self.procs)
            .map(Proc::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn wait_for_ok(&self, url: &str, what: &str) {
        let http = self.http.clone();
        eventually(self, what, || {
            let request = http.get(url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// The emulator's admin API.
    pub(crate) async fn emulator_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> u16 {
        self.http
            .request(method, format!("{}{path}", self.emulator.base))
            .bearer_auth(EMULATOR_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("emulator admin request")
            .status()
            .as_u16()
    }

    /// How many `GET /api/v*` requests the emulator has received so far (counted on arrival,
    /// before any injected latency).
    pub(crate) async fn emulator_api_reads(&self) -> u64 {
        let url = format!("{}/__emulator/counters", self.emulator.base);
        let body: Value = self
            .http
            .get(url)
            .bearer_auth(EMULATOR_TOKEN)
            .send()
            .await
            .expect("counters")
            .json()
            .await
            .expect("counters json");
        body["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["method"] == "GET" && c["route"].as_str().is_some_and(|r| r.starts_with("/api/v"))
            })
            .filter_map(|c| c["count"].as_u64())
            .sum()
    }

    /// Changes `/app/GREETING` through the Infisical API, as an application would; the emulator
    /// then delivers the signed webhook to replica `a`.
    pub(crate) async fn change_greeting(&self, value: &str) {
        let login: Value = self
            .http
            .post(format!("{}/api/v1/auth/universal-auth/login", self.emulator.base))
            .json(&json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        let token = login["accessToken"].as_str().expect("access token");
        let response = self
            .http
            .patch(format!("{}/api/v3/secrets/raw/GREETING", self.emulator.base))
            .bearer_auth(token)
            .json(&json!({"workspaceId": self.project, "environment": "dev", "secretPath": "/app",
                          "secretValue": value}))
            .send()
            .await
            .expect("update");
        assert!(
            response.status().is_success(),
            "update refused: {}",
            response.text().await.unwrap_or_default()
        );
    }
}

/// An open event stream of one webhook replica: frames parsed as they arrive.
pub(crate) struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    pub(crate) async fn open(stack: &Stack, replica: usize) -> Self {
        let url = format!("{}/api/v1/infisical/events", stack.proc(replica).base);
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(EVENTS_TOKEN)
            .send()
            .await
            .expect("event stream");
        assert_eq!(response.status(), 200, "event stream refused");
        Self { response, buffer: String::new() }
    }

    /// The next event (JSON of `ikit_common::events::SecretChangeEvent`), heartbeats skipped.
    pub(crate) async fn next(&mut self, stack: &Stack) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|v| v.strip_prefix(' ').unwrap_or(v))
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data.join("\n")).expect("event JSON");
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => {
                    self.buffer.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
                }
                Ok(other) => panic!("event stream ended: {other:?}\n{}", stack.logs()),
                Err(_) => panic!("no event within {PATIENCE:?}\n{}", stack.logs()),
            }
        }
    }
}
