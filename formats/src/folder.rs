//! Model folders: a Hugging Face folder (`config.json` + `*.safetensors`, maybe sharded
//! with `model.safetensors.index.json`) or an ONNX folder (ONNX Runtime GenAI's
//! `genai_config.json`, or Optimum's `config.json` + `*.onnx`). Each model file is
//! checked, and the JSON configs give the facts the weights do not carry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::facts::{kv_bytes_per_token, Facts, Verification};
use crate::verify::verify_file;
use crate::{sniff_dir, ModelFormat};

/// JSON configs larger than this are refused rather than read.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Verifies the folder at `path`.
pub(crate) fn verify_dir(path: &Path, v: &mut Verification) {
    let mut files: Vec<(String, PathBuf)> = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
            .collect(),
        Err(e) => return v.problem(path, None, format!("cannot list the folder: {e}")),
    };
    files.sort();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let Some(format) = sniff_dir(&names) else {
        return v.problem(
            path,
            None,
            format!(
                "not a model folder: expected config.json with *.safetensors, or *.onnx \
                 (with genai_config.json or config.json); it holds {} files",
                files.len()
            ),
        );
    };
    v.format = Some(format);
    let with_ext = |ext: &str| -> Vec<&PathBuf> {
        files
            .iter()
            .filter(|(n, _)| n.ends_with(ext))
            .map(|(_, p)| p)
            .collect()
    };
    match format {
        ModelFormat::Safetensors => {
            let config = read_json(v, &path.join("config.json"));
            if let Some(index) = names
                .contains(&"model.safetensors.index.json")
                .then(|| read_json(v, &path.join("model.safetensors.index.json")))
            {
                check_shards(v, path, index.as_ref(), &names);
            }
            for file in with_ext(".safetensors") {
                if v.problem.is_some() {
                    break;
                }
                verify_file(file, v);
            }
            if let Some(config) = config {
                let bytes = config_element_bytes(&config, &v.facts);
                hf_config_facts(&config, bytes, &mut v.facts);
            }
        }
        ModelFormat::Onnx => {
            let genai = names
                .contains(&"genai_config.json")
                .then(|| read_json(v, &path.join("genai_config.json")))
                .flatten();
            let config = names
                .contains(&"config.json")
                .then(|| read_json(v, &path.join("config.json")))
                .flatten();
            let models = with_ext(".onnx");
            if models.is_empty() {
                v.problem(path, None, "the folder has no .onnx model file".into());
            }
            if let Some(file) = genai
                .as_ref()
                .and_then(|g| g.pointer("/model/decoder/filename"))
            {
                let file = file.as_str().unwrap_or_default();
                if !names.contains(&file) {
                    v.problem(
                        path.join("genai_config.json"),
                        None,
                        format!("the decoder file '{file}' it names is not in the folder"),
                    );
                }
            }
            for file in models {
                if v.problem.is_some() {
                    break;
                }
                verify_file(file, v);
            }
            let bytes = element_bytes(v.facts.quantization.as_deref());
            if let Some(config) = config {
                hf_config_facts(&config, bytes, &mut v.facts);
            }
            if let Some(genai) = genai {
                genai_facts(&genai, bytes, &mut v.facts);
            }
        }
        ModelFormat::Gguf | ModelFormat::Llama2c | ModelFormat::Pte | ModelFormat::Tflite => {}
    }
    // The size is that of every file in the folder (tokenizers included).
    v.size = files
        .iter()
        .map(|(_, p)| crate::verify::file_len(p))
        .fold(0u64, u64::saturating_add);
}

/// Reads a JSON file; a problem (and `None`) when it is too large or malformed.
fn read_json(v: &mut Verification, path: &Path) -> Option<Value> {
    let size = crate::verify::file_len(path);
    if size > MAX_CONFIG_BYTES {
        v.problem(
            path,
            None,
            format!("{size} bytes is too large for a JSON config"),
        );
        return None;
    }
    match crate::fs::read_regular(path).map(|bytes| serde_json::from_slice::<Value>(&bytes)) {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            v.problem(path, None, format!("not valid JSON: {e}"));
            None
        }
        Err(e) => {
            v.problem(path, None, format!("cannot read: {e}"));
            None
        }
    }
}

/// Every shard the index's `weight_map` names must be in the folder.
fn check_shards(v: &mut Verification, dir: &Path, index: Option<&Value>, names: &[&str]) {
    let Some(index) = index else { return };
    let Some(map) = index.get("weight_map").and_then(Value::as_object) else {
        return v.problem(
            dir.join("model.safetensors.index.json"),
            None,
            "it has no weight_map object".into(),
        );
    };
    let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
    if let Some(missing) = shards.iter().find(|s| !names.contains(s)) {
        v.problem(
            dir.join(missing),
            None,
            "the shard model.safetensors.index.json names is missing".into(),
        );
    }
}

/// Facts from a Hugging Face `config.json`.
fn hf_config_facts(config: &Value, element_bytes: u64, facts: &mut Facts) {
    let int = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| config.get(*k).and_then(Value::as_u64))
    };
    let architecture = config
        .get("model_type")
        .and_then(Value::as_str)
        .or_else(|| config.pointer("/architectures/0").and_then(Value::as_str));
    if let Some(a) = architecture {
        facts.architecture.get_or_insert_with(|| a.to_string());
    }
    if let Some(n) = int(&["max_position_embeddings", "n_positions", "n_ctx"]) {
        facts.context_length.get_or_insert(n);
    }
    let heads = int(&["num_attention_heads", "n_head"]).filter(|&h| h > 0);
    let kv_heads = int(&["num_key_value_heads"]).or(heads);
    let head_dim = int(&["head_dim"]).or_else(|| {
        int(&["hidden_size", "n_embd"])
            .zip(heads)
            .map(|(e, h)| e / h)
    });
    if let (Some(layers), Some(kv), Some(d)) =
        (int(&["num_hidden_layers", "n_layer"]), kv_heads, head_dim)
    {
        if facts.kv_bytes_per_token.is_none() {
            facts.kv_bytes_per_token = kv_bytes_per_token(layers, kv, d, d, element_bytes);
        }
    }
}

/// Facts from ONNX Runtime GenAI's `genai_config.json`.
fn genai_facts(genai: &Value, element_bytes: u64, facts: &mut Facts) {
    let int = |p: &str| genai.pointer(p).and_then(Value::as_u64);
    if let Some(t) = genai.pointer("/model/type").and_then(Value::as_str) {
        facts.architecture = Some(t.to_string());
    }
    if let Some(n) = int("/model/context_length") {
        facts.context_length = Some(n);
    }
    if let (Some(layers), Some(kv), Some(d)) = (
        int("/model/decoder/num_hidden_layers"),
        int("/model/decoder/num_key_value_heads"),
        int("/model/decoder/head_size"),
    ) {
        facts.kv_bytes_per_token = kv_bytes_per_token(layers, kv, d, d, element_bytes);
    }
}

/// KV element width for a Hugging Face folder: the config's `torch_dtype`, else the
/// weights' dominant dtype.
fn config_element_bytes(config: &Value, facts: &Facts) -> u64 {
    match config.get("torch_dtype").and_then(Value::as_str) {
        Some("float32") => 4,
        Some(_) => 2,
        None => element_bytes(facts.quantization.as_deref()),
    }
}

/// Engines keep the KV cache in F32 for F32 weights, in 16 bits otherwise.
fn element_bytes(quantization: Option<&str>) -> u64 {
    if quantization == Some("F32") {
        4
    } else {
        2
    }
}
