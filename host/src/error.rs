//! The runtime library's error type: one [`Error`] for everything a front end calls,
//! with a [`kind`](Error::kind) a server maps to a status code and structured fields
//! (the engines there are, the memory needed and available) rather than pre-formatted
//! text.
//!
//! Messages name the problem and the fix in the library's terms ("the context length",
//! "force the load"); a front end adds its own names for those knobs (the CLI's
//! `--ctx-size`, a server's `num_ctx`) when it shows the error.

use std::fmt;
use std::path::PathBuf;

use runanywhere_plugin_api::{EngineError, ErrorKind as EngineErrorKind};
use serde::Serialize;

use crate::chat::ChatError;
use crate::format::DetectError;
use crate::memory::InsufficientMemory;
use crate::store::StoreError;

/// What kind of failure an [`Error`] is, for callers that branch on it (HTTP statuses,
/// exit codes, retries).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (a parameter out of range, an empty prompt).
    InvalidRequest,
    /// No such model, file, store id, catalog id or engine.
    NotFound,
    /// The model file is damaged or not what it claims to be.
    InvalidModel,
    /// No engine (or not the chosen one) reads this format.
    UnsupportedFormat,
    /// The prompt (or the conversation) does not fit the context.
    ContextOverflow,
    /// Loading would exceed the memory budget.
    InsufficientMemory,
    /// The engine exists but could not be loaded.
    EngineUnavailable,
    /// The model is busy and the request waited longer than it allowed.
    Timeout,
    /// The caller cancelled the request.
    Cancelled,
    /// The engine or model does not do what was asked (embeddings, sessions, ...).
    Unsupported,
    /// The id or name is already taken.
    Conflict,
    /// The Hub refused access (a gated or private repository).
    Unauthorized,
    /// Not enough disk space.
    InsufficientStorage,
    /// The network or the Hub failed.
    Network,
    /// A file system operation failed.
    Io,
    /// The engine's worker process died (or hung and was killed) during the call.
    EngineCrashed,
    /// A bug or an unexpected failure in the runtime or an engine.
    Internal,
}

impl ErrorKind {
    /// The kind's name, as in JSON (`invalid_request`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidModel => "invalid_model",
            ErrorKind::UnsupportedFormat => "unsupported_format",
            ErrorKind::ContextOverflow => "context_overflow",
            ErrorKind::InsufficientMemory => "insufficient_memory",
            ErrorKind::EngineUnavailable => "engine_unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InsufficientStorage => "insufficient_storage",
            ErrorKind::Network => "network",
            ErrorKind::Io => "io",
            ErrorKind::EngineCrashed => "engine_crashed",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of an engine's error.
    pub fn of_engine(kind: EngineErrorKind) -> ErrorKind {
        match kind {
            EngineErrorKind::InvalidModel => ErrorKind::InvalidModel,
            EngineErrorKind::UnsupportedFormat => ErrorKind::UnsupportedFormat,
            EngineErrorKind::ContextOverflow => ErrorKind::ContextOverflow,
            EngineErrorKind::InvalidRequest => ErrorKind::InvalidRequest,
            EngineErrorKind::Cancelled => ErrorKind::Cancelled,
            EngineErrorKind::OutOfMemory => ErrorKind::InsufficientMemory,
            EngineErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One engine as errors list them: what it reads, or why it is unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineChoice {
    /// The engine id.
    pub id: String,
    /// The formats it reads (empty when unavailable).
    pub formats: Vec<String>,
    /// Why it is unavailable, if it is.
    pub unavailable: Option<String>,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unavailable {
            Some(reason) => write!(f, "{} (unavailable: {reason})", self.id),
            None => write!(f, "{} (reads {})", self.id, self.formats.join(", ")),
        }
    }
}

/// The engines there are, for messages: `a (reads gguf); b (unavailable: ...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EngineList(pub Vec<EngineChoice>);

impl fmt::Display for EngineList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(
                "none found; build the plugins (cargo build --release) or add a plugin directory",
            );
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Everything the runtime library can fail with.
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
    /// The engine's worker died (a signal, an abort, an exit) or hung and was killed,
    /// failing the call; the next call starts a new worker.
    #[error("engine `{engine}` crashed: {crash}")]
    EngineCrashed {
        /// The engine id.
        engine: String,
        /// How the worker ended, with its last lines of stderr.
        crash: crate::worker::Crash,
    },
    /// The request names no discovered engine.
    #[error("no engine `{id}`. Engines: {available}")]
    UnknownEngine {
        /// The requested id.
        id: String,
        /// The engines there are.
        available: EngineList,
    },
    /// The request names an engine that failed to load.
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
        /// The engines there are.
        available: EngineList,
    },
    /// The model's format could not be detected.
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The model store failed (resolving, pulling, importing).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Loading would exceed the memory budget, even after unloading idle models.
    #[error(transparent)]
    InsufficientMemory(#[from] InsufficientMemory),
    /// A chat template failed.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// A request waited for a busy model longer than it allowed.
    #[error(
        "the model {model} stayed busy longer than the {waited_ms} ms the request would wait \
         ({queued} request(s) were waiting)"
    )]
    QueueTimeout {
        /// The model.
        model: String,
        /// How long the request waited.
        waited_ms: u64,
        /// Requests waiting for the model when it gave up (this one included).
        queued: usize,
    },
    /// A chat message does not fit the context even with every older turn dropped.
    #[error(
        "the message is too long: the conversation needs {tokens} tokens with it, and the \
         {context}-token context must also leave {room} for the reply; send a shorter \
         message, start the conversation over, or use a larger context length"
    )]
    ConversationTooLong {
        /// Tokens of the shortest conversation that still holds the message.
        tokens: usize,
        /// The context length.
        context: usize,
        /// Tokens kept free for the reply.
        room: usize,
    },
    /// The caller cancelled the request (while it waited, or between two steps).
    #[error("cancelled")]
    Cancelled,
    /// The request is invalid before any engine sees it.
    #[error("{0}")]
    InvalidRequest(String),
}

impl Error {
    /// The engine error, if this is one.
    pub fn engine_error(&self) -> Option<&EngineError> {
        match self {
            Error::Engine { error, .. } => Some(error),
            _ => None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Engine { error, .. } => ErrorKind::of_engine(error.kind()),
            Error::EngineCrashed { .. } => ErrorKind::EngineCrashed,
            Error::UnknownEngine { .. } => ErrorKind::NotFound,
            Error::EngineUnavailable { .. } => ErrorKind::EngineUnavailable,
            Error::NoEngineForFormat { .. } => ErrorKind::UnsupportedFormat,
            Error::Detect(DetectError::NotFound(_)) => ErrorKind::NotFound,
            Error::Detect(DetectError::Io { .. }) => ErrorKind::Io,
            Error::Detect(_) => ErrorKind::UnsupportedFormat,
            Error::Store(e) => e.kind(),
            Error::InsufficientMemory(_) => ErrorKind::InsufficientMemory,
            Error::Chat(_) => ErrorKind::InvalidRequest,
            Error::QueueTimeout { .. } => ErrorKind::Timeout,
            Error::ConversationTooLong { .. } => ErrorKind::ContextOverflow,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::InvalidRequest(_) => ErrorKind::InvalidRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_lists_print_like_the_ledger() {
        let list = EngineList(vec![
            EngineChoice {
                id: "mock".into(),
                formats: vec!["mock".into()],
                unavailable: None,
            },
            EngineChoice {
                id: "x".into(),
                formats: Vec::new(),
                unavailable: Some("init failed".into()),
            },
        ]);
        assert_eq!(
            list.to_string(),
            "mock (reads mock); x (unavailable: init failed)"
        );
        assert!(EngineList::default().to_string().starts_with("none found"));
        let e = Error::UnknownEngine {
            id: "nope".into(),
            available: list,
        };
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.kind().name(), "not_found");
    }
}
