//! Writing a plugin without writing FFI.
//!
//! Implement [`Engine`] and [`Model`], then `runanywhere_plugin_api::export_plugin!(MyEngine);`.
//! The adapters here turn the plain traits into the ABI's trait objects and wrap every
//! call in `catch_unwind`: a panic in plugin code becomes an [`ErrorKind::Internal`]
//! error (or an empty answer where the method cannot fail) and never unwinds into the
//! host.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

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
            add_model_capabilities(&mut info);
            Ok(ModelAdapter { model, info })
        });
        to_abi(loaded, |m| ModelApi_TO::from_value(m, TD_Opaque))
    }
}

/// Fills in [`MODEL_CAPABILITIES_KEY`] when the engine did not: what the kit can tell
/// from the model's facts (a chat template).
fn add_model_capabilities(info: &mut ModelInfo) {
    use crate::abi::{lookup, MODEL_CAPABILITIES_KEY};
    if lookup(info.extensions.as_slice(), MODEL_CAPABILITIES_KEY).is_some() {
        return;
    }
    let mut caps = Capabilities::STREAMING | Capabilities::TOKENIZE;
    if info.chat_template.is_some() {
        caps = caps | Capabilities::CHAT_TEMPLATE;
    }
    info.extensions.push(crate::abi::KeyValue::new(
        MODEL_CAPABILITIES_KEY,
        caps.names().join(","),
    ));
}

struct ModelAdapter<M: Model> {
    model: M,
    info: ModelInfo,
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
