//! `--data FILE`: the whole state as JSON, written atomically with mode 0600 by
//! `ikit_common::files::write_private`.

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
    let bytes = serde_json::to_vec(store).expect("state always serialises");
    ikit_common::files::write_private(path, &bytes)
        .map_err(|source| EmulatorError::Data { path: path.to_owned(), source })
}
