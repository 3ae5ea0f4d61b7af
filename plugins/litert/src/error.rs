//! The plugin's error type: what went wrong, in terms a user can act on, mapped to the
//! ABI's [`ErrorKind`] at the edge.

use runanywhere_plugin_api::{EngineError, ErrorKind};

/// What went wrong in the LiteRT plugin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LiteRtError {
    /// The TFLite runtime library is missing or unusable. The message carries the fix.
    #[error("{0}")]
    Runtime(String),
    /// The model (or its tokenizer) is unreadable, truncated or malformed.
    #[error("{0}")]
    InvalidModel(String),
    /// A valid model without the signatures of a litert-torch decoder export.
    #[error("{0}")]
    Unsupported(String),
    /// The request cannot be served.
    #[error("{0}")]
    InvalidRequest(String),
    /// Positions past the model's KV cache.
    #[error("{0}")]
    ContextOverflow(String),
    /// TFLite failed while running a signature.
    #[error("TFLite failed to run the model: {0}")]
    Run(String),
}

impl LiteRtError {
    /// The kind the host sees.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            LiteRtError::Runtime(_) | LiteRtError::Run(_) => ErrorKind::Internal,
            LiteRtError::InvalidModel(_) => ErrorKind::InvalidModel,
            LiteRtError::Unsupported(_) => ErrorKind::UnsupportedFormat,
            LiteRtError::InvalidRequest(_) => ErrorKind::InvalidRequest,
            LiteRtError::ContextOverflow(_) => ErrorKind::ContextOverflow,
        }
    }
}

impl From<LiteRtError> for EngineError {
    fn from(e: LiteRtError) -> Self {
        EngineError::new(e.kind(), e.to_string())
    }
}

/// The result type of the plugin's internals.
pub(crate) type Result<T, E = LiteRtError> = std::result::Result<T, E>;
