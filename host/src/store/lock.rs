//! Exclusive advisory file locks (`flock`/`LockFileEx` through fs4): held while a pull of
//! one model runs and while the registry is rewritten, so concurrent `runanywhere`
//! processes never interleave their writes. The lock goes with the process, even when
//! it is killed.

use std::fs::{File, OpenOptions};
use std::path::Path;

use fs4::FileExt;

use super::StoreError;

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Takes the lock at `path` (created if missing), waiting for another holder to let
    /// go; `waiting` is called once if it has to wait.
    pub(crate) fn acquire(path: &Path, waiting: impl FnOnce()) -> Result<FileLock, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("cannot create", dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io("cannot open the lock file", path, e))?;
        // Called through the trait: std's own `File::lock` is newer than this crate's MSRV.
        if FileExt::try_lock(&file).is_err() {
            waiting();
            FileExt::lock(&file).map_err(|e| StoreError::io("cannot lock", path, e))?;
        }
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Err(e) = FileExt::unlock(&self.file) {
            tracing::debug!("unlocking: {e}");
        }
    }
}
