//! `ikit init`: writes `.infisical.json` in the current directory with the project and default
//! environment, so later commands run there need no `--projectId` / `--env`.

use std::process::ExitCode;

use crate::context::{PROJECT_FILE, ProjectConfig};
use crate::{CliError, Context};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  ikit init --project-id 9b6f8a70-… --env staging")]
pub struct InitArgs {
    /// Replace an existing .infisical.json.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(ctx: &Context, args: InitArgs) -> Result<ExitCode, CliError> {
    let project_id = ctx.require_project()?.to_owned();
    let path = ctx.cwd.join(PROJECT_FILE);
    if path.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} exists: pass --force to replace it",
            path.display()
        )));
    }
    let config = ProjectConfig {
        workspace_id: Some(project_id),
        default_environment: Some(ctx.environment.clone()),
        ..ProjectConfig::default()
    };
    let mut text = serde_json::to_vec_pretty(&config).expect("strings serialize");
    text.push(b'\n');
    // Not secret, but written like every file of ours: atomically; readable as the official
    // CLI's own file is.
    ikit_common::files::write_private(&path, &text).map_err(|e| CliError::io(&path, e))?;
    if !ctx.silent {
        eprintln!("ikit: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
