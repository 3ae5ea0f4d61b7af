//! Discovery of engine plugins, the unavailable ledger, and routing models to engines.
//!
//! Discovery never fails as a whole: every manifest either yields an [`Engine`] or an
//! [`Unavailable`] entry saying why not, and the host goes on with the rest. The first
//! manifest of an id wins, so a `--plugins-dir` can override an installed plugin; later
//! ones with the same id are listed as unavailable ([`UnavailableKind::DuplicateId`],
//! naming the manifest that won) without their library being opened.

use std::path::{Path, PathBuf};

use abi_stable::std_types::RVec;
use runanywhere_plugin_api::abi::supports_api_version;
use runanywhere_plugin_api::{
    InitRequest, KeyValue, MIN_SUPPORTED_API_VERSION, PLUGIN_API_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineBackend};
use crate::error::{EngineChoice, EngineList, Error};
use crate::format::{self, ModelFormat};
use crate::loader::{self, LoadError};
use crate::manifest::{Manifest, ManifestError};
use crate::worker::client::WorkerEngine;
use crate::worker::{Isolation, WorkerConfig};

/// Environment variable with extra plugin directories (`:`-separated, like `PATH`).
pub const PLUGIN_PATH_ENV: &str = "RUNANYWHERE_PLUGIN_PATH";

/// Why a plugin is unavailable.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableKind {
    /// The manifest could not be read or parsed.
    InvalidManifest,
    /// The manifest's `platforms` excludes this OS.
    UnsupportedPlatform,
    /// The manifest or the library is for another plugin-API version.
    ApiVersionMismatch,
    /// The library file does not exist.
    LibraryMissing,
    /// The library exists but could not be opened.
    LibraryLoadFailed,
    /// The library is not a RunAnywhere plugin.
    NotAPlugin,
    /// abi_stable found a different type layout (built against another ABI).
    AbiMismatch,
    /// The plugin's `init` failed or panicked.
    InitFailed,
    /// The manifest claims formats the engine does not report.
    FormatMismatch,
    /// An earlier manifest (in search order) already provides this engine id.
    DuplicateId,
    /// The engine's worker process could not be started, or died while it opened and
    /// initialised the plugin.
    WorkerFailed,
}

/// A ledger entry: a plugin that could not be made available, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    /// The engine id (the manifest's, or its file stem when it has none).
    pub id: String,
    /// The manifest.
    pub manifest: PathBuf,
    /// The library, when the manifest named one.
    pub library: Option<PathBuf>,
    /// The kind of failure.
    pub kind: UnavailableKind,
    /// A human explanation with the fix.
    pub reason: String,
}

/// One engine as listings show it (`runanywhere engines`, a server's engine list):
/// available ones with what they report, unavailable ones with the ledger's kind and
/// reason.
#[derive(Debug, Clone, Serialize)]
pub struct EngineListing {
    /// The engine id.
    pub id: String,
    /// Its display name (available engines).
    pub name: Option<String>,
    /// Its version (available engines).
    pub version: Option<String>,
    /// The formats it reads.
    pub formats: Vec<String>,
    /// Its capability names.
    pub capabilities: Vec<&'static str>,
    /// Its routing priority (available engines).
    pub priority: Option<i32>,
    /// `ok`, `unhealthy` (its worker crashed; the reason says how) or `unavailable`.
    pub status: &'static str,
    /// Where it runs: `inproc` or `process` (available engines).
    pub isolation: Option<Isolation>,
    /// Why it is unavailable (unavailable engines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<UnavailableKind>,
    /// The ledger's reason, with the fix.
    pub reason: Option<String>,
    /// The library file.
    pub library: Option<PathBuf>,
    /// The manifest it came from.
    pub manifest: PathBuf,
}

/// The discovered engines and the ledger of those that failed.
#[derive(Debug, Default)]
pub struct Registry {
    engines: Vec<Engine>,
    unavailable: Vec<Unavailable>,
    workers: WorkerConfig,
}

/// The plugin directories to search, in order: `cli_dirs` (`--plugins-dir`), then
/// [`PLUGIN_PATH_ENV`], then the defaults: `plugins/` next to the executable and the
/// user's data directory (`~/.local/share/runanywhere/plugins` on Linux).
pub fn search_dirs(cli_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cli_dirs.to_vec();
    if let Some(paths) = std::env::var_os(PLUGIN_PATH_ENV) {
        dirs.extend(std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
    }
    dirs.extend(default_dirs());
    dirs
}

/// The default plugin directories.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("plugins"));
    }
    if let Some(data) = dirs::data_dir() {
        dirs.push(data.join("runanywhere").join("plugins"));
    }
    dirs
}

/// The `*.toml` files of the plugin directories, in search order (sorted within each).
fn manifest_paths(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::debug!(dir = %dir.display(), "plugin directory not readable; skipped");
            continue;
        };
        let mut manifests: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        manifests.sort();
        all.extend(manifests);
    }
    all
}

impl Registry {
    /// The valid manifests in `dirs`, the first of each id only, without opening any
    /// plugin library.
    pub fn read_manifests(dirs: &[PathBuf]) -> Vec<Manifest> {
        let mut found: Vec<Manifest> = Vec::new();
        for path in manifest_paths(dirs) {
            match Manifest::from_file(&path) {
                Ok(m) if !found.iter().any(|f| f.id == m.id) => found.push(m),
                Ok(_) => {}
                Err(e) => tracing::debug!("{e}"),
            }
        }
        found
    }

    /// Discovers plugins in `dirs` (in order; missing directories are skipped), every
    /// engine in-process.
    pub fn discover(dirs: &[PathBuf]) -> Registry {
        Registry::discover_with(dirs, WorkerConfig::default())
    }

    /// Discovers plugins in `dirs`, each engine isolated as `workers` says (those in
    /// workers are started, and their plugin opened there).
    pub fn discover_with(dirs: &[PathBuf], workers: WorkerConfig) -> Registry {
        let mut registry = Registry {
            workers,
            ..Registry::default()
        };
        for path in manifest_paths(dirs) {
            registry.add_manifest(&path);
        }
        registry
    }

    /// Loads one manifest (and its library) into the registry or the ledger.
    pub fn add_manifest(&mut self, path: &Path) {
        let manifest = match Manifest::from_file(path) {
            Ok(m) => m,
            Err(e) => {
                let reason = match &e {
                    ManifestError::Io { source, .. } => format!("cannot read manifest: {source}"),
                    ManifestError::Invalid { message, .. } => {
                        format!("invalid manifest: {message}")
                    }
                };
                let id = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.unavailable.push(Unavailable {
                    id,
                    manifest: path.to_path_buf(),
                    library: None,
                    kind: UnavailableKind::InvalidManifest,
                    reason,
                });
                return;
            }
        };
        if let Some(first) = self.manifest_of(&manifest.id) {
            tracing::info!(id = %manifest.id, manifest = %path.display(),
                "engine id already provided by an earlier plugin directory; skipped");
            self.unavailable.push(Unavailable {
                id: manifest.id.clone(),
                manifest: path.to_path_buf(),
                library: Some(manifest.library_path()),
                kind: UnavailableKind::DuplicateId,
                reason: format!(
                    "duplicate id of {} (found earlier in the search order, which wins)",
                    first.display()
                ),
            });
            return;
        }
        match load_engine(&manifest, &self.workers) {
            Ok(engine) => {
                tracing::debug!(id = %engine.id(), library = %engine.library.display(), "engine loaded");
                self.engines.push(engine);
            }
            Err((kind, reason)) => {
                tracing::debug!(id = %manifest.id, ?kind, %reason, "engine unavailable");
                self.unavailable.push(Unavailable {
                    id: manifest.id.clone(),
                    manifest: path.to_path_buf(),
                    library: Some({
                        let lib = manifest.library_path();
                        lib.canonicalize().unwrap_or(lib)
                    }),
                    kind,
                    reason,
                });
            }
        }
    }

    /// The manifest that first claimed `id`, if any did.
    fn manifest_of(&self, id: &str) -> Option<PathBuf> {
        self.engines
            .iter()
            .find(|e| e.id() == id)
            .map(|e| e.manifest.path.clone())
            .or_else(|| {
                self.unavailable
                    .iter()
                    .find(|u| u.id == id)
                    .map(|u| u.manifest.clone())
            })
    }

    /// The available engines, in discovery order.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// The ledger of plugins that failed to load.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Every engine found, available ones first (in discovery order), then the ledger.
    pub fn listing(&self) -> Vec<EngineListing> {
        let available = self.engines.iter().map(|e| {
            let problem = e.health().and_then(|h| h.problem());
            EngineListing {
                id: e.id().to_string(),
                name: Some(e.info.name.to_string()),
                version: Some(e.info.version.to_string()),
                formats: e.info.formats.iter().map(|f| f.to_string()).collect(),
                capabilities: e.info.capabilities.names(),
                priority: Some(e.manifest.priority),
                status: if problem.is_some() { "unhealthy" } else { "ok" },
                isolation: Some(e.isolation()),
                kind: None,
                reason: problem,
                library: Some(e.library.clone()),
                manifest: e.manifest.path.clone(),
            }
        });
        let unavailable = self.unavailable.iter().map(|u| EngineListing {
            id: u.id.clone(),
            name: None,
            version: None,
            formats: Vec::new(),
            capabilities: Vec::new(),
            priority: None,
            status: "unavailable",
            isolation: None,
            kind: Some(u.kind),
            reason: Some(u.reason.clone()),
            library: u.library.clone(),
            manifest: u.manifest.clone(),
        });
        available.chain(unavailable).collect()
    }

    /// The engine with `id`, if available.
    pub fn engine(&self, id: &str) -> Option<&Engine> {
        self.engines.iter().find(|e| e.id() == id)
    }

    /// Chooses the engine for a model: `engine_id` wins when given; otherwise the
    /// format is detected from the model's content and the highest-priority engine that
    /// reads it is chosen (the first discovered on a tie).
    pub fn select(&self, model: &Path, engine_id: Option<&str>) -> Result<&Engine, Error> {
        if let Some(id) = engine_id {
            if let Some(engine) = self.engine(id) {
                return Ok(engine);
            }
            if let Some(u) = self.unavailable.iter().find(|u| u.id == id) {
                return Err(Error::EngineUnavailable {
                    id: id.to_string(),
                    reason: u.reason.clone(),
                });
            }
            return Err(Error::UnknownEngine {
                id: id.to_string(),
                available: self.choices(),
            });
        }
        let format = format::detect(model)?;
        self.best_for(format)
            .ok_or_else(|| Error::NoEngineForFormat {
                format: format.name().to_string(),
                path: model.to_path_buf(),
                available: self.choices(),
            })
    }

    /// The highest-priority engine reading `format`.
    pub fn best_for(&self, format: ModelFormat) -> Option<&Engine> {
        let mut best: Option<&Engine> = None;
        for e in self.engines.iter().filter(|e| e.reads(format.name())) {
            if best.is_none_or(|b| e.manifest.priority > b.manifest.priority) {
                best = Some(e);
            }
        }
        best
    }

    /// The available engines that read `format`, highest priority first.
    pub fn engines_for(&self, format: ModelFormat) -> Vec<&Engine> {
        let mut engines: Vec<&Engine> = self
            .engines
            .iter()
            .filter(|e| e.reads(format.name()))
            .collect();
        // Stable: the first discovered wins a tie, as in `best_for`.
        engines.sort_by_key(|e| std::cmp::Reverse(e.manifest.priority));
        engines
    }

    /// The engines there are, unavailable ones with their reason (duplicates left
    /// out), for error messages.
    pub fn choices(&self) -> EngineList {
        let mut list: Vec<EngineChoice> = self
            .engines
            .iter()
            .map(|e| EngineChoice {
                id: e.id().to_string(),
                formats: e.manifest.formats.clone(),
                unavailable: None,
            })
            .collect();
        list.extend(
            self.unavailable
                .iter()
                .filter(|u| u.kind != UnavailableKind::DuplicateId)
                .map(|u| EngineChoice {
                    id: u.id.clone(),
                    formats: Vec::new(),
                    unavailable: Some(u.reason.clone()),
                }),
        );
        EngineList(list)
    }

    /// [`Registry::choices`] as text: `a (reads gguf); b (unavailable: ...)`.
    pub fn describe(&self) -> String {
        self.choices().to_string()
    }
}

/// The plugin-API versions this host loads, for messages: `v1`, or `v1 to v3`.
fn spoken() -> String {
    if MIN_SUPPORTED_API_VERSION == PLUGIN_API_VERSION {
        format!("v{PLUGIN_API_VERSION}")
    } else {
        format!("v{MIN_SUPPORTED_API_VERSION} to v{PLUGIN_API_VERSION}")
    }
}

/// Makes the engine of `manifest` available, isolated as `workers` says, or says why
/// it cannot be.
pub(crate) fn load_engine(
    manifest: &Manifest,
    workers: &WorkerConfig,
) -> Result<Engine, (UnavailableKind, String)> {
    let library = check_manifest(manifest)?;
    let started = std::time::Instant::now();
    let (info, backend) = match workers.isolation_of(manifest) {
        Isolation::InProcess => {
            let (handle, extensions) = open_and_init(manifest, &library)?;
            (
                handle.info(),
                EngineBackend::InProcess { handle, extensions },
            )
        }
        Isolation::Process => {
            let (worker, info) = WorkerEngine::start(manifest, workers)?;
            (info, EngineBackend::Worker(worker))
        }
    };
    check_formats(manifest, &info)?;
    Ok(Engine {
        manifest: manifest.clone(),
        info,
        library,
        backend,
        start_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// What can be checked without opening the library: platform, API version, the
/// library's existence. Returns the library's path.
fn check_manifest(manifest: &Manifest) -> Result<PathBuf, (UnavailableKind, String)> {
    use UnavailableKind as K;
    if !manifest.supports_this_platform() {
        return Err((
            K::UnsupportedPlatform,
            format!(
                "the plugin is for {} only; this is {}",
                manifest.platforms.as_deref().unwrap_or_default().join(", "),
                std::env::consts::OS
            ),
        ));
    }
    if !supports_api_version(manifest.api_version) {
        return Err((
            K::ApiVersionMismatch,
            format!(
                "the manifest declares plugin API v{}, this host speaks {}; rebuild the \
                 plugin against this runanywhere-plugin-api",
                manifest.api_version,
                spoken()
            ),
        ));
    }
    let library = manifest.library_path();
    let library = library.canonicalize().unwrap_or(library);
    if !library.is_file() {
        return Err((
            K::LibraryMissing,
            format!(
                "library {} not found; build it (cargo build --release) or fix `library` in {}",
                library.display(),
                manifest.path.display()
            ),
        ));
    }
    Ok(library)
}

/// Opens the plugin library in this process and initialises its engine for `manifest`.
fn open_and_init(
    manifest: &Manifest,
    library: &Path,
) -> Result<
    (
        runanywhere_plugin_api::EngineBox,
        Option<&'static runanywhere_plugin_api::ext::ExtensionsV1>,
    ),
    (UnavailableKind, String),
> {
    use UnavailableKind as K;
    let opened = loader::open(library).map_err(|e| match e {
        LoadError::Open(msg) => (K::LibraryLoadFailed, format!("cannot open library: {msg}")),
        LoadError::NotAPlugin(msg) => (K::NotAPlugin, msg),
        LoadError::ApiVersion(v) => (
            K::ApiVersionMismatch,
            format!(
                "the library was built for plugin API v{v}, this host speaks {}; rebuild the \
                 plugin against this runanywhere-plugin-api",
                spoken()
            ),
        ),
        LoadError::Abi(msg) => (
            K::AbiMismatch,
            format!(
                "ABI mismatch: {msg}; it was built against another runanywhere-plugin-api: \
                 rebuild it (details with -vv)"
            ),
        ),
    })?;
    let request = InitRequest {
        engine_id: manifest.id.as_str().into(),
        manifest_dir: manifest
            .path
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
            .into(),
        options: manifest
            .option_pairs()
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect::<RVec<_>>(),
        host_api_version: PLUGIN_API_VERSION,
    };
    let handle = (opened.module.init())(request)
        .into_result()
        .map_err(|e| (K::InitFailed, format!("init failed: {e}")))?;
    Ok((handle, opened.extensions))
}

/// The manifest's formats must all be ones the engine reports.
fn check_formats(
    manifest: &Manifest,
    info: &runanywhere_plugin_api::EngineInfo,
) -> Result<(), (UnavailableKind, String)> {
    let missing: Vec<&str> = manifest
        .formats
        .iter()
        .filter(|f| !info.formats.iter().any(|g| g.as_str() == f.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err((
            UnavailableKind::FormatMismatch,
            format!(
                "the manifest lists format(s) {} that the engine does not read (it reads {})",
                missing.join(", "),
                info.formats
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}
