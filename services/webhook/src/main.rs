//! ikit-webhook: verifies Infisical webhooks and turns folder changes into per-key events.
//! Thin: settings (exit 64 naming every bad field), telemetry, `Application::build`, run until
//! SIGTERM or ctrl-c, shut down gracefully.

use ikit_common::telemetry::{self, TelemetryConfig};
use ikit_webhook::{Application, WebhookSettings};

#[tokio::main]
async fn main() {
    let env = ikit_common::env_map_from_process();
    let settings = match WebhookSettings::load_path(&env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let _telemetry =
        match telemetry::init(&TelemetryConfig::from_settings("ikit-webhook", &settings.base)) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot start telemetry: {e}");
                std::process::exit(70);
            }
        };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            std::process::exit(70);
        }
    };
    tracing::info!(addr = %app.addr(), "ikit-webhook listening");
    app.run_until(shutdown_signal()).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
