//! Byte-level BPE (llama.cpp's `gpt2` tokenizer model) vocabularies.
//!
//! The merges are stored in the file; what differs between models is how text is split
//! into words before merging, which llama.cpp selects by `tokenizer.ggml.pre`. Only
//! pre-tokenizers whose regexes are known here are converted; anything else fails
//! rather than tokenizing differently from llama.cpp.

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::json::{added_tokens, load, post_processor, vocab_map};
use super::{SpecialTokens, TokenType};

/// How text is split into words before BPE, by llama.cpp's `tokenizer.ggml.pre` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's regex (`gpt-2`, and `default` for BPE vocabularies).
    Gpt2,
    /// DeepSeek Coder's regexes (`deepseek-coder`).
    DeepseekCoder,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, if supported.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "gpt-2" | "gpt2" | "default" => Some(PreTokenizer::Gpt2),
            "deepseek-coder" => Some(PreTokenizer::DeepseekCoder),
            _ => None,
        }
    }

    /// The `pre_tokenizer` entry of a `tokenizer.json`.
    fn to_json(self) -> Value {
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        match self {
            PreTokenizer::Gpt2 => byte_level(true),
            PreTokenizer::DeepseekCoder => {
                // llama.cpp applies these one after the other, keeping matches and the
                // text between them as separate words (Hugging Face's `Isolated`).
                let regexes = [
                    "[\r\n]",
                    "\\s?\\p{L}+",
                    "\\s?\\p{P}+",
                    "[\u{4E00}-\u{9FA5}\u{0800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
                    "\\p{N}",
                ];
                let mut steps: Vec<Value> = regexes
                    .iter()
                    .map(|r| {
                        json!({"type": "Split", "pattern": {"Regex": r},
                               "behavior": "Isolated", "invert": false})
                    })
                    .collect();
                steps.push(byte_level(false));
                json!({"type": "Sequence", "pretokenizers": steps})
            }
        }
    }
}

/// A byte-level BPE vocabulary as GGUF stores it.
#[derive(Debug, Clone)]
pub struct BpeVocab {
    /// The tokens (in GPT-2's byte-to-character encoding), by id.
    pub tokens: Vec<String>,
    /// Their types.
    pub types: Vec<TokenType>,
    /// The merges, `"left right"`, highest priority first.
    pub merges: Vec<String>,
    /// How text is split before merging.
    pub pre: PreTokenizer,
    /// Per id: whether the (added) token swallows the whitespace after it; may be
    /// shorter than `tokens` (missing = no).
    pub rstrip: Vec<bool>,
}

/// Builds the tokenizer of a byte-level BPE vocabulary.
pub fn build(vocab: &BpeVocab, special: &SpecialTokens) -> Result<Tokenizer, String> {
    if vocab.types.len() != vocab.tokens.len() {
        return Err(format!(
            "{} tokens but {} types",
            vocab.tokens.len(),
            vocab.types.len()
        ));
    }
    let map = vocab_map(&vocab.tokens);
    let mut merges = Vec::with_capacity(vocab.merges.len());
    let mut dropped = 0usize;
    for merge in &vocab.merges {
        // As llama.cpp: the separator is the first space after the first character.
        let split = merge
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == ' ')
            .map(|(i, _)| (&merge[..i], &merge[i + 1..]));
        let Some((left, right)) = split else {
            return Err(format!("merge {merge:?} has no separating space"));
        };
        // Hugging Face needs both sides and the result to be tokens; a merge that makes
        // no token can never produce one in llama.cpp either.
        if map.contains_key(left)
            && map.contains_key(right)
            && map.contains_key(&format!("{left}{right}"))
        {
            merges.push(json!([left, right]));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::debug!(dropped, "BPE merges whose parts or result are not tokens");
    }
    let model = json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": null,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": false,
        "byte_fallback": false,
        "ignore_merges": false,
        "vocab": map,
        "merges": merges,
    });
    load(
        added_tokens(&vocab.tokens, &vocab.types, &vocab.rstrip),
        Value::Null,
        vocab.pre.to_json(),
        post_processor(&vocab.tokens, special),
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
               "use_regex": true}),
        model,
    )
}
