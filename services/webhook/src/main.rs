//! ikit-webhook: verifies Infisical webhooks and turns folder changes into per-key events.
//! Thin: settings (exit 64 naming every bad field), telemetry, `Application::build`, run until
//! SIGTERM or ctrl-c, shut down gracefully.

use ikit_common::telemetry::{self, TelemetryConfig};
use ikit_webhook::{Application, WebhookSettings};

fn main() {
    // Before the runtime starts its threads: they allocate from the arenas this bounds.
    ikit_allocator::bound_retention();
    serve();
}

#[tokio::main]
async fn serve() {
    let env = ikit_common::env_map_from_process();
    if std::env::args().nth(1).as_deref() == Some("--healthcheck") {
        std::process::exit(healthcheck(&env));
    }
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

/// `ikit-webhook --healthcheck`: the image's HEALTHCHECK (distroless has no shell or curl).
/// One `GET /healthz` over loopback to the configured port; 0 on a 200, 1 otherwise.
fn healthcheck(env: &std::collections::BTreeMap<String, String>) -> i32 {
    use std::io::{Read as _, Write as _};
    let listen = env.get("IKIT_WEBHOOK_ADDR").map(|a| a.trim()).filter(|a| !a.is_empty());
    let listen = listen.unwrap_or(ikit_common::config::DEFAULT_WEBHOOK_ADDR);
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        eprintln!("IKIT_WEBHOOK_ADDR {listen:?} is not HOST:PORT");
        return 64;
    };
    let target = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let timeout = std::time::Duration::from_secs(3);
    let probe = || -> std::io::Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = vec![0u8; 32];
        let read = stream.read(&mut head)?;
        head.truncate(read);
        Ok(head)
    };
    match probe() {
        Ok(head) if head.starts_with(b"HTTP/1.1 200 ") || head.starts_with(b"HTTP/1.0 200 ") => 0,
        Ok(head) => {
            eprintln!("unhealthy: {}", String::from_utf8_lossy(&head).lines().next().unwrap_or(""));
            1
        }
        Err(e) => {
            eprintln!("probe of {target} failed: {e}");
            1
        }
    }
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
