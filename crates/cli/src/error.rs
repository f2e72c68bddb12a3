//! The crate's one error type. Messages never hold a secret value or a credential.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The dev stack could not start or stop; the message says which part and why.
    #[error("{0}")]
    Dev(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// Bad flags, variables or .infisical.json: the user must change something (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The settings read from the environment are invalid (exit 2).
    #[error(transparent)]
    Config(#[from] ikit_common::ConfigErrors),
    /// A call to Infisical failed; `action` says what was being done.
    #[error("{action}: {source}")]
    Client { action: String, source: ikit_client::ClientError },
    /// The command for `ikit run` could not be started: exit 127 when it was not found, 126
    /// when it could not be executed, as a shell reports it.
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// A command failed for a reason its message states (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }

    /// A failed call to Infisical, with what was being done (`"cannot list secrets"`).
    pub fn client(action: impl Into<String>, source: ikit_client::ClientError) -> Self {
        Self::Client { action: action.into(), source }
    }

    /// 2 for a usage or configuration problem, 126/127 for a command that cannot start, 1 for
    /// everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) | Self::Config(_) => ExitCode::from(2),
            Self::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ExitCode::from(127)
            }
            Self::Spawn { .. } => ExitCode::from(126),
            _ => ExitCode::FAILURE,
        }
    }
}
