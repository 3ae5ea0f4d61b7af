//! The host library's error type.

use std::path::PathBuf;

use runanywhere_plugin_api::EngineError;

use crate::format::DetectError;

/// Everything the host library can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An engine returned an error (its kind and message are kept). The engine error is
    /// part of this message rather than a `source`, so error chains print it once.
    #[error("engine `{engine}`: {error}")]
    Engine {
        /// The engine id.
        engine: String,
        /// The engine's error.
        error: EngineError,
    },
    /// `--engine ID` names no discovered engine.
    #[error("no engine `{id}`. Engines: {available}")]
    UnknownEngine {
        /// The requested id.
        id: String,
        /// The engines there are, with their formats.
        available: String,
    },
    /// `--engine ID` names an engine that failed to load.
    #[error("engine `{id}` is unavailable: {reason}")]
    EngineUnavailable {
        /// The requested id.
        id: String,
        /// The ledger's reason.
        reason: String,
    },
    /// No loaded engine reads the model's format.
    #[error("no engine reads {format} models like {path}. Engines: {available}")]
    NoEngineForFormat {
        /// The detected format.
        format: String,
        /// The model path.
        path: PathBuf,
        /// The engines there are, with their formats.
        available: String,
    },
    /// The model's format could not be detected.
    #[error(transparent)]
    Detect(#[from] DetectError),
}

impl Error {
    /// The engine error, if this is one.
    pub fn engine_error(&self) -> Option<&EngineError> {
        match self {
            Error::Engine { error, .. } => Some(error),
            _ => None,
        }
    }
}
