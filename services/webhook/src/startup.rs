//! Wiring: [`Service`] (state, workers, router: mountable into an application's own axum
//! `Router`) and [`Application`] (the service on a listener, for the binary and black-box tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use ikit_client::{Client, ClientConfig, RetryPolicy};
use ikit_common::audit::AuditOptions;
use ikit_common::clock::{Clock, SystemClock};
use ikit_common::events::DEFAULT_REDIS_PREFIX;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookSettings;
use crate::error::WebhookError;
use crate::fanout::Fanout;
use crate::intake::{Intake, IntakeTask};
use crate::redis_link::RedisLink;
use crate::replay::{ReplayBackend, ReplayCache};
use crate::state::AppState;
use crate::store::Db;
use crate::{baseline, openapi, receive, sse, worker};

const HOUSEKEEPING: Duration = Duration::from_secs(5);
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// What the settings do not say: injected time, the Infisical client's tuning, names.
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// The Infisical client; default `ClientConfig::from_settings` with short retries (the queue
    /// does the long ones).
    pub client_config: Option<ClientConfig>,
    pub redis_prefix: String,
    pub audit_spool_dir: PathBuf,
    /// Names this process's leases; random by default.
    pub instance_id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            client_config: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            audit_spool_dir: PathBuf::from(".ikit-webhook/audit-spool"),
            instance_id: None,
        }
    }
}

async fn open_db(url: &str) -> Result<Db, WebhookError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)?;
        Ok(Db::Postgres(pool))
    } else {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        if let Some(parent) = connect.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                WebhookError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // One connection: SQLite has one writer at a time anyway, and waiting in the pool's
        // queue wakes the next statement at once, where contending connections wait in
        // SQLite's busy handler, which sleeps and retries (the p99 went to hundreds of ms).
        // Every statement here is short and no code holds a connection while it asks for
        // another.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(connect);
        Ok(Db::Sqlite(pool))
    }
}

/// The webhook service without a listener: mount [`Service::router`] into any axum app.
pub struct Service {
    state: Arc<AppState>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Ends the receiver's writer, after the server stopped taking requests.
    intake_stop: CancellationToken,
    intake_task: Option<IntakeTask>,
}

impl Service {
    /// Opens the database (migrating it), Redis and the Infisical client, takes the baseline
    /// when configured, and starts the workers.
    pub async fn start(settings: WebhookSettings, options: Options) -> Result<Self, WebhookError> {
        // Installs the process's recorder before anything is counted.
        let _ = ikit_common::telemetry::metrics_handle();
        let db = open_db(&settings.base.database_url).await?;
        db.migrate().await?;
        let redis = match &settings.base.redis_url {
            Some(url) => Some(Arc::new(
                RedisLink::new(url, REDIS_TIMEOUT)
                    .map_err(|e| WebhookError::Redis(e.to_string()))?,
            )),
            None => None,
        };
        let client_config = match options.client_config {
            Some(c) => c,
            None => ClientConfig::from_settings(&settings.base)?.with_retry(RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(1),
                max_retry_after: Duration::from_secs(5),
            }),
        };
        let client = Client::new(client_config)?;
        let replay_ttl = settings.window.saturating_mul(2);
        let intake_stop = CancellationToken::new();
        let replay = Arc::new(ReplayCache::new(redis.clone(), &options.redis_prefix, replay_ttl));
        // The receiver's writer, on its own thread, brings the audit log (see `intake`).
        let postgres_url = db.is_postgres().then(|| settings.base.database_url.clone());
        let wake = Arc::new(tokio::sync::Notify::new());
        let (intake, audit, intake_task) = Intake::start(
            db.clone(),
            postgres_url,
            AuditOptions::new(&options.audit_spool_dir).clock(options.clock.clone()),
            replay.clone(),
            wake.clone(),
            intake_stop.clone(),
        )
        .await?;
        let state = Arc::new(AppState {
            limiter: AppState::limiter(&settings),
            fanout: Fanout::new(settings.base.redis_url.clone(), &options.redis_prefix),
            replay,
            redis,
            clock: options.clock,
            db,
            audit,
            client,
            wake: wake.clone(),
            changed: tokio::sync::Notify::new(),
            instance_id: options
                .instance_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            intake,
            rows_finished: AtomicU64::new(0),
            rows_released_at_shutdown: AtomicU64::new(0),
            settings,
        });
        if state.settings.baseline {
            baseline::take(&state).await?;
        }
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for i in 0..state.settings.workers {
            tasks.push(tokio::spawn(worker::run(state.clone(), i, cancel.clone())));
        }
        let (s, c) = (state.clone(), cancel.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                worker::housekeeping(&s).await;
                tokio::select! {
                    () = c.cancelled() => break,
                    () = tokio::time::sleep(HOUSEKEEPING) => {}
                }
            }
        }));
        Ok(Self { state, cancel, tasks, intake_stop, intake_task: Some(intake_task) })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The routes: the receiver (both paths), the event stream, health and metrics.
    pub fn router(&self) -> Router {
        router(self.state.clone(), self.cancel.clone())
    }

    /// Stops the workers after the folder each holds is finished (within
    /// `IKIT_WEBHOOK_SHUTDOWN_GRACE`) or released for another replica at once, then the
    /// receiver's writer after what it was given. Stop the server serving [`Self::router`]
    /// first: a request arriving later is answered 503.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.intake_stop.cancel();
        if let Some(t) = self.intake_task.take() {
            t.ended().await;
        }
    }
}

impl Drop for Service {
    /// Dropped without [`Service::stop`] (a crash, in tests): the tasks end where they are and
    /// their leases run out.
    fn drop(&mut self) {
        self.cancel.cancel();
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = &self.intake_task {
            t.abort();
        }
    }
}

/// Every route of the service: (method, path, handler). [`router`] is built from this table
/// alone, and the OpenAPI test compares it with `/openapi.json`.
fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        (Method::POST, "/api/v1/infisical/webhook", post(receive::receive)),
        (Method::POST, "/infisical/webhook", post(receive::receive_alias)),
        (Method::GET, "/api/v1/infisical/events", get(sse::events)),
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/readyz", get(readyz)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/openapi.json", get(openapi::document)),
    ]
}

/// The (method, path) of every route the router serves.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|(method, path, _)| (method, path)).collect()
}

pub fn router(state: Arc<AppState>, shutdown: CancellationToken) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .layer(axum::Extension(sse::Shutdown(shutdown)))
        .with_state(state)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process answers")))]
pub(crate) async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics() -> impl IntoResponse {
    ikit_common::telemetry::metrics_handle().render()
}

/// Queue reachable and Infisical reachable make the service ready; Redis is reported (without
/// it the replay cache is per process and the fan-out waits).
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "ready: queue and Infisical reachable; Redis, replay cache, queue depth and audit reported"),
        (status = 503, description = "not ready, with the same report"),
    )
)]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let queue = state.db.ping().await.is_ok();
    let infisical = !state.client.circuit_open()
        && tokio::time::timeout(Duration::from_secs(3), state.client.ensure_token())
            .await
            .is_ok_and(|r| r.is_ok());
    let redis = match &state.redis {
        None => "off",
        Some(r) if r.is_up() => "up",
        Some(_) => "down",
    };
    let replay = match state.replay.backend() {
        ReplayBackend::Redis => "redis",
        ReplayBackend::Memory => "memory",
    };
    let depth = state.db.depth().await.map(|(n, _)| n).unwrap_or(-1);
    let ready = queue && infisical;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        axum::Json(json!({
            "ready": ready, "queue": queue, "infisical": infisical, "redis": redis,
            "replayCache": replay, "queueDepth": depth, "audit": state.audit.status().is_healthy(),
        })),
    )
}

/// The service on a TCP listener.
pub struct Application {
    service: Option<Service>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    stop_accepting: CancellationToken,
}

impl Application {
    pub async fn build(settings: WebhookSettings) -> Result<Self, WebhookError> {
        Self::build_with(settings, Options::default()).await
    }

    /// Builds on `settings.base.webhook_addr` (port 0 for tests).
    pub async fn build_with(
        settings: WebhookSettings,
        options: Options,
    ) -> Result<Self, WebhookError> {
        let bind = settings.base.webhook_addr;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| WebhookError::Bind { addr: bind.to_string(), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| WebhookError::Bind { addr: bind.to_string(), source })?;
        let service = Service::start(settings, options).await?;
        let app = service.router().into_make_service_with_connect_info::<SocketAddr>();
        let stop_accepting = CancellationToken::new();
        let stop = stop_accepting.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "server failed");
            }
        });
        Ok(Self { service: Some(service), addr, server: Some(server), stop_accepting })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        self.service
            .as_ref()
            .map(Service::state)
            .unwrap_or_else(|| unreachable!("service is set until shutdown"))
    }

    /// Runs until `signal`, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stops accepting, ends the event streams, lets each worker finish or release the folder
    /// it holds.
    pub async fn shutdown(mut self) {
        self.stop_accepting.cancel();
        if let Some(service) = self.service.take() {
            service.cancel.cancel();
            if let Some(server) = self.server.take() {
                let _ = server.await;
            }
            service.stop().await;
        }
    }
}

impl Drop for Application {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}
