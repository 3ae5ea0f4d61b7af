//! The RunAnywhere host: discovers engine plugins, loads them through the stable ABI
//! (`runanywhere-plugin-api`), and routes model lifecycle and generation to them.
//!
//! The `runanywhere` binary is a thin CLI over this library:
//!
//! ```no_run
//! use runanywhere::{registry::{search_dirs, Registry}, GenerateRequest, LoadRequest, Prompt};
//!
//! let registry = Registry::discover(&search_dirs(&[]));
//! let engine = registry.select("model.gguf".as_ref(), None)?;
//! let model = engine.load_model(LoadRequest { model_path: "model.gguf".into(), ..Default::default() })?;
//! let stats = model.generate(GenerateRequest::new(Prompt::Text("Once upon a time".into())), |_, piece| {
//!     eprint!("{piece}");
//!     runanywhere::SinkControl::Continue
//! })?;
//! # Ok::<(), runanywhere::Error>(())
//! ```

pub mod chat;
pub mod engine;
pub mod error;
pub mod format;
pub mod libname;
mod loader;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod store;

pub use engine::{Engine, Model};
pub use error::Error;
pub use runanywhere_plugin_api::{
    EngineError, ErrorKind, GenerateRequest, GenerationStats, LoadRequest, ModelInfo, Prompt,
    SamplingParams, SinkControl, StopReason,
};
