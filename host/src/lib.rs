//! The RunAnywhere runtime library: engine plugins behind a stable ABI, the model
//! store, model loading and keep-alive, chat sessions, metrics. Every front end (the
//! `runanywhere` CLI, a server, workers) holds one [`Runtime`]. Engines run in-process
//! or, isolated, in worker processes of their own ([`worker`]):
//!
//! ```no_run
//! use runanywhere::{GenerateOptions, LoadOptions, Prompt, Runtime, RuntimeConfig, Turn};
//!
//! let runtime = Runtime::new(RuntimeConfig::default());
//! let model = runtime.load("model.gguf", &LoadOptions::default(), &mut runanywhere::store::NoProgress)?;
//! let options = GenerateOptions::greedy();
//! let request = options.request(Prompt::Text("Once upon a time".into()), 0);
//! model.generate(request, &Turn::default(), |_, piece| {
//!     eprint!("{piece}");
//!     runanywhere::SinkControl::Continue
//! })?;
//! # Ok::<(), runanywhere::Error>(())
//! ```

pub mod bench;
pub mod cancel;
pub mod chat;
pub mod engine;
pub mod error;
pub mod format;
pub mod libname;
mod loader;
pub mod manager;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod options;
pub mod plugins;
pub mod registry;
pub mod runtime;
pub mod session;
pub mod store;
pub mod worker;

pub use cancel::CancelToken;
pub use engine::{Engine, Model, ScoredToken};
pub use error::{EngineChoice, EngineList, Error, ErrorKind};
pub use manager::{KeepAlive, LoadedModel, ManagerConfig, ModelKey, ModelManager, Turn};
pub use options::{GenerateOptions, LoadOptions};
pub use runanywhere_plugin_api::ext::{Pooling, TokenLogprob, MAX_TOP_LOGPROBS};
pub use runanywhere_plugin_api::{
    Capabilities, EngineError, ErrorKind as EngineErrorKind, GenerateRequest, GenerationStats,
    LoadRequest, ModelInfo, Prompt, SamplingParams, SinkControl, StopReason,
};
pub use runtime::{ResolvedModel, Runtime, RuntimeConfig};
pub use session::{ChatSession, PreparedTurn};
pub use worker::{Isolation, WorkerConfig};
