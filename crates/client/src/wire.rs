//! Lenient decoding of Infisical responses (`infisical-api.md` 2.1, 2.3, 4.1) into the public
//! types, and the import merge. Pure: bytes in, values out.

use std::collections::HashSet;
use std::fmt;

use ikit_common::SecretValue;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::token::AccessToken;

/// The mask the server puts in `secretValue` when the caller may not read the value.
pub const HIDDEN_VALUE: &str = "<hidden-by-infisical>";

/// `shared` or `personal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecretType {
    #[default]
    Shared,
    Personal,
}

impl SecretType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Personal => "personal",
        }
    }
}

/// A tag attached to a secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Tag {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub slug: String,
    pub name: Option<String>,
    pub color: Option<String>,
}

/// One `secretMetadata` entry. `Debug` prints the key only and `==` compares the value in
/// constant time: an entry may be encrypted (`isEncrypted`) and hold something sensitive.
#[derive(Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecretMetadata {
    #[serde(deserialize_with = "null_default")]
    pub key: String,
    #[serde(deserialize_with = "null_default")]
    pub value: String,
    #[serde(deserialize_with = "null_default")]
    pub is_encrypted: bool,
}

impl SecretMetadata {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: value.into(), is_encrypted: false }
    }
}

impl PartialEq for SecretMetadata {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        let same_value: bool = self.value.as_bytes().ct_eq(other.value.as_bytes()).into();
        same_value & (self.key == other.key) & (self.is_encrypted == other.is_encrypted)
    }
}

impl Eq for SecretMetadata {}

impl fmt::Debug for SecretMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretMetadata")
            .field("key", &self.key)
            .field("is_encrypted", &self.is_encrypted)
            .finish_non_exhaustive()
    }
}

/// One secret as the server returned it, with everything a faithful backup needs. `Debug`
/// never prints the value, and there is no `==` (compare `value` with `SecretValue::verify`,
/// which takes constant time).
///
/// ```compile_fail
/// fn same(a: &ikit_client::Secret, b: &ikit_client::Secret) -> bool {
///     a == b // no `==` on a value
/// }
/// ```
#[derive(Clone)]
pub struct Secret {
    pub id: String,
    pub key: String,
    pub value: SecretValue,
    /// True when the server masked the value (`secretValueHidden`).
    pub value_hidden: bool,
    pub version: u64,
    pub secret_type: SecretType,
    pub environment: String,
    /// The folder the secret lives in (set on list and get; empty if the server omitted it).
    pub path: String,
    pub comment: String,
    pub skip_multiline_encoding: bool,
    pub tags: Vec<Tag>,
    /// `secretMetadata`: key/value pairs attached to the secret.
    pub metadata: Vec<SecretMetadata>,
    /// `secretReminderNote`.
    pub reminder_note: Option<String>,
    /// `secretReminderRepeatDays`.
    pub reminder_repeat_days: Option<u64>,
    /// `createdAt` / `updatedAt` as the server sent them (ISO 8601); absent from some answers.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// Tests compare whole listings; production code has no `==` on anything holding a value.
#[cfg(test)]
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be left out of the comparison.
        let Secret {
            id,
            key,
            value,
            value_hidden,
            version,
            secret_type,
            environment,
            path,
            comment,
            skip_multiline_encoding,
            tags,
            metadata,
            reminder_note,
            reminder_repeat_days,
            created_at,
            updated_at,
        } = self;
        (id, key, value.expose(), value_hidden, version, secret_type, environment)
            == (
                &other.id,
                &other.key,
                other.value.expose(),
                &other.value_hidden,
                &other.version,
                &other.secret_type,
                &other.environment,
            )
            && (path, comment, skip_multiline_encoding, tags)
                == (&other.path, &other.comment, &other.skip_multiline_encoding, &other.tags)
            && (metadata, reminder_note, reminder_repeat_days, created_at, updated_at)
                == (
                    &other.metadata,
                    &other.reminder_note,
                    &other.reminder_repeat_days,
                    &other.created_at,
                    &other.updated_at,
                )
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("key", &self.key)
            .field("value", &self.value)
            .field("value_hidden", &self.value_hidden)
            .field("version", &self.version)
            .field("type", &self.secret_type)
            .field("environment", &self.environment)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The secrets of one import of a folder.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub struct Import {
    pub path: String,
    pub environment: String,
    /// Absent on some server versions.
    pub folder_id: Option<String>,
    pub secrets: Vec<Secret>,
}

impl fmt::Debug for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Import")
            .field("path", &self.path)
            .field("environment", &self.environment)
            .field("folder_id", &self.folder_id)
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl fmt::Debug for FolderSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FolderSecrets")
            .field("secrets", &self.secrets)
            .field("imports", &self.imports)
            .finish()
    }
}

/// Which import wins when two imports hold the same key (the folder's own secrets always win).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportOrder {
    /// The Infisical CLI's rule: imports walked from last to first, so a later import wins.
    #[default]
    LaterWins,
    /// The go-sdk and rust-sdk rule: imports walked in order, so an earlier import wins.
    EarlierWins,
}

/// A folder listing: its own secrets and its imports, before merging.
#[derive(Clone, Default)]
#[cfg_attr(test, derive(PartialEq))]
pub struct FolderSecrets {
    pub secrets: Vec<Secret>,
    pub imports: Vec<Import>,
}

impl FolderSecrets {
    /// The folder's own secrets followed by the imported ones it does not shadow, each key once.
    pub fn merged(&self, order: ImportOrder) -> Vec<Secret> {
        let mut seen: HashSet<&str> = self.secrets.iter().map(|s| s.key.as_str()).collect();
        let mut out = self.secrets.clone();
        let imports: Box<dyn Iterator<Item = &Import>> = match order {
            ImportOrder::LaterWins => Box::new(self.imports.iter().rev()),
            ImportOrder::EarlierWins => Box::new(self.imports.iter()),
        };
        for import in imports {
            for secret in &import.secrets {
                if seen.insert(secret.key.as_str()) {
                    out.push(secret.clone());
                }
            }
        }
        out
    }

    /// The value a key resolves to after merging.
    pub fn find(&self, key: &str, order: ImportOrder) -> Option<&Secret> {
        if let Some(own) = self.secrets.iter().find(|s| s.key == key) {
            return Some(own);
        }
        let mut imports: Box<dyn Iterator<Item = &Import>> = match order {
            ImportOrder::LaterWins => Box::new(self.imports.iter().rev()),
            ImportOrder::EarlierWins => Box::new(self.imports.iter()),
        };
        imports.find_map(|i| i.secrets.iter().find(|s| s.key == key))
    }
}

/// A project with its environments.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "RawProject")]
pub struct Project {
    pub id: String,
    pub name: String,
    pub slug: Option<String>,
    pub environments: Vec<Environment>,
}

/// Projects carry both `id` and `_id` (and old ones only `_id`).
#[derive(Deserialize)]
struct RawProject {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "_id")]
    underscore_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    environments: Vec<Environment>,
}

impl From<RawProject> for Project {
    fn from(r: RawProject) -> Self {
        Self {
            id: r.id.or(r.underscore_id).unwrap_or_default(),
            name: r.name,
            slug: r.slug,
            environments: r.environments,
        }
    }
}

/// What `GET /api/v2/service-token` says about a service token: its project and scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceTokenInfo {
    #[serde(rename = "_id", deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// The project id (`workspace` on the wire).
    #[serde(rename = "workspace", deserialize_with = "null_default")]
    pub project_id: String,
    pub expires_at: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub scopes: Vec<TokenScope>,
}

/// One scope of a service token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TokenScope {
    #[serde(deserialize_with = "null_default")]
    pub environment: String,
    #[serde(deserialize_with = "null_default")]
    pub secret_path: String,
}

/// An environment of a project.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Environment {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub slug: String,
}

/// A folder.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Folder {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    pub parent_id: Option<String>,
    pub description: Option<String>,
    pub last_secret_modified: Option<String>,
    pub relative_path: Option<String>,
}

// ---- raw wire shapes ----------------------------------------------------------------------------

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A number that may arrive as a JSON number or a numeric string.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Float(f64),
        Text(String),
        Null(()),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Float(f) if f >= 0.0 && f.is_finite() => Ok(f as u64),
        N::Float(_) => Err(de::Error::custom("negative number")),
        N::Text(s) => s.trim().parse().map_err(de::Error::custom),
        N::Null(()) => Ok(0),
    }
}

// No Debug: holds a secret value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecret {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "_id")]
    underscore_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    environment: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    version: u64,
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    kind: String,
    secret_key: String,
    #[serde(default, deserialize_with = "null_default")]
    secret_value: String,
    #[serde(default, deserialize_with = "null_default")]
    secret_value_hidden: bool,
    #[serde(default, deserialize_with = "null_default")]
    secret_comment: String,
    #[serde(default, deserialize_with = "null_default")]
    secret_path: String,
    #[serde(default, deserialize_with = "null_default")]
    skip_multiline_encoding: bool,
    #[serde(default, deserialize_with = "null_default")]
    tags: Vec<Tag>,
    #[serde(default, deserialize_with = "null_default")]
    secret_metadata: Vec<SecretMetadata>,
    #[serde(default)]
    secret_reminder_note: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    secret_reminder_repeat_days: Option<u64>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

/// [`lenient_u64`] where null or absent means `None`.
fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => lenient_u64(v).map(Some).map_err(de::Error::custom),
    }
}

impl RawSecret {
    fn into_secret(self) -> Secret {
        let value_hidden = self.secret_value_hidden;
        Secret {
            id: self.id.or(self.underscore_id).unwrap_or_default(),
            key: self.secret_key,
            value: SecretValue::new(self.secret_value),
            value_hidden,
            version: self.version,
            secret_type: if self.kind == "personal" {
                SecretType::Personal
            } else {
                SecretType::Shared
            },
            environment: self.environment,
            path: self.secret_path,
            comment: self.secret_comment,
            skip_multiline_encoding: self.skip_multiline_encoding,
            tags: self.tags,
            metadata: self.secret_metadata,
            reminder_note: self.secret_reminder_note,
            reminder_repeat_days: self.secret_reminder_repeat_days,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawImport {
    #[serde(default, deserialize_with = "null_default")]
    secret_path: String,
    #[serde(default, deserialize_with = "null_default")]
    environment: String,
    #[serde(default)]
    folder_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    secrets: Vec<RawSecret>,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default, deserialize_with = "null_default")]
    secrets: Vec<RawSecret>,
    #[serde(default, deserialize_with = "null_default")]
    imports: Vec<RawImport>,
}

#[derive(Deserialize)]
struct RawWrite {
    #[serde(default)]
    secret: Option<RawSecret>,
    #[serde(default)]
    secrets: Option<Vec<RawSecret>>,
    #[serde(default)]
    approval: Option<serde_json::Value>,
}

/// A decode error that names where the body broke, never what it held.
fn decode_error(e: &serde_json::Error) -> ClientError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "io error",
        serde_json::error::Category::Syntax => "malformed json",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated json",
    };
    ClientError::Decode(format!("{what} at line {} column {}", e.line(), e.column()))
}

/// Decodes a `GET /secrets` body.
pub fn decode_list(body: &[u8]) -> Result<FolderSecrets, ClientError> {
    let raw: RawList = serde_json::from_slice(body).map_err(|e| decode_error(&e))?;
    Ok(FolderSecrets {
        secrets: raw.secrets.into_iter().map(RawSecret::into_secret).collect(),
        imports: raw
            .imports
            .into_iter()
            .map(|i| Import {
                path: i.secret_path,
                environment: i.environment,
                folder_id: i.folder_id,
                secrets: i.secrets.into_iter().map(RawSecret::into_secret).collect(),
            })
            .collect(),
    })
}

/// A folder listing reduced to what change detection needs ([`crate::Client::fetch_folder_digest`]):
/// the folder's own secrets (key, type, version, value) and the folders it imports, in the
/// server's order. Every other field, and the imported secrets themselves, are skipped while
/// decoding, without being allocated.
pub struct FolderDigest {
    pub secrets: Vec<DigestEntry>,
    pub imports: Vec<DigestImport>,
}

/// One secret of a [`FolderDigest`]. No `Debug` or `==`: holds a value.
pub struct DigestEntry {
    pub key: String,
    pub secret_type: SecretType,
    pub version: u64,
    pub value: SecretValue,
}

/// A folder a [`FolderDigest`]'s folder imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestImport {
    pub environment: String,
    pub path: String,
}

// No Debug: holds a secret value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDigestSecret {
    #[serde(default, deserialize_with = "lenient_u64")]
    version: u64,
    #[serde(default, rename = "type", deserialize_with = "secret_type_in_place")]
    kind: SecretType,
    secret_key: String,
    #[serde(default, deserialize_with = "null_default")]
    secret_value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDigestImport {
    #[serde(default, deserialize_with = "null_default")]
    secret_path: String,
    #[serde(default, deserialize_with = "null_default")]
    environment: String,
}

#[derive(Deserialize)]
struct RawDigestList {
    #[serde(default, deserialize_with = "null_default")]
    secrets: Vec<RawDigestSecret>,
    #[serde(default, deserialize_with = "null_default")]
    imports: Vec<RawDigestImport>,
}

/// `type` read from the text in the body, not through a `String` (`personal`, else shared).
fn secret_type_in_place<'de, D: Deserializer<'de>>(d: D) -> Result<SecretType, D::Error> {
    struct Kind;
    impl de::Visitor<'_> for Kind {
        type Value = SecretType;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a secret type or null")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretType, E> {
            Ok(if v == "personal" { SecretType::Personal } else { SecretType::Shared })
        }
        fn visit_unit<E: de::Error>(self) -> Result<SecretType, E> {
            Ok(SecretType::Shared)
        }
    }
    d.deserialize_any(Kind)
}

/// Decodes a `GET /secrets` body into a [`FolderDigest`]. It agrees with [`decode_list`] on
/// every field it keeps.
pub fn decode_digest(body: &[u8]) -> Result<FolderDigest, ClientError> {
    let raw: RawDigestList = serde_json::from_slice(body).map_err(|e| decode_error(&e))?;
    Ok(FolderDigest {
        secrets: raw
            .secrets
            .into_iter()
            .map(|s| DigestEntry {
                key: s.secret_key,
                secret_type: s.kind,
                version: s.version,
                value: SecretValue::new(s.secret_value),
            })
            .collect(),
        imports: raw
            .imports
            .into_iter()
            .map(|i| DigestImport { environment: i.environment, path: i.secret_path })
            .collect(),
    })
}

// No Debug: borrows a secret value.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct OutSecret<'a> {
    id: &'a str,
    secret_key: &'a str,
    secret_value: &'a str,
    secret_value_hidden: bool,
    version: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    environment: &'a str,
    secret_path: &'a str,
    secret_comment: &'a str,
    skip_multiline_encoding: bool,
    tags: Vec<OutTag<'a>>,
    secret_metadata: &'a [SecretMetadata],
    secret_reminder_note: Option<&'a str>,
    secret_reminder_repeat_days: Option<u64>,
    created_at: Option<&'a str>,
    updated_at: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct OutTag<'a> {
    id: &'a str,
    slug: &'a str,
    name: Option<&'a str>,
    color: Option<&'a str>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct OutImport<'a> {
    secret_path: &'a str,
    environment: &'a str,
    folder_id: Option<&'a str>,
    secrets: Vec<OutSecret<'a>>,
}

#[derive(serde::Serialize)]
struct OutList<'a> {
    secrets: Vec<OutSecret<'a>>,
    imports: Vec<OutImport<'a>>,
}

fn out_secret(s: &Secret) -> OutSecret<'_> {
    OutSecret {
        id: &s.id,
        secret_key: &s.key,
        secret_value: s.value.expose(),
        secret_value_hidden: s.value_hidden,
        version: s.version,
        kind: s.secret_type.as_str(),
        environment: &s.environment,
        secret_path: &s.path,
        secret_comment: &s.comment,
        skip_multiline_encoding: s.skip_multiline_encoding,
        tags: s
            .tags
            .iter()
            .map(|t| OutTag {
                id: &t.id,
                slug: &t.slug,
                name: t.name.as_deref(),
                color: t.color.as_deref(),
            })
            .collect(),
        secret_metadata: &s.metadata,
        secret_reminder_note: s.reminder_note.as_deref(),
        secret_reminder_repeat_days: s.reminder_repeat_days,
        created_at: s.created_at.as_deref(),
        updated_at: s.updated_at.as_deref(),
    }
}

/// A folder listing in the v4 list shape, so [`decode_list`] reads it back unchanged (used for
/// the sealed L2 and snapshot copies). The buffer is zeroized on drop.
pub(crate) fn encode_list(folder: &FolderSecrets) -> Zeroizing<Vec<u8>> {
    let out = OutList {
        secrets: folder.secrets.iter().map(out_secret).collect(),
        imports: folder
            .imports
            .iter()
            .map(|i| OutImport {
                secret_path: &i.path,
                environment: &i.environment,
                folder_id: i.folder_id.as_deref(),
                secrets: i.secrets.iter().map(out_secret).collect(),
            })
            .collect(),
    };
    Zeroizing::new(serde_json::to_vec(&out).expect("a listing serializes"))
}

fn approval_error(approval: &serde_json::Value) -> ClientError {
    ClientError::PendingApproval {
        approval_id: approval.get("id").and_then(|v| v.as_str()).map(str::to_owned),
    }
}

/// Decodes a `{secret}` / `{approval}` body.
pub fn decode_one(body: &[u8]) -> Result<Secret, ClientError> {
    let raw: RawWrite = serde_json::from_slice(body).map_err(|e| decode_error(&e))?;
    if let Some(approval) = &raw.approval {
        return Err(approval_error(approval));
    }
    raw.secret
        .map(RawSecret::into_secret)
        .ok_or_else(|| ClientError::Decode("response has neither secret nor approval".into()))
}

/// Decodes a `{secrets}` / `{approval}` body (batch writes).
pub fn decode_many(body: &[u8]) -> Result<Vec<Secret>, ClientError> {
    let raw: RawWrite = serde_json::from_slice(body).map_err(|e| decode_error(&e))?;
    if let Some(approval) = &raw.approval {
        return Err(approval_error(approval));
    }
    raw.secrets
        .map(|v| v.into_iter().map(RawSecret::into_secret).collect())
        .ok_or_else(|| ClientError::Decode("response has neither secrets nor approval".into()))
}

/// Decodes any JSON body into a type, with a safe error.
pub(crate) fn decode_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| decode_error(&e))
}

/// An error body, decoded leniently: anything unreadable becomes an empty body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    /// A string, or (422) an array of issues.
    pub(crate) message: serde_json::Value,
    pub(crate) error: Option<String>,
    /// Set by the 503 a starting server sends (`"unavailable"`).
    pub(crate) status: Option<String>,
}

impl ErrorBody {
    pub(crate) fn decode(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The message as one line: a string as is, an array of issues joined by `; `.
    pub(crate) fn message_text(&self) -> String {
        match &self.message {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => s.clone(),
                    other => {
                        let msg = other.get("message").and_then(|m| m.as_str()).unwrap_or("");
                        match other.get("path").and_then(|p| p.as_array()) {
                            Some(path) if !path.is_empty() => {
                                let path: Vec<String> = path
                                    .iter()
                                    .map(|p| {
                                        p.as_str().map_or_else(|| p.to_string(), str::to_owned)
                                    })
                                    .collect();
                                format!("{}: {msg}", path.join("."))
                            }
                            _ => msg.to_owned(),
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// A login or renew response.
pub(crate) struct LoginResponse {
    pub(crate) access_token: AccessToken,
    pub(crate) expires_in: u64,
    pub(crate) max_ttl: u64,
}

pub(crate) fn decode_login(body: &[u8]) -> Result<LoginResponse, ClientError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        access_token: String,
        #[serde(default, deserialize_with = "lenient_u64")]
        expires_in: u64,
        #[serde(default, rename = "accessTokenMaxTTL", deserialize_with = "lenient_u64")]
        max_ttl: u64,
    }
    let raw: Raw = decode_json(body)?;
    Ok(LoginResponse {
        access_token: AccessToken::new(raw.access_token),
        expires_in: raw.expires_in,
        max_ttl: raw.max_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_compares_every_field_and_never_prints_the_value() {
        let owner = SecretMetadata::new("owner", "team-a");
        assert_eq!(owner, SecretMetadata::new("owner", "team-a"));
        assert_ne!(owner, SecretMetadata::new("owner", "team-b"));
        assert_ne!(owner, SecretMetadata::new("team", "team-a"));
        assert_ne!(owner, SecretMetadata { is_encrypted: true, ..owner.clone() });
        assert!(!format!("{owner:?}").contains("team-a"));
    }

    #[test]
    fn encoded_listings_decode_to_the_same_folder() {
        let body = br#"{"secrets":[{"id":"1","secretKey":"A","secretValue":"va","version":3,"type":"shared","environment":"dev","secretPath":"/app","secretComment":"c","skipMultilineEncoding":true,"tags":[{"id":"t","slug":"s","name":"n","color":null}]},{"secretKey":"H","secretValue":"<hidden-by-infisical>","secretValueHidden":true,"type":"personal"}],"imports":[{"secretPath":"/shared","environment":"dev","secrets":[{"secretKey":"C","secretValue":"vc"}]}]}"#;
        let folder = decode_list(body).unwrap();
        let again = decode_list(&encode_list(&folder)).unwrap();
        assert_eq!(again.secrets, folder.secrets);
        assert_eq!(again.imports.len(), 1);
        assert_eq!(again.imports[0].path, "/shared");
        assert_eq!(again.imports[0].folder_id, None);
        assert_eq!(again.imports[0].secrets, folder.imports[0].secrets);
    }

    fn secret_json(key: &str, value: &str) -> String {
        format!(
            r#"{{"id":"i-{key}","_id":"i-{key}","workspace":"p","environment":"dev","version":3,"type":"shared","secretKey":"{key}","secretValue":"{value}","secretComment":"","secretPath":"/","tags":[],"secretValueHidden":false,"createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00Z"}}"#
        )
    }

    #[test]
    fn decodes_a_list_with_imports_and_extra_fields() {
        let body = format!(
            r#"{{"secrets":[{}],"imports":[{{"secretPath":"/shared","environment":"prod","secrets":[{}]}},{{"secretPath":"/b","environment":"prod","folderId":"f-1","secrets":[]}}],"somethingNew":{{"x":1}}}}"#,
            secret_json("A", "1"),
            secret_json("B", "2")
        );
        let list = decode_list(body.as_bytes()).unwrap();
        assert_eq!(list.secrets.len(), 1);
        let a = &list.secrets[0];
        assert_eq!((a.key.as_str(), a.value.expose(), a.version), ("A", "1", 3));
        assert_eq!(
            (a.id.as_str(), a.path.as_str(), a.secret_type),
            ("i-A", "/", SecretType::Shared)
        );
        assert_eq!(list.imports[0].folder_id, None, "missing folderId is fine");
        assert_eq!(list.imports[1].folder_id.as_deref(), Some("f-1"));
        assert_eq!(list.imports[0].secrets[0].value.expose(), "2");
    }

    #[test]
    fn tolerates_missing_optional_fields_nulls_and_hidden_values() {
        let body = br#"{"secrets":[
            {"_id":"x","secretKey":"K","secretValue":"<hidden-by-infisical>","secretValueHidden":true,
             "type":"personal","version":"7","tags":null,"secretComment":null,
             "secretReminderRecipients":["u"],"actor":{"actorType":"identity"},"skipMultilineEncoding":null}
        ]}"#;
        let list = decode_list(body).unwrap();
        let s = &list.secrets[0];
        assert!(s.value_hidden);
        assert_eq!(s.value.expose(), HIDDEN_VALUE);
        assert_eq!((s.id.as_str(), s.version, s.secret_type), ("x", 7, SecretType::Personal));
        assert!(s.tags.is_empty() && s.comment.is_empty() && !s.skip_multiline_encoding);
        assert!(list.imports.is_empty(), "an absent imports array is empty");
        // The 2024 server's answer for a folder that does not exist.
        assert_eq!(
            decode_list(br#"{"secrets":[],"imports":[]}"#).unwrap(),
            FolderSecrets::default()
        );
    }

    #[test]
    fn a_digest_keeps_what_the_full_decode_reads_for_each_kept_field() {
        let bodies = [
            format!(
                r#"{{"secrets":[{},{}],"imports":[{{"secretPath":"/shared","environment":"prod","secrets":[{}]}}],"new":1}}"#,
                secret_json("A", "1"),
                secret_json("B", r#"two \" \\ \u00e9"#),
                secret_json("C", "3")
            ),
            r#"{"secrets":[{"secretKey":"K","secretValue":null,"type":"personal","version":"7","tags":null},
                           {"secretKey":"L","type":null,"version":null}],"imports":null}"#
                .to_owned(),
            r#"{"secrets":[],"imports":[]}"#.to_owned(),
        ];
        for body in bodies {
            let full = decode_list(body.as_bytes()).unwrap();
            let digest = decode_digest(body.as_bytes()).unwrap();
            assert_eq!(digest.secrets.len(), full.secrets.len(), "{body}");
            for (d, f) in digest.secrets.iter().zip(&full.secrets) {
                assert_eq!((&d.key, d.secret_type, d.version), (&f.key, f.secret_type, f.version));
                assert!(d.value.verify(f.value.expose()), "value of {}", d.key);
            }
            let imports: Vec<(&str, &str)> =
                full.imports.iter().map(|i| (i.environment.as_str(), i.path.as_str())).collect();
            let digest_imports: Vec<(&str, &str)> =
                digest.imports.iter().map(|i| (i.environment.as_str(), i.path.as_str())).collect();
            assert_eq!(digest_imports, imports);
        }
        let digest = decode_digest(
            br#"{"secrets":[{"secretKey":"K","type":"personal"},{"secretKey":"S"}]}"#,
        )
        .unwrap();
        let types: Vec<SecretType> = digest.secrets.iter().map(|s| s.secret_type).collect();
        assert_eq!(types, [SecretType::Personal, SecretType::Shared]);
        let err = decode_digest(br#"{"secrets":[{"secretKey":"K","secretValue":"hunter2""#)
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)) && !err.to_string().contains("hunter2"));
    }

    #[test]
    fn decode_errors_never_echo_the_body() {
        let err = decode_list(
            br#"{"secrets":[{"secretKey":"K","secretValue":"hunter2","tags":"oops"}]}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Decode(_)), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("oops"), "{text}");
        let err = decode_list(b"{\"secrets\":[{\"secretKey\":\"K\",\"secretValue\":\"hunter2")
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn writes_answered_with_approval_are_pending() {
        let one = decode_one(br#"{"approval":{"id":"apr-1","status":"open"}}"#).unwrap_err();
        assert!(
            matches!(one, ClientError::PendingApproval { approval_id: Some(ref id) } if id == "apr-1"),
            "{one:?}"
        );
        let many = decode_many(br#"{"approval":{"status":"open"}}"#).unwrap_err();
        assert!(matches!(many, ClientError::PendingApproval { approval_id: None }));
        let ok =
            decode_one(format!(r#"{{"secret":{}}}"#, secret_json("K", "v")).as_bytes()).unwrap();
        assert_eq!(ok.value.expose(), "v");
        assert!(matches!(decode_one(b"{}"), Err(ClientError::Decode(_))));
    }

    #[test]
    fn error_message_is_a_string_or_an_array_of_issues() {
        let s = ErrorBody::decode(br#"{"reqId":"req-1","statusCode":404,"message":"gone","error":"NotFound","details":{}}"#);
        assert_eq!((s.message_text().as_str(), s.error.as_deref()), ("gone", Some("NotFound")));
        let a = ErrorBody::decode(
            br#"{"statusCode":422,"error":"ValidationFailure","message":[{"code":"invalid_enum_value","message":"Invalid enum value","path":["recursive"]},{"message":"Required","path":[]}]}"#,
        );
        assert_eq!(a.message_text(), "recursive: Invalid enum value; Required");
        assert_eq!(ErrorBody::decode(b"<html>").message_text(), "");
    }

    #[test]
    fn projects_and_folders_decode_with_both_id_spellings_and_nulls() {
        let p: Project = decode_json(
            br#"{"id":"p1","_id":"p1","name":"Demo","slug":"demo","description":null,"environments":[{"id":"e1","name":"Dev","slug":"dev"}]}"#,
        )
        .unwrap();
        assert_eq!((p.id.as_str(), p.environments[0].slug.as_str()), ("p1", "dev"));
        let old: Project = decode_json(br#"{"_id":"p2","name":null,"environments":null}"#).unwrap();
        assert_eq!((old.id.as_str(), old.name.as_str(), old.environments.len()), ("p2", "", 0));
        let f: Folder = decode_json(
            br#"{"id":"f1","name":"api","version":1,"parentId":null,"description":null,"lastSecretModified":null}"#,
        )
        .unwrap();
        assert_eq!((f.id.as_str(), f.name.as_str(), f.parent_id), ("f1", "api", None));
    }

    #[test]
    fn login_numbers_may_be_strings() {
        let r = decode_login(
            br#"{"accessToken":"t","expiresIn":"600","accessTokenMaxTTL":3600,"tokenType":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!((r.access_token.expose(), r.expires_in, r.max_ttl), ("t", 600, 3600));
    }

    fn folder(own: &[(&str, &str)], imports: &[&[(&str, &str)]]) -> FolderSecrets {
        let secret = |(k, v): &(&str, &str)| {
            decode_one(format!(r#"{{"secret":{}}}"#, secret_json(k, v)).as_bytes()).unwrap()
        };
        FolderSecrets {
            secrets: own.iter().map(secret).collect(),
            imports: imports
                .iter()
                .enumerate()
                .map(|(n, list)| Import {
                    path: format!("/i{n}"),
                    environment: "dev".into(),
                    folder_id: None,
                    secrets: list.iter().map(secret).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn import_merge_order_is_configurable() {
        let f =
            folder(&[("OWN", "local")], &[&[("X", "first"), ("OWN", "i0")], &[("X", "second")]]);
        let value = |order| f.find("X", order).map(|s| s.value.expose().to_owned());
        assert_eq!(value(ImportOrder::LaterWins).as_deref(), Some("second"));
        assert_eq!(value(ImportOrder::EarlierWins).as_deref(), Some("first"));
        assert_eq!(ImportOrder::default(), ImportOrder::LaterWins);
        for order in [ImportOrder::LaterWins, ImportOrder::EarlierWins] {
            assert_eq!(f.find("OWN", order).unwrap().value.expose(), "local");
            let merged = f.merged(order);
            let keys: Vec<_> = merged.iter().map(|s| s.key.as_str()).collect();
            assert_eq!(keys, ["OWN", "X"]);
            assert_eq!(merged[1].value.expose(), value(order).unwrap());
        }
        assert!(f.find("NOPE", ImportOrder::LaterWins).is_none());
    }

    #[test]
    fn secret_debug_redacts_the_value() {
        let f = folder(&[("K", "hunter2")], &[]);
        let debug = format!("{:?} {:#?}", f, f.merged(ImportOrder::LaterWins));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("\"K\""));
    }
}
