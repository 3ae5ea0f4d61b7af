//! GGUF llama-family models through Candle's `quantized_llama`, which keeps quantised
//! weights quantised and dequantises F32/F16/BF16 ones to `f32`.

use candle_core::Device;
use candle_transformers::models::quantized_llama::ModelWeights;
use runanywhere_convert::gguf::GgufFile;
use runanywhere_convert::ConvertError;

use super::{input, last_logits, Backend};

/// Positions `quantized_llama` has rotary tables for.
pub(crate) const MAX_POSITIONS: usize = candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

/// A GGUF `llama` model.
pub(crate) struct GgufLlama {
    weights: ModelWeights,
}

impl GgufLlama {
    /// Loads the weights of a checked GGUF file (see
    /// [`runanywhere_convert::llama::gguf_params`], which must have accepted it).
    pub(crate) fn load(gguf: GgufFile) -> Result<Self, ConvertError> {
        let path = gguf.path().to_path_buf();
        let mut file =
            runanywhere_formats::fs::open_regular(&path).map_err(|e| ConvertError::io(&path, e))?;
        let weights = ModelWeights::from_gguf(gguf.into_content(), &mut file, &Device::Cpu)
            .map_err(|e| ConvertError::candle(&path, e))?;
        Ok(GgufLlama { weights })
    }
}

impl Backend for GgufLlama {
    fn reset(&mut self) -> candle_core::Result<()> {
        self.weights.clear_kv_cache();
        Ok(())
    }

    fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        last_logits(&self.weights.forward(&input(ids)?, pos)?)
    }
}
