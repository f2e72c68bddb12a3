//! Secret addresses and secret values.
//!
//! A `SecretRef` names one secret: project, environment slug, folder path and key, validated the
//! way the Infisical server validates them (`infisical-api.md` 2.5). A `SecretValue` holds the
//! plain text of a secret: it is zeroized on drop and never printed.

use std::fmt;
use std::hash::{BuildHasher as _, Hash};
use std::sync::OnceLock;

use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

/// The address of one secret in Infisical.
///
/// It also carries, computed once at construction (it is immutable), what a cache looks it up
/// by: [`SecretRef::folder_hash`] and [`SecretRef::key_hash`], so a cached read hashes nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    // First: `==` compares them before any string.
    folder_hash: u64,
    key_hash: u64,
    project: String,
    environment: String,
    folder: String,
    key: String,
}

/// Why a secret address was refused; each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    #[error("project id is empty")]
    EmptyProject,
    #[error("environment slug {0:?} is invalid: use 1 to 64 lowercase letters, digits or hyphens")]
    InvalidEnvironment(String),
    #[error("path {0:?} must start with '/'")]
    RelativePath(String),
    #[error(
        "folder name {segment:?} in path {path:?} is invalid: use only letters, digits, '_' and '-'"
    )]
    InvalidFolder { path: String, segment: String },
    #[error("secret key is empty")]
    EmptyKey,
    #[error("secret key {0:?} cannot contain ':' or '/'")]
    InvalidKey(String),
    #[error("path {0:?} names a folder, not a secret: it must end in a key")]
    MissingKey(String),
}

impl SecretRef {
    /// Builds an address from its parts. The folder is normalised (`""` and `"/"` are the root,
    /// a trailing slash is dropped) and the key is trimmed, as the server does.
    pub fn new(
        project: impl Into<String>,
        environment: impl Into<String>,
        folder: &str,
        key: &str,
    ) -> Result<Self, SecretRefError> {
        let project = project.into();
        if project.trim().is_empty() {
            return Err(SecretRefError::EmptyProject);
        }
        let environment = environment.into();
        validate_environment(&environment)?;
        let folder = normalize_folder(folder)?;
        let key = validate_key(key)?;
        Ok(Self {
            folder_hash: folder_hash(&project, &environment, &folder),
            key_hash: address_hash(key.as_str()),
            project,
            environment,
            folder,
            key,
        })
    }

    /// Parses a `/auth/jwt/current_private_key` style path: the last segment is the key, the rest
    /// is the folder (`/KEY` is a key in the root folder).
    pub fn parse(
        project: impl Into<String>,
        environment: impl Into<String>,
        path: &str,
    ) -> Result<Self, SecretRefError> {
        if !path.starts_with('/') {
            return Err(SecretRefError::RelativePath(path.to_owned()));
        }
        if path.ends_with('/') {
            return Err(SecretRefError::MissingKey(path.to_owned()));
        }
        let (folder, key) = path.rsplit_once('/').unwrap_or(("", path));
        if folder.ends_with('/') {
            // `/a//K`: an empty folder name the server would never accept.
            return Err(SecretRefError::InvalidFolder {
                path: folder.to_owned(),
                segment: String::new(),
            });
        }
        Self::new(project, environment, folder, key)
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The folder path, always starting with `/` and never ending with one (except the root).
    pub fn folder(&self) -> &str {
        &self.folder
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// [`folder_hash`] of the project, environment and folder, computed at construction.
    #[inline]
    pub fn folder_hash(&self) -> u64 {
        self.folder_hash
    }

    /// [`address_hash`] of the key, computed at construction.
    #[inline]
    pub fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// The folder and key as one path, e.g. `/auth/jwt/current_private_key`.
    pub fn path(&self) -> String {
        if self.folder == "/" {
            format!("/{}", self.key)
        } else {
            format!("{}/{}", self.folder, self.key)
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address only: the hashes are derived from it.
        f.debug_struct("SecretRef")
            .field("project", &self.project)
            .field("environment", &self.environment)
            .field("folder", &self.folder)
            .field("key", &self.key)
            .finish()
    }
}

/// A hash of `value` (foldhash, seeded at random once per process), the same everywhere in the
/// process: what caches key secret addresses by, so that a [`SecretRef`] can carry its hashes.
/// Not stable across processes; never store or send it.
pub fn address_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    SEED.get_or_init(foldhash::fast::RandomState::default).hash_one(value)
}

/// The [`address_hash`] of a folder of one project and environment, as
/// [`SecretRef::folder_hash`] carries it.
pub fn folder_hash(project: &str, environment: &str, folder: &str) -> u64 {
    address_hash(&(project, environment, folder))
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.environment, self.project, self.path())
    }
}

/// Checks an environment slug: lowercase letters, digits and hyphens, 1 to 64 characters.
pub fn validate_environment(slug: &str) -> Result<(), SecretRefError> {
    let ok = (1..=64).contains(&slug.len())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(SecretRefError::InvalidEnvironment(slug.to_owned())) }
}

/// Normalises a folder path and checks every segment against `[A-Za-z0-9_-]`.
pub fn normalize_folder(path: &str) -> Result<String, SecretRefError> {
    if path.is_empty() || path == "/" {
        return Ok("/".to_owned());
    }
    if !path.starts_with('/') {
        return Err(SecretRefError::RelativePath(path.to_owned()));
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for segment in trimmed[1..].split('/') {
        let ok = !segment.is_empty()
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(SecretRefError::InvalidFolder {
                path: path.to_owned(),
                segment: segment.to_owned(),
            });
        }
    }
    Ok(trimmed.to_owned())
}

/// Trims a secret key and checks it the way the server does on create.
pub fn validate_key(key: &str) -> Result<String, SecretRefError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(SecretRefError::EmptyKey);
    }
    if key.contains(':') || key.contains('/') {
        return Err(SecretRefError::InvalidKey(key.to_owned()));
    }
    Ok(key.to_owned())
}

/// The plain text of a secret. Zeroized on drop; `Debug` and `Display` print `[REDACTED]`; there
/// is no `Serialize`: the only way to the text is the explicit [`SecretValue::expose`].
///
/// There is no `PartialEq`: `==` on strings stops at the first differing byte, which lets a
/// caller who can time the answer guess a token byte by byte. Compare with [`SecretValue::verify`]
/// or `subtle::ConstantTimeEq`, whose time depends on the lengths only:
///
/// ```compile_fail
/// use ikit_common::SecretValue;
/// let presented = SecretValue::new("from the request");
/// let _ = presented == SecretValue::new("the admin token"); // no `==` on values
/// ```
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The plain text. Call it only where the value leaves the process on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` (a presented token, a header value) equals this value, compared in
    /// constant time. The lengths are not hidden; the content is.
    pub fn verify(&self, candidate: impl AsRef<[u8]>) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_ref()).into()
    }
}

impl ConstantTimeEq for SecretValue {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.as_bytes().ct_eq(other.0.as_bytes())
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_into_folder_and_key() {
        let cases = [
            ("/auth/jwt/current_private_key", "/auth/jwt", "current_private_key"),
            ("/KEY", "/", "KEY"),
            ("/a-b/c_d/K.1", "/a-b/c_d", "K.1"),
            ("/x/ spaced ", "/x", "spaced"),
        ];
        for (path, folder, key) in cases {
            let r = SecretRef::parse("p1", "dev", path).unwrap();
            assert_eq!((r.folder(), r.key()), (folder, key), "{path}");
        }
        assert_eq!(SecretRef::parse("p1", "dev", "/auth/jwt/k").unwrap().path(), "/auth/jwt/k");
        assert_eq!(SecretRef::parse("p1", "dev", "/k").unwrap().path(), "/k");
    }

    #[test]
    fn refuses_bad_parts_and_names_them() {
        use SecretRefError::*;
        let cases: [(&str, &str, &str, SecretRefError); 8] = [
            ("", "dev", "/K", EmptyProject),
            ("p", "Dev", "/K", InvalidEnvironment("Dev".into())),
            ("p", "", "/K", InvalidEnvironment("".into())),
            ("p", "dev", "K", RelativePath("K".into())),
            ("p", "dev", "/auth/", MissingKey("/auth/".into())),
            (
                "p",
                "dev",
                "/au th/K",
                InvalidFolder { path: "/au th".into(), segment: "au th".into() },
            ),
            ("p", "dev", "/a//K", InvalidFolder { path: "/a/".into(), segment: "".into() }),
            ("p", "dev", "/a/ ", EmptyKey),
        ];
        for (project, env, path, want) in cases {
            assert_eq!(SecretRef::parse(project, env, path), Err(want), "{project} {env} {path}");
        }
        assert_eq!(SecretRef::new("p", "dev", "/a", "x:y"), Err(InvalidKey("x:y".into())));
        assert_eq!(SecretRef::new("p", "dev", "/a", "x/y"), Err(InvalidKey("x/y".into())));
        let msg = SecretRef::parse("p", "dev", "/a.b/K").unwrap_err().to_string();
        assert!(msg.contains("\"a.b\""), "{msg}");
    }

    #[test]
    fn builds_from_parts_with_normalised_folder() {
        assert_eq!(SecretRef::new("p", "dev", "", "K").unwrap().folder(), "/");
        assert_eq!(SecretRef::new("p", "dev", "/api/", "K").unwrap().folder(), "/api");
        assert_eq!(
            SecretRef::new("p", "prod-eu", "/api", "K").unwrap().to_string(),
            "prod-eu:p/api/K"
        );
    }

    #[test]
    fn a_reference_carries_the_hashes_of_its_normalised_address() {
        let a = SecretRef::new("p", "dev", "/app/", " KEY ").unwrap();
        let b = SecretRef::parse("p", "dev", "/app/KEY").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.folder_hash(), folder_hash("p", "dev", "/app"));
        assert_eq!(a.key_hash(), address_hash("KEY"));
        assert_eq!((a.folder_hash(), a.key_hash()), (b.folder_hash(), b.key_hash()));
        let other = SecretRef::parse("p", "prod", "/app/KEY").unwrap();
        assert_ne!(a.folder_hash(), other.folder_hash(), "the environment is part of it");
        assert_eq!(a.key_hash(), other.key_hash());
        // The parts are hashed apart: moving a character from one to the next changes the hash.
        assert_ne!(folder_hash("p", "ab", "/c"), folder_hash("pa", "b", "/c"));
        assert_eq!(
            format!("{a:?}"),
            r#"SecretRef { project: "p", environment: "dev", folder: "/app", key: "KEY" }"#
        );
    }

    #[test]
    fn values_compare_only_through_the_constant_time_verify() {
        let token = SecretValue::new("admin-token-0123456789");
        assert!(token.verify("admin-token-0123456789"));
        assert!(token.verify(b"admin-token-0123456789"));
        assert!(!token.verify("admin-token-0123456780"));
        assert!(!token.verify("admin-token-012345678"));
        assert!(!token.verify(""));
        assert!(bool::from(token.ct_eq(&SecretValue::new("admin-token-0123456789"))));
        assert!(!bool::from(token.ct_eq(&SecretValue::new("other"))));
        assert!(SecretValue::new("").verify(""));
    }

    #[test]
    fn values_never_print() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            name: &'static str,
            value: SecretValue,
        }
        let holder = Holder { name: "db", value: SecretValue::new("hunter2-very-secret") };
        let debug = format!("{holder:?} {holder:#?} {}", holder.value);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
        assert_eq!(holder.value.expose(), "hunter2-very-secret");
    }
}
