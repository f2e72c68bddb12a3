//! One module per subcommand, each with its clap `Args` and
//! `pub async fn run(ctx: &Context, args) -> Result<ExitCode, CliError>`. Adding a command is a
//! variant in [`crate::cli::Command`], a module here and an arm in [`dispatch`].

use std::process::ExitCode;

use crate::cli::Command;
use crate::{CliError, Context};

pub mod export;
pub mod init;
pub mod login;
pub mod migrate;
pub mod run;

/// Runs `command` with the resolved context.
pub async fn dispatch(ctx: &Context, command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Login(args) => login::run(ctx, args).await,
        Command::Init(args) => init::run(ctx, args).await,
        Command::Run(args) => run::run(ctx, args).await,
        Command::Export(args) => export::run(ctx, args).await,
        Command::Migrate(args) => migrate::run(ctx, args).await,
        #[cfg(feature = "dev")]
        Command::Dev(_) => Err(CliError::Dev("`dev` is run by `ikit::run`, not dispatched".into())),
    }
}
