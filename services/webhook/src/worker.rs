//! The workers: claim a queued folder, refetch it from Infisical bypassing every cache, diff it
//! against its stored state, then in this order store the new state with its per-key events
//! (one transaction), invalidate and publish on every replica, and only then finish the row.
//! A failure at any step leaves the row queued with a backoff; a crash leaves its lease to run
//! out. Redoing a row whose events were stored but not published publishes those same events
//! (same ids) instead of diffing again, so one change never yields two different events.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ikit_client::{ClientError, FolderQuery};
use ikit_common::events::{ChangeKind, SecretChangeEvent};
use ikit_common::folder_diff::{self, FolderState, ImportRef, ListingEntry};
use tokio_util::sync::CancellationToken;

use crate::error::WebhookError;
use crate::state::AppState;
use crate::store::{Claimed, FolderId};

pub const METRIC_QUEUE_DEPTH: &str = "ikit_webhook_queue_depth";
pub const METRIC_QUEUE_OLDEST_AGE: &str = "ikit_webhook_queue_oldest_age_seconds";
pub const METRIC_PROCESSING_LATENCY: &str = "ikit_webhook_processing_latency_seconds";
pub const METRIC_EVENTS_EMITTED: &str = "ikit_webhook_change_events_total";
pub const METRIC_REFETCH: &str = "ikit_webhook_refetch_total";

/// How often an idle worker looks at the queue when nothing woke it (the clock decides what is
/// ready; this only bounds how late a worker notices).
const IDLE_POLL: Duration = Duration::from_millis(50);
const MAX_BACKOFF_MS: i64 = 60_000;

/// The baseline scope key of (project, environment).
pub fn scope_key(project: &str, environment: &str, prefix: &str) -> String {
    format!("{project}|{environment}|{prefix}")
}

/// Backoff before attempt `attempts + 1`: 500 ms doubling, at most a minute.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 16) - 1).unwrap_or(0);
    500i64.saturating_mul(1 << exp).min(MAX_BACKOFF_MS)
}

pub async fn run(state: Arc<AppState>, index: usize, cancel: CancellationToken) {
    let owner = format!("{}-{index}", state.instance_id);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let now = state.clock.now_ms();
        let lease_ms = i64::try_from(state.settings.lease.as_millis()).unwrap_or(i64::MAX);
        match state.db.claim(&owner, now, now.saturating_add(lease_ms)).await {
            Ok(Some(claimed)) => {
                process(&state, &owner, claimed, &cancel).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot claim from the queue"),
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = state.wake.notified() => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// Works one claimed row. Asked to stop meanwhile, it keeps at it for the shutdown grace, then
/// drops the work and gives the row back at once, so another replica takes it now instead of
/// after the lease. Dropping is safe at any point: events stored but not yet published are
/// published as they are by whoever takes the row next.
async fn process(state: &AppState, owner: &str, claimed: Claimed, cancel: &CancellationToken) {
    let folder = claimed.id.folder.clone();
    let work = process_inner(state, owner, &claimed);
    tokio::pin!(work);
    let outcome = tokio::select! {
        done = &mut work => Some(done),
        () = cancel.cancelled() => {
            tokio::time::timeout(state.settings.shutdown_grace, &mut work).await.ok()
        }
    };
    let Some(outcome) = outcome else {
        let now = state.clock.now_ms();
        match state.db.release(&claimed, owner, now, Some("shutdown")).await {
            Ok(()) => {
                state.rows_released_at_shutdown.fetch_add(1, Ordering::Relaxed);
                tracing::info!(folder, "shutting down: folder given back unfinished");
            }
            Err(e) => {
                tracing::warn!(folder, error = %e, "cannot release a queue row; its lease will run out");
            }
        }
        return;
    };
    match outcome {
        Ok(emitted) => {
            let now = state.clock.now_ms();
            let again_at = now.saturating_add(state.settings.coalesce_ms());
            match state.db.finish(&claimed, owner, again_at).await {
                Ok(()) => {
                    state.rows_finished.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(folder, error = %e, "cannot finish a queue row; its lease will run out");
                }
            }
            let latency = (now.saturating_sub(claimed.received_ms)).max(0) as f64 / 1000.0;
            metrics::histogram!(METRIC_PROCESSING_LATENCY).record(latency);
            tracing::debug!(folder, emitted, "folder processed");
            state.changed.notify_waiters();
        }
        Err(e) => {
            let now = state.clock.now_ms();
            let retry_at = now.saturating_add(backoff_ms(claimed.attempts));
            let kind = match &e {
                WebhookError::Infisical(c) => c.kind(),
                WebhookError::Redis(_) => "redis",
                WebhookError::Database(_) => "database",
                WebhookError::LeaseLost(_) => "lease_lost",
                _ => "other",
            };
            tracing::warn!(folder, error = %e, attempts = claimed.attempts, "processing failed, will retry");
            if let Err(e) = state.db.release(&claimed, owner, retry_at, Some(kind)).await {
                tracing::warn!(folder, error = %e, "cannot release a queue row; its lease will run out");
            }
        }
    }
}

/// Returns how many events came out.
async fn process_inner(
    state: &AppState,
    owner: &str,
    claimed: &Claimed,
) -> Result<usize, WebhookError> {
    let id = &claimed.id;
    let pending = state.db.unpublished(id).await?;
    if !pending.is_empty() {
        let events: Vec<SecretChangeEvent> = pending.into_iter().map(|l| l.event).collect();
        state.fanout.publish(&events).await?;
        state.db.mark_published(id).await?;
        count_emitted(&events);
        return Ok(events.len());
    }

    let query = FolderQuery::new(&id.project, &id.environment, &id.folder)
        .include_imports(true)
        .expand_references(false);
    metrics::counter!(METRIC_REFETCH).increment(1);
    // Only keys, versions, values and imports are compared: the digest decodes nothing else,
    // which keeps a large folder's refetch from churning the allocator (the service's RSS).
    let listing = match state.client.fetch_folder_digest(&query).await {
        Ok(l) => Some(l),
        // The folder is gone: every key it had is deleted.
        Err(ClientError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (entries, imports) = match &listing {
        Some(l) => (
            l.secrets
                .iter()
                .map(|s| ListingEntry {
                    key: &s.key,
                    secret_type: s.secret_type.as_str(),
                    version: s.version,
                    value: s.value.expose().as_bytes(),
                })
                .collect::<Vec<_>>(),
            l.imports
                .iter()
                .map(|i| ImportRef { environment: i.environment.clone(), path: i.path.clone() })
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };

    let previous = state.db.load_state(id).await?;
    let now = state.clock.now_ms();
    let (previous, announce) = match previous {
        Some(p) => (p, true),
        // A folder first seen now: new since the baseline when its scope has one, else there
        // is nothing to compare with and its state is only recorded.
        None => (FolderState::default(), state.baseline_covers(id).await?),
    };
    let (new_state, changes) = folder_diff::diff(
        &previous,
        &entries,
        imports,
        state.settings.state_key.expose().as_bytes(),
    );
    drop(entries);
    drop(listing);
    if !announce {
        tracing::info!(
            folder = id.folder,
            "first sight of a folder outside the baseline: state recorded, no events"
        );
        state.db.commit_changes(claimed, owner, &new_state, &[], now).await?;
        return Ok(0);
    }

    let mut events: Vec<SecretChangeEvent> =
        changes.iter().map(|c| change_event(id, &c.key, c.kind, c.version)).collect();
    if !changes.is_empty() {
        for (importer, importer_state) in state.db.project_states(&id.project).await? {
            let imports_this = importer_state
                .imports
                .iter()
                .any(|i| i.environment == id.environment && i.path == id.folder);
            if importer == *id || !imports_this {
                continue;
            }
            for c in folder_diff::importer_changes(&importer_state, &changes) {
                events.push(change_event(&importer, &c.key, c.kind, c.version));
            }
        }
    }
    state.db.commit_changes(claimed, owner, &new_state, &events, now).await?;
    state.changed.notify_waiters();
    state.fanout.publish(&events).await?;
    state.db.mark_published(id).await?;
    count_emitted(&events);
    Ok(events.len())
}

/// Counted once published, wherever that happens: events stored by an attempt whose publish
/// failed go out (and count) when the row is redone.
fn count_emitted(events: &[SecretChangeEvent]) {
    for e in events {
        let kind = match e.kind {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        };
        metrics::counter!(METRIC_EVENTS_EMITTED, "kind" => kind).increment(1);
    }
}

fn change_event(
    id: &FolderId,
    key: &str,
    kind: ChangeKind,
    version: Option<u64>,
) -> SecretChangeEvent {
    SecretChangeEvent {
        project: id.project.clone(),
        environment: id.environment.clone(),
        folder: id.folder.clone(),
        key: key.to_owned(),
        kind,
        version,
        event_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// Updates the queue gauges and prunes the event log; run on a timer.
pub async fn housekeeping(state: &AppState) {
    match state.db.depth().await {
        Ok((depth, oldest)) => {
            metrics::gauge!(METRIC_QUEUE_DEPTH).set(depth as f64);
            let age = oldest.map_or(0, |t| state.clock.now_ms().saturating_sub(t).max(0));
            metrics::gauge!(METRIC_QUEUE_OLDEST_AGE).set(age as f64 / 1000.0);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the queue depth"),
    }
    if let Err(e) = state.db.prune(state.settings.retention).await {
        tracing::warn!(error = %e, "cannot prune the event log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!([1, 2, 3, 4].map(backoff_ms), [500, 1000, 2000, 4000]);
        assert_eq!(backoff_ms(40), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(i64::MIN), 500);
    }
}
