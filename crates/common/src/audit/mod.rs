//! The tamper-evident audit log: who did what to which path, key or event, and how it ended.
//!
//! Rows are append-only and hash-chained (see [`chain`]); [`AuditLog::verify_chain`] names the
//! first edited or deleted row. PostgreSQL and SQLite are supported through sqlx with embedded
//! migrations. When the database cannot be reached, events go to a bounded on-disk spool, and a
//! background task (started with the first spooled event, or when a log opens a spool that holds
//! events) writes them to the database in order once it answers, retrying every
//! [`AuditOptions::retry_after`]; `record` itself never flushes, and while events wait it spools
//! behind them. An explicit [`AuditLog::flush_spool`] flushes at once. A full spool is an error
//! ([`AuditError::SpoolFull`]); the depth is visible through [`AuditLog::spool_depth`],
//! [`AuditLog::watch_spool_depth`], [`AuditLog::status`] and the `audit_spool_depth` metric, and
//! every outcome through `audit_events_total{outcome}`. Never a silent drop.
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
//! the calling task; they only happen while the database is away or events wait.

pub mod chain;
mod spool;
mod store;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

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
    #[error("audit events wait in the spool; they go first")]
    Backlog,
}

/// A statement a caller runs in the audit log's transaction ([`AuditLog::record_many_with`]):
/// SQL with numbered placeholders (`$1`, valid on both databases) and its arguments. Array
/// arguments (for `UNNEST`: one prepared statement whatever the row count) are PostgreSQL's
/// only; SQLite refuses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub args: Vec<SqlArg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlArg {
    Text(String),
    Int(i64),
    TextArray(Vec<String>),
    IntArray(Vec<i64>),
}

impl Statement {
    /// The statement as a PostgreSQL query, its arguments bound in order.
    pub fn postgres_query(
        &self,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        self.args.iter().fold(sqlx::query(&self.sql), |q, arg| match arg {
            SqlArg::Text(t) => q.bind(t.as_str()),
            SqlArg::Int(i) => q.bind(*i),
            SqlArg::TextArray(t) => q.bind(t.as_slice()),
            SqlArg::IntArray(i) => q.bind(i.as_slice()),
        })
    }

    /// The statement as a SQLite query, its arguments bound in order; `None` when it holds an
    /// array argument, which SQLite cannot take.
    pub fn sqlite_query(
        &self,
    ) -> Option<sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>>> {
        self.args.iter().try_fold(sqlx::query(&self.sql), |q, arg| match arg {
            SqlArg::Text(t) => Some(q.bind(t.as_str())),
            SqlArg::Int(i) => Some(q.bind(*i)),
            SqlArg::TextArray(_) | SqlArg::IntArray(_) => None,
        })
    }
}

/// How an [`AuditLog`] spools and retries.
#[derive(Clone)]
pub struct AuditOptions {
    /// One directory per process (replica): two logs must not share a spool.
    pub spool_dir: PathBuf,
    /// Most events held on disk while the database is away.
    pub spool_capacity: usize,
    /// After a failed flush, the background flusher waits this long before it tries the database
    /// again (an explicit `flush_spool` always tries).
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

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    retry_after: Duration,
    /// Set once the embedded migrations ran.
    migrated: tokio::sync::OnceCell<()>,
    /// Held only around file operations, never across a database call.
    spool: Mutex<Spool>,
    /// One flush at a time: the background flusher's or an explicit one.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the flusher; shared with it so the flusher holds no strong reference while idle.
    wake: Arc<Notify>,
    flusher_started: AtomicBool,
    depth: watch::Sender<usize>,
    status: Mutex<AuditStatus>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The flusher wakes, finds the log gone and ends.
        self.wake.notify_one();
    }
}

/// The audit log. Cheap to clone; clones share the pool, the spool and the flusher.
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
        let depth = spool.len();
        let status = AuditStatus {
            spooled: depth,
            capacity: spool.capacity(),
            last_error: None,
            last_error_ms: None,
        };
        metrics::gauge!("audit_spool_depth").set(depth as f64);
        let log = Self {
            inner: Arc::new(Inner {
                store,
                clock: options.clock,
                retry_after: options.retry_after,
                migrated: tokio::sync::OnceCell::new(),
                spool: Mutex::new(spool),
                flushing: tokio::sync::Mutex::new(()),
                wake: Arc::new(Notify::new()),
                flusher_started: AtomicBool::new(false),
                depth: watch::Sender::new(depth),
                status: Mutex::new(status),
            }),
        };
        // Events left by an earlier run go out without waiting for the next record.
        if depth > 0 && tokio::runtime::Handle::try_current().is_ok() {
            log.wake_flusher();
        }
        Ok(log)
    }

    /// Applies the embedded migrations (also done before the first write).
    pub async fn migrate(&self) -> Result<(), AuditError> {
        self.inner.migrated.get_or_try_init(|| self.inner.store.migrate()).await.map(drop)
    }

    /// Records one event: into the database when it answers and nothing waits in the spool,
    /// otherwise into the spool behind what waits there (the background flusher writes it later,
    /// in order). `Err` means the event was not kept anywhere.
    pub async fn record(&self, event: AuditEvent) -> Result<Recorded, AuditError> {
        event.validate()?;
        if self.spool().is_empty() {
            match self.store_many(std::slice::from_ref(&event)).await {
                Ok(seqs) => {
                    count("stored");
                    self.clear_error();
                    return Ok(Recorded::Stored { seq: seqs.first().copied().unwrap_or_default() });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit database unavailable, spooling");
                    self.note_error(&e);
                }
            }
        }
        self.spool_one(&event)
    }

    /// Records many events at once, in order, with one database transaction (group commit: a
    /// busy service pays one commit for a batch instead of one per event). Same rules as
    /// [`Self::record`]: when the database refuses the batch, or events wait in the spool, each
    /// event is spooled behind them. One result per event, in order; an invalid event is refused
    /// alone.
    pub async fn record_many(&self, events: Vec<AuditEvent>) -> Vec<Result<Recorded, AuditError>> {
        let mut results: Vec<Option<Result<Recorded, AuditError>>> =
            Vec::with_capacity(events.len());
        let mut valid = Vec::with_capacity(events.len());
        for event in events {
            match event.validate() {
                Ok(()) => {
                    results.push(None);
                    valid.push(event);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut stored: Option<std::vec::IntoIter<i64>> = None;
        if !valid.is_empty() && self.spool().is_empty() {
            match self.store_many(&valid).await {
                Ok(seqs) => {
                    self.clear_error();
                    stored = Some(seqs.into_iter());
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = valid.len(), "audit database unavailable, spooling");
                    self.note_error(&e);
                }
            }
        }
        let mut valid = valid.into_iter();
        results
            .into_iter()
            .map(|slot| match slot {
                Some(refused) => refused,
                None => {
                    let Some(event) = valid.next() else {
                        unreachable!("one valid event per empty slot")
                    };
                    match stored.as_mut().and_then(Iterator::next) {
                        Some(seq) => {
                            count("stored");
                            Ok(Recorded::Stored { seq })
                        }
                        None => self.spool_one(&event),
                    }
                }
            })
            .collect()
    }

    /// Runs the caller's statements `also` and appends `events`, in order, in one transaction:
    /// the caller's rows and their audit rows commit together (one flush to disk for both) or
    /// not at all. Unlike [`Self::record_many`] nothing is spooled: on `Err` nothing was
    /// written (also [`AuditError::Backlog`] while spooled events wait, which must go first),
    /// and the caller falls back to writing its rows and [`Self::record_many`] apart.
    pub async fn record_many_with(
        &self,
        events: &[AuditEvent],
        also: &[Statement],
    ) -> Result<Vec<Recorded>, AuditError> {
        for event in events {
            event.validate()?;
        }
        if !self.spool().is_empty() {
            return Err(AuditError::Backlog);
        }
        self.migrate().await?;
        match self.inner.store.append_many_with(events, also).await {
            Ok(seqs) => {
                self.clear_error();
                Ok(seqs
                    .into_iter()
                    .map(|seq| {
                        count("stored");
                        Recorded::Stored { seq }
                    })
                    .collect())
            }
            Err(e) => Err(e),
        }
    }

    /// Puts one event in the spool behind what waits there, and wakes the flusher.
    fn spool_one(&self, event: &AuditEvent) -> Result<Recorded, AuditError> {
        let pushed = {
            let mut spool = self.spool();
            spool.push(event).map(|()| spool.len())
        };
        match pushed {
            Ok(depth) => {
                count("spooled");
                self.set_depth(depth);
                self.wake_flusher();
                Ok(Recorded::Spooled { depth })
            }
            Err(e) => {
                count(if matches!(e, AuditError::SpoolFull { .. }) {
                    "spool_full"
                } else {
                    "spool_error"
                });
                tracing::error!(error = %e, "audit event refused");
                self.note_error(&e);
                Err(e)
            }
        }
    }

    /// Writes every spooled event to the database now, oldest first; returns how many were
    /// written. Stops at the first database error (the rest stay spooled) and returns it.
    pub async fn flush_spool(&self) -> Result<usize, AuditError> {
        let _one_at_a_time = self.inner.flushing.lock().await;
        let flushed = self.flush_in_order().await;
        match &flushed {
            Ok(_) => self.clear_error(),
            Err(e) => self.note_error(e),
        }
        flushed
    }

    async fn flush_in_order(&self) -> Result<usize, AuditError> {
        let mut flushed = 0;
        loop {
            let front = self.spool().peek();
            let event = match front {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e @ AuditError::CorruptSpoolEntry { .. }) => {
                    let (aside, depth) = {
                        let mut spool = self.spool();
                        (spool.quarantine_front()?, spool.len())
                    };
                    tracing::error!(error = %e, kept_at = %aside.display(), "audit spool entry set aside");
                    count("spool_corrupt");
                    self.set_depth(depth);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // No lock is held here: records keep spooling behind while the database answers.
            self.store_many(std::slice::from_ref(&event)).await?;
            let depth = {
                let mut spool = self.spool();
                spool.pop()?;
                spool.len()
            };
            self.set_depth(depth);
            flushed += 1;
        }
        if flushed > 0 {
            tracing::info!(flushed, "audit spool flushed");
        }
        Ok(flushed)
    }

    /// Starts the background flusher on first use (inside a Tokio runtime) and wakes it.
    fn wake_flusher(&self) {
        if !self.inner.flusher_started.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(&self.inner);
            let wake = self.inner.wake.clone();
            tokio::spawn(run_flusher(weak, wake));
        }
        self.inner.wake.notify_one();
    }

    async fn store_many(&self, events: &[AuditEvent]) -> Result<Vec<i64>, AuditError> {
        self.migrate().await?;
        self.inner.store.append_many(events).await
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

    /// How many events wait in the spool.
    pub fn spool_depth(&self) -> usize {
        *self.inner.depth.borrow()
    }

    /// The spool depth as it changes, e.g. to wait until a backlog has drained.
    pub fn watch_spool_depth(&self) -> watch::Receiver<usize> {
        self.inner.depth.subscribe()
    }

    /// How long the flusher waits after a failed flush (from [`AuditOptions::retry_after`]).
    pub fn retry_after(&self) -> Duration {
        self.inner.retry_after
    }

    fn spool(&self) -> MutexGuard<'_, Spool> {
        self.inner.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_error(&self, error: &AuditError) {
        let now = self.inner.clock.now_ms();
        let mut status = self.inner.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_error = Some(error.to_string());
        status.last_error_ms = Some(now);
    }

    fn clear_error(&self) {
        let mut status = self.inner.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_error = None;
    }

    fn set_depth(&self, depth: usize) {
        metrics::gauge!("audit_spool_depth").set(depth as f64);
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner()).spooled = depth;
        self.inner.depth.send_replace(depth);
    }
}

/// Flushes the spool whenever events were spooled, and again every `retry_after` while the
/// database refuses them. Holds the log only while it works, so dropping the last `AuditLog`
/// ends it.
async fn run_flusher(log: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(inner) = log.upgrade() else { return };
            let log = AuditLog { inner };
            if log.spool().is_empty() {
                break;
            }
            if let Err(e) = log.flush_spool().await {
                tracing::warn!(error = %e, "audit spool flush failed; retrying");
                let pause = log.retry_after();
                drop(log);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("audit_events_total", "outcome" => outcome).increment(1);
}
