//! What every handler shares: the runtime, the names it answers to, the generations in
//! flight and the counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use runanywhere::{GenerateRequest, KeepAlive, LoadOptions, LoadedModel, ModelKey, Runtime};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::jobs::{self, Job, Jobs, Limits};
use crate::metrics::Metrics;
use crate::names::{ModelNames, Target};

/// The handlers' shared state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    /// The runtime every request goes through.
    pub runtime: Arc<Runtime>,
    /// The settings.
    pub config: ServerConfig,
    /// The model names requests may use.
    pub names: ModelNames,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Generations admitted and not finished.
    pub jobs: Arc<Jobs>,
    /// Whether the start-up models are loaded (`/health`).
    pub ready: AtomicBool,
    /// Whether it listens on a loopback address only (then only loopback `Host` names
    /// are served: a DNS-rebinding page cannot reach it under its own name).
    pub loopback: AtomicBool,
    /// When the server started.
    pub started: SystemTime,
    /// The name each loaded model was asked for by, for listings (`/api/ps`).
    loaded_as: Mutex<HashMap<ModelKey, String>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Runs blocking runtime work (loading, resolving, tokenizing) off the async threads;
/// a panic in it becomes a 500.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("a blocking task failed: {e}");
        ApiError::internal(format!("the request's task failed: {e}"))
    })?
}

impl AppState {
    /// The state for `runtime` set up by `config`.
    pub fn new(runtime: Arc<Runtime>, config: ServerConfig) -> Self {
        let engines = runtime.manifests().into_iter().map(|m| m.id).collect();
        let names = ModelNames::new(&config.models, &config.aliases, engines);
        AppState(Arc::new(Shared {
            runtime,
            config,
            names,
            metrics: Arc::default(),
            jobs: Arc::default(),
            ready: AtomicBool::new(false),
            loopback: AtomicBool::new(false),
            started: SystemTime::now(),
            loaded_as: Mutex::default(),
        }))
    }

    /// Whether the start-up models are loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Resolves a request's `model` and loads it (or shares the loaded copy), with the
    /// server's load options changed by `tune` (a request's `num_ctx`, say).
    pub async fn load(
        &self,
        requested: &str,
        tune: impl FnOnce(&mut LoadOptions) + Send + 'static,
    ) -> Result<(Target, LoadedModel), ApiError> {
        let state = self.clone();
        let requested = requested.to_string();
        blocking(move || {
            let target = state.names.resolve(&state.runtime, &requested)?;
            let loaded = state.load_target(&target, tune)?;
            Ok((target, loaded))
        })
        .await
    }

    /// Loads a resolved `target` (blocking), remembering the name it was asked for so
    /// that `/api/ps` and `/v1/unload` know the loaded copy by it.
    pub fn load_target(
        &self,
        target: &Target,
        tune: impl FnOnce(&mut LoadOptions),
    ) -> Result<LoadedModel, ApiError> {
        let mut options = self.config.load.clone();
        options.engine = target.engine.clone().or(options.engine);
        tune(&mut options);
        let loaded = self.runtime.load_resolved(&target.resolved, &options)?;
        self.loaded_as
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(loaded.key().clone(), target.name.clone());
        Ok(loaded)
    }

    /// The name a loaded model was last asked for by.
    pub fn name_of(&self, key: &ModelKey) -> String {
        self.loaded_as
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.path.display().to_string())
    }

    /// Starts a generation (see [`jobs::start`]).
    pub fn generate(
        &self,
        model: LoadedModel,
        request: GenerateRequest,
        keep_alive: Option<KeepAlive>,
        logprobs: Option<u32>,
    ) -> Result<Job, ApiError> {
        let parallel = if model
            .model()
            .capabilities()
            .contains(runanywhere::Capabilities::PARALLEL_SEQUENCES)
        {
            self.config.parallel.max(1)
        } else {
            1
        };
        let limits = Limits {
            per_model: parallel + self.config.max_queue,
            timeout: self.config.request_timeout,
        };
        jobs::start(
            &self.jobs,
            &self.metrics,
            &limits,
            model,
            request,
            keep_alive,
            logprobs,
        )
    }

    /// Unix seconds now.
    pub fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
