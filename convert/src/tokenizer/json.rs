//! The parts of a `tokenizer.json` that both conversions share: added tokens from token
//! types, the BOS/EOS post-processor, and loading the assembled document.
//!
//! Tokenizers are assembled as `tokenizer.json` documents rather than through the
//! library's builder types: that is the format Hugging Face documents and keeps stable,
//! it is what [`crate::safetensors`] writes to disk anyway, and loading it runs the
//! library's own validation.

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use super::{SpecialTokens, TokenType};

/// The `added_tokens` list: special tokens for control/unknown types, plain added
/// tokens for user-defined ones (always matched, as llama.cpp does). Ids whose
/// `rstrip` entry is true swallow the whitespace after them.
pub(super) fn added_tokens(tokens: &[String], types: &[TokenType], rstrip: &[bool]) -> Vec<Value> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (text, ty))| {
            !text.is_empty() && (ty.is_special() || **ty == TokenType::UserDefined)
        })
        .map(|(id, (text, ty))| {
            json!({
                "id": id,
                "content": text,
                "single_word": false,
                "lstrip": false,
                "rstrip": rstrip.get(id).copied().unwrap_or(false),
                "normalized": false,
                "special": ty.is_special(),
            })
        })
        .collect()
}

/// A `TemplateProcessing` post-processor adding BOS and/or EOS as `special` says, or
/// `null` when it adds neither.
pub(super) fn post_processor(tokens: &[String], special: &SpecialTokens) -> Value {
    let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).map(|t| (i, t)));
    let bos = name(special.bos).filter(|_| special.add_bos);
    let eos = name(special.eos).filter(|_| special.add_eos);
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let piece = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Map::new();
    for (seq_id, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        if let Some((_, t)) = bos {
            out.push(piece(t, type_id));
        }
        out.push(seq(seq_id, type_id));
        if let Some((_, t)) = eos {
            out.push(piece(t, type_id));
        }
    }
    // The pair template is A's template followed by B's.
    let mut full_pair = single.clone();
    full_pair.extend(pair);
    for (id, t) in bos.into_iter().chain(eos) {
        specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": full_pair,
        "special_tokens": specials,
    })
}

/// Assembles and loads a `tokenizer.json` document.
pub(super) fn load(
    added_tokens: Vec<Value>,
    normalizer: Value,
    pre_tokenizer: Value,
    post_processor: Value,
    decoder: Value,
    model: Value,
) -> Result<Tokenizer, String> {
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    });
    let text = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
    Tokenizer::from_bytes(text.as_bytes()).map_err(|e| e.to_string())
}

/// The vocabulary object: token → id, later ids winning for duplicate texts (as in
/// llama.cpp's `token_to_id`).
pub(super) fn vocab_map(tokens: &[String]) -> Map<String, Value> {
    let mut map = Map::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        map.insert(t.clone(), json!(id));
    }
    map
}
