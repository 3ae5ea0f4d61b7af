//! [`Runtime`]: the one object a front end (the CLI, a server, a worker) holds.
//!
//! It owns the engines (discovered lazily: the first call that needs one loads the
//! plugins, so commands that only read the store or verify a file never open a plugin
//! library), the model store, the Hub client and the [`ModelManager`], and resolves
//! model references the same way for every front end.
//!
//! ```no_run
//! use runanywhere::{GenerateOptions, LoadOptions, Prompt, Runtime, RuntimeConfig, Turn};
//!
//! let runtime = Runtime::new(RuntimeConfig::default());
//! let model = runtime.load("stories260K.gguf", &LoadOptions::default(), &mut runanywhere::store::NoProgress)?;
//! let options = GenerateOptions::greedy();
//! let request = options.request(Prompt::Text("Once upon a time".into()), options.seed_or_random());
//! let stats = model.generate(request, &Turn::default(), |_, piece| {
//!     eprint!("{piece}");
//!     runanywhere::SinkControl::Continue
//! })?;
//! eprintln!("\n{} tokens", stats.generated_tokens);
//! # Ok::<(), runanywhere::Error>(())
//! ```

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use crate::error::Error;
use crate::manager::{LoadedModel, ManagerConfig, ModelKey, ModelManager};
use crate::manifest::Manifest;
use crate::memory;
use crate::options::LoadOptions;
use crate::registry::{search_dirs, Registry};
use crate::store::{Catalog, HubClient, ModelEntry, PullOptions, PullProgress, PullSpec, Store};

/// How a [`Runtime`] is set up. `Default` reads the environment: plugin directories from
/// `RUNANYWHERE_PLUGIN_PATH` and the defaults, the store at `RUNANYWHERE_HOME`, the Hub
/// at `HF_ENDPOINT` with `HF_TOKEN`.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Plugin directories searched before the environment's and the defaults.
    pub plugin_dirs: Vec<PathBuf>,
    /// The model store's directory (`None` = `RUNANYWHERE_HOME` or the default).
    pub store_home: Option<PathBuf>,
    /// The Hub client (`None` = from the environment).
    pub hub: Option<HubClient>,
    /// The model manager's budget and keep-alive.
    pub models: ManagerConfig,
    /// Which engines run in worker processes, and how.
    pub workers: crate::worker::WorkerConfig,
}

/// A model reference made concrete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The file or folder to load (or the reference as given, when it names nothing the
    /// runtime knows: `mock`, or a path the engine will report missing).
    pub path: PathBuf,
    /// The store's separate tokenizer for it, if it has one.
    pub tokenizer: Option<PathBuf>,
    /// The store entry, when the model is in the store.
    pub entry: Option<ModelEntry>,
}

impl ResolvedModel {
    /// The store's copy of `entry` (and its separate tokenizer, if it has one).
    pub fn from_store(store: &Store, entry: ModelEntry) -> Self {
        let resolved = ResolvedModel {
            path: store.model_path(&entry),
            tokenizer: store.tokenizer_path(&entry),
            entry: Some(entry),
        };
        tracing::debug!(path = %resolved.path.display(), "model from the store");
        resolved
    }

    fn as_given(reference: &str) -> Self {
        ResolvedModel {
            path: PathBuf::from(reference),
            tokenizer: None,
            entry: None,
        }
    }
}

/// The runtime: engines, store, Hub and loaded models.
#[derive(Debug)]
pub struct Runtime {
    config: RuntimeConfig,
    engines: OnceLock<Registry>,
    models: ModelManager,
}

impl Runtime {
    /// A runtime set up by `config`. Nothing is loaded yet.
    pub fn new(config: RuntimeConfig) -> Self {
        let models = ModelManager::new(config.models);
        Runtime {
            config,
            engines: OnceLock::new(),
            models,
        }
    }

    /// How it was set up.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The plugin directories, in search order.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        search_dirs(&self.config.plugin_dirs)
    }

    /// The engines, discovered (plugin libraries opened and initialised) on first use.
    pub fn engines(&self) -> &Registry {
        self.engines.get_or_init(|| {
            Registry::discover_with(&self.plugin_dirs(), self.config.workers.clone())
        })
    }

    /// Whether [`Runtime::engines`] has run (a plugin library may have been opened).
    pub fn engines_discovered(&self) -> bool {
        self.engines.get().is_some()
    }

    /// The plugin manifests, read without opening any library (first one of an id
    /// wins), for listings that only need what engines claim to read.
    pub fn manifests(&self) -> Vec<Manifest> {
        Registry::read_manifests(&self.plugin_dirs())
    }

    /// The manifests claiming `format`, highest priority first (the first discovered
    /// wins a tie, as in routing).
    pub fn readers(&self, format: crate::format::ModelFormat) -> Vec<Manifest> {
        let mut readers: Vec<Manifest> = self
            .manifests()
            .into_iter()
            .filter(|m| m.supports_this_platform() && m.formats.iter().any(|f| f == format.name()))
            .collect();
        readers.sort_by_key(|m| std::cmp::Reverse(m.priority));
        readers
    }

    /// The model store.
    pub fn store(&self) -> Result<Store, Error> {
        match &self.config.store_home {
            Some(home) => Ok(Store::new(home)),
            None => Ok(Store::from_env()?),
        }
    }

    /// The Hub client.
    pub fn hub(&self) -> HubClient {
        self.config.hub.clone().unwrap_or_else(HubClient::from_env)
    }

    /// The loaded models.
    pub fn models(&self) -> &ModelManager {
        &self.models
    }

    /// Resolves a model reference without downloading: an existing path (with its store
    /// entry when it lies inside the store), or a store id. Anything else is
    /// [`StoreError::UnknownModel`](crate::store::StoreError::UnknownModel).
    pub fn locate(&self, reference: &str) -> Result<ResolvedModel, Error> {
        let path = PathBuf::from(reference);
        let store = self.store();
        // A dangling link or a link loop is a path too: the caller reports what is wrong
        // with it (ELOOP) rather than looking it up as a store id.
        if std::fs::symlink_metadata(&path).is_ok() {
            let entry = store
                .ok()
                .and_then(|s| s.entry_for_path(&path).ok().flatten());
            return Ok(ResolvedModel {
                path,
                tokenizer: None,
                entry,
            });
        }
        let store = store?;
        match store.get(reference)? {
            Some(entry) => Ok(ResolvedModel::from_store(&store, entry)),
            None => Err(Error::Store(crate::store::StoreError::UnknownModel {
                id: reference.to_string(),
                home: store.home().to_path_buf(),
            })),
        }
    }

    /// Resolves a model reference for loading: an existing path is used as it is; a
    /// store id names the store's copy; a catalog id or `hf.co/...` reference not yet in
    /// the store is pulled first (the first run of a new user), reporting to
    /// `progress`; anything else is passed on unchanged (`mock`, or a path the engine
    /// will report missing). A store that cannot be opened is not an error here: the
    /// reference is then taken as a path.
    pub fn resolve(
        &self,
        reference: &str,
        progress: &mut dyn PullProgress,
    ) -> Result<ResolvedModel, Error> {
        if std::fs::symlink_metadata(reference).is_ok() {
            return Ok(ResolvedModel::as_given(reference));
        }
        let store = match self.store() {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!("cannot open the model store: {e}");
                return Ok(ResolvedModel::as_given(reference));
            }
        };
        match store.get(reference) {
            Ok(Some(entry)) => return Ok(ResolvedModel::from_store(&store, entry)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("cannot read the model store: {e}");
                return Ok(ResolvedModel::as_given(reference));
            }
        }
        let catalog = Catalog::builtin().map_err(crate::store::StoreError::from)?;
        let pullable = catalog.get(reference).is_some() || reference.starts_with("hf.co/");
        if !pullable {
            return Ok(ResolvedModel::as_given(reference));
        }
        progress.note(&format!(
            "{reference} is not in the store yet: pulling it{}",
            if catalog.get(reference).is_some() {
                " from the catalog"
            } else {
                ""
            }
        ));
        let spec = PullSpec::parse(reference, &catalog)?;
        let outcome = store.pull(
            &spec,
            &self.hub(),
            &PullOptions::default(),
            self.engines(),
            progress,
        )?;
        Ok(ResolvedModel::from_store(&store, outcome.entry().clone()))
    }

    /// Resolves `reference` and loads it with `options` through the [`ModelManager`]
    /// (sharing an already loaded model with the same key), checking the memory budget
    /// unless `options.force`.
    pub fn load(
        &self,
        reference: &str,
        options: &LoadOptions,
        progress: &mut dyn PullProgress,
    ) -> Result<LoadedModel, Error> {
        let resolved = self.resolve(reference, progress)?;
        self.load_resolved(&resolved, options)
    }

    /// [`Runtime::load`] for a model already resolved.
    pub fn load_resolved(
        &self,
        resolved: &ResolvedModel,
        options: &LoadOptions,
    ) -> Result<LoadedModel, Error> {
        let path = resolved.path.as_path();
        let engine = self.engines().select(path, options.engine.as_deref())?;
        let mut options = options.clone();
        if options.tokenizer.is_none() {
            options.tokenizer = resolved.tokenizer.clone();
        }
        let key = ModelKey::new(path.to_path_buf(), engine.id(), &options);
        // A model already loaded is shared as it is: no need to re-read its file for a
        // memory estimate on every request.
        if let Some(loaded) = self.models.get(&key) {
            return Ok(loaded);
        }
        let estimate = if options.vocab_only {
            None
        } else {
            // Parallel sequences each get a whole context's KV cache.
            memory::estimate_file(path, options.context_length).map(|mut e| {
                e.kv_cache = e
                    .kv_cache
                    .saturating_mul(u64::from(options.parallel.max(1)));
                e
            })
        };
        tracing::info!(engine = engine.id(), model = %path.display(), "loading model");
        self.models.get_or_load(&key, estimate, options.force, || {
            let start = Instant::now();
            let model = engine.load_model(options.request(path, None))?;
            Ok((model, start.elapsed().as_secs_f64() * 1000.0))
        })
    }
}
