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
//! isolation = "process"               # optional: run in a worker process ("inproc": in the host)
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

/// The keys a manifest may have. Others are ignored with a warning (a newer manifest
/// format must not make an older host refuse the plugin), except a key this close to a
/// known one, which is a typo and refused with the key it probably meant.
const KNOWN_KEYS: [&str; 8] = [
    "id",
    "name",
    "library",
    "api_version",
    "formats",
    "priority",
    "platforms",
    "isolation",
];

/// A parsed plugin manifest.
#[derive(Debug, Clone, Deserialize)]
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
    /// Where the engine runs (`inproc` or `process`); absent: the front end's default
    /// (the CLI in-process, a server in workers), unless a flag forces one.
    #[serde(default)]
    pub isolation: Option<crate::worker::Isolation>,
    /// Free-form options handed to the plugin's `init`.
    #[serde(default)]
    pub options: BTreeMap<String, toml::Value>,
    /// Where the manifest was read from (set by [`Manifest::from_file`]).
    #[serde(skip)]
    pub path: PathBuf,
    /// Keys this host does not know, which were ignored.
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
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

/// The top-level keys of `text` that are not manifest keys, with their line numbers.
/// (Text that is not TOML is left to the full parse, which says where.)
fn unknown_keys(text: &str) -> Result<Vec<(String, usize)>, ManifestError> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(Vec::new());
    };
    let mut unknown: Vec<(String, usize)> = table
        .keys()
        .filter(|k| k.as_str() != "options" && !KNOWN_KEYS.contains(&k.as_str()))
        .map(|k| {
            let line = text
                .lines()
                .position(|l| {
                    l.trim_start()
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                        || l.trim() == format!("[{k}]")
                })
                .map_or(0, |i| i + 1);
            (k.clone(), line)
        })
        .collect();
    unknown.sort_by_key(|(_, line)| *line);
    Ok(unknown)
}

/// The known key `key` is probably a typo of: the same apart from case or `-`/`_`, or
/// within two edits of it.
fn suggestion(key: &str) -> Option<&'static str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    KNOWN_KEYS
        .iter()
        .chain(std::iter::once(&"options"))
        .copied()
        .find(|known| norm(key) == norm(known) || edit_distance(key, known) <= 2)
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
        manifest.ignored_keys = unknown_keys(text)?
            .into_iter()
            .map(|(key, line)| match suggestion(&key) {
                Some(known) => Err(invalid(format!(
                    "line {line}: unknown key `{key}`; did you mean `{known}`?"
                ))),
                None => Ok(key),
            })
            .collect::<Result<_, _>>()?;
        for key in &manifest.ignored_keys {
            tracing::warn!(
                manifest = %path.display(),
                "unknown key `{key}` ignored (written for a newer runanywhere?)"
            );
        }
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
    fn unknown_keys_are_ignored_but_typos_of_known_ones_are_refused() {
        let p = Path::new("x.toml");
        let base = "id = \"a\"\nlibrary = \"l\"\napi_version = 1\nformats = [\"gguf\"]\n";
        let m = Manifest::parse(&format!("{base}gpu_backends = [\"cuda\"]\n"), p).unwrap();
        assert_eq!(m.ignored_keys, ["gpu_backends"]);
        for (typo, meant) in [
            ("priorty", "priority"),
            ("Platforms", "platforms"),
            ("api-version", "api_version"),
        ] {
            let text = format!("{base}{typo} = 1\n");
            let err = Manifest::parse(&text, p).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "line 5: unknown key `{typo}`; did you mean `{meant}`?"
                )),
                "{err}"
            );
        }
        assert_eq!(edit_distance("libary", "library"), 1);
        assert_eq!(suggestion("bogus"), None);
    }

    #[test]
    fn rejects_missing_fields_and_bad_ids() {
        let p = Path::new("x.toml");
        for text in [
            "id = \"a\"\napi_version = 1\nformats = [\"gguf\"]\n",
            "id = \"a\"\nlibary = \"l\"\napi_version = 1\nformats = [\"gguf\"]\n",
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
