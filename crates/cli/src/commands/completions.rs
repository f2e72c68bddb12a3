//! `ikit completions bash|zsh|fish`: the shell completion script on stdout (clap_complete).

use std::process::ExitCode;

use clap::CommandFactory as _;

use crate::{Cli, CliError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit completions bash > /etc/bash_completion.d/ikit\n  \
                        ikit completions zsh > \"${fpath[1]}/_ikit\"\n  \
                        ikit completions fish > ~/.config/fish/completions/ikit.fish")]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), "ikit", &mut out);
    out
}

pub fn run(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script(args.shell))
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::io(std::path::Path::new("stdout"), e))?;
    Ok(ExitCode::SUCCESS)
}
