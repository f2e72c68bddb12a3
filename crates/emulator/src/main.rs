//! `ikit-emulator --addr HOST:PORT --seed FILE --admin-token TOKEN [--data FILE]
//! [--api-version 2024|2026] [--webhook-delay-ms N]`: serves until SIGTERM or ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ikit_emulator::{ApiVersion, Emulator, EmulatorConfig, Seed};

#[derive(Parser)]
#[command(
    name = "ikit-emulator",
    about = "An Infisical-compatible server for tests and the dev stack"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Seed file (JSON, see docs/emulator.md).
    #[arg(long)]
    seed: PathBuf,
    /// Bearer token for /__emulator/*.
    #[arg(long, env = "IKIT_EMULATOR_ADMIN_TOKEN")]
    admin_token: String,
    /// Persist state here across restarts.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Server generation to play: 2024 (no /api/v4) or 2026.
    #[arg(long, default_value = "2026")]
    api_version: ApiVersion,
    /// Webhook coalescing delay in milliseconds.
    #[arg(long, default_value_t = 1000)]
    webhook_delay_ms: u64,
    /// Start with the production-like per-IP rate limiter on.
    #[arg(long)]
    rate_limit: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let seed = match std::fs::read_to_string(&args.seed) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("failed to read seed {}: {e}", args.seed.display());
            return ExitCode::from(64);
        }
    };
    let seed = match Seed::from_json(&seed) {
        Ok(seed) => seed,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let mut config = EmulatorConfig::new(seed)
        .addr(args.addr)
        .admin_token(args.admin_token)
        .api_version(args.api_version)
        .webhook_coalesce(Duration::from_millis(args.webhook_delay_ms))
        .rate_limit_mode(args.rate_limit);
    if let Some(data) = args.data {
        config = config.data_file(data);
    }
    // Listen for SIGTERM before announcing the URL, so a supervisor that signals right away is
    // heard.
    let stop = stop_signal();
    let running = match Emulator::start(config).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", running.base_url());
    stop.await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// Registers the handlers now; the returned future ends on SIGTERM or ctrl-c.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("sigterm handler");
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
