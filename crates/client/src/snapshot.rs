//! The offline snapshot: a sealed last-good copy of each folder listing on disk, written
//! atomically (`ikit_common::files`: temp file, fsync, rename, directory fsync) with mode 0600 in
//! a 0700 directory,
//! and read back only when Infisical cannot be reached.
//!
//! The stored entry (`saved_at_ms`, ETag, listing) is encoded by the pure [`encode_entry`] /
//! [`decode_entry`], shared with the Redis L2 copy; sealing binds it to its project, environment,
//! folder and query flags, so a snapshot copied to another name is rejected.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ikit_common::files::{ensure_private_dir, write_private};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api::ApiVersion;
use crate::error::ClientError;
use crate::seal::{self, SealKey};
use crate::wire::{self, FolderSecrets};

/// A listing with when it was fetched and its ETag. No `Debug`: holds secret values.
pub(crate) struct StoredEntry {
    pub(crate) saved_at_ms: i64,
    pub(crate) etag: Option<String>,
    pub(crate) folder: FolderSecrets,
}

impl std::fmt::Debug for StoredEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEntry")
            .field("saved_at_ms", &self.saved_at_ms)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

/// `saved_at_ms (8, big-endian) || etag length (2) || etag || listing JSON`.
pub(crate) fn encode_entry(
    saved_at_ms: i64,
    etag: Option<&str>,
    folder: &FolderSecrets,
) -> Zeroizing<Vec<u8>> {
    let etag = etag.unwrap_or("").as_bytes();
    let etag = &etag[..etag.len().min(u16::MAX as usize)];
    let list = wire::encode_list(folder);
    let mut out = Zeroizing::new(Vec::with_capacity(10 + etag.len() + list.len()));
    out.extend_from_slice(&saved_at_ms.to_be_bytes());
    out.extend_from_slice(&(etag.len() as u16).to_be_bytes());
    out.extend_from_slice(etag);
    out.extend_from_slice(&list);
    out
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<StoredEntry, String> {
    if bytes.len() < 10 {
        return Err("entry header truncated".into());
    }
    let saved_at_ms = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let etag_len = u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
    let rest = &bytes[10..];
    if rest.len() < etag_len {
        return Err("entry etag truncated".into());
    }
    let etag = std::str::from_utf8(&rest[..etag_len]).map_err(|_| "entry etag is not utf-8")?;
    let folder = wire::decode_list(&rest[etag_len..]).map_err(|e| e.to_string())?;
    Ok(StoredEntry { saved_at_ms, etag: (!etag.is_empty()).then(|| etag.to_owned()), folder })
}

/// How far ahead of our clock a stored timestamp may be and still count as "just now" (another
/// replica's clock writing L2, a host clock stepped back).
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How old an entry saved at `saved_at_ms` is at `now_ms`, without overflow. A timestamp up to
/// [`MAX_CLOCK_SKEW`] ahead is "now"; one further ahead, or too far back to subtract, cannot be
/// trusted and reads as `Duration::MAX`: never fresh, never within `max_stale`.
pub(crate) fn stored_age(now_ms: i64, saved_at_ms: i64) -> Duration {
    let skew_ms = i64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(i64::MAX);
    match now_ms.checked_sub(saved_at_ms) {
        Some(ms) if ms >= 0 => Duration::from_millis(ms.unsigned_abs()),
        Some(ms) if ms >= -skew_ms => Duration::ZERO,
        _ => Duration::MAX,
    }
}

/// Snapshots of every folder a client reads, one file each, in one directory.
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    key: SealKey,
    /// The directory was made (or found) and tightened; not checked again until a write finds
    /// it gone.
    dir_ready: AtomicBool,
    /// Snapshot files read (whether or not they could be trusted).
    reads: AtomicU64,
}

/// The file beside the snapshots naming the server's API generation (not a secret; not a
/// `.snap` name, so never taken for a listing).
const GENERATION_FILE: &str = "api-generation";

fn aad(cache_key: &str) -> Vec<u8> {
    format!("ikit-snapshot:{cache_key}").into_bytes()
}

impl SnapshotStore {
    pub(crate) fn new(dir: PathBuf, key: SealKey) -> Self {
        Self { dir, key, dir_ready: AtomicBool::new(false), reads: AtomicU64::new(0) }
    }

    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The API generation an earlier process saved; `None` when there is none or it is
    /// unreadable (the client then probes, as on a first start).
    pub(crate) fn read_generation(&self) -> Option<ApiVersion> {
        match std::fs::read_to_string(self.dir.join(GENERATION_FILE)).ok()?.trim() {
            "v3" => Some(ApiVersion::V3),
            "v4" => Some(ApiVersion::V4),
            _ => None,
        }
    }

    pub(crate) fn write_generation(&self, version: ApiVersion) -> std::io::Result<()> {
        self.ensure_dir()?;
        let name = match version {
            ApiVersion::V3 => "v3",
            ApiVersion::V4 => "v4",
        };
        write_private(&self.dir.join(GENERATION_FILE), name.as_bytes())
    }

    /// The file for a cache key: a hash, so names reveal nothing about folders.
    pub(crate) fn path(&self, cache_key: &str) -> PathBuf {
        let digest = Sha256::digest(cache_key.as_bytes());
        self.dir.join(format!("{}.snap", hex::encode(&digest[..16])))
    }

    /// Seals and writes atomically with mode 0600 (`ikit_common::files::write_private`).
    /// The directory is made private on the first write, and again if a write finds it gone.
    pub(crate) fn write(
        &self,
        cache_key: &str,
        entry: &[u8],
        rng: &mut impl RngCore,
    ) -> std::io::Result<()> {
        let sealed = seal::seal(&self.key, &aad(cache_key), entry, rng);
        let target = self.path(cache_key);
        self.ensure_dir()?;
        match write_private(&target, &sealed) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.dir_ready.store(false, Ordering::Release);
                self.ensure_dir()?;
                write_private(&target, &sealed)
            }
            other => other,
        }
    }

    fn ensure_dir(&self) -> std::io::Result<()> {
        if !self.dir_ready.load(Ordering::Acquire) {
            ensure_private_dir(&self.dir)?;
            self.dir_ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The snapshot for a cache key: `Ok(None)` when there is none, an error naming the file
    /// when it exists but cannot be trusted.
    pub(crate) fn read(&self, cache_key: &str) -> Result<Option<StoredEntry>, ClientError> {
        let path = self.path(cache_key);
        self.reads.fetch_add(1, Ordering::Relaxed);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ClientError::Snapshot(format!("cannot read {}: {e}", path.display())));
            }
        };
        let plain = seal::open(&self.key, &aad(cache_key), &bytes).map_err(|e| {
            ClientError::Snapshot(format!(
                "{} is corrupt or foreign (wrong key, other project, environment or folder): {e}",
                path.display()
            ))
        })?;
        decode_entry(&plain).map(Some).map_err(|e| {
            ClientError::Snapshot(format!("{} does not hold a listing: {e}", path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn folder() -> FolderSecrets {
        wire::decode_list(br#"{"secrets":[{"secretKey":"K","secretValue":"snap-value-1"}]}"#)
            .unwrap()
    }

    #[test]
    fn stored_ages_never_overflow_nor_read_as_fresh_when_absurd() {
        let now = 1_780_000_000_000;
        assert_eq!(stored_age(now, now - 1500), Duration::from_millis(1500));
        assert_eq!(stored_age(now, now), Duration::ZERO);
        assert_eq!(stored_age(now, now + 5_000), Duration::ZERO, "a little clock skew is now");
        assert_eq!(stored_age(now, now + 3_600_000), Duration::MAX, "an hour ahead is untrusted");
        assert_eq!(stored_age(now, i64::MAX), Duration::MAX);
        assert_eq!(stored_age(now, i64::MIN), Duration::MAX);
        assert_eq!(stored_age(i64::MIN, i64::MAX), Duration::MAX);
        assert_eq!(stored_age(i64::MAX, i64::MIN), Duration::MAX);
        assert_eq!(stored_age(0, i64::MIN + 1), Duration::from_millis(i64::MAX.unsigned_abs()));
    }

    #[test]
    fn entries_round_trip() {
        let bytes = encode_entry(42, Some("W/\"e1\""), &folder());
        let back = decode_entry(&bytes).unwrap();
        assert_eq!((back.saved_at_ms, back.etag.as_deref()), (42, Some("W/\"e1\"")));
        assert_eq!(back.folder.secrets[0].value.expose(), "snap-value-1");
        let none = decode_entry(&encode_entry(1, None, &folder())).unwrap();
        assert_eq!(none.etag, None);
        assert!(decode_entry(&bytes[..5]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn written_private_and_rejected_when_moved_or_altered() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snaps");
        let store = SnapshotStore::new(dir.clone(), SealKey::new([9; 32]));
        let mut rng = StdRng::seed_from_u64(3);
        store.write("p:dev:f:/a", &encode_entry(7, None, &folder()), &mut rng).unwrap();
        let path = store.path("p:dev:f:/a");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(&dir)), (0o600, 0o700));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp file left behind");
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(12).any(|w| w == b"snap-value-1"));
        assert_eq!(store.read("p:dev:f:/a").unwrap().unwrap().saved_at_ms, 7);
        assert!(store.read("p:dev:f:/b").unwrap().is_none());

        // The same bytes under another folder's name are foreign.
        std::fs::copy(&path, store.path("p:prod:f:/a")).unwrap();
        let foreign = store.read("p:prod:f:/a").unwrap_err();
        assert!(matches!(&foreign, ClientError::Snapshot(m) if m.contains("foreign")), "{foreign}");
        // Another key.
        let other = SnapshotStore::new(dir.clone(), SealKey::new([8; 32]));
        assert!(other.read("p:dev:f:/a").is_err());
        // Truncated.
        std::fs::write(&path, &raw[..raw.len() / 2]).unwrap();
        assert!(store.read("p:dev:f:/a").is_err());

        // A directory that already exists with wider permissions is tightened.
        let existing = tmp.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SnapshotStore::new(existing.clone(), SealKey::new([9; 32]));
        store.write("p:dev:f:/a", &encode_entry(7, None, &folder()), &mut rng).unwrap();
        assert_eq!(mode(&existing), 0o700);

        // A directory removed after the first write is made again, private, by the next one.
        std::fs::remove_dir_all(&existing).unwrap();
        store.write("p:dev:f:/b", &encode_entry(8, None, &folder()), &mut rng).unwrap();
        assert_eq!(mode(&existing), 0o700);
        assert_eq!(store.read("p:dev:f:/b").unwrap().unwrap().saved_at_ms, 8);
    }
}
