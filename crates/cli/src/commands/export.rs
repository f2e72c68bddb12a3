//! `ikit export`: the secrets as dotenv, dotenv-export, json, yaml or csv, sorted by key.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{CliError, Context};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dotenv,
    DotenvExport,
    Json,
    Yaml,
    Csv,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit export --format dotenv -o .env\n  \
                        ikit export --env prod --format json > secrets.json")]
pub struct ExportArgs {
    #[arg(long, short = 'f', value_enum, default_value = "dotenv")]
    pub format: Format,
    /// The folder to export.
    #[arg(long)]
    pub path: Option<String>,
    /// Write here (0600, atomically) instead of stdout.
    #[arg(long = "output-file", short = 'o', value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Render this template instead: `{{KEY}}` is replaced by the value of KEY.
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub include_imports: bool,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub expand: bool,
    #[arg(long)]
    pub recursive: bool,
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
    /// How old the offline snapshot may be when Infisical is unreachable.
    #[arg(long, default_value = "7d", value_parser = ikit_common::config::parse_duration)]
    pub max_stale: std::time::Duration,
    /// A .env file to use when Infisical is unreachable and no snapshot serves.
    #[arg(long, value_name = "FILE")]
    pub fallback_env: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: ExportArgs) -> Result<ExitCode, CliError> {
    let _ = (ctx, args);
    Err(CliError::Failed("export: not built yet".into()))
}
