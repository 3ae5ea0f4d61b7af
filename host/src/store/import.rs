//! `runanywhere import`: a local file or folder into the store, copied (hashing on the
//! way) or symlinked, after the structural check.

use std::path::{Path, PathBuf};

use runanywhere_formats::verify_path;

use super::digest::{copy_hashing, sha256_file};
use super::index::{FileRecord, ModelEntry};
use super::install::Install;
use super::lock::FileLock;
use super::{disk, id_from_name, validate_id, Store, StoreError};
use crate::registry::Registry;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The id (default: the file's stem or the folder's name).
    pub id: Option<String>,
    /// Symlink the files instead of copying them.
    pub link: bool,
}

impl Store {
    /// Imports the model file or folder at `source` (only a folder's own files, not its
    /// subfolders).
    pub fn import(
        &self,
        source: &Path,
        options: &ImportOptions,
        engines: &Registry,
    ) -> Result<ModelEntry, StoreError> {
        let source = source
            .canonicalize()
            .map_err(|e| StoreError::io("cannot find", source, e))?;
        // Installing replaces `models/<id>`, which could be the source itself.
        if let Ok(models) = self.models_dir().canonicalize() {
            if source.starts_with(&models) {
                return Err(StoreError::InsideStore {
                    path: source,
                    models,
                });
            }
        }
        let verification = verify_path(&source);
        if let Some(problem) = verification.problem {
            return Err(StoreError::Invalid {
                path: source,
                problem,
            });
        }
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = options.id.clone().unwrap_or_else(|| id_from_name(&name));
        validate_id(&id)?;
        let _lock = FileLock::acquire(&self.lock_path(&format!("model-{id}")), || {
            tracing::info!("waiting for another process adding `{id}`");
        })?;
        if let Some(existing) = self.get(&id)? {
            return Err(StoreError::IdTaken {
                id,
                source_of: existing.source,
            });
        }
        let is_dir = source.is_dir();
        let files = if is_dir {
            folder_files(&source)?
        } else {
            // A single file brings the files verification found it needs (ONNX external
            // data), which must lie next to it to be found there again in the store.
            let dir = source.parent().unwrap_or(Path::new("/"));
            if let Some(far) = verification.files.iter().find(|f| f.parent() != Some(dir)) {
                return Err(StoreError::Invalid {
                    path: source.clone(),
                    problem: runanywhere_formats::Problem {
                        file: far.clone(),
                        offset: None,
                        message: format!(
                            "the model's data file is not next to it; import the folder {} \
                             instead",
                            dir.display()
                        ),
                    },
                });
            }
            verification.files.clone()
        };
        if !options.link {
            std::fs::create_dir_all(&self.home)
                .map_err(|e| StoreError::io("cannot create", &self.home, e))?;
            disk::ensure_space(&self.home, verification.size)?;
        }
        let staging = self.staging_dir(&id)?;
        let records = match stage(&files, &staging, options.link) {
            Ok(records) => records,
            Err(e) => {
                if let Err(rm) = std::fs::remove_dir_all(&staging) {
                    tracing::warn!("cannot remove {}: {rm}", staging.display());
                }
                return Err(e);
            }
        };
        let spec = Install {
            id,
            source: source.display().to_string(),
            origin: source.clone(),
            model_file: (!is_dir).then_some(name),
            tokenizer: None,
            files: records,
            linked: options.link,
            revision: None,
        };
        self.install(&staging, spec, engines)
    }
}

/// The regular files directly inside `dir`, sorted.
fn folder_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io("cannot list", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| StoreError::io("cannot list", dir, e))?
            .path();
        if path.is_file() {
            files.push(path);
        } else {
            tracing::warn!("{} is not a file; not imported", path.display());
        }
    }
    files.sort();
    Ok(files)
}

/// Copies (or links) `files` into `staging`, recording their checksums.
fn stage(files: &[PathBuf], staging: &Path, link: bool) -> Result<Vec<FileRecord>, StoreError> {
    let mut records = Vec::with_capacity(files.len());
    for src in files {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dst = staging.join(&name);
        let (sha256, size) = if link {
            symlink(src, &dst).map_err(|e| StoreError::io("cannot link", &dst, e))?;
            sha256_file(src).map_err(|e| StoreError::io("cannot read", src, e))?
        } else {
            copy_hashing(src, &dst).map_err(|e| StoreError::io("cannot copy", src, e))?
        };
        records.push(FileRecord { name, size, sha256 });
    }
    Ok(records)
}

#[cfg(unix)]
fn symlink(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(src, dst)
}

#[cfg(windows)]
fn symlink(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(src, dst)
}
