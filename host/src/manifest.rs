//! Plugin manifests: one TOML file per engine plugin.
//!
//! ```toml
//! id = "llama-cpp"
//! name = "llama.cpp"
//! library = "runanywhere_llama_cpp"   # base name or file name, relative to this file
//! api_version = 1
//! formats = ["gguf"]
//! priority = 100                      # higher wins when several engines read a format
//! platforms = ["linux", "macos"]      # optional
//! [options]                           # optional, passed to the plugin's init
//! threads = "4"
//! ```
//!
//! The manifest is read before the library is opened, so a stale manifest (wrong API
//! version, wrong platform, missing library) is reported without loading any code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::libname::library_file_name;

/// A parsed plugin manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Engine id (what `--engine` takes).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Library base name (`runanywhere_mock`) or file name/path, relative to the manifest.
    pub library: String,
    /// Plugin-API version the plugin was built for.
    pub api_version: u32,
    /// Model formats the engine reads (`gguf`, `safetensors`, `onnx`, `llama2c`, `mock`).
    pub formats: Vec<String>,
    /// Routing priority: the highest-priority engine that reads a format gets it.
    #[serde(default)]
    pub priority: i32,
    /// Operating systems (`std::env::consts::OS` names) the plugin is for; all if absent.
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
    /// Free-form options handed to the plugin's `init`.
    #[serde(default)]
    pub options: BTreeMap<String, toml::Value>,
    /// Where the manifest was read from (set by [`Manifest::from_file`]).
    #[serde(skip)]
    pub path: PathBuf,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The manifest.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("invalid manifest {path}: {message}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn from_file(path: &Path) -> Result<Manifest, ManifestError> {
        let text = runanywhere_formats::fs::read_regular_to_string(path).map_err(|source| {
            ManifestError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text; `path` is used for messages and resolving the library.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            invalid(format!("{at}{}", e.message().trim()))
        })?;
        manifest.path = path.to_path_buf();
        let id_ok = !manifest.id.is_empty()
            && manifest
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !id_ok {
            return Err(invalid(format!(
                "id `{}` must be non-empty lowercase letters, digits, `-` or `_`",
                manifest.id
            )));
        }
        if manifest.library.trim().is_empty() {
            return Err(invalid("`library` is empty".into()));
        }
        if manifest.formats.is_empty() {
            return Err(invalid("`formats` lists no model format".into()));
        }
        Ok(manifest)
    }

    /// The display name (the id when the manifest gives none).
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The library file, resolved against the manifest's directory.
    pub fn library_path(&self) -> PathBuf {
        let file = library_file_name(&self.library, std::env::consts::OS);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join(file)
    }

    /// Whether the manifest allows the running OS.
    pub fn supports_this_platform(&self) -> bool {
        self.platforms
            .as_ref()
            .is_none_or(|p| p.iter().any(|os| os == std::env::consts::OS))
    }

    /// The `[options]` as string pairs (non-string values in TOML syntax).
    pub fn option_pairs(&self) -> Vec<(String, String)> {
        self.options
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest_and_resolves_the_library() {
        let m = Manifest::parse(
            "id = \"mock\"\nlibrary = \"runanywhere_mock\"\napi_version = 1\nformats = [\"mock\"]\npriority = 3\n[options]\nfault = \"x\"\nn = 2\n",
            Path::new("/opt/ra/plugins/mock.toml"),
        )
        .unwrap();
        assert_eq!(m.priority, 3);
        assert_eq!(m.display_name(), "mock");
        assert_eq!(
            m.option_pairs(),
            vec![("fault".into(), "x".into()), ("n".into(), "2".into())]
        );
        if cfg!(target_os = "linux") {
            assert_eq!(
                m.library_path(),
                Path::new("/opt/ra/plugins/librunanywhere_mock.so")
            );
        }
    }

    #[test]
    fn rejects_missing_fields_unknown_keys_and_bad_ids() {
        let p = Path::new("x.toml");
        for text in [
            "id = \"a\"\napi_version = 1\nformats = [\"gguf\"]\n",
            "id = \"a\"\nlibrary = \"l\"\napi_version = 1\nformats = [\"gguf\"]\nbogus = 1\n",
            "id = \"A b\"\nlibrary = \"l\"\napi_version = 1\nformats = [\"gguf\"]\n",
            "id = \"a\"\nlibrary = \"l\"\napi_version = 1\nformats = []\n",
            "this is not toml",
        ] {
            assert!(
                matches!(Manifest::parse(text, p), Err(ManifestError::Invalid { .. })),
                "{text}"
            );
        }
    }
}
