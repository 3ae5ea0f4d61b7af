//! Tokenization with llama.cpp's semantics on top of a Hugging Face [`Tokenizer`], for
//! engines that compute logits themselves.
//!
//! What an engine needs from a vocabulary beyond `encode`:
//!
//! * **`parse_special`**: Hugging Face always matches special-token text such as `<s>`
//!   in the input; llama.cpp does so only when asked. A second copy of the tokenizer
//!   with `encode_special_tokens` set treats that text as ordinary text (user-defined
//!   added tokens are still matched, as in llama.cpp).
//! * **Token bytes**: generated tokens are streamed one at a time, and a token may hold
//!   part of a UTF-8 character (`<0xE2>`, or a byte-level BPE token). Hugging Face's
//!   decoders work on whole sequences and return strings, so the raw bytes of every
//!   token are computed once here: `▁` → space and `<0xXX>` → that byte for
//!   SentencePiece-style vocabularies, GPT-2's byte-to-character table reversed for
//!   byte-level ones, and for WordPiece ones (BERT) `##` continuing a word while any
//!   other token starts one with a space.
//! * **Control tokens** (special added tokens) render as nothing in generated text and
//!   in [`Vocab::detokenize`], but as their text in [`Vocab::token_bytes`], as
//!   llama.cpp's `token_to_piece` does with and without `special`.

use tokenizers::Tokenizer;

use crate::SpecialTokens;

/// How the strings of a vocabulary encode bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// `▁` for spaces, `<0xXX>` byte tokens (SentencePiece, and most others).
    Metaspace { byte_fallback: bool },
    /// GPT-2's byte-level characters.
    ByteLevel,
    /// WordPiece (BERT): `##` continues a word, any other token starts one after a
    /// space.
    WordPiece,
}

/// One vocabulary entry.
#[derive(Debug, Clone)]
struct Entry {
    bytes: Vec<u8>,
    control: bool,
}

/// A tokenizer with llama.cpp's tokenize/detokenize semantics; see the module docs.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// Matches special-token text.
    parsing: Tokenizer,
    /// Treats special-token text as text.
    plain: Tokenizer,
    entries: Vec<Entry>,
    special: SpecialTokens,
}

/// Why tokenization failed.
#[derive(Debug, thiserror::Error)]
#[error("tokenization failed: {0}")]
pub struct TokenizeError(String);

impl Vocab {
    /// Wraps `tokenizer`. `size` is the number of ids the model accepts (its embedding
    /// rows), which may exceed the tokenizer's (padding rows); ids beyond the tokenizer
    /// have no text.
    pub fn new(tokenizer: Tokenizer, special: SpecialTokens, size: usize) -> Self {
        let encoding = encoding_of(&tokenizer);
        let added = tokenizer.get_added_tokens_decoder();
        let n = size.max(tokenizer.get_vocab_size(true));
        let table = byte_level_table();
        let entries = (0..n)
            .map(|id| {
                let id = id as u32;
                if let Some(t) = added.get(&id) {
                    return Entry {
                        bytes: t.content.as_bytes().to_vec(),
                        control: t.special,
                    };
                }
                let Some(text) = tokenizer.id_to_token(id) else {
                    return Entry {
                        bytes: Vec::new(),
                        control: false,
                    };
                };
                let bytes = match encoding {
                    Encoding::ByteLevel => text
                        .chars()
                        .flat_map(|c| match table.get(&c) {
                            Some(&b) => vec![b],
                            None => c.to_string().into_bytes(),
                        })
                        .collect(),
                    Encoding::WordPiece => match text.strip_prefix(WORD_PIECE_CONTINUATION) {
                        Some(rest) => rest.as_bytes().to_vec(),
                        None => format!(" {text}").into_bytes(),
                    },
                    Encoding::Metaspace { byte_fallback } => match byte_piece(&text) {
                        Some(b) if byte_fallback => vec![b],
                        _ => text.replace('\u{2581}', " ").into_bytes(),
                    },
                };
                Entry {
                    bytes,
                    control: false,
                }
            })
            .collect();
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);
        Vocab {
            parsing: tokenizer,
            plain,
            entries,
            special,
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no ids at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The special tokens.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// The underlying tokenizer (special tokens parsed).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.parsing
    }

    /// Text → ids. `add_special` adds what the tokenizer's post-processor adds (BOS for
    /// Llama); `parse_special` matches special-token text.
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        let tokenizer = if parse_special {
            &self.parsing
        } else {
            &self.plain
        };
        tokenizer
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizeError(e.to_string()))
    }

    /// The bytes of `id` with control tokens rendered as their text (llama.cpp's
    /// `token_to_piece` with `special = true`); `None` for an id out of range.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.entries.get(id as usize).map(|e| e.bytes.as_slice())
    }

    /// The bytes `id` contributes to generated text: nothing for control tokens.
    pub fn text_bytes(&self, id: u32) -> Option<&[u8]> {
        self.entries.get(id as usize).map(|e| {
            if e.control {
                &[][..]
            } else {
                e.bytes.as_slice()
            }
        })
    }

    /// Ids → text (control tokens omitted, invalid UTF-8 replaced); `None` if an id is
    /// out of range.
    pub fn detokenize(&self, ids: &[u32]) -> Option<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.text_bytes(id)?);
        }
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The prefix of a WordPiece token that continues the previous one.
const WORD_PIECE_CONTINUATION: &str = "##";

/// Whether the tokenizer's strings are byte-level (its decoder or pre-tokenizer says
/// so), WordPiece (its decoder says so) or `▁`-style, and whether `<0xXX>` tokens are
/// bytes.
fn encoding_of(tokenizer: &Tokenizer) -> Encoding {
    let json = |v: Option<String>| v.unwrap_or_default();
    let decoder = json(
        tokenizer
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok()),
    );
    let pre = json(
        tokenizer
            .get_pre_tokenizer()
            .and_then(|p| serde_json::to_string(p).ok()),
    );
    if decoder.contains("\"ByteLevel\"") || pre.contains("\"ByteLevel\"") {
        return Encoding::ByteLevel;
    }
    if decoder.contains("\"WordPiece\"") {
        return Encoding::WordPiece;
    }
    let model = json(serde_json::to_string(tokenizer.get_model()).ok());
    Encoding::Metaspace {
        byte_fallback: decoder.contains("\"ByteFallback\"")
            || model.contains("\"byte_fallback\":true"),
    }
}

/// The byte of a `<0xXX>` piece.
fn byte_piece(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte-to-character table, reversed: printable Latin-1 bytes stand for
/// themselves, the others for U+0100 onwards in order.
fn byte_level_table() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
        table.insert(c, b);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_matches_gpt2() {
        let t = byte_level_table();
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'!'], b'!');
        assert_eq!(t.len(), 256);
    }

    #[test]
    fn word_piece_continuations_join_and_words_start_with_a_space() {
        let json = r###"{"version": "1.0", "added_tokens": [
            {"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                      "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                      "vocab": {"[UNK]": 0, "play": 1, "##ing": 2, "now": 3}}}"###;
        let tokenizer: Tokenizer = json.parse().unwrap();
        assert_eq!(encoding_of(&tokenizer), Encoding::WordPiece);
        let vocab = Vocab::new(tokenizer, SpecialTokens::default(), 4);
        let ids = vocab.tokenize("playing now", false, false).unwrap();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(vocab.token_bytes(2), Some(&b"ing"[..]));
        assert_eq!(vocab.token_bytes(1), Some(&b" play"[..]));
        assert_eq!(vocab.text_bytes(0), Some(&[][..]));
        assert_eq!(vocab.detokenize(&ids).as_deref(), Some(" playing now"));
    }

    #[test]
    fn byte_pieces() {
        assert_eq!(byte_piece("<0x0A>"), Some(10));
        assert_eq!(byte_piece("<0xff>"), Some(255));
        assert_eq!(byte_piece("<0x0A"), None);
        assert_eq!(byte_piece("<0x0AB>"), None);
    }
}
