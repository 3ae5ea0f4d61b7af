//! Writing a Hugging Face `LlamaForCausalLM` folder from a GGUF file or a llama2.c
//! checkpoint: `config.json`, `model.safetensors` (f32), `tokenizer.json`,
//! `tokenizer_config.json` and `generation_config.json`.
//!
//! The folder is assembled in a temporary directory next to the destination and renamed
//! into place, so a reader never sees half a folder and a failed conversion leaves
//! nothing behind.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::ConvertError;
use crate::gguf::GgufFile;
use crate::llama::{self, HfLlama};
use crate::llama2c::{self, Checkpoint};
use crate::tokenizer::{self, ConvertedTokenizer};

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The folder.
    pub dir: PathBuf,
    /// The model's parameters.
    pub params: llama::LlamaParams,
    /// The files in the folder.
    pub files: Vec<String>,
}

/// Converts `source` (a `llama` GGUF file or a llama2.c checkpoint, whose `tok*.bin`
/// tokenizer is found next to it) into a Hugging Face folder at `out_dir`.
///
/// `out_dir` must not exist, or be an empty directory.
pub fn write_hf_folder(source: &Path, out_dir: &Path) -> Result<Written, ConvertError> {
    write_hf_folder_with_tokenizer(source, None, out_dir)
}

/// [`write_hf_folder`] with an explicit llama2.c tokenizer file (ignored for GGUF,
/// which carries its vocabulary).
pub fn write_hf_folder_with_tokenizer(
    source: &Path,
    llama2c_tokenizer: Option<&Path>,
    out_dir: &Path,
) -> Result<Written, ConvertError> {
    if let Ok(mut entries) = std::fs::read_dir(out_dir) {
        if entries.next().is_some() {
            return Err(ConvertError::OutputExists(out_dir.to_path_buf()));
        }
    } else if out_dir.exists() {
        return Err(ConvertError::OutputExists(out_dir.to_path_buf()));
    }
    let (model, tok, tokenizer_class) = if is_gguf(source)? {
        let gguf = GgufFile::open(source)?;
        let model = llama::from_gguf(&gguf)?;
        let tok = tokenizer::from_gguf_vocab(&gguf)?;
        let class = match gguf.get_str("tokenizer.ggml.model") {
            Some("llama") => "LlamaTokenizerFast",
            _ => "PreTrainedTokenizerFast",
        };
        (model, tok, class)
    } else {
        let checkpoint = Checkpoint::read(source)?;
        let vocab_size = checkpoint.config.vocab_size;
        let tok_path = match llama2c_tokenizer {
            Some(p) => p.to_path_buf(),
            None => llama2c::find_tokenizer(source, vocab_size).ok_or_else(|| {
                ConvertError::invalid(
                    source,
                    format!(
                        "no llama2.c tokenizer for {vocab_size} tokens next to the \
                         checkpoint (tok{vocab_size}.bin or tokenizer.bin)"
                    ),
                )
            })?,
        };
        let tok = tokenizer::from_llama2c_tokenizer(&tok_path, vocab_size)?;
        (
            llama::from_llama2c(source, checkpoint)?,
            tok,
            "LlamaTokenizerFast",
        )
    };

    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ConvertError::io(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".runanywhere-convert-")
        .tempdir_in(&parent)
        .map_err(|e| ConvertError::io(&parent, e))?;
    let files = write_files(tmp.path(), &model, &tok, tokenizer_class)?;
    // An empty destination directory is replaced; rename(2) does that atomically.
    if out_dir.is_dir() {
        std::fs::remove_dir(out_dir).map_err(|e| ConvertError::io(out_dir, e))?;
    }
    std::fs::rename(tmp.path(), out_dir).map_err(|e| ConvertError::io(out_dir, e))?;
    // The directory now lives at `out_dir`: nothing is left to clean up.
    let _ = tmp.keep();
    tracing::debug!(source = %source.display(), out = %out_dir.display(), "wrote a Hugging Face folder");
    Ok(Written {
        dir: out_dir.to_path_buf(),
        params: model.params,
        files,
    })
}

fn is_gguf(path: &Path) -> Result<bool, ConvertError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| ConvertError::io(path, e))?;
    let n = file
        .read(&mut magic)
        .map_err(|e| ConvertError::io(path, e))?;
    Ok(n == 4 && &magic == b"GGUF")
}

fn write_files(
    dir: &Path,
    model: &HfLlama,
    tok: &ConvertedTokenizer,
    tokenizer_class: &str,
) -> Result<Vec<String>, ConvertError> {
    let write_json = |name: &str, v: &Value| -> Result<String, ConvertError> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(v)
            .map_err(|e| ConvertError::invalid(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| ConvertError::io(&path, e))?;
        Ok(name.to_string())
    };
    let mut files = Vec::new();

    let mut params = model.params.clone();
    params.bos_token_id = tok.special.bos.or(params.bos_token_id);
    params.eos_token_id = tok.special.eos.or(params.eos_token_id);
    files.push(write_json("config.json", &params.config_json())?);

    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&model.tensors, &weights)
        .map_err(|e| ConvertError::candle(&weights, e))?;
    files.push("model.safetensors".to_string());

    let tokenizer_json = dir.join("tokenizer.json");
    tok.tokenizer
        .save(&tokenizer_json, false)
        .map_err(|e| ConvertError::tokenizer(&tokenizer_json, e))?;
    files.push("tokenizer.json".to_string());

    let text = |id: Option<u32>| {
        id.and_then(|i| tok.tokenizer.id_to_token(i))
            .map_or(Value::Null, Value::String)
    };
    let mut config = json!({
        "tokenizer_class": tokenizer_class,
        "bos_token": text(tok.special.bos),
        "eos_token": text(tok.special.eos),
        "unk_token": text(tok.special.unk),
        "pad_token": text(tok.special.pad),
        "add_bos_token": tok.special.add_bos,
        "add_eos_token": tok.special.add_eos,
        "model_max_length": params.max_position_embeddings,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(template) = &tok.chat_template {
        config["chat_template"] = Value::String(template.clone());
    }
    files.push(write_json("tokenizer_config.json", &config)?);
    files.push(write_json(
        "generation_config.json",
        &json!({
            "bos_token_id": tok.special.bos,
            "eos_token_id": if tok.special.eog.len() > 1 {
                json!(tok.special.eog)
            } else {
                json!(tok.special.eos)
            },
        }),
    )?);
    Ok(files)
}
