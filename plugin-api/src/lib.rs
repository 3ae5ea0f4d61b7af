//! The stable plugin ABI of RunAnywhere, and the kit engine plugins share.
//!
//! # Why abi_stable
//!
//! Engine plugins are `cdylib`s built separately from the host, possibly by third
//! parties and with a different compiler. Rust has no stable ABI, so everything that
//! crosses the boundary is `#[repr(C)]` and derives [`abi_stable::StableAbi`]; when a
//! plugin is loaded, abi_stable compares the full type layout the plugin was built
//! against with the host's and refuses a mismatch instead of corrupting memory.
//!
//! On top of that layout check the root module carries an explicit integer
//! [`PLUGIN_API_VERSION`](abi::PLUGIN_API_VERSION), which the host reads (a plain field,
//! not a call) before it calls anything in the plugin. Its history is in [`version`].
//!
//! # Growing the ABI
//!
//! * The root module ([`abi::PluginMod`]) is a *prefix type*: fields appended after
//!   `init` in later versions are seen as absent (`None`) when an older plugin is loaded.
//! * The engine and model objects are `#[sabi_trait]` objects whose vtables are prefix
//!   types too: methods can be appended after the last prefix method.
//! * Request and info structs carry an `extensions` list of key/value pairs, so a new
//!   optional knob can travel before it earns a field of its own.
//! * Error kinds and stop reasons travel as integer codes: an unknown code from a newer
//!   plugin maps to a catch-all instead of being undefined behaviour.
//!
//! # For plugin authors
//!
//! Implement the plain Rust traits [`sdk::Engine`] and [`sdk::Model`] and call
//! [`export_plugin!`]; you never write FFI, and every call is wrapped in
//! `catch_unwind` so a panic becomes an [`ErrorKind::Internal`] error instead of
//! unwinding into the host. Engines that compute logits themselves use
//! [`sampling::Sampler`] and [`decode::GenerationTracker`] (stop strings, UTF-8 buffering,
//! limits, timing) rather than writing their own.

pub mod abi;
pub mod cancel;
pub mod decode;
pub mod emit;
pub mod error;
pub mod ext;
pub mod generate;
pub mod locate;
pub mod log;
pub mod sampling;
pub mod sdk;
pub mod version;

pub use abi::{
    Capabilities, EngineBox, EngineInfo, GenerateRequest, GenerationStats, InitRequest, KeyValue,
    LoadRequest, ModelBox, ModelInfo, PluginMod, PluginModRef, Prompt, SamplingParams, SinkControl,
    StopReason, MIN_SUPPORTED_API_VERSION, PLUGIN_API_VERSION,
};
pub use error::{EngineError, ErrorKind};

/// Re-exports used by [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
}
