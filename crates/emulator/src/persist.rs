//! `--data FILE`: the whole state as JSON, written atomically (temp file, fsync, rename, mode
//! 0600, directory fsync).

use std::io::Write;
use std::path::Path;

use crate::error::EmulatorError;
use crate::store::Store;

pub(crate) fn load(path: &Path) -> Result<Option<Store>, EmulatorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EmulatorError::Data { path: path.to_owned(), source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EmulatorError::DataFormat { path: path.to_owned(), message: e.to_string() })
}

pub(crate) fn save(path: &Path, store: &Store) -> Result<(), EmulatorError> {
    let err = |source| EmulatorError::Data { path: path.to_owned(), source };
    let bytes = serde_json::to_vec(store).expect("state always serialises");
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
