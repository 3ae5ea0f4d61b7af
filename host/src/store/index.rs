//! The store's index of installed models: `registry.json` in the store's home (the file
//! keeps its name; the module is the *index* so it is not mistaken for the engine
//! registry, [`crate::registry::Registry`]).
//!
//! It is read whole and rewritten whole: under the registry lock, to a temporary file
//! that is synced to disk and then renamed over the old one (the directory synced too), so
//! a reader never sees half a file, a crash never leaves an empty one, and two
//! writers never lose each other's entries.

use std::io::Write;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::lock::FileLock;
use super::{validate_id, StoreError};

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
    let text = match runanywhere_formats::fs::read_regular_to_string(path) {
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
    for entry in &file.models {
        check_entry(path, entry)?;
    }
    Ok(file.models)
}

/// Refuses an entry whose id or paths could reach outside the store's `models/`.
fn check_entry(registry: &Path, entry: &ModelEntry) -> Result<(), StoreError> {
    let damaged = |message: String| StoreError::Registry {
        path: registry.to_path_buf(),
        message,
    };
    validate_id(&entry.id)
        .map_err(|e| damaged(format!("its entry `{}` has a bad id: {e}", entry.id)))?;
    let fields = [
        ("path", Some(&entry.path)),
        ("tokenizer", entry.tokenizer.as_ref()),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        if !is_relative_inside(value) {
            return Err(damaged(format!(
                "its entry `{}` has {field} {value:?}, which is not a plain path inside models/",
                entry.id
            )));
        }
    }
    Ok(())
}

/// Whether `value` is a relative path naming something below `models/`: at least one
/// plain component, and no `..`, root or drive prefix.
fn is_relative_inside(value: &str) -> bool {
    let components = Path::new(value).components();
    let mut normal = 0;
    for component in components {
        match component {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    normal > 0
}

/// Runs `change` on the entries under the registry lock and saves them when it succeeds.
pub(crate) fn update<T>(
    path: &Path,
    lock: &Path,
    change: impl FnOnce(&mut Vec<ModelEntry>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    update_or_undo(path, lock, change, || {})
}

/// Like [`update`], but when the new registry cannot be written (a full disk), `undo`
/// runs, still under the lock, to take back what `change` did outside the registry
/// (e.g. a folder moved into `models/`), so nothing is left that the registry does not
/// know about.
pub(crate) fn update_or_undo<T>(
    path: &Path,
    lock: &Path,
    change: impl FnOnce(&mut Vec<ModelEntry>) -> Result<T, StoreError>,
    undo: impl FnOnce(),
) -> Result<T, StoreError> {
    let _guard = FileLock::acquire(lock, || {
        tracing::info!("waiting for another runanywhere process to update the registry");
    })?;
    let mut models = load(path)?;
    let result = change(&mut models)?;
    if let Err(e) = save(path, models) {
        undo();
        return Err(e);
    }
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
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    if let Err(e) = written {
        if let Err(rm) = std::fs::remove_file(&tmp) {
            tracing::debug!("cannot remove {}: {rm}", tmp.display());
        }
        return Err(StoreError::io("cannot write", &tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io("cannot replace", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Flushes `dir`'s entries (the rename) to disk; best effort, as some platforms and file
/// systems cannot open or sync a directory.
fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!("cannot sync the directory {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, path: &str, tokenizer: Option<&str>) -> ModelEntry {
        ModelEntry {
            id: id.into(),
            source: "test".into(),
            format: "gguf".into(),
            size: 1,
            sha256: None,
            engines: Vec::new(),
            added: "2024-01-01T00:00:00Z".into(),
            path: path.into(),
            tokenizer: tokenizer.map(Into::into),
            files: Vec::new(),
            linked: false,
            revision: None,
        }
    }

    fn write(path: &Path, models: Vec<ModelEntry>) {
        let file = RegistryFile {
            version: VERSION,
            models,
        };
        std::fs::write(path, serde_json::to_string(&file).unwrap()).unwrap();
    }

    #[test]
    fn entries_that_reach_outside_models_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        write(&path, vec![entry("ok", "ok/m.gguf", Some("ok/tok.bin"))]);
        assert_eq!(load(&path).unwrap().len(), 1);
        let bad = [
            entry("..", "x", None),
            entry("a/b", "a/b", None),
            entry("ok", "../x", None),
            entry("ok", "ok/../../x", None),
            entry("ok", "/etc/passwd", None),
            entry("ok", "", None),
            entry("ok", ".", None),
            entry("ok", "ok/m.gguf", Some("../tok.bin")),
            entry("ok", "ok/m.gguf", Some("/tok.bin")),
        ];
        for e in bad {
            write(&path, vec![e.clone()]);
            match load(&path) {
                Err(StoreError::Registry { message, .. }) => {
                    assert!(message.contains(&format!("`{}`", e.id)), "{message}")
                }
                other => panic!("{e:?} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn saves_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let lock = dir.path().join("locks").join("registry.lock");
        update(&path, &lock, |m| {
            m.push(entry("b", "b", None));
            m.push(entry("a", "a/m.gguf", None));
            Ok(())
        })
        .unwrap();
        let ids: Vec<String> = load(&path).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a", "b"]);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }
}
