//! Reads one secret: `cargo run -p ikit-client --example get -- --env ENV --path /folder/KEY`.
//!
//! Reads `INFISICAL_API_URL`, `INFISICAL_UNIVERSAL_AUTH_CLIENT_ID` and `_SECRET` (or
//! `INFISICAL_TOKEN`) and `INFISICAL_PROJECT_ID`; with `IKIT_SNAPSHOT_DIR` and
//! `IKIT_SNAPSHOT_KEY` (base64, 32 bytes) it keeps an encrypted offline snapshot and, when the
//! server is unreachable, answers from it. Prints only the value on stdout and `source=...` on
//! stderr (with `age=Ns` when the value is not fresh); exits 1 with a one-line reason on failure.

use std::io::Write as _;
use std::process::ExitCode;

use ikit_client::{CacheConfig, CachedClient, Client, ClientConfig, SecretRef};
use ikit_common::Settings;

fn parse_args(args: &[String]) -> Result<(String, String), String> {
    let mut env = None;
    let mut path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--env" => env = it.next().cloned(),
            "--path" => path = it.next().cloned(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (env, path) {
        (Some(e), Some(p)) => Ok((e, p)),
        _ => Err("usage: get --env ENV --path /folder/KEY".into()),
    }
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (env, path) = parse_args(&args)?;
    let settings =
        Settings::load(None, &ikit_common::env_map_from_process()).map_err(|e| e.to_string())?;
    let project =
        settings.infisical.project_id.as_deref().ok_or("INFISICAL_PROJECT_ID is not set")?;
    let secret = SecretRef::parse(project, env, &path).map_err(|e| e.to_string())?;
    let config = ClientConfig::from_settings(&settings).map_err(|e| e.to_string())?;
    let client = Client::new(config).map_err(|e| e.to_string())?;
    let cache = CacheConfig::from_settings(&settings).map_err(|e| e.to_string())?;
    let served = CachedClient::new(client, cache)
        .map_err(|e| e.to_string())?
        .get(&secret)
        .await
        .map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(served.value.value.expose().as_bytes()).map_err(|e| e.to_string())?;
    stdout.flush().map_err(|e| e.to_string())?;
    if served.source == ikit_client::Source::Network {
        eprintln!("source={}", served.source.as_str());
    } else {
        eprintln!("source={} age={}s", served.source.as_str(), served.age.as_secs());
    }
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("error: {}", reason.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
