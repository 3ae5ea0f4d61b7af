//! Hugging Face folders: `config.json` + `*.safetensors` (sharded or not), run by
//! Candle's `llama` (Llama, Mistral) or `qwen2` models.
//!
//! Candle's loaders unwrap some missing tensors (a panic), so before any of them runs,
//! every tensor the architecture needs is checked against the safetensors headers:
//! present, of the predicted shape, and `f32`/`f16`/`bf16` (converted to `f32` on load:
//! this engine computes in `f32` throughout). Mistral is run as Llama, which it is but
//! for sliding-window attention; the window only matters beyond its length (4096 tokens
//! in Mistral v0.1, absent from later versions), and a warning says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, qwen2};
use runanywhere_convert::hf::read_json;
use runanywhere_convert::ConvertError;
use serde_json::Value;

use super::{input, last_logits, Backend};

/// Positions used when neither the request nor the config says.
const DEFAULT_POSITIONS: usize = 4096;

/// The architectures this engine runs from a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arch {
    /// `LlamaForCausalLM`.
    Llama,
    /// `MistralForCausalLM`, run as Llama.
    Mistral,
    /// `Qwen2ForCausalLM`.
    Qwen2,
}

impl Arch {
    /// The name reported in the model info.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// A folder whose config has been read and whose weight files have been found.
#[derive(Debug)]
pub(crate) struct HfFolder {
    /// The folder.
    pub(crate) dir: PathBuf,
    /// The architecture.
    pub(crate) arch: Arch,
    /// `config.json`.
    config: Value,
    /// The safetensors files.
    weights: Vec<PathBuf>,
    /// Embedding rows.
    pub(crate) vocab_size: usize,
    /// Trained context length.
    pub(crate) max_positions: usize,
}

impl HfFolder {
    /// Reads `config.json` and finds the weight files (from
    /// `model.safetensors.index.json`, else every `*.safetensors`).
    pub(crate) fn open(dir: &Path) -> Result<Self, ConvertError> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?
            .ok_or_else(|| ConvertError::invalid(&config_path, "missing"))?;
        let model_type = config["model_type"].as_str().unwrap_or("");
        let arch = match model_type {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ConvertError::unsupported(
                    &config_path,
                    format!("model_type {other:?} (llama, mistral and qwen2 are run)"),
                ))
            }
        };
        let vocab_size = positive(&config, "vocab_size")
            .ok_or_else(|| ConvertError::invalid(&config_path, "no valid vocab_size"))?;
        let max_positions =
            positive(&config, "max_position_embeddings").unwrap_or(DEFAULT_POSITIONS);
        Ok(HfFolder {
            dir: dir.to_path_buf(),
            arch,
            weights: weight_files(dir)?,
            config,
            vocab_size,
            max_positions,
        })
    }

    /// Checks the weights and builds the model with rotary tables for `context`
    /// positions. Also returns the number of parameters in the files.
    pub(crate) fn load(&self, context: usize) -> Result<(HfModel, u64), ConvertError> {
        let config_path = self.dir.join("config.json");
        let bad_config = |e: serde_json::Error| {
            ConvertError::invalid(
                &config_path,
                format!("not a valid {} config: {e}", self.arch.name()),
            )
        };
        // SAFETY: the files are mapped read-only and copied into owned `f32` tensors while
        // the model is built; the mapping is dropped at the end of this function. As with
        // every memory-mapped model loader, the files must not be truncated meanwhile.
        let st = unsafe { MmapedSafetensors::multi(&self.weights) }.map_err(|e| {
            ConvertError::invalid(&self.dir, format!("unreadable safetensors: {e}"))
        })?;
        let parameters: u64 = st
            .tensors()
            .iter()
            .map(|(_, view)| view.shape().iter().product::<usize>() as u64)
            .sum();
        let mut config = self.config.clone();
        config["max_position_embeddings"] = Value::from(context.max(self.max_positions));
        let model = match self.arch {
            Arch::Llama | Arch::Mistral => {
                if self.arch == Arch::Mistral {
                    tracing::warn!(
                        "Mistral runs as Llama: no sliding-window attention (outputs differ \
                         only beyond the window)"
                    );
                }
                let cfg: llama::LlamaConfig = serde_json::from_value(config).map_err(bad_config)?;
                let cfg = cfg.into_config(false);
                self.check_head_dim(cfg.hidden_size, cfg.num_attention_heads)?;
                let tensors = llama_tensors(
                    cfg.hidden_size,
                    cfg.intermediate_size,
                    cfg.num_hidden_layers,
                    cfg.num_attention_heads,
                    cfg.num_key_value_heads,
                    cfg.vocab_size,
                    false,
                );
                check_tensors(&self.dir, &st, &tensors, !cfg.tie_word_embeddings)?;
                let vb = VarBuilder::from_backend(Box::new(st), DType::F32, Device::Cpu);
                let model =
                    llama::Llama::load(vb, &cfg).map_err(|e| ConvertError::candle(&self.dir, e))?;
                let cache = llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu)
                    .map_err(|e| ConvertError::candle(&self.dir, e))?;
                HfModel::Llama(Box::new(LlamaRun { model, cfg, cache }))
            }
            Arch::Qwen2 => {
                let cfg: qwen2::Config = serde_json::from_value(config).map_err(bad_config)?;
                self.check_head_dim(cfg.hidden_size, cfg.num_attention_heads)?;
                let tensors = llama_tensors(
                    cfg.hidden_size,
                    cfg.intermediate_size,
                    cfg.num_hidden_layers,
                    cfg.num_attention_heads,
                    cfg.num_key_value_heads,
                    cfg.vocab_size,
                    true,
                );
                check_tensors(&self.dir, &st, &tensors, false)?;
                let vb = VarBuilder::from_backend(Box::new(st), DType::F32, Device::Cpu);
                let model = qwen2::ModelForCausalLM::new(&cfg, vb)
                    .map_err(|e| ConvertError::candle(&self.dir, e))?;
                HfModel::Qwen2(Box::new(model))
            }
        };
        Ok((model, parameters))
    }

    /// Candle's models derive the head width from the model width.
    fn check_head_dim(&self, hidden: usize, heads: usize) -> Result<(), ConvertError> {
        let derived = hidden.checked_div(heads).unwrap_or(0);
        match positive(&self.config, "head_dim") {
            Some(h) if h != derived => Err(ConvertError::unsupported(
                &self.dir.join("config.json"),
                format!(
                    "head_dim {h} different from hidden_size / num_attention_heads ({derived})"
                ),
            )),
            _ if heads == 0 || hidden % heads != 0 => Err(ConvertError::invalid(
                &self.dir.join("config.json"),
                format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}"),
            )),
            _ => Ok(()),
        }
    }
}

/// A positive integer from the config.
fn positive(config: &Value, key: &str) -> Option<usize> {
    config[key]
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0)
}

/// The safetensors files of a folder.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let index_path = dir.join("model.safetensors.index.json");
    if let Some(index) = read_json(&index_path)? {
        let files: BTreeSet<&str> = index["weight_map"]
            .as_object()
            .ok_or_else(|| ConvertError::invalid(&index_path, "no weight_map"))?
            .values()
            .filter_map(Value::as_str)
            .collect();
        let mut paths = Vec::new();
        for f in files {
            let p = dir.join(f);
            if Path::new(f).components().count() != 1 || !p.is_file() {
                return Err(ConvertError::invalid(
                    &index_path,
                    format!("lists {f:?}, which is not a file in the folder"),
                ));
            }
            paths.push(p);
        }
        return Ok(paths);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConvertError::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ConvertError::invalid(dir, "no *.safetensors files"));
    }
    Ok(paths)
}

/// The tensors of a Llama-style decoder (with q/k/v biases for Qwen2), without the
/// classifier.
fn llama_tensors(
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    qkv_bias: bool,
) -> Vec<(String, Vec<usize>)> {
    let kv = hidden / heads.max(1) * kv_heads;
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![vocab, hidden]),
        ("model.norm.weight".to_string(), vec![hidden]),
    ];
    for l in 0..layers {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        t.extend([
            (p("input_layernorm.weight"), vec![hidden]),
            (p("post_attention_layernorm.weight"), vec![hidden]),
            (p("self_attn.q_proj.weight"), vec![hidden, hidden]),
            (p("self_attn.k_proj.weight"), vec![kv, hidden]),
            (p("self_attn.v_proj.weight"), vec![kv, hidden]),
            (p("self_attn.o_proj.weight"), vec![hidden, hidden]),
            (p("mlp.gate_proj.weight"), vec![ffn, hidden]),
            (p("mlp.up_proj.weight"), vec![ffn, hidden]),
            (p("mlp.down_proj.weight"), vec![hidden, ffn]),
        ]);
        if qkv_bias {
            t.extend([
                (p("self_attn.q_proj.bias"), vec![hidden]),
                (p("self_attn.k_proj.bias"), vec![kv]),
                (p("self_attn.v_proj.bias"), vec![kv]),
            ]);
        }
    }
    t
}

/// Checks presence, shape and type of every tensor (and of `lm_head.weight` when
/// `need_head`; when present anyway it must fit too).
fn check_tensors(
    dir: &Path,
    st: &MmapedSafetensors,
    expected: &[(String, Vec<usize>)],
    need_head: bool,
) -> Result<(), ConvertError> {
    let head = expected
        .first()
        .map(|(_, shape)| ("lm_head.weight".to_string(), shape.clone()));
    let mut all: Vec<(String, Vec<usize>, bool)> = expected
        .iter()
        .map(|(n, s)| (n.clone(), s.clone(), true))
        .collect();
    if let Some((name, shape)) = head {
        all.push((name, shape, need_head));
    }
    for (name, shape, required) in all {
        match st.get(&name) {
            Err(_) if !required => {}
            Err(_) => return Err(ConvertError::invalid(dir, format!("missing tensor {name}"))),
            Ok(view) => {
                if view.shape() != shape.as_slice() {
                    return Err(ConvertError::invalid(
                        dir,
                        format!(
                            "tensor {name} has shape {:?}, expected {shape:?}",
                            view.shape()
                        ),
                    ));
                }
                use safetensors::Dtype;
                if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                    return Err(ConvertError::unsupported(
                        dir,
                        format!("tensor {name} of type {:?}", view.dtype()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Candle's Llama with its configuration and KV cache.
pub(crate) struct LlamaRun {
    model: llama::Llama,
    /// For rebuilding the cache.
    cfg: llama::Config,
    cache: llama::Cache,
}

/// A model built from a folder, with its KV cache.
pub(crate) enum HfModel {
    /// Llama and Mistral.
    Llama(Box<LlamaRun>),
    /// Qwen2 (its cache is inside the model).
    Qwen2(Box<qwen2::ModelForCausalLM>),
}

impl Backend for HfModel {
    fn reset(&mut self) -> candle_core::Result<()> {
        match self {
            HfModel::Llama(run) => {
                run.cache = llama::Cache::new(true, DType::F32, &run.cfg, &Device::Cpu)?;
            }
            HfModel::Qwen2(model) => model.clear_kv_cache(),
        }
        Ok(())
    }

    fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        let x = input(ids)?;
        let logits = match self {
            HfModel::Llama(run) => run.model.forward(&x, pos, &mut run.cache)?,
            HfModel::Qwen2(model) => model.forward(&x, pos)?,
        };
        last_logits(&logits)
    }
}
