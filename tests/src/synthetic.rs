//! Random-weight models of real shapes, for speed benchmarks: the weights are noise, the
//! shapes (and so the work per token) are those of a real model. The tokenizer is
//! stories260K's, so prompts tokenize as they would on a real model of that vocabulary.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// A llama-architecture shape.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Hidden size.
    pub dim: usize,
    /// Feed-forward size.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Context length.
    pub context: u32,
}

impl Shape {
    /// TinyLlama-1.1B's blocks (2048 wide, 22 layers, 32 heads, 4 KV heads, 5632 FFN):
    /// a 1B-class model (about 0.97 B parameters with stories260K's 512-token vocabulary).
    pub const TINYLLAMA_1B: Shape = Shape {
        dim: 2048,
        hidden: 5632,
        layers: 22,
        heads: 32,
        kv_heads: 4,
        context: 2048,
    };
}

/// Deterministic noise in [-scale, scale) (xorshift64*).
fn noise(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            (x as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Writes a GGUF of `shape` with random Q8_0 weights and stories260K's tokenizer
/// (`tokenizer_from`, a GGUF whose `tokenizer.*` metadata is copied) to `out`.
pub fn write_llama_gguf(
    shape: Shape,
    tokenizer_from: &Path,
    out: &Path,
) -> candle_core::Result<()> {
    let mut source = std::fs::File::open(tokenizer_from)?;
    let content = gguf_file::Content::read(&mut source)?;
    let vocab = match content.metadata.get("tokenizer.ggml.tokens") {
        Some(gguf_file::Value::Array(tokens)) => tokens.len(),
        _ => candle_core::bail!("{} has no tokenizer", tokenizer_from.display()),
    };
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let u32v = |v: usize| gguf_file::Value::U32(v as u32);
    metadata.extend([
        (
            "general.architecture".into(),
            gguf_file::Value::String("llama".into()),
        ),
        (
            "general.name".into(),
            gguf_file::Value::String("random-tinyllama-shape".into()),
        ),
        (
            "llama.context_length".into(),
            gguf_file::Value::U32(shape.context),
        ),
        ("llama.embedding_length".into(), u32v(shape.dim)),
        ("llama.feed_forward_length".into(), u32v(shape.hidden)),
        ("llama.block_count".into(), u32v(shape.layers)),
        ("llama.attention.head_count".into(), u32v(shape.heads)),
        ("llama.attention.head_count_kv".into(), u32v(shape.kv_heads)),
        (
            "llama.rope.dimension_count".into(),
            u32v(shape.dim / shape.heads),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            gguf_file::Value::F32(1e-5),
        ),
        ("general.file_type".into(), gguf_file::Value::U32(7)), // Q8_0
    ]);
    let kv = shape.dim / shape.heads * shape.kv_heads;
    // GGUF dims are (columns, rows) reversed from candle's (rows, columns).
    let mut specs: Vec<(String, Vec<usize>, bool)> = vec![
        ("token_embd.weight".into(), vec![vocab, shape.dim], true),
        ("output_norm.weight".into(), vec![shape.dim], false),
        ("output.weight".into(), vec![vocab, shape.dim], true),
    ];
    for l in 0..shape.layers {
        let b = |name: &str| format!("blk.{l}.{name}.weight");
        specs.extend([
            (b("attn_norm"), vec![shape.dim], false),
            (b("attn_q"), vec![shape.dim, shape.dim], true),
            (b("attn_k"), vec![kv, shape.dim], true),
            (b("attn_v"), vec![kv, shape.dim], true),
            (b("attn_output"), vec![shape.dim, shape.dim], true),
            (b("ffn_norm"), vec![shape.dim], false),
            (b("ffn_gate"), vec![shape.hidden, shape.dim], true),
            (b("ffn_up"), vec![shape.hidden, shape.dim], true),
            (b("ffn_down"), vec![shape.dim, shape.hidden], true),
        ]);
    }
    let mut tensors = Vec::with_capacity(specs.len());
    for (i, (name, dims, quantized)) in specs.into_iter().enumerate() {
        let len = dims.iter().product();
        let tensor = if quantized {
            let values = noise(i as u64 + 1, len, 0.05);
            QTensor::quantize(
                &Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?,
                GgmlDType::Q8_0,
            )?
        } else {
            // Norm weights near 1, as trained ones are.
            let values: Vec<f32> = noise(i as u64 + 1, len, 0.1)
                .iter()
                .map(|x| 1.0 + x)
                .collect();
            QTensor::quantize(
                &Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?,
                GgmlDType::F32,
            )?
        };
        tensors.push((name, tensor));
    }
    let meta: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    gguf_file::write(&mut file, &meta, &refs)?;
    std::io::Write::flush(&mut file)?;
    Ok(())
}
