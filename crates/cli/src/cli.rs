//! The command line grammar: [`Cli`] with the options every command shares ([`GlobalArgs`], the
//! official `infisical` CLI's names) and one [`Command`] variant per subcommand. Each command's
//! arguments live next to its code in `commands/<name>.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand};
use ikit_common::SecretValue;

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "ikit",
    version,
    about = "Run services on secrets and keys kept in Infisical",
    long_about = "Run services on secrets and keys kept in Infisical. Accepts the official \
                  infisical CLI's flags and environment variables (INFISICAL_TOKEN, \
                  INFISICAL_DOMAIN, INFISICAL_UNIVERSAL_AUTH_CLIENT_ID, .infisical.json, ...)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `ikit dev`, which runs services rather than one command.
    pub fn is_dev(&self) -> bool {
        #[cfg(feature = "dev")]
        if matches!(self.command, Command::Dev(_)) {
            return true;
        }
        false
    }
}

/// Options every command accepts, before or after the subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Infisical's URL (`/api` is appended when missing); else INFISICAL_DOMAIN,
    /// INFISICAL_API_URL, `domain` of .infisical.json, https://app.infisical.com/api.
    #[arg(long, global = true, value_name = "URL")]
    pub domain: Option<String>,
    /// A service token (`st.…`) or a machine-identity access token; else
    /// INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN, INFISICAL_TOKEN.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<SecretArg>,
    /// The project; else INFISICAL_PROJECT_ID, `workspaceId` of .infisical.json.
    #[arg(long = "projectId", visible_alias = "project-id", global = true, value_name = "ID")]
    pub project_id: Option<String>,
    /// The environment slug; else the git branch mapping and `defaultEnvironment` of
    /// .infisical.json, else `dev`.
    #[arg(long, short = 'e', global = true, value_name = "SLUG")]
    pub env: Option<String>,
    /// Where to look for .infisical.json instead of walking up from the current directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub project_config_dir: Option<PathBuf>,
    /// No notices or warnings on stderr (errors still print).
    #[arg(long, global = true)]
    pub silent: bool,
    /// Log level (trace, debug, info, warn, error); else RUST_LOG, LOG_LEVEL, `error`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// A credential given on the command line; printed as `[REDACTED]`.
#[derive(Clone)]
pub struct SecretArg(pub SecretValue);

impl FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(SecretValue::new(s)))
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with a machine identity and print or cache the access token.
    ///
    /// Example: export INFISICAL_TOKEN=$(ikit login --method universal-auth --client-id ID
    /// --client-secret SECRET --silent --plain)
    Login(commands::login::LoginArgs),
    /// Write .infisical.json for this directory (project and default environment).
    ///
    /// Example: ikit init --project-id 9b6f… --env dev
    Init(commands::init::InitArgs),
    /// Run a command with the secrets in its environment.
    ///
    /// Example: ikit run --env prod --path /app -- ./server --port 8080
    Run(commands::run::RunArgs),
    /// Print or write the secrets as dotenv, dotenv-export, docker, json, yaml or csv.
    ///
    /// Example: ikit export --format dotenv -o .env
    Export(commands::export::ExportArgs),
    /// Move secrets from .env files, the environment, JSON or YAML into Infisical: plan, apply
    /// (backup first, resumable), status, backup, rollback, check-prerequisites.
    ///
    /// Example: ikit migrate plan -m migrate.toml .env
    Migrate(ikit_migrate::cli::MigrateArgs),
    /// Run the whole stack in one process: the Infisical emulator with a demo project, the
    /// webhook and health services, a SQLite audit log; nothing to install.
    #[cfg(feature = "dev")]
    Dev(DevArgs),
}

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the Infisical emulator listens.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub emulator_addr: SocketAddr,
    /// Where the webhook service listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub webhook_addr: SocketAddr,
    /// Where the health service (status page, health, JWKS, metrics, admin API) listens.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub health_addr: SocketAddr,
    /// Written (mode 0600) with the URLs, the admin token and the credentials.
    #[arg(long, default_value = ".ikit/dev.json")]
    pub state_file: PathBuf,
    /// Keep the emulator's state, the audit log and the tokens here across restarts.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}
