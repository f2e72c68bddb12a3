//! `ikit migrate`: moving `.env` files, the environment, JSON and YAML into Infisical. The
//! arguments and the runner live in ikit-migrate (feature `cli`); this module hands them the
//! resolved context: the client, the project, the env map, the directory and the clock.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use ikit_migrate::cli::{Invocation, MigrateArgs};

use crate::{CliError, Context};

pub async fn run(ctx: &Context, args: MigrateArgs) -> Result<ExitCode, CliError> {
    let project_id = ctx.require_project()?.to_owned();
    let client = ctx.client().await?;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    // progress bars only where someone watches; plain lines in CI logs
    let tty = !ctx.silent && std::io::stderr().is_terminal();
    let code = ikit_migrate::cli::run(
        &args,
        Invocation {
            client: &client,
            project_id: &project_id,
            env: &ctx.env,
            cwd: &ctx.cwd,
            clock: &*ctx.clock,
            actor: format!("ikit migrate ({})", ctx.settings.infisical.auth.name()),
            stdout: &mut stdout,
            stderr: &mut stderr,
            tty,
        },
    )
    .await
    .map_err(|error| CliError::Failed(error.to_string()))?;
    Ok(ExitCode::from(code))
}
