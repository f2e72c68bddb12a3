//! `ikit run -- cmd args`: the child runs with the environment plus the secrets.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitCode;
use std::time::Duration;

use hmac::{Hmac, Mac};
use ikit_client::{Client, FolderFetch, FolderQuery, FolderSecrets};
use rustix::process::{Pid, Signal, kill_process};
use sha2::Sha256;
use tokio::signal::unix::SignalKind;
use zeroize::Zeroizing;

use crate::fetch::{self, FetchOptions, SecretMap, SourceArgs, merge};
use crate::{CliError, Context};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit run --env prod --path /app -- ./server --port 8080\n  \
                        ikit run --watch --command 'npm run dev'")]
pub struct RunArgs {
    /// Folder to read; repeatable, a later path wins for a key in both.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Restart the child when its secrets change.
    #[arg(long)]
    pub watch: bool,
    /// Time between revalidations with --watch when IKIT_EVENTS_URL is not set (plain number:
    /// seconds; 500ms, 1m; at least 1s). A revalidation of an unchanged folder is a 304.
    #[arg(long, default_value = "10", value_parser = ikit_common::config::parse_duration)]
    pub watch_interval: Duration,
    /// With --watch: how long a stopped child gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = ikit_common::config::parse_duration)]
    pub restart_grace: Duration,
    /// Run this through `$SHELL -c` (else `sh -c`) instead of the arguments after `--`.
    #[arg(long, short = 'c')]
    pub command: Option<String>,
    /// The command and its arguments.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Secret names the official CLI refuses to inject, with the prefixes `XDG_` and `LC_`: the
/// shell and session need their own values.
const RESERVED: [&str; 12] = [
    "HOME",
    "PATH",
    "PS1",
    "PS2",
    "PWD",
    "EDITOR",
    "XAUTHORITY",
    "USER",
    "TERM",
    "TERMINFO",
    "SHELL",
    "MAIL",
];
/// The shortest `--watch-interval`.
const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a secret name is kept out of the child's environment.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || name.starts_with("XDG_") || name.starts_with("LC_")
}

/// The child's environment: `base` with the secrets over it (secrets win), reserved names
/// dropped and returned so the caller can warn about them by name.
pub fn child_env(
    base: &BTreeMap<String, String>,
    secrets: &SecretMap,
) -> (Vec<(String, Zeroizing<String>)>, Vec<String>) {
    let mut dropped = Vec::new();
    let mut env: BTreeMap<&str, Zeroizing<String>> =
        base.iter().map(|(k, v)| (k.as_str(), Zeroizing::new(v.clone()))).collect();
    for (key, value) in secrets {
        if is_reserved(key) {
            dropped.push(key.clone());
        } else {
            env.insert(key.as_str(), Zeroizing::new(value.expose().to_owned()));
        }
    }
    (env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), dropped)
}

/// The program and its arguments: `--command` through `$SHELL -c` (else `sh -c`), or what
/// follows `--`.
pub fn command_line(
    args: &RunArgs,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, CliError> {
    match (&args.command, args.args.is_empty()) {
        (Some(_), false) => Err(CliError::Usage(
            "give the command either with --command or after `--`, not both".into(),
        )),
        (Some(command), true) => {
            let shell = env.get("SHELL").filter(|s| !s.is_empty()).cloned();
            Ok(vec![shell.unwrap_or_else(|| "sh".into()), "-c".into(), command.clone()])
        }
        (None, false) => Ok(args.args.clone()),
        (None, true) => Err(CliError::Usage(
            "no command to run: pass it after `--` (ikit run -- ./server) or with --command".into(),
        )),
    }
}

/// 128 + N for a child killed by signal N, else its exit code (as the shells report it).
fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// The signals forwarded to the child. While these streams exist, ikit itself is not ended by
/// them: it waits for the child and reports its exit.
struct Forwarded {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Forwarded {
    fn install() -> Result<Self, CliError> {
        let kinds = [
            (Signal::INT, SignalKind::interrupt()),
            (Signal::TERM, SignalKind::terminate()),
            (Signal::HUP, SignalKind::hangup()),
            (Signal::QUIT, SignalKind::quit()),
            (Signal::USR1, SignalKind::user_defined1()),
            (Signal::USR2, SignalKind::user_defined2()),
        ];
        let mut streams = Vec::with_capacity(kinds.len());
        for (signal, kind) in kinds {
            let stream = tokio::signal::unix::signal(kind)
                .map_err(|e| CliError::Failed(format!("cannot handle signals: {e}")))?;
            streams.push((signal, stream));
        }
        Ok(Self { streams })
    }

    /// The next signal received.
    async fn recv(&mut self) -> Signal {
        let waits = self.streams.iter_mut().map(|(signal, stream)| {
            let signal = *signal;
            Box::pin(async move {
                stream.recv().await;
                signal
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}

/// A running child: its pid for signals and a task waiting for its exit.
struct Running {
    pid: Option<Pid>,
    exit: tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>>,
}

impl Running {
    fn spawn(argv: &[String], env: &[(String, Zeroizing<String>)]) -> Result<Self, CliError> {
        let mut command = std::process::Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear();
        for (k, v) in env {
            command.env(k, v.as_str());
        }
        let mut child = command
            .spawn()
            .map_err(|source| CliError::Spawn { program: argv[0].clone(), source })?;
        let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
        let exit = tokio::task::spawn_blocking(move || child.wait());
        Ok(Self { pid, exit })
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            // The child may have exited a moment ago; its exit is reported by `exit`.
            let _ = kill_process(pid, signal);
        }
    }

    async fn wait(&mut self) -> Result<std::process::ExitStatus, CliError> {
        match (&mut self.exit).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(CliError::Failed(format!("cannot wait for the command: {e}"))),
            Err(e) => Err(CliError::Failed(format!("cannot wait for the command: {e}"))),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    async fn stop(mut self, grace: Duration) {
        self.signal(Signal::TERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            self.signal(Signal::KILL);
            let _ = self.wait().await;
        }
    }
}

pub async fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode, CliError> {
    let argv = command_line(&args, &ctx.env)?;
    let opts = args.source.fetch_options(args.paths.clone());
    let ctx = &*ctx.with_token_project().await?;
    let fetched = fetch::fetch(ctx, &opts).await?;
    fetch::announce(&fetched.origin);
    let mut watcher = match args.watch {
        true => Some(Watcher::new(ctx, &opts, args.watch_interval, &fetched.secrets).await?),
        false => None,
    };
    let mut secrets = fetched.secrets;
    let mut signals = Forwarded::install()?;
    loop {
        let (env, dropped) = child_env(&ctx.env, &secrets);
        for name in dropped {
            ctx.warn(&format!("secret {name} not injected: the name is reserved for the shell"));
        }
        let mut child = Running::spawn(&argv, &env)?;
        drop(env);
        let restart = loop {
            let change = async {
                match watcher.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => return Ok(ExitCode::from(exit_code(status?))),
                signal = signals.recv() => child.signal(signal),
                new = change => break new,
            }
        };
        if !ctx.silent {
            eprintln!("ikit: secrets changed, restarting the command");
        }
        child.stop(args.restart_grace).await;
        secrets = restart;
    }
}

/// `--watch`: finds out when the secrets change, by the webhook service's event stream
/// (`IKIT_EVENTS_URL`, bearer `IKIT_EVENTS_TOKEN`) or by revalidating each listing with its ETag
/// every interval (an unchanged folder costs the server a 304); either way the listings are
/// re-read with `If-None-Match` and compared by a keyed digest, never by value.
struct Watcher {
    client: Client,
    queries: Vec<FolderQuery>,
    listings: Vec<(Option<String>, Option<FolderSecrets>)>,
    trigger: Trigger,
    digest_key: [u8; 32],
    current: [u8; 32],
    /// The last revalidation failed (warned once per failing streak).
    failing: bool,
    silent: bool,
}

enum Trigger {
    Every(tokio::time::Interval),
    Events(tokio::sync::mpsc::Receiver<()>),
}

impl Watcher {
    async fn new(
        ctx: &Context,
        opts: &FetchOptions,
        interval: Duration,
        secrets: &SecretMap,
    ) -> Result<Self, CliError> {
        let queries = opts.queries(ctx)?;
        let client = ctx.client().await?;
        let mut digest_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut digest_key);
        let trigger = match ctx.env.get("IKIT_EVENTS_URL").filter(|u| !u.is_empty()) {
            Some(url) => Trigger::Events(events(
                url.clone(),
                ctx.env.get("IKIT_EVENTS_TOKEN").cloned(),
                ctx.environment.clone(),
                ctx.silent,
            )),
            None => {
                let every = interval.max(MIN_WATCH_INTERVAL);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Trigger::Every(tick)
            }
        };
        let listings = vec![(None, None); queries.len()];
        let current = digest(&digest_key, secrets);
        Ok(Self {
            client,
            queries,
            listings,
            trigger,
            digest_key,
            current,
            failing: false,
            silent: ctx.silent,
        })
    }

    /// Waits until the secrets differ from the ones the child runs with, and returns them.
    /// Read errors are logged and the watch goes on (the child keeps running).
    async fn changed(&mut self) -> SecretMap {
        loop {
            match &mut self.trigger {
                Trigger::Every(tick) => {
                    tick.tick().await;
                }
                Trigger::Events(rx) => {
                    if rx.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
            }
            let mut next = self.listings.clone();
            let mut failed = false;
            for (q, (etag, listing)) in self.queries.iter().zip(next.iter_mut()) {
                match self.client.fetch_folder_if_changed(q, etag.as_deref()).await {
                    Ok(FolderFetch::Modified { folder, etag: new }) => {
                        *etag = new;
                        *listing = Some(folder);
                    }
                    Ok(FolderFetch::NotModified) => {}
                    Err(e) => {
                        if !self.failing && !self.silent {
                            eprintln!("ikit: warning: watch: cannot revalidate {}: {e}", q.path);
                        }
                        failed = true;
                        break;
                    }
                }
            }
            self.failing = failed;
            if failed {
                continue;
            }
            self.listings = next;
            let secrets = merge(
                self.listings.iter().filter_map(|(_, l)| l.as_ref()),
                self.client.import_order(),
            );
            let digest = digest(&self.digest_key, &secrets);
            if digest != self.current {
                self.current = digest;
                return secrets;
            }
        }
    }
}

/// A keyed digest of the key/value pairs: tells a change without keeping or comparing values.
fn digest(key: &[u8; 32], secrets: &SecretMap) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for (k, v) in secrets {
        for part in [k.as_bytes(), v.expose().as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
    }
    mac.finalize().into_bytes().into()
}

/// Counts the complete `data:` lines in `chunk`, keeping an unfinished last line in `partial`
/// for the next chunk (a frame may be cut anywhere).
fn data_lines(partial: &mut Vec<u8>, chunk: &[u8]) -> usize {
    partial.extend_from_slice(chunk);
    let Some(last_newline) = partial.iter().rposition(|b| *b == b'\n') else { return 0 };
    let complete: Vec<u8> = partial.drain(..=last_newline).collect();
    complete.split(|b| *b == b'\n').filter(|line| line.starts_with(b"data:")).count()
}

/// Reads the event stream in the background (reconnecting after a second) and sends a tick
/// for every event.
fn events(
    url: String,
    token: Option<String>,
    environment: String,
    silent: bool,
) -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut failing = false;
        loop {
            let mut request = http
                .get(&url)
                .query(&[("environment", environment.as_str())])
                .header("accept", "text/event-stream");
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            match request.send().await.and_then(reqwest::Response::error_for_status) {
                Ok(mut response) => {
                    if failing && !silent {
                        eprintln!("ikit: watch: event stream connected again");
                    }
                    failing = false;
                    let mut partial = Vec::new();
                    while let Ok(Some(chunk)) = response.chunk().await {
                        let events = data_lines(&mut partial, &chunk);
                        // One pending tick is enough: the check re-reads every folder.
                        if events > 0 && tx.try_send(()).is_err() && tx.is_closed() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !failing && !silent {
                        eprintln!(
                            "ikit: warning: watch: event stream unavailable: {}",
                            e.without_url()
                        );
                    }
                    failing = true;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::ListingArgs;
    use ikit_common::SecretValue;

    fn args(command: Option<&str>, rest: &[&str]) -> RunArgs {
        RunArgs {
            paths: Vec::new(),
            source: SourceArgs {
                listing: ListingArgs {
                    recursive: false,
                    include_imports: true,
                    expand: true,
                    tags: Vec::new(),
                },
                max_stale: Duration::from_secs(60),
                fallback_env: None,
            },
            watch: false,
            watch_interval: Duration::from_secs(10),
            restart_grace: Duration::from_secs(10),
            command: command.map(str::to_owned),
            args: rest.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn secrets_win_and_reserved_names_are_dropped_by_name() {
        let base: BTreeMap<String, String> = [("A", "env"), ("PATH", "/bin"), ("KEEP", "k")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let secrets: SecretMap =
            [("A", "secret"), ("PATH", "/evil"), ("XDG_X", "x"), ("LC_ALL", "C"), ("NEW", "n")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), SecretValue::new(v)))
                .collect();
        let (env, dropped) = child_env(&base, &secrets);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "secret"), ("KEEP", "k"), ("NEW", "n"), ("PATH", "/bin")]);
        assert_eq!(dropped, ["LC_ALL", "PATH", "XDG_X"]);
    }

    #[test]
    fn the_command_comes_from_after_the_dashes_or_through_the_shell() {
        let env: BTreeMap<String, String> = [("SHELL".to_owned(), "/bin/zsh".to_owned())].into();
        assert_eq!(command_line(&args(None, &["a", "b c"]), &env).unwrap(), ["a", "b c"]);
        assert_eq!(
            command_line(&args(Some("x && y"), &[]), &env).unwrap(),
            ["/bin/zsh", "-c", "x && y"]
        );
        assert_eq!(
            command_line(&args(Some("x"), &[]), &BTreeMap::new()).unwrap(),
            ["sh", "-c", "x"]
        );
        assert!(matches!(command_line(&args(Some("x"), &["y"]), &env), Err(CliError::Usage(_))));
        assert!(matches!(command_line(&args(None, &[]), &env), Err(CliError::Usage(_))));
    }

    #[test]
    fn data_lines_are_counted_across_chunk_boundaries() {
        let mut partial = Vec::new();
        assert_eq!(data_lines(&mut partial, b": heartbeat\nid: 1\nda"), 0);
        assert_eq!(data_lines(&mut partial, b"ta: {\"k\":1}"), 0);
        assert_eq!(data_lines(&mut partial, b"\n\nid: 2\ndata: x\n\ndata: y\n"), 3);
        assert!(partial.is_empty());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn the_digest_changes_with_any_key_or_value_and_is_keyed() {
        let map = |pairs: &[(&str, &str)]| -> SecretMap {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), SecretValue::new(*v))).collect()
        };
        let key = [1u8; 32];
        let base = digest(&key, &map(&[("A", "1"), ("B", "2")]));
        assert_eq!(base, digest(&key, &map(&[("B", "2"), ("A", "1")])));
        assert_ne!(base, digest(&key, &map(&[("A", "1"), ("B", "3")])));
        assert_ne!(base, digest(&key, &map(&[("A", "12"), ("B", "")])), "lengths are framed");
        assert_ne!(base, digest(&key, &map(&[("A", "1")])));
        assert_ne!(base, digest(&[2u8; 32], &map(&[("A", "1"), ("B", "2")])));
    }
}
