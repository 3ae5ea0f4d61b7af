//! Writing a plugin without writing FFI.
//!
//! Implement [`Engine`] and [`Model`], then `runanywhere_plugin_api::export_plugin!(MyEngine);`.
//! The adapters here turn the plain traits into the ABI's trait objects and wrap every
//! call in `catch_unwind`: a panic in plugin code becomes an [`ErrorKind::Internal`]
//! error (or an empty answer where the method cannot fail) and never unwinds into the
//! host.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};

use crate::abi::{
    Capabilities, EngineApi, EngineApi_TO, EngineBox, EngineInfo, GenerateRequest, GenerationStats,
    InitRequest, LoadRequest, ModelApi, ModelApi_TO, ModelBox, ModelInfo, PluginMod, PluginModRef,
    SinkControl, SinkRef, PLUGIN_API_VERSION,
};
use crate::error::{EngineError, ErrorKind};
use crate::ext::{
    EmbedRequest, ExtensionsV1, ExtensionsV1Export, LogprobSinkRef, Pooling, TokenLogprob,
    MAX_TOP_LOGPROBS,
};

/// An engine: created once per manifest, loads models.
pub trait Engine: Send + Sync + Sized + 'static {
    /// The model type this engine loads.
    type Model: Model;

    /// Creates the engine. `request.options` holds the manifest's `[options]`.
    fn init(request: &InitRequest) -> Result<Self, EngineError>;

    /// Facts about the engine.
    fn info(&self) -> EngineInfo;

    /// Loads a model.
    fn load_model(&self, request: &LoadRequest) -> Result<Self::Model, EngineError>;
}

/// A loaded model. Dropped = unloaded. Must be usable from several threads; engines
/// whose framework state is not thread-safe keep it behind a lock.
pub trait Model: Send + Sync + 'static {
    /// Facts about the model.
    fn info(&self) -> ModelInfo;

    /// Text → token ids.
    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError>;

    /// Token ids → text.
    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError>;

    /// The raw bytes of one token; control tokens are rendered as their text (`<s>`).
    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError>;

    /// Generates, giving `sink` each token (see [`crate::decode::GenerationTracker`]).
    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn Sink,
    ) -> Result<GenerationStats, EngineError>;

    /// Whether `generate` gives a sink that asks ([`Sink::top_logprobs`]) each token's
    /// log-probability ([`Sink::scored_token`]). The kit's loop ([`crate::generate::run`])
    /// does; an engine with its own loop says so once it does too.
    fn logprobs(&self) -> bool {
        false
    }

    /// Whether [`Model::embed`] works for this model.
    fn embeddings(&self) -> bool {
        false
    }

    /// One vector per input (not normalized: the kit does that when asked). `pooling`
    /// is never [`Pooling::Unknown`]; [`crate::ext::pool`] does the pooling for engines
    /// that have token states.
    fn embed(
        &self,
        inputs: &[crate::abi::Prompt],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let _ = (inputs, pooling);
        Err(EngineError::new(
            ErrorKind::Unsupported,
            "this engine does not compute embeddings",
        ))
    }
}

/// Where a generation's tokens go: the host's token sink (through the ABI), or any
/// closure `FnMut(id, piece) -> SinkControl` (in an engine's own tests).
pub trait Sink {
    /// One generated token and its text piece.
    fn token(&mut self, id: u32, piece: &str) -> SinkControl;

    /// Whether the host asked to stop; polled where no token is emitted (between
    /// prefill chunks). Closures are never cancelled this way.
    fn cancelled(&self) -> bool {
        false
    }

    /// How many alternatives per token the caller wants with log-probabilities
    /// (`None`: none; then [`Sink::scored_token`] is never called).
    fn top_logprobs(&self) -> Option<usize> {
        None
    }

    /// A generated token with its log-probability and the most likely tokens at its
    /// position (best first), instead of [`Sink::token`] when [`Sink::top_logprobs`]
    /// asked for them.
    fn scored_token(
        &mut self,
        id: u32,
        piece: &str,
        logprob: f32,
        top: &[TokenLogprob],
    ) -> SinkControl {
        let _ = (logprob, top);
        self.token(id, piece)
    }
}

impl<F: FnMut(u32, &str) -> SinkControl> Sink for F {
    fn token(&mut self, id: u32, piece: &str) -> SinkControl {
        self(id, piece)
    }
}

/// The host's sink seen as a [`Sink`]; cancellation between tokens comes through the
/// host's probe for the request's cancel id (see [`crate::cancel`]).
struct HostSink<'a, 'b> {
    sink: &'a mut SinkRef<'b>,
    cancel_id: Option<u64>,
}

impl Sink for HostSink<'_, '_> {
    fn token(&mut self, id: u32, piece: &str) -> SinkControl {
        self.sink.on_token(id, RStr::from(piece))
    }

    fn cancelled(&self) -> bool {
        self.cancel_id.is_some_and(crate::cancel::is_cancelled)
    }
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by [`quiet_panic_hook`].
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Replaces the default panic hook *of this plugin* (each cdylib has its own copy of
/// std, so the host's hook is untouched) with one that only records where the panic
/// happened: the message and location then travel in the returned error instead of
/// being printed on the host's stderr.
fn quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
        }));
    });
}

/// Runs `f`, turning a panic into an `Internal` error that quotes the panic message and
/// where it happened.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    quiet_panic_hook();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let location = PANIC_LOCATION
                .with(|cell| cell.borrow_mut().take())
                .map(|l| format!(" (at {l})"))
                .unwrap_or_default();
            Err(EngineError::new(
                ErrorKind::Internal,
                format!(
                    "plugin panicked in {what}: {}{location}",
                    panic_message(&*payload)
                ),
            ))
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn to_abi<T, U>(result: Result<T, EngineError>, f: impl FnOnce(T) -> U) -> RResult<U, EngineError> {
    match result {
        Ok(v) => RResult::ROk(f(v)),
        Err(e) => RResult::RErr(e),
    }
}

struct EngineAdapter<E: Engine>(E);

impl<E: Engine> EngineApi for EngineAdapter<E> {
    fn info(&self) -> EngineInfo {
        match guard("info", || Ok(self.0.info())) {
            Ok(info) => info,
            Err(e) => EngineInfo {
                id: RString::from("?"),
                name: RString::from(e.message()),
                version: RString::new(),
                formats: RVec::new(),
                capabilities: Default::default(),
                extensions: RVec::new(),
            },
        }
    }

    fn load_model(&self, request: LoadRequest) -> RResult<ModelBox, EngineError> {
        // The model's facts are taken once, here: a panicking `info` fails the load with
        // the panic's message instead of turning into an empty default later.
        let loaded = guard("load_model", || self.0.load_model(&request)).and_then(|model| {
            let mut info = guard("model info", || Ok(model.info()))?;
            add_model_capabilities(&mut info, model.logprobs(), model.embeddings());
            Ok(ModelAdapter::register(model, info))
        });
        to_abi(loaded, |m| ModelApi_TO::from_value(m, TD_Opaque))
    }
}

/// Fills in [`MODEL_CAPABILITIES_KEY`] when the engine did not (what the kit can tell
/// from the model's facts: a chat template), and adds `logprobs` when the model
/// reports them.
fn add_model_capabilities(info: &mut ModelInfo, logprobs: bool, embeddings: bool) {
    use crate::abi::{KeyValue, MODEL_CAPABILITIES_KEY};
    let given = info
        .extensions
        .iter()
        .position(|kv| kv.key.as_str() == MODEL_CAPABILITIES_KEY);
    let mut caps = match given {
        Some(i) => Capabilities::from_names(info.extensions.remove(i).value.as_str()),
        None if info.chat_template.is_some() => {
            Capabilities::STREAMING | Capabilities::TOKENIZE | Capabilities::CHAT_TEMPLATE
        }
        None => Capabilities::STREAMING | Capabilities::TOKENIZE,
    };
    if logprobs {
        caps = caps | Capabilities::LOGPROBS;
    }
    if embeddings {
        caps = caps | Capabilities::EMBEDDINGS;
    }
    info.extensions.push(KeyValue::new(
        MODEL_CAPABILITIES_KEY,
        caps.names().join(","),
    ));
}

/// The loaded models of this plugin library by handle, for the extension calls
/// ([`crate::ext`]), which name a model by the handle in its info.
static MODELS: Mutex<Option<HashMap<u64, Weak<dyn Model>>>> = Mutex::new(None);

fn models() -> std::sync::MutexGuard<'static, Option<HashMap<u64, Weak<dyn Model>>>> {
    MODELS.lock().unwrap_or_else(PoisonError::into_inner)
}

struct ModelAdapter<M: Model> {
    model: Arc<M>,
    info: ModelInfo,
    handle: u64,
}

impl<M: Model> ModelAdapter<M> {
    /// Gives `model` a handle (published in its info) and registers it.
    fn register(model: M, mut info: ModelInfo) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let handle = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let model = Arc::new(model);
        let weak: Weak<dyn Model> = Arc::downgrade(&model) as Weak<dyn Model>;
        models()
            .get_or_insert_with(HashMap::new)
            .insert(handle, weak);
        info.extensions.push(crate::abi::KeyValue::new(
            crate::ext::MODEL_HANDLE_KEY,
            handle.to_string(),
        ));
        ModelAdapter {
            model,
            info,
            handle,
        }
    }
}

impl<M: Model> Drop for ModelAdapter<M> {
    fn drop(&mut self) {
        if let Some(map) = models().as_mut() {
            map.remove(&self.handle);
        }
    }
}

impl<M: Model> ModelApi for ModelAdapter<M> {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn tokenize(
        &self,
        text: RStr<'_>,
        add_special: bool,
        parse_special: bool,
    ) -> RResult<RVec<u32>, EngineError> {
        to_abi(
            guard("tokenize", || {
                self.model
                    .tokenize(text.as_str(), add_special, parse_special)
            }),
            RVec::from,
        )
    }

    fn detokenize(&self, ids: RSlice<'_, u32>) -> RResult<RString, EngineError> {
        to_abi(
            guard("detokenize", || self.model.detokenize(ids.as_slice())),
            RString::from,
        )
    }

    fn token_piece(&self, id: u32) -> RResult<RVec<u8>, EngineError> {
        to_abi(
            guard("token_piece", || self.model.token_piece(id)),
            RVec::from,
        )
    }

    fn generate(
        &self,
        request: GenerateRequest,
        mut sink: SinkRef<'_>,
    ) -> RResult<GenerationStats, EngineError> {
        let mut host = HostSink {
            cancel_id: crate::cancel::request_id(&request),
            sink: &mut sink,
        };
        to_abi(
            guard("generate", || self.model.generate(&request, &mut host)),
            |s| s,
        )
    }
}

/// The host's log-probability sink seen as a [`Sink`].
struct ScoringHostSink<'a, 'b> {
    sink: &'a mut LogprobSinkRef<'b>,
    top: usize,
    cancel_id: Option<u64>,
}

impl Sink for ScoringHostSink<'_, '_> {
    fn token(&mut self, id: u32, piece: &str) -> SinkControl {
        // An engine that reports no score for this token: NaN says so.
        self.sink
            .on_token(id, RStr::from(piece), f32::NAN, RSlice::from_slice(&[]))
    }

    fn cancelled(&self) -> bool {
        self.cancel_id.is_some_and(crate::cancel::is_cancelled)
    }

    fn top_logprobs(&self) -> Option<usize> {
        Some(self.top)
    }

    fn scored_token(
        &mut self,
        id: u32,
        piece: &str,
        logprob: f32,
        top: &[TokenLogprob],
    ) -> SinkControl {
        self.sink
            .on_token(id, RStr::from(piece), logprob, RSlice::from_slice(top))
    }
}

/// [`ExtensionsV1::generate_with_logprobs`]. Never unwinds.
extern "C" fn generate_with_logprobs(
    handle: u64,
    request: GenerateRequest,
    top: u32,
    mut sink: LogprobSinkRef<'_>,
) -> RResult<GenerationStats, EngineError> {
    let result = guard("generate_with_logprobs", || {
        let model = registered(handle)?;
        if !model.logprobs() {
            return Err(EngineError::new(
                ErrorKind::Unsupported,
                "this engine does not report token log-probabilities",
            ));
        }
        if top > MAX_TOP_LOGPROBS {
            return Err(EngineError::invalid_request(format!(
                "{top} alternatives per token were asked for; at most {MAX_TOP_LOGPROBS}"
            )));
        }
        let mut host = ScoringHostSink {
            cancel_id: crate::cancel::request_id(&request),
            top: top as usize,
            sink: &mut sink,
        };
        model.generate(&request, &mut host)
    });
    to_abi(result, |s| s)
}

/// The model with `handle`, or `InvalidRequest`.
fn registered(handle: u64) -> Result<Arc<dyn Model>, EngineError> {
    models()
        .as_ref()
        .and_then(|map| map.get(&handle))
        .and_then(Weak::upgrade)
        .ok_or_else(|| EngineError::invalid_request(format!("no loaded model has handle {handle}")))
}

/// [`ExtensionsV1::embed`]. Never unwinds.
extern "C" fn embed(handle: u64, request: EmbedRequest) -> RResult<RVec<RVec<f32>>, EngineError> {
    let result = guard("embed", || {
        let model = registered(handle)?;
        if !model.embeddings() {
            return Err(EngineError::new(
                ErrorKind::Unsupported,
                "this engine does not compute embeddings for this model",
            ));
        }
        let pooling = match Pooling::from_code(request.pooling) {
            Pooling::Unknown(c) => {
                return Err(EngineError::invalid_request(format!(
                    "pooling code {c} is not one this plugin knows (mean, cls, last)"
                )))
            }
            p => p,
        };
        if request.inputs.is_empty() {
            return Err(EngineError::invalid_request("nothing to embed"));
        }
        let mut vectors = model.embed(request.inputs.as_slice(), pooling)?;
        if vectors.len() != request.inputs.len() {
            return Err(EngineError::internal(format!(
                "the engine returned {} vectors for {} inputs",
                vectors.len(),
                request.inputs.len()
            )));
        }
        if request.normalize {
            vectors.iter_mut().for_each(|v| crate::ext::normalize(v));
        }
        Ok(vectors)
    });
    to_abi(result, |v| v.into_iter().map(RVec::from).collect())
}

/// The extension table every plugin built with this kit exports.
static EXTENSIONS_V1: ExtensionsV1 = ExtensionsV1 {
    generate_with_logprobs,
    embed,
};

/// What `runanywhere_plugin_extensions_v1` returns (used by [`crate::export_plugin!`]).
pub fn extensions_v1() -> ExtensionsV1Export {
    ExtensionsV1Export {
        layout: crate::ext::expected_layout(),
        table: &EXTENSIONS_V1,
    }
}

/// The `init` entry point for engine type `E`. Never unwinds.
pub extern "C" fn init_engine<E: Engine>(request: InitRequest) -> RResult<EngineBox, EngineError> {
    to_abi(guard("init", || E::init(&request)), |engine| {
        EngineApi_TO::from_value(EngineAdapter(engine), TD_Opaque)
    })
}

/// Builds the root module for engine type `E`. Used by [`crate::export_plugin!`].
pub fn root_module<E: Engine>() -> PluginModRef {
    PluginMod {
        api_version: PLUGIN_API_VERSION,
        init: init_engine::<E>,
    }
    .leak_into_prefix()
}

/// Exports `$engine` (a type implementing [`Engine`]) as this library's plugin root
/// module.
#[macro_export]
macro_rules! export_plugin {
    ($engine:ty) => {
        /// The exported symbols of this plugin (generated by `export_plugin!`).
        #[allow(missing_docs)]
        mod __runanywhere_plugin_export {
            #[allow(unused_imports)]
            use super::*;

            /// The plugin-API version, readable by the host before it loads anything else.
            #[no_mangle]
            pub static RUNANYWHERE_PLUGIN_API_VERSION: u32 = $crate::abi::PLUGIN_API_VERSION;

            /// Receives the host's logger before anything else is called (optional for
            /// the host: see `runanywhere_plugin_api::log`).
            #[no_mangle]
            pub extern "C" fn runanywhere_plugin_set_logger_v1(
                log: $crate::log::HostLogFn,
                max_level: u8,
            ) {
                $crate::log::install(log, max_level);
            }

            /// Receives the host's cancel probe (optional for the host: see
            /// `runanywhere_plugin_api::cancel`).
            #[no_mangle]
            pub extern "C" fn runanywhere_plugin_set_cancel_probe_v1(
                probe: $crate::cancel::CancelProbe,
            ) {
                $crate::cancel::install(probe);
            }

            /// The extension calls of plugin ABI 1 (optional for the host: see
            /// `runanywhere_plugin_api::ext`).
            #[no_mangle]
            pub extern "C" fn runanywhere_plugin_extensions_v1() -> $crate::ext::ExtensionsV1Export
            {
                $crate::sdk::extensions_v1()
            }

            /// The plugin's root module, found by the host through abi_stable.
            #[$crate::__private::abi_stable::export_root_module]
            pub fn runanywhere_root_module() -> $crate::abi::PluginModRef {
                $crate::sdk::root_module::<$engine>()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let err = guard::<()>("load_model", || panic!("boom {}", 42)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(
            err.message()
                .starts_with("plugin panicked in load_model: boom 42 (at plugin-api/src/sdk.rs:"),
            "{}",
            err.message()
        );
        assert_eq!(guard("x", || Ok(7)).unwrap(), 7);
    }
}
