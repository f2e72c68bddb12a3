//! `ikit export`: the secrets as dotenv, dotenv-export, json, yaml or csv, sorted by key.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use zeroize::Zeroizing;

use crate::fetch::{self, SourceArgs};
use crate::{CliError, Context, format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `KEY="…"` in python-dotenv's dialect.
    Dotenv,
    /// `export KEY='…'` for `source` / `eval` in a POSIX shell.
    DotenvExport,
    /// `KEY=value` verbatim for `docker --env-file` (values it cannot hold are refused).
    Docker,
    Json,
    Yaml,
    Csv,
}

impl Format {
    /// The file name used when `-o` names a directory (the official CLI's names).
    fn default_file_name(self) -> &'static str {
        match self {
            Self::Dotenv | Self::DotenvExport | Self::Docker => ".env",
            Self::Json => "secrets.json",
            Self::Yaml => "secrets.yaml",
            Self::Csv => "secrets.csv",
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit export --format dotenv -o .env\n  \
                        ikit export --env prod --format json > secrets.json")]
pub struct ExportArgs {
    /// The output format.
    #[arg(long, short = 'f', value_enum, default_value = "dotenv")]
    pub format: Format,
    /// The folder to export.
    #[arg(long)]
    pub path: Option<String>,
    /// Write here (0600, atomically) instead of stdout.
    #[arg(long = "output-file", short = 'o', value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Render this template instead of a format: `{{ .KEY }}` becomes the value of KEY.
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(ctx: &Context, args: ExportArgs) -> Result<ExitCode, CliError> {
    let template = match &args.template {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?),
        None => None,
    };
    let opts = args.source.fetch_options(args.path.iter().cloned().collect());
    let ctx = &*ctx.with_token_project().await?;
    let fetched = fetch::fetch(ctx, &opts).await?;
    fetch::announce(&fetched.origin);
    let secrets = &fetched.secrets;
    let text = Zeroizing::new(match &template {
        Some(t) => format::template(t, secrets)?,
        None => match args.format {
            Format::Dotenv => {
                let keys = format::interpolated_keys(secrets);
                if !keys.is_empty() {
                    ctx.warn(&format!(
                        "{} hold `${{`, which python-dotenv expands unless read with \
                         interpolate=False (use --format dotenv-export for a shell)",
                        keys.join(", ")
                    ));
                }
                format::dotenv(secrets)?
            }
            Format::DotenvExport => format::dotenv_export(secrets)?,
            Format::Docker => format::docker(secrets)?,
            Format::Json => format::json(secrets),
            Format::Yaml => format::yaml(secrets),
            Format::Csv => format::csv(secrets),
        },
    });
    match &args.output_file {
        Some(path) => {
            let dir_like = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
            let path =
                if dir_like { path.join(args.format.default_file_name()) } else { path.clone() };
            ikit_common::files::write_private(&path, text.as_bytes())
                .map_err(|e| CliError::io(&path, e))?;
            if !ctx.silent {
                eprintln!("ikit: exported {} secrets to {}", secrets.len(), path.display());
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| CliError::io(Path::new("stdout"), e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
