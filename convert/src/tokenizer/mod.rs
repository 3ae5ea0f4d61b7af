//! Hugging Face [`Tokenizer`]s built from the vocabularies inside GGUF files and
//! llama2.c `tok*.bin` files, so that an engine that reads such a model without a
//! `tokenizer.json` still tokenizes exactly as llama.cpp does.
//!
//! Two vocabulary kinds are converted:
//!
//! * **SentencePiece (`llama`)**: llama.cpp's SPM tokenizer prefixes a space, writes
//!   spaces as `▁`, merges adjacent symbols highest *score* first, and falls back to
//!   `<0xXX>` byte tokens. The same result comes from a BPE model whose merges are
//!   every split of every token into two tokens, ranked by the score of the merged
//!   token (the conversion Hugging Face applies for `LlamaTokenizerFast`), with
//!   `byte_fallback`, behind a `Prepend("▁")` + `Replace(" ", "▁")` normaliser. See
//!   [`spm`].
//! * **Byte-level BPE (`gpt2`)**: the merges are in the file; the pre-tokenizer regexes
//!   depend on `tokenizer.ggml.pre` and are the ones llama.cpp uses. See [`bpe`].
//!
//! Token types (control, user-defined, byte, ...) become added tokens the way llama.cpp
//! treats them: control and unknown tokens are special (matched in text only when an
//! engine parses special tokens), user-defined ones are always matched.
//!
//! The result is a plain `Tokenizer` plus the [`SpecialTokens`] that the file names,
//! and can be saved as a `tokenizer.json` (see [`crate::safetensors`]).

pub mod bpe;
mod json;
pub mod spm;

use std::path::Path;

use crate::error::ConvertError;
use crate::gguf::GgufFile;
use crate::llama2c;

pub use runanywhere_tokenizer::{ConvertedTokenizer, SpecialTokens, TokenType, EOG_TEXTS};

/// A SentencePiece-style vocabulary: pieces with `▁` for spaces, scores, types.
#[derive(Debug, Clone)]
pub struct SpmVocab {
    /// The pieces, by id.
    pub tokens: Vec<String>,
    /// Their scores (higher merges first).
    pub scores: Vec<f32>,
    /// Their types.
    pub types: Vec<TokenType>,
    /// Whether a space is put in front of the text (SentencePiece's dummy prefix).
    pub add_space_prefix: bool,
    /// Per id: whether the (added) token swallows the whitespace after it; may be
    /// shorter than `tokens` (missing = no).
    pub rstrip: Vec<bool>,
}

/// Builds the tokenizer of a GGUF file from its `tokenizer.ggml.*` metadata.
///
/// Supports the `llama` (SentencePiece) and `gpt2` (byte-level BPE) tokenizer models;
/// others fail with [`ConvertError::Unsupported`].
pub fn from_gguf_vocab(gguf: &GgufFile) -> Result<ConvertedTokenizer, ConvertError> {
    let path = gguf.path();
    let model = gguf
        .get_str("tokenizer.ggml.model")
        .ok_or_else(|| gguf.invalid("no tokenizer.ggml.model: the file carries no vocabulary"))?;
    let tokens = string_array(gguf, "tokenizer.ggml.tokens")?
        .ok_or_else(|| gguf.invalid("no tokenizer.ggml.tokens"))?;
    if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
        return Err(gguf.invalid(format!(
            "tokenizer.ggml.tokens has {} entries",
            tokens.len()
        )));
    }
    let n = tokens.len();
    let types = match gguf.get_array("tokenizer.ggml.token_type") {
        None => vec![TokenType::Normal; n],
        Some(items) => {
            let types: Option<Vec<TokenType>> = items
                .iter()
                .map(|v| integer(v).map(TokenType::from_code))
                .collect();
            let types = types.ok_or_else(|| {
                gguf.invalid("tokenizer.ggml.token_type holds something other than integers")
            })?;
            check_len(gguf, "tokenizer.ggml.token_type", types.len(), n)?;
            types
        }
    };
    let id = |key: &str| {
        gguf.get_u64(key)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| (v as usize) < n)
    };
    let is_spm = model == "llama";
    let mut special = SpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id"),
        eos: id("tokenizer.ggml.eos_token_id"),
        unk: id("tokenizer.ggml.unknown_token_id"),
        pad: id("tokenizer.ggml.padding_token_id"),
        eog: Vec::new(),
        add_bos: gguf
            .get_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(is_spm),
        add_eos: gguf
            .get_bool("tokenizer.ggml.add_eos_token")
            .unwrap_or(false),
    };
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(t) = id(key) {
            if !special.eog.contains(&t) {
                special.eog.push(t);
            }
        }
    }
    // As llama.cpp: tokens spelled like an end of turn end generation and are control
    // tokens, whatever type the file gives them.
    let mut types = types;
    for (i, text) in tokens.iter().enumerate() {
        if EOG_TEXTS.contains(&text.as_str()) {
            types[i] = TokenType::Control;
            // `tokens.len()` fits a u32 (checked above).
            let i = i as u32;
            if !special.eog.contains(&i) {
                special.eog.push(i);
            }
        }
    }

    let rstrip = rstrip_flags(gguf, &tokens, &types);
    let tokenizer = match model {
        "llama" => {
            let scores = match gguf.get_array("tokenizer.ggml.scores") {
                None => vec![0.0; n],
                Some(items) => {
                    let scores: Option<Vec<f32>> = items.iter().map(float).collect();
                    let scores = scores.ok_or_else(|| {
                        gguf.invalid("tokenizer.ggml.scores holds something other than numbers")
                    })?;
                    check_len(gguf, "tokenizer.ggml.scores", scores.len(), n)?;
                    scores
                }
            };
            let vocab = SpmVocab {
                tokens,
                scores,
                types,
                add_space_prefix: gguf
                    .get_bool("tokenizer.ggml.add_space_prefix")
                    .unwrap_or(true),
                rstrip,
            };
            spm::build(&vocab, &special).map_err(|e| ConvertError::tokenizer(path, e))?
        }
        "gpt2" => {
            let merges = string_array(gguf, "tokenizer.ggml.merges")?
                .ok_or_else(|| gguf.invalid("a gpt2 vocabulary without tokenizer.ggml.merges"))?;
            let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
            let pre = bpe::PreTokenizer::from_gguf_name(pre).ok_or_else(|| {
                ConvertError::unsupported(path, format!("the BPE pre-tokenizer {pre:?}"))
            })?;
            let vocab = bpe::BpeVocab {
                tokens,
                types,
                merges,
                pre,
                rstrip,
            };
            bpe::build(&vocab, &special).map_err(|e| ConvertError::tokenizer(path, e))?
        }
        other => {
            return Err(ConvertError::unsupported(
                path,
                format!(
                    "the tokenizer model {other:?} (only \"llama\" and \"gpt2\" are converted)"
                ),
            ))
        }
    };
    Ok(ConvertedTokenizer {
        tokenizer,
        special,
        chat_template: gguf.get_str("tokenizer.chat_template").map(str::to_string),
    })
}

/// Builds the tokenizer of a llama2.c `tok*.bin` file for a model of `vocab_size`
/// tokens. Ids 0, 1 and 2 are `<unk>`, BOS and EOS, as in llama2.c (and in llama.cpp's
/// conversion of llama2.c models); `<0xXX>` pieces are byte tokens.
pub fn from_llama2c_tokenizer(
    path: &Path,
    vocab_size: usize,
) -> Result<ConvertedTokenizer, ConvertError> {
    let vocab = llama2c::read_vocab(path, vocab_size)?;
    let special = SpecialTokens {
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        pad: None,
        eog: vec![2],
        add_bos: true,
        add_eos: false,
    };
    let tokenizer = spm::build(&vocab, &special).map_err(|e| ConvertError::tokenizer(path, e))?;
    Ok(ConvertedTokenizer {
        tokenizer,
        special,
        chat_template: None,
    })
}

/// Builds a tokenizer from a separate file: a Hugging Face `tokenizer.json` (with the
/// special tokens of the `tokenizer_config.json` etc. next to it) when the file is JSON,
/// else a llama2.c tokenizer for `vocab_size` tokens.
pub fn from_file(path: &Path, vocab_size: usize) -> Result<ConvertedTokenizer, ConvertError> {
    let mut head = [0u8; 1];
    let n = runanywhere_formats::fs::open_regular(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| ConvertError::io(path, e))?;
    let is_json = n == 1 && head[0] == b'{';
    if is_json || path.extension().is_some_and(|e| e == "json") {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::hf::load_tokenizer(dir, Some(path))
    } else {
        from_llama2c_tokenizer(path, vocab_size)
    }
}

/// The tokenizer of a model file that holds none (an ExecuTorch `.pte`, a `.tflite`):
/// the file the user gave, else one next to the model — `tokenizer.json`, then
/// llama2.c's `tok<vocab_size>.bin` / `tokenizer.bin` — with its path. The error names
/// what was looked for and how to give one.
pub fn side_file(
    model: &Path,
    given: Option<&Path>,
    vocab_size: usize,
) -> Result<(ConvertedTokenizer, std::path::PathBuf), ConvertError> {
    let dir = model
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let json = dir.join("tokenizer.json");
            if json.is_file() {
                json
            } else if let Some(bin) = llama2c::find_tokenizer(model, vocab_size) {
                bin
            } else {
                let also = if dir.join("tokenizer.model").is_file() {
                    " (a SentencePiece tokenizer.model is there, but it is not read: convert it \
                     to tokenizer.json)"
                } else {
                    ""
                };
                return Err(ConvertError::invalid(
                    model,
                    format!(
                        "the model file holds no tokenizer, and none was found next to it \
                         (tokenizer.json, tok{vocab_size}.bin or tokenizer.bin){also}; give one \
                         with --tokenizer"
                    ),
                ));
            }
        }
    };
    Ok((from_file(&path, vocab_size)?, path))
}

/// llama.cpp's per-model token attributes that change tokenization: for Phi-3 (by
/// `general.name`), special and user-defined tokens swallow the whitespace after them,
/// except `<unk>`, `<s>` and `<|endoftext|>`.
fn rstrip_flags(gguf: &GgufFile, tokens: &[String], types: &[TokenType]) -> Vec<bool> {
    let name = gguf.get_str("general.name").unwrap_or("").to_lowercase();
    if !(name.contains("phi-3") || name.contains("phi3")) {
        return Vec::new();
    }
    tokens
        .iter()
        .zip(types)
        .map(|(text, ty)| {
            (ty.is_special() || *ty == TokenType::UserDefined || text == "</s>")
                && !matches!(text.as_str(), "<unk>" | "<s>" | "<|endoftext|>")
        })
        .collect()
}

fn check_len(gguf: &GgufFile, key: &str, len: usize, n: usize) -> Result<(), ConvertError> {
    if len != n {
        return Err(gguf.invalid(format!(
            "{key} has {len} entries but tokenizer.ggml.tokens has {n}"
        )));
    }
    Ok(())
}

/// A string array from the metadata (`None` if absent; an error if not strings).
fn string_array(gguf: &GgufFile, key: &str) -> Result<Option<Vec<String>>, ConvertError> {
    let Some(items) = gguf.get_array(key) else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match v {
            candle_core::quantized::gguf_file::Value::String(s) => Ok(s.clone()),
            _ => Err(gguf.invalid(format!("{key} holds something other than strings"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn integer(v: &candle_core::quantized::gguf_file::Value) -> Option<i64> {
    use candle_core::quantized::gguf_file::Value;
    Some(match *v {
        Value::U8(x) => i64::from(x),
        Value::I8(x) => i64::from(x),
        Value::U16(x) => i64::from(x),
        Value::I16(x) => i64::from(x),
        Value::U32(x) => i64::from(x),
        Value::I32(x) => i64::from(x),
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

fn float(v: &candle_core::quantized::gguf_file::Value) -> Option<f32> {
    use candle_core::quantized::gguf_file::Value;
    match *v {
        Value::F32(x) => Some(x),
        Value::F64(x) => Some(x as f32),
        _ => integer(v).map(|x| x as f32),
    }
}
