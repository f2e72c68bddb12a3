//! The durable side, in the audit log's database (PostgreSQL, or SQLite in the embedded
//! default): the work queue, the value-free folder states, the per-key event log (the outbox
//! and the `Last-Event-ID` history) and the baseline marks. One code path for both backends:
//! `dispatch!` type-checks the same body once per pool type.
//!
//! The queue holds one row per (project, environment, folder): a delivery for a folder already
//! queued bumps its `generation` instead of adding a row, so a burst is one refetch. A worker
//! claims a row with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises
//! writers); a row whose lease ran out is claimable again, so a crashed worker's folder is
//! redone. The row is deleted only when the generation it claimed is still current.

use std::collections::BTreeMap;

use ikit_common::audit::{SqlArg, Statement};
use ikit_common::events::SecretChangeEvent;
use ikit_common::folder_diff::FolderState;
use sqlx::{Connection, Executor, PgPool, Row, SqlitePool};

use crate::error::WebhookError;

/// The tables, the same on both databases but for the event log's sequence column (`{SEQ}`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_queue (
    folder_key TEXT PRIMARY KEY,
    project TEXT NOT NULL, environment TEXT NOT NULL, folder TEXT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 1,
    received_ms BIGINT NOT NULL, available_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT, lease_until_ms BIGINT, last_error TEXT);
CREATE INDEX IF NOT EXISTS webhook_queue_ready ON webhook_queue (available_ms, received_ms);
CREATE TABLE IF NOT EXISTS webhook_folder_state (
    folder_key TEXT PRIMARY KEY,
    project TEXT NOT NULL, environment TEXT NOT NULL, folder TEXT NOT NULL,
    state TEXT NOT NULL, updated_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_events (
    seq {SEQ},
    folder_key TEXT NOT NULL, event_id TEXT NOT NULL UNIQUE, environment TEXT NOT NULL,
    body TEXT NOT NULL, created_ms BIGINT NOT NULL, published BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS webhook_events_outbox ON webhook_events (folder_key, published);
CREATE TABLE IF NOT EXISTS webhook_baseline (
    scope_key TEXT PRIMARY KEY, taken_ms BIGINT NOT NULL);
";

/// The schema for one database: `seq` as that database spells an auto-incrementing key.
fn schema(seq: &str) -> String {
    SCHEMA.replace("{SEQ}", seq)
}

/// Serialises event inserts on PostgreSQL so `seq` order is commit order (a stream reading
/// `seq > last` then never skips a row that commits late).
const EVENTS_LOCK: i64 = 0x696b_6974_7768_6576;
const SCHEMA_LOCK: i64 = 0x696b_6974_7768_7363;
/// A folder state's text above this size has the connection that carried it give back the
/// buffer it grew for it: sqlx keeps a connection's buffers at their largest (by design), so
/// every pooled connection that ever read or wrote a 10,000-key state (about 1 MiB of text)
/// would hold that much for good.
const LARGE_STATE: usize = 64 * 1024;
/// Folders per queue `INSERT` (7 parameters each, well under both databases' limits).
const ENQUEUE_CHUNK: usize = 1_000;

/// One watched folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderId {
    pub project: String,
    pub environment: String,
    pub folder: String,
}

impl FolderId {
    pub fn new(project: &str, environment: &str, folder: &str) -> Self {
        Self { project: project.into(), environment: environment.into(), folder: folder.into() }
    }

    /// The row key; project ids, slugs and folder paths hold no `|`.
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.project, self.environment, self.folder)
    }
}

/// The statements queuing `deliveries` (see [`Db::enqueue_many`]); also run inside the audit
/// log's transaction by the receiver's group commit. On PostgreSQL one statement of array
/// parameters whatever the number of folders (prepared once per connection and kept); on
/// SQLite a `VALUES` list per chunk.
pub fn enqueue_statements(deliveries: &[Delivery], postgres: bool) -> Vec<Statement> {
    let mut folders: BTreeMap<String, (&Delivery, i64)> = BTreeMap::new();
    for d in deliveries {
        folders.entry(d.id.key()).or_insert((d, 0)).1 += 1;
    }
    let rows: Vec<(String, &Delivery, i64)> =
        folders.into_iter().map(|(key, (d, n))| (key, d, n)).collect();
    const UPSERT: &str = " ON CONFLICT (folder_key) DO UPDATE \
                          SET generation = webhook_queue.generation + excluded.generation";
    if postgres {
        let text = |f: fn(&(String, &Delivery, i64)) -> String| {
            SqlArg::TextArray(rows.iter().map(f).collect())
        };
        let int = |f: fn(&(String, &Delivery, i64)) -> i64| {
            SqlArg::IntArray(rows.iter().map(f).collect())
        };
        return vec![Statement {
            sql: format!(
                "INSERT INTO webhook_queue (folder_key, project, environment, folder, generation, \
                 received_ms, available_ms) SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], \
                 $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[]){UPSERT}"
            ),
            args: vec![
                text(|r| r.0.clone()),
                text(|r| r.1.id.project.clone()),
                text(|r| r.1.id.environment.clone()),
                text(|r| r.1.id.folder.clone()),
                int(|r| r.2),
                int(|r| r.1.received_ms),
                int(|r| r.1.available_ms),
            ],
        }];
    }
    rows.chunks(ENQUEUE_CHUNK)
        .map(|chunk| {
            let mut sql = String::from(
                "INSERT INTO webhook_queue (folder_key, project, environment, folder, generation, \
                 received_ms, available_ms) VALUES ",
            );
            let mut args = Vec::with_capacity(chunk.len() * 7);
            for (i, (key, d, n)) in chunk.iter().enumerate() {
                let p = i * 7;
                if i > 0 {
                    sql.push_str(", ");
                }
                let params: Vec<String> = (1..=7).map(|c| format!("${}", p + c)).collect();
                sql.push('(');
                sql.push_str(&params.join(", "));
                sql.push(')');
                args.extend([
                    SqlArg::Text(key.clone()),
                    SqlArg::Text(d.id.project.clone()),
                    SqlArg::Text(d.id.environment.clone()),
                    SqlArg::Text(d.id.folder.clone()),
                    SqlArg::Int(*n),
                    SqlArg::Int(d.received_ms),
                    SqlArg::Int(d.available_ms),
                ]);
            }
            sql.push_str(UPSERT);
            Statement { sql, args }
        })
        .collect()
}

/// A verified delivery for a folder: received at `received_ms`, refetched from `available_ms`
/// (the coalescing wait).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: FolderId,
    pub received_ms: i64,
    pub available_ms: i64,
}

/// A queue row a worker holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: FolderId,
    pub generation: i64,
    pub received_ms: i64,
    pub attempts: i64,
}

/// An event in the log with its stream position.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub seq: i64,
    pub event: SecretChangeEvent,
}

#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! dispatch {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Postgres($pool) => $body,
            Db::Sqlite($pool) => $body,
        }
    };
}

fn decode_event(body: &str) -> Result<SecretChangeEvent, WebhookError> {
    serde_json::from_str(body).map_err(|e| WebhookError::State(e.to_string()))
}

impl Db {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    fn begin_sql(&self) -> &'static str {
        if self.is_postgres() { "BEGIN" } else { "BEGIN IMMEDIATE" }
    }

    pub async fn migrate(&self) -> Result<(), WebhookError> {
        match self {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SCHEMA_LOCK)
                    .execute(&mut *tx)
                    .await?;
                (&mut *tx).execute(sqlx::raw_sql(&schema("BIGSERIAL PRIMARY KEY"))).await?;
                tx.commit().await?;
            }
            Db::Sqlite(pool) => {
                pool.execute(sqlx::raw_sql(&schema("INTEGER PRIMARY KEY AUTOINCREMENT"))).await?;
            }
        }
        Ok(())
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), WebhookError> {
        dispatch!(self, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    /// Queues a refetch of `id`, or bumps the generation of the row already queued for it.
    pub async fn enqueue(
        &self,
        id: &FolderId,
        now_ms: i64,
        available_ms: i64,
    ) -> Result<(), WebhookError> {
        dispatch!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_queue (folder_key, project, environment, folder, generation, \
                 received_ms, available_ms) VALUES ($1, $2, $3, $4, 1, $5, $6) \
                 ON CONFLICT (folder_key) DO UPDATE SET generation = webhook_queue.generation + 1",
            )
            .bind(id.key())
            .bind(&id.project)
            .bind(&id.environment)
            .bind(&id.folder)
            .bind(now_ms)
            .bind(available_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Queues many deliveries with one statement (one commit: the receiver's group commit).
    /// Deliveries of one folder in the batch count once each towards its generation; keys go in
    /// sorted order so two replicas' batches never wait on each other's rows in a cycle.
    pub async fn enqueue_many(&self, deliveries: &[Delivery]) -> Result<(), WebhookError> {
        for statement in enqueue_statements(deliveries, self.is_postgres()) {
            match self {
                Db::Postgres(pool) => {
                    statement.postgres_query().execute(pool).await?;
                }
                Db::Sqlite(pool) => {
                    // enqueue_statements gives SQLite no array argument.
                    let q = statement
                        .sqlite_query()
                        .ok_or_else(|| WebhookError::State("array argument on SQLite".into()))?;
                    q.execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    /// Claims the oldest ready row nobody holds, for `owner` until `lease_until_ms`.
    pub async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<Claimed>, WebhookError> {
        let lock = if self.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE webhook_queue SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
             WHERE folder_key = (SELECT folder_key FROM webhook_queue WHERE available_ms <= $3 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
             ORDER BY received_ms, folder_key LIMIT 1{lock}) \
             RETURNING project, environment, folder, generation, received_ms, attempts"
        );
        let row = dispatch!(self, pool => {
            sqlx::query(&sql)
                .bind(owner)
                .bind(lease_until_ms)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
                .map(|r| -> Result<Claimed, sqlx::Error> {
                    Ok(Claimed {
                        id: FolderId {
                            project: r.try_get(0)?,
                            environment: r.try_get(1)?,
                            folder: r.try_get(2)?,
                        },
                        generation: r.try_get(3)?,
                        received_ms: r.try_get(4)?,
                        attempts: r.try_get(5)?,
                    })
                })
                .transpose()?
        });
        Ok(row)
    }

    /// Gives a row back (a failed attempt, or shutdown): claimable again at `available_ms`.
    pub async fn release(
        &self,
        claimed: &Claimed,
        owner: &str,
        available_ms: i64,
        error: Option<&str>,
    ) -> Result<(), WebhookError> {
        dispatch!(self, pool => {
            sqlx::query(
                "UPDATE webhook_queue SET lease_owner = NULL, lease_until_ms = NULL, \
                 available_ms = $1, last_error = $2 WHERE folder_key = $3 AND lease_owner = $4",
            )
            .bind(available_ms)
            .bind(error)
            .bind(claimed.id.key())
            .bind(owner)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Done with a row: deleted when no delivery came in meanwhile, else given back, claimable
    /// at `again_at_ms`, so the newer change is refetched (the worker passes the end of a
    /// coalescing window: changes that keep coming while a folder is refetched are taken
    /// together, one refetch per window, instead of one refetch after another).
    pub async fn finish(
        &self,
        claimed: &Claimed,
        owner: &str,
        again_at_ms: i64,
    ) -> Result<(), WebhookError> {
        let key = claimed.id.key();
        dispatch!(self, pool => {
            let deleted = sqlx::query(
                "DELETE FROM webhook_queue WHERE folder_key = $1 AND lease_owner = $2 AND generation = $3",
            )
            .bind(&key)
            .bind(owner)
            .bind(claimed.generation)
            .execute(pool)
            .await?
            .rows_affected();
            if deleted == 0 {
                sqlx::query(
                    "UPDATE webhook_queue SET lease_owner = NULL, lease_until_ms = NULL, \
                     available_ms = $1, attempts = 0, last_error = NULL \
                     WHERE folder_key = $2 AND lease_owner = $3",
                )
                .bind(again_at_ms)
                .bind(&key)
                .bind(owner)
                .execute(pool)
                .await?;
            }
        });
        Ok(())
    }

    /// (rows queued, receipt time of the oldest).
    pub async fn depth(&self) -> Result<(i64, Option<i64>), WebhookError> {
        let got = dispatch!(self, pool => {
            let r = sqlx::query("SELECT COUNT(*), MIN(received_ms) FROM webhook_queue")
                .fetch_one(pool)
                .await?;
            (r.try_get::<i64, _>(0)?, r.try_get::<Option<i64>, _>(1)?)
        });
        Ok(got)
    }

    pub async fn load_state(&self, id: &FolderId) -> Result<Option<FolderState>, WebhookError> {
        let text: Option<String> = dispatch!(self, pool => {
            let mut conn = pool.acquire().await?;
            let text = sqlx::query("SELECT state FROM webhook_folder_state WHERE folder_key = $1")
                .bind(id.key())
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?;
            if text.as_ref().is_some_and(|t| t.len() > LARGE_STATE) {
                conn.shrink_buffers();
            }
            text
        });
        text.map(|t| serde_json::from_str(&t).map_err(|e| WebhookError::State(e.to_string())))
            .transpose()
    }

    /// Every stored state of a project (to find the folders importing a changed one).
    pub async fn project_states(
        &self,
        project: &str,
    ) -> Result<Vec<(FolderId, FolderState)>, WebhookError> {
        let rows: Vec<(String, String, String)> = dispatch!(self, pool => {
            let mut conn = pool.acquire().await?;
            let rows = sqlx::query("SELECT environment, folder, state FROM webhook_folder_state WHERE project = $1")
                .bind(project)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<(String, String, String)>, sqlx::Error>>()?;
            if rows.iter().map(|r| r.2.len()).sum::<usize>() > LARGE_STATE {
                conn.shrink_buffers();
            }
            rows
        });
        rows.into_iter()
            .map(|(env, folder, state)| {
                let state =
                    serde_json::from_str(&state).map_err(|e| WebhookError::State(e.to_string()))?;
                Ok((FolderId::new(project, &env, &folder), state))
            })
            .collect()
    }

    /// Stores a baseline state unless one exists (another replica may have been first).
    pub async fn insert_state_if_absent(
        &self,
        id: &FolderId,
        state: &FolderState,
        now_ms: i64,
    ) -> Result<bool, WebhookError> {
        let text = serde_json::to_string(state).map_err(|e| WebhookError::State(e.to_string()))?;
        let large = text.len() > LARGE_STATE;
        let n = dispatch!(self, pool => {
            let mut conn = pool.acquire().await?;
            let n = sqlx::query(
                "INSERT INTO webhook_folder_state (folder_key, project, environment, folder, state, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (folder_key) DO NOTHING",
            )
            .bind(id.key())
            .bind(&id.project)
            .bind(&id.environment)
            .bind(&id.folder)
            .bind(text)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if large {
                conn.shrink_buffers();
            }
            n
        });
        Ok(n == 1)
    }

    /// In one transaction, while `owner` still holds the row: the folder's new state and its
    /// per-key events (unpublished). Returns the logged events.
    pub async fn commit_changes(
        &self,
        claimed: &Claimed,
        owner: &str,
        state: &FolderState,
        events: &[SecretChangeEvent],
        now_ms: i64,
    ) -> Result<Vec<LoggedEvent>, WebhookError> {
        let key = claimed.id.key();
        let id = &claimed.id;
        let text = serde_json::to_string(state).map_err(|e| WebhookError::State(e.to_string()))?;
        let postgres = self.is_postgres();
        let large = text.len() > LARGE_STATE;
        let logged = dispatch!(self, pool => {
            let mut conn = pool.acquire().await?;
            let mut tx = conn.begin_with(self.begin_sql()).await?;
            let held = sqlx::query(
                "UPDATE webhook_queue SET last_error = NULL WHERE folder_key = $1 AND lease_owner = $2",
            )
            .bind(&key)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held != 1 {
                return Err(WebhookError::LeaseLost(key));
            }
            sqlx::query(
                "INSERT INTO webhook_folder_state (folder_key, project, environment, folder, state, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (folder_key) \
                 DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            )
            .bind(&key)
            .bind(&id.project)
            .bind(&id.environment)
            .bind(&id.folder)
            .bind(&text)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if postgres && !events.is_empty() {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(EVENTS_LOCK).execute(&mut *tx).await?;
            }
            let mut logged = Vec::with_capacity(events.len());
            for event in events {
                let body = serde_json::to_string(event).map_err(|e| WebhookError::State(e.to_string()))?;
                let seq: i64 = sqlx::query(
                    "INSERT INTO webhook_events (folder_key, event_id, environment, body, created_ms, published) \
                     VALUES ($1, $2, $3, $4, $5, 0) RETURNING seq",
                )
                .bind(&key)
                .bind(&event.event_id)
                .bind(&event.environment)
                .bind(body)
                .bind(now_ms)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
                logged.push(LoggedEvent { seq, event: event.clone() });
            }
            tx.commit().await?;
            if large {
                conn.shrink_buffers();
            }
            logged
        });
        Ok(logged)
    }

    /// Events of a folder stored but not yet published (a worker died between the two).
    pub async fn unpublished(&self, id: &FolderId) -> Result<Vec<LoggedEvent>, WebhookError> {
        let rows: Vec<(i64, String)> = dispatch!(self, pool => {
            sqlx::query("SELECT seq, body FROM webhook_events WHERE folder_key = $1 AND published = 0 ORDER BY seq")
                .bind(id.key())
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(seq, body)| Ok(LoggedEvent { seq, event: decode_event(&body)? }))
            .collect()
    }

    pub async fn mark_published(&self, id: &FolderId) -> Result<(), WebhookError> {
        dispatch!(self, pool => {
            sqlx::query("UPDATE webhook_events SET published = 1 WHERE folder_key = $1 AND published = 0")
                .bind(id.key())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Up to `limit` events after `after`, in order (the SSE stream's source).
    pub async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, WebhookError> {
        let rows: Vec<(i64, String)> = dispatch!(self, pool => {
            sqlx::query("SELECT seq, body FROM webhook_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(seq, body)| Ok(LoggedEvent { seq, event: decode_event(&body)? }))
            .collect()
    }

    /// The newest event's position (0 when none).
    pub async fn last_seq(&self) -> Result<i64, WebhookError> {
        let seq = dispatch!(self, pool => {
            sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM webhook_events")
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>(0)?
        });
        Ok(seq)
    }

    /// Keeps the newest `keep` published events.
    pub async fn prune(&self, keep: u64) -> Result<u64, WebhookError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let n = dispatch!(self, pool => {
            sqlx::query(
                "DELETE FROM webhook_events WHERE published = 1 AND seq <= \
                 (SELECT COALESCE(MAX(seq), 0) FROM webhook_events) - $1",
            )
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    pub async fn baseline_taken(&self, scope: &str) -> Result<bool, WebhookError> {
        let found = dispatch!(self, pool => {
            sqlx::query("SELECT taken_ms FROM webhook_baseline WHERE scope_key = $1")
                .bind(scope)
                .fetch_optional(pool)
                .await?
                .is_some()
        });
        Ok(found)
    }

    pub async fn mark_baseline(&self, scope: &str, now_ms: i64) -> Result<(), WebhookError> {
        dispatch!(self, pool => {
            sqlx::query("INSERT INTO webhook_baseline (scope_key, taken_ms) VALUES ($1, $2) ON CONFLICT (scope_key) DO NOTHING")
                .bind(scope)
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
