//! Safe handles on the engines: [`Engine`] and [`Model`].
//!
//! Each has two implementations behind one interface: **in-process**, owning the
//! plugin's abi_stable trait objects and converting between the ABI's types and plain
//! Rust, and **worker**, talking to the same plugin in a child process
//! ([`crate::worker`]). Callers see the same calls, results and errors from both (a
//! worker adds one: [`Error::EngineCrashed`]).
//!
//! In-process, the token sink the host passes into `generate` catches panics of the
//! caller's closure (an unwind must not cross the `extern "C"` boundary) and re-raises
//! them after the plugin has returned.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr},
};
use runanywhere_plugin_api::abi::{TokenSink, TokenSink_TO};
use runanywhere_plugin_api::ext::{
    EmbedRequest, ExtensionsV1, LogprobSink, LogprobSink_TO, Pooling, TokenLogprob,
    MODEL_HANDLE_KEY,
};
use runanywhere_plugin_api::{
    Capabilities, EngineBox, EngineError, EngineInfo, GenerateRequest, GenerationStats,
    LoadRequest, ModelBox, ModelInfo, Prompt, SinkControl,
};

use crate::cancel::CancelToken;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::worker::client::{CallError, RemoteModel, WorkerEngine};
use crate::worker::{Health, Isolation};

/// A loaded, initialised engine plugin.
pub struct Engine {
    pub(crate) manifest: Manifest,
    pub(crate) info: EngineInfo,
    pub(crate) library: PathBuf,
    pub(crate) backend: EngineBackend,
    /// How long opening and initialising it took (with a worker: starting that), ms.
    pub(crate) start_ms: f64,
}

/// Where an engine runs.
pub(crate) enum EngineBackend {
    /// In this process.
    InProcess {
        handle: EngineBox,
        /// The plugin's extension calls, if it has them ([`runanywhere_plugin_api::ext`]).
        extensions: Option<&'static ExtensionsV1>,
    },
    /// In worker processes.
    Worker(WorkerEngine),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("id", &self.manifest.id)
            .field("library", &self.library)
            .finish()
    }
}

impl Engine {
    /// The engine id (from the manifest).
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    /// What the engine says about itself.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// The manifest it was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The library file.
    pub fn library(&self) -> &std::path::Path {
        &self.library
    }

    /// How long it took to start, in milliseconds: opening and initialising the plugin
    /// (for a worker, starting the process too).
    pub fn start_ms(&self) -> f64 {
        self.start_ms
    }

    /// Where the engine runs.
    pub fn isolation(&self) -> Isolation {
        match self.backend {
            EngineBackend::InProcess { .. } => Isolation::InProcess,
            EngineBackend::Worker(_) => Isolation::Process,
        }
    }

    /// How its workers have been doing (`None` in-process, where a crash ends the host).
    pub fn health(&self) -> Option<Health> {
        match &self.backend {
            EngineBackend::InProcess { .. } => None,
            EngineBackend::Worker(w) => Some(w.health()),
        }
    }

    /// Whether the manifest says the engine reads `format`.
    pub fn reads(&self, format: &str) -> bool {
        self.manifest.formats.iter().any(|f| f == format)
    }

    /// Loads a model. A thread count above the machine's logical CPUs is lowered to
    /// that count (with a warning): CPU engines gain nothing from more, and llama.cpp's
    /// busy-waiting workers slow down by orders of magnitude when they outnumber the
    /// cores.
    pub fn load_model(&self, mut request: LoadRequest) -> Result<Model, Error> {
        let cpus = logical_cpus();
        if request.threads > cpus {
            tracing::warn!(
                "{} threads requested, but this machine has {cpus} logical CPUs; using {cpus}",
                request.threads
            );
            request.threads = cpus;
        }
        let engine = self.id().to_string();
        match &self.backend {
            EngineBackend::InProcess { handle, extensions } => {
                let handle = into_result(handle.load_model(request))
                    .map_err(|e| wrap(&engine, CallError::Engine(e)))?;
                let info = handle.info();
                let ext_handle = runanywhere_plugin_api::abi::lookup(
                    info.extensions.as_slice(),
                    MODEL_HANDLE_KEY,
                )
                .and_then(|h| h.parse().ok());
                Ok(Model {
                    engine,
                    info,
                    backend: ModelBackend::InProcess {
                        handle,
                        extensions: extensions.zip(ext_handle),
                    },
                })
            }
            EngineBackend::Worker(worker) => {
                let (remote, info) = worker.load_model(&request).map_err(|e| wrap(&engine, e))?;
                Ok(Model {
                    engine,
                    info,
                    backend: ModelBackend::Worker(remote),
                })
            }
        }
    }
}

/// The runtime error for a failed call of engine `engine`.
fn wrap(engine: &str, error: CallError) -> Error {
    match error {
        CallError::Engine(error) => Error::Engine {
            engine: engine.to_string(),
            error,
        },
        CallError::Crashed(crash) => Error::EngineCrashed {
            engine: engine.to_string(),
            crash,
        },
        CallError::Backoff(reason) => Error::EngineUnavailable {
            id: engine.to_string(),
            reason,
        },
    }
}

/// A loaded model. Dropping it unloads the model in its engine.
pub struct Model {
    engine: String,
    info: ModelInfo,
    backend: ModelBackend,
}

/// Where a model lives.
enum ModelBackend {
    InProcess {
        handle: ModelBox,
        /// The plugin's extension calls and this model's handle for them.
        extensions: Option<(&'static ExtensionsV1, u64)>,
    },
    Worker(RemoteModel),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("engine", &self.engine)
            .field("architecture", &self.info.architecture)
            .finish()
    }
}

impl Model {
    /// The id of the engine that loaded it.
    pub fn engine_id(&self) -> &str {
        &self.engine
    }

    /// Facts about the model (read once at load).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Whether the model can still be used: always in-process; in a worker, until the
    /// worker dies (the model manager then loads it again in a new one).
    pub fn is_alive(&self) -> bool {
        match &self.backend {
            ModelBackend::InProcess { .. } => true,
            ModelBackend::Worker(remote) => remote.is_alive(),
        }
    }

    /// The process id of the worker holding the model (`None` in-process).
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.backend {
            ModelBackend::InProcess { .. } => None,
            ModelBackend::Worker(remote) => Some(remote.pid()),
        }
    }

    /// Whether the plugin has the extension calls (log-probabilities, embeddings).
    pub(crate) fn has_extensions(&self) -> bool {
        match &self.backend {
            ModelBackend::InProcess { extensions, .. } => extensions.is_some(),
            ModelBackend::Worker(remote) => remote.extensions,
        }
    }

    /// What this model can do: what the plugin reports with the model, or (for plugins
    /// built before models reported it) what its facts show.
    pub fn capabilities(&self) -> Capabilities {
        use runanywhere_plugin_api::abi::{lookup, MODEL_CAPABILITIES_KEY};
        match lookup(self.info.extensions.as_slice(), MODEL_CAPABILITIES_KEY) {
            Some(names) => Capabilities::from_names(names),
            None if self.info.chat_template.is_some() => Capabilities::CHAT_TEMPLATE,
            None => Capabilities::default(),
        }
    }

    /// Text → token ids.
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, Error> {
        match &self.backend {
            ModelBackend::InProcess { handle, .. } => {
                into_result(handle.tokenize(RStr::from(text), add_special, parse_special))
                    .map(|ids| ids.into_vec())
                    .map_err(CallError::Engine)
            }
            ModelBackend::Worker(remote) => remote.tokenize(text, add_special, parse_special),
        }
        .map_err(|e| self.wrap(e))
    }

    /// Token ids → text.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, Error> {
        match &self.backend {
            ModelBackend::InProcess { handle, .. } => into_result(handle.detokenize(ids.into()))
                .map(|s| s.into_string())
                .map_err(CallError::Engine),
            ModelBackend::Worker(remote) => remote.detokenize(ids),
        }
        .map_err(|e| self.wrap(e))
    }

    /// The raw bytes of one token.
    pub fn token_piece(&self, id: u32) -> Result<Vec<u8>, Error> {
        match &self.backend {
            ModelBackend::InProcess { handle, .. } => into_result(handle.token_piece(id))
                .map(|b| b.into_vec())
                .map_err(CallError::Engine),
            ModelBackend::Worker(remote) => remote.token_piece(id),
        }
        .map_err(|e| self.wrap(e))
    }

    /// Generates, calling `on_token(id, piece)` once per token; return
    /// [`SinkControl::Stop`] to cancel. A panic in `on_token` stops the generation and
    /// is re-raised here once the engine has returned.
    pub fn generate(
        &self,
        request: GenerateRequest,
        on_token: impl FnMut(u32, &str) -> SinkControl,
    ) -> Result<GenerationStats, Error> {
        self.generate_inner(request, None, on_token)
    }

    /// [`Model::generate`]; in a worker, `cancel` is watched while no token comes (the
    /// in-process path hands it to the plugin's probe instead).
    fn generate_inner(
        &self,
        request: GenerateRequest,
        cancel: Option<&CancelToken>,
        mut on_token: impl FnMut(u32, &str) -> SinkControl,
    ) -> Result<GenerationStats, Error> {
        let handle = match &self.backend {
            ModelBackend::InProcess { handle, .. } => handle,
            ModelBackend::Worker(remote) => {
                return remote
                    .generate(&request, None, cancel, &mut |t| on_token(t.id, &t.piece))
                    .map_err(|e| self.wrap(e))
            }
        };
        let mut sink = HostSink {
            on_token,
            panic: None,
        };
        let result = {
            let sink_ref = TokenSink_TO::from_ptr(&mut sink, TD_Opaque);
            handle.generate(request, sink_ref)
        };
        if let Some(payload) = sink.panic.take() {
            resume_unwind(payload);
        }
        into_result(result).map_err(|e| self.wrap(CallError::Engine(e)))
    }

    /// [`Model::generate`] that also stops (with [`StopReason::Cancelled`]) as soon as
    /// `cancel` is set: between two tokens, and (in plugins that poll the host's cancel
    /// probe, as the kit's loops do) between two prefill chunks.
    ///
    /// [`StopReason::Cancelled`]: runanywhere_plugin_api::StopReason::Cancelled
    pub fn generate_cancellable(
        &self,
        mut request: GenerateRequest,
        cancel: &CancelToken,
        mut on_token: impl FnMut(u32, &str) -> SinkControl,
    ) -> Result<GenerationStats, Error> {
        // The plugin can ask about this id between prefill chunks (runanywhere_plugin_api
        // ::cancel); the registration ends with the call.
        let _registered = match self.backend {
            ModelBackend::InProcess { .. } => Some(InFlight::attach(cancel, &mut request)),
            ModelBackend::Worker(_) => None,
        };
        self.generate_inner(request, Some(cancel), |id, piece| {
            match on_token(id, piece) {
                SinkControl::Continue if cancel.is_cancelled() => SinkControl::Stop,
                control => control,
            }
        })
    }

    /// Generates like [`Model::generate_cancellable`] (`cancel` optional), giving
    /// `on_token` each token with its log-probability and the `top` most likely
    /// alternatives ([`ScoredToken`]). A model whose plugin predates these calls, or whose
    /// engine does not report log-probabilities, is an `Unsupported` error.
    pub fn generate_with_logprobs(
        &self,
        mut request: GenerateRequest,
        top: u32,
        cancel: Option<&CancelToken>,
        mut on_token: impl FnMut(&ScoredToken<'_>) -> SinkControl,
    ) -> Result<GenerationStats, Error> {
        self.extension(
            Capabilities::LOGPROBS,
            "report token log-probabilities",
            "the engine computes them for no model yet",
        )?;
        let mut on_token = |t: &ScoredToken<'_>| match on_token(t) {
            SinkControl::Continue if cancel.is_some_and(CancelToken::is_cancelled) => {
                SinkControl::Stop
            }
            control => control,
        };
        let (table, handle) = match &self.backend {
            ModelBackend::InProcess { extensions, .. } => {
                extensions.ok_or_else(|| self.unsupported("use extension calls", NO_EXTENSIONS))?
            }
            ModelBackend::Worker(remote) => {
                return remote
                    .generate(&request, Some(top), cancel, &mut |t| {
                        let alternatives = t.top();
                        on_token(&ScoredToken {
                            id: t.id,
                            piece: &t.piece,
                            logprob: t.logprob(),
                            top: &alternatives,
                        })
                    })
                    .map_err(|e| self.wrap(e))
            }
        };
        let _registered = cancel.map(|c| InFlight::attach(c, &mut request));
        let mut sink = HostLogprobSink {
            on_token,
            panic: None,
        };
        let result = {
            let sink_ref = LogprobSink_TO::from_ptr(&mut sink, TD_Opaque);
            (table.generate_with_logprobs)(handle, request, top, sink_ref)
        };
        if let Some(payload) = sink.panic.take() {
            resume_unwind(payload);
        }
        into_result(result).map_err(|e| self.wrap(CallError::Engine(e)))
    }

    /// One vector per input, pooled as `pooling` says (unit length with `normalize`).
    /// A model whose plugin predates the extension calls, or whose engine does not embed,
    /// is an `Unsupported` error.
    pub fn embed(
        &self,
        inputs: &[Prompt],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, Error> {
        self.extension(
            Capabilities::EMBEDDINGS,
            "compute embeddings",
            "not for this model",
        )?;
        let (table, handle) = match &self.backend {
            ModelBackend::InProcess { extensions, .. } => {
                extensions.ok_or_else(|| self.unsupported("use extension calls", NO_EXTENSIONS))?
            }
            ModelBackend::Worker(remote) => {
                return remote
                    .embed(inputs, pooling.code(), normalize)
                    .map_err(|e| self.wrap(e))
            }
        };
        let request = EmbedRequest {
            inputs: inputs.to_vec().into(),
            pooling: pooling.code(),
            normalize,
            extensions: Default::default(),
        };
        into_result((table.embed)(handle, request))
            .map(|vs| vs.into_iter().map(|v| v.into_vec()).collect())
            .map_err(|e| self.wrap(CallError::Engine(e)))
    }

    /// Ok when the plugin has the extension calls and the model has `capability`;
    /// otherwise an `Unsupported` error saying the engine does not `doing`, and why
    /// (`why_not` when the plugin has the calls but not this capability).
    fn extension(&self, capability: Capabilities, doing: &str, why_not: &str) -> Result<(), Error> {
        let why = match self.has_extensions() {
            true if self.capabilities().contains(capability) => return Ok(()),
            true => why_not,
            false => NO_EXTENSIONS,
        };
        Err(self.unsupported(doing, why))
    }

    fn unsupported(&self, doing: &str, why: &str) -> Error {
        self.wrap(CallError::Engine(EngineError::new(
            runanywhere_plugin_api::ErrorKind::Unsupported,
            format!("engine `{}` does not {doing}: {why}", self.engine),
        )))
    }

    fn wrap(&self, error: CallError) -> Error {
        wrap(&self.engine, error)
    }
}

/// Why a model has no extension calls.
const NO_EXTENSIONS: &str = "its plugin has no extension calls this host can use (built before \
    them, or against another runanywhere-plugin-api: rebuild it)";

/// Cancellable generations in flight, by the id their requests carry.
static IN_FLIGHT: std::sync::Mutex<Vec<(u64, CancelToken)>> = std::sync::Mutex::new(Vec::new());

/// One registration in [`IN_FLIGHT`], removed when dropped.
struct InFlight {
    id: u64,
}

impl InFlight {
    /// Registers `cancel` and names it in `request`'s extensions, where the plugin finds
    /// the id to ask the probe about (runanywhere_plugin_api::cancel); the registration
    /// ends when the result is dropped.
    fn attach(cancel: &CancelToken, request: &mut GenerateRequest) -> InFlight {
        let registered = InFlight::register(cancel);
        request
            .extensions
            .push(runanywhere_plugin_api::KeyValue::new(
                runanywhere_plugin_api::cancel::CANCEL_EXTENSION_KEY,
                registered.id.to_string(),
            ));
        registered
    }

    fn register(cancel: &CancelToken) -> InFlight {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id, cancel.clone()));
        InFlight { id }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(id, _)| *id != self.id);
    }
}

/// The probe plugins call (through `runanywhere_plugin_api::cancel`): whether the
/// generation with `id` was cancelled. Never unwinds.
pub(crate) extern "C" fn cancel_probe(id: u64) -> bool {
    std::panic::catch_unwind(|| {
        IN_FLIGHT
            .lock()
            .map(|list| {
                list.iter().any(|(i, token)| {
                    *i == id && {
                        token.note_asked();
                        token.is_cancelled()
                    }
                })
            })
            .unwrap_or(false)
    })
    .unwrap_or(false)
}

struct HostSink<F> {
    on_token: F,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<F: FnMut(u32, &str) -> SinkControl> TokenSink for HostSink<F> {
    fn on_token(&mut self, id: u32, piece: RStr<'_>) -> SinkControl {
        let on_token = &mut self.on_token;
        catching(&mut self.panic, || on_token(id, piece.as_str()))
    }
}

/// Runs the caller's token callback; a panic in it stops the generation and is kept in
/// `panic` to be re-raised once the engine has returned (an unwind must not cross the
/// `extern "C"` boundary). After one panic, every later token stops too.
fn catching(
    panic: &mut Option<Box<dyn std::any::Any + Send>>,
    f: impl FnOnce() -> SinkControl,
) -> SinkControl {
    if panic.is_some() {
        return SinkControl::Stop;
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(control) => control,
        Err(payload) => {
            *panic = Some(payload);
            SinkControl::Stop
        }
    }
}

/// One generated token with its log-probability, as
/// [`Model::generate_with_logprobs`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct ScoredToken<'a> {
    /// The token id.
    pub id: u32,
    /// Its text piece.
    pub piece: &'a str,
    /// `ln p(id)` under the model (NaN where the engine gave none for this token).
    pub logprob: f32,
    /// The most likely tokens at its position, best first.
    pub top: &'a [TokenLogprob],
}

/// [`HostSink`] for tokens with log-probabilities.
struct HostLogprobSink<F> {
    on_token: F,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<F: FnMut(&ScoredToken<'_>) -> SinkControl> LogprobSink for HostLogprobSink<F> {
    fn on_token(
        &mut self,
        id: u32,
        piece: RStr<'_>,
        logprob: f32,
        top: abi_stable::std_types::RSlice<'_, TokenLogprob>,
    ) -> SinkControl {
        let token = ScoredToken {
            id,
            piece: piece.as_str(),
            logprob,
            top: top.as_slice(),
        };
        let on_token = &mut self.on_token;
        catching(&mut self.panic, || on_token(&token))
    }
}

/// The number of logical CPUs this process may use (at least 1).
pub fn logical_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

fn into_result<T>(r: RResult<T, EngineError>) -> Result<T, EngineError> {
    r.into_result()
}
