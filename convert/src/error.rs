//! The one error type of the conversion library.
//!
//! Engines map these to their own error kinds: [`ConvertError::Invalid`] and
//! [`ConvertError::Io`] mean a bad or unreadable model (an engine's "invalid model"),
//! [`ConvertError::Unsupported`] a readable file this library cannot convert (an
//! engine's "unsupported format"). [`ConvertError::is_unsupported`] tells them apart.

use std::path::{Path, PathBuf};

/// What went wrong while reading or converting a model or tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is malformed: truncated, inconsistent, out of bounds.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The file is well-formed but uses something this library does not convert (a
    /// tokenizer model, a pre-tokenizer, an architecture, a tensor type).
    #[error("{path}: {what} is not supported")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
    /// The Hugging Face `tokenizers` library refused a tokenizer.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The file the tokenizer came from.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// Candle failed on a tensor operation.
    #[error("{path}: {message}")]
    Candle {
        /// The file the tensors came from.
        path: PathBuf,
        /// Candle's message.
        message: String,
    },
    /// The output directory of a conversion already exists and is not empty.
    #[error("{0}: the output directory exists and is not empty")]
    OutputExists(PathBuf),
}

impl ConvertError {
    /// An [`ConvertError::Io`] error for `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An [`ConvertError::Invalid`] error for `path`.
    pub fn invalid(path: &Path, problem: impl Into<String>) -> Self {
        ConvertError::Invalid {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// An [`ConvertError::Unsupported`] error for `path`.
    pub fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        ConvertError::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// A [`ConvertError::Tokenizer`] error for `path`.
    pub fn tokenizer(path: &Path, message: impl std::fmt::Display) -> Self {
        ConvertError::Tokenizer {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// A [`ConvertError::Candle`] error for `path`.
    pub fn candle(path: &Path, error: impl std::fmt::Display) -> Self {
        ConvertError::Candle {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }

    /// Whether the input is well-formed but not supported (rather than broken).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ConvertError::Unsupported { .. })
    }
}
