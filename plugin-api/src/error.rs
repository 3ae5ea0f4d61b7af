//! The error type that crosses the plugin boundary.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, as seen by the host. Travels as an integer code so that a newer
/// plugin's kinds never become undefined behaviour in an older host.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The model file or folder is unreadable, truncated or malformed.
    InvalidModel,
    /// The file is readable but in a format (or layout) this engine does not read.
    UnsupportedFormat,
    /// The prompt (plus what must be generated) does not fit the context window.
    ContextOverflow,
    /// Memory for weights, KV cache or activations could not be allocated.
    OutOfMemory,
    /// The request itself is invalid (bad parameter, unknown token id, ...).
    InvalidRequest,
    /// The operation was cancelled.
    Cancelled,
    /// A bug or unexpected failure inside the engine, including a caught panic.
    Internal,
    /// The engine (or this model) does not do what was asked (embeddings, sessions, ...):
    /// not a bug, and not the request's fault. Added after plugin ABI 1.0 (code 8); a
    /// 1.0 host sees it as `Unknown(8)`.
    Unsupported,
    /// A code this build does not know (from a newer plugin).
    Unknown(u32),
}

impl ErrorKind {
    /// The stable integer code of this kind.
    pub fn code(self) -> u32 {
        match self {
            ErrorKind::InvalidModel => 1,
            ErrorKind::UnsupportedFormat => 2,
            ErrorKind::ContextOverflow => 3,
            ErrorKind::OutOfMemory => 4,
            ErrorKind::InvalidRequest => 5,
            ErrorKind::Cancelled => 6,
            ErrorKind::Internal => 7,
            ErrorKind::Unsupported => 8,
            ErrorKind::Unknown(code) => code,
        }
    }

    /// The kind for a code; unknown codes map to [`ErrorKind::Unknown`].
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => ErrorKind::InvalidModel,
            2 => ErrorKind::UnsupportedFormat,
            3 => ErrorKind::ContextOverflow,
            4 => ErrorKind::OutOfMemory,
            5 => ErrorKind::InvalidRequest,
            6 => ErrorKind::Cancelled,
            7 => ErrorKind::Internal,
            8 => ErrorKind::Unsupported,
            other => ErrorKind::Unknown(other),
        }
    }

    /// A short snake_case name, used in JSON output and messages.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidModel => "invalid_model",
            ErrorKind::UnsupportedFormat => "unsupported_format",
            ErrorKind::ContextOverflow => "context_overflow",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error returned by an engine plugin: a kind (as a code) and a human message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    code: u32,
    message: RString,
}

impl EngineError {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError {
            code: kind.code(),
            message: RString::from(message.into()),
        }
    }

    /// The kind of the error.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_code(self.code)
    }

    /// The raw code, as it crossed the boundary.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        self.message.as_str()
    }

    /// Shorthand for [`ErrorKind::InvalidModel`].
    pub fn invalid_model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidModel, message)
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// Shorthand for [`ErrorKind::UnsupportedFormat`].
    pub fn unsupported_format(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedFormat, message)
    }

    /// Shorthand for [`ErrorKind::InvalidRequest`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A [`ErrorKind::ContextOverflow`] error that names both numbers.
    pub fn context_overflow(needed: usize, context_length: usize) -> Self {
        Self::new(
            ErrorKind::ContextOverflow,
            format!(
                "prompt needs {needed} tokens but the context holds {context_length}; \
                 shorten the prompt or raise the context length"
            ),
        )
    }

    /// The [`ErrorKind::InvalidRequest`] for a token id the vocabulary does not have.
    pub fn token_out_of_range(id: u32, vocab_size: u32) -> Self {
        Self::invalid_request(format!(
            "token id {id} is out of range: the vocabulary has {vocab_size} tokens"
        ))
    }

    /// The [`ErrorKind::InvalidRequest`] for generating with a vocabulary-only load.
    pub fn vocab_only() -> Self {
        Self::invalid_request("model was loaded vocab-only: it can tokenize but not generate")
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message)
    }
}

impl std::error::Error for EngineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_survive() {
        for kind in [
            ErrorKind::InvalidModel,
            ErrorKind::UnsupportedFormat,
            ErrorKind::ContextOverflow,
            ErrorKind::OutOfMemory,
            ErrorKind::InvalidRequest,
            ErrorKind::Cancelled,
            ErrorKind::Internal,
            ErrorKind::Unsupported,
        ] {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
        }
        let e = EngineError::new(ErrorKind::from_code(4242), "from the future");
        assert_eq!(e.kind(), ErrorKind::Unknown(4242));
        assert_eq!(e.code(), 4242);
    }

    #[test]
    fn context_overflow_names_both_numbers() {
        let e = EngineError::context_overflow(600, 512);
        assert_eq!(e.kind(), ErrorKind::ContextOverflow);
        assert!(e.message().contains("600") && e.message().contains("512"));
    }
}
