//! Startup and shutdown: builds the client, cache, key manager, audit log and background tasks
//! from a [`HealthConfig`], binds the listener, serves until told to stop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ikit_client::{CachedClient, Client, ClientConfig, ListenerHandle};
use ikit_common::audit::{AuditEvent, AuditLog, AuditOptions, Outcome};
use ikit_common::clock::{Clock, SystemClock};
use ikit_common::events::SecretChangeEvent;
use ikit_keys::KeyManager;
use ikit_keys::infisical::InfisicalStore;
use ikit_keys::lock::{LocalLock, PgAdvisoryLock, RedisLock, RotationLock};
use ikit_keys::propagate::RingWatch;
use tokio::sync::watch;

use crate::config::{AES_FOLDER, HealthConfig, JWT_FOLDER};
use crate::error::HealthError;
use crate::rules::Probe;

/// How many change events the status page keeps.
const EVENTS_KEPT: usize = 20;
/// How long to wait between attempts to load keys that could not be loaded.
const LOAD_RETRY: Duration = Duration::from_secs(5);
/// Redis lock expiry: ikit-keys refuses a lease that does not outlast one store call (its default
/// store timeout, 125 s, which covers ikit-client's default retry budget) plus a lock call (5 s).
const REDIS_LOCK_TTL_MS: u64 = 180_000;

/// What the binary does not build itself: tests and `ikit dev` pass their own.
#[derive(Default)]
pub struct Parts {
    /// Default: the system clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Default: a cache built from the settings (shared with other services in `ikit dev`).
    pub cache: Option<CachedClient>,
    /// Default: `ikit_common::audit::AuditLog` over `settings.database_url`.
    pub audit: Option<AuditLog>,
}

/// Everything handlers share.
pub(crate) struct AppState {
    pub(crate) config: HealthConfig,
    pub(crate) keys: Arc<KeyManager>,
    pub(crate) cache: CachedClient,
    pub(crate) audit: AuditLog,
    pub(crate) audit_backend: &'static str,
    pub(crate) clock: Arc<dyn Clock>,
    http: reqwest::Client,
    redis: Option<redis::Client>,
    pub(crate) status_url: String,
    pub(crate) load_error: Mutex<Option<String>>,
    pub(crate) events: Mutex<VecDeque<SecretChangeEvent>>,
    /// Held while this replica runs an admin rotation: a second call answers `busy` at once.
    pub(crate) rotating: tokio::sync::Mutex<()>,
}

impl AppState {
    /// Probes Infisical (`GET /api/status` and the access token), bounded by the probe timeout.
    pub(crate) async fn probe(&self) -> Probe {
        let limit = self.config.probe_timeout;
        let status = async {
            let started = Instant::now();
            match tokio::time::timeout(limit, self.http.get(&self.status_url).send()).await {
                Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
                Ok(Err(e)) if e.is_connect() => Err("connection refused".to_owned()),
                Ok(Err(e)) if e.is_timeout() => Err("timed out".to_owned()),
                Ok(Err(_)) => Err("request failed".to_owned()),
                Ok(Ok(r)) if r.status().is_success() => Ok(started.elapsed()),
                Ok(Ok(r)) => Err(format!("answered {}", r.status().as_u16())),
            }
        };
        let token = async {
            match tokio::time::timeout(limit, self.cache.client().ensure_token()).await {
                Err(_) => Err("login did not finish in time".to_owned()),
                Ok(Err(e)) => Err(format!("login failed ({})", e.kind())),
                Ok(Ok(())) => Ok(()),
            }
        };
        let (status, token) = tokio::join!(status, token);
        let token_expires_in = self
            .cache
            .client()
            .token_expires_at()
            .await
            .map(|at| at.duration_since(self.clock.now()).unwrap_or_default());
        Probe { status, token, token_expires_in }
    }

    /// `(configured, up)` for Redis, by a `PING` bounded by one second.
    pub(crate) async fn redis_up(&self) -> (bool, bool) {
        let Some(client) = &self.redis else { return (false, false) };
        let ping = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        let up = matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)));
        (true, up)
    }

    /// Records an admin action; a failure is logged, never hidden from the log.
    pub(crate) async fn record(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: Outcome,
        details: serde_json::Value,
    ) {
        let event = AuditEvent::new(self.clock.now_ms(), actor, action, target, outcome)
            .with_details(details);
        if let Err(e) = self.audit.record(event).await {
            tracing::error!(error = %e, action, "audit entry for an admin action was not kept");
        }
    }

    fn remember(&self, event: SecretChangeEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }
}

/// A running `ikit-health`: bound, serving, with its background tasks.
pub struct Application {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    listener: Option<ListenerHandle>,
    ring_watch: RingWatch,
    scheduled: watch::Receiver<u64>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn lock_for(config: &HealthConfig) -> Result<Arc<dyn RotationLock>, HealthError> {
    let settings = &config.settings;
    let name =
        format!("ikit-keys-rotation:{}:{}", config.project_id, settings.infisical.environment);
    let url = &settings.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgAdvisoryLock::from_url(url, &name)?));
    }
    if let Some(redis_url) = &settings.redis_url {
        let client = redis::Client::open(redis_url.as_str())
            .map_err(|_| HealthError::Config("IKIT_REDIS_URL is not a valid redis url".into()))?;
        return Ok(Arc::new(RedisLock::new(
            client,
            format!("ikit:lock:{name}"),
            REDIS_LOCK_TTL_MS,
        )));
    }
    // SQLite means one process (the embedded default): an in-process lock is the whole truth.
    Ok(Arc::new(LocalLock::default()))
}

impl Application {
    /// Builds everything from the configuration and starts serving on `settings.health_addr`
    /// (port 0 picks a free port: read it back with [`Application::port`]).
    pub async fn build(config: HealthConfig) -> Result<Self, HealthError> {
        Self::build_with(config, Parts::default()).await
    }

    pub async fn build_with(config: HealthConfig, parts: Parts) -> Result<Self, HealthError> {
        let settings = &config.settings;
        let clock = parts.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let cache = match parts.cache {
            Some(cache) => cache,
            None => {
                let client =
                    Client::new(ClientConfig::from_settings(settings)?.with_clock(clock.clone()))?;
                CachedClient::builder().client(client).settings(settings)?.build()?
            }
        };
        let audit = match parts.audit {
            Some(audit) => audit,
            None => AuditLog::connect(
                &settings.database_url,
                AuditOptions::new(&config.spool_dir).clock(clock.clone()),
            )?,
        };
        if let Err(e) = audit.migrate().await {
            // the log spools until the database answers; health shows it
            tracing::warn!(error = %e, "audit database not ready, entries will be spooled");
        }
        let audit_backend =
            if settings.database_url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
        // Keys are read uncached: a rotation must see what is stored, not a cached copy.
        let store = InfisicalStore::new(
            cache.client().clone(),
            config.project_id.clone(),
            settings.infisical.environment.clone(),
        );
        let mut builder = KeyManager::builder(Arc::new(store))
            .lock(lock_for(&config)?)
            .audit(Arc::new(audit.clone()))
            .clock(clock.clone())
            .policy(config.policy.clone())
            .folders(JWT_FOLDER, AES_FOLDER);
        if settings.redis_url.is_some() {
            // every committed step tells the other replicas to reload (without Redis there are none)
            builder = builder.publisher(Arc::new(cache.clone()));
        }
        let keys = Arc::new(builder.build()?);
        let redis = match &settings.redis_url {
            Some(url) => Some(redis::Client::open(url.as_str()).map_err(|_| {
                HealthError::Config("IKIT_REDIS_URL is not a valid redis url".into())
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.probe_timeout)
            .build()
            .map_err(|e| HealthError::Config(format!("cannot build the probe client: {e}")))?;
        let status_url = format!("{}/status", settings.infisical.api_url.trim_end_matches('/'));
        crate::routes::register_metrics();

        let listener = tokio::net::TcpListener::bind(settings.health_addr)
            .await
            .map_err(|e| HealthError::Bind(settings.health_addr, e))?;
        let addr = listener.local_addr().map_err(|e| HealthError::Bind(settings.health_addr, e))?;

        let state = Arc::new(AppState {
            config,
            keys,
            cache,
            audit,
            audit_backend,
            clock,
            http,
            redis,
            status_url,
            load_error: Mutex::new(None),
            events: Mutex::new(VecDeque::new()),
            rotating: tokio::sync::Mutex::new(()),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();

        // Keys first, so /readyz is true as soon as they are there; a failure is retried in the
        // background and shown by /api/v1/infisical/health.
        let loaded = load_keys(&state).await;
        if !loaded {
            let (state, mut stopped) = (state.clone(), stopped.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(LOAD_RETRY) => {}
                    }
                    if load_keys(&state).await {
                        return;
                    }
                }
            }));
        }

        // A change event or an invalidation under the key folders reloads the ring.
        let ring_watch = state.keys.attach(&state.cache);
        // Change events, kept for the status page.
        let mut events = state.cache.subscribe_stream("*", 256);
        {
            let (state, mut stopped) = (state.clone(), stopped.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        event = events.recv() => {
                            let Some(event) = event else { return };
                            state.remember(event);
                        }
                    }
                }
            }));
        }
        let listener_handle = state.cache.start_listener();

        // The scheduled rotations: every replica ticks, the rotation lock lets one act.
        let (scheduled_tx, scheduled) = watch::channel(0u64);
        {
            let (task, mut outcomes) = ikit_keys::spawn_scheduler(
                state.keys.clone(),
                state.config.rotation_check_every,
                stopped.clone(),
            );
            tasks.push(task);
            tasks.push(tokio::spawn(async move {
                while let Some(outcome) = outcomes.recv().await {
                    if !outcome.steps.is_empty() {
                        tracing::info!(steps = outcome.steps.len(), "scheduled key rotation ran");
                    }
                    scheduled_tx.send_modify(|n| *n += 1);
                }
            }));
        }

        let router = crate::routes::router(state.clone());
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, "ikit-health listening");
        Ok(Self {
            addr,
            state,
            stop,
            server,
            tasks,
            listener: listener_handle,
            ring_watch,
            scheduled,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (the bound address; an unspecified host reads as loopback).
    pub fn base_url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(host, self.addr.port()))
    }

    /// The key manager this service rotates and publishes.
    pub fn keys(&self) -> &Arc<KeyManager> {
        &self.state.keys
    }

    pub fn cache(&self) -> &CachedClient {
        &self.state.cache
    }

    pub fn audit(&self) -> &AuditLog {
        &self.state.audit
    }

    /// Counts the scheduler's completed runs; wait on it to see a scheduled rotation happen.
    pub fn scheduled_runs(&self) -> watch::Receiver<u64> {
        self.scheduled.clone()
    }

    /// Serves until `signal` completes, then shuts down cleanly.
    pub async fn run_until_stopped(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), HealthError> {
        signal.await;
        self.shutdown().await
    }

    /// Stops accepting, lets requests in flight finish, stops the background tasks.
    pub async fn shutdown(self) -> Result<(), HealthError> {
        let _ = self.stop.send(true);
        if let Some(listener) = self.listener {
            listener.shutdown().await;
        }
        self.ring_watch.stop().await;
        for task in self.tasks {
            let _ = task.await;
        }
        match self.server.await {
            Ok(result) => result.map_err(HealthError::Serve),
            Err(e) => Err(HealthError::Serve(std::io::Error::other(e))),
        }
    }
}

/// One attempt to load (and repair) the keys. Returns whether they are loaded.
async fn load_keys(state: &AppState) -> bool {
    let result = state.keys.load().await;
    let mut error = state.load_error.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(outcome) => {
            *error = None;
            if !outcome.steps.is_empty() {
                tracing::info!(steps = outcome.steps.len(), "keys loaded and settled");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "keys could not be loaded, retrying");
            *error = Some(e.to_string());
            false
        }
    }
}
