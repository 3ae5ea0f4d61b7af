//! The registry of installed models: `registry.json` in the store's home.
//!
//! It is read whole and rewritten whole: under the registry lock, to a temporary file
//! that is then renamed over the old one, so a reader never sees half a file and two
//! writers never lose each other's entries.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::lock::FileLock;
use super::StoreError;

/// The registry format version written by this build.
const VERSION: u32 = 1;

/// One installed model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The id `--model` takes.
    pub id: String,
    /// Where it came from: `hf.co/OWNER/REPO/PATH@REVISION`, a catalog id, or the
    /// imported path.
    pub source: String,
    /// The format (a manifest format name such as `gguf`).
    pub format: String,
    /// Total bytes of its files.
    pub size: u64,
    /// SHA-256 of the model file, for single-file models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Engines that read its format (when it was added).
    pub engines: Vec<String>,
    /// When it was added (RFC 3339, UTC).
    pub added: String,
    /// The model file or folder, relative to the store's `models/` directory.
    pub path: String,
    /// A separate tokenizer file (llama2.c), relative to `models/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Every file, relative to the model's own directory.
    #[serde(default)]
    pub files: Vec<FileRecord>,
    /// Whether the files are symbolic links to an imported original.
    #[serde(default)]
    pub linked: bool,
    /// The Hub commit it was pulled at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name within the model's directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    models: Vec<ModelEntry>,
}

/// The entries in `path`; none when the file does not exist yet.
pub(crate) fn load(path: &Path) -> Result<Vec<ModelEntry>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("cannot read", path, e)),
    };
    let file: RegistryFile = serde_json::from_str(&text).map_err(|e| StoreError::Registry {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if file.version > VERSION {
        return Err(StoreError::Registry {
            path: path.to_path_buf(),
            message: format!(
                "it is version {} and this runanywhere reads version {VERSION}; upgrade runanywhere",
                file.version
            ),
        });
    }
    Ok(file.models)
}

/// Runs `change` on the entries under the registry lock and saves them when it succeeds.
pub(crate) fn update<T>(
    path: &Path,
    lock: &Path,
    change: impl FnOnce(&mut Vec<ModelEntry>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let _guard = FileLock::acquire(lock, || {
        tracing::info!("waiting for another runanywhere process to update the registry");
    })?;
    let mut models = load(path)?;
    let result = change(&mut models)?;
    save(path, models)?;
    Ok(result)
}

fn save(path: &Path, mut models: Vec<ModelEntry>) -> Result<(), StoreError> {
    models.sort_by(|a, b| a.id.cmp(&b.id));
    let file = RegistryFile {
        version: VERSION,
        models,
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| StoreError::Registry {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text + "\n").map_err(|e| StoreError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io("cannot replace", path, e))
}
