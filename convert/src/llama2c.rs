//! llama2.c checkpoints (`.bin`) and tokenizers (`tok*.bin`).
//!
//! A checkpoint is a header of seven `i32` (dim, hidden_dim, n_layers, n_heads,
//! n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is not
//! shared with the embedding) followed by `f32` arrays in a fixed order. Nothing in the
//! file says where an array ends, so the header must predict the file size exactly;
//! a file that does not match is refused before any array is read. Candle's own
//! `llama2_c_weights` reader sizes the key/value projections as `dim × dim`, which is
//! wrong for grouped-query models such as stories260K (4 of 8 heads): this reader sizes
//! them `kv_dim × dim` as `run.c` does.
//!
//! The tensors come out under Hugging Face names but in llama2.c's (Meta's) layout:
//! rotary embeddings rotate *adjacent* pairs. [`crate::llama`] turns them into the
//! Hugging Face layout.
//!
//! A tokenizer file is an `i32` max_token_length, then per token an `f32` score, an
//! `i32` length and the bytes; the token count is the model's vocab_size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use runanywhere_formats::llama2c::{Header, HEADER_LEN};

use crate::error::ConvertError;
use crate::tokenizer::spm::SPACE;
use crate::tokenizer::{SpmVocab, TokenType};

/// The hyper-parameters in a checkpoint's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Llama2cConfig {
    /// Model width.
    pub dim: usize,
    /// Feed-forward width.
    pub hidden_dim: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length (the rotary tables cover this many positions).
    pub seq_len: usize,
    /// Whether the classifier is the token embedding (positive vocab_size in the file).
    pub shared_classifier: bool,
}

impl Llama2cConfig {
    /// RMSNorm epsilon used by llama2.c.
    pub const NORM_EPS: f64 = 1e-5;
    /// Rotary base used by llama2.c.
    pub const ROPE_THETA: f64 = 10_000.0;

    /// Width of one head.
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of the key/value projections.
    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }

    /// Parses a header (the shared plausibility check of `runanywhere-formats`, plus
    /// an even head width, which rotary embeddings need).
    pub fn from_header(path: &Path, header: &[u8]) -> Result<Self, ConvertError> {
        let h = Header::parse(header).ok_or_else(|| {
            let fields: Vec<String> = header
                .chunks_exact(4)
                .take(7)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string())
                .collect();
            ConvertError::invalid(
                path,
                format!(
                    "not a llama2.c checkpoint: the header [{}] is not a plausible (dim, \
                     hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len)",
                    fields.join(", ")
                ),
            )
        })?;
        // `Header::parse` bounds every field far below `usize::MAX`.
        let u = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let cfg = Llama2cConfig {
            dim: u(h.dim),
            hidden_dim: u(h.hidden_dim),
            n_layers: u(h.n_layers),
            n_heads: u(h.n_heads),
            n_kv_heads: u(h.n_kv_heads),
            vocab_size: u(h.vocab_size),
            seq_len: u(h.seq_len),
            shared_classifier: h.shared_classifier,
        };
        if let Some(problem) = h.unsupported_shape() {
            return Err(ConvertError::invalid(path, problem));
        }
        Ok(cfg)
    }
}

/// A loaded checkpoint: the header and every tensor (f32, on the CPU).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The header.
    pub config: Llama2cConfig,
    /// Tensors under Hugging Face names in llama2.c's rotary layout, plus
    /// `rot.freq_cis_real` / `rot.freq_cis_imag` (`seq_len × head_size/2`) when the file
    /// has them. `lm_head.weight` is present only when the classifier is not shared.
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads and checks the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Self, ConvertError> {
        let bytes =
            runanywhere_formats::fs::read_regular(path).map_err(|e| ConvertError::io(path, e))?;
        let config = Llama2cConfig::from_header(path, &bytes)?;
        let size = bytes.len() as u64;
        let [with_freq, without_freq] = Header::parse(&bytes)
            .map(|h| h.expected_sizes())
            .unwrap_or_default();
        let has_freq = if size == with_freq {
            true
        } else if size == without_freq {
            false
        } else {
            return Err(ConvertError::invalid(
                path,
                format!(
                    "a llama2.c checkpoint with this header ({config:?}) has {with_freq} bytes \
                     ({without_freq} without rotary tables), but the file has {size} \
                     (truncated, or not a legacy llama2.c checkpoint)"
                ),
            ));
        };

        let mut reader = Floats {
            bytes: &bytes[HEADER_LEN..],
            path,
        };
        let cfg = config;
        let (dim, hidden, kv, layers) = (cfg.dim, cfg.hidden_dim, cfg.kv_dim(), cfg.n_layers);
        let mut tensors = HashMap::new();
        let embedding = reader.tensor(&[cfg.vocab_size, dim])?;
        tensors.insert("model.embed_tokens.weight".to_string(), embedding);
        let per_layer = |reader: &mut Floats<'_>,
                         tensors: &mut HashMap<String, Tensor>,
                         name: &str,
                         shape: &[usize]|
         -> Result<(), ConvertError> {
            for l in 0..layers {
                let t = reader.tensor(shape)?;
                tensors.insert(format!("model.layers.{l}.{name}.weight"), t);
            }
            Ok(())
        };
        per_layer(&mut reader, &mut tensors, "input_layernorm", &[dim])?;
        per_layer(&mut reader, &mut tensors, "self_attn.q_proj", &[dim, dim])?;
        per_layer(&mut reader, &mut tensors, "self_attn.k_proj", &[kv, dim])?;
        per_layer(&mut reader, &mut tensors, "self_attn.v_proj", &[kv, dim])?;
        per_layer(&mut reader, &mut tensors, "self_attn.o_proj", &[dim, dim])?;
        per_layer(
            &mut reader,
            &mut tensors,
            "post_attention_layernorm",
            &[dim],
        )?;
        per_layer(&mut reader, &mut tensors, "mlp.gate_proj", &[hidden, dim])?;
        per_layer(&mut reader, &mut tensors, "mlp.down_proj", &[dim, hidden])?;
        per_layer(&mut reader, &mut tensors, "mlp.up_proj", &[hidden, dim])?;
        tensors.insert("model.norm.weight".to_string(), reader.tensor(&[dim])?);
        if has_freq {
            let half = cfg.head_size() / 2;
            tensors.insert(
                "rot.freq_cis_real".to_string(),
                reader.tensor(&[cfg.seq_len, half])?,
            );
            tensors.insert(
                "rot.freq_cis_imag".to_string(),
                reader.tensor(&[cfg.seq_len, half])?,
            );
        }
        if !cfg.shared_classifier {
            tensors.insert(
                "lm_head.weight".to_string(),
                reader.tensor(&[cfg.vocab_size, dim])?,
            );
        }
        Ok(Checkpoint { config, tensors })
    }
}

/// Hands out consecutive little-endian `f32` arrays.
struct Floats<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl Floats<'_> {
    fn tensor(&mut self, shape: &[usize]) -> Result<Tensor, ConvertError> {
        let n: usize = shape.iter().product();
        let len = n * 4;
        if len > self.bytes.len() {
            // The size check makes this unreachable; keep the error rather than a panic.
            return Err(ConvertError::invalid(self.path, "the file ends early"));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        let data: Vec<f32> = head
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| ConvertError::candle(self.path, e))
    }
}

/// Reads a llama2.c tokenizer for a model of `vocab_size` tokens, as the SentencePiece
/// vocabulary llama.cpp makes of it (`llama-convert-llama2c-to-ggml`): ids 0/1/2 become
/// `<unk>`/`<s>`/`</s>`, `<0xXX>` pieces byte tokens, empty pieces control tokens, and
/// spaces `▁`.
pub fn read_vocab(path: &Path, vocab_size: usize) -> Result<SpmVocab, ConvertError> {
    let bytes =
        runanywhere_formats::fs::read_regular(path).map_err(|e| ConvertError::io(path, e))?;
    parse_vocab(path, &bytes, vocab_size)
}

fn parse_vocab(path: &Path, bytes: &[u8], vocab_size: usize) -> Result<SpmVocab, ConvertError> {
    let fail = |at: usize, what: &str| {
        ConvertError::invalid(
            path,
            format!("not a llama2.c tokenizer for {vocab_size} tokens: {what} at byte {at}"),
        )
    };
    let max_len = bytes
        .get(..4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| fail(0, "max_token_length runs past the end"))?;
    if max_len <= 0 {
        return Err(fail(0, "a non-positive max_token_length"));
    }
    let mut vocab = SpmVocab {
        tokens: Vec::with_capacity(vocab_size.min(bytes.len() / 8)),
        scores: Vec::new(),
        types: Vec::new(),
        add_space_prefix: true,
        rstrip: Vec::new(),
    };
    let mut pos = 4usize;
    for id in 0..vocab_size {
        let (score, text, next) = vocab_entry(bytes, pos)
            .ok_or_else(|| fail(pos, &format!("token {id} runs past the end")))?;
        pos = next;
        let (text, ty) = match id {
            0 => ("<unk>".to_string(), TokenType::Unknown),
            1 => ("<s>".to_string(), TokenType::Control),
            2 => ("</s>".to_string(), TokenType::Control),
            _ if text.is_empty() => (text, TokenType::Control),
            _ if is_byte_piece(&text) => (text, TokenType::Byte),
            _ => (text.replace(' ', SPACE), TokenType::Normal),
        };
        vocab.tokens.push(text);
        vocab.scores.push(score);
        vocab.types.push(ty);
    }
    if pos != bytes.len() {
        return Err(fail(
            pos,
            &format!("{} bytes left over after the last token", bytes.len() - pos),
        ));
    }
    Ok(vocab)
}

/// One tokenizer entry at `pos`: score, text, and the position after it; `None` if it
/// runs past the end or has a negative length.
fn vocab_entry(bytes: &[u8], pos: usize) -> Option<(f32, String, usize)> {
    let word = |at: usize| -> Option<[u8; 4]> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some([b[0], b[1], b[2], b[3]])
    };
    let score = f32::from_le_bytes(word(pos)?);
    let len = usize::try_from(i32::from_le_bytes(word(pos + 4)?)).ok()?;
    let start = pos + 8;
    let end = start.checked_add(len)?;
    let text = String::from_utf8_lossy(bytes.get(start..end)?).into_owned();
    Some((score, text, end))
}

/// Whether `text` is a `<0xXX>` byte piece.
fn is_byte_piece(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 6
        && text.starts_with("<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// Finds the tokenizer of the llama2.c checkpoint at `model` with `vocab_size` tokens:
/// `tok{vocab_size}.bin`, then `tokenizer.bin`, then any other `tok*.bin` in the same
/// directory that parses as a vocabulary of exactly that size.
pub fn find_tokenizer(model: &Path, vocab_size: usize) -> Option<PathBuf> {
    let dir = model.parent().filter(|d| !d.as_os_str().is_empty())?;
    let fits = |p: &Path| {
        runanywhere_formats::fs::read_regular(p)
            .ok()
            .is_some_and(|b| parse_vocab(p, &b, vocab_size).is_ok())
    };
    for name in [format!("tok{vocab_size}.bin"), "tokenizer.bin".to_string()] {
        let p = dir.join(name);
        if p.is_file() && fits(&p) {
            return Some(p);
        }
    }
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tok") && n.ends_with(".bin"))
                && p.as_path() != model
        })
        .collect();
    others.sort();
    others.into_iter().find(|p| fits(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fields: [i32; 7]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// A checkpoint of the given shape with weights 0, 1, 2, ... (as f32).
    fn checkpoint(fields: [i32; 7], freq: bool) -> Vec<u8> {
        let [with, without] = Header::parse(&header(fields)).unwrap().expected_sizes();
        let n = (if freq { with } else { without } - HEADER_LEN as u64) / 4;
        let mut b = header(fields);
        for i in 0..n {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_a_gqa_checkpoint_with_its_kv_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, checkpoint([8, 12, 2, 4, 2, 10, 6], true)).unwrap();
        let c = Checkpoint::read(&path).unwrap();
        assert_eq!(c.config.kv_dim(), 4);
        let k = &c.tensors["model.layers.1.self_attn.k_proj.weight"];
        assert_eq!(k.dims(), &[4, 8]);
        assert!(c.tensors.contains_key("rot.freq_cis_real"));
        assert!(!c.tensors.contains_key("lm_head.weight"));
        // The embedding is the first array: 0, 1, 2, ...
        let e: Vec<f32> = c.tensors["model.embed_tokens.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(&e[..3], &[0.0, 1.0, 2.0]);

        // Unshared classifier, no rotary tables.
        std::fs::write(&path, checkpoint([8, 12, 2, 4, 2, -10, 6], false)).unwrap();
        let c = Checkpoint::read(&path).unwrap();
        assert_eq!(c.tensors["lm_head.weight"].dims(), &[10, 8]);
        assert!(!c.tensors.contains_key("rot.freq_cis_real"));
    }

    #[test]
    fn bad_headers_and_sizes_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        let good = checkpoint([8, 12, 2, 4, 2, 10, 6], true);
        for cut in [0, 10, 28, 100, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(matches!(
                Checkpoint::read(&path),
                Err(ConvertError::Invalid { .. })
            ));
        }
        for fields in [
            [0, 12, 2, 4, 2, 10, 6],
            [8, 12, 2, 3, 2, 10, 6],
            [8, 12, 2, 4, 3, 10, 6],
            [i32::MAX, i32::MAX, i32::MAX, 1, 1, i32::MAX, i32::MAX],
        ] {
            let mut b = header(fields);
            b.extend_from_slice(&[0u8; 64]);
            std::fs::write(&path, &b).unwrap();
            assert!(Checkpoint::read(&path).is_err(), "{fields:?}");
        }
    }

    #[test]
    fn tokenizer_files_are_parsed_exactly() {
        let mut b = 3i32.to_le_bytes().to_vec();
        for (score, text) in [
            (0.0f32, "x"),
            (0.0, "\n<s>\n"),
            (0.0, "\n</s>\n"),
            (-1.0, " a"),
        ] {
            b.extend_from_slice(&score.to_le_bytes());
            b.extend_from_slice(&(text.len() as i32).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
        }
        let v = parse_vocab(Path::new("t"), &b, 4).unwrap();
        assert_eq!(v.tokens, ["<unk>", "<s>", "</s>", "\u{2581}a"]);
        assert_eq!(v.types[1], TokenType::Control);
        assert!(
            parse_vocab(Path::new("t"), &b, 3).is_err(),
            "bytes left over"
        );
        assert!(parse_vocab(Path::new("t"), &b, 5).is_err(), "too short");
        assert!(parse_vocab(Path::new("t"), &b[..b.len() - 1], 4).is_err());
    }
}
