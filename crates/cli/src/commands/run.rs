//! `ikit run -- cmd args`: the child runs with the environment plus the secrets.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{CliError, Context};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit run --env prod --path /app -- ./server --port 8080\n  \
                        ikit run --watch --command 'npm run dev'")]
pub struct RunArgs {
    /// Folder to read; repeatable, a later path wins for a key in both.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Include the secrets of sub-folders.
    #[arg(long)]
    pub recursive: bool,
    /// Include imported secrets.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub include_imports: bool,
    /// Expand secret references (`${KEY}`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub expand: bool,
    /// Only secrets with these tag slugs (comma-separated).
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Restart the child when its secrets change.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between revalidations with --watch (minimum 5) when no event stream is set.
    #[arg(long, default_value_t = 10)]
    pub watch_interval: u64,
    /// Run this through `$SHELL -c` (else `sh -c`) instead of the arguments after `--`.
    #[arg(long, short = 'c')]
    pub command: Option<String>,
    /// How old the offline snapshot may be when Infisical is unreachable (e.g. 24h).
    #[arg(long, default_value = "7d", value_parser = ikit_common::config::parse_duration)]
    pub max_stale: std::time::Duration,
    /// A .env file to use when Infisical is unreachable and no snapshot serves.
    #[arg(long, value_name = "FILE")]
    pub fallback_env: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub async fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode, CliError> {
    let _ = (ctx, args);
    Err(CliError::Failed("run: not built yet".into()))
}
