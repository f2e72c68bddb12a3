//! Where keys live: a small async storage trait over folders of secrets, and a file-backed
//! implementation for local use. In production the store is Infisical (through ikit-client);
//! everything else in this crate is written against [`KeyStore`] only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use ikit_common::SecretValue;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// One secret as read from a folder: its value and the store's version counter.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    pub value: SecretValue,
    pub version: u64,
}

/// A folder's secrets by key.
pub type Folder = BTreeMap<String, StoredSecret>;

/// Reads and writes the secrets of one folder. Each call is one storage write as far as crash
/// safety is concerned: the rotation code orders its calls so that stopping between any two of
/// them loses no key.
pub trait KeyStore: Send + Sync {
    /// Every secret directly in `folder` (not recursive). A missing folder reads as empty.
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, Result<Folder>>;

    /// Creates or updates the given secrets in `folder`.
    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Deletes the given keys from `folder`; keys that do not exist are ignored.
    fn delete<'a>(&'a self, folder: &'a str, keys: Vec<String>) -> BoxFuture<'a, Result<()>>;
}

impl<S: KeyStore + ?Sized> KeyStore for std::sync::Arc<S> {
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, Result<Folder>> {
        (**self).read_folder(folder)
    }

    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, Result<()>> {
        (**self).upsert(folder, entries)
    }

    fn delete<'a>(&'a self, folder: &'a str, keys: Vec<String>) -> BoxFuture<'a, Result<()>> {
        (**self).delete(folder, keys)
    }
}

/// A store kept in JSON files under a directory, one file per folder, written atomically
/// (temporary file, fsync, rename) with mode 0600. Meant for local use by one process: share
/// one instance (behind an `Arc`) between the managers of that process.
pub struct FileStore {
    root: PathBuf,
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("root", &self.root).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    value: String,
    version: u64,
}

impl Drop for FileEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), write: tokio::sync::Mutex::new(()) }
    }

    fn file_for(&self, folder: &str) -> Result<PathBuf> {
        let folder = ikit_common::secret::normalize_folder(folder)
            .map_err(|e| Error::Store(e.to_string()))?;
        let mut path = self.root.clone();
        for segment in folder.split('/').filter(|s| !s.is_empty()) {
            path.push(segment);
        }
        path.push("secrets.json");
        Ok(path)
    }

    fn read_file(path: &Path) -> Result<BTreeMap<String, FileEntry>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Store(format!("{} is not valid: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::Store(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn write_file(path: &Path, entries: &BTreeMap<String, FileEntry>) -> Result<()> {
        let io = |e: std::io::Error| Error::Store(format!("cannot write {}: {e}", path.display()));
        let dir = path.parent().ok_or_else(|| Error::Store("folder has no parent".into()))?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let body = Zeroizing::new(
            serde_json::to_vec_pretty(entries).map_err(|e| Error::Store(e.to_string()))?,
        );
        ikit_common::files::write_private(path, &body).map_err(io)
    }

    async fn modify(
        &self,
        folder: &str,
        change: impl FnOnce(&mut BTreeMap<String, FileEntry>) + Send + 'static,
    ) -> Result<()> {
        let path = self.file_for(folder)?;
        let _guard = self.write.lock().await;
        tokio::task::spawn_blocking(move || {
            let mut entries = Self::read_file(&path)?;
            change(&mut entries);
            Self::write_file(&path, &entries)
        })
        .await
        .map_err(|e| Error::Store(format!("file store task failed: {e}")))?
    }
}

impl KeyStore for FileStore {
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, Result<Folder>> {
        Box::pin(async move {
            let path = self.file_for(folder)?;
            let entries = tokio::task::spawn_blocking(move || Self::read_file(&path))
                .await
                .map_err(|e| Error::Store(format!("file store task failed: {e}")))??;
            Ok(entries
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        StoredSecret {
                            value: SecretValue::new(e.value.clone()),
                            version: e.version,
                        },
                    )
                })
                .collect())
        })
    }

    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.modify(folder, move |map| {
                for (key, value) in entries {
                    let version = map.get(&key).map_or(1, |e| e.version + 1);
                    map.insert(key, FileEntry { value: value.expose().to_owned(), version });
                }
            })
            .await
        })
    }

    fn delete<'a>(&'a self, folder: &'a str, keys: Vec<String>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.modify(folder, move |map| {
                for key in keys {
                    map.remove(&key);
                }
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trips_and_counts_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        assert!(store.read_folder("/auth/jwt").await.unwrap().is_empty());
        store
            .upsert("/auth/jwt", vec![("a".into(), "1".into()), ("b".into(), "2".into())])
            .await
            .unwrap();
        store.upsert("/auth/jwt", vec![("a".into(), "3".into())]).await.unwrap();
        store.upsert("/auth/aes", vec![("a".into(), "other".into())]).await.unwrap();
        let folder = store.read_folder("/auth/jwt").await.unwrap();
        assert_eq!(folder["a"].value.expose(), "3");
        assert_eq!(folder["a"].version, 2);
        assert_eq!(folder["b"].version, 1);
        store.delete("/auth/jwt", vec!["a".into(), "missing".into()]).await.unwrap();
        let folder = store.read_folder("/auth/jwt").await.unwrap();
        assert_eq!(folder.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(store.read_folder("/auth/aes").await.unwrap()["a"].value.expose(), "other");
        assert!(store.read_folder("/../x").await.is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("auth/jwt/secrets.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A crash left a world-readable temporary file under the name this process would pick (in a
    /// container the pid repeats across restarts): the keys must still land in a 0600 file.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_leftover_temporary_file_never_makes_the_keys_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let folder = dir.path().join("auth/jwt");
        std::fs::create_dir_all(&folder).unwrap();
        let leftover = folder.join(format!("secrets.json.tmp{}", std::process::id()));
        std::fs::write(&leftover, b"torn").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        store.upsert("/auth/jwt", vec![("k".into(), "v".into())]).await.unwrap();
        let mode = std::fs::metadata(folder.join("secrets.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.read_folder("/auth/jwt").await.unwrap()["k"].value.expose(), "v");
    }
}
