//! Exclusive advisory file locks (`flock`/`LockFileEx` through fs4): held while a pull of
//! one model runs and while the registry is rewritten, so concurrent `runanywhere`
//! processes never interleave their writes. The lock goes with the process, even when
//! it is killed.
//!
//! The lock file is removed when the lock is released, so `locks/` does not fill up
//! with one file per model ever pulled. That is safe because a waiter, once it holds
//! the lock, checks that the file it locked is still the one at the path; if the holder
//! removed it in the meantime, the waiter starts over on the new file.

use std::fs::{File, OpenOptions};
use std::path::Path;

use fs4::FileExt;

use super::StoreError;

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
    path: std::path::PathBuf,
}

impl FileLock {
    /// Takes the lock at `path` (created if missing), waiting for another holder to let
    /// go; `waiting` is called once if it has to wait.
    pub(crate) fn acquire(path: &Path, waiting: impl FnOnce()) -> Result<FileLock, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("cannot create", dir, e))?;
        }
        let mut waiting = Some(waiting);
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io("cannot open the lock file", path, e))?;
            // Called through the trait: std's own `File::lock` is newer than this crate's MSRV.
            if FileExt::try_lock(&file).is_err() {
                if let Some(waiting) = waiting.take() {
                    waiting();
                }
                FileExt::lock(&file).map_err(|e| StoreError::io("cannot lock", path, e))?;
            }
            if still_at(&file, path) {
                return Ok(FileLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
            // The previous holder removed the file we waited on: lock the new one.
        }
    }
}

/// Whether `file` is still the file at `path` (not removed or replaced).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Elsewhere an open file cannot be removed, so it is always still there.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> bool {
    true
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Removed while still locked, so nobody can lock this file and find it gone
        // after the check in `acquire`. (Not on Windows, where open files stay.)
        #[cfg(unix)]
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!("removing {}: {e}", self.path.display());
        }
        if let Err(e) = FileExt::unlock(&self.file) {
            tracing::debug!("unlocking: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn released_locks_leave_no_file_and_still_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks").join("model-x.lock");
        drop(FileLock::acquire(&path, || {}).unwrap());
        assert!(!path.exists(), "the lock file is removed on release");

        // Many threads taking and releasing the same lock: never two inside at once,
        // even though every release removes the file another thread may be waiting on.
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, inside) = (path.clone(), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _lock = FileLock::acquire(&path, || {}).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(!path.exists());
    }
}
