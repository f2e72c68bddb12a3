//! The SQL side of the audit log: one code path for PostgreSQL and SQLite (the `dispatch!` macro
//! type-checks the same body once per backend), embedded migrations, the chained append, queries
//! and the row walk behind `verify_chain()`.

use sqlx::{Executor, PgPool, Row, SqlitePool};

use super::chain::{ChainRow, ChainStatus, Verifier};
use super::{AuditError, AuditEvent, AuditFilter, AuditRecord, Outcome, Statement};

/// Migrations, in order: (version, description, PostgreSQL text, SQLite text).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[(
    1,
    "audit log",
    include_str!("../../migrations/postgres/0001_audit_log.sql"),
    include_str!("../../migrations/sqlite/0001_audit_log.sql"),
)];

const COMPONENT: &str = "audit";
/// `pg_advisory_xact_lock` key taken while migrating.
const MIGRATION_LOCK: i64 = 0x696b_6974_6175_6474;
const VERIFY_BATCH: i64 = 1_000;
/// Rows per `INSERT` of a batch append: 10 parameters a row stays well under SQLite's and
/// PostgreSQL's parameter limits.
const APPEND_CHUNK: usize = 500;
const COLUMNS: &str =
    "seq, time_ms, actor, action, target, outcome, request_id, details, prev_hash, hash";

#[derive(Debug, Clone)]
pub(crate) enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! dispatch {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

impl Store {
    fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// PostgreSQL serialises writers on the head row; SQLite takes the write lock at `BEGIN`.
    fn begin_sql(&self) -> &'static str {
        if self.is_postgres() { "BEGIN" } else { "BEGIN IMMEDIATE" }
    }

    fn head_sql(&self) -> &'static str {
        if self.is_postgres() {
            "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
        } else {
            "SELECT seq, hash FROM audit_head WHERE id = 1"
        }
    }

    /// Applies the embedded migrations not applied yet, in one transaction, under a lock.
    pub(crate) async fn migrate(&self) -> Result<(), AuditError> {
        let postgres = self.is_postgres();
        dispatch!(self, pool => {
            let mut tx = pool.begin_with(self.begin_sql()).await?;
            if postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            (&mut *tx)
                .execute(sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS ikit_schema_migrations (\
                     component TEXT NOT NULL, version BIGINT NOT NULL, description TEXT NOT NULL, \
                     PRIMARY KEY (component, version))",
                ))
                .await?;
            let applied: Vec<i64> = sqlx::query(
                "SELECT version FROM ikit_schema_migrations WHERE component = $1",
            )
            .bind(COMPONENT)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
            for &(version, description, pg_sql, sqlite_sql) in MIGRATIONS {
                if applied.contains(&version) {
                    continue;
                }
                let sql: &'static str = if postgres { pg_sql } else { sqlite_sql };
                (&mut *tx).execute(sqlx::raw_sql(sql)).await?;
                sqlx::query(
                    "INSERT INTO ikit_schema_migrations (component, version, description) \
                     VALUES ($1, $2, $3)",
                )
                .bind(COMPONENT)
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Appends events at the head of the chain, in order, in one transaction (one commit for
    /// the lot: group commit); returns their `seq`s. Either every event is stored or none.
    pub(crate) async fn append_many(&self, events: &[AuditEvent]) -> Result<Vec<i64>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.append_many_with(events, &[]).await
    }

    /// [`Self::append_many`], with the caller's statements run first in the same transaction.
    pub(crate) async fn append_many_with(
        &self,
        events: &[AuditEvent],
        also: &[Statement],
    ) -> Result<Vec<i64>, AuditError> {
        match self {
            Store::Postgres(pool) => {
                let mut tx = pool.begin_with(self.begin_sql()).await?;
                for statement in also {
                    statement.postgres_query().execute(&mut *tx).await?;
                }
                let head = sqlx::query(self.head_sql()).fetch_one(&mut *tx).await?;
                let (seq, prev): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
                let (rows, seq, prev) = chain_rows(events, seq, prev);
                let seqs = rows.iter().map(|r| r.seq).collect();
                // One statement of ten arrays whatever the batch size: prepared once per
                // connection and kept, where a `VALUES` list per size is a new statement to
                // parse and plan for every size (and evicts the others from the cache).
                let mut columns = PgColumns::with_capacity(rows.len());
                for row in rows {
                    columns.push(row);
                }
                columns.bind(sqlx::query(PG_APPEND)).execute(&mut *tx).await?;
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(prev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(seqs)
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_with(self.begin_sql()).await?;
                for statement in also {
                    let q = statement.sqlite_query().ok_or_else(|| {
                        AuditError::InvalidEvent("array arguments are for PostgreSQL only".into())
                    })?;
                    q.execute(&mut *tx).await?;
                }
                let head = sqlx::query(self.head_sql()).fetch_one(&mut *tx).await?;
                let (seq, prev): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
                let (rows, seq, prev) = chain_rows(events, seq, prev);
                let seqs = rows.iter().map(|r| r.seq).collect();
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let chunk: Vec<ChainRow> = rows.by_ref().take(APPEND_CHUNK).collect();
                    let sql = insert_sql(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for row in chunk {
                        q = q
                            .bind(row.seq)
                            .bind(row.time_ms)
                            .bind(row.actor)
                            .bind(row.action)
                            .bind(row.target)
                            .bind(row.outcome)
                            .bind(row.request_id)
                            .bind(row.details)
                            .bind(row.prev_hash)
                            .bind(row.hash);
                    }
                    q.execute(&mut *tx).await?;
                }
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(prev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(seqs)
            }
        }
    }

    pub(crate) async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
        let (sql, binds) = filter_sql(filter);
        let rows = dispatch!(self, pool => {
            let mut q = sqlx::query(&sql);
            for bind in binds {
                q = match bind {
                    Bind::Text(s) => q.bind(s),
                    Bind::Int(i) => q.bind(i),
                };
            }
            q.fetch_all(pool).await?.iter().map(read_row).collect::<Result<Vec<_>, _>>()?
        });
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    /// Walks every row in `seq` order, in batches, and compares the end with the head row. It
    /// reads one consistent snapshot, so writers appending meanwhile never look like tampering.
    pub(crate) async fn verify(&self) -> Result<ChainStatus, AuditError> {
        let begin = if self.is_postgres() {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            // A deferred transaction: its first read pins the snapshot (WAL) or a shared lock.
            "BEGIN"
        };
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        dispatch!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let (head_seq, head_hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
            let mut verifier = Verifier::default();
            let mut after = 0i64;
            loop {
                let batch = sqlx::query(&sql)
                    .bind(after)
                    .bind(VERIFY_BATCH)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(read_row)
                    .collect::<Result<Vec<_>, _>>()?;
                for row in &batch {
                    if let Some(broken) = verifier.check(row) {
                        return Ok(broken);
                    }
                }
                match batch.last() {
                    Some(last) if batch.len() as i64 == VERIFY_BATCH => after = last.seq,
                    _ => break,
                }
            }
            tx.rollback().await?;
            Ok(verifier.finish(head_seq, &head_hash))
        })
    }
}

/// The rows of `events` chained after the head (`seq`, `prev`), and the new head.
fn chain_rows(
    events: &[AuditEvent],
    mut seq: i64,
    mut prev: String,
) -> (Vec<ChainRow>, i64, String) {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let mut row = event.to_row(seq, std::mem::take(&mut prev));
        row.hash = row.expected_hash();
        prev.clone_from(&row.hash);
        rows.push(row);
    }
    (rows, seq, prev)
}

/// A batch append on PostgreSQL: every column as one array parameter.
const PG_APPEND: &str = "INSERT INTO audit_log (seq, time_ms, actor, action, target, outcome, \
     request_id, details, prev_hash, hash) SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], \
     $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[])";

/// Rows turned into columns for [`PG_APPEND`].
#[derive(Default)]
struct PgColumns {
    seq: Vec<i64>,
    time_ms: Vec<i64>,
    actor: Vec<String>,
    action: Vec<String>,
    target: Vec<String>,
    outcome: Vec<String>,
    request_id: Vec<Option<String>>,
    details: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl PgColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            seq: Vec::with_capacity(n),
            time_ms: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            target: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            details: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, row: ChainRow) {
        self.seq.push(row.seq);
        self.time_ms.push(row.time_ms);
        self.actor.push(row.actor);
        self.action.push(row.action);
        self.target.push(row.target);
        self.outcome.push(row.outcome);
        self.request_id.push(row.request_id);
        self.details.push(row.details);
        self.prev_hash.push(row.prev_hash);
        self.hash.push(row.hash);
    }

    fn bind(
        self,
        q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.seq)
            .bind(self.time_ms)
            .bind(self.actor)
            .bind(self.action)
            .bind(self.target)
            .bind(self.outcome)
            .bind(self.request_id)
            .bind(self.details)
            .bind(self.prev_hash)
            .bind(self.hash)
    }
}

/// `INSERT INTO audit_log (...) VALUES (...), (...)` for `rows` rows, numbered placeholders.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let first = r * 10;
        let params: Vec<String> = (1..=10).map(|c| format!("${}", first + c)).collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
    sql
}

fn read_row<R: Row>(r: &R) -> Result<ChainRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ChainRow {
        seq: r.try_get("seq")?,
        time_ms: r.try_get("time_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        request_id: r.try_get("request_id")?,
        details: r.try_get("details")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Bind {
    Text(String),
    Int(i64),
}

/// Builds the `SELECT` for a filter with numbered placeholders (valid in both backends).
fn filter_sql(filter: &AuditFilter) -> (String, Vec<Bind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    let mut push = |clause: &str, bind: Bind| {
        binds.push(bind);
        clauses.push(format!("{clause} ${}", binds.len()));
    };
    if let Some(v) = &filter.action {
        push("action =", Bind::Text(v.clone()));
    }
    if let Some(v) = &filter.actor {
        push("actor =", Bind::Text(v.clone()));
    }
    if let Some(v) = &filter.target {
        push("target =", Bind::Text(v.clone()));
    }
    if let Some(v) = filter.outcome {
        push("outcome =", Bind::Text(v.as_str().to_owned()));
    }
    if let Some(v) = filter.since_ms {
        push("time_ms >=", Bind::Int(v));
    }
    if let Some(v) = filter.until_ms {
        push("time_ms <", Bind::Int(v));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log");
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    sql.push_str(if filter.newest_first { " ORDER BY seq DESC" } else { " ORDER BY seq" });
    binds.push(Bind::Int(i64::from(filter.effective_limit())));
    sql.push_str(&format!(" LIMIT ${}", binds.len()));
    (sql, binds)
}

impl TryFrom<ChainRow> for AuditRecord {
    type Error = AuditError;

    fn try_from(row: ChainRow) -> Result<Self, AuditError> {
        let corrupt = |what: &str| AuditError::CorruptRow { seq: row.seq, reason: what.to_owned() };
        let outcome: Outcome = row.outcome.parse().map_err(|_| corrupt("unknown outcome"))?;
        let details =
            serde_json::from_str(&row.details).map_err(|_| corrupt("details not json"))?;
        Ok(AuditRecord {
            seq: row.seq,
            hash: row.hash,
            event: AuditEvent {
                time_ms: row.time_ms,
                actor: row.actor,
                action: row.action,
                target: row.target,
                outcome,
                request_id: row.request_id,
                details,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_ten_placeholders_a_row() {
        let sql = insert_sql(2);
        assert!(sql.starts_with(&format!("INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2,")));
        assert!(sql.ends_with("$10), ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"), "{sql}");
    }

    #[test]
    fn filter_sql_numbers_placeholders_in_order() {
        let filter = AuditFilter {
            action: Some("rotate".into()),
            target: Some("/auth/jwt".into()),
            since_ms: Some(10),
            until_ms: Some(20),
            limit: Some(5),
            newest_first: true,
            ..AuditFilter::default()
        };
        let (sql, binds) = filter_sql(&filter);
        assert!(
            sql.ends_with(
                "WHERE action = $1 AND target = $2 AND time_ms >= $3 AND time_ms < $4 \
                 ORDER BY seq DESC LIMIT $5"
            ),
            "{sql}"
        );
        assert_eq!(
            binds,
            [
                Bind::Text("rotate".into()),
                Bind::Text("/auth/jwt".into()),
                Bind::Int(10),
                Bind::Int(20),
                Bind::Int(5)
            ]
        );
        let (sql, binds) = filter_sql(&AuditFilter::default());
        assert!(sql.ends_with("FROM audit_log ORDER BY seq LIMIT $1"), "{sql}");
        assert_eq!(binds, [Bind::Int(i64::from(AuditFilter::DEFAULT_LIMIT))]);
    }

    /// Compile-time check: services spawn these futures, so they must be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(s: &Store, e: &AuditEvent, f: &AuditFilter) {
        fn is_send<T: Send>(_: T) {}
        is_send(s.migrate());
        is_send(s.append_many(std::slice::from_ref(e)));
        is_send(s.query(f));
        is_send(s.verify());
    }
}
