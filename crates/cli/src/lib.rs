//! ikit: the command line for developers and CI, compatible with the official `infisical` CLI's
//! flags, variables and `.infisical.json`. [`cli`] is the grammar, [`context`] resolves where
//! Infisical is, how to log in and which project, environment and folder (a pure function of
//! flags, environment map and directories), [`session`] keeps the warm-start state under
//! `~/.ikit/`, and each subcommand lives in `commands/<name>.rs` as
//! `pub async fn run(ctx: &Context, args) -> Result<ExitCode, CliError>`. `ikit dev` (feature
//! `dev`) runs the whole system in one process (see [`dev`]).
//!
//! The binary is thin: it parses [`Cli`], reads the process environment, the current directory
//! and `HOME` once and calls [`run`].

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

pub mod cli;
pub mod commands;
pub mod context;
#[cfg(feature = "dev")]
pub mod dev;
mod error;
pub mod fetch;
pub mod format;
pub mod session;
// the operations commands' pure cores and the health service's client
pub mod assign;
pub mod devstate;
pub mod health_api;
pub mod keyops;
mod reauth;
pub mod render;
pub mod secretspec;

pub use cli::{Cli, Command, DevArgs, GlobalArgs};
pub use context::Context;
pub use error::CliError;

/// Runs a parsed command to its end and returns the process exit code (for `dev`: runs until
/// `stop` completes; `run` passes its child's code through).
#[cfg_attr(not(feature = "dev"), allow(unused_variables))]
pub async fn run(
    cli: Cli,
    env: &BTreeMap<String, String>,
    cwd: &Path,
    home: Option<&Path>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<ExitCode, CliError> {
    let Cli { global, command } = cli;
    // `IKIT_DEV_STATE`: the variables a `make dev` state file supplies, filling unset ones only
    let process_env = env;
    let env = &devstate::apply(env.clone()).map_err(CliError::Usage)?;
    let mut ctx = match command {
        #[cfg(feature = "dev")]
        Command::Dev(args) => return dev::run(args, env, stop).await.map(|()| ExitCode::SUCCESS),
        // needs no configuration: works before anything is set up
        Command::Completions(args) => return commands::completions::run(args),
        Command::Login(ref args) => {
            let vars = commands::login::login_vars(env, args)?;
            Context::load(&global, &vars, cwd, home)?
        }
        _ => Context::load(&global, env, cwd, home)?,
    };
    if matches!(command, Command::Run(_)) {
        // the child starts from the real environment, not the state file's credentials
        ctx.env = process_env.clone();
    }
    ctx.print_notices();
    let outcome = commands::dispatch(&ctx, command).await;
    // The token, key and snapshot files were written while the command ran; none is left
    // half-done when ikit exits.
    ctx.finish_writes();
    outcome
}
