//! `make bench`: issue 17's performance table. Every figure is printed beside its baseline
//! measured in the same run (the machine is shared and noisy: read the ratios), with its goal
//! and whether it was met. Real PostgreSQL and Redis, the emulator as Infisical, everything
//! in-process except P8, which spawns the release binaries and reads their RSS.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ikit_client::{
    AuthMethod, BudgetConfig, CachedClient, Client, ClientConfig, FolderQuery, SealKey, SecretRef,
};
use ikit_common::clock::{Clock, SystemClock};
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_common::webhook_signature::sign;
use ikit_emulator::{Emulator, EmulatorConfig, RunningEmulator, Seed};
use ikit_webhook::{Application, Options, WebhookSettings};
use serde_json::json;

/// The webhook benches' load generator, shared with `make bench-webhook`.
#[allow(dead_code, unreachable_pub)]
#[path = "../../services/webhook/benches/loadgen.rs"]
mod loadgen;
use loadgen::{Target, commit_floor, drive};

const PROJECT: &str = "be7c4000-0000-4000-8000-000000000017";
const CLIENT_ID: &str = "bench-id";
const CLIENT_SECRET: &str = "bench-secret";
const HOOK_SECRET: &str = "whsec-bench-table";
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// One line of the table.
struct Row {
    id: String,
    what: String,
    figure: String,
    baseline: String,
    ratio: String,
    goal: String,
    met: String,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        id: &str,
        what: impl Into<String>,
        figure: impl Into<String>,
        baseline: impl Into<String>,
        ratio: Option<f64>,
        goal: &str,
        met: Option<bool>,
    ) {
        let row = Row {
            id: id.to_owned(),
            what: what.into(),
            figure: figure.into(),
            baseline: baseline.into(),
            ratio: ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
            goal: goal.to_owned(),
            met: match met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
            .to_owned(),
        };
        eprintln!("  {} {}: {} (baseline {})", row.id, row.what, row.figure, row.baseline);
        self.0.push(row);
    }

    fn print(&self) {
        let header = ["id", "what", "figure", "baseline (same run)", "ratio", "goal", "met?"];
        let cells: Vec<[&str; 7]> = self
            .0
            .iter()
            .map(|r| [&*r.id, &*r.what, &*r.figure, &*r.baseline, &*r.ratio, &*r.goal, &*r.met])
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: [&str; 7]| {
            let padded: Vec<String> =
                row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            println!("| {} |", padded.join(" | "));
        };
        println!();
        line(header);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for row in cells {
            line(row);
        }
    }
}

fn folder_of(n: usize) -> String {
    format!("/s{n}")
}

fn seed() -> Seed {
    let mut folders = vec![json!({"projectId": PROJECT, "environment": "dev", "path": "/cold"})];
    let mut secrets = vec![
        json!({"projectId": PROJECT, "environment": "dev", "path": "/cold", "key": "K", "value": "v"}),
        json!({"projectId": PROJECT, "environment": "dev", "path": "/hot", "key": "K", "value": "0"}),
    ];
    let mut sized = |path: String, n: usize| {
        folders.push(json!({"projectId": PROJECT, "environment": "dev", "path": path}));
        secrets.extend((0..n).map(|i| {
            json!({"projectId": PROJECT, "environment": "dev", "path": path,
                   "key": format!("KEY_{i}"), "value": format!("value-{i}-0123456789abcdef")})
        }));
    };
    for n in SIZES {
        sized(folder_of(n), n);
    }
    sized("/list200".to_owned(), 200);
    let text = json!({
        "projects": [{"id": PROJECT, "slug": "bench", "environments": ["dev", "prod"]}],
        "identities": [{"id": "id-bench", "name": "bench", "clientId": CLIENT_ID,
                        "clientSecret": CLIENT_SECRET, "accessTokenTTL": 86400,
                        "accessTokenMaxTTL": 86400, "projects": [PROJECT]}],
        "folders": folders,
        "secrets": secrets
    });
    Seed::from_json(&text.to_string()).expect("seed")
}

async fn emulator() -> RunningEmulator {
    Emulator::start(EmulatorConfig::new(seed())).await.expect("emulator")
}

fn client_config(base_url: &str) -> ClientConfig {
    // The default request budget (8/s after a burst) would be measured instead of the client.
    ClientConfig::new(base_url, AuthMethod::universal(CLIENT_ID, CLIENT_SECRET))
        .expect("config")
        .with_budget(BudgetConfig { capacity: 1e9, refill_per_sec: 1e9 })
}

fn client(base_url: &str) -> Client {
    Client::new(client_config(base_url)).expect("client")
}

/// Mean nanoseconds per call of `read` over `n` calls, after a warm-up.
fn per_call(n: u32, mut read: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        read();
    }
    let started = Instant::now();
    for _ in 0..n {
        read();
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples
        .get(((samples.len() as f64 * 0.99) as usize).min(samples.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// P1: cached `get` hit and a live handle read against a bare `HashMap` lookup, with the
/// Prometheus recorder installed (metric updates count), at each folder size. A handle is read
/// both ways it offers: borrowed (`with_fresh`, the hot-path read) and owned (`fresh`, which
/// adds an `Arc` clone and its drop). Each figure is the best of many short rounds, the
/// baseline's too: on a shared machine a round is slowed by whatever else ran, never sped up.
fn p1(table: &mut Table, rt: &tokio::runtime::Runtime, emu: &RunningEmulator) {
    let _recorder = ikit_common::telemetry::metrics_handle();
    let cache = CachedClient::builder()
        .client(client(&emu.base_url()))
        .ttl(Duration::from_secs(3600))
        .max_stale(Duration::from_secs(7200))
        .build()
        .expect("cache");
    // Short rounds, many of them: on a shared machine most rounds of a millisecond or so run
    // without being preempted, and the fastest one is the figure. The four reads take turns
    // round by round, so a slow stretch of the machine slows the baseline as much as the rest.
    const READS: u32 = 20_000;
    const ROUNDS: usize = 25;
    for n in SIZES {
        let folder = folder_of(n);
        let probe = format!("{folder}/KEY_{}", n / 2);
        let key = SecretRef::parse(PROJECT, "dev", &probe).expect("ref");
        rt.block_on(cache.get(&key)).expect("warm");
        let handle = rt.block_on(cache.handle(&key)).expect("handle");
        let map: HashMap<String, String> = (0..n)
            .map(|i| (format!("{folder}/KEY_{i}"), format!("value-{i}-0123456789abcdef")))
            .collect();
        let (mut floor, mut borrowed_ns, mut owned_ns, mut get_ns) =
            (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::INFINITY);
        for _ in 0..ROUNDS {
            floor = floor.min(per_call(READS, || {
                black_box(map.get(black_box(probe.as_str())).map(String::len));
            }));
            borrowed_ns = borrowed_ns.min(per_call(READS, || {
                let len = black_box(&handle).with_fresh(|s| s.value.expose().len());
                black_box(len.expect("fresh"));
            }));
            owned_ns = owned_ns.min(per_call(READS, || {
                black_box(black_box(&handle).fresh().expect("fresh").value.value.expose().len());
            }));
            get_ns = get_ns.min(rt.block_on(async {
                for _ in 0..READS / 10 {
                    black_box(cache.get(black_box(&key)).await.expect("hit"));
                }
                let started = Instant::now();
                for _ in 0..READS {
                    let served = cache.get(black_box(&key)).await.expect("hit");
                    black_box(served.value.value.expose().len());
                }
                started.elapsed().as_nanos() as f64 / f64::from(READS)
            }));
        }
        for (what, ns, goal, most) in [
            ("cached get hit", get_ns, "<= 3x, <= 1 us", 3.0),
            ("live handle read (with_fresh)", borrowed_ns, "<= 2x, <= 1 us", 2.0),
            ("live handle read, owned Arc (fresh)", owned_ns, "<= 2x, <= 1 us", 2.0),
        ] {
            let ratio = ns / floor;
            table.add(
                "P1",
                format!("{what}, {n} secrets/folder"),
                format!("{ns:.0} ns"),
                format!("HashMap {floor:.0} ns"),
                Some(ratio),
                goal,
                Some(ratio <= most && ns <= 1_000.0),
            );
        }
    }
}

/// CPU seconds this thread has used (utime + stime of /proc/thread-self/stat).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// One raw keep-alive HTTP/1.1 GET loop with hyper: `lists` requests, the wall time.
async fn raw_lists(addr: SocketAddr, path_and_query: &str, token: &str, lists: u32) -> Duration {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // As reqwest does: without it Nagle and delayed ACKs add ~40 ms to every request.
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let started = Instant::now();
    for _ in 0..lists {
        let request = hyper::Request::get(path_and_query)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert!(response.status().is_success(), "{}", response.status());
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("json");
        black_box(parsed);
    }
    started.elapsed()
}

/// P2: a cold list through the client (no cache) against a raw keep-alive GET of the same
/// listing, and the client thread's CPU per list. The client runs on a thread of its own (a
/// current-thread runtime) so its CPU is told apart from the emulator's. The two take turns
/// over [`P2_ROUNDS`] rounds and the best round of each is the figure: a busy stretch of the
/// machine slows whichever ran in it, never speeds it up.
fn p2(table: &mut Table, emu: &RunningEmulator) {
    const P2_ROUNDS: u32 = 5;
    let base = emu.base_url();
    let addr = emu.local_addr();
    for (n, folder, lists) in [
        (10, folder_of(10), 80),
        (200, "/list200".to_owned(), 40),
        (1_000, folder_of(1_000), 12),
        (10_000, folder_of(10_000), 2),
    ] {
        let base = base.clone();
        let (client_wall, client_cpu, raw_wall) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = client(&base);
                let q = FolderQuery::new(PROJECT, "dev", &folder);
                client.fetch_folder(&q).await.expect("warm");
                let token = RawGets::login(&base).await.token;
                let path = format!(
                    "/api/v4/secrets?projectId={PROJECT}&environment=dev&secretPath={folder}\
                     &viewSecretValue=true&expandSecretReferences=true&recursive=false\
                     &include_imports=true&includeImports=true&includePersonalOverrides=true"
                );
                raw_lists(addr, &path, &token, 2).await;
                let (mut client_wall, mut raw_wall) = (Duration::MAX, Duration::MAX);
                let mut cpu = Some(Duration::ZERO);
                for _ in 0..P2_ROUNDS {
                    let cpu_before = thread_cpu();
                    let started = Instant::now();
                    for _ in 0..lists {
                        black_box(client.fetch_folder(&q).await.expect("list"));
                    }
                    client_wall = client_wall.min(started.elapsed());
                    let used = cpu_before.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
                    cpu = cpu.zip(used).map(|(total, used)| total + used);
                    raw_wall = raw_wall.min(raw_lists(addr, &path, &token, lists).await);
                }
                (client_wall, cpu, raw_wall)
            })
        })
        .join()
        .expect("p2 thread");
        let per = |d: Duration| d / lists;
        let ratio = client_wall.as_secs_f64() / raw_wall.as_secs_f64();
        let cpu = client_cpu.map_or_else(
            || "n/a".to_owned(),
            |c| {
                let per_list = c.as_secs_f64() * 1e6 / f64::from(lists * P2_ROUNDS);
                format!("{per_list:.0} us CPU/list")
            },
        );
        table.add(
            "P2",
            format!("cold list of {n} via client ({cpu})"),
            ms(per(client_wall)),
            format!("raw hyper GET {}", ms(per(raw_wall))),
            Some(ratio),
            "<= 1.05x wall",
            Some(ratio <= 1.05),
        );
    }
}

/// Emulated waits for U: a rate-limit wait moves the client's and the emulator's clocks
/// together instead of sleeping, so a used-up window resets at once and the rows measure the
/// client, not the limiter's minute. Concurrent waiters for one reset share its deadline (the
/// clocks move to the latest deadline, not by the sum of the waits).
struct EmulatedSleeper {
    client: Arc<ikit_client::ManualClock>,
    emulator: ikit_emulator::EmulatorClock,
    moves: std::sync::Mutex<()>,
}

impl ikit_client::Sleeper for EmulatedSleeper {
    fn sleep(&self, duration: Duration) -> ikit_client::SleepFuture {
        let _one_at_a_time = self.moves.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = self.client.now_ms() + i64::try_from(duration.as_millis()).unwrap_or(0);
        let behind = deadline - self.emulator.now_ms();
        if behind > 0 {
            let by = Duration::from_millis(behind.unsigned_abs());
            self.client.advance_by(by);
            self.emulator.advance(by);
        }
        Box::pin(std::future::ready(()))
    }
}

/// The folder U reads from: 1,000 distinct keys.
const U_FOLDER: &str = "/s1000";
const U_KEYS: usize = 1_000;
const U_SEQUENTIAL: usize = 200;
const U_BURST: usize = 100;
const U_ROUNDS: usize = 15;

/// The floor for U: a raw reqwest keep-alive client sending the very request the client sends
/// (same route and query) and reading the value out of the JSON, as any caller must.
struct RawGets {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl RawGets {
    async fn login(base: &str) -> Self {
        let http = reqwest::Client::new();
        let login: serde_json::Value = http
            .post(format!("{base}/api/v1/auth/universal-auth/login"))
            .json(&json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        let token = login["accessToken"].as_str().expect("token").to_owned();
        Self { http, base: base.to_owned(), token }
    }

    async fn get(&self, key: &str) -> usize {
        let response = self
            .http
            .get(format!("{}/api/v4/secrets/{key}", self.base))
            .query(&[
                ("projectId", PROJECT),
                ("environment", "dev"),
                ("secretPath", U_FOLDER),
                ("type", "shared"),
                ("viewSecretValue", "true"),
                ("expandSecretReferences", "true"),
                ("include_imports", "false"),
                ("includeImports", "false"),
            ])
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get");
        assert!(response.status().is_success(), "{}", response.status());
        let body = response.bytes().await.expect("body");
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("json");
        parsed["secret"]["secretValue"].as_str().map_or(0, str::len)
    }
}

/// Microseconds per get, `U_SEQUENTIAL` distinct keys one after the other from `first`.
async fn u_sequential<F: std::future::Future<Output = usize>>(
    first: usize,
    get: impl Fn(usize) -> F,
) -> f64 {
    let started = Instant::now();
    for i in 0..U_SEQUENTIAL {
        black_box(get((first + i) % U_KEYS).await);
    }
    started.elapsed().as_secs_f64() * 1e6 / U_SEQUENTIAL as f64
}

/// Milliseconds for `U_BURST` concurrent gets of distinct keys from `first`.
async fn u_burst<F>(first: usize, get: impl Fn(usize) -> F) -> f64
where
    F: std::future::Future<Output = usize> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..U_BURST).map(|i| tokio::spawn(get((first + i) % U_KEYS))).collect();
    for task in tasks {
        black_box(task.await.expect("task"));
    }
    started.elapsed().as_secs_f64() * 1e3
}

/// An emulator whose clock moves only when a wait is emulated, the limiter on or off.
async fn u_emulator(start_ms: i64, limiter: bool) -> RunningEmulator {
    let config = EmulatorConfig::new(seed())
        .clock(ikit_emulator::EmulatorClock::fixed(start_ms))
        .rate_limit_mode(limiter);
    Emulator::start(config).await.expect("emulator")
}

/// A client at default settings (no client-side budget: pacing comes from the server's
/// headers) whose waits are emulated.
fn u_client(emu: &RunningEmulator, start_ms: i64) -> Client {
    let clock = Arc::new(ikit_client::ManualClock::new(start_ms));
    let sleeper = Arc::new(EmulatedSleeper {
        client: clock.clone(),
        emulator: emu.clock().clone(),
        moves: std::sync::Mutex::new(()),
    });
    let config =
        ClientConfig::new(&emu.base_url(), AuthMethod::universal(CLIENT_ID, CLIENT_SECRET))
            .expect("config")
            .with_clock(clock)
            .with_sleeper(sleeper);
    Client::new(config).expect("client")
}

/// By-name requests the emulator received for the keys of [`U_FOLDER`].
fn u_requests(emu: &RunningEmulator) -> u64 {
    (0..U_KEYS).map(|i| emu.request_count("GET", &format!("/api/v4/secrets/KEY_{i}"))).sum()
}

/// U: uncached `Client::get` of distinct keys, sequential and as a 100-way burst, at default
/// settings, beside a raw keep-alive HTTP client sending the same requests to a server without
/// a limiter; the client against the emulator with its production-like limiter off and on (60
/// secrets requests a minute; the waits are emulated). Rounds are interleaved (raw, client with
/// the limiter off, client with it on) and the best of each kept, so a busy machine slows all
/// alike; with the limiter on, every by-name request beyond one per get was a 429 sent again.
fn uncached(table: &mut Table, rt: &tokio::runtime::Runtime) {
    let start_ms = SystemClock.now_ms();
    let (open, limited) = rt
        .block_on(async { (u_emulator(start_ms, false).await, u_emulator(start_ms, true).await) });
    let raw = Arc::new(rt.block_on(RawGets::login(&open.base_url())));
    let clients = [u_client(&open, start_ms), u_client(&limited, start_ms)];
    let get_with = |client: &Client| {
        let client = client.clone();
        move |i: usize| {
            let client = client.clone();
            async move {
                let key =
                    SecretRef::parse(PROJECT, "dev", &format!("{U_FOLDER}/KEY_{i}")).expect("ref");
                let (secret, _) = client.get(&key).await.expect("uncached get");
                secret.value.expose().len()
            }
        }
    };
    let raw_get = |i: usize| {
        let raw = raw.clone();
        async move { raw.get(&format!("KEY_{i}")).await }
    };
    rt.block_on(async {
        for client in &clients {
            client.ensure_token().await.expect("login");
        }
        raw_get(0).await;
    });
    let limited_before = u_requests(&limited);
    let mut gets_on_limited = 0u64;
    let (mut raw_seq, mut raw_burst) = (f64::MAX, f64::MAX);
    let mut seq = [f64::MAX; 2];
    let mut burst = [f64::MAX; 2];
    for round in 0..U_ROUNDS {
        let first = round * U_SEQUENTIAL;
        raw_seq = raw_seq.min(rt.block_on(u_sequential(first, raw_get)));
        raw_burst = raw_burst.min(rt.block_on(u_burst(first, raw_get)));
        for (n, client) in clients.iter().enumerate() {
            seq[n] = seq[n].min(rt.block_on(u_sequential(first, get_with(client))));
            burst[n] = burst[n].min(rt.block_on(u_burst(first, get_with(client))));
        }
        gets_on_limited += (U_SEQUENTIAL + U_BURST) as u64;
    }
    let refused = (u_requests(&limited) - limited_before).saturating_sub(gets_on_limited);
    for (n, mode) in ["limiter off", "limiter on"].into_iter().enumerate() {
        let refusals = if n == 1 { format!(", {refused} 429s") } else { String::new() };
        let ok = |ratio: f64| ratio <= 1.1 && (n == 0 || refused == 0);
        let goal = if n == 1 { "<= 1.1x, 0 429s" } else { "<= 1.1x" };
        let rows = [
            (
                format!("uncached get x{U_SEQUENTIAL} sequential, {mode}{refusals}"),
                format!("{:.0} us/get", seq[n]),
                format!("raw reqwest {raw_seq:.0} us/get"),
                seq[n] / raw_seq,
            ),
            (
                format!("uncached burst of {U_BURST} distinct keys, {mode}{refusals}"),
                format!("{:.1} ms", burst[n]),
                format!("raw reqwest {raw_burst:.1} ms"),
                burst[n] / raw_burst,
            ),
        ];
        for (what, figure, baseline, ratio) in rows {
            table.add("U", what, figure, baseline, Some(ratio), goal, Some(ok(ratio)));
        }
    }
    rt.block_on(async {
        open.shutdown().await;
        limited.shutdown().await;
    });
}

/// P3: 100 concurrent gets of a cold key: requests the emulator saw.
fn p3(table: &mut Table, rt: &tokio::runtime::Runtime, emu: &RunningEmulator) {
    let requests = rt.block_on(async {
        let cache = CachedClient::builder()
            .client(client(&emu.base_url()))
            .ttl(Duration::from_secs(3600))
            .max_stale(Duration::from_secs(7200))
            .build()
            .expect("cache");
        cache.client().ensure_token().await.expect("login");
        let before = emu.request_count("GET", "/api/v4/secrets");
        let key = SecretRef::parse(PROJECT, "dev", "/cold/K").expect("ref");
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move { cache.get(&key).await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("get");
        }
        emu.request_count("GET", "/api/v4/secrets") - before
    });
    table.add(
        "P3",
        "100 concurrent gets of a cold key",
        format!("{requests} request(s)"),
        "-",
        None,
        "exactly 1",
        Some(requests == 1),
    );
}

/// A running webhook service and what it owns.
struct HookService {
    app: Application,
    db: TestDatabase,
    _redis: TestRedis,
    _spool: tempfile::TempDir,
    url: String,
}

/// The webhook service on the emulator, with a fresh database and Redis prefix; `coalesce`
/// overrides the service's coalescing window (`None`: its default, as deployed).
async fn hook_service(
    emu: &RunningEmulator,
    redis: Option<&TestRedis>,
    coalesce: Option<&str>,
) -> HookService {
    let db = TestDatabase::postgres().await;
    let own_redis = TestRedis::new().await;
    let redis_ref = redis.unwrap_or(&own_redis);
    let spool = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = [
        ("INFISICAL_API_URL", emu.base_url().as_str()),
        ("INFISICAL_PROJECT_ID", PROJECT),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET),
        ("IKIT_DATABASE_URL", db.url()),
        ("IKIT_REDIS_URL", redis_ref.url()),
        ("IKIT_WEBHOOK_SECRET", HOOK_SECRET),
        ("IKIT_WEBHOOK_STATE_KEY", "bench-state-key-0123456789abcdef0123"),
        ("IKIT_WEBHOOK_ADDR", "127.0.0.1:0"),
        ("IKIT_HEALTH_ADDR", "127.0.0.1:1"),
        ("IKIT_WEBHOOK_RATE_LIMIT", "0"),
        ("IKIT_WEBHOOK_BASELINE", "true"),
        ("IKIT_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .chain(coalesce.map(|window| ("IKIT_WEBHOOK_COALESCE", window)))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = WebhookSettings::load(None, &env).expect("settings");
    let options = Options {
        client_config: Some(client_config(&emu.base_url())),
        redis_prefix: redis_ref.prefix().to_owned(),
        audit_spool_dir: spool.path().to_owned(),
        ..Options::default()
    };
    let app = Application::build_with(settings, options).await.expect("service starts");
    let url = format!("http://127.0.0.1:{}/api/v1/infisical/webhook", app.port());
    HookService { app, db, _redis: own_redis, _spool: spool, url }
}

/// P4: the webhook receiver against a bare axum handler, both driven by the load generator of
/// `make bench-webhook`, the servers on a runtime of 1, 2 and 4 worker threads, the load
/// generator on its own. Every answer of the receiver waits for a durable commit, so with `c`
/// requests in flight it cannot pass `c / commit time` req/s (Little's law) while the bare
/// handler is bound by CPU alone and saturates at the lowest concurrency (and loses ground at
/// 512 connections). Comparing at one concurrency favours one or the other, so the headline
/// compares capacities: each server's best over 32, 128 and 512 in flight (every level is
/// printed at 2 threads). The p99 at half the service's capacity is printed beside the
/// database's durable-commit floor measured in the same run. The service runs with its
/// defaults (but no per-source rate limit: the load comes from one address), its coalescing
/// window included: refetches of the 50 folders are work the service does at most once a
/// window per folder, whatever the request rate.
fn p4(table: &mut Table) {
    const IN_FLIGHT: [usize; 3] = [32, 128, 512];
    let run = Duration::from_secs(2);
    // Named, so a profile tells the load generator, the servers and the emulator apart.
    let runtime = |threads: usize, name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let driver = runtime(2, "p4-loadgen");
    let support = runtime(1, "p4-emulator");
    let emu = support.block_on(emulator());
    fn target(url: &str) -> Target<'_> {
        Target { url, secret: HOOK_SECRET, project: PROJECT, folders: 50 }
    }
    for threads in [1, 2, 4] {
        let server = runtime(threads, "p4-server");
        let bare_url = server.block_on(loadgen::start_bare());
        let hook = server.block_on(hook_service(&emu, None, None));
        driver.block_on(drive(&target(&bare_url), 32, Some(200.0), Duration::from_millis(500)));
        driver.block_on(drive(&target(&hook.url), 32, Some(200.0), Duration::from_millis(500)));
        // (req/s, in flight) of each server's best level.
        let (mut bare_best, mut hook_best) = ((0.0, 0), (0.0, 0));
        let mut failed = 0;
        for in_flight in IN_FLIGHT {
            let bare = driver.block_on(drive(&target(&bare_url), in_flight, None, run));
            let hooked = driver.block_on(drive(&target(&hook.url), in_flight, None, run));
            failed += hooked.failed;
            if bare.rps > bare_best.0 {
                bare_best = (bare.rps, in_flight);
            }
            if hooked.rps > hook_best.0 {
                hook_best = (hooked.rps, in_flight);
            }
            if threads == 2 {
                table.add(
                    "P4",
                    format!("webhook signed req/s, {threads} threads, {in_flight} in flight"),
                    format!("{:.0} req/s{}", hooked.rps, failures(hooked.failed)),
                    format!("bare axum {:.0} req/s", bare.rps),
                    Some(hooked.rps / bare.rps),
                    "(one level; headline below)",
                    None,
                );
            }
        }
        let ratio = hook_best.0 / bare_best.0;
        table.add(
            "P4",
            format!("webhook signed req/s, {threads} thread(s), capacity (best of 32/128/512)"),
            format!("{:.0} req/s at {}{}", hook_best.0, hook_best.1, failures(failed)),
            format!("bare axum {:.0} req/s at {}", bare_best.0, bare_best.1),
            Some(ratio),
            ">= 0.5x",
            Some(ratio >= 0.5 && failed == 0),
        );
        if threads == 2 {
            let half = (hook_best.0 / 2.0).max(1.0);
            let at_half = driver.block_on(drive(&target(&hook.url), hook_best.1, Some(half), run));
            let (floor_p50, floor_p99) = support.block_on(commit_floor(hook.db.url(), 300));
            table.add(
                "P4",
                format!("webhook p99 at half load ({half:.0} req/s), {threads} threads"),
                format!("{}{}", ms(at_half.p99), failures(at_half.failed)),
                format!("durable commit floor p99 {} (p50 {})", ms(floor_p99), ms(floor_p50)),
                Some(at_half.p99.as_secs_f64() / floor_p99.as_secs_f64()),
                "p99 <= 5 ms",
                Some(at_half.p99 <= Duration::from_millis(5) && at_half.failed == 0),
            );
        }
        server.block_on(hook.app.shutdown());
    }
    support.block_on(emu.shutdown());
}

fn failures(n: usize) -> String {
    if n == 0 { String::new() } else { format!(" ({n} failed)") }
}

/// P5: a change, its webhook, and three replicas' caches invalidated and subscribers called:
/// latency from the webhook's receipt to the last of the three.
fn p5(table: &mut Table, rt: &tokio::runtime::Runtime, emu: &RunningEmulator) {
    const CHANGES: usize = 40;
    let latencies = rt.block_on(async {
        let redis = TestRedis::new().await;
        // Refetched at once: P5 measures the way from receipt to every replica, not the window.
        let hook = hook_service(emu, Some(&redis), Some("0s")).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        let mut replicas = Vec::new();
        for r in 0..3 {
            let config = CachedClient::builder().ttl(Duration::from_secs(3600)).max_stale(Duration::from_secs(7200))
                .redis(redis.url(), Some(SealKey::new([5u8; 32]))).redis_prefix(redis.prefix());
            let cache = config.client(client(&emu.base_url())).build().expect("replica");
            let mut listener = cache.start_listener().expect("listener");
            listener.subscribed().await;
            let tx = tx.clone();
            cache.subscribe("/hot/K", move |_| {
                let _ = tx.send((r, Instant::now()));
            });
            cache.get(&SecretRef::parse(PROJECT, "dev", "/hot/K").unwrap()).await.expect("warm");
            replicas.push((cache, listener));
        }
        let writer = client(&emu.base_url());
        let http = reqwest::Client::new();
        let scope = ikit_client::Scope::new(PROJECT, "dev", "/hot");
        let mut latencies = Vec::new();
        for i in 0..CHANGES {
            writer
                .update_secret(&scope, &ikit_client::SecretUpdate::value("K", format!("{}", i + 1)))
                .await
                .expect("update");
            let ts = SystemClock.now_ms();
            let body = json!({"event": "secrets.modified",
                              "project": {"workspaceId": PROJECT, "environment": "dev", "secretPath": "/hot"},
                              "timestamp": ts})
            .to_string();
            let sig = sign(ts, HOOK_SECRET.as_bytes(), body.as_bytes());
            let sent = Instant::now();
            let r = http
                .post(&hook.url)
                .header("x-infisical-signature", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 202);
            let mut seen = [None; 3];
            while seen.iter().any(Option::is_none) {
                let (r, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("every replica within 10 s")
                    .expect("channel");
                seen[r] = Some(at);
            }
            let last = seen.iter().flatten().max().copied().expect("three");
            latencies.push(last.duration_since(sent));
        }
        for (_, listener) in replicas {
            listener.shutdown().await;
        }
        hook.app.shutdown().await;
        latencies
    });
    let worst = latencies.iter().max().copied().unwrap_or_default();
    let p = p99(latencies);
    table.add(
        "P5",
        format!("change -> 3 replicas invalidated + subscriber called ({CHANGES} changes)"),
        format!("p99 {}", ms(p)),
        format!("max {}", ms(worst)),
        None,
        "p99 <= 50 ms",
        Some(p <= Duration::from_millis(50)),
    );
}

/// P7: migrate 10,000 keys into the emulator: write requests and wall time.
fn p7(table: &mut Table, rt: &tokio::runtime::Runtime, emu: &RunningEmulator) {
    let (wall, requests, writes) = rt.block_on(async {
        let client = client(&emu.base_url());
        let mapping = ikit_migrate::mapping::Mapping::from_toml(
            "m",
            "[defaults]\nenvironment = \"prod\"\nfolder = \"/migrated\"\n",
        )
        .expect("mapping");
        let text: String = (0..10_000).map(|n| format!("KEY_{n:05}=\"value-{n}\"\n")).collect();
        let sources = ikit_migrate::source::from_dotenv(
            ".env",
            &text,
            ikit_migrate::dotenv::Interpolation::Off,
        )
        .expect("parses");
        let mapped = mapping.apply(sources).expect("maps");
        let routes = [
            "/api/v4/secrets/batch",
            "/api/v3/secrets/batch/raw",
            "/api/v1/folders",
            "/api/v2/folders",
        ];
        let writes = |emu: &RunningEmulator| -> u64 {
            ["POST", "PATCH", "DELETE"]
                .iter()
                .flat_map(|m| routes.iter().map(move |r| emu.request_count(m, r)))
                .sum()
        };
        // Every request of the run: the writes, the plan's listings and folder reads.
        let all = |emu: &RunningEmulator| -> u64 {
            writes(emu)
                + routes.iter().map(|r| emu.request_count("GET", r)).sum::<u64>()
                + emu.request_count("GET", "/api/v4/secrets")
                + emu.request_count("GET", "/api/v3/secrets/raw")
        };
        client.ensure_token().await.expect("login");
        let (all_before, writes_before) = (all(emu), writes(emu));
        let started = Instant::now();
        let (_, report) =
            ikit_migrate::apply::apply(&client, PROJECT, &mapped, false, b"k", &mut |_, _| {})
                .await
                .expect("applies");
        assert_eq!(report.written.len(), 10_000);
        (started.elapsed(), all(emu) - all_before, writes(emu) - writes_before)
    });
    table.add(
        "P7",
        "migrate 10,000 secrets (all requests, of which writes)",
        format!("{requests} requests ({writes} writes), {:.2} s", wall.as_secs_f64()),
        "-",
        None,
        "<= 100 requests, <= 10 s",
        Some(requests <= 100 && wall <= Duration::from_secs(10)),
    );
}

/// Runs one service the way its thin `main` does (settings from the process environment, build,
/// serve until killed): P8 spawns this very binary with `--serve <name>` so the service's RSS is
/// measured in a process of its own, without a second release build of its binary.
fn serve(name: &str) {
    // As the services' own `main` does.
    ikit_allocator::bound_retention();
    let env = ikit_common::env_map_from_process();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        match name {
            "ikit-webhook" => {
                let settings = WebhookSettings::load_path(&env).expect("webhook settings");
                let app = Application::build(settings).await.expect("webhook starts");
                app.run_until(std::future::pending()).await;
            }
            "ikit-health" => {
                let config = ikit_health::HealthConfig::load(None, &env).expect("health settings");
                let app = ikit_health::Application::build(config).await.expect("health starts");
                let _ = app.run_until_stopped(std::future::pending()).await;
            }
            other => panic!("unknown service {other}"),
        }
    });
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str) -> bool {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// P8: the RSS of each service in a process of its own, idle and after it has handled a folder
/// of 10,000 (every delivery processed: the queue drained).
fn p8(table: &mut Table, rt: &tokio::runtime::Runtime, emu: &RunningEmulator) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    rt.block_on(async {
        let db = TestDatabase::postgres().await;
        let redis = TestRedis::new().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let common: Vec<(&str, String)> = vec![
            ("INFISICAL_API_URL", emu.base_url()),
            ("INFISICAL_PROJECT_ID", PROJECT.to_owned()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", CLIENT_ID.to_owned()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("IKIT_DATABASE_URL", db.url().to_owned()),
            ("IKIT_REDIS_URL", redis.url().to_owned()),
            ("IKIT_LOG_LEVEL", "warn".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        // The webhook service idle (watching an empty scope), then watching the 10,000-secret
        // folder: its baseline and 200 deliveries each refetch and diff all 10,000.
        let name = "ikit-webhook";
        let path = std::env::current_exe().expect("own path");
        for (label, scope, deliveries, goal) in [
            ("idle", "/nothing-here", 0, 20.0),
            ("watching a 10,000-secret folder, 200 deliveries", "/s10000", 200, 50.0),
        ] {
            let port = free_port();
            let child = Command::new(&path)
                .args(["--serve", name])
                .current_dir(dir.path())
                .env_clear()
                .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
                .envs([
                    ("IKIT_WEBHOOK_SECRET", HOOK_SECRET.to_owned()),
                    ("IKIT_WEBHOOK_STATE_KEY", "bench-state-key-0123456789abcdef0123".to_owned()),
                    ("IKIT_WEBHOOK_ADDR", format!("127.0.0.1:{port}")),
                    ("IKIT_HEALTH_ADDR", "127.0.0.1:1".to_owned()),
                    ("IKIT_WEBHOOK_PATH", scope.to_owned()),
                    ("IKIT_WEBHOOK_COALESCE", "0s".to_owned()),
                    // 200 deliveries from one address in about a second: past the default
                    // per-source limit (50/s, burst 100), which would answer some of them 429.
                    ("IKIT_WEBHOOK_RATE_LIMIT", "0".to_owned()),
                    ("IKIT_AUDIT_SPOOL_DIR", dir.path().join(format!("w{port}")).display().to_string()),
                ])
                // glibc's malloc tunables pass through, to tell the allocator's retention from
                // live memory (`MALLOC_ARENA_MAX=1 make bench BENCH_ROWS=P8`).
                .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(Spawned);
            let Ok(child) = child else {
                table.add("P8", name, "failed to start", "-", None, "-", None);
                return;
            };
            let ready = wait_ready(&format!("http://127.0.0.1:{port}/healthz")).await;
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/api/v1/infisical/webhook");
            let mut accepted = 0;
            for i in 0..deliveries {
                let ts = SystemClock.now_ms() + i;
                let body = json!({"event": "secrets.modified",
                                  "project": {"workspaceId": PROJECT, "environment": "dev", "secretPath": scope},
                                  "timestamp": ts}).to_string();
                let sig = sign(ts, HOOK_SECRET.as_bytes(), body.as_bytes());
                let r = http.post(&url).header("x-infisical-signature", sig).body(body).send().await;
                if matches!(&r, Ok(r) if r.status().as_u16() == 202) {
                    accepted += 1;
                }
            }
            // Measured once the service has handled them all: its queue is empty (a row per
            // folder, deleted when its last change is processed), not while it still works.
            let drained = Instant::now();
            while drained.elapsed() < Duration::from_secs(60) {
                let queued: Result<i64, _> = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_queue")
                    .fetch_one(db.pool())
                    .await;
                if matches!(queued, Ok(0)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss = rss_kib(child.0.id()).filter(|_| ready);
            table.add(
                "P8",
                format!("{name} RSS {label} ({accepted} accepted)"),
                rss.map_or("n/a".into(), |k| format!("{:.1} MiB", mib(k))),
                "-",
                None,
                if goal < 30.0 { "<= 20 MiB" } else { "<= 50 MiB" },
                rss.map(|k| mib(k) <= goal),
            );
            drop(child);
        }
        let name = "ikit-health";
        let port = free_port();
        let child = Command::new(&path)
            .args(["--serve", name])
            .current_dir(dir.path())
            .env_clear()
            .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
            .envs([
                ("IKIT_HEALTH_ADDR", format!("127.0.0.1:{port}")),
                ("IKIT_WEBHOOK_ADDR", "127.0.0.1:1".to_owned()),
                ("IKIT_AUDIT_SPOOL_DIR", dir.path().join("h").display().to_string()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Spawned);
        let Ok(child) = child else {
            table.add("P8", name, "failed to start", "-", None, "<= 20 MiB idle", None);
            return;
        };
        let ready = wait_ready(&format!("http://127.0.0.1:{port}/healthz")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = rss_kib(child.0.id()).filter(|_| ready);
        table.add(
            "P8",
            format!("{name} RSS idle"),
            idle.map_or("n/a".into(), |k| format!("{:.1} MiB", mib(k))),
            "-",
            None,
            "<= 20 MiB",
            idle.map(|k| mib(k) <= 20.0),
        );
        // Health caches nothing but its key ring (a folder of a few keys): it holds no
        // secrets to be loaded with. Its "loaded" is its working set after serving: 1,000
        // rounds of every read route (status page, probes, health report, JWKS, metrics).
        let http = reqwest::Client::new();
        let routes = ["/", "/healthz", "/readyz", "/api/v1/infisical/health", "/.well-known/jwks.json", "/metrics"];
        let mut answered = 0;
        for _ in 0..1_000 {
            for route in routes {
                let r = http.get(format!("http://127.0.0.1:{port}{route}")).send().await;
                if let Ok(r) = r
                    && r.bytes().await.is_ok()
                {
                    answered += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = rss_kib(child.0.id()).filter(|_| ready);
        table.add(
            "P8",
            format!(
                "{name} RSS loaded: {answered} requests over its read routes (it caches only its key ring)"
            ),
            loaded.map_or("n/a".into(), |k| format!("{:.1} MiB", mib(k))),
            "-",
            None,
            "<= 50 MiB",
            loaded.map(|k| mib(k) <= 50.0),
        );
        drop(child);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        serve(args.get(at + 1).map_or("", String::as_str));
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument picks rows by id (e.g. `P4`).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.to_uppercase())
        .collect();
    let wanted = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let emu = rt.block_on(emulator());
    let mut table = Table::default();
    let started = Instant::now();
    if wanted("P1") {
        p1(&mut table, &rt, &emu);
    }
    if wanted("P2") {
        p2(&mut table, &emu);
    }
    if wanted("P3") {
        p3(&mut table, &rt, &emu);
    }
    if wanted("U") {
        uncached(&mut table, &rt);
    }
    if wanted("P4") {
        p4(&mut table);
    }
    if wanted("P5") {
        p5(&mut table, &rt, &emu);
    }
    if wanted("P6") {
        table.add(
            "P6",
            "`ikit run -- true`, warm and cold",
            "below: `make bench-cli` (a fresh release `ikit` if built, else debug)",
            "`true` alone (warm); curl login + curl list + `true` (cold)",
            None,
            "warm <= 20 ms; cold <= 1.05x",
            None,
        );
    }
    if wanted("P7") {
        p7(&mut table, &rt, &emu);
    }
    if wanted("P8") {
        p8(&mut table, &rt, &emu);
    }
    rt.block_on(emu.shutdown());
    table.print();
    println!(
        "\n(all rows in {:.0} s; ratios are figure / baseline of the same run)",
        started.elapsed().as_secs_f64()
    );
}
