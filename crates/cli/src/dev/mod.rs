//! `ikit dev`: the whole system in one process with nothing installed. The emulator seeded with a
//! demo project (dev, staging, prod; a machine identity; demo secrets; the `/auth/jwt` and
//! `/auth/aes` folders), the webhook and health services, a SQLite audit log and the in-process
//! cache (Redis when `IKIT_REDIS_URL` is set). The first JWT and AES keys are created by the
//! health service's key manager as it starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ikit_common::SecretValue;
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};
use ikit_health::{Application as Health, HealthConfig};
use rand::RngCore;
use serde_json::{Value, json};

use crate::error::CliError;

mod bridge;
mod webhook;

pub const DEMO_SEED: &str = include_str!("seed.json");
pub const DEMO_PROJECT_ID: &str = "5f0c1a2e-0000-4000-8000-00000000demo";
pub const DEMO_ENVIRONMENT: &str = "dev";
pub const DEMO_CLIENT_ID: &str = "ikit-dev-client";
pub const DEMO_CLIENT_SECRET: &str = "ikit-dev-client-secret";
pub const DEFAULT_STATE_FILE: &str = ".ikit/dev.json";

/// `ikit dev`: starts the stack, prints the banner, serves until `stop`, stops everything.
pub async fn run(
    args: crate::DevArgs,
    env: &BTreeMap<String, String>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let options = DevOptions {
        emulator_addr: args.emulator_addr,
        webhook_addr: args.webhook_addr,
        health_addr: args.health_addr,
        state_file: args.state_file,
        data: args.data,
        redis_url: env.get("IKIT_REDIS_URL").filter(|v| !v.trim().is_empty()).cloned(),
        log_filter: env.get("RUST_LOG").cloned(),
    };
    let stack = DevStack::start(options.clone()).await?;
    println!("{}", stack.info().banner(&options.state_file));
    stop.await;
    eprintln!("ikit dev: stopping");
    stack.stop().await;
    Ok(())
}

/// Where the parts listen and keep their state.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub emulator_addr: SocketAddr,
    pub webhook_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Written (0600) with the URLs and credentials once everything is up.
    pub state_file: PathBuf,
    /// Keeps the emulator's state, the audit log and the tokens across restarts; a temporary
    /// directory (gone at exit) when unset.
    pub data: Option<PathBuf>,
    /// `IKIT_REDIS_URL`: Redis for the L2 cache and fan-out instead of the in-process cache only.
    pub redis_url: Option<String>,
    /// `RUST_LOG` for the services' settings.
    pub log_filter: Option<String>,
}

impl DevOptions {
    /// Everything on loopback port 0 (tests).
    pub fn ephemeral(state_file: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            emulator_addr: any,
            webhook_addr: any,
            health_addr: any,
            state_file: state_file.into(),
            data: None,
            redis_url: None,
            log_filter: None,
        }
    }
}

/// What a person (or a script) needs to use the stack; written to the state file.
pub struct DevInfo {
    pub emulator_url: String,
    /// `None` while the webhook service is not part of the build.
    pub webhook_url: Option<String>,
    pub health_url: String,
    pub admin_token: SecretValue,
    pub webhook_secret: SecretValue,
    pub project_id: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: SecretValue,
}

impl DevInfo {
    /// The state file's JSON (holds credentials: written 0600 only).
    pub fn to_json(&self) -> Value {
        json!({
            "emulator_url": self.emulator_url,
            "webhook_url": self.webhook_url,
            "health_url": self.health_url,
            "admin_token": self.admin_token.expose(),
            "webhook_secret": self.webhook_secret.expose(),
            "project_id": self.project_id,
            "environment": self.environment,
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
        })
    }

    /// What `ikit dev` prints once the stack is up: URLs, credentials, three things to try.
    pub fn banner(&self, state_file: &Path) -> String {
        let webhook = match &self.webhook_url {
            Some(url) => format!("{url}/api/v1/infisical/webhook (registered in the emulator)"),
            None => "not part of this build yet".to_owned(),
        };
        let h = &self.health_url;
        let token = self.admin_token.expose();
        format!(
            "ikit dev: the stack is up\n\
             \n  status page   {h}/\
             \n  health        {h}/api/v1/infisical/health\
             \n  JWKS          {h}/.well-known/jwks.json\
             \n  metrics       {h}/metrics\
             \n  emulator      {emu} (Infisical API at {emu}/api)\
             \n  webhook       {webhook}\
             \n\n  admin token   {token}\
             \n  project       {project} (environment {env})\
             \n  identity      INFISICAL_UNIVERSAL_AUTH_CLIENT_ID={cid} INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET={csecret}\
             \n  state file    {state} (mode 0600)\
             \n\nTry next:\
             \n  curl -s {h}/api/v1/infisical/health\
             \n  curl -s -X POST {h}/api/v1/infisical/rotate -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"rotation_type\":\"jwt\",\"force\":true,\"reason\":\"trying ikit dev\"}}'\
             \n  curl -s {h}/.well-known/jwks.json\
             \n\nCtrl-C stops everything.\n",
            emu = self.emulator_url,
            project = self.project_id,
            env = self.environment,
            cid = self.client_id,
            csecret = self.client_secret.expose(),
            state = state_file.display(),
        )
    }
}

/// The running stack.
pub struct DevStack {
    info: DevInfo,
    emulator: RunningEmulator,
    webhook: Option<webhook::WebhookService>,
    health: Health,
    /// The in-process path of change events when there is no Redis (see `bridge`).
    bridge: Option<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// The temporary data directory when `--data` was not given (removed on drop).
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for DevStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevStack")
            .field("emulator_url", &self.info.emulator_url)
            .field("health_url", &self.info.health_url)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random_token(prefix: &str) -> SecretValue {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretValue::new(format!("{prefix}{}", hex::encode(bytes)))
}

/// Tokens kept from an earlier run with the same data directory, so scripts keep working.
fn previous_tokens(state_file: &Path) -> Option<(SecretValue, SecretValue)> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    let admin = state["admin_token"].as_str().filter(|t| t.len() >= 16)?;
    let webhook = state["webhook_secret"].as_str().filter(|t| t.len() >= 16)?;
    Some((SecretValue::new(admin), SecretValue::new(webhook)))
}

pub(crate) fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl DevStack {
    /// Starts the emulator, the webhook service (when built in) and the health service, creates
    /// the first keys, registers the webhook and writes the state file.
    pub async fn start(options: DevOptions) -> Result<Self, CliError> {
        let (data_dir, scratch) = match &options.data {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
                (dir.clone(), None)
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("ikit-dev-")
                    .tempdir()
                    .map_err(|e| CliError::io(Path::new("temporary directory"), e))?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let (admin_token, webhook_secret) = options
            .data
            .as_ref()
            .and_then(|_| previous_tokens(&options.state_file))
            .unwrap_or_else(|| (random_token("ikit-admin-"), random_token("ikit-whsec-")));

        let seed =
            Seed::from_json(DEMO_SEED).map_err(|e| CliError::Dev(format!("demo seed: {e}")))?;
        let mut emulator_config = EmulatorConfig::new(seed)
            .addr(options.emulator_addr)
            .webhook_coalesce(std::time::Duration::from_millis(200));
        if options.data.is_some() {
            emulator_config = emulator_config.data_file(data_dir.join("emulator.json"));
        }
        let emulator = Emulator::start(emulator_config)
            .await
            .map_err(|e| CliError::Dev(format!("the emulator did not start: {e}")))?;
        let emulator_url = emulator.base_url();

        // the environment every service of the stack reads its settings from
        let mut env: BTreeMap<String, String> = [
            ("INFISICAL_API_URL", emulator_url.clone()),
            ("INFISICAL_PROJECT_ID", DEMO_PROJECT_ID.to_owned()),
            ("IKIT_INFISICAL_ENVIRONMENT", DEMO_ENVIRONMENT.to_owned()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", DEMO_CLIENT_ID.to_owned()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", DEMO_CLIENT_SECRET.to_owned()),
            ("IKIT_DATABASE_URL", sqlite_url(&data_dir.join("ikit.db"))),
            ("IKIT_ADMIN_TOKEN", admin_token.expose().to_owned()),
            ("IKIT_WEBHOOK_SECRET", webhook_secret.expose().to_owned()),
            ("IKIT_LOG_FORMAT", "pretty".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(url) = &options.redis_url {
            env.insert("IKIT_REDIS_URL".into(), url.clone());
        }
        if let Some(filter) = &options.log_filter {
            env.insert("RUST_LOG".into(), filter.clone());
        }

        let keep = options.data.is_some();
        let webhook = match webhook::start(&env, options.webhook_addr, &data_dir, keep).await {
            Ok(webhook) => webhook,
            Err(e) => {
                emulator.shutdown().await;
                return Err(e);
            }
        };

        let mut health_env = env.clone();
        health_env.insert("IKIT_HEALTH_ADDR".into(), options.health_addr.to_string());
        health_env.insert(
            "IKIT_AUDIT_SPOOL_DIR".into(),
            data_dir.join("spool-health").display().to_string(),
        );
        let health = match HealthConfig::load(None, &health_env) {
            Ok(config) => Health::build(config)
                .await
                .map_err(|e| CliError::Dev(format!("ikit-health did not start: {e}"))),
            Err(errors) => Err(CliError::Dev(format!("ikit-health settings: {errors}"))),
        };
        let health = match health {
            Ok(health) => health,
            Err(e) => {
                if let Some(w) = webhook {
                    w.stop().await;
                }
                emulator.shutdown().await;
                return Err(e);
            }
        };

        let webhook_url = webhook.as_ref().map(|w| w.base_url.clone());
        if let Some(url) = &webhook_url {
            let hook = format!("{url}/api/v1/infisical/webhook");
            if let Err(e) = webhook::register(&emulator_url, &hook, webhook_secret.expose()).await {
                tracing::warn!(error = %e, "the emulator webhook was not registered");
            }
        }

        // without Redis, the events reach the shared cache through the webhook's event stream
        let bridge = match (&webhook_url, &options.redis_url) {
            (Some(url), None) => {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(bridge::run(
                    format!("{url}/api/v1/infisical/events"),
                    admin_token.clone(),
                    health.cache().clone(),
                    stopped,
                ));
                Some((stop, task))
            }
            _ => None,
        };

        let info = DevInfo {
            emulator_url,
            webhook_url,
            health_url: health.base_url(),
            admin_token,
            webhook_secret,
            project_id: DEMO_PROJECT_ID.to_owned(),
            environment: DEMO_ENVIRONMENT.to_owned(),
            client_id: DEMO_CLIENT_ID.to_owned(),
            client_secret: SecretValue::new(DEMO_CLIENT_SECRET),
        };
        let stack = Self { info, emulator, webhook, health, bridge, _scratch: scratch };
        let state = serde_json::to_vec_pretty(&stack.info.to_json()).unwrap_or_default();
        if let Err(e) = write_private(&options.state_file, &state) {
            stack.stop().await;
            return Err(e);
        }
        Ok(stack)
    }

    pub fn info(&self) -> &DevInfo {
        &self.info
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn emulator(&self) -> &RunningEmulator {
        &self.emulator
    }

    /// Stops the services, then the emulator they talk to.
    pub async fn stop(self) {
        if let Some((stop, task)) = self.bridge {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Err(e) = self.health.shutdown().await {
            tracing::warn!(error = %e, "ikit-health did not stop cleanly");
        }
        if let Some(webhook) = self.webhook {
            webhook.stop().await;
        }
        self.emulator.shutdown().await;
    }
}

/// Writes `bytes` to `path` readable by its owner only, atomically (the workspace's one
/// `ikit_common::files::write_private`), creating the directory first.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
    ikit_common::files::write_private(path, bytes).map_err(|e| CliError::io(path, e))
}
