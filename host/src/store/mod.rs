//! The model store: one directory (`RUNANYWHERE_HOME`, default the user's data
//! directory + `runanywhere`) holding installed models and the registry that lists them.
//!
//! ```text
//! $RUNANYWHERE_HOME/
//!   registry.json        ids, sources, formats, sizes, checksums, engines, dates
//!   models/<id>/...      each model's files
//!   downloads/<id>/      *.partial files of unfinished pulls (resumed by the next pull)
//!   locks/               one lock per model being pulled, and the registry's
//! ```
//!
//! Nothing is registered before it is complete and verified: pulls and imports assemble
//! a model in a staging folder next to `models/<id>`, run the structural check
//! ([`runanywhere_formats::verify_path`]) on it, and only then rename it into place and
//! add the registry entry, both under the registry lock.

mod catalog;
mod check;
mod digest;
mod disk;
mod hub;
mod import;
mod index;
mod install;
mod lock;
mod pull;
mod reference;

use std::path::{Path, PathBuf};

pub use catalog::{Catalog, CatalogEntry, CatalogError, CatalogFile};
pub use check::FileCheck;
pub use disk::FREE_BYTES_ENV;
pub use hub::{HubClient, HubError, RemoteFile, DEFAULT_ENDPOINT, ENDPOINT_ENV, TOKEN_ENV};
pub use import::ImportOptions;
pub use index::{FileRecord, ModelEntry};
use lock::FileLock;
pub use pull::{NoProgress, PullOptions, PullOutcome, PullProgress};
pub use reference::{HubRef, PullSpec};
use runanywhere_formats::Problem;

/// Environment variable naming the store's directory.
pub const HOME_ENV: &str = "RUNANYWHERE_HOME";

/// Everything the store can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No home directory to put the store in.
    #[error("cannot find a data directory for the model store; set {HOME_ENV}")]
    NoHome,
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `registry.json` is unreadable.
    #[error("the model registry {} is damaged: {message} (fix or remove it)", path.display())]
    Registry {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("{name}={value:?} is not a number of bytes")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A model id that cannot be used.
    #[error("`{id}` cannot be a model id: {reason}")]
    InvalidId {
        /// The id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// The id is taken by another model.
    #[error("the store already has a model `{id}` (from {source_of}); choose another id, or remove that model first")]
    IdTaken {
        /// The id.
        id: String,
        /// Where the installed one came from.
        source_of: String,
    },
    /// `import` was given a path inside the store's own `models/` folder.
    #[error("{} is inside the model store ({}); import a copy kept elsewhere, or use the installed model's id", path.display(), models.display())]
    InsideStore {
        /// The path given.
        path: PathBuf,
        /// The store's `models/` folder.
        models: PathBuf,
    },
    /// No model with this id.
    #[error("no model `{id}` in the store ({})", home.display())]
    UnknownModel {
        /// The id.
        id: String,
        /// The store's directory.
        home: PathBuf,
    },
    /// `pull` was given something that is neither a catalog id nor a Hub reference.
    #[error("`{spec}` is {reason}; give a catalog id or hf.co/OWNER/REPO/PATH[@REVISION]")]
    BadReference {
        /// What was given.
        spec: String,
        /// Why it is not usable.
        reason: String,
    },
    /// A catalog pattern matched no file on the Hub.
    #[error("no file in {repo} at {revision} matches `{pattern}`")]
    NoMatch {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The pattern.
        pattern: String,
    },
    /// Two files of one model have the same name.
    #[error("two files of the model are both named `{0}`")]
    DuplicateName(String),
    /// The Hub and the catalog disagree about a file.
    #[error(
        "{file}: the Hub reports {what} {hub} but the catalog pins {pinned}; refusing to download"
    )]
    PinMismatch {
        /// The file.
        file: String,
        /// `size` or `sha256`.
        what: &'static str,
        /// What the Hub says.
        hub: String,
        /// What the catalog says.
        pinned: String,
    },
    /// Not enough disk space.
    #[error("not enough disk space in {}: the download needs {needed} bytes ({}) but only {available} bytes ({}) are free", dir.display(), human_bytes(*needed), human_bytes(*available))]
    InsufficientSpace {
        /// The store directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// A downloaded file does not match its checksum or size; it was deleted.
    #[error("{file}: {what} mismatch: expected {expected}, got {actual}; the download was deleted and nothing was registered")]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// `sha256`, `git sha1` or `size`.
        what: &'static str,
        /// Expected value.
        expected: String,
        /// Actual value.
        actual: String,
    },
    /// The model failed the structural check; nothing was registered.
    #[error("{} failed verification: {problem}; nothing was registered", path.display())]
    Invalid {
        /// The model.
        path: PathBuf,
        /// The first problem.
        problem: Problem,
    },
    /// A Hub request failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The catalog is malformed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl StoreError {
    /// What kind of failure this is (see [`crate::ErrorKind`]).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            StoreError::NoHome | StoreError::Io { .. } | StoreError::Registry { .. } => K::Io,
            StoreError::BadEnv { .. }
            | StoreError::InvalidId { .. }
            | StoreError::InsideStore { .. }
            | StoreError::BadReference { .. } => K::InvalidRequest,
            StoreError::IdTaken { .. } => K::Conflict,
            StoreError::UnknownModel { .. } | StoreError::NoMatch { .. } => K::NotFound,
            StoreError::DuplicateName(_)
            | StoreError::PinMismatch { .. }
            | StoreError::ChecksumMismatch { .. }
            | StoreError::Invalid { .. } => K::InvalidModel,
            StoreError::InsufficientSpace { .. } => K::InsufficientStorage,
            StoreError::Hub(HubError::NotFound { .. }) => K::NotFound,
            StoreError::Hub(HubError::Unauthorized { .. }) => K::Unauthorized,
            StoreError::Hub(HubError::Io { .. }) => K::Io,
            // More bytes than the Hub said the file has: the served content is wrong.
            StoreError::Hub(HubError::TooLarge {
                advertised: true, ..
            }) => K::InvalidModel,
            StoreError::Hub(HubError::TooLarge { .. }) => K::InsufficientStorage,
            StoreError::Hub(_) => K::Network,
            StoreError::Catalog(_) => K::Internal,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Bytes in binary units, e.g. `1.13 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    // As indicatif's `BinaryBytes` writes them (the CLI's tables and JSON-free output
    // have always used that form): "15 B", "1.46 KiB", "1.13 MiB".
    const PREFIXES: [&str; 8] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut n = bytes as f64 / 1024.0;
    let mut prefix = 0;
    while n >= 1024.0 && prefix + 1 < PREFIXES.len() {
        n /= 1024.0;
        prefix += 1;
    }
    format!("{n:.2} {}B", PREFIXES[prefix])
}

/// Checks that `id` can name a model: 1–128 characters of ASCII letters, digits, `.`,
/// `_` and `-`, starting with a letter or digit.
pub fn validate_id(id: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 128 {
        return bad("it must have 1 to 128 characters");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("it may hold only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// An id derived from a file or folder name: its stem, with other characters replaced.
pub(crate) fn id_from_name(name: &str) -> String {
    let stem = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.contains('/') => stem,
        _ => name,
    };
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let id: String = id.chars().take(128).collect();
    if id.is_empty() {
        "model".into()
    } else {
        id
    }
}

/// The model store.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
}

impl Store {
    /// The store in `home` (created on the first write).
    pub fn new(home: impl Into<PathBuf>) -> Store {
        Store { home: home.into() }
    }

    /// The store in [`HOME_ENV`], or the user's data directory + `runanywhere`.
    pub fn from_env() -> Result<Store, StoreError> {
        match std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            Some(home) => Ok(Store::new(home)),
            None => dirs::data_dir()
                .map(|d| Store::new(d.join("runanywhere")))
                .ok_or(StoreError::NoHome),
        }
    }

    /// The store's directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where the models' folders are.
    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    fn index_path(&self) -> PathBuf {
        self.home.join("registry.json")
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.home.join("locks").join(format!("{name}.lock"))
    }

    fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<ModelEntry>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        std::fs::create_dir_all(&self.home)
            .map_err(|e| StoreError::io("cannot create", &self.home, e))?;
        index::update(&self.index_path(), &self.lock_path("registry"), change)
    }

    /// [`Store::update`], running `undo` (under the lock) when the registry write fails.
    fn update_or_undo<T>(
        &self,
        change: impl FnOnce(&mut Vec<ModelEntry>) -> Result<T, StoreError>,
        undo: impl FnOnce(),
    ) -> Result<T, StoreError> {
        std::fs::create_dir_all(&self.home)
            .map_err(|e| StoreError::io("cannot create", &self.home, e))?;
        index::update_or_undo(
            &self.index_path(),
            &self.lock_path("registry"),
            change,
            undo,
        )
    }

    /// Every installed model, by id.
    pub fn list(&self) -> Result<Vec<ModelEntry>, StoreError> {
        index::load(&self.index_path())
    }

    /// The model with `id`, if installed.
    pub fn get(&self, id: &str) -> Result<Option<ModelEntry>, StoreError> {
        Ok(self.list()?.into_iter().find(|e| e.id == id))
    }

    /// The model's file or folder.
    pub fn model_path(&self, entry: &ModelEntry) -> PathBuf {
        self.models_dir().join(&entry.path)
    }

    /// The model's separate tokenizer, if it has one.
    pub fn tokenizer_path(&self, entry: &ModelEntry) -> Option<PathBuf> {
        entry.tokenizer.as_ref().map(|t| self.models_dir().join(t))
    }

    /// The entry whose files hold `path`, if `path` lies inside the store.
    pub fn entry_for_path(&self, path: &Path) -> Result<Option<ModelEntry>, StoreError> {
        let Ok(path) = path.canonicalize() else {
            return Ok(None);
        };
        let Ok(models) = self.models_dir().canonicalize() else {
            return Ok(None);
        };
        Ok(self
            .list()?
            .into_iter()
            .find(|e| path.starts_with(models.join(&e.id))))
    }

    /// Removes the model `id`: its registry entry, then its folder (for a linked import,
    /// only the links, never the originals).
    ///
    /// It holds the model's lock throughout, as pulls and imports do, and moves the folder
    /// aside while it drops the entry, so it never deletes the files of a model installed
    /// under the same id meanwhile.
    pub fn remove(&self, id: &str) -> Result<ModelEntry, StoreError> {
        validate_id(id)?;
        let _lock = FileLock::acquire(&self.lock_path(&format!("model-{id}")), || {
            tracing::info!("waiting for another process using `{id}`");
        })?;
        let dir = self.models_dir().join(id);
        let trash = self
            .models_dir()
            .join(format!(".trash-{id}-{}", std::process::id()));
        // A leftover of an interrupted removal by a process with the same id.
        remove_dir(&trash)?;
        let mut moved = false;
        let result =
            self.update(|models| {
                let i = models.iter().position(|e| e.id == id).ok_or_else(|| {
                    StoreError::UnknownModel {
                        id: id.to_string(),
                        home: self.home.clone(),
                    }
                })?;
                match std::fs::rename(&dir, &trash) {
                    Ok(()) => moved = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("cannot move away", &dir, e)),
                }
                Ok(models.remove(i))
            });
        let entry = match result {
            Ok(entry) => entry,
            Err(e) => {
                // The entry stays (the registry was not saved): put its folder back.
                if moved {
                    if let Err(back) = std::fs::rename(&trash, &dir) {
                        tracing::warn!(
                            "cannot move {} back to {}: {back}",
                            trash.display(),
                            dir.display()
                        );
                    }
                }
                return Err(e);
            }
        };
        remove_dir(&trash)?;
        Ok(entry)
    }
}

/// Deletes `dir` and everything in it (symbolic links, not their targets); nothing to do
/// when it does not exist.
fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("cannot remove", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_written_like_indicatif_binary_bytes() {
        for (n, text) in [
            (15, "15 B"),
            (1023, "1023 B"),
            (1024, "1.00 KiB"),
            (1_500, "1.46 KiB"),
            (1_185_376, "1.13 MiB"),
            (1_500_000_000, "1.40 GiB"),
            (1_500_000_000_000_000, "1.33 PiB"),
        ] {
            assert_eq!(human_bytes(n), text);
        }
    }

    #[test]
    fn ids_are_validated_and_derived() {
        assert!(validate_id("stories260K").is_ok());
        assert!(validate_id("qwen2.5-0.5b_x").is_ok());
        for bad in ["", "-x", ".hidden", "a/b", "a b", "..", &"x".repeat(129)] {
            assert!(
                matches!(validate_id(bad), Err(StoreError::InvalidId { .. })),
                "{bad}"
            );
        }
        assert_eq!(id_from_name("stories260K.gguf"), "stories260K");
        assert_eq!(
            id_from_name("My Model (v2).Q4_K_M.gguf"),
            "My-Model--v2-.Q4_K_M"
        );
        assert_eq!(
            id_from_name("tiny-random-gpt2-fp32"),
            "tiny-random-gpt2-fp32"
        );
        assert_eq!(id_from_name("..."), "model");
    }

    #[test]
    fn a_missing_registry_is_empty_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.remove("x"),
            Err(StoreError::UnknownModel { .. })
        ));
        std::fs::write(dir.path().join("registry.json"), "{not json").unwrap();
        assert!(matches!(store.list(), Err(StoreError::Registry { .. })));
    }

    #[test]
    fn remove_validates_the_id_and_moves_the_folder_away_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(matches!(
            store.remove("../x"),
            Err(StoreError::InvalidId { .. })
        ));
        let folder = store.models_dir().join("m");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("f.bin"), b"x").unwrap();
        store
            .update(|models| {
                models.push(ModelEntry {
                    id: "m".into(),
                    source: "test".into(),
                    format: "gguf".into(),
                    size: 1,
                    sha256: None,
                    engines: Vec::new(),
                    added: "2024-01-01T00:00:00Z".into(),
                    path: "m/f.bin".into(),
                    tokenizer: None,
                    files: Vec::new(),
                    linked: false,
                    revision: None,
                });
                Ok(())
            })
            .unwrap();
        assert_eq!(store.remove("m").unwrap().id, "m");
        assert!(store.list().unwrap().is_empty());
        let left: Vec<_> = std::fs::read_dir(store.models_dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // The model lock was taken (its folder exists) and cleaned up on release.
        let locks: Vec<_> = std::fs::read_dir(dir.path().join("locks"))
            .unwrap()
            .collect();
        assert!(locks.is_empty(), "{locks:?}");
    }
}
