//! Tokenization with the Hugging Face `tokenizers` crate, and token pieces as raw bytes.
//!
//! ONNX models ship their tokenizer as `tokenizer.json`, which the `tokenizers` crate
//! reads whole: normalizer, pre-tokenizer, model, post-processor (which decides whether a
//! BOS is added) and decoder. Encoding goes straight through it.
//!
//! Streaming needs more than `decode`: the sink gets one piece per token, and the pieces
//! must concatenate to exactly the output's bytes, a character split across tokens
//! included. `tokenizers` decodes to `String`, which would replace half a character with
//! U+FFFD, so the bytes of a token are rebuilt from its vocabulary string according to
//! the decoder the tokenizer declares:
//!
//! * **byte-level BPE** (GPT-2, Llama 3, Qwen): every byte is spelled as one printable
//!   character; the inverse of GPT-2's byte-to-unicode table maps it back;
//! * **SentencePiece style** (Llama 2, Mistral, Phi-3): `▁` is a space and `<0xXX>` tokens
//!   (byte fallback) are single bytes;
//! * **WordPiece**: `##` continues a word, anything else starts one with a space;
//! * anything else: the tokenizer's own decoding of the single token.
//!
//! Added tokens (specials such as `<|endoftext|>`) are their literal text. The
//! [`TokenEmitter`](runanywhere_plugin_api::emit::TokenEmitter) then takes care of UTF-8
//! boundaries and stop strings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use tokenizers::decoders::DecoderWrapper;
use tokenizers::Tokenizer;

use crate::error::{OnnxError, Result};

/// How a vocabulary string becomes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceRule {
    /// GPT-2 byte-level: each character stands for one byte.
    ByteLevel,
    /// `▁` → space, `<0xXX>` → one byte (when `byte_fallback` is on).
    SentencePiece {
        /// Whether `<0xXX>` tokens are bytes.
        byte_fallback: bool,
    },
    /// `##` continues a word; other tokens start one with a space.
    WordPiece,
    /// Ask the tokenizer to decode the single token.
    Decode,
}

/// An added token (special or not).
#[derive(Debug, Clone)]
struct Added {
    content: String,
    special: bool,
}

/// A model's tokenizer; see the module docs.
pub(crate) struct TextTokenizer {
    /// Behind a lock because whether special-token text is parsed is a setting of the
    /// tokenizer itself, switched per call.
    inner: Mutex<Tokenizer>,
    rule: PieceRule,
    added: HashMap<u32, Added>,
    /// Vocabulary size including added tokens.
    vocab_size: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("rule", &self.rule)
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json`.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| {
            OnnxError::InvalidModel(format!(
                "{}: not a Hugging Face tokenizer.json: {e}",
                path.display()
            ))
        })?;
        Ok(Self::new(tokenizer))
    }

    /// Wraps a tokenizer.
    pub(crate) fn new(tokenizer: Tokenizer) -> Self {
        let rule = tokenizer
            .get_decoder()
            .map_or(PieceRule::Decode, piece_rule);
        let added = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| {
                (
                    id,
                    Added {
                        content: t.content,
                        special: t.special,
                    },
                )
            })
            .collect();
        let vocab_size = u32::try_from(tokenizer.get_vocab_size(true)).unwrap_or(u32::MAX);
        TextTokenizer {
            inner: Mutex::new(tokenizer),
            rule,
            added,
            vocab_size,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokenizer> {
        // The tokenizer holds no state a panic could leave half-changed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Vocabulary size, added tokens included.
    pub(crate) fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// The id of a token string, if it is in the vocabulary.
    pub(crate) fn token_id(&self, token: &str) -> Option<u32> {
        self.lock().token_to_id(token)
    }

    /// Text → ids. `add_special` lets the post-processor add BOS/EOS as the model wants;
    /// `parse_special` recognises special-token text such as `<|endoftext|>` (otherwise
    /// it is tokenized as plain text).
    pub(crate) fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let mut tokenizer = self.lock();
        tokenizer.set_encode_special_tokens(!parse_special);
        let encoding = tokenizer
            .encode(text, add_special)
            .map_err(|e| OnnxError::InvalidRequest(format!("cannot tokenize the text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids → text, special tokens left out.
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String> {
        for &id in ids {
            self.check(id)?;
        }
        self.lock()
            .decode(ids, true)
            .map_err(|e| OnnxError::Internal(format!("cannot detokenize: {e}")))
    }

    /// The raw bytes of token `id`. Special tokens are their text when `special` is
    /// true and empty otherwise (as streamed output shows them).
    pub(crate) fn piece(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        self.check(id)?;
        if let Some(added) = self.added.get(&id) {
            if added.special && !special {
                return Ok(Vec::new());
            }
            return Ok(added.content.as_bytes().to_vec());
        }
        let tokenizer = self.lock();
        let Some(token) = tokenizer.id_to_token(id) else {
            return Ok(Vec::new());
        };
        Ok(match self.rule {
            PieceRule::ByteLevel => byte_level_bytes(&token),
            PieceRule::SentencePiece { byte_fallback } => {
                match byte_fallback.then(|| byte_token(&token)).flatten() {
                    Some(byte) => vec![byte],
                    None => token.replace('\u{2581}', " ").into_bytes(),
                }
            }
            PieceRule::WordPiece => match token.strip_prefix("##") {
                Some(rest) => rest.as_bytes().to_vec(),
                None => format!(" {token}").into_bytes(),
            },
            PieceRule::Decode => tokenizer
                .decode(&[id], false)
                .map(String::into_bytes)
                .unwrap_or_else(|_| token.into_bytes()),
        })
    }

    fn check(&self, id: u32) -> Result<()> {
        if id < self.vocab_size {
            Ok(())
        } else {
            Err(OnnxError::InvalidRequest(format!(
                "token id {id} is out of range: the tokenizer has {} tokens",
                self.vocab_size
            )))
        }
    }
}

/// The piece rule a decoder implies.
fn piece_rule(decoder: &DecoderWrapper) -> PieceRule {
    let mut parts = Vec::new();
    flatten(decoder, &mut parts);
    let has = |f: fn(&DecoderWrapper) -> bool| parts.iter().any(|d| f(d));
    if has(|d| matches!(d, DecoderWrapper::ByteLevel(_))) {
        PieceRule::ByteLevel
    } else if has(|d| matches!(d, DecoderWrapper::WordPiece(_))) {
        PieceRule::WordPiece
    } else if has(|d| {
        matches!(
            d,
            DecoderWrapper::Metaspace(_)
                | DecoderWrapper::ByteFallback(_)
                | DecoderWrapper::Replace(_)
        )
    }) {
        PieceRule::SentencePiece {
            byte_fallback: has(|d| matches!(d, DecoderWrapper::ByteFallback(_))),
        }
    } else {
        PieceRule::Decode
    }
}

fn flatten<'a>(decoder: &'a DecoderWrapper, out: &mut Vec<&'a DecoderWrapper>) {
    match decoder {
        DecoderWrapper::Sequence(seq) => {
            for d in seq.get_decoders() {
                flatten(d, out);
            }
        }
        other => out.push(other),
    }
}

/// `<0xAB>` → `0xAB`.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The bytes a byte-level BPE token stands for. Characters outside GPT-2's table (which
/// a well-formed vocabulary does not have) are kept as their UTF-8.
fn byte_level_bytes(token: &str) -> Vec<u8> {
    let table = unicode_to_byte();
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match table.get(c as usize).copied().flatten() {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// Highest code point GPT-2's byte-to-unicode table uses, plus one.
const TABLE_LEN: usize = 256 + 68;

/// The inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for
/// themselves; the other 68 bytes are shifted to U+0100.. in byte order.
fn unicode_to_byte() -> &'static [Option<u8>; TABLE_LEN] {
    static TABLE: std::sync::OnceLock<[Option<u8>; TABLE_LEN]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable =
            |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut table = [None; TABLE_LEN];
        let mut shifted = 256usize;
        for b in 0..=255u8 {
            if printable(b) {
                table[b as usize] = Some(b);
            } else {
                table[shifted] = Some(b);
                shifted += 1;
            }
        }
        table
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table_round_trips() {
        let table = unicode_to_byte();
        assert_eq!(table.iter().flatten().count(), 256);
        // 'Ġ' (U+0120) is the space, 'Ċ' (U+010A) the newline.
        assert_eq!(byte_level_bytes("Ġhello"), b" hello");
        assert_eq!(byte_level_bytes("Ċ"), b"\n");
        // "é" is C3 A9, spelled 'Ã' '©' in byte-level BPE.
        assert_eq!(byte_level_bytes("Ã"), vec![0xC3]);
        assert_eq!(byte_level_bytes("Ã©"), "é".as_bytes());
    }

    #[test]
    fn byte_fallback_tokens() {
        assert_eq!(byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_token("<0xe2>"), Some(0xE2));
        assert_eq!(byte_token("<0x0A"), None);
        assert_eq!(byte_token("<0x123>"), None);
    }
}
