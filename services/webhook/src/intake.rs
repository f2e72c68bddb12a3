//! Group commit for the receiver. Every request needs an audit row, and a verified change also a
//! queue row, both durable before the answer. Written one request at a time that is one
//! transaction and one flush to disk each, and the audit chain's head row serialises them: a
//! few hundred requests a second at best. Instead one writer task takes whatever requests are
//! waiting, queues their folders and appends their audit rows in one transaction
//! (`AuditLog::record_many_with`), and only then answers each of them. Should that transaction
//! fail, the queue statement and the audit rows are written apart, so a refused delivery is
//! audited as refused and no audit row is lost. A request never waits for a timer: the
//! batch is whatever arrived while the previous one was being written, so under light load a
//! batch is one request and under heavy load the commits are shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ikit_common::audit::{AuditError, AuditEvent, AuditLog, Recorded};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{Db, Delivery, enqueue_statements};

/// Requests per group commit.
pub const METRIC_BATCH_SIZE: &str = "ikit_webhook_intake_batch_size";

/// Most requests written together; a longer queue is taken by the next batch.
const MAX_BATCH: usize = 512;
/// Requests waiting for the writer before new ones wait for room (back-pressure, not loss).
const CHANNEL: usize = 4_096;

/// Builds a request's audit entry once its delivery's fate is known (`true`: queued or
/// nothing to queue; `false`: the queue refused it).
pub type AuditFor = Box<dyn Fn(bool) -> AuditEvent + Send>;

struct Pending {
    delivery: Option<Delivery>,
    audit: AuditFor,
    done: oneshot::Sender<Committed>,
}

/// What became of one request's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The delivery is in the queue (`true` when there was none to queue).
    pub queued: bool,
    /// The audit entry is in the database or the audit spool.
    pub audited: bool,
}

impl Committed {
    const LOST: Self = Self { queued: false, audited: false };
}

/// The handle the receiver writes through.
pub struct Intake {
    sender: mpsc::Sender<Pending>,
    batches: Arc<AtomicU64>,
}

impl Intake {
    /// Starts the writer. It runs until `stop` is cancelled, then writes what was already
    /// submitted and ends; later submissions are refused.
    pub fn start(db: Db, audit: AuditLog, stop: CancellationToken) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(CHANNEL);
        let batches = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(db, audit, receiver, stop, batches.clone()));
        (Self { sender, batches }, task)
    }

    /// Batches written so far (each one queue statement and one audit transaction).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Queues `delivery` (if any) and records the audit entry, in the next group commit;
    /// returns once both are durable (or refused).
    pub async fn commit(&self, delivery: Option<Delivery>, audit: AuditFor) -> Committed {
        let (done, answer) = oneshot::channel();
        if self.sender.send(Pending { delivery, audit, done }).await.is_err() {
            return Committed::LOST;
        }
        answer.await.unwrap_or(Committed::LOST)
    }
}

async fn run(
    db: Db,
    audit: AuditLog,
    mut receiver: mpsc::Receiver<Pending>,
    stop: CancellationToken,
    batches: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            got = receiver.recv() => got,
            () = stop.cancelled() => {
                // Refuse new work, then write what was submitted before.
                receiver.close();
                receiver.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        metrics::histogram!(METRIC_BATCH_SIZE).record(batch.len() as f64);
        write(&db, &audit, &mut batch).await;
        batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes one batch: the queue first (the audit entry says whether it took the delivery),
/// then the audit rows, then the answers.
async fn write(db: &Db, audit: &AuditLog, batch: &mut Vec<Pending>) {
    let deliveries: Vec<Delivery> = batch.iter().filter_map(|p| p.delivery.clone()).collect();
    // Usually one transaction for both: one flush to disk per batch.
    if !deliveries.is_empty() {
        let events: Vec<AuditEvent> = batch.iter().map(|p| (p.audit)(true)).collect();
        match audit.record_many_with(&events, &enqueue_statements(&deliveries)).await {
            Ok(_) => {
                for p in batch.drain(..) {
                    let _ = p.done.send(Committed { queued: true, audited: true });
                }
                return;
            }
            // Then apart, so a queue failure is audited as such and the audit rows are kept
            // (spooled if need be) whatever the queue does.
            Err(e) => tracing::warn!(error = %e, "group commit in one transaction refused"),
        }
    }
    let queued = if deliveries.is_empty() {
        true
    } else {
        match db.enqueue_many(&deliveries).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, deliveries = deliveries.len(), "cannot queue deliveries");
                false
            }
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    for p in batch.drain(..) {
        let fate = p.delivery.is_none() || queued;
        events.push((p.audit)(fate));
        answers.push((p.done, fate));
    }
    let recorded: Vec<Result<Recorded, AuditError>> = audit.record_many(events).await;
    for ((done, queued), recorded) in answers.into_iter().zip(recorded) {
        if let Err(e) = &recorded {
            tracing::error!(error = %e, "cannot audit a webhook request");
        }
        // The requester may have gone (client disconnect); its writes stand all the same.
        let _ = done.send(Committed { queued, audited: recorded.is_ok() });
    }
}
