//! The last step of every pull and import: verify the staged model, then move it into
//! `models/<id>` and register it, both under the registry lock.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use runanywhere_formats::verify_path;

use super::index::{FileRecord, ModelEntry};
use super::{Store, StoreError};
use crate::registry::Registry;

/// What to register.
#[derive(Debug)]
pub(crate) struct Install {
    pub(crate) id: String,
    pub(crate) source: String,
    /// Where the model came from, for messages (a path, or the Hub reference).
    pub(crate) origin: PathBuf,
    /// The model file among `files`; `None` when the folder is the model (or when it
    /// has a single file, which is then the model).
    pub(crate) model_file: Option<String>,
    pub(crate) tokenizer: Option<String>,
    pub(crate) files: Vec<FileRecord>,
    pub(crate) linked: bool,
    pub(crate) revision: Option<String>,
}

impl Store {
    /// A new, empty staging folder for `id` inside `models/`.
    pub(crate) fn staging_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = self
            .models_dir()
            .join(format!(".staging-{id}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("cannot create", &dir, e))?;
        Ok(dir)
    }

    /// Verifies the model staged in `staging` and installs it; the staging folder is
    /// gone afterwards either way.
    pub(crate) fn install(
        &self,
        staging: &Path,
        spec: Install,
        engines: &Registry,
    ) -> Result<ModelEntry, StoreError> {
        let result = self.install_staged(staging, spec, engines);
        if result.is_err() {
            match std::fs::remove_dir_all(staging) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot remove {}: {e}", staging.display()),
            }
        }
        result
    }

    fn install_staged(
        &self,
        staging: &Path,
        spec: Install,
        engines: &Registry,
    ) -> Result<ModelEntry, StoreError> {
        let main = spec
            .model_file
            .clone()
            .or_else(|| match spec.files.as_slice() {
                [only] => Some(only.name.clone()),
                _ => None,
            });
        let staged = main
            .as_ref()
            .map_or(staging.to_path_buf(), |m| staging.join(m));
        let verification = verify_path(&staged);
        let format = match (verification.problem, verification.format) {
            (None, Some(format)) => format,
            (problem, _) => {
                let mut problem = problem.unwrap_or_else(|| runanywhere_formats::Problem {
                    file: staged.clone(),
                    offset: None,
                    message: "unrecognised model format".into(),
                });
                // Name the file as the user knows it, not its staging copy.
                if let Ok(rel) = problem.file.strip_prefix(staging) {
                    problem.file = if rel.as_os_str().is_empty() || spec.origin.is_file() {
                        spec.origin.clone()
                    } else {
                        spec.origin.join(rel)
                    };
                }
                return Err(StoreError::Invalid {
                    path: spec.origin,
                    problem,
                });
            }
        };
        let id = spec.id;
        let sha256 = match main.as_deref() {
            Some(m) => spec
                .files
                .iter()
                .find(|f| f.name == m)
                .map(|f| f.sha256.clone()),
            None => None,
        };
        let entry = ModelEntry {
            source: spec.source,
            format: format.name().to_string(),
            size: spec.files.iter().map(|f| f.size).sum(),
            sha256,
            engines: engines
                .engines_for(format)
                .iter()
                .map(|e| e.id().to_string())
                .collect(),
            added: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            path: main.map_or_else(|| id.clone(), |m| format!("{id}/{m}")),
            tokenizer: spec.tokenizer.map(|t| format!("{id}/{t}")),
            files: spec.files,
            linked: spec.linked,
            revision: spec.revision,
            id,
        };
        let target = self.models_dir().join(&entry.id);
        // If the registry cannot be written, the model goes back to staging (and from
        // there away): no folder is left in `models/` that the registry does not list.
        let undo = || {
            if let Err(e) = std::fs::rename(&target, staging) {
                tracing::warn!("cannot take back {}: {e}", target.display());
            }
        };
        self.update_or_undo(
            |models| {
                if let Some(existing) = models.iter().find(|e| e.id == entry.id) {
                    return Err(StoreError::IdTaken {
                        id: entry.id.clone(),
                        source_of: existing.source.clone(),
                    });
                }
                // A folder without an entry is what an interrupted install or removal left.
                if target.exists() {
                    std::fs::remove_dir_all(&target)
                        .map_err(|e| StoreError::io("cannot remove the stale", &target, e))?;
                }
                std::fs::rename(staging, &target)
                    .map_err(|e| StoreError::io("cannot move the model into", &target, e))?;
                models.push(entry.clone());
                Ok(entry.clone())
            },
            undo,
        )
    }
}
