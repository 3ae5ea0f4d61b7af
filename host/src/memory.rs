//! Will the model fit? An estimate of the memory a load needs (the weights plus the KV
//! cache for the context, from the facts the structural check gathers) against the
//! memory available (`MemAvailable` in `/proc/meminfo`).

use std::path::{Path, PathBuf};

use runanywhere_formats::Verification;
use serde::Serialize;

use crate::store::human_bytes;

/// Environment variable that replaces the measured available memory (in bytes), so
/// tests can simulate a small machine.
pub const AVAILABLE_ENV: &str = "RUNANYWHERE_TEST_MEM_AVAILABLE";

/// The context assumed when none is asked for: engines cap the model's own context at
/// this (llama.cpp plugin's default).
pub const DEFAULT_CONTEXT: u64 = 4096;

/// Memory a load is expected to need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// The model's files (mapped or read into memory).
    pub weights: u64,
    /// The KV cache for `context` tokens.
    pub kv_cache: u64,
    /// The context length the estimate is for.
    pub context: u64,
}

impl MemoryEstimate {
    /// Weights plus KV cache.
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.kv_cache)
    }
}

/// The model needs more memory than there is.
#[derive(Debug, thiserror::Error)]
#[error(
    "not enough memory for {}: it needs about {} (weights {} + KV cache {} for {} tokens) \
     but only {} is available; use a smaller context length or a smaller model, or force the \
     load",
    path.display(),
    human_bytes(estimate.total()),
    human_bytes(estimate.weights),
    human_bytes(estimate.kv_cache),
    estimate.context,
    human_bytes(*available)
)]
pub struct InsufficientMemory {
    /// The model.
    pub path: PathBuf,
    /// What it needs.
    pub estimate: MemoryEstimate,
    /// Bytes available.
    pub available: u64,
}

/// Estimates the memory a model verified as `v` needs with a context of
/// `requested_context` tokens (0 = the model's own, capped at [`DEFAULT_CONTEXT`]).
pub fn estimate(v: &Verification, requested_context: u32) -> MemoryEstimate {
    let context = match requested_context {
        0 => v
            .facts
            .context_length
            .map_or(DEFAULT_CONTEXT, |c| c.min(DEFAULT_CONTEXT)),
        n => u64::from(n),
    };
    MemoryEstimate {
        weights: v.size,
        kv_cache: v
            .facts
            .kv_bytes_per_token
            .unwrap_or(0)
            .saturating_mul(context),
        context,
    }
}

/// Bytes of memory available: [`AVAILABLE_ENV`] when set, else `MemAvailable` from
/// `/proc/meminfo`; `None` where neither can be read.
pub fn available() -> Option<u64> {
    if let Some(value) = std::env::var_os(AVAILABLE_ENV) {
        return value.to_string_lossy().trim().parse().ok();
    }
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemAvailable` (in bytes) from the text of `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// The memory the model at `path` needs with a context of `requested_context` tokens;
/// `None` when there is nothing to estimate (not a file or folder the structural check
/// passes: the engine will say what is wrong).
pub fn estimate_file(path: &Path, requested_context: u32) -> Option<MemoryEstimate> {
    if std::fs::symlink_metadata(path).is_err() {
        return None;
    }
    let v = runanywhere_formats::verify_path(path);
    v.is_ok().then(|| estimate(&v, requested_context))
}

#[cfg(test)]
mod tests {
    use runanywhere_formats::verify_bytes;

    use super::*;

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       16316412 kB\nMemFree:  1 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(8_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn the_estimate_is_weights_plus_kv_cache() {
        // stories260K's llama2.c shape: 5 layers × 4 KV heads × (8 + 8) × 4 bytes a token.
        let bin = runanywhere_formats::llama2c::testing::checkpoint([64, 172, 5, 8, 4, 512, 512]);
        let v = verify_bytes(&bin, "m.bin");
        assert!(v.is_ok(), "{:?}", v.problem);
        let e = estimate(&v, 0);
        assert_eq!(e.context, 512);
        assert_eq!(e.weights, 1_056_540);
        assert_eq!(e.kv_cache, 512 * 1280);
        assert_eq!(e.total(), 1_056_540 + 655_360);
        assert_eq!(estimate(&v, 100).kv_cache, 128_000);
    }
}
