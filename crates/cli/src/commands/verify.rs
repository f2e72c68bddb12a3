//! `ikit verify rotation` (the stored key folders) and `ikit verify jwks` (what verifiers are
//! served): a table of checks, exit 1 with the failing ones when any fails.

use std::process::ExitCode;

use ikit_client::Client;

use crate::health_api::HealthApi;
use crate::{CliError, Context};
use crate::{keyops, reauth};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  ikit verify rotation\n  ikit verify jwks --url https://auth.example.com/.well-known/jwks.json"
)]
pub struct VerifyArgs {
    #[command(subcommand)]
    pub command: VerifyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum VerifyCommand {
    /// Check the key folders (/auth/jwt, /auth/aes): JWKS holds the current and the next key,
    /// every published kid matches its key, active_kid is in keys_map, public keys match.
    #[command(
        after_help = "Examples:\n  ikit verify rotation\n  ikit verify rotation --allow-no-next --json"
    )]
    Rotation {
        /// Accept a JWKS without a next key (between rotations) instead of failing.
        #[arg(long)]
        allow_no_next: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check the JWKS the health service serves: keys present, every kid its key's thumbprint.
    #[command(
        after_help = "Examples:\n  ikit verify jwks\n  ikit verify jwks --url https://auth.example.com/.well-known/jwks.json"
    )]
    Jwks {
        /// The JWKS URL (default: IKIT_HEALTH_URL + /.well-known/jwks.json).
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, args: VerifyArgs) -> Result<ExitCode, CliError> {
    let (checks, json) = match args.command {
        VerifyCommand::Rotation { allow_no_next, json } => {
            let project = ctx.require_project()?;
            let env = &ctx.environment;
            let (jwt, aes) = reauth::with_client(ctx, async |client: Client| {
                let read = async |folder: &str| {
                    keyops::read_key_folder(&client, project, env, folder).await.map_err(|e| {
                        CliError::client(format!("verify rotation: reading {folder}"), e)
                    })
                };
                Ok((read(keyops::JWT_FOLDER).await?, read(keyops::AES_FOLDER).await?))
            })
            .await?;
            (keyops::rotation_checks(&jwt, &aes, !allow_no_next), json)
        }
        VerifyCommand::Jwks { url, json } => {
            let served = match url {
                Some(url) => fetch_jwks(&url).await?,
                None => {
                    let api = HealthApi::from_env(&ctx.env)?.ok_or_else(|| {
                        CliError::Usage("verify jwks: pass --url or set IKIT_HEALTH_URL".into())
                    })?;
                    api.jwks().await?
                }
            };
            (keyops::served_jwks_checks(&served, None), json)
        }
    };
    if json {
        println!("{}", serde_json::json!({"ok": checks.iter().all(|c| c.ok), "checks": checks}));
    } else {
        print!("{}", keyops::report_lines(&checks));
    }
    let failures: Vec<String> =
        checks.iter().filter(|c| !c.ok).map(|c| format!("{} ({})", c.name, c.detail)).collect();
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("ikit: verify failed: {}", failures.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

async fn fetch_jwks(url: &str) -> Result<serde_json::Value, CliError> {
    let redacted = ikit_common::config::redact_url(url);
    let response = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|_| CliError::Failed(format!("verify jwks: cannot reach {redacted}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(CliError::Failed(format!("verify jwks: {redacted} answered {status}")));
    }
    response
        .json()
        .await
        .map_err(|_| CliError::Failed(format!("verify jwks: {redacted} did not answer JSON")))
}
