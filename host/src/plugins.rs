//! Installing and removing engine plugins in the user's plugin directory
//! (`~/.local/share/runanywhere/plugins`), which discovery searches by default.
//!
//! An install is checked the way discovery would load it (manifest, library, API
//! version, abi_stable layout, `init`) before anything is copied, so a broken plugin is
//! refused with the reason instead of landing in the ledger at every later start. The
//! library is copied next to the manifest and the manifest's `library` rewritten to the
//! copy, so the install does not depend on where it was built.

use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, ManifestError};
use crate::registry::Registry;

/// Why an install or removal failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No data directory to install into.
    #[error("cannot find the user's data directory to install plugins into")]
    NoDataDir,
    /// The source is not a manifest or a folder with exactly one.
    #[error("{}: {problem}", path.display())]
    Source {
        /// What was given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The plugin would not load; nothing was installed.
    #[error("plugin `{id}` would not load, so it was not installed: {reason}")]
    WouldNotLoad {
        /// The plugin id.
        id: String,
        /// The ledger's reason.
        reason: String,
    },
    /// A plugin with this id is already installed.
    #[error("a plugin `{id}` is already installed ({}); remove it first", manifest.display())]
    AlreadyInstalled {
        /// The id.
        id: String,
        /// Its manifest.
        manifest: PathBuf,
    },
    /// No installed plugin has this id.
    #[error("no plugin `{id}` is installed in {}", dir.display())]
    NotInstalled {
        /// The id.
        id: String,
        /// The user's plugin directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PluginError + 'a {
    move |source| PluginError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The user's plugin directory (`<data dir>/runanywhere/plugins`).
pub fn user_plugin_dir() -> Result<PathBuf, PluginError> {
    dirs::data_dir()
        .map(|d| d.join("runanywhere").join("plugins"))
        .ok_or(PluginError::NoDataDir)
}

/// An installed plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its id.
    pub id: String,
    /// The manifest in the user's plugin directory.
    pub manifest: PathBuf,
    /// The copied library.
    pub library: PathBuf,
}

/// Checks the plugin at `source` (a manifest, or a folder holding exactly one) and
/// copies it into `dir` (see the module docs).
pub fn install(source: &Path, dir: &Path) -> Result<Installed, PluginError> {
    let manifest_path = manifest_of(source)?;
    let manifest = Manifest::from_file(&manifest_path)?;
    if let Some(existing) = find(dir, &manifest.id)? {
        return Err(PluginError::AlreadyInstalled {
            id: manifest.id,
            manifest: existing,
        });
    }
    let mut check = Registry::default();
    check.add_manifest(&manifest_path);
    if let Some(u) = check.unavailable().first() {
        return Err(PluginError::WouldNotLoad {
            id: u.id.clone(),
            reason: u.reason.clone(),
        });
    }
    let library = manifest.library_path();
    let file_name = library
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let copied = dir.join(&file_name);
    if copied.exists() {
        return Err(PluginError::Source {
            path: copied,
            problem: "another plugin's library already has this file name".into(),
        });
    }
    std::fs::copy(&library, &copied).map_err(io("cannot copy", &library))?;
    let text =
        std::fs::read_to_string(&manifest_path).map_err(io("cannot read", &manifest_path))?;
    let mut table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| PluginError::Source {
                path: manifest_path.clone(),
                problem: e.message().to_string(),
            })?;
    table.insert("library".into(), toml::Value::String(file_name));
    let target = dir.join(format!("{}.toml", manifest.id));
    let written = toml::to_string(&table)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|out| std::fs::write(&target, out));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&copied);
        return Err(io("cannot write", &target)(e));
    }
    Ok(Installed {
        id: manifest.id,
        manifest: target,
        library: copied,
    })
}

/// Removes the plugin `id` from `dir`: its manifest, and its library when that lies in
/// `dir` too.
pub fn remove(id: &str, dir: &Path) -> Result<Installed, PluginError> {
    let manifest_path = find(dir, id)?.ok_or_else(|| PluginError::NotInstalled {
        id: id.to_string(),
        dir: dir.to_path_buf(),
    })?;
    let manifest = Manifest::from_file(&manifest_path)?;
    let library = manifest.library_path();
    std::fs::remove_file(&manifest_path).map_err(io("cannot remove", &manifest_path))?;
    if library.parent() == Some(dir) {
        std::fs::remove_file(&library).map_err(io("cannot remove", &library))?;
    }
    Ok(Installed {
        id: id.to_string(),
        manifest: manifest_path,
        library,
    })
}

/// The manifest `source` names: itself, or the one `.toml` in a folder.
fn manifest_of(source: &Path) -> Result<PathBuf, PluginError> {
    let problem = |problem: String| PluginError::Source {
        path: source.to_path_buf(),
        problem,
    };
    if !source.is_dir() {
        if source.extension().is_some_and(|e| e == "toml") {
            return Ok(source.to_path_buf());
        }
        return Err(problem(
            "give a plugin manifest (.toml) or its folder".into(),
        ));
    }
    let mut tomls: Vec<PathBuf> = std::fs::read_dir(source)
        .map_err(io("cannot list", source))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    tomls.sort();
    match tomls.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(problem(
            "the folder holds no plugin manifest (.toml)".into(),
        )),
        many => Err(problem(format!(
            "the folder holds {} manifests; give the one to install",
            many.len()
        ))),
    }
}

/// The manifest in `dir` with id `id`.
fn find(dir: &Path, id: &str) -> Result<Option<PathBuf>, PluginError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == "toml")
            && Manifest::from_file(&path).is_ok_and(|m| m.id == id)
        {
            return Ok(Some(path));
        }
    }
    Ok(None)
}
