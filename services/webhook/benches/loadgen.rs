//! The load generator of both webhook benches: `make bench-webhook`
//! (`services/webhook/benches/webhook.rs`) and the P4 row of `make bench`
//! (`suites/benches/table.rs`, which includes this file by path: benches cannot share code
//! otherwise, and the service's library should not carry a load generator).
//!
//! It drives signed `secrets.modified` deliveries, every one different bytes (else the replay
//! cache answers 409), over keep-alive connections: closed loop with `in_flight` requests
//! outstanding, or paced at a total rate. Also here: the bare axum handler the service is
//! compared with, and the durable-commit floor of a database, measured the same way the
//! receiver commits (one single-row transaction at a time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ikit_common::clock::{Clock, SystemClock};
use ikit_common::webhook_signature::sign;

/// Numbers every delivery of the whole process, so no two bodies are alike.
static SENT: AtomicU64 = AtomicU64::new(0);

/// What a run measured.
pub struct Load {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Requests answered with anything but 2xx, or not answered.
    pub failed: usize,
}

/// Where to send and how to sign.
pub struct Target<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub project: &'a str,
    /// Deliveries cycle over this many folders (`/f0`, `/f1`, ...).
    pub folders: u64,
}

/// The `q` quantile of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(at).copied().unwrap_or_default()
}

/// Closed loop with `in_flight` requests outstanding (`pace` None), or `pace` requests/s in
/// total spread over `in_flight` senders, for `run`.
pub async fn drive(
    target: &Target<'_>,
    in_flight: usize,
    pace: Option<f64>,
    run: Duration,
) -> Load {
    let http = reqwest::Client::builder().pool_max_idle_per_host(in_flight).build().unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|sender| {
            let http = http.clone();
            let url = target.url.to_owned();
            let secret = target.secret.to_owned();
            let project = target.project.to_owned();
            let folders = target.folders.max(1);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0;
                let interval = pace.map(|p| Duration::from_secs_f64(in_flight as f64 / p));
                // Senders start spread over one interval, so a paced load is even.
                let mut next = Instant::now()
                    + interval.unwrap_or_default() * sender as u32 / in_flight as u32;
                while started.elapsed() < run {
                    if let Some(i) = interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += i;
                    }
                    let n = SENT.fetch_add(1, Ordering::Relaxed);
                    let ts = SystemClock.now_ms();
                    let body = format!(
                        r#"{{"event":"secrets.modified","project":{{"workspaceId":"{project}","environment":"dev","secretPath":"/f{}"}},"timestamp":{ts},"n":{n}}}"#,
                        n % folders
                    );
                    let signature = sign(ts, secret.as_bytes(), body.as_bytes());
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("x-infisical-signature", signature)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    if matches!(&r, Ok(r) if r.status().is_success()) {
                        latencies.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.expect("sender");
        all.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    all.sort();
    Load {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: quantile(&all, 0.50),
        p99: quantile(&all, 0.99),
        failed,
    }
}

/// Starts the bare handler on the current runtime: what axum costs with nothing behind it
/// (reads the body, answers 202). Returns its URL.
pub async fn start_bare() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|body: axum::body::Bytes| async move {
                (axum::http::StatusCode::ACCEPTED, body.len().to_string())
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    url
}

/// The durable-commit floor of the database at `url` (PostgreSQL or SQLite, as the service
/// opens it): p50 and p99 of `n` one-row `INSERT` transactions, one after another. No answer
/// that waits for a durable commit can be faster than this on the same disk.
pub async fn commit_floor(url: &str, n: usize) -> (Duration, Duration) {
    use sqlx::Executor as _;
    async fn time<F: Future<Output = ()>>(
        n: usize,
        mut one: impl FnMut(i64) -> F,
    ) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            one(i as i64).await;
            samples.push(t.elapsed());
        }
        samples.sort();
        samples
    }
    const TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_commit_floor (n BIGINT, at BIGINT)";
    const INSERT: &str = "INSERT INTO bench_commit_floor (n, at) VALUES ($1, $2)";
    let samples = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("commit floor: connect");
        pool.execute(TABLE).await.expect("commit floor: table");
        time(n, |i| {
            let pool = pool.clone();
            async move {
                sqlx::query(INSERT).bind(i).bind(i).execute(&pool).await.expect("insert");
            }
        })
        .await
    } else {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
        use std::str::FromStr as _;
        let options = SqliteConnectOptions::from_str(url)
            .expect("commit floor: sqlite url")
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("commit floor: open");
        pool.execute(TABLE).await.expect("commit floor: table");
        time(n, |i| {
            let pool = pool.clone();
            async move {
                sqlx::query(INSERT).bind(i).bind(i).execute(&pool).await.expect("insert");
            }
        })
        .await
    };
    (quantile(&samples, 0.50), quantile(&samples, 0.99))
}
