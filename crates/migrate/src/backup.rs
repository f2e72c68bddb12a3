//! Backups: the exact state of the target folders (which folders and keys exist; each key's value,
//! comment, tags, metadata, multi-line flag and reminder), encrypted in the `age` format to an
//! X25519 recipient or a passphrase, so an operator can open one with the standard `age` tool.
//!
//! The plaintext is a JSON document (`format: 1`) held in zeroized buffers; nothing here derives
//! `Debug` or `Serialize` on a value. `take` reads through ikit-client; `seal` / `open` are pure.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::iter;
use std::path::Path;

use age::secrecy::SecretString;
use ikit_client::{
    Client, ClientError, FolderQuery, NewSecret, Secret, SecretMetadata, SecretType,
};
use ikit_common::secret::SecretValue;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::MigrateError;

/// The version of the plaintext layout.
pub const FORMAT: u64 = 1;

/// One secret as it was. No `Debug`: it holds a value.
#[derive(Clone)]
pub struct SavedSecret {
    pub key: String,
    pub value: SecretValue,
    pub comment: String,
    /// Tag ids (what a write sets) with their slugs (what a person reads).
    pub tags: Vec<(String, String)>,
    pub metadata: Vec<SecretMetadata>,
    pub skip_multiline_encoding: bool,
    pub reminder_note: Option<String>,
    pub reminder_repeat_days: Option<u64>,
}

impl SavedSecret {
    pub fn from_secret(secret: &Secret) -> Self {
        SavedSecret {
            key: secret.key.clone(),
            value: secret.value.clone(),
            comment: secret.comment.clone(),
            tags: secret.tags.iter().map(|tag| (tag.id.clone(), tag.slug.clone())).collect(),
            metadata: secret.metadata.clone(),
            skip_multiline_encoding: secret.skip_multiline_encoding,
            reminder_note: secret.reminder_note.clone(),
            reminder_repeat_days: secret.reminder_repeat_days,
        }
    }

    /// The write that puts this secret back as it was.
    pub fn to_new_secret(&self) -> NewSecret {
        let mut item = NewSecret::new(self.key.clone(), self.value.clone());
        item.comment = self.comment.clone();
        item.tag_ids = self.tags.iter().map(|(id, _)| id.clone()).collect();
        item.metadata = self.metadata.clone();
        item.skip_multiline_encoding = self.skip_multiline_encoding;
        item.reminder_note = self.reminder_note.clone();
        item.reminder_repeat_days = self.reminder_repeat_days;
        item
    }

    /// Same value, comment, tags, metadata, flag and reminder. The value is compared in constant
    /// time; the rest holds no secret.
    pub fn same_as(&self, other: &SavedSecret) -> bool {
        let tag_ids = |secret: &SavedSecret| -> BTreeSet<String> {
            secret.tags.iter().map(|(id, _)| id.clone()).collect()
        };
        self.key == other.key
            && self.value.verify(other.value.expose())
            && self.comment == other.comment
            && tag_ids(self) == tag_ids(other)
            && self.metadata == other.metadata
            && self.skip_multiline_encoding == other.skip_multiline_encoding
            && self.reminder_note == other.reminder_note
            && self.reminder_repeat_days == other.reminder_repeat_days
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "key": self.key,
            "value": self.value.expose(),
            "comment": self.comment,
            "tags": self.tags.iter().map(|(id, slug)| json!({"id": id, "slug": slug})).collect::<Vec<_>>(),
            "metadata": self.metadata,
            "skipMultilineEncoding": self.skip_multiline_encoding,
            "reminderNote": self.reminder_note,
            "reminderRepeatDays": self.reminder_repeat_days,
        })
    }
}

/// One target folder as it was: whether it existed, and every shared secret in it.
#[derive(Clone)]
pub struct FolderState {
    pub environment: String,
    pub folder: String,
    pub existed: bool,
    /// The deepest of `folder` and its ancestors that existed (the root always does): a rollback
    /// removes the folders below it that a migration created, once they are empty.
    pub existing_ancestor: String,
    pub secrets: Vec<SavedSecret>,
}

impl FolderState {
    /// `environment:/folder`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.environment, self.folder)
    }
}

/// The state of every target folder of a migration, before it wrote anything.
#[derive(Clone)]
pub struct Backup {
    pub project_id: String,
    /// Unix milliseconds, from the caller's clock.
    pub created_ms: i64,
    /// The run this backup was taken for, when it was taken by `apply`.
    pub run_id: Option<String>,
    pub folders: Vec<FolderState>,
}

/// What a backup is encrypted to.
pub enum Protection {
    /// An age X25519 recipient (`age1...`).
    Recipient(age::x25519::Recipient),
    /// A passphrase (age's scrypt recipient). `work_factor` is scrypt's log2(N); `None` lets age
    /// choose (about a second on this machine); tests pass a small one.
    Passphrase { passphrase: Zeroizing<String>, work_factor: Option<u8> },
}

/// What opens a backup.
pub enum Unlock {
    /// One or more X25519 identities (`AGE-SECRET-KEY-1...`), e.g. the lines of an identity file.
    Identities(Vec<age::x25519::Identity>),
    Passphrase(Zeroizing<String>),
}

impl Protection {
    /// An `age1...` recipient.
    pub fn recipient(text: &str) -> Result<Protection, MigrateError> {
        text.trim().parse::<age::x25519::Recipient>().map(Protection::Recipient).map_err(|reason| {
            MigrateError::Backup { reason: format!("bad age recipient: {reason}") }
        })
    }
}

impl Unlock {
    /// The `AGE-SECRET-KEY-1...` lines of an age identity file (comments and blank lines skipped).
    pub fn identity_file(text: &str) -> Result<Unlock, MigrateError> {
        let identities = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .enumerate()
            .map(|(n, line)| {
                line.parse::<age::x25519::Identity>().map_err(|_| MigrateError::Backup {
                    reason: format!("line {} of the identity file is not an age identity", n + 1),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if identities.is_empty() {
            return Err(MigrateError::Backup {
                reason: "the identity file holds no age identity".to_owned(),
            });
        }
        Ok(Unlock::Identities(identities))
    }
}

impl Backup {
    /// Encrypts the backup. The plaintext never leaves zeroized memory.
    pub fn seal(&self, protection: &Protection) -> Result<Vec<u8>, MigrateError> {
        let plaintext = Zeroizing::new(self.to_json().to_string());
        let encryptor = match protection {
            Protection::Recipient(recipient) => {
                age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))
                    .map_err(|error| MigrateError::Backup { reason: error.to_string() })?
            }
            Protection::Passphrase { passphrase, work_factor } => {
                let mut recipient =
                    age::scrypt::Recipient::new(SecretString::from(passphrase.as_str().to_owned()));
                if let Some(log_n) = work_factor {
                    recipient.set_work_factor(*log_n);
                }
                age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient))
                    .map_err(|error| MigrateError::Backup { reason: error.to_string() })?
            }
        };
        let mut out = Vec::with_capacity(plaintext.len() + 256);
        let io = |error: std::io::Error| MigrateError::Backup { reason: error.to_string() };
        let mut writer = encryptor.wrap_output(&mut out).map_err(io)?;
        writer.write_all(plaintext.as_bytes()).map_err(io)?;
        writer.finish().map_err(io)?;
        Ok(out)
    }

    /// Decrypts and parses a backup.
    pub fn open(ciphertext: &[u8], unlock: &Unlock) -> Result<Backup, MigrateError> {
        let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|error| {
            MigrateError::Backup { reason: format!("not an age file: {error}") }
        })?;
        let failed = |error: age::DecryptError| MigrateError::Backup {
            reason: format!("cannot decrypt: {error}"),
        };
        let mut reader = match unlock {
            Unlock::Identities(identities) => decryptor
                .decrypt(identities.iter().map(|identity| identity as &dyn age::Identity))
                .map_err(failed)?,
            Unlock::Passphrase(passphrase) => {
                let mut identity =
                    age::scrypt::Identity::new(SecretString::from(passphrase.as_str().to_owned()));
                // a backup is ours: accept a work factor up to age's own ceiling for slow devices
                identity.set_max_work_factor(30);
                decryptor.decrypt(iter::once(&identity as &dyn age::Identity)).map_err(failed)?
            }
        };
        let mut plaintext = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plaintext)
            .map_err(|error| MigrateError::Backup { reason: format!("cannot decrypt: {error}") })?;
        Backup::from_json(&plaintext)
    }

    /// Seals and writes the backup to `path` (0600, atomic; the directory is created private).
    pub fn write(&self, path: &Path, protection: &Protection) -> Result<(), MigrateError> {
        let sealed = self.seal(protection)?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            ikit_common::files::ensure_private_dir(dir)
                .map_err(|source| MigrateError::Io { path: dir.display().to_string(), source })?;
        }
        ikit_common::files::write_private(path, &sealed)
            .map_err(|source| MigrateError::Io { path: path.display().to_string(), source })
    }

    /// Reads and opens a backup file.
    pub fn read(path: &Path, unlock: &Unlock) -> Result<Backup, MigrateError> {
        let sealed = std::fs::read(path)
            .map_err(|source| MigrateError::Io { path: path.display().to_string(), source })?;
        Backup::open(&sealed, unlock)
    }

    pub fn folder(&self, environment: &str, folder: &str) -> Option<&FolderState> {
        self.folders.iter().find(|state| state.environment == environment && state.folder == folder)
    }

    fn to_json(&self) -> serde_json::Value {
        let folders: Vec<serde_json::Value> = self
            .folders
            .iter()
            .map(|state| {
                json!({
                    "environment": state.environment,
                    "folder": state.folder,
                    "existed": state.existed,
                    "existingAncestor": state.existing_ancestor,
                    "secrets": state.secrets.iter().map(SavedSecret::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "format": FORMAT,
            "projectId": self.project_id,
            "createdMs": self.created_ms,
            "runId": self.run_id,
            "folders": folders,
        })
    }

    fn from_json(bytes: &[u8]) -> Result<Backup, MigrateError> {
        let raw: RawBackup =
            serde_json::from_slice(bytes).map_err(|error| MigrateError::Backup {
                // serde_json names a position and a category, never the text
                reason: format!("the decrypted backup is not a backup: {error}"),
            })?;
        if raw.format != FORMAT {
            return Err(MigrateError::Backup {
                reason: format!("backup format {} is not {FORMAT}", raw.format),
            });
        }
        let folders = raw
            .folders
            .into_iter()
            .map(|folder| FolderState {
                environment: folder.environment,
                folder: folder.folder,
                existed: folder.existed,
                existing_ancestor: folder.existing_ancestor,
                secrets: folder
                    .secrets
                    .into_iter()
                    .map(|secret| SavedSecret {
                        key: secret.key,
                        value: secret.value,
                        comment: secret.comment,
                        tags: secret.tags.into_iter().map(|tag| (tag.id, tag.slug)).collect(),
                        metadata: secret.metadata,
                        skip_multiline_encoding: secret.skip_multiline_encoding,
                        reminder_note: secret.reminder_note,
                        reminder_repeat_days: secret.reminder_repeat_days,
                    })
                    .collect(),
            })
            .collect();
        Ok(Backup {
            project_id: raw.project_id,
            created_ms: raw.created_ms,
            run_id: raw.run_id,
            folders,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBackup {
    format: u64,
    project_id: String,
    created_ms: i64,
    run_id: Option<String>,
    folders: Vec<RawFolder>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFolder {
    environment: String,
    folder: String,
    existed: bool,
    existing_ancestor: String,
    secrets: Vec<RawSecret>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSecret {
    key: String,
    #[serde(deserialize_with = "secret_value")]
    value: SecretValue,
    comment: String,
    tags: Vec<RawTag>,
    metadata: Vec<SecretMetadata>,
    skip_multiline_encoding: bool,
    reminder_note: Option<String>,
    reminder_repeat_days: Option<u64>,
}

/// Straight into a zeroizing value, without an intermediate copy left behind.
fn secret_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    String::deserialize(d).map(SecretValue::new)
}

#[derive(Deserialize)]
struct RawTag {
    id: String,
    slug: String,
}

/// Reads one folder's shared secrets (raw: no imports, references as written) and whether the
/// folder exists. A missing folder is empty.
pub async fn read_folder(
    client: &Client,
    project_id: &str,
    environment: &str,
    folder: &str,
) -> Result<FolderState, MigrateError> {
    let label = format!("{environment}:{folder}");
    let existed = folder_exists(client, project_id, environment, folder)
        .await
        .map_err(|source| MigrateError::Read { folder: label.clone(), source })?;
    let mut existing_ancestor = folder.to_owned();
    if !existed {
        existing_ancestor = "/".to_owned();
        let mut probe = split_folder(folder).map(|(parent, _)| parent);
        while let Some(candidate) = probe {
            let found = folder_exists(client, project_id, environment, &candidate)
                .await
                .map_err(|source| MigrateError::Read { folder: label.clone(), source })?;
            if found {
                existing_ancestor = candidate;
                break;
            }
            probe = split_folder(&candidate).map(|(parent, _)| parent);
        }
    }
    let secrets = if existed {
        let query = FolderQuery::new(project_id, environment, folder)
            .include_imports(false)
            .expand_references(false);
        match client.list_secrets(&query).await {
            Ok(listing) => listing.secrets,
            Err(ClientError::NotFound { .. }) => Vec::new(),
            Err(source) => return Err(MigrateError::Read { folder: label, source }),
        }
    } else {
        Vec::new()
    };
    let mut saved = Vec::with_capacity(secrets.len());
    for secret in secrets.iter().filter(|secret| secret.secret_type == SecretType::Shared) {
        if secret.value_hidden {
            // a backup that cannot hold the value could not restore it: refuse, naming the key
            return Err(MigrateError::Hidden { key: secret.key.clone(), folder: label });
        }
        saved.push(SavedSecret::from_secret(secret));
    }
    Ok(FolderState {
        environment: environment.to_owned(),
        folder: folder.to_owned(),
        existed,
        existing_ancestor,
        secrets: saved,
    })
}

/// Whether `folder` exists (the root always does): listed under its parent.
pub async fn folder_exists(
    client: &Client,
    project_id: &str,
    environment: &str,
    folder: &str,
) -> Result<bool, ClientError> {
    let Some((parent, name)) = split_folder(folder) else {
        return Ok(true);
    };
    match client.list_folders(project_id, environment, &parent, false).await {
        Ok(folders) => Ok(folders.iter().any(|known| known.name == name)),
        Err(ClientError::NotFound { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// `/a/b` -> (`/a`, `b`); the root has no parent.
pub(crate) fn split_folder(folder: &str) -> Option<(String, String)> {
    let trimmed = folder.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/".to_owned() } else { parent.to_owned() }, name.to_owned()))
}

/// Reads every `(environment, folder)` into a backup.
pub async fn take(
    client: &Client,
    project_id: &str,
    folders: &BTreeSet<(String, String)>,
    created_ms: i64,
    run_id: Option<String>,
) -> Result<Backup, MigrateError> {
    let mut states = Vec::with_capacity(folders.len());
    for (environment, folder) in folders {
        states.push(read_folder(client, project_id, environment, folder).await?);
    }
    Ok(Backup { project_id: project_id.to_owned(), created_ms, run_id, folders: states })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            project_id: "p".to_owned(),
            created_ms: 1_767_225_600_000,
            run_id: Some("run-1".to_owned()),
            folders: vec![FolderState {
                environment: "dev".to_owned(),
                folder: "/auth/jwt".to_owned(),
                existed: true,
                existing_ancestor: "/auth/jwt".to_owned(),
                secrets: vec![SavedSecret {
                    key: "K".to_owned(),
                    value: SecretValue::new("multi\nline \"value\" é"),
                    comment: "why".to_owned(),
                    tags: vec![("t1".to_owned(), "backend".to_owned())],
                    metadata: vec![SecretMetadata::new("owner", "team-a")],
                    skip_multiline_encoding: true,
                    reminder_note: Some("rotate".to_owned()),
                    reminder_repeat_days: Some(30),
                }],
            }],
        }
    }

    #[test]
    fn a_sealed_backup_opens_with_its_identity_only() {
        let identity = age::x25519::Identity::generate();
        let sealed = sample().seal(&Protection::Recipient(identity.to_public())).expect("seals");
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        assert!(!String::from_utf8_lossy(&sealed).contains("multi\nline"));
        let opened = Backup::open(&sealed, &Unlock::Identities(vec![identity])).expect("opens");
        let (original, back) = (&sample().folders[0], &opened.folders[0]);
        assert!(original.secrets[0].same_as(&back.secrets[0]));
        assert_eq!(back.secrets[0].tags, [("t1".to_owned(), "backend".to_owned())]);
        assert_eq!((opened.run_id.as_deref(), back.existed), (Some("run-1"), true));
        let stranger = age::x25519::Identity::generate();
        assert!(Backup::open(&sealed, &Unlock::Identities(vec![stranger])).is_err());
    }

    #[test]
    fn a_passphrase_backup_opens_with_the_passphrase_only() {
        let protection = Protection::Passphrase {
            passphrase: Zeroizing::new("correct horse".to_owned()),
            work_factor: Some(2),
        };
        let sealed = sample().seal(&protection).expect("seals");
        let right = Unlock::Passphrase(Zeroizing::new("correct horse".to_owned()));
        assert_eq!(Backup::open(&sealed, &right).expect("opens").folders[0].secrets.len(), 1);
        let wrong = Unlock::Passphrase(Zeroizing::new("wrong".to_owned()));
        assert!(Backup::open(&sealed, &wrong).is_err());
    }

    #[test]
    fn identity_files_and_recipients_are_parsed_or_refused_by_line() {
        let identity = age::x25519::Identity::generate();
        let file = format!("# created: today\n\n{}\n", identity.to_string().expose_secret_text());
        assert!(
            matches!(Unlock::identity_file(&file), Ok(Unlock::Identities(ids)) if ids.len() == 1)
        );
        let error = Unlock::identity_file("# c\nnot-a-key\n").err().expect("refused").to_string();
        assert_eq!(error, "backup: line 1 of the identity file is not an age identity");
        assert!(Protection::recipient(&identity.to_public().to_string()).is_ok());
        assert!(Protection::recipient("age1nope").is_err());
    }

    #[test]
    fn folders_split_into_parent_and_name() {
        assert_eq!(split_folder("/"), None);
        assert_eq!(split_folder("/a"), Some(("/".to_owned(), "a".to_owned())));
        assert_eq!(split_folder("/a/b"), Some(("/a".to_owned(), "b".to_owned())));
    }

    trait ExposeText {
        fn expose_secret_text(&self) -> String;
    }
    impl ExposeText for SecretString {
        fn expose_secret_text(&self) -> String {
            use age::secrecy::ExposeSecret as _;
            self.expose_secret().to_owned()
        }
    }
}
