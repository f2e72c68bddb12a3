//! `ikit`: parses the command line, reads the environment, the current directory and `HOME`
//! once, runs the command. Exit codes: the command's (for `run`, the child's), 1 failed, 2 bad
//! usage or configuration.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;
use ikit::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = ikit_common::env_map_from_process();
    let filter = log_filter(cli.global.log_level.as_deref(), &env);
    // `ikit dev` runs services: their telemetry (metrics registry, spans). Other commands log
    // plain lines to stderr, coloured only on a terminal and without NO_COLOR.
    let mut _guard = None;
    if cli.is_dev() {
        let mut telemetry = ikit_common::telemetry::TelemetryConfig::new("ikit");
        telemetry.log_format = ikit_common::config::LogFormat::Pretty;
        telemetry.log_filter = filter;
        match ikit_common::telemetry::init(&telemetry) {
            Ok(guard) => _guard = Some(guard),
            Err(e) => {
                eprintln!("ikit: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        let filter = match ikit_common::telemetry::parse_log_filter(&filter) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("ikit: invalid log level {filter:?}: {e}");
                return ExitCode::from(2);
            }
        };
        let color = !env.contains_key("NO_COLOR") && std::io::stderr().is_terminal();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(color)
            .with_target(false)
            .init();
    }
    let cwd = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("ikit: cannot read the current directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    // The handlers are installed before the command starts, so a SIGTERM that arrives as soon as
    // `ikit dev` has announced itself stops it cleanly instead of killing it.
    let stop = stop_signal();
    match ikit::run(cli, &env, &cwd, home.as_deref(), stop).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ikit: {e}");
            e.exit_code()
        }
    }
}

/// `--log-level`, else `RUST_LOG`, else the official CLI's `LOG_LEVEL`, else `error`: a CLI keeps
/// stderr for what the user must see, and says itself when it falls back on a snapshot.
fn log_filter(flag: Option<&str>, env: &std::collections::BTreeMap<String, String>) -> String {
    flag.map(str::to_owned)
        .or_else(|| env.get("RUST_LOG").filter(|v| !v.is_empty()).cloned())
        .or_else(|| env.get("LOG_LEVEL").filter(|v| !v.is_empty()).map(|v| v.to_lowercase()))
        .unwrap_or_else(|| "error".to_owned())
}

/// Ends on SIGTERM or ctrl-c (`ikit dev`). The SIGTERM handler is registered when this is
/// called, not when the returned future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
