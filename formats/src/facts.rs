//! What a check found out about a model: [`Facts`], gathered into a [`Verification`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::ModelFormat;

/// Facts about a model, gathered by the structural check. Every field is optional: a
/// format may not record it, and a file that fails the check has only what was read
/// before the problem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The architecture (GGUF `general.architecture`, config.json `model_type`, ...).
    pub architecture: Option<String>,
    /// The model's own name, when the file records one.
    pub name: Option<String>,
    /// Parameter count: the sum of the tensors' element counts.
    pub parameters: Option<u64>,
    /// Quantization or data type, e.g. `Q4_K_M`, `F16`, `BF16`.
    pub quantization: Option<String>,
    /// The context length the model was trained for, in tokens.
    pub context_length: Option<u64>,
    /// Number of tensors (initializers for ONNX).
    pub tensors: Option<u64>,
    /// Bytes of KV cache per token of context (keys and values of every layer), at the
    /// element width the engines reading this format use.
    pub kv_bytes_per_token: Option<u64>,
    /// Format-specific facts, e.g. `gguf.version`.
    pub details: BTreeMap<String, String>,
}

impl Facts {
    /// Records a format-specific fact.
    pub fn detail(&mut self, key: &str, value: impl ToString) {
        self.details.insert(key.to_string(), value.to_string());
    }

    /// Adds `n` to the parameter count (saturating).
    pub(crate) fn add_parameters(&mut self, n: u64) {
        self.parameters = Some(self.parameters.unwrap_or(0).saturating_add(n));
    }

    /// Adds `n` to the tensor count.
    pub(crate) fn add_tensors(&mut self, n: u64) {
        self.tensors = Some(self.tensors.unwrap_or(0).saturating_add(n));
    }
}

/// Bytes (or elements) per data type, to name the dominant one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub(crate) fn add(&mut self, name: &str, amount: u64) {
        let entry = self.0.entry(name.to_string()).or_insert(0);
        *entry = entry.saturating_add(amount);
    }

    /// The name with the largest amount (the first in name order on a tie).
    pub(crate) fn dominant(&self) -> Option<String> {
        let mut best: Option<(&String, u64)> = None;
        for (name, &amount) in &self.0 {
            if best.is_none_or(|(_, b)| amount > b) {
                best = Some((name, amount));
            }
        }
        best.map(|(name, _)| name.clone())
    }
}

/// KV-cache bytes per token: `layers × kv_heads × (key_dim + value_dim) × element_bytes`,
/// or `None` when a factor is zero or the product overflows.
pub(crate) fn kv_bytes_per_token(
    layers: u64,
    kv_heads: u64,
    key_dim: u64,
    value_dim: u64,
    element_bytes: u64,
) -> Option<u64> {
    let n = layers
        .checked_mul(kv_heads)?
        .checked_mul(key_dim.checked_add(value_dim)?)?
        .checked_mul(element_bytes)?;
    (n > 0).then_some(n)
}

/// The first problem a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file it is in (the model path for folder-level problems).
    pub file: PathBuf,
    /// The byte offset, when the problem is inside a file.
    pub offset: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// The result of verifying a model file or folder: what was found, and the first
/// problem if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The model path.
    pub path: PathBuf,
    /// The format, when it could be told.
    pub format: Option<ModelFormat>,
    /// Total bytes of the model's files.
    pub size: u64,
    /// The files that were checked.
    pub files: Vec<PathBuf>,
    /// What the check found.
    pub facts: Facts,
    /// The first problem, or `None` when the model passed.
    pub problem: Option<Problem>,
}

impl Verification {
    pub(crate) fn new(path: PathBuf) -> Self {
        Verification {
            path,
            format: None,
            size: 0,
            files: Vec::new(),
            facts: Facts::default(),
            problem: None,
        }
    }

    /// Whether the model passed.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }

    /// Records the first problem (later ones are ignored).
    pub(crate) fn problem(
        &mut self,
        file: impl Into<PathBuf>,
        offset: Option<u64>,
        message: String,
    ) {
        if self.problem.is_none() {
            self.problem = Some(Problem {
                file: file.into(),
                offset,
                message,
            });
        }
    }
}
