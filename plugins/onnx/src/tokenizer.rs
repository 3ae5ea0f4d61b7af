//! Tokenization: `tokenizer.json` read by the Hugging Face `tokenizers` crate and wrapped
//! in [`runanywhere_tokenizer::Vocab`], exactly as the Candle engine does.
//!
//! ONNX models ship their tokenizer as `tokenizer.json`, which the `tokenizers` crate
//! reads whole: normalizer, pre-tokenizer, model, post-processor (which decides whether a
//! BOS is added) and decoder. [`Vocab`] adds what streaming needs on top: llama.cpp's
//! `parse_special`, and the raw bytes of every token (byte-level BPE, `<0xXX>` byte
//! fallback, `▁`, WordPiece's `##`), so that streamed pieces concatenate to exactly the
//! output's bytes and the same `tokenizer.json` streams the same bytes on every engine.
//! The [`TextStreamer`](runanywhere_plugin_api::emit::TextStreamer) then takes care of
//! UTF-8 boundaries and stop strings.

use std::path::Path;

use runanywhere_plugin_api::EngineError;
use runanywhere_tokenizer::{SpecialTokens, Vocab};
use tokenizers::Tokenizer;

use crate::error::{OnnxError, Result};

/// Reads `tokenizer.json`.
pub(crate) fn read(path: &Path) -> Result<Tokenizer> {
    let bytes = runanywhere_formats::fs::read_regular(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Tokenizer::from_bytes(&bytes).map_err(|e| {
        OnnxError::InvalidModel(format!(
            "{}: not a Hugging Face tokenizer.json: {e}",
            path.display()
        ))
    })
}

/// Wraps `tokenizer` for a model whose embedding has `size` rows (ids beyond the
/// tokenizer's own have no text). `bos`, `eos` and `eog` are the model's, as its config
/// names them.
pub(crate) fn vocab(
    tokenizer: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    eog: Vec<u32>,
    size: u32,
) -> Vocab {
    let special = SpecialTokens {
        bos,
        eos,
        eog,
        ..SpecialTokens::default()
    };
    Vocab::new(tokenizer, special, size as usize)
}

/// The bytes of `id` (control tokens as their text when `special`, as nothing
/// otherwise); an id past the vocabulary is an invalid request.
pub(crate) fn piece(vocab: &Vocab, id: u32, special: bool) -> Result<&[u8]> {
    let bytes = if special {
        vocab.token_bytes(id)
    } else {
        vocab.text_bytes(id)
    };
    bytes.ok_or_else(|| out_of_range(vocab, id))
}

/// Ids → text, control tokens left out; an id past the vocabulary is an invalid
/// request.
pub(crate) fn detokenize(vocab: &Vocab, ids: &[u32]) -> Result<String> {
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab.len()) {
        return Err(out_of_range(vocab, bad));
    }
    Ok(vocab.detokenize(ids).unwrap_or_default())
}

/// Text → ids; see [`Vocab::tokenize`].
pub(crate) fn tokenize(
    vocab: &Vocab,
    text: &str,
    add_special: bool,
    parse_special: bool,
) -> Result<Vec<u32>> {
    vocab
        .tokenize(text, add_special, parse_special)
        .map_err(|e| OnnxError::InvalidRequest(format!("cannot tokenize the text: {e}")))
}

/// The error for an id past the vocabulary.
fn out_of_range(vocab: &Vocab, id: u32) -> OnnxError {
    let size = u32::try_from(vocab.len()).unwrap_or(u32::MAX);
    OnnxError::InvalidRequest(
        EngineError::token_out_of_range(id, size)
            .message()
            .to_string(),
    )
}
