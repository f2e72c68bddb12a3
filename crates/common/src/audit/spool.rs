//! The on-disk spool: audit events that could not reach the database, one file each, named by a
//! monotonically increasing number so they flush in the order they were recorded.
//!
//! Each file is written atomically with mode 0600 ([`crate::files::write_private`]). The spool is bounded by a count; a full spool refuses the event with an error.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use crate::files::{ensure_private_dir, sync_dir, write_private};

use super::{AuditError, AuditEvent};

const SUFFIX: &str = ".json";

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    capacity: usize,
    next_id: u64,
    entries: VecDeque<(u64, PathBuf)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Spool { path: path.to_path_buf(), source }
}

impl Spool {
    /// Opens (creating it with mode 0700 if needed) a spool directory and lists what it holds.
    pub(crate) fn open(dir: &Path, capacity: usize) -> Result<Self, AuditError> {
        ensure_private_dir(dir).map_err(io_err(dir))?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write that never reached its rename: the event was never acknowledged.
                fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                continue;
            }
            if let Some(id) = name.strip_suffix(SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
                entries.push((id, entry.path()));
            }
        }
        entries.sort_unstable_by_key(|(id, _)| *id);
        let next_id = entries.last().map_or(1, |(id, _)| id + 1);
        Ok(Self { dir: dir.to_path_buf(), capacity, next_id, entries: entries.into() })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends an event durably, or refuses it when the spool is full.
    pub(crate) fn push(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        if self.entries.len() >= self.capacity {
            return Err(AuditError::SpoolFull { capacity: self.capacity });
        }
        let id = self.next_id;
        let body = serde_json::to_vec(event).map_err(AuditError::Encode)?;
        let path = self.dir.join(format!("{id:020}{SUFFIX}"));
        write_private(&path, &body)
            .map_err(|source| AuditError::Spool { path: path.clone(), source })?;
        self.next_id += 1;
        self.entries.push_back((id, path));
        Ok(())
    }

    /// The oldest event, if any. A file that cannot be read back is reported, not skipped.
    pub(crate) fn peek(&self) -> Result<Option<AuditEvent>, AuditError> {
        let Some((_, path)) = self.entries.front() else { return Ok(None) };
        let bytes = fs::read(path).map_err(io_err(path))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| AuditError::CorruptSpoolEntry {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// Moves the oldest entry aside as `<id>.corrupt` (kept for an operator, no longer flushed).
    pub(crate) fn quarantine_front(&mut self) -> Result<PathBuf, AuditError> {
        let Some((id, path)) = self.entries.pop_front() else {
            return Ok(self.dir.clone());
        };
        let aside = self.dir.join(format!("{id:020}.corrupt"));
        fs::rename(&path, &aside).map_err(io_err(&path))?;
        Ok(aside)
    }

    /// Removes the oldest event once it is safely in the database.
    pub(crate) fn pop(&mut self) -> Result<(), AuditError> {
        if let Some((_, path)) = self.entries.pop_front() {
            fs::remove_file(&path).map_err(io_err(&path))?;
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;
    use std::os::unix::fs::PermissionsExt;

    fn event(n: i64) -> AuditEvent {
        AuditEvent::new(n, "svc", "secret.read", format!("/k{n}"), Outcome::Success)
    }

    #[test]
    fn keeps_order_across_reopen_and_refuses_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let mut spool = Spool::open(&spool_dir, 3).unwrap();
        for n in 1..=3 {
            spool.push(&event(n)).unwrap();
        }
        assert!(matches!(spool.push(&event(4)), Err(AuditError::SpoolFull { capacity: 3 })));
        assert_eq!(spool.len(), 3);

        let mode = fs::metadata(&spool_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for (_, path) in &spool.entries {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }

        // A torn write left behind by a crash is cleaned up on open.
        fs::write(spool_dir.join(".00000000000000000009.tmp"), b"{").unwrap();
        let mut reopened = Spool::open(&spool_dir, 3).unwrap();
        assert_eq!(reopened.len(), 3);
        assert!(!spool_dir.join(".00000000000000000009.tmp").exists());
        let mut seen = Vec::new();
        while let Some(e) = reopened.peek().unwrap() {
            seen.push(e.time_ms);
            reopened.pop().unwrap();
        }
        assert_eq!(seen, [1, 2, 3]);
        reopened.push(&event(5)).unwrap();
        assert!(spool_dir.join("00000000000000000004.json").exists());
    }

    #[test]
    fn corrupt_entry_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000001.json"), b"not json").unwrap();
        let spool = Spool::open(dir.path(), 10).unwrap();
        assert!(matches!(spool.peek(), Err(AuditError::CorruptSpoolEntry { .. })));
    }
}
