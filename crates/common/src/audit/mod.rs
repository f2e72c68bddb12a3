//! The tamper-evident audit log: who did what to which path, key or event, and how it ended.
//!
//! Rows are append-only and hash-chained (see [`chain`]); [`AuditLog::verify_chain`] names the
//! first edited or deleted row. PostgreSQL and SQLite are supported through sqlx with embedded
//! migrations. When the database cannot be reached, events go to a bounded on-disk spool and
//! are flushed in order on the next `record` (or an explicit [`AuditLog::flush_spool`]); a full
//! spool is an error ([`AuditError::SpoolFull`]), visible through [`AuditLog::status`] and the
//! `audit_events_total{outcome}` and `audit_spool_depth` metrics. Never a silent drop.
//!
//! `audit_events_total{outcome}` counts `record` calls by where the event went: `stored`,
//! `spooled`, `spool_full` and `spool_error` (refused: the caller got an error), and
//! `spool_corrupt` for unreadable spool files set aside during a flush. The event's own
//! [`Outcome`] (success, failure, denied) is a column, not a label.
//!
//! An event never holds a secret value: only names (paths, kids, event ids) and outcomes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ikit_common::audit::AuditError> {
//! use ikit_common::audit::{AuditEvent, AuditFilter, AuditLog, AuditOptions, Outcome};
//! use ikit_common::clock::{Clock, SystemClock};
//!
//! let log = AuditLog::connect("sqlite://.ikit-dev/ikit.db", AuditOptions::new(".ikit-dev/spool"))?;
//! let event = AuditEvent::new(SystemClock.now_ms(), "scheduler", "key.rotate", "kid-1", Outcome::Success)
//!     .with_details(serde_json::json!({"method": "schedule"}));
//! log.record(event).await?;
//! let recent = log.query(&AuditFilter { limit: Some(20), newest_first: true, ..Default::default() }).await?;
//! assert!(matches!(log.verify_chain().await?, ikit_common::audit::ChainStatus::Intact { .. }));
//! # drop(recent); Ok(()) }
//! ```
//!
//! Delivery from the spool is at-least-once: a crash after an event's row is committed but
//! before its spool file is removed writes that event again on the next flush (the chain stays
//! valid; the duplicate is visible as a second row). Spool writes are synchronous file IO on
//! the calling task; they only happen while the database is away.

pub mod chain;
mod spool;
mod store;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

pub use chain::{BreakReason, ChainStatus};

use crate::clock::{Clock, SystemClock};
use spool::Spool;
use store::Store;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

impl FromStr for Outcome {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "success" => Ok(Self::Success),
            "failure" => Ok(Self::Failure),
            "denied" => Ok(Self::Denied),
            _ => Err(()),
        }
    }
}

/// One audited action. Holds names and outcomes, never a secret value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened, unix milliseconds (from the caller's [`Clock`]).
    pub time_ms: i64,
    /// Who: a machine identity, a user, `webhook`, `scheduler`.
    pub actor: String,
    /// What, e.g. `secret.update`, `key.rotate`, `webhook.receive`.
    pub action: String,
    /// On what: a secret path, a key id or an event id.
    pub target: String,
    pub outcome: Outcome,
    pub request_id: Option<String>,
    /// Structured context (reason, method, counts). Must not carry secret values.
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(
        time_ms: i64,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            time_ms,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome,
            request_id: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    fn validate(&self) -> Result<(), AuditError> {
        let fields = [
            ("actor", Some(self.actor.as_str())),
            ("action", Some(self.action.as_str())),
            ("target", Some(self.target.as_str())),
            ("request_id", self.request_id.as_deref()),
        ];
        for (name, value) in fields {
            match value {
                Some("") if name != "request_id" => {
                    return Err(AuditError::InvalidEvent(format!("{name} is empty")));
                }
                // PostgreSQL refuses NUL in TEXT; such an event would block the spool forever.
                Some(v) if v.contains('\0') => {
                    return Err(AuditError::InvalidEvent(format!("{name} contains a NUL byte")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn to_row(&self, seq: i64, prev_hash: String) -> chain::ChainRow {
        chain::ChainRow {
            seq,
            time_ms: self.time_ms,
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            outcome: self.outcome.as_str().to_owned(),
            request_id: self.request_id.clone(),
            details: chain::canonical_json(&self.details),
            prev_hash,
            hash: String::new(),
        }
    }
}

/// A stored event with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    pub hash: String,
    pub event: AuditEvent,
}

/// Which events [`AuditLog::query`] returns. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    /// Inclusive lower bound, unix ms.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound, unix ms.
    pub until_ms: Option<i64>,
    /// At most this many rows ([`Self::DEFAULT_LIMIT`] when unset, never above [`Self::MAX_LIMIT`]).
    pub limit: Option<u32>,
    /// Newest (highest `seq`) first instead of oldest first.
    pub newest_first: bool,
}

impl AuditFilter {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 10_000;

    fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT).min(Self::MAX_LIMIT)
    }
}

/// Where a recorded event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the database at this `seq`.
    Stored { seq: i64 },
    /// On disk, waiting for the database; `depth` events are waiting in all.
    Spooled { depth: usize },
}

/// What health endpoints and metrics read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStatus {
    /// Events waiting on disk for the database.
    pub spooled: usize,
    pub capacity: usize,
    /// The last database or spool error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the last error happened (unix ms, from the injected clock).
    pub last_error_ms: Option<i64>,
}

impl AuditStatus {
    /// True when the database took the last write and nothing waits in the spool.
    pub fn is_healthy(&self) -> bool {
        self.spooled == 0 && self.last_error.is_none()
    }

    pub fn is_spool_full(&self) -> bool {
        self.spooled >= self.capacity
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("audit spool is full ({capacity} events wait for the database); event refused")]
    SpoolFull { capacity: usize },
    #[error("audit spool io error at {}: {source}", path.display())]
    Spool { path: PathBuf, source: std::io::Error },
    #[error("audit spool entry {} is unreadable: {reason}", path.display())]
    CorruptSpoolEntry { path: PathBuf, reason: String },
    #[error("audit row {seq} is unreadable: {reason}")]
    CorruptRow { seq: i64, reason: String },
    #[error("invalid audit event: {0}")]
    InvalidEvent(String),
    #[error("cannot encode audit event: {0}")]
    Encode(serde_json::Error),
    #[error("cannot create the audit database directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("unsupported audit database url: use postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
}

/// How an [`AuditLog`] spools and retries.
#[derive(Clone)]
pub struct AuditOptions {
    /// One directory per process (replica): two logs must not share a spool.
    pub spool_dir: PathBuf,
    /// Most events held on disk while the database is away.
    pub spool_capacity: usize,
    /// After a failed write, `record` goes straight to the spool for this long before it tries
    /// the database again (an explicit `flush_spool` always tries).
    pub retry_after: Duration,
    pub clock: Arc<dyn Clock>,
}

impl AuditOptions {
    pub const DEFAULT_SPOOL_CAPACITY: usize = 10_000;
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            spool_capacity: Self::DEFAULT_SPOOL_CAPACITY,
            retry_after: Self::DEFAULT_RETRY_AFTER,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn spool_capacity(mut self, capacity: usize) -> Self {
        self.spool_capacity = capacity;
        self
    }

    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

struct State {
    spool: Spool,
    /// Before this time (unix ms) `record` does not try the database.
    retry_at_ms: i64,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    retry_after_ms: i64,
    /// Set once the embedded migrations ran; read without taking `state`.
    migrated: tokio::sync::OnceCell<()>,
    state: tokio::sync::Mutex<State>,
    status: Mutex<AuditStatus>,
}

/// The audit log. Cheap to clone; clones share the pool and the spool.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// A log over a database URL (`postgres://…` or `sqlite:…`). The pool connects lazily, so
    /// this succeeds while the database is down; events spool until it answers.
    pub fn connect(url: &str, options: AuditOptions) -> Result<Self, AuditError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(url)?;
            Self::postgres(pool, options)
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            if let Some(parent) = connect.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|source| AuditError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(connect);
            Self::sqlite(pool, options)
        } else {
            Err(AuditError::UnsupportedUrl)
        }
    }

    pub fn postgres(pool: PgPool, options: AuditOptions) -> Result<Self, AuditError> {
        Self::build(Store::Postgres(pool), options)
    }

    pub fn sqlite(pool: SqlitePool, options: AuditOptions) -> Result<Self, AuditError> {
        Self::build(Store::Sqlite(pool), options)
    }

    fn build(store: Store, options: AuditOptions) -> Result<Self, AuditError> {
        let spool = Spool::open(&options.spool_dir, options.spool_capacity)?;
        let status = AuditStatus {
            spooled: spool.len(),
            capacity: spool.capacity(),
            last_error: None,
            last_error_ms: None,
        };
        metrics::gauge!("audit_spool_depth").set(spool.len() as f64);
        let retry_after_ms = i64::try_from(options.retry_after.as_millis()).unwrap_or(i64::MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock: options.clock,
                retry_after_ms,
                migrated: tokio::sync::OnceCell::new(),
                state: tokio::sync::Mutex::new(State { spool, retry_at_ms: 0 }),
                status: Mutex::new(status),
            }),
        })
    }

    /// Applies the embedded migrations (also done before the first write).
    pub async fn migrate(&self) -> Result<(), AuditError> {
        self.inner.migrated.get_or_try_init(|| self.inner.store.migrate()).await.map(drop)
    }

    /// Records one event: into the database when it answers (after anything spooled, so order
    /// is kept), otherwise into the spool. `Err` means the event was not kept anywhere.
    pub async fn record(&self, event: AuditEvent) -> Result<Recorded, AuditError> {
        event.validate()?;
        let mut state = self.inner.state.lock().await;
        let now = self.inner.clock.now_ms();
        if now >= state.retry_at_ms {
            if !state.spool.is_empty()
                && let Err(e) = self.flush_locked(&mut state).await
            {
                // The event joins the spool behind the rest, keeping the order.
                tracing::warn!(error = %e, "audit spool flush failed");
                self.note_error(&mut state, &e);
            }
            if state.spool.is_empty() {
                match self.store_one(&event).await {
                    Ok(seq) => {
                        count("stored");
                        self.clear_error(&mut state);
                        return Ok(Recorded::Stored { seq });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "audit database unavailable, spooling");
                        self.note_error(&mut state, &e);
                    }
                }
            }
        }
        match state.spool.push(&event) {
            Ok(()) => {
                count("spooled");
                self.set_depth(&state);
                Ok(Recorded::Spooled { depth: state.spool.len() })
            }
            Err(e) => {
                count(if matches!(e, AuditError::SpoolFull { .. }) {
                    "spool_full"
                } else {
                    "spool_error"
                });
                tracing::error!(error = %e, "audit event refused");
                self.note_error(&mut state, &e);
                Err(e)
            }
        }
    }

    /// Writes every spooled event to the database, oldest first; returns how many were written.
    /// Stops at the first database error (the rest stay spooled) and returns it.
    pub async fn flush_spool(&self) -> Result<usize, AuditError> {
        let mut state = self.inner.state.lock().await;
        let flushed = self.flush_locked(&mut state).await;
        if let Err(e) = &flushed {
            self.note_error(&mut state, e);
        } else {
            self.clear_error(&mut state);
        }
        flushed
    }

    async fn flush_locked(&self, state: &mut State) -> Result<usize, AuditError> {
        let mut flushed = 0;
        loop {
            let event = match state.spool.peek() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e @ AuditError::CorruptSpoolEntry { .. }) => {
                    let aside = state.spool.quarantine_front()?;
                    tracing::error!(error = %e, kept_at = %aside.display(), "audit spool entry set aside");
                    count("spool_corrupt");
                    self.set_depth(state);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let stored = self.store_one(&event).await;
            if let Err(e) = stored {
                self.set_depth(state);
                return Err(e);
            }
            state.spool.pop()?;
            flushed += 1;
        }
        self.set_depth(state);
        if flushed > 0 {
            tracing::info!(flushed, "audit spool flushed");
        }
        Ok(flushed)
    }

    async fn store_one(&self, event: &AuditEvent) -> Result<i64, AuditError> {
        self.migrate().await?;
        self.inner.store.append(event).await
    }

    /// Stored events matching `filter`. Spooled events are not visible until flushed.
    pub async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
        self.migrate().await?;
        self.inner.store.query(filter).await
    }

    /// Walks the whole chain; names the first edited, deleted or out-of-place row.
    pub async fn verify_chain(&self) -> Result<ChainStatus, AuditError> {
        self.migrate().await?;
        self.inner.store.verify().await
    }

    /// Spool depth, capacity and the last error, for health endpoints and metrics.
    pub fn status(&self) -> AuditStatus {
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn note_error(&self, state: &mut State, error: &AuditError) {
        let now = self.inner.clock.now_ms();
        state.retry_at_ms = now.saturating_add(self.inner.retry_after_ms);
        let mut status = self.inner.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_error = Some(error.to_string());
        status.last_error_ms = Some(now);
        status.spooled = state.spool.len();
    }

    fn clear_error(&self, state: &mut State) {
        state.retry_at_ms = 0;
        let mut status = self.inner.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_error = None;
    }

    fn set_depth(&self, state: &State) {
        let depth = state.spool.len();
        metrics::gauge!("audit_spool_depth").set(depth as f64);
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner()).spooled = depth;
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("audit_events_total", "outcome" => outcome).increment(1);
}
