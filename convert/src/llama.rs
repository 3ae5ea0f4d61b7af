//! Llama-family weights in Hugging Face's layout, from GGUF files and llama2.c
//! checkpoints.
//!
//! Two things change between the layouts besides tensor names:
//!
//! * **Rotary pairs.** Meta's original code, llama2.c and llama.cpp's `llama`
//!   architecture rotate adjacent pairs `(2i, 2i+1)` of each head; Hugging Face rotates
//!   `(i, i + d/2)`. `convert_hf_to_gguf.py` permutes the rows of the query and key
//!   projections to go one way; [`unpermute`] goes back. The permutation only renames
//!   rows, so the model computes the same function.
//! * **Tied classifier.** A missing `output.weight` (or a positive llama2.c vocab size)
//!   means the classifier is the embedding: `tie_word_embeddings`.
//!
//! Every tensor is converted to `f32`: dequantised GGUF types lose nothing further.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::error::ConvertError;
use crate::gguf::GgufFile;
use crate::llama2c::{Checkpoint, Llama2cConfig};

/// The hyper-parameters of a Llama model, as in a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    /// Model width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base.
    pub rope_theta: f64,
    /// Context length the model was trained with.
    pub max_position_embeddings: usize,
    /// Whether the classifier is the embedding.
    pub tie_word_embeddings: bool,
    /// BOS id.
    pub bos_token_id: Option<u32>,
    /// EOS id.
    pub eos_token_id: Option<u32>,
}

impl LlamaParams {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The `config.json` of a `LlamaForCausalLM` folder.
    pub fn config_json(&self) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
        })
    }
}

/// A Llama model in Hugging Face's layout: parameters and `f32` tensors by HF name.
#[derive(Debug, Clone)]
pub struct HfLlama {
    /// Hyper-parameters.
    pub params: LlamaParams,
    /// Tensors by Hugging Face name (`model.layers.0.self_attn.q_proj.weight`, ...).
    pub tensors: HashMap<String, Tensor>,
}

/// Rows of a query/key projection from adjacent-pair rotary order to Hugging Face's
/// half-split order: `(heads·d, in)` viewed as `(heads, d/2, 2, in)` → `(heads, 2, d/2, in)`.
pub fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if heads == 0 || rows % (heads * 2) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {heads} heads of pairs");
    }
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// The inverse of [`unpermute`]: Hugging Face's order to adjacent pairs.
pub fn permute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if heads == 0 || rows % (heads * 2) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {heads} heads of pairs");
    }
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Reads the parameters of a GGUF file of architecture `llama`, checking that every
/// tensor the architecture needs is present with the shape the parameters predict.
pub fn gguf_params(gguf: &GgufFile) -> Result<LlamaParams, ConvertError> {
    let arch = gguf.architecture().unwrap_or("");
    if arch != "llama" {
        return Err(ConvertError::unsupported(
            gguf.path(),
            format!("the architecture {arch:?} (only \"llama\" is read)"),
        ));
    }
    if gguf.content().tensor_infos.is_empty() {
        return Err(gguf.invalid("the file holds no tensors (a vocabulary-only GGUF, not a model)"));
    }
    let need = |key: &str| {
        gguf.get_u64(&format!("llama.{key}"))
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| gguf.invalid(format!("missing or invalid metadata llama.{key}")))
    };
    let hidden = need("embedding_length")?;
    let ffn = need("feed_forward_length")?;
    let layers = need("block_count")?;
    let heads = need("attention.head_count")?;
    let kv_heads = match gguf.get_u64("llama.attention.head_count_kv") {
        None => heads,
        Some(_) => need("attention.head_count_kv")?,
    };
    if hidden % heads != 0 || heads % kv_heads != 0 || (hidden / heads) % 2 != 0 {
        return Err(gguf.invalid(format!(
            "inconsistent shape: {hidden} wide with {heads} heads and {kv_heads} key/value heads"
        )));
    }
    let head_dim = hidden / heads;
    if let Some(rope) = gguf.get_u64("llama.rope.dimension_count") {
        if rope != head_dim as u64 {
            return Err(ConvertError::unsupported(
                gguf.path(),
                format!("partial rotary embeddings ({rope} of {head_dim} dimensions)"),
            ));
        }
    }
    if gguf.get_u64("llama.expert_count").is_some_and(|n| n > 1) {
        return Err(ConvertError::unsupported(
            gguf.path(),
            "mixture-of-experts models",
        ));
    }
    let embedding = gguf
        .tensor_info("token_embd.weight")
        .ok_or_else(|| gguf.invalid("missing tensor token_embd.weight"))?;
    let vocab = match embedding.shape.dims() {
        [v, h] if *h == hidden && *v > 0 => *v,
        other => {
            return Err(gguf.invalid(format!(
                "token_embd.weight has shape {other:?}, expected [vocab, {hidden}]"
            )))
        }
    };
    let kv = head_dim * kv_heads;
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        ("output_norm.weight".into(), vec![hidden]),
        ("token_embd.weight".into(), vec![vocab, hidden]),
    ];
    for l in 0..layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        expected.extend([
            (b("attn_norm"), vec![hidden]),
            (b("attn_q"), vec![hidden, hidden]),
            (b("attn_k"), vec![kv, hidden]),
            (b("attn_v"), vec![kv, hidden]),
            (b("attn_output"), vec![hidden, hidden]),
            (b("ffn_norm"), vec![hidden]),
            (b("ffn_gate"), vec![ffn, hidden]),
            (b("ffn_down"), vec![hidden, ffn]),
            (b("ffn_up"), vec![ffn, hidden]),
        ]);
    }
    let tied = gguf.tensor_info("output.weight").is_none();
    if !tied {
        expected.push(("output.weight".into(), vec![vocab, hidden]));
    }
    for (name, shape) in &expected {
        match gguf.tensor_info(name) {
            None => return Err(gguf.invalid(format!("missing tensor {name}"))),
            Some(info) if info.shape.dims() != shape.as_slice() => {
                return Err(gguf.invalid(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    info.shape.dims()
                )))
            }
            Some(_) => {}
        }
    }
    const EPS: &str = "llama.attention.layer_norm_rms_epsilon";
    // Missing and present-but-unusable are different problems, said differently.
    let eps = match (gguf.get(EPS).is_some(), gguf.get_f64(EPS)) {
        (false, _) => return Err(gguf.invalid(format!("missing {EPS}"))),
        (true, None) => return Err(gguf.invalid(format!("{EPS} is not a number"))),
        (true, Some(e)) if !(e.is_finite() && e > 0.0) => {
            return Err(gguf.invalid(format!("{EPS} is {e}; it must be a finite number above 0")))
        }
        (true, Some(e)) => e,
    };
    let theta = gguf.get_f64("llama.rope.freq_base").unwrap_or(10_000.0);
    if !(theta.is_finite() && theta > 0.0) {
        return Err(gguf.invalid(format!("invalid llama.rope.freq_base {theta}")));
    }
    let id = |key: &str| gguf.get_u32(key).filter(|&v| (v as usize) < vocab);
    Ok(LlamaParams {
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        vocab_size: vocab,
        rms_norm_eps: eps,
        rope_theta: theta,
        max_position_embeddings: gguf
            .get_u64("llama.context_length")
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(2048),
        tie_word_embeddings: tied,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
    })
}

/// Every tensor of a `llama` GGUF file, dequantised to `f32`, in Hugging Face's layout.
pub fn from_gguf(gguf: &GgufFile) -> Result<HfLlama, ConvertError> {
    let params = gguf_params(gguf)?;
    let path = gguf.path();
    let mut file =
        runanywhere_formats::fs::open_regular(path).map_err(|e| ConvertError::io(path, e))?;
    let candle = |e: candle_core::Error| ConvertError::candle(path, e);
    let mut read = |name: &str| -> Result<Tensor, ConvertError> {
        let q = gguf
            .content()
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(candle)?;
        q.dequantize(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(candle)
    };
    let mut tensors = HashMap::new();
    tensors.insert(
        "model.embed_tokens.weight".to_string(),
        read("token_embd.weight")?,
    );
    tensors.insert("model.norm.weight".to_string(), read("output_norm.weight")?);
    if !params.tie_word_embeddings {
        tensors.insert("lm_head.weight".to_string(), read("output.weight")?);
    }
    for l in 0..params.num_hidden_layers {
        let hf = |n: &str| format!("model.layers.{l}.{n}.weight");
        let gg = |n: &str| format!("blk.{l}.{n}.weight");
        let q = unpermute(&read(&gg("attn_q"))?, params.num_attention_heads).map_err(candle)?;
        let k = unpermute(&read(&gg("attn_k"))?, params.num_key_value_heads).map_err(candle)?;
        tensors.insert(hf("self_attn.q_proj"), q);
        tensors.insert(hf("self_attn.k_proj"), k);
        for (h, g) in [
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.down_proj", "ffn_down"),
            ("mlp.up_proj", "ffn_up"),
        ] {
            tensors.insert(hf(h), read(&gg(g))?);
        }
    }
    Ok(HfLlama { params, tensors })
}

/// A llama2.c checkpoint in Hugging Face's layout (its rotary tables are dropped: they
/// are the standard ones for base 10000).
pub fn from_llama2c(path: &Path, checkpoint: Checkpoint) -> Result<HfLlama, ConvertError> {
    let c = checkpoint.config;
    let params = LlamaParams {
        hidden_size: c.dim,
        intermediate_size: c.hidden_dim,
        num_hidden_layers: c.n_layers,
        num_attention_heads: c.n_heads,
        num_key_value_heads: c.n_kv_heads,
        vocab_size: c.vocab_size,
        rms_norm_eps: Llama2cConfig::NORM_EPS,
        rope_theta: Llama2cConfig::ROPE_THETA,
        max_position_embeddings: c.seq_len,
        tie_word_embeddings: c.shared_classifier,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    };
    let mut tensors = checkpoint.tensors;
    tensors.retain(|name, _| !name.starts_with("rot."));
    for l in 0..c.n_layers {
        for (proj, heads) in [("q_proj", c.n_heads), ("k_proj", c.n_kv_heads)] {
            let name = format!("model.layers.{l}.self_attn.{proj}.weight");
            let w = tensors
                .get(&name)
                .ok_or_else(|| ConvertError::invalid(path, format!("missing {name}")))?;
            let w = unpermute(w, heads).map_err(|e| ConvertError::candle(path, e))?;
            tensors.insert(name, w);
        }
    }
    Ok(HfLlama { params, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_moves_adjacent_pairs_to_halves_and_permute_undoes_it() {
        // One head of width 4 (pairs (0,1) and (2,3)), rows numbered 0..4, 2 heads.
        let w = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let u = unpermute(&w, 2).unwrap();
        let rows: Vec<f32> = u.flatten_all().unwrap().to_vec1().unwrap();
        // Head 0: first members of pairs (0, 2), then second members (1, 3).
        assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        let back: Vec<f32> = permute(&u, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, (0..8).map(|i| i as f32).collect::<Vec<_>>());
        assert!(unpermute(&w, 3).is_err());
    }
}
