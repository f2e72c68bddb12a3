//! The offline snapshot: a sealed last-good copy of each folder listing on disk, written
//! atomically (`ikit_common::files`: temp file, fsync, rename, directory fsync) with mode 0600 in
//! a 0700 directory,
//! and read back only when Infisical cannot be reached.
//!
//! The stored entry (`saved_at_ms`, ETag, listing) is encoded by the pure [`encode_entry`] /
//! [`decode_entry`], shared with the Redis L2 copy; sealing binds it to its project, environment,
//! folder and query flags, so a snapshot copied to another name is rejected.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
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
#[inline]
pub(crate) fn stored_age(now_ms: i64, saved_at_ms: i64) -> Duration {
    let skew_ms = i64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(i64::MAX);
    match now_ms.checked_sub(saved_at_ms) {
        Some(ms) if ms >= 0 => Duration::from_millis(ms.unsigned_abs()),
        Some(ms) if ms >= -skew_ms => Duration::ZERO,
        _ => Duration::MAX,
    }
}

/// One job of [`DeferredWrites`]: the file it makes (for the report) and the work.
struct Job {
    path: PathBuf,
    work: Box<dyn FnOnce() -> std::io::Result<()> + Send>,
}

/// Private-file writes taken off a short-lived process's critical path: each job runs on one
/// background thread, in the order queued (so a file never lands before one it depends on,
/// such as the key that seals it), while the process goes on; [`DeferredWrites::finish`] waits
/// for them all. Every job still writes atomically with mode 0600, so a process killed midway
/// leaves the old file or the new one, never a torn or readable one. Cheap to clone: clones
/// share the queue.
#[derive(Clone, Default)]
pub struct DeferredWrites {
    inner: Arc<Mutex<Writer>>,
}

#[derive(Default)]
struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<Vec<(PathBuf, std::io::Error)>>>,
    /// [`DeferredWrites::finish`] ran: later jobs run in line.
    finished: bool,
}

impl std::fmt::Debug for DeferredWrites {
    // The queued jobs hold file contents: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredWrites").finish_non_exhaustive()
    }
}

impl DeferredWrites {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `work`, which makes `path`; the thread starts with the first job. After
    /// [`DeferredWrites::finish`] a job runs at once on the caller's thread.
    pub fn push(
        &self,
        path: impl Into<PathBuf>,
        work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) {
        let job = Job { path: path.into(), work: Box::new(work) };
        let mut writer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if writer.queue.is_none() && !writer.finished {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new().name("ikit-writes".into()).spawn(move || {
                rx.into_iter().filter_map(|job| (job.work)().err().map(|e| (job.path, e))).collect()
            });
            if let Ok(thread) = spawned {
                writer.queue = Some(tx);
                writer.thread = Some(thread);
            }
        }
        let job = match &writer.queue {
            Some(queue) => match queue.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        drop(writer);
        if let Err(e) = (job.work)() {
            tracing::warn!(path = %job.path.display(), error = %e, "cannot write");
        }
    }

    /// Queues an atomic 0600 write of `contents` to `path`, its directory made private first.
    pub fn write_private(&self, path: PathBuf, contents: Zeroizing<Vec<u8>>) {
        let target = path.clone();
        self.push(path, move || {
            let dir =
                target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            ensure_private_dir(dir)?;
            write_private(&target, &contents)
        });
    }

    /// Runs every queued job to its end and returns the ones that failed, with the file each
    /// was making. Jobs queued later run at once.
    pub fn finish(&self) -> Vec<(PathBuf, std::io::Error)> {
        let thread = {
            let mut writer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            writer.queue = None;
            writer.finished = true;
            writer.thread.take()
        };
        match thread.map(std::thread::JoinHandle::join) {
            Some(Ok(failed)) => failed,
            Some(Err(_)) => vec![(PathBuf::new(), std::io::Error::other("the writer panicked"))],
            None => Vec::new(),
        }
    }
}

/// Snapshots of every folder a client reads, one file each, in one directory.
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    key: SealKey,
    /// When set, writes are queued there instead of made before the read returns.
    deferred: Option<DeferredWrites>,
    /// The directory was made (or found) and tightened; not checked again until a write finds
    /// it gone.
    dir_ready: AtomicBool,
    /// Snapshot files read (whether or not they could be trusted).
    reads: AtomicU64,
}

/// The file beside the snapshots naming the server's API generation (not a secret; not a
/// `.snap` name, so never taken for a listing).
const GENERATION_FILE: &str = "api-generation";

/// The API generation saved beside the snapshots in `dir`; `None` when there is none or it is
/// unreadable (the client then probes, as on a first start).
pub(crate) fn saved_generation(dir: &Path) -> Option<ApiVersion> {
    match std::fs::read_to_string(dir.join(GENERATION_FILE)).ok()?.trim() {
        "v3" => Some(ApiVersion::V3),
        "v4" => Some(ApiVersion::V4),
        _ => None,
    }
}

fn aad(cache_key: &str) -> Vec<u8> {
    format!("ikit-snapshot:{cache_key}").into_bytes()
}

impl SnapshotStore {
    pub(crate) fn new(dir: PathBuf, key: SealKey, deferred: Option<DeferredWrites>) -> Self {
        Self { dir, key, deferred, dir_ready: AtomicBool::new(false), reads: AtomicU64::new(0) }
    }

    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The API generation an earlier process saved; `None` when there is none or it is
    /// unreadable (the client then probes, as on a first start).
    pub(crate) fn read_generation(&self) -> Option<ApiVersion> {
        saved_generation(&self.dir)
    }

    pub(crate) fn write_generation(&self, version: ApiVersion) -> std::io::Result<()> {
        let name = match version {
            ApiVersion::V3 => "v3",
            ApiVersion::V4 => "v4",
        };
        let path = self.dir.join(GENERATION_FILE);
        if let Some(deferred) = &self.deferred {
            deferred.write_private(path, Zeroizing::new(name.as_bytes().to_vec()));
            return Ok(());
        }
        self.ensure_dir()?;
        write_private(&path, name.as_bytes())
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
        if let Some(deferred) = &self.deferred {
            deferred.write_private(target, Zeroizing::new(sealed));
            return Ok(());
        }
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
        let store = SnapshotStore::new(dir.clone(), SealKey::new([9; 32]), None);
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
        let other = SnapshotStore::new(dir.clone(), SealKey::new([8; 32]), None);
        assert!(other.read("p:dev:f:/a").is_err());
        // Truncated.
        std::fs::write(&path, &raw[..raw.len() / 2]).unwrap();
        assert!(store.read("p:dev:f:/a").is_err());

        // A directory that already exists with wider permissions is tightened.
        let existing = tmp.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SnapshotStore::new(existing.clone(), SealKey::new([9; 32]), None);
        store.write("p:dev:f:/a", &encode_entry(7, None, &folder()), &mut rng).unwrap();
        assert_eq!(mode(&existing), 0o700);

        // A directory removed after the first write is made again, private, by the next one.
        std::fs::remove_dir_all(&existing).unwrap();
        store.write("p:dev:f:/b", &encode_entry(8, None, &folder()), &mut rng).unwrap();
        assert_eq!(mode(&existing), 0o700);
        assert_eq!(store.read("p:dev:f:/b").unwrap().unwrap().saved_at_ms, 8);
    }

    #[cfg(unix)]
    #[test]
    fn deferred_writes_land_in_order_private_and_are_all_done_by_finish() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deep/snaps");
        let writes = DeferredWrites::new();
        let store = SnapshotStore::new(dir.clone(), SealKey::new([9; 32]), Some(writes.clone()));
        let mut rng = StdRng::seed_from_u64(3);
        store.write("p:dev:f:/a", &encode_entry(7, None, &folder()), &mut rng).unwrap();
        store.write("p:dev:f:/a", &encode_entry(9, None, &folder()), &mut rng).unwrap();
        store.write_generation(ApiVersion::V3).unwrap();
        // A job that cannot succeed is reported by the file it was making; the others still run.
        let blocked = tmp.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        writes.write_private(blocked.join("below"), Zeroizing::new(b"y".to_vec()));
        let failed = writes.finish();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, blocked.join("below"));

        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = store.path("p:dev:f:/a");
        assert_eq!((mode(&path), mode(&dir)), (0o600, 0o700));
        assert_eq!(store.read("p:dev:f:/a").unwrap().unwrap().saved_at_ms, 9, "later write wins");
        assert_eq!(saved_generation(&dir), Some(ApiVersion::V3));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no temp file left behind");

        // After finish a write is made before it returns.
        writes.write_private(dir.join("late"), Zeroizing::new(b"z".to_vec()));
        assert_eq!(std::fs::read(dir.join("late")).unwrap(), b"z");
        assert!(writes.finish().is_empty());
    }
}
