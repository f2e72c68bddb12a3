//! The one error type of ikit-migrate. Messages name files, lines and keys, never a value.

/// Everything that can go wrong while reading sources, mapping keys and planning a migration.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A `.env` statement that python-dotenv would not accept either.
    #[error("{file}:{line}: {reason}")]
    DotenvSyntax { file: String, line: usize, reason: &'static str },
    /// A key the dotenv dialect cannot name (whitespace, `=`, `#`, a leading quote).
    #[error("key {key:?} cannot be written to a .env file")]
    DotenvKey { key: String },
    /// A value python-dotenv cannot read back exactly (see `dotenv::quote`).
    #[error(
        "the value of {key:?} ends with a backslash and needs quoting; python-dotenv cannot read it back"
    )]
    DotenvUnrepresentable { key: String },
}
