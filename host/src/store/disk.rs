//! Free disk space, checked before a download starts.

use std::path::Path;

use super::StoreError;

/// Environment variable that replaces the measured free space (in bytes), so tests can
/// simulate a full disk.
pub const FREE_BYTES_ENV: &str = "RUNANYWHERE_TEST_FREE_BYTES";

/// Bytes available to this user on the file system holding `dir`.
pub(crate) fn available_space(dir: &Path) -> Result<u64, StoreError> {
    if let Some(value) = std::env::var_os(FREE_BYTES_ENV) {
        let text = value.to_string_lossy();
        return text.trim().parse().map_err(|_| StoreError::BadEnv {
            name: FREE_BYTES_ENV,
            value: text.into_owned(),
        });
    }
    fs4::available_space(dir)
        .map_err(|e| StoreError::io("cannot measure the free space of", dir, e))
}

/// Fails with the numbers when `dir` has less than `needed` bytes free.
pub(crate) fn ensure_space(dir: &Path, needed: u64) -> Result<(), StoreError> {
    let available = available_space(dir)?;
    if available < needed {
        return Err(StoreError::InsufficientSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}
