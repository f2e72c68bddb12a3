//! The crate's one error type.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The dev stack could not start or stop; the message says which part and why.
    #[error("{0}")]
    Dev(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl CliError {
    #[cfg_attr(not(feature = "dev"), allow(dead_code))]
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }
}
