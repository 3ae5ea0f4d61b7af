//! The plugin's error type.
//!
//! Everything inside the plugin returns [`OnnxError`], whose variants say what went wrong
//! in terms a user can act on; at the ABI edge it becomes an [`EngineError`] whose
//! [`ErrorKind`] the host reports (an unreadable or truncated model is `invalid_model`, a
//! graph this engine cannot drive is `unsupported_format`, and so on).

use std::path::PathBuf;

use runanywhere_plugin_api::{EngineError, ErrorKind};

/// What went wrong in the ONNX Runtime plugin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OnnxError {
    /// ONNX Runtime's shared library is missing, unloadable or too old. The message
    /// carries the fix.
    #[error("{0}")]
    Runtime(String),
    /// A file of the model could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model (file, folder, config or tokenizer) is malformed or incomplete.
    #[error("{0}")]
    InvalidModel(String),
    /// The model is readable but not a graph this engine can drive.
    #[error("{0}")]
    Unsupported(String),
    /// The request cannot be served (bad token id, bad parameter).
    #[error("{0}")]
    InvalidRequest(String),
    /// ONNX Runtime failed while running the graph.
    #[error("ONNX Runtime failed to run the model: {0}")]
    Run(String),
    /// Anything else that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl OnnxError {
    /// The kind the host sees.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            OnnxError::Runtime(_) | OnnxError::Run(_) | OnnxError::Internal(_) => {
                ErrorKind::Internal
            }
            OnnxError::Io { .. } | OnnxError::InvalidModel(_) => ErrorKind::InvalidModel,
            OnnxError::Unsupported(_) => ErrorKind::UnsupportedFormat,
            OnnxError::InvalidRequest(_) => ErrorKind::InvalidRequest,
        }
    }
}

impl From<OnnxError> for EngineError {
    fn from(e: OnnxError) -> Self {
        EngineError::new(e.kind(), e.to_string())
    }
}

/// The result type of the plugin's internals.
pub(crate) type Result<T, E = OnnxError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_abi() {
        let io = OnnxError::Io {
            path: "/x/past.onnx".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(io.kind(), ErrorKind::InvalidModel);
        let e = EngineError::from(io);
        assert_eq!(e.kind(), ErrorKind::InvalidModel);
        assert!(e.message().starts_with("cannot read /x/past.onnx"), "{e}");
        assert_eq!(
            EngineError::from(OnnxError::Unsupported("no logits".into())).kind(),
            ErrorKind::UnsupportedFormat
        );
    }
}
