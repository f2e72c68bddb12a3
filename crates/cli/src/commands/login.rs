//! `ikit login --method …`: logs a machine identity in, caches the sealed token under `~/.ikit/`
//! for the next commands, and prints it (`--plain`: the token and a newline, nothing else).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::SecretArg;
use crate::{CliError, Context};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  export INFISICAL_TOKEN=$(ikit login --method universal-auth \\\n    \
                        --client-id \"$ID\" --client-secret \"$SECRET\" --silent --plain)"
)]
pub struct LoginArgs {
    /// universal-auth, kubernetes, oidc-auth, jwt-auth, aws-iam, azure or gcp-id-token.
    #[arg(long, default_value = "universal-auth")]
    pub method: String,
    /// Universal Auth client id; else INFISICAL_UNIVERSAL_AUTH_CLIENT_ID.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Universal Auth client secret; else INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET.
    #[arg(long)]
    pub client_secret: Option<SecretArg>,
    /// The identity of the other methods; else INFISICAL_MACHINE_IDENTITY_ID.
    #[arg(long)]
    pub machine_identity_id: Option<String>,
    /// kubernetes: the service account token file.
    #[arg(long)]
    pub service_account_token_path: Option<PathBuf>,
    /// oidc-auth and jwt-auth: the JWT; else INFISICAL_JWT.
    #[arg(long)]
    pub jwt: Option<SecretArg>,
    /// Log in to this sub-organization.
    #[arg(long)]
    pub organization_slug: Option<String>,
    /// Print only the access token and a newline.
    #[arg(long)]
    pub plain: bool,
}

pub async fn run(ctx: &Context, args: LoginArgs) -> Result<ExitCode, CliError> {
    let _ = (ctx, args);
    Err(CliError::Failed("login: not built yet".into()))
}
