//! ikit: the command line for developers and CI. Today it has one command, `ikit dev`, the whole
//! system in one process (see [`dev`]); `run`, `export`, `secrets`, `login`, `migrate`, `rotate`,
//! `verify`, `health` and `cache` follow as their own subcommands of [`Command`].
//!
//! The binary is thin: it parses [`Cli`], reads the process environment once and calls [`run`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod assign;
#[cfg(feature = "dev")]
pub mod dev;
pub mod devstate;
mod error;
pub mod keyops;
pub mod render;
pub mod secretspec;

pub use error::CliError;

#[derive(Debug, Parser)]
#[command(name = "ikit", version, about = "Run services on secrets and keys kept in Infisical")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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

/// Runs a parsed command until it is done (for `dev`: until `stop` completes).
#[cfg_attr(not(feature = "dev"), allow(unused_variables))]
pub async fn run(
    cli: Cli,
    env: &BTreeMap<String, String>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    match cli.command {
        #[cfg(feature = "dev")]
        Command::Dev(args) => dev::run(args, env, stop).await,
    }
}
