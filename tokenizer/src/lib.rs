//! Tokenizer semantics that every engine computing its own logits uses on every request:
//! [`Vocab`] (llama.cpp's tokenize / detokenize / token bytes on a Hugging Face
//! [`Tokenizer`]), and the types that describe a model's tokens ([`SpecialTokens`],
//! [`TokenType`]).
//!
//! Kept apart from `runanywhere-convert`, which *builds* tokenizers from GGUF and
//! llama2.c files (and writes safetensors and ONNX models) and so depends on candle and
//! prost: an engine that only tokenizes links this small crate instead.

pub mod vocab;

use tokenizers::Tokenizer;

pub use vocab::Vocab;

/// The type llama.cpp gives a vocabulary entry (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Ordinary text.
    Normal,
    /// The unknown token.
    Unknown,
    /// A control token (BOS, EOS, chat markers): text only when rendered specially.
    Control,
    /// A user-defined token: always matched in text, rendered as its text.
    UserDefined,
    /// Unused.
    Unused,
    /// A `<0xXX>` byte token.
    Byte,
}

impl TokenType {
    /// The type for llama.cpp's integer code (unknown codes are treated as normal).
    pub fn from_code(code: i64) -> Self {
        match code {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }

    /// Whether the token is special: matched in text only when special tokens are parsed,
    /// and rendered empty in generated text.
    pub fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::Unknown)
    }
}

/// Token texts llama.cpp treats as end of generation (and as control tokens) in any
/// GGUF vocabulary (`llama-vocab.cpp`, as of ggml 0.26).
pub const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

/// The special tokens a model names, and whether tokenization adds BOS/EOS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Padding token.
    pub pad: Option<u32>,
    /// Every token that ends a generation (EOS, end-of-turn, ...), EOS included.
    pub eog: Vec<u32>,
    /// Tokenization with special tokens adds BOS.
    pub add_bos: bool,
    /// Tokenization with special tokens adds EOS.
    pub add_eos: bool,
}

/// A converted tokenizer and what the source file says about it.
#[derive(Debug, Clone)]
pub struct ConvertedTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Its special tokens.
    pub special: SpecialTokens,
    /// The chat template (Jinja) the file carries, if any.
    pub chat_template: Option<String>,
}
