//! Errors: a problem inside a file ([`FormatError`]) and a file that cannot be checked at
//! all or fails the check ([`FileError`]).

use std::fmt;
use std::path::PathBuf;

/// What is wrong with a file's content, and at which byte it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Byte offset at which the problem was found.
    pub offset: u64,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.problem, self.offset)
    }
}

impl std::error::Error for FormatError {}

/// Why a model file failed a check.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing at the path.
    #[error("model file {} does not exist", .0.display())]
    NotFound(PathBuf),
    /// The path exists but its metadata could not be read.
    #[error("cannot read model file {}: {source}", path.display())]
    Unreadable {
        /// The model path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A directory where a single file was expected.
    #[error("{} is a directory, not a single {format} file", path.display())]
    Directory {
        /// The model path.
        path: PathBuf,
        /// The expected format's display name.
        format: &'static str,
    },
    /// Not a regular file (a device, a socket, ...).
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// A file of zero bytes.
    #[error("model file {} is empty", .0.display())]
    Empty(PathBuf),
    /// The file could not be opened.
    #[error("cannot open model file {}: {source}", path.display())]
    Open {
        /// The model path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is malformed.
    #[error("{} is not a valid {format} file: {source}", path.display())]
    Invalid {
        /// The model path.
        path: PathBuf,
        /// The format's display name.
        format: &'static str,
        /// What is wrong.
        source: FormatError,
    },
}
