//! The tokenizer side of a Hugging Face model folder: `tokenizer.json` plus what
//! `tokenizer_config.json`, `generation_config.json` and `config.json` say about special
//! tokens and chat templates.
//!
//! Hugging Face spreads these facts over three files with overlapping, sometimes
//! disagreeing keys. The rules here: BOS is `tokenizer_config.bos_token` (by text) or
//! else `config.bos_token_id`; the end-of-generation set is the union of
//! `generation_config.eos_token_id`, `config.eos_token_id` (each an id or a list) and
//! `tokenizer_config.eos_token`; EOS is the first of them. The chat template is
//! `tokenizer_config.chat_template` (a string, or a list of named templates of which
//! `default` is taken), else a `chat_template.jinja` file.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::ConvertError;
use crate::tokenizer::{ConvertedTokenizer, SpecialTokens};

/// Reads a JSON file of the folder; `None` when it does not exist.
pub fn read_json(path: &Path) -> Result<Option<Value>, ConvertError> {
    match runanywhere_formats::fs::read_regular(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ConvertError::invalid(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConvertError::io(path, e)),
    }
}

/// Loads the tokenizer of the folder `dir`: `tokenizer_json` (default
/// `dir/tokenizer.json`) with the special tokens and chat template of the folder's
/// other files.
pub fn load_tokenizer(
    dir: &Path,
    tokenizer_json: Option<&Path>,
) -> Result<ConvertedTokenizer, ConvertError> {
    let default = dir.join("tokenizer.json");
    let path = tokenizer_json.unwrap_or(&default);
    if !path.is_file() {
        return Err(ConvertError::invalid(
            path,
            "no tokenizer.json (Hugging Face folders need one; a SentencePiece \
             tokenizer.model alone is not read)",
        ));
    }
    let tokenizer = Tokenizer::from_file(path).map_err(|e| ConvertError::tokenizer(path, e))?;
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
    let config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);

    let by_text =
        |key: &str| token_text(&tokenizer_config[key]).and_then(|t| tokenizer.token_to_id(&t));
    let ids = |v: &Value| -> Vec<u32> {
        match v {
            Value::Array(items) => items.iter().filter_map(as_id).collect(),
            other => as_id(other).into_iter().collect(),
        }
    };
    let mut eog = Vec::new();
    for id in ids(&generation["eos_token_id"])
        .into_iter()
        .chain(ids(&config["eos_token_id"]))
        .chain(by_text("eos_token"))
    {
        if !eog.contains(&id) {
            eog.push(id);
        }
    }
    let bos = by_text("bos_token").or_else(|| as_id(&config["bos_token_id"]));
    let special = SpecialTokens {
        bos,
        eos: eog.first().copied(),
        unk: by_text("unk_token"),
        pad: by_text("pad_token").or_else(|| as_id(&generation["pad_token_id"])),
        eog,
        add_bos: tokenizer_config["add_bos_token"].as_bool().unwrap_or(false),
        add_eos: tokenizer_config["add_eos_token"].as_bool().unwrap_or(false),
    };
    let chat_template = match &tokenizer_config["chat_template"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => runanywhere_formats::fs::read_regular_to_string(&dir.join("chat_template.jinja")).ok(),
    };
    Ok(ConvertedTokenizer {
        tokenizer,
        special,
        chat_template,
    })
}

/// A token's text: a plain string or an `AddedToken` object's `content`.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn as_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}
