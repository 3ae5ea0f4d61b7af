//! Which files make up a model, and what its configuration says.
//!
//! Users download ONNX language models in two layouts:
//!
//! * **ONNX Runtime GenAI folders**: `genai_config.json` names the decoder file
//!   (`model.decoder.filename`), the graph's input and output names (`past_%d`,
//!   `past_key_values.%d.key`, ...), the context length and the special token ids; the
//!   tokenizer is `tokenizer.json` beside it.
//! * **Hugging Face Optimum exports**: `model.onnx` (or `decoder_model_merged.onnx`, or
//!   either under `onnx/`), with `config.json`, `generation_config.json` and
//!   `tokenizer.json` beside it (or, for `onnx/model.onnx`, one level up).
//!
//! A path to an `.onnx` file works too; its configuration and tokenizer are looked for in
//! the same way around it. The configuration is optional and only fills in what the graph
//! does not say itself (context length, special tokens, KV-cache sizes of fully dynamic
//! shapes): [`crate::signature`] reads the graph's real inputs and outputs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{OnnxError, Result};

/// Decoder files of an Optimum export, in order of preference.
const OPTIMUM_FILES: &[&str] = &[
    "model.onnx",
    "decoder_model_merged.onnx",
    "onnx/model.onnx",
    "onnx/decoder_model_merged.onnx",
];

/// The files of one model.
#[derive(Debug)]
pub(crate) struct ModelFiles {
    /// The decoder graph.
    pub(crate) onnx: PathBuf,
    /// `tokenizer.json`.
    pub(crate) tokenizer: PathBuf,
    /// `tokenizer_config.json`, when present (chat template).
    pub(crate) tokenizer_config: Option<PathBuf>,
    /// What the configuration files say.
    pub(crate) config: ModelConfig,
}

/// Graph names that `genai_config.json` may override. `None` = the usual names.
#[derive(Debug, Default, Clone)]
pub(crate) struct IoNames {
    /// The token id input.
    pub(crate) input_ids: Option<String>,
    /// The attention mask input.
    pub(crate) attention_mask: Option<String>,
    /// The position id input.
    pub(crate) position_ids: Option<String>,
    /// Key cache inputs, e.g. `past_key_values.%d.key`.
    pub(crate) past_key: Option<String>,
    /// Value cache inputs, e.g. `past_key_values.%d.value`.
    pub(crate) past_value: Option<String>,
    /// Combined key/value cache inputs, e.g. `past_%d`.
    pub(crate) past: Option<String>,
    /// The logits output.
    pub(crate) logits: Option<String>,
    /// Key cache outputs.
    pub(crate) present_key: Option<String>,
    /// Value cache outputs.
    pub(crate) present_value: Option<String>,
    /// Combined key/value cache outputs, e.g. `present_%d`.
    pub(crate) present: Option<String>,
}

/// What the configuration (`genai_config.json`, or `config.json` +
/// `generation_config.json`) says about the model. Every field is optional.
#[derive(Debug, Default, Clone)]
pub(crate) struct ModelConfig {
    /// The configuration file read, if any.
    pub(crate) source: Option<PathBuf>,
    /// `type` / `model_type`, e.g. `gpt2`.
    pub(crate) architecture: Option<String>,
    /// The context length the model was trained with.
    pub(crate) context_length: Option<u32>,
    /// Rows of the embedding / columns of the logits.
    pub(crate) vocab_size: Option<u32>,
    /// Beginning-of-sequence id.
    pub(crate) bos: Option<u32>,
    /// End-of-sequence ids (several in newer models).
    pub(crate) eos: Vec<u32>,
    /// Number of transformer layers.
    pub(crate) layers: Option<usize>,
    /// Key/value heads.
    pub(crate) kv_heads: Option<usize>,
    /// Size of one head.
    pub(crate) head_size: Option<usize>,
    /// Graph names from `genai_config.json`.
    pub(crate) names: IoNames,
}

/// Finds the files of the model at `path` (a folder or an `.onnx` file), with an
/// optional separate tokenizer.
pub(crate) fn resolve(path: &Path, tokenizer: Option<&Path>) -> Result<ModelFiles> {
    let meta = std::fs::metadata(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (onnx, config) = if meta.is_dir() {
        resolve_dir(path)?
    } else {
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            return Err(OnnxError::Unsupported(format!(
                "{}: not an .onnx file; give an ONNX model file or its folder",
                path.display()
            )));
        }
        let dir = parent(path);
        (path.to_path_buf(), read_config_near(&dir)?)
    };
    check_onnx_file(&onnx)?;
    let model_dir = parent(&onnx);
    let tokenizer = match tokenizer {
        Some(t) => t.to_path_buf(),
        None => find_near(&model_dir, "tokenizer.json").ok_or_else(|| {
            OnnxError::InvalidModel(format!(
                "no tokenizer.json in {} (or the folder above it): the model's Hugging Face \
                 tokenizer is needed; put tokenizer.json beside the model or give its tokenizer file (the load's tokenizer_path)",
                model_dir.display()
            ))
        })?,
    };
    Ok(ModelFiles {
        tokenizer_config: find_near(&model_dir, "tokenizer_config.json"),
        onnx,
        tokenizer,
        config,
    })
}

/// The decoder file and configuration of a model folder.
fn resolve_dir(dir: &Path) -> Result<(PathBuf, ModelConfig)> {
    let genai = dir.join("genai_config.json");
    if genai.is_file() {
        let json = read_json(&genai)?;
        let config = genai_config(&genai, &json);
        let decoder = json.pointer("/model/decoder");
        let file = decoder
            .and_then(|d| d.get("filename"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OnnxError::InvalidModel(format!(
                    "{}: model.decoder.filename is missing; it names the decoder's .onnx file",
                    genai.display()
                ))
            })?;
        return Ok((dir.join(file), config));
    }
    if let Some(file) = OPTIMUM_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
    {
        let config = read_config_near(&parent(&file))?;
        return Ok((file, config));
    }
    // Otherwise a folder with exactly one .onnx file.
    let mut onnx: Vec<PathBuf> = [dir.to_path_buf(), dir.join("onnx")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx") && p.is_file())
        .collect();
    onnx.sort();
    match onnx.as_slice() {
        [one] => {
            let config = read_config_near(&parent(one))?;
            Ok((one.clone(), config))
        }
        [] => Err(OnnxError::InvalidModel(format!(
            "{}: no genai_config.json and no .onnx file (looked for {} and *.onnx)",
            dir.display(),
            OPTIMUM_FILES.join(", ")
        ))),
        many => Err(OnnxError::Unsupported(format!(
            "{}: several .onnx files ({}) and no genai_config.json to say which is the \
             decoder; give the decoder's file as the model path",
            dir.display(),
            many.iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The configuration around a model file in `dir`: `genai_config.json`, else
/// `config.json` (+ `generation_config.json`), in `dir` or the folder above it.
fn read_config_near(dir: &Path) -> Result<ModelConfig> {
    if let Some(genai) = find_near(dir, "genai_config.json") {
        let json = read_json(&genai)?;
        return Ok(genai_config(&genai, &json));
    }
    let Some(path) = find_near(dir, "config.json") else {
        return Ok(ModelConfig::default());
    };
    let json = read_json(&path)?;
    let mut config = hf_config(&path, &json);
    if let Some(generation) = find_near(dir, "generation_config.json") {
        let json = read_json(&generation)?;
        let eos = token_ids(json.get("eos_token_id"));
        if !eos.is_empty() {
            config.eos = eos;
        }
        config.bos = config.bos.or_else(|| token_id(json.get("bos_token_id")));
    }
    Ok(config)
}

/// Reads `genai_config.json`.
fn genai_config(path: &Path, json: &Value) -> ModelConfig {
    let model = json.get("model").unwrap_or(&Value::Null);
    let decoder = model.get("decoder").unwrap_or(&Value::Null);
    let inputs = decoder.get("inputs").unwrap_or(&Value::Null);
    let outputs = decoder.get("outputs").unwrap_or(&Value::Null);
    let name = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    ModelConfig {
        source: Some(path.to_path_buf()),
        architecture: name(model, "type"),
        context_length: uint(model.get("context_length")),
        vocab_size: uint(model.get("vocab_size")),
        bos: token_id(model.get("bos_token_id")),
        eos: token_ids(model.get("eos_token_id")),
        layers: usize_of(decoder.get("num_hidden_layers")),
        kv_heads: usize_of(decoder.get("num_key_value_heads"))
            .or_else(|| usize_of(decoder.get("num_attention_heads"))),
        head_size: usize_of(decoder.get("head_size")),
        names: IoNames {
            input_ids: name(inputs, "input_ids"),
            attention_mask: name(inputs, "attention_mask"),
            position_ids: name(inputs, "position_ids"),
            past_key: name(inputs, "past_key_names"),
            past_value: name(inputs, "past_value_names"),
            past: name(inputs, "past_names"),
            logits: name(outputs, "logits"),
            present_key: name(outputs, "present_key_names"),
            present_value: name(outputs, "present_value_names"),
            present: name(outputs, "present_names"),
        },
    }
}

/// Reads a Hugging Face `config.json` (names differ between architectures).
fn hf_config(path: &Path, json: &Value) -> ModelConfig {
    let first = |keys: &[&str]| keys.iter().find_map(|k| uint(json.get(*k)));
    let heads = first(&["num_attention_heads", "n_head", "num_heads"]);
    let hidden = first(&["hidden_size", "n_embd", "d_model"]);
    let head_size = first(&["head_dim"]).or_else(|| match (hidden, heads) {
        (Some(h), Some(n)) if n > 0 && h % n == 0 => Some(h / n),
        _ => None,
    });
    ModelConfig {
        source: Some(path.to_path_buf()),
        architecture: json
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        context_length: first(&[
            "max_position_embeddings",
            "n_positions",
            "n_ctx",
            "seq_length",
        ]),
        vocab_size: first(&["vocab_size"]),
        bos: token_id(json.get("bos_token_id")),
        eos: token_ids(json.get("eos_token_id")),
        layers: first(&["num_hidden_layers", "n_layer", "num_layers"]).map(|n| n as usize),
        kv_heads: first(&["num_key_value_heads", "n_head_kv"])
            .or(heads)
            .map(|n| n as usize),
        head_size: head_size.map(|n| n as usize),
        names: IoNames::default(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        runanywhere_formats::fs::read_regular_to_string(path).map_err(|source| OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_str(&text)
        .map_err(|e| OnnxError::InvalidModel(format!("{}: invalid JSON: {e}", path.display())))
}

/// A non-negative integer that fits a `u32`.
fn uint(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

fn usize_of(v: Option<&Value>) -> Option<usize> {
    uint(v).map(|n| n as usize)
}

fn token_id(v: Option<&Value>) -> Option<u32> {
    token_ids(v).first().copied()
}

/// A token id or a list of them (`eos_token_id` is either).
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| uint(Some(i))).collect(),
        other => uint(other).into_iter().collect(),
    }
}

/// `dir/name`, or `name` in the folder above `dir`.
fn find_near(dir: &Path, name: &str) -> Option<PathBuf> {
    [Some(dir.to_path_buf()), dir.parent().map(Path::to_path_buf)]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The folder holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A readable, non-empty file: checked before ONNX Runtime sees the path, for a clearer
/// message than its own.
fn check_onnx_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(OnnxError::InvalidModel(format!(
            "{} is not a file",
            path.display()
        )));
    }
    if meta.len() == 0 {
        return Err(OnnxError::InvalidModel(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn genai_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "genai_config.json",
            r#"{"model": {"type": "gpt2", "bos_token_id": 98, "eos_token_id": [98, 99],
                "context_length": 512, "vocab_size": 1000,
                "decoder": {"filename": "past.onnx", "num_key_value_heads": 4, "head_size": 8,
                    "num_hidden_layers": 5, "inputs": {"past_names": "past_%d"},
                    "outputs": {"present_names": "present_%d"}}}}"#,
        );
        write(d, "past.onnx", "x");
        write(d, "tokenizer.json", "{}");
        let files = resolve(d, None).unwrap();
        assert_eq!(files.onnx, d.join("past.onnx"));
        assert_eq!(files.tokenizer, d.join("tokenizer.json"));
        let c = &files.config;
        assert_eq!(c.architecture.as_deref(), Some("gpt2"));
        assert_eq!(
            (c.context_length, c.vocab_size, c.bos),
            (Some(512), Some(1000), Some(98))
        );
        assert_eq!(c.eos, vec![98, 99]);
        assert_eq!(
            (c.layers, c.kv_heads, c.head_size),
            (Some(5), Some(4), Some(8))
        );
        assert_eq!(c.names.past.as_deref(), Some("past_%d"));
        assert_eq!(c.names.present.as_deref(), Some("present_%d"));
        // The file itself resolves to the same model.
        let files = resolve(&d.join("past.onnx"), None).unwrap();
        assert_eq!(files.config.eos, vec![98, 99]);
    }

    #[test]
    fn optimum_folder_with_onnx_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "config.json",
            r#"{"model_type": "llama", "max_position_embeddings": 2048, "vocab_size": 32000,
                "bos_token_id": 1, "eos_token_id": 2, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64}"#,
        );
        write(
            d,
            "generation_config.json",
            r#"{"eos_token_id": [2, 32000]}"#,
        );
        write(d, "onnx/model.onnx", "x");
        write(d, "tokenizer.json", "{}");
        let files = resolve(d, None).unwrap();
        assert_eq!(files.onnx, d.join("onnx/model.onnx"));
        assert_eq!(files.tokenizer, d.join("tokenizer.json"));
        let c = &files.config;
        assert_eq!(c.architecture.as_deref(), Some("llama"));
        assert_eq!(c.context_length, Some(2048));
        assert_eq!(c.eos, vec![2, 32000]);
        assert_eq!(
            (c.layers, c.kv_heads, c.head_size),
            (Some(2), Some(2), Some(16))
        );
    }

    #[test]
    fn missing_pieces_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = resolve(d, None).unwrap_err();
        assert!(matches!(err, OnnxError::InvalidModel(_)), "{err}");

        write(d, "model.onnx", "x");
        let err = resolve(d, None).unwrap_err();
        assert!(err.to_string().contains("no tokenizer.json"), "{err}");
        // A separate tokenizer is accepted.
        let t = write(d, "elsewhere/tok.json", "{}");
        assert_eq!(resolve(d, Some(&t)).unwrap().tokenizer, t);

        write(d, "empty/model.onnx", "");
        write(d, "empty/tokenizer.json", "{}");
        let err = resolve(&d.join("empty"), None).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");

        write(d, "two/a.onnx", "x");
        write(d, "two/b.onnx", "x");
        let err = resolve(&d.join("two"), None).unwrap_err();
        assert!(matches!(err, OnnxError::Unsupported(_)), "{err}");

        let err = resolve(&write(d, "model.bin", "x"), None).unwrap_err();
        assert!(matches!(err, OnnxError::Unsupported(_)), "{err}");
        let err = resolve(&d.join("nope"), None).unwrap_err();
        assert!(matches!(err, OnnxError::Io { .. }), "{err}");

        write(d, "badjson/genai_config.json", "{");
        let err = resolve(&d.join("badjson"), None).unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
    }
}
