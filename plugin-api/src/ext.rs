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

use abi_stable::std_types::RVec;

use crate::abi::{GenerateRequest, GenerationStats, KeyValue, Prompt, SinkControl};
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

/// How token states become one vector per input.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// What the model's metadata says, else [`Pooling::Mean`].
    Default,
    /// The mean over the input's tokens.
    Mean,
    /// The first token's state (BERT's `[CLS]`).
    Cls,
    /// The last token's state (what a causal model has seen all of the input at).
    Last,
    /// A code this build does not know.
    Unknown(u32),
}

impl Pooling {
    /// The stable integer code.
    pub fn code(self) -> u32 {
        match self {
            Pooling::Default => 0,
            Pooling::Mean => 1,
            Pooling::Cls => 2,
            Pooling::Last => 3,
            Pooling::Unknown(c) => c,
        }
    }

    /// The pooling of a code.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Pooling::Default,
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::Last,
            c => Pooling::Unknown(c),
        }
    }

    /// The pooling named `mean`, `cls` or `last`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "mean" => Some(Pooling::Mean),
            "cls" => Some(Pooling::Cls),
            "last" => Some(Pooling::Last),
            _ => None,
        }
    }

    /// Its name (`default` for [`Pooling::Default`]).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Default => "default",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::Unknown(_) => "unknown",
        }
    }
}

/// What to embed.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct EmbedRequest {
    /// The inputs: text (tokenized with the model's special prefix, BOS) or ids.
    pub inputs: RVec<Prompt>,
    /// [`Pooling`] code.
    pub pooling: u32,
    /// Scale each vector to unit length.
    pub normalize: bool,
    /// Optional extra knobs (unknown keys are ignored).
    pub extensions: RVec<KeyValue>,
}

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
    /// One vector per input of `request` from the model with `handle`. Never unwinds.
    pub embed:
        extern "C" fn(handle: u64, request: EmbedRequest) -> RResult<RVec<RVec<f32>>, EngineError>,
}

/// One vector from the states of an input's tokens (`states[i]` for token `i`, each
/// `dims` long), pooled as `pooling` says ([`Pooling::Default`] is the mean). The one
/// pooling every engine that hands over token states uses.
pub fn pool(states: &[Vec<f32>], pooling: Pooling) -> Result<Vec<f32>, EngineError> {
    let (Some(first), Some(last)) = (states.first(), states.last()) else {
        return Err(EngineError::invalid_request(
            "an input to embed has no tokens",
        ));
    };
    match pooling {
        Pooling::Cls => Ok(first.clone()),
        Pooling::Last => Ok(last.clone()),
        Pooling::Mean | Pooling::Default => {
            let mut sum = vec![0f64; first.len()];
            for state in states {
                for (s, &x) in sum.iter_mut().zip(state) {
                    *s += f64::from(x);
                }
            }
            let n = states.len() as f64;
            Ok(sum.into_iter().map(|s| (s / n) as f32).collect())
        }
        Pooling::Unknown(c) => Err(EngineError::invalid_request(format!(
            "pooling code {c} is not one this plugin knows (mean, cls, last)"
        ))),
    }
}

/// Scales `v` to unit (L2) length; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
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
    fn pooling_and_normalizing() {
        let states = vec![vec![1.0, 2.0], vec![3.0, 6.0]];
        assert_eq!(pool(&states, Pooling::Mean).unwrap(), vec![2.0, 4.0]);
        assert_eq!(pool(&states, Pooling::Default).unwrap(), vec![2.0, 4.0]);
        assert_eq!(pool(&states, Pooling::Cls).unwrap(), vec![1.0, 2.0]);
        assert_eq!(pool(&states, Pooling::Last).unwrap(), vec![3.0, 6.0]);
        assert!(pool(&[], Pooling::Mean).is_err());
        assert!(pool(&states, Pooling::from_code(9)).is_err());
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
        for p in [Pooling::Mean, Pooling::Cls, Pooling::Last] {
            assert_eq!(Pooling::from_name(p.name()), Some(p));
            assert_eq!(Pooling::from_code(p.code()), p);
        }
    }

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
