//! `ikit login --method …`: logs a machine identity in, caches the sealed token under `~/.ikit/`
//! for the next commands, and prints it (`--plain`: the token and a newline, nothing else).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ikit_client::Client;

use crate::cli::SecretArg;
use crate::{CliError, Context, session};

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

/// The official CLI's method names this command accepts.
const METHODS: [&str; 7] =
    ["universal-auth", "kubernetes", "oidc-auth", "jwt-auth", "aws-iam", "azure", "gcp-id-token"];

/// The environment map with the login flags folded in as the variables they stand for, so the
/// method's credentials are read (and checked) by the one settings reader when the context is
/// resolved (called by `ikit::run` before it resolves the context for `login`).
pub fn login_vars(
    env: &BTreeMap<String, String>,
    args: &LoginArgs,
) -> Result<BTreeMap<String, String>, CliError> {
    if !METHODS.contains(&args.method.as_str()) {
        return Err(CliError::Usage(format!(
            "--method {:?} is not supported: use one of {}",
            args.method,
            METHODS.join(", ")
        )));
    }
    let mut vars = env.clone();
    // A login by method never uses a ready token.
    vars.remove("INFISICAL_TOKEN");
    vars.remove("INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN");
    vars.insert("IKIT_INFISICAL_AUTH_METHOD".into(), args.method.clone());
    let mut set = |name: &str, value: Option<&str>| {
        if let Some(v) = value {
            vars.insert(name.to_owned(), v.to_owned());
        }
    };
    set("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", args.client_id.as_deref());
    set(
        "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
        args.client_secret.as_ref().map(|s| s.0.expose()),
    );
    set("INFISICAL_MACHINE_IDENTITY_ID", args.machine_identity_id.as_deref());
    set(
        "INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH",
        args.service_account_token_path.as_deref().and_then(|p| p.to_str()),
    );
    set("INFISICAL_JWT", args.jwt.as_ref().map(|s| s.0.expose()));
    set("INFISICAL_AUTH_ORGANIZATION_SLUG", args.organization_slug.as_deref());
    Ok(vars)
}

pub async fn run(ctx: &Context, args: LoginArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(ctx.client_config()?).map_err(|e| CliError::Usage(e.to_string()))?;
    let token = client.login().await.map_err(|e| session::login_error(ctx, e))?;
    session::store_token(ctx, &token)?;
    let mut out = std::io::stdout().lock();
    let written = if args.plain {
        writeln!(out, "{}", token.access_token.expose())
    } else {
        if !ctx.silent {
            eprintln!(">>>> Successfully authenticated with {}!", args.method);
        }
        writeln!(out, "Access Token:\n{}", token.access_token.expose())
    };
    written.and_then(|()| out.flush()).map_err(|e| CliError::io(Path::new("stdout"), e))?;
    if !args.plain && !ctx.silent {
        eprintln!(
            "ikit: the token is cached (sealed) under ~/.ikit for the next commands; \
             or export it as INFISICAL_TOKEN"
        );
    }
    Ok(ExitCode::SUCCESS)
}
