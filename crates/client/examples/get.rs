//! Reads one secret and prints its value: `cargo run -p ikit-client --example get -- /app/DB_URL`.
//!
//! Run `get --help` for the variables it reads.

use std::process::ExitCode;

use ikit_common::telemetry::{self, TelemetryConfig};

const USAGE: &str = "\
usage: get /folder/KEY

Prints the value of one secret on stdout, and on stderr where it came from
(source=network|cache|snapshot, with age=Ns when not fresh).

Reads INFISICAL_API_URL (default https://app.infisical.com), INFISICAL_PROJECT_ID,
INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and _SECRET (or INFISICAL_TOKEN), and the environment
from IKIT_INFISICAL_ENVIRONMENT (default dev). With IKIT_SNAPSHOT_DIR and
IKIT_SNAPSHOT_KEY (32 bytes, base64: openssl rand -base64 32) it keeps an encrypted offline
copy and answers from it when Infisical is unreachable. Logs go to stderr: RUST_LOG
(default warn) and IKIT_LOG_FORMAT (json or pretty).";

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [path] = args else { return Err(USAGE.into()) };
    let env = ikit_common::env_map_from_process();
    let settings = ikit_common::Settings::load(None, &env)?;
    let mut logs = TelemetryConfig::from_settings("ikit-get", &settings);
    logs.log_filter = env.get("RUST_LOG").cloned().unwrap_or_else(|| "warn".into());
    let _logs = telemetry::init(&logs)?;
    let secrets = ikit_client::from_settings(&settings)?;
    let served = secrets.secret(path).await?;
    println!("{}", served.value.value.expose());
    eprintln!("source={} age={}s", served.source.as_str(), served.age.as_secs());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match runtime.map_err(Into::into).and_then(|rt| rt.block_on(run(&args))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
