//! The plugin's error type: what went wrong, in terms a user can act on, mapped to the
//! ABI's [`ErrorKind`] at the edge.

use runanywhere_plugin_api::{EngineError, ErrorKind};

/// What went wrong in the ExecuTorch plugin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EtError {
    /// ExecuTorch's runtime (the shim and the wheel's libraries) is missing or
    /// unloadable. The message carries the fix.
    #[error("{0}")]
    Runtime(String),
    /// The program (or its tokenizer) is unreadable, truncated or malformed.
    #[error("{0}")]
    InvalidModel(String),
    /// A valid program that is not an LLM export this engine can drive.
    #[error("{0}")]
    Unsupported(String),
    /// The request cannot be served (bad token id, too long for the context).
    #[error("{0}")]
    InvalidRequest(String),
    /// The positions asked for are past the program's KV cache.
    #[error("{0}")]
    ContextOverflow(String),
    /// ExecuTorch failed while running a method.
    #[error("ExecuTorch failed to run the model: {0}")]
    Run(String),
}

impl EtError {
    /// The kind the host sees.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            EtError::Runtime(_) | EtError::Run(_) => ErrorKind::Internal,
            EtError::InvalidModel(_) => ErrorKind::InvalidModel,
            EtError::Unsupported(_) => ErrorKind::UnsupportedFormat,
            EtError::InvalidRequest(_) => ErrorKind::InvalidRequest,
            EtError::ContextOverflow(_) => ErrorKind::ContextOverflow,
        }
    }
}

impl From<EtError> for EngineError {
    fn from(e: EtError) -> Self {
        EngineError::new(e.kind(), e.to_string())
    }
}

/// The result type of the plugin's internals.
pub(crate) type Result<T, E = EtError> = std::result::Result<T, E>;
