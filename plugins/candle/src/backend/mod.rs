//! The model implementations behind one small interface: run some tokens, get the
//! logits of the last one.
//!
//! Each format has its own Candle model, because Candle has one per layout:
//! `quantized_llama` for GGUF (quantised matmuls, adjacent-pair rotary), `llama2_c` for
//! llama2.c checkpoints (adjacent-pair rotary, the file's own rotary tables), and
//! `llama` / `qwen2` for Hugging Face folders (half-split rotary). All compute in `f32`.
//! The KV cache lives inside the backend for a whole generation; [`Backend::reset`]
//! empties it before the next one.

mod gguf;
mod hf;
mod llama2c;

pub(crate) use gguf::{GgufLlama, MAX_POSITIONS as GGUF_MAX_POSITIONS};
pub(crate) use hf::HfFolder;
pub(crate) use llama2c::Llama2c;

use candle_core::{DType, Tensor};

/// A loaded Candle model with a KV cache: what [`crate::generate`] adapts to the kit's
/// [`runanywhere_plugin_api::generate::Forward`] (running it on the model's thread pool).
pub(crate) trait Backend: Send {
    /// Empties the KV cache: the next [`Backend::forward`] starts at position 0.
    fn reset(&mut self) -> candle_core::Result<()>;

    /// Runs `ids` at positions `pos..pos + ids.len()` (all earlier positions are in the
    /// cache) and returns the logits after the last of them.
    fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>>;
}

/// `ids` as the `(1, n)` input tensor every model takes.
fn input(ids: &[u32]) -> candle_core::Result<Tensor> {
    Tensor::new(ids, &candle_core::Device::Cpu)?.unsqueeze(0)
}

/// The last row of a logits tensor of shape `(1, vocab)`, `(1, n, vocab)` or
/// `(1, 1, vocab)`, as `f32`.
fn last_logits(logits: &Tensor) -> candle_core::Result<Vec<f32>> {
    let vocab = logits.dim(candle_core::D::Minus1)?;
    let rows = logits.elem_count() / vocab.max(1);
    logits
        .reshape((rows, vocab))?
        .get(rows.saturating_sub(1))?
        .to_dtype(DType::F32)?
        .to_vec1()
}
