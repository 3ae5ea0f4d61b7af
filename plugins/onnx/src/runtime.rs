//! Finding and loading ONNX Runtime's shared library, and the process-wide environment.
//!
//! The plugin is built with `ort`'s `load-dynamic` mode: nothing of ONNX Runtime is
//! linked at build time (`ort`'s default build downloads binaries from a host that is
//! not reachable everywhere), and the library is opened when the engine is initialised.
//! That keeps the build hermetic and lets a user swap in another ONNX Runtime build
//! without rebuilding, at the price of having to find the library at run time.
//!
//! # Where the library is looked for
//!
//! 1. `ORT_DYLIB_PATH`, when set: the library file itself (it must exist).
//! 2. Otherwise the newest `libonnxruntime.so*` (`.dylib`/`.dll` elsewhere) found in
//!    * the directory of this plugin's own library, or a `.ort/` directory in it or in any
//!      directory above it; in a checkout that is the repository's `.ort/`, filled by
//!      `scripts/fetch-onnxruntime.sh`, two levels above `target/<profile>/`;
//!    * failing that, a `.ort/` directory in the manifest's directory or above it.
//!
//! So `target/release/runanywhere` in the repository finds `.ort/` with no flags, and an
//! installed plugin finds a library placed next to it.
//!
//! # Failure is an error, never a crash
//!
//! `ort` panics when it has to find the library on its own and cannot, so the plugin
//! never lets it: the path is resolved (and checked to exist) here and handed to
//! [`ort::init_from`], which reports a library that cannot be opened or is too old as an
//! error. The plugin kit's `catch_unwind` is the backstop for anything else. Every error
//! says how to fix it (run `scripts/fetch-onnxruntime.sh` or set `ORT_DYLIB_PATH`); the
//! host then lists the engine as unavailable with that reason.
//!
//! # One environment per process
//!
//! ONNX Runtime allows one environment per process, and `ort` keeps the library loaded
//! once opened. The environment is created on the first successful initialisation and
//! shared by every engine object (one per manifest) and every model. ONNX Runtime's own
//! log messages are routed to `tracing` (warnings and worse).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::logging::LogLevel;
use runanywhere_plugin_api::locate;

use crate::error::{OnnxError, Result};

/// Environment variable naming the ONNX Runtime library file.
pub(crate) const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The ONNX Runtime version `scripts/fetch-onnxruntime.sh` installs.
pub(crate) const FETCHED_VERSION: &str = "1.31.1";

/// What to tell a user whose ONNX Runtime is missing or unusable.
fn fix_hint() -> String {
    format!(
        "run scripts/fetch-onnxruntime.sh in the RunAnywhere repository (it puts \
         libonnxruntime.so.{FETCHED_VERSION} into .ort/), or set {ORT_DYLIB_ENV} to an \
         ONNX Runtime 1.{}+ shared library",
        ort::MINOR_VERSION
    )
}

/// The loaded runtime: the environment every session is created in.
#[derive(Clone)]
pub(crate) struct Runtime {
    /// The process-wide environment.
    pub(crate) environment: Environment,
    /// The library file it was loaded from.
    pub(crate) library: PathBuf,
    /// ONNX Runtime's version string, e.g. `1.31.1`.
    pub(crate) version: String,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// The process-wide runtime, loading ONNX Runtime on first use. A failure is not cached:
/// a later call (e.g. after the library was fetched) tries again.
pub(crate) fn runtime(manifest_dir: Option<&Path>) -> Result<Runtime> {
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = slot.as_ref() {
        return Ok(runtime.clone());
    }
    let library = locate(manifest_dir)?;
    let builder = ort::init_from(&library).map_err(|e| load_error(&library, &e))?;
    let environment = builder
        .with_name("runanywhere-onnx")
        .with_telemetry(false)
        .with_logger(Arc::new(log_to_tracing))
        .build()
        .map_err(|e| {
            OnnxError::Runtime(format!(
                "ONNX Runtime at {} loaded, but its environment could not be created: {e}",
                library.display()
            ))
        })?;
    // The custom logger receives everything by default; keep warnings and worse.
    environment.set_log_level(LogLevel::Warning);
    let version = version_string(&library);
    tracing::debug!(library = %library.display(), %version, "ONNX Runtime loaded");
    let runtime = Runtime {
        environment,
        library,
        version,
    };
    *slot = Some(runtime.clone());
    Ok(runtime)
}

/// The version of the loaded library: from its file name (`libonnxruntime.so.1.31.1`),
/// else the commit in its build-info string (`git-commit-id=6af1a93`), else `unknown`.
fn version_string(library: &Path) -> String {
    let from_name = library
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(library_version)
        .filter(|v| !v.is_empty())
        .map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join("."));
    from_name
        .or_else(|| {
            ort::info()
                .split(',')
                .find_map(|part| part.trim().strip_prefix("git-commit-id="))
                .map(|commit| format!("git {commit}"))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Routes ONNX Runtime's log messages to `tracing`.
fn log_to_tracing(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose => tracing::trace!(category, id, location, "{message}"),
        LogLevel::Info => tracing::debug!(category, id, location, "{message}"),
        LogLevel::Warning => tracing::warn!(category, id, location, "{message}"),
        LogLevel::Error | LogLevel::Fatal => tracing::error!(category, id, location, "{message}"),
    }
}

/// The error for a library `ort` could not load.
fn load_error(library: &Path, e: &ort::LoadDynamicError) -> OnnxError {
    let detail = match e {
        ort::LoadDynamicError::BadVersion { version_str, .. } => format!(
            "ONNX Runtime at {} is version {version_str}, but this plugin needs 1.{} or newer",
            library.display(),
            ort::MINOR_VERSION
        ),
        ort::LoadDynamicError::MissingApi { .. } => format!(
            "{} is not an ONNX Runtime library (it does not export OrtGetApiBase)",
            library.display()
        ),
        other => format!(
            "cannot load ONNX Runtime from {}: {other}",
            library.display()
        ),
    };
    OnnxError::Runtime(format!("{detail}; {}", fix_hint()))
}

/// Resolves the library file; see the module docs for the rule.
pub(crate) fn locate(manifest_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(ORT_DYLIB_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if path.is_file() {
            return Ok(path);
        }
        return Err(OnnxError::Runtime(format!(
            "{ORT_DYLIB_ENV}={} does not name a file; point it at the ONNX Runtime shared \
             library (e.g. .ort/libonnxruntime.so.{FETCHED_VERSION}), or unset it and run \
             scripts/fetch-onnxruntime.sh",
            path.display()
        )));
    }
    let dirs = locate::search_dirs(locate::plugin_dir().as_deref(), manifest_dir, ".ort");
    if let Some(found) = dirs.iter().find_map(|dir| newest_library_in(dir)) {
        return Ok(found);
    }
    let searched = locate::describe(&dirs);
    Err(OnnxError::Runtime(format!(
        "ONNX Runtime's shared library was not found (searched {searched}); {}",
        fix_hint()
    )))
}

/// The ONNX Runtime library with the highest version in `dir`, if any.
pub(crate) fn newest_library_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let version = library_version(&name)?;
            entry.path().is_file().then_some((version, entry.path()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, path)| path)
}

/// The version numbers in an ONNX Runtime library file name (`libonnxruntime.so.1.31.1`
/// → `[1, 31, 1]`, `libonnxruntime.so` → `[]`), or `None` for any other file (provider
/// libraries, partial downloads).
pub(crate) fn library_version(name: &str) -> Option<Vec<u32>> {
    let stem = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let rest = name.strip_prefix(&stem)?;
    let suffix = std::env::consts::DLL_SUFFIX;
    // Linux: `.so` then `.1.31.1`; macOS: `.1.31.1` then `.dylib`; Windows: `.dll`.
    let numbers = if let Some(after) = rest.strip_prefix(suffix) {
        after
    } else {
        rest.strip_suffix(suffix)?
    };
    if numbers.is_empty() {
        return Some(Vec::new());
    }
    numbers
        .strip_prefix('.')?
        .split('.')
        .map(|part| part.parse::<u32>().ok())
        .collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn library_names_and_versions() {
        assert_eq!(
            library_version("libonnxruntime.so.1.31.1"),
            Some(vec![1, 31, 1])
        );
        assert_eq!(library_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(library_version("libonnxruntime.so.1.31.1.partial"), None);
        assert_eq!(library_version("libonnxruntime_providers_shared.so"), None);
        assert_eq!(library_version("libonnxruntime.so.x"), None);
        assert_eq!(library_version("other.so"), None);
    }

    #[test]
    fn the_newest_library_wins() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.31.1.partial",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            newest_library_in(dir.path()).unwrap(),
            dir.path().join("libonnxruntime.so.1.31.1")
        );
        assert_eq!(newest_library_in(&dir.path().join("missing")), None);
    }
}
