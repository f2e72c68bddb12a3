//! `ikit-health`: serves health, metrics, JWKS and the admin actions until SIGTERM or ctrl-c.
//! Settings come from `IKIT_CONFIG` (a TOML file) and the environment; bad settings exit 64.

use std::process::ExitCode;

use anyhow::Context as _;
use ikit_common::telemetry::{self, TelemetryConfig};
use ikit_health::{Application, HealthConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let env = ikit_common::env_map_from_process();
    let config = match HealthConfig::load(None, &env) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(64);
        }
    };
    let _telemetry =
        match telemetry::init(&TelemetryConfig::from_settings("ikit-health", &config.settings)) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("failed to start telemetry: {e}");
                return ExitCode::from(64);
            }
        };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ikit-health stopped");
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: HealthConfig) -> anyhow::Result<()> {
    let app = Application::build(config).await.context("failed to start ikit-health")?;
    app.run_until_stopped(stop_signal()).await.context("ikit-health failed while serving")
}

/// Ends on SIGTERM or ctrl-c.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
