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
            if let Err(e) = ikit_common::audit::AuditLog::record(self, event).await {
                tracing::error!(error = %e, action = %entry.action, "audit entry for a key step was not kept");
            }
        })
    }
}
