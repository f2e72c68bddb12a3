//! Every rotation step is an audit entry. The sink is a small trait so the manager does not
//! depend on where entries go; [`TracingAudit`] logs them and [`MemoryAudit`] keeps them.

use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::Serialize;

/// One audited action. Never holds key material: only kids, names and outcomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Seconds since the Unix epoch.
    pub at: i64,
    /// e.g. `jwt.publish_next`, `jwt.flip`, `aes.activate`, `keys.import_jwt`.
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
