//! `ikit-health`: serves health, metrics, JWKS and the admin actions until SIGTERM or ctrl-c.
//! `ikit-health --healthcheck` probes a running instance (the image's HEALTHCHECK).
//! Settings come from `IKIT_CONFIG` (a TOML file) and the environment; bad settings exit 64.

use std::process::ExitCode;

use anyhow::Context as _;
use ikit_common::telemetry::{self, TelemetryConfig};
use ikit_health::{Application, HealthConfig};

fn main() -> ExitCode {
    // Before the runtime starts its threads: they allocate from the arenas this bounds.
    ikit_allocator::bound_retention();
    serve()
}

#[tokio::main]
async fn serve() -> ExitCode {
    let env = ikit_common::env_map_from_process();
    if std::env::args().nth(1).as_deref() == Some("--healthcheck") {
        return healthcheck(&env);
    }
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

/// The container probe: `GET /healthz` on the configured listen address (no full config needed,
/// so a probe never fails on a setting the service itself would report).
fn healthcheck(env: &std::collections::BTreeMap<String, String>) -> ExitCode {
    let addr = env
        .get("IKIT_HEALTH_ADDR")
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .unwrap_or(ikit_health::config::DEFAULT_ADDR);
    let addr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("IKIT_HEALTH_ADDR {addr:?} is not HOST:PORT: {e}");
            return ExitCode::from(64);
        }
    };
    match ikit_health::probe::healthcheck(addr, std::time::Duration::from_secs(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
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
