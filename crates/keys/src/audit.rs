//! Every rotation step is an audit entry. The sink is a small trait so the manager does not
//! depend on where entries go: ikit-common's tamper-evident [`ikit_common::audit::AuditLog`]
//! (PostgreSQL or SQLite, spooled to disk while the database is down) in production,
//! [`TracingAudit`] to log them and [`MemoryAudit`] to keep them.

use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::Serialize;

/// One audited action. Never holds key material: only kids, names and outcomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Seconds since the Unix epoch.
    pub at: i64,
    /// e.g. `jwt.publish_next`, `jwt.flip`, `aes.activate`, `jwt.import`.
    pub action: String,
    /// `scheduled`, `forced`, `manual`, `webhook` or `import`.
    pub trigger: String,
    pub reason: String,
    /// The key ids the step touched.
    pub kids: Vec<String>,
    /// `ok` or `failed: <why>`.
    pub outcome: String,
}

/// Receives audit entries. Implementations must not fail the rotation: they keep or spool
/// entries themselves.
pub trait AuditSink: Send + Sync {
    fn record<'a>(&'a self, entry: AuditEntry) -> BoxFuture<'a, ()>;
}

/// Writes entries to the `tracing` log at info level.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record<'a>(&'a self, entry: AuditEntry) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            tracing::info!(
                target: "ikit_keys::audit",
                action = %entry.action,
                trigger = %entry.trigger,
                reason = %entry.reason,
                kids = ?entry.kids,
                outcome = %entry.outcome,
                at = entry.at,
                "key audit"
            );
        })
    }
}

/// Keeps entries in memory, in order.
#[derive(Debug, Default)]
pub struct MemoryAudit(Mutex<Vec<AuditEntry>>);

impl MemoryAudit {
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl AuditSink for MemoryAudit {
    fn record<'a>(&'a self, entry: AuditEntry) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        Box::pin(async {})
    }
}

#[cfg(feature = "audit")]
/// Entries go to the hash-chained audit log as `key.<kind>.<step>` events: the actor is
/// `ikit-keys/<trigger>`, the target the key ids, the details the reason and the outcome.
impl AuditSink for ikit_common::audit::AuditLog {
    fn record<'a>(&'a self, entry: AuditEntry) -> BoxFuture<'a, ()> {
        use ikit_common::audit::{AuditEvent, Outcome};
        Box::pin(async move {
            let outcome = if entry.outcome == "ok" { Outcome::Success } else { Outcome::Failure };
            let target = if entry.kids.is_empty() {
                entry.action.split('.').next().unwrap_or("keys").to_owned()
            } else {
                entry.kids.join(",")
            };
            let event = AuditEvent::new(
                entry.at.saturating_mul(1000),
                format!("ikit-keys/{}", entry.trigger),
                format!("key.{}", entry.action),
                target,
                outcome,
            )
            .with_details(serde_json::json!({
                "reason": entry.reason,
                "trigger": entry.trigger,
                "kids": entry.kids,
                "outcome": entry.outcome,
            }));
            // The database being away is the log's business (it spools). What is left is a spool
            // that is full or unwritable: the entry then waits here, in memory, and is offered
            // again whenever the spool drains or the retry delay passes, never dropped.
            let Err(e) = ikit_common::audit::AuditLog::record(self, event.clone()).await else {
                return;
            };
            if !is_retryable(&e) {
                tracing::error!(error = %e, action = %entry.action, "audit entry for a key step cannot be kept");
                return;
            }
            tracing::warn!(error = %e, action = %entry.action, "audit entry for a key step held until the audit log takes it");
            tokio::spawn(record_when_possible(self.clone(), event));
        })
    }
}

#[cfg(feature = "audit")]
/// Refusals that pass: a full or unwritable spool. An invalid event stays invalid.
fn is_retryable(error: &ikit_common::audit::AuditError) -> bool {
    use ikit_common::audit::AuditError;
    !matches!(error, AuditError::InvalidEvent(_) | AuditError::Encode(_))
}

#[cfg(feature = "audit")]
async fn record_when_possible(
    log: ikit_common::audit::AuditLog,
    event: ikit_common::audit::AuditEvent,
) {
    let mut depth = log.watch_spool_depth();
    loop {
        // Room in the spool (it drained a little) or the retry delay, whichever comes first.
        let _ = tokio::time::timeout(log.retry_after(), depth.changed()).await;
        match log.record(event.clone()).await {
            Ok(_) => {
                tracing::info!(action = %event.action, "held audit entry for a key step kept");
                return;
            }
            Err(e) if !is_retryable(&e) => {
                tracing::error!(error = %e, action = %event.action, "audit entry for a key step cannot be kept");
                return;
            }
            Err(_) => {}
        }
    }
}

#[cfg(all(test, feature = "audit", feature = "postgres"))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ikit_common::audit::{AuditFilter, AuditLog, AuditOptions, Recorded};
    use ikit_common::clock::ManualClock;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: 1_700_000_000,
            action: action.into(),
            trigger: "scheduled".into(),
            reason: "test".into(),
            kids: vec!["kid-1".into()],
            outcome: "ok".into(),
        }
    }

    /// The database is locked and the spool holds one event: the second rotation step's entry
    /// is refused by the log, yet lands once the database is back.
    #[tokio::test]
    async fn a_step_refused_by_a_full_spool_is_kept_later() {
        let dir = tempfile::tempdir().unwrap();
        let connect = SqliteConnectOptions::new()
            .filename(dir.path().join("audit.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::from_millis(20));
        let pool = SqlitePoolOptions::new().connect_with(connect.clone()).await.unwrap();
        let options = AuditOptions::new(dir.path().join("spool"))
            .spool_capacity(1)
            .retry_after(Duration::from_millis(50))
            .clock(Arc::new(ManualClock::new(1_700_000_000_000)));
        let log = AuditLog::sqlite(pool, options).unwrap();
        log.migrate().await.unwrap();

        // Another writer holds the database's write lock: the log cannot append.
        let blocker = SqlitePoolOptions::new().connect_with(connect).await.unwrap();
        let mut held = blocker.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *held).await.unwrap();

        AuditSink::record(&log, entry("jwt.publish_next")).await;
        assert_eq!(log.spool_depth(), 1);
        let refused = log.record(entry_event()).await;
        assert!(refused.is_err(), "the spool is full: {refused:?}");
        AuditSink::record(&log, entry("jwt.flip")).await;

        held.rollback().await.unwrap();
        let actions = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                // The background flusher may hold the write lock while it appends: a read
                // refused as locked is simply tried again.
                if let Ok(rows) = log.query(&AuditFilter::default()).await
                    && rows.len() == 2
                {
                    break rows.into_iter().map(|r| r.event.action).collect::<Vec<_>>();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both steps reach the audit log");
        assert_eq!(actions, ["key.jwt.publish_next", "key.jwt.flip"]);
        assert!(matches!(log.record(entry_event()).await, Ok(Recorded::Stored { seq: 3 })));
    }

    fn entry_event() -> ikit_common::audit::AuditEvent {
        ikit_common::audit::AuditEvent::new(
            1,
            "test",
            "probe",
            "t",
            ikit_common::audit::Outcome::Success,
        )
    }
}
