//! llama2.c checkpoints through Candle's `llama2_c` model, fed by this workspace's
//! checkpoint reader (Candle's own reader mis-sizes grouped-query key/value weights).
//!
//! The model rotates adjacent pairs with the checkpoint's own rotary tables, as `run.c`
//! does, and uses llama2.c's RMSNorm epsilon of 1e-5. When the requested context is
//! longer than the checkpoint's `seq_len`, the tables are computed for the longer length
//! instead (the same formula).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::llama2_c::{Cache, Config, Llama};
use runanywhere_convert::llama2c::{Checkpoint, Llama2cConfig};

use super::{input, last_logits, Backend};

/// A llama2.c model and its KV cache.
pub(crate) struct Llama2c {
    model: Llama,
    config: Config,
    /// The weights, kept for building a fresh cache (it reads the rotary tables).
    vb: VarBuilder<'static>,
    cache: Cache,
}

impl Llama2c {
    /// Builds the model from a checkpoint, with rotary tables for `context` positions.
    pub(crate) fn new(checkpoint: Checkpoint, context: usize) -> candle_core::Result<Self> {
        let c: Llama2cConfig = checkpoint.config;
        let mut tensors = checkpoint.tensors;
        if context > c.seq_len {
            tensors.retain(|name, _| !name.starts_with("rot."));
        }
        if c.shared_classifier {
            if let Some(embedding) = tensors.get("model.embed_tokens.weight").cloned() {
                tensors.insert("lm_head.weight".to_string(), embedding);
            }
        }
        let config = Config {
            dim: c.dim,
            hidden_dim: c.hidden_dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            vocab_size: c.vocab_size,
            seq_len: c.seq_len.max(context),
            norm_eps: Llama2cConfig::NORM_EPS,
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        // Every tensor was read with the shape the header predicts, so loading finds
        // them all (Candle's loader would panic on a missing one).
        let model = Llama::load(vb.clone(), config.clone())?;
        let cache = Cache::new(true, &config, vb.pp("rot"))?;
        Ok(Llama2c {
            model,
            config,
            vb,
            cache,
        })
    }
}

impl Backend for Llama2c {
    fn reset(&mut self) -> candle_core::Result<()> {
        self.cache = Cache::new(true, &self.config, self.vb.pp("rot"))?;
        Ok(())
    }

    fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        last_logits(&self.model.forward(&input(ids)?, pos, &mut self.cache)?)
    }
}
