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
    /// A `.env` key written without `=`.
    #[error("key {key:?} at {origin} has no value")]
    NoValue { key: String, origin: String },
    /// A JSON/YAML/TOML document that does not parse.
    #[error("{file}: {reason}")]
    Document { file: String, reason: String },
    /// A source value that is neither text, number nor boolean (arrays, null).
    #[error("key {key:?} at {origin} holds a list or null, which cannot be a secret")]
    Unsupported { key: String, origin: String },
    /// A YAML scalar that would not arrive as written (numbers, booleans), or no scalar at all.
    #[error("key {key:?} at {origin} holds {what}; quote it to migrate it as text")]
    UnsupportedYaml { key: String, origin: String, what: String },
    /// A key the mapping cannot place: no environment, or not a valid Infisical name.
    #[error("key {key:?} from {origin} cannot be mapped: {reason}")]
    Unmapped { key: String, origin: String, reason: String },
    /// Two source keys that map to the same target.
    #[error("keys {first:?} and {second:?} both map to {target}")]
    Collision { first: String, second: String, target: String },
    /// Reading a target folder from Infisical failed (the client's error carries the server's reason).
    #[error("cannot read {folder} from Infisical: {source}")]
    Read { folder: String, source: ikit_client::ClientError },
    /// A batch write failed; the chunks before it were written. `at_key` is the first key of the
    /// chunk the server refused; the client's error carries the server's reason.
    #[error(
        "writing {folder} failed at key {} after {written} of {total} keys: {source}",
        at_key.as_deref().unwrap_or("?")
    )]
    Write {
        folder: String,
        written: usize,
        total: usize,
        at_key: Option<String>,
        source: Box<ikit_client::ClientError>,
    },
    /// A target folder could not be listed or created.
    #[error("cannot create folder {folder}: {source}")]
    Folder { folder: String, source: ikit_client::ClientError },
    /// A backup that cannot be written, read, decrypted or parsed.
    #[error("backup: {reason}")]
    Backup { reason: String },
    /// A key whose value the server hides from this identity: it cannot be backed up or compared.
    #[error(
        "the value of {key:?} in {folder} is hidden from this identity; it cannot be backed up"
    )]
    Hidden { key: String, folder: String },
    /// A file of the migration (backup, journal, run file) could not be read or written.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A journal or run file that is not what this version writes.
    #[error("{path}: {reason}")]
    State { path: String, reason: String },
    /// Deleting keys during a rollback failed.
    #[error("deleting {keys:?} from {folder} failed: {source}")]
    Delete { folder: String, keys: Vec<String>, source: Box<ikit_client::ClientError> },
    /// The audit log refused the run's record.
    #[cfg(feature = "audit")]
    #[error("cannot record the run in the audit log: {0}")]
    Audit(#[from] ikit_common::audit::AuditError),
    /// An audit log database was given to a build without the audit log (feature `audit`):
    /// refused before anything is written rather than running without the record asked for.
    #[error(
        "--audit-db {url}: this ikit is built without the audit log (cargo feature `audit`); \
         drop --audit-db (the run file under the state directory stays the record) or build \
         with --features audit"
    )]
    AuditNotBuilt { url: String },
}
