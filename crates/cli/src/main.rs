//! `ikit`: parses the command line, reads the environment once, runs the command; ctrl-c or
//! SIGTERM ends a long-running command cleanly. Exit codes: 0 done, 1 failed, 2 bad usage.

use std::process::ExitCode;

use clap::Parser as _;
use ikit::Cli;

#[tokio::main]
// without the `dev` feature there is no command yet, so nothing after parsing runs
#[cfg_attr(not(feature = "dev"), allow(unused_variables, unreachable_code))]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = ikit_common::env_map_from_process();
    let filter = env.get("RUST_LOG").cloned().unwrap_or_else(|| "info".to_owned());
    let mut telemetry = ikit_common::telemetry::TelemetryConfig::new("ikit");
    telemetry.log_format = ikit_common::config::LogFormat::Pretty;
    telemetry.log_filter = filter;
    let _guard = match ikit_common::telemetry::init(&telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("ikit: {e}");
            return ExitCode::from(64);
        }
    };
    match ikit::run(cli, &env, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ikit: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ends on SIGTERM or ctrl-c.
async fn stop_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
