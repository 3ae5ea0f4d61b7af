//! Calls added to plugin ABI 1 after its first release, reached through one optional
//! exported symbol.
//!
//! A `#[sabi_trait]` cannot grow without breaking older plugins (see [`crate::version`]),
//! so new calls live in a table of `extern "C"` functions, [`ExtensionsV1`], that a plugin
//! exports through [`EXTENSIONS_V1_SYMBOL`] together with the table's type layout. The
//! host looks the symbol up after the root module has loaded, checks the layout with
//! abi_stable's checker before calling anything in it, and treats a plugin without it
//! (built before these calls) as one whose models cannot do what the table offers: a
//! clear `Unsupported`, never a crash.
//!
//! A call names its model by the handle the kit gives every loaded model, published in
//! [`ModelInfo::extensions`](crate::abi::ModelInfo) under [`MODEL_HANDLE_KEY`]. A table
//! never changes once released; more calls come in an `ExtensionsV2` under a new symbol.
#![allow(non_local_definitions)]

use abi_stable::{
    sabi_trait,
    sabi_types::RMut,
    std_types::{RResult, RSlice, RStr},
    type_layout::TypeLayout,
    StableAbi,
};

use crate::abi::{GenerateRequest, GenerationStats, SinkControl};
use crate::error::EngineError;

/// [`ModelInfo::extensions`](crate::abi::ModelInfo) key: the model's handle for
/// extension calls (a decimal `u64`, unique within the plugin library).
pub const MODEL_HANDLE_KEY: &str = "runanywhere.model_handle";

/// Name of the exported `extern "C" fn() -> ExtensionsV1Export`.
pub const EXTENSIONS_V1_SYMBOL: &[u8] = b"runanywhere_plugin_extensions_v1\0";

/// Most alternatives a generation reports per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// A token and its natural-log probability.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    /// The token id.
    pub id: u32,
    /// `ln p(id)` under the model's distribution at that position (before sampling
    /// transforms such as temperature or penalties).
    pub logprob: f32,
}

/// Receives generated tokens with their log-probabilities; implemented by the host.
#[sabi_trait]
pub trait LogprobSink {
    /// One generated token: id, text piece (as for
    /// [`TokenSink`](crate::abi::TokenSink)), its log-probability, and the most likely
    /// tokens at its position, most likely first.
    #[sabi(last_prefix_field)]
    fn on_token(
        &mut self,
        id: u32,
        piece: RStr<'_>,
        logprob: f32,
        top: RSlice<'_, TokenLogprob>,
    ) -> SinkControl;
}

/// The sink as passed to [`ExtensionsV1::generate_with_logprobs`].
pub type LogprobSinkRef<'a> = LogprobSink_TO<'a, RMut<'a, ()>>;

/// The first table of extension calls.
#[repr(C)]
#[derive(StableAbi)]
pub struct ExtensionsV1 {
    /// Generates like `ModelApi::generate` on the model with `handle`, giving each token
    /// its log-probability and the `top` (≤ [`MAX_TOP_LOGPROBS`]) most likely
    /// alternatives. Never unwinds.
    pub generate_with_logprobs: for<'a> extern "C" fn(
        handle: u64,
        request: GenerateRequest,
        top: u32,
        sink: LogprobSinkRef<'a>,
    ) -> RResult<GenerationStats, EngineError>,
}

/// What [`EXTENSIONS_V1_SYMBOL`] returns: the table and the layout the plugin built it
/// with, which the host compares with its own before the first call.
#[repr(C)]
pub struct ExtensionsV1Export {
    /// `<ExtensionsV1 as StableAbi>::LAYOUT` in the plugin.
    pub layout: &'static TypeLayout,
    /// The table.
    pub table: &'static ExtensionsV1,
}

/// The type of the exported function.
pub type ExtensionsV1Fn = extern "C" fn() -> ExtensionsV1Export;

/// The layout a host expects of [`ExtensionsV1`].
pub fn expected_layout() -> &'static TypeLayout {
    <ExtensionsV1 as StableAbi>::LAYOUT
}

/// Natural-log probabilities from logits: `ln softmax(logits)[id]` for the chosen `id`
/// and the `top` most likely ids, most likely first (ties: the lower id first). One
/// shared implementation, so every engine that samples in Rust reports the same numbers
/// for the same logits.
pub fn logprobs(logits: &[f32], id: u32, top: usize) -> (f32, Vec<TokenLogprob>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return (f32::NAN, Vec::new());
    }
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    let lp = |l: f32| (f64::from(l) - lse) as f32;
    let chosen = logits.get(id as usize).map_or(f32::NAN, |&l| lp(l));
    let top = top.min(logits.len());
    let mut best: Vec<u32> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == top && l <= logits[best[top - 1] as usize] {
                continue;
            }
            let at = best
                .iter()
                .position(|&b| l > logits[b as usize])
                .unwrap_or(best.len());
            best.insert(at, i as u32);
            best.truncate(top);
        }
    }
    let top = best
        .into_iter()
        .map(|i| TokenLogprob {
            id: i,
            logprob: lp(logits[i as usize]),
        })
        .collect();
    (chosen, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let (chosen, top) = logprobs(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let expect = |l: f32| (f64::from(l) - z.ln()) as f32;
        assert!((chosen - expect(2.0)).abs() < 1e-6);
        // Ties keep the lower id first.
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!((top[0].logprob - expect(3.0)).abs() < 1e-6);
        let total: f32 = logits.iter().map(|&l| expect(l).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(logprobs(&[f32::NEG_INFINITY; 3], 0, 2).0.is_nan());
        assert!(logprobs(&logits, 0, 0).1.is_empty());
    }
}
