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
//!
//! The replay check is batched the same way: before writing, the writer asks the replay cache
//! about every delivery of the batch in one pipelined Redis round trip (`SET NX` each), so a
//! request pays no Redis round trip of its own. A replay (of an earlier batch, or of a delivery
//! earlier in the same batch) queues nothing and is audited as refused; a delivery whose queue
//! write fails is forgotten again, so its redelivery is taken.
//!
//! The writer runs on a thread of its own (a one-thread Tokio runtime), with its own
//! PostgreSQL connections and the replay cache's Redis connection driven there. On the
//! service's runtime it was one task among hundreds of request tasks: each of its round trips
//! (Redis, `BEGIN`, the statements, `COMMIT`) waited behind every ready task for its turn, so a
//! batch took many times its database time, and every request waited for two of them. Here
//! its turn comes as soon as the database answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ikit_common::audit::{AuditError, AuditEvent, AuditLog, AuditOptions, Recorded};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::error::WebhookError;

use crate::replay::{Digest32, ReplayCache};
use crate::store::{Db, Delivery, enqueue_statements};

/// Requests per group commit.
pub const METRIC_BATCH_SIZE: &str = "ikit_webhook_intake_batch_size";

/// Most requests written together; a longer queue is taken by the next batch.
const MAX_BATCH: usize = 512;
/// Requests waiting for the writer before new ones wait for room (back-pressure, not loss).
const CHANNEL: usize = 4_096;

/// Builds a request's audit entry once its fate is known.
pub type AuditFor = Box<dyn Fn(Fate) -> AuditEvent + Send>;

/// One request for the writer: what to check, write and audit.
pub struct Submission {
    /// The delivery to queue, if any (a verified change in the watched scope).
    pub delivery: Option<Delivery>,
    /// The replay check of a verified delivery: its [`crate::replay::digest`] and receipt time.
    pub replay: Option<(Digest32, i64)>,
    pub audit: AuditFor,
}

struct Pending {
    submission: Submission,
    done: oneshot::Sender<Committed>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Not a replay, and its delivery (if any) is in the queue.
    Accepted,
    /// The replay cache had it already: nothing queued.
    Replayed,
    /// The queue refused its delivery (it is forgotten by the replay cache again).
    QueueRefused,
}

/// What became of one request's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub fate: Fate,
    /// The audit entry is in the database or the audit spool.
    pub audited: bool,
}

impl Committed {
    const LOST: Self = Self { fate: Fate::QueueRefused, audited: false };
}

/// The handle the receiver writes through.
pub struct Intake {
    sender: mpsc::Sender<Pending>,
    batches: Arc<AtomicU64>,
}

/// The writer's thread, to stop or abort.
pub struct IntakeTask {
    abort: AbortHandle,
    ended: oneshot::Receiver<()>,
}

impl IntakeTask {
    /// Waits until the writer has ended (after its `stop` was cancelled, or an abort).
    pub async fn ended(self) {
        let _ = self.ended.await;
    }

    /// Ends the writer where it is (a crash, in tests): a batch in hand is not answered.
    pub fn abort(&self) {
        self.abort.abort();
    }
}

impl Intake {
    /// Starts the writer on its own thread and returns with the audit log it writes (the
    /// service's audit log). On PostgreSQL (`postgres_url`) the log and the writer's queue
    /// statements use a small pool of their own, made on that thread; on SQLite they share
    /// `db`'s one connection. The writer runs until `stop` is cancelled, then writes what was
    /// already submitted and ends; later submissions are refused.
    pub async fn start(
        db: Db,
        postgres_url: Option<String>,
        audit_options: AuditOptions,
        replay: Arc<ReplayCache>,
        wake: Arc<Notify>,
        stop: CancellationToken,
    ) -> Result<(Self, AuditLog, IntakeTask), WebhookError> {
        let (sender, receiver) = mpsc::channel(CHANNEL);
        let batches = Arc::new(AtomicU64::new(0));
        let (started, up) = oneshot::channel::<Result<(AuditLog, AbortHandle), WebhookError>>();
        let (ended_tx, ended) = oneshot::channel();
        let counter = batches.clone();
        std::thread::Builder::new()
            .name("ikit-intake".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started.send(Err(WebhookError::Config(format!(
                            "cannot start the intake runtime: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let opened = async {
                        let (db, audit) = match (&db, postgres_url) {
                            (Db::Postgres(_), Some(url)) => {
                                let pool = PgPoolOptions::new()
                                    .max_connections(2)
                                    .acquire_timeout(std::time::Duration::from_secs(5))
                                    .connect_lazy(&url)?;
                                (
                                    Db::Postgres(pool.clone()),
                                    AuditLog::postgres(pool, audit_options)?,
                                )
                            }
                            (Db::Postgres(pool), None) => {
                                (db.clone(), AuditLog::postgres(pool.clone(), audit_options)?)
                            }
                            (Db::Sqlite(pool), _) => {
                                (db.clone(), AuditLog::sqlite(pool.clone(), audit_options)?)
                            }
                        };
                        audit.migrate().await?;
                        Ok::<_, WebhookError>((db, audit))
                    };
                    match opened.await {
                        Ok((db, audit)) => {
                            let writer = Writer { db, audit: audit.clone(), replay, wake };
                            let task = tokio::spawn(run(writer, receiver, stop, counter));
                            if started.send(Ok((audit, task.abort_handle()))).is_ok() {
                                let _ = task.await;
                            } else {
                                task.abort();
                            }
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                });
                // The runtime (its pool tasks, the Redis connection's driver) goes first.
                drop(rt);
                let _ = ended_tx.send(());
            })
            .map_err(|e| WebhookError::Config(format!("cannot start the intake thread: {e}")))?;
        let (audit, abort) = up.await.map_err(|_| {
            WebhookError::Config("the intake thread ended before it started".into())
        })??;
        Ok((Self { sender, batches }, audit, IntakeTask { abort, ended }))
    }

    /// Batches written so far (each one queue statement and one audit transaction).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Checks the replay (if asked), queues the delivery (if any and not a replay) and records
    /// the audit entry, in the next group commit; returns once both are durable (or refused).
    pub async fn commit(&self, submission: Submission) -> Committed {
        let (done, answer) = oneshot::channel();
        if self.sender.send(Pending { submission, done }).await.is_err() {
            return Committed::LOST;
        }
        answer.await.unwrap_or(Committed::LOST)
    }
}

struct Writer {
    db: Db,
    audit: AuditLog,
    replay: Arc<ReplayCache>,
    /// The workers' bell: rung once per batch that queued something, not once per request
    /// (each ring sends every idle worker to the queue).
    wake: Arc<Notify>,
}

async fn run(
    writer: Writer,
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
        writer.write(&mut batch).await;
        batches.fetch_add(1, Ordering::Relaxed);
    }
}

impl Writer {
    /// Writes one batch: the replay check, the queue (the audit entry says whether it took the
    /// delivery), the audit rows, then the answers.
    async fn write(&self, batch: &mut Vec<Pending>) {
        let checks: Vec<(Digest32, i64)> =
            batch.iter().filter_map(|p| p.submission.replay).collect();
        let mut first_time = self.replay.first_time_many(&checks).await.into_iter();
        let mut items: Vec<(Pending, Fate)> = Vec::with_capacity(batch.len());
        for mut p in batch.drain(..) {
            let new = p.submission.replay.is_none() || first_time.next().unwrap_or(false);
            if !new {
                p.submission.delivery = None;
            }
            items.push((p, if new { Fate::Accepted } else { Fate::Replayed }));
        }
        let deliveries: Vec<Delivery> =
            items.iter().filter_map(|(p, _)| p.submission.delivery.clone()).collect();
        // Usually one transaction for both: one flush to disk per batch.
        if !deliveries.is_empty() {
            let events: Vec<AuditEvent> =
                items.iter().map(|(p, fate)| (p.submission.audit)(*fate)).collect();
            match self
                .audit
                .record_many_with(&events, &enqueue_statements(&deliveries, self.db.is_postgres()))
                .await
            {
                Ok(_) => {
                    wake_for(&self.wake, &deliveries);
                    for (p, fate) in items {
                        let _ = p.done.send(Committed { fate, audited: true });
                    }
                    return;
                }
                // Then apart, so a queue failure is audited as such and the audit rows are kept
                // (spooled if need be) whatever the queue does. The entries are built again:
                // a refused delivery's entry says so.
                Err(e) => tracing::warn!(error = %e, "group commit in one transaction refused"),
            }
        }
        let queued = if deliveries.is_empty() {
            true
        } else {
            match self.db.enqueue_many(&deliveries).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, deliveries = deliveries.len(), "cannot queue deliveries");
                    false
                }
            }
        };
        if queued {
            wake_for(&self.wake, &deliveries);
        }
        if !queued {
            // Not kept: a redelivery must be taken, not refused as a replay.
            let refused: Vec<Digest32> = items
                .iter_mut()
                .filter(|(p, _)| p.submission.delivery.is_some())
                .filter_map(|(p, fate)| {
                    *fate = Fate::QueueRefused;
                    p.submission.replay.map(|(digest, _)| digest)
                })
                .collect();
            self.replay.forget_many(&refused).await;
        }
        let mut answers = Vec::with_capacity(items.len());
        let mut events = Vec::with_capacity(items.len());
        for (p, fate) in items {
            events.push((p.submission.audit)(fate));
            answers.push((p.done, fate));
        }
        let recorded: Vec<Result<Recorded, AuditError>> = self.audit.record_many(events).await;
        for ((done, fate), recorded) in answers.into_iter().zip(recorded) {
            if let Err(e) = &recorded {
                tracing::error!(error = %e, "cannot audit a webhook request");
            }
            // The requester may have gone (client disconnect); its writes stand all the same.
            let _ = done.send(Committed { fate, audited: recorded.is_ok() });
        }
    }
}

/// Wakes the idle workers when a queued folder is ready now (no coalescing window). Rows that
/// wait out a window are found by the workers' idle poll once it ends: a wake before that
/// would only make every idle worker run a claim that finds nothing, once per batch.
fn wake_for(wake: &Notify, deliveries: &[Delivery]) {
    if deliveries.iter().any(|d| d.available_ms <= d.received_ms) {
        wake.notify_waiters();
    }
}
