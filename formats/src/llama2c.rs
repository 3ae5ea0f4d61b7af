//! llama2.c checkpoints: a header of seven little-endian `i32` (dim, hidden_dim,
//! n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means an
//! unshared classifier), then fp32 weights. The format has no magic, so a file is one
//! only when its header is plausible *and* predicts the file's size exactly.

use crate::error::FormatError;
use crate::facts::{kv_bytes_per_token, Facts};

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 28;
/// llama2.c runs in fp32, and so does its KV cache.
const KV_ELEMENT_BYTES: u64 = 4;

/// A plausible llama2.c header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Model width.
    pub dim: u64,
    /// Feed-forward width.
    pub hidden_dim: u64,
    /// Transformer layers.
    pub n_layers: u64,
    /// Attention heads.
    pub n_heads: u64,
    /// Key/value heads (fewer than `n_heads` with grouped-query attention).
    pub n_kv_heads: u64,
    /// Vocabulary size.
    pub vocab_size: u64,
    /// Whether the classifier shares the token embedding (a positive vocab_size).
    pub shared_classifier: bool,
    /// Maximum sequence length.
    pub seq_len: u64,
}

impl Header {
    /// Parses the header at the start of `head`; `None` when it is too short or not
    /// plausible.
    pub fn parse(head: &[u8]) -> Option<Header> {
        let field = |i: usize| -> Option<i64> {
            let b = head.get(i * 4..i * 4 + 4)?;
            Some(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        };
        let (dim, hidden, layers, heads, kv_heads, vocab, seq) = (
            field(0)?,
            field(1)?,
            field(2)?,
            field(3)?,
            field(4)?,
            field(5)?,
            field(6)?,
        );
        let plausible = (1..=65536).contains(&dim)
            && (1..=1 << 20).contains(&hidden)
            && (1..=1024).contains(&layers)
            && (1..=1024).contains(&heads)
            && (1..=heads).contains(&kv_heads)
            && dim % heads == 0
            && (1..=1 << 22).contains(&vocab.abs())
            && (1..=1 << 22).contains(&seq);
        if !plausible {
            return None;
        }
        // All positive and bounded above: the conversions cannot fail.
        let u = |v: i64| v.unsigned_abs();
        Some(Header {
            dim: u(dim),
            hidden_dim: u(hidden),
            n_layers: u(layers),
            n_heads: u(heads),
            n_kv_heads: u(kv_heads),
            vocab_size: u(vocab),
            shared_classifier: vocab > 0,
            seq_len: u(seq),
        })
    }

    /// Number of weights (fp32 values), without the legacy freq_cis tables. The bounds
    /// [`Header::parse`] checks keep this far below `u64::MAX`.
    pub fn parameters(&self) -> u64 {
        let (dim, layers) = (self.dim, self.n_layers);
        let kv_dim = dim * self.n_kv_heads / self.n_heads;
        self.vocab_size * dim
            + layers * dim * 2
            + layers * dim * (2 * dim + 2 * kv_dim)
            + layers * dim * self.hidden_dim * 3
            + dim
            + if self.shared_classifier {
                0
            } else {
                self.vocab_size * dim
            }
    }

    /// Why no engine can run this shape, if none can: grouped-query attention needs the
    /// key/value heads to divide the heads, and rotary embeddings an even head width.
    pub fn unsupported_shape(&self) -> Option<String> {
        let head = self.dim / self.n_heads;
        (self.n_heads % self.n_kv_heads != 0 || head % 2 != 0).then(|| {
            format!(
                "unsupported llama2.c shape: {} heads of width {head} with {} key/value heads \
                 (the key/value heads must divide the heads, and the width must be even)",
                self.n_heads, self.n_kv_heads
            )
        })
    }

    /// The file sizes this header predicts: with and without the legacy freq_cis tables.
    pub fn expected_sizes(&self) -> [u64; 2] {
        let freq = self.seq_len * (self.dim / self.n_heads);
        let header = HEADER_LEN as u64;
        let floats = self.parameters();
        [header + 4 * (floats + freq), header + 4 * floats]
    }
}

/// The file sizes a llama2.c header predicts (see [`Header::expected_sizes`]), or `None`
/// when `head` does not start with a plausible header.
pub fn expected_size(head: &[u8]) -> Option<[u64; 2]> {
    Header::parse(head).map(|h| h.expected_sizes())
}

/// Checks a llama2.c checkpoint of `len` bytes whose first bytes are `head`, recording
/// what the header says in `facts`.
pub fn check(head: &[u8], len: u64, facts: &mut Facts) -> Result<Header, FormatError> {
    let at_start = |problem: String| FormatError { offset: 0, problem };
    if head.len() < HEADER_LEN || len < HEADER_LEN as u64 {
        return Err(at_start(format!(
            "a llama2.c checkpoint starts with a {HEADER_LEN}-byte header; the file has {len} bytes"
        )));
    }
    let Some(h) = Header::parse(head) else {
        let fields: Vec<String> = head[..HEADER_LEN]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string())
            .collect();
        return Err(at_start(format!(
            "the header [{}] is not a plausible llama2.c header (dim, hidden_dim, n_layers, \
             n_heads, n_kv_heads, vocab_size, seq_len)",
            fields.join(", ")
        )));
    };
    facts.architecture = Some("llama".into());
    facts.parameters = Some(h.parameters());
    facts.quantization = Some("F32".into());
    facts.context_length = Some(h.seq_len);
    let head_dim = h.dim / h.n_heads;
    facts.kv_bytes_per_token = kv_bytes_per_token(
        h.n_layers,
        h.n_kv_heads,
        head_dim,
        head_dim,
        KV_ELEMENT_BYTES,
    );
    for (key, value) in [
        ("llama2c.dim", h.dim),
        ("llama2c.hidden_dim", h.hidden_dim),
        ("llama2c.n_layers", h.n_layers),
        ("llama2c.n_heads", h.n_heads),
        ("llama2c.n_kv_heads", h.n_kv_heads),
        ("llama2c.vocab_size", h.vocab_size),
    ] {
        facts.detail(key, value);
    }
    facts.detail("llama2c.shared_classifier", h.shared_classifier);
    let sizes = h.expected_sizes();
    if !sizes.contains(&len) {
        return Err(FormatError {
            offset: len,
            problem: format!(
                "the header predicts a file of {} bytes ({} without the freq_cis tables) but \
                 the file has {len} bytes (truncated or not a llama2.c checkpoint)",
                sizes[0], sizes[1]
            ),
        });
    }
    facts.detail("llama2c.freq_cis", sizes[0] == len);
    if let Some(problem) = h.unsupported_shape() {
        return Err(at_start(problem));
    }
    Ok(h)
}

/// Builders for small llama2.c checkpoints.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    /// A zero-filled checkpoint with the given header fields, of the size it predicts
    /// (with the freq_cis tables).
    pub fn checkpoint(fields: [i32; 7]) -> Vec<u8> {
        let mut bytes: Vec<u8> = fields.iter().flat_map(|v| v.to_le_bytes()).collect();
        let size = super::expected_size(&bytes).map_or(bytes.len() as u64, |s| s[0]);
        bytes.resize(usize::try_from(size).unwrap_or(0), 0);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// stories260K's shape (see ../shared/data/README.md).
    const STORIES: [i32; 7] = [64, 172, 5, 8, 4, 512, 512];

    #[test]
    fn the_header_predicts_the_size_and_gives_the_facts() {
        let bytes = testing::checkpoint(STORIES);
        assert_eq!(bytes.len(), 1_056_540);
        let mut facts = Facts::default();
        let h = check(&bytes[..HEADER_LEN], bytes.len() as u64, &mut facts).expect("valid");
        assert_eq!(h.n_kv_heads, 4);
        assert!(h.shared_classifier);
        assert_eq!(facts.context_length, Some(512));
        // (1,056,540 - 28) / 4 floats, less 512 × 8 of freq_cis.
        assert_eq!(facts.parameters, Some(264_128 - 4096));
        // 5 layers × 4 KV heads × (8 + 8) × 4 bytes.
        assert_eq!(facts.kv_bytes_per_token, Some(5 * 4 * 16 * 4));
        assert_eq!(facts.details["llama2c.freq_cis"], "true");
    }

    #[test]
    fn wrong_sizes_and_implausible_headers_are_refused() {
        let bytes = testing::checkpoint(STORIES);
        let mut facts = Facts::default();
        let err = check(&bytes[..HEADER_LEN], 1000, &mut facts).expect_err("short");
        assert!(
            err.problem.contains("predicts a file of 1056540 bytes"),
            "{err}"
        );
        let mut bad = bytes[..HEADER_LEN].to_vec();
        bad[16..20].copy_from_slice(&9i32.to_le_bytes()); // more KV heads than heads
        let err = check(&bad, bytes.len() as u64, &mut facts).expect_err("implausible");
        assert!(err.problem.contains("not a plausible"), "{err}");
        assert!(check(&bad[..10], 10, &mut facts).is_err());
        // Plausible and of the predicted size, but no engine can run it.
        for fields in [[64, 172, 5, 8, 3, 512, 512], [72, 172, 5, 8, 4, 512, 512]] {
            let odd = testing::checkpoint(fields);
            let err = check(&odd[..HEADER_LEN], odd.len() as u64, &mut facts)
                .expect_err("unsupported shape");
            assert!(err.problem.contains("unsupported llama2.c shape"), "{err}");
        }
        assert_eq!(expected_size(&[0; 27]), None);
    }
}
