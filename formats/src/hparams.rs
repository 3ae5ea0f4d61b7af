//! The hyperparameters llama.cpp asserts on, checked before it sees the file.
//!
//! llama.cpp throws a C++ exception (a clean load failure) for most bad metadata: a
//! missing key, a wrong type, an array of the wrong length. But some values pass its
//! reader and later hit a `GGML_ASSERT`, which aborts the whole process: the layer
//! count at load, the head counts and dimensions when the context is created, the
//! RMS-norm epsilon and the rotary width at the first decode, duplicate tokens and
//! missing byte-fallback tokens in the vocabulary. Each rule below is one of those
//! asserts (file and condition quoted from llama.cpp's `llama-model.cpp`,
//! `ggml-cpu/ops.cpp`, `ggml.c`, `llama-vocab.cpp`), written as the range of values
//! that stays clear of it. A value outside a range is refused with the key, the value
//! and the range, so `verify` and every engine report the same problem.
//!
//! Keys are matched by suffix (`{arch}.block_count`), since `general.architecture` may
//! come after them in the file; the rules are applied for the file's architecture once
//! the whole header is read. Rules that only hold for llama-style models (uniform
//! per-layer arrays, equal key and value widths) are applied to `llama` only.

use std::collections::{HashMap, HashSet};

use crate::error::FormatError;

/// `LLAMA_MAX_LAYERS` (`llama-hparams.h`): `GGML_ASSERT(n_layer_all > 0 && n_layer_all
/// <= LLAMA_MAX_LAYERS)` at load.
pub const MAX_LAYERS: i128 = 512;
/// `LLAMA_MAX_EXPERTS`: `GGML_ASSERT(n_expert <= LLAMA_MAX_EXPERTS)` at load.
pub const MAX_EXPERTS: i128 = 1024;
/// Widths beyond this overflow llama.cpp's `u32` size products (`n_embd_k_gqa`) or its
/// `int` getters, which the Rust bindings then `unwrap`; real models stay far below.
const MAX_WIDTH: i128 = 1 << 20;
/// Feed-forward widths (larger than the model width in every real model).
const MAX_FF_WIDTH: i128 = 1 << 24;
/// Head counts.
const MAX_HEADS: i128 = 1 << 16;
/// llama.cpp's C API returns the trained context as an `int32_t`; larger values come
/// back negative and the bindings panic.
const MAX_CONTEXT: i128 = i32::MAX as i128;
/// The rope scaling types llama.cpp knows; any other string aborts at load.
const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];

/// A metadata value kept for the checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// An integer of any GGUF integer type.
    Int(i128),
    /// A `float32` or `float64`.
    Float(f64),
    /// An array of integers (per-layer values).
    Ints(Vec<i128>),
    /// A string.
    Str(String),
}

/// What to read for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// A number, or an array of integers.
    Number,
    /// A string.
    Text,
    /// The token list (`tokenizer.ggml.tokens`).
    Tokens,
}

/// Integer keys, as suffixes of `{arch}.`.
const INT_SUFFIXES: [&str; 14] = [
    ".block_count",
    ".context_length",
    ".embedding_length",
    ".feed_forward_length",
    ".attention.head_count",
    ".attention.head_count_kv",
    ".attention.key_length",
    ".attention.value_length",
    ".rope.dimension_count",
    ".expert_count",
    ".expert_used_count",
    ".expert_group_count",
    ".expert_group_used_count",
    ".nextn_predict_layers",
];
/// Float keys, as suffixes of `{arch}.`.
const FLOAT_SUFFIXES: [&str; 4] = [
    ".attention.layer_norm_rms_epsilon",
    ".attention.layer_norm_epsilon",
    ".rope.freq_base",
    ".rope.scaling.factor",
];
const ROPE_SCALING_TYPE: &str = ".rope.scaling.type";
const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
const TOKENS: &str = "tokenizer.ggml.tokens";

/// Whether (and how) the value of `key` is kept for the checks.
pub(crate) fn wanted(key: &str) -> Option<Want> {
    if key == TOKENS {
        return Some(Want::Tokens);
    }
    if key == TOKENIZER_MODEL || key.ends_with(ROPE_SCALING_TYPE) {
        return Some(Want::Text);
    }
    let number = INT_SUFFIXES.iter().any(|s| key.ends_with(s))
        || FLOAT_SUFFIXES.iter().any(|s| key.ends_with(s));
    number.then_some(Want::Number)
}

/// The most tokens a vocabulary may list: far above any real model (the largest have
/// about 262,000), and small enough that scanning a hostile file stays cheap.
pub const MAX_TOKENS: u64 = 1 << 22;

/// What the token list holds, as far as the checks need it.
#[derive(Debug, Default)]
pub(crate) struct TokenScan {
    /// Number of tokens.
    pub(crate) count: u64,
    /// 64-bit hashes of the tokens seen (16 bytes a token at most, whatever their
    /// length). Two different tokens sharing a hash would be taken for a duplicate: with
    /// at most [`MAX_TOKENS`] tokens the odds are below one in a million.
    seen: HashSet<u64>,
    /// The first repeated token: (index, text).
    duplicate: Option<(u64, String)>,
    /// Which of the 256 byte tokens `<0x00>` .. `<0xFF>` are present (a bit set).
    bytes: [u64; 4],
    /// Where the list is in the file.
    offset: u64,
}

impl TokenScan {
    /// Starts a scan of the list at `offset`.
    pub(crate) fn new(offset: u64) -> Self {
        TokenScan {
            offset,
            ..TokenScan::default()
        }
    }

    /// Records the next token. llama.cpp renames empty tokens `[EMPTY_{i}]` before it
    /// indexes them, so they are compared under that name.
    pub(crate) fn add(&mut self, text: Vec<u8>) {
        let index = self.count;
        self.count += 1;
        let text = if text.is_empty() {
            format!("[EMPTY_{index}]").into_bytes()
        } else {
            text
        };
        if let Some(b) = byte_token(&text) {
            self.bytes[usize::from(b / 64)] |= 1 << (b % 64);
        }
        if self.duplicate.is_none() && !self.seen.insert(fingerprint(&text)) {
            self.duplicate = Some((index, String::from_utf8_lossy(&text).into_owned()));
        }
    }
}

/// A fixed-key 64-bit hash of a token (the same in every run).
fn fingerprint(text: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)] // SipHasher: stable keys, so the result does not vary by run.
    let mut h = std::hash::SipHasher::new_with_keys(0x5275_6e41, 0x6e79_7768);
    text.hash(&mut h);
    h.finish()
}

/// The byte of a byte-fallback token `<0xAB>`, written as llama.cpp looks it up
/// (`format("<0x%02X>")`: two upper-case hex digits).
fn byte_token(text: &[u8]) -> Option<u8> {
    let hex = text.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    let upper_hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
    if hex.len() != 2 || !hex.iter().all(upper_hex) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// The values kept while the header is read.
#[derive(Debug, Default)]
pub(crate) struct Hparams {
    values: HashMap<String, (u64, Value)>,
    /// The token list, when the file has one.
    pub(crate) tokens: Option<TokenScan>,
}

impl Hparams {
    /// Keeps `value` of `key`, read at byte `offset`.
    pub(crate) fn insert(&mut self, key: &str, offset: u64, value: Value) {
        self.values.insert(key.to_string(), (offset, value));
    }

    /// Applies every rule for architecture `arch`.
    pub(crate) fn check(&self, arch: Option<&str>) -> Result<(), FormatError> {
        self.check_vocabulary()?;
        match arch {
            Some(arch) => Rules { h: self, arch }.check(),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&(u64, Value)> {
        self.values.get(key)
    }

    fn check_vocabulary(&self) -> Result<(), FormatError> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        let fail = |problem: String| {
            Err(FormatError {
                offset: tokens.offset,
                problem,
            })
        };
        if let Some((index, text)) = &tokens.duplicate {
            // llama-vocab.cpp: GGML_ASSERT(id_to_token.size() == token_to_id.size()).
            return fail(format!(
                "tokenizer.ggml.tokens lists the token {text:?} twice (again at index \
                 {index}); every token must be unique"
            ));
        }
        let spm = matches!(self.get(TOKENIZER_MODEL), Some((_, Value::Str(m))) if m == "llama");
        if spm {
            // The byte fallback looks its tokens up with `token_to_id.at()`, whose
            // exception escapes llama_tokenize and aborts the process.
            let present = |b: u8| tokens.bytes[usize::from(b / 64)] & (1 << (b % 64)) != 0;
            if let Some(missing) = (0..=255u8).find(|&b| !present(b)) {
                return fail(format!(
                    "the SentencePiece vocabulary (tokenizer.ggml.model = \"llama\") lacks the \
                     byte token <0x{missing:02X}>; all 256 byte-fallback tokens <0x00>..<0xFF> \
                     must be present"
                ));
            }
        }
        Ok(())
    }
}

/// The architecture rules over the kept values.
struct Rules<'a> {
    h: &'a Hparams,
    arch: &'a str,
}

impl Rules<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.arch)
    }

    /// A scalar integer or a per-layer array, as (offset, values).
    fn ints(&self, suffix: &str) -> Option<(u64, Vec<i128>)> {
        match self.h.get(&self.key(suffix))? {
            (offset, Value::Int(v)) => Some((*offset, vec![*v])),
            (offset, Value::Ints(v)) => Some((*offset, v.clone())),
            _ => None,
        }
    }

    fn int(&self, suffix: &str) -> Option<(u64, i128)> {
        match self.h.get(&self.key(suffix))? {
            (offset, Value::Int(v)) => Some((*offset, *v)),
            _ => None,
        }
    }

    fn float(&self, suffix: &str) -> Option<(u64, f64)> {
        match self.h.get(&self.key(suffix))? {
            (offset, Value::Float(v)) => Some((*offset, *v)),
            _ => None,
        }
    }

    fn fail(&self, offset: u64, suffix: &str, problem: String) -> FormatError {
        FormatError {
            offset,
            problem: format!("{} {problem}", self.key(suffix)),
        }
    }

    /// Every value of `suffix` (scalar or per layer) must lie in `lo..=hi`.
    fn in_range(&self, suffix: &str, lo: i128, hi: i128) -> Result<(), FormatError> {
        if let Some((offset, values)) = self.ints(suffix) {
            if let Some(bad) = values.iter().find(|v| !(lo..=hi).contains(*v)) {
                return Err(self.fail(
                    offset,
                    suffix,
                    format!("is {bad}; it must be between {lo} and {hi}"),
                ));
            }
        }
        Ok(())
    }

    /// For llama: a per-layer array must hold one value for every layer.
    fn uniform(&self, suffix: &str) -> Result<(), FormatError> {
        if let Some((offset, values)) = self.ints(suffix) {
            if values.windows(2).any(|w| w[0] != w[1]) {
                return Err(self.fail(
                    offset,
                    suffix,
                    format!(
                        "varies between layers ({values:?}); a {} model needs the same value \
                         in every layer",
                        self.arch
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), FormatError> {
        let llama = self.arch == "llama";
        self.in_range(".block_count", 1, MAX_LAYERS)?;
        self.in_range(".context_length", 1, MAX_CONTEXT)?;
        self.in_range(".embedding_length", 1, MAX_WIDTH)?;
        self.in_range(".feed_forward_length", 0, MAX_FF_WIDTH)?;
        self.in_range(".attention.key_length", 1, MAX_WIDTH)?;
        self.in_range(".attention.value_length", 1, MAX_WIDTH)?;
        self.in_range(".rope.dimension_count", 0, MAX_WIDTH)?;
        // Some architectures (hybrids) have layers without attention: 0 heads there.
        let min_heads = i128::from(llama);
        self.in_range(".attention.head_count", min_heads, MAX_HEADS)?;
        self.in_range(".attention.head_count_kv", min_heads, MAX_HEADS)?;
        // Recurrent and hybrid architectures (Mamba, RWKV, LFM2, Jamba) write 0 heads for
        // layers without attention; llama needs heads everywhere.
        if let (true, Some((offset, 0))) = (llama, self.int(".attention.head_count")) {
            return Err(self.fail(
                offset,
                ".attention.head_count",
                "is 0; a model needs at least one attention head".into(),
            ));
        }
        if llama {
            for suffix in [
                ".feed_forward_length",
                ".attention.head_count",
                ".attention.head_count_kv",
                ".expert_used_count",
            ] {
                self.uniform(suffix)?;
            }
        }
        self.heads_divide(llama)?;
        self.head_width(llama)?;
        self.floats()?;
        self.experts()?;
        if let (Some((offset, nextn)), Some((_, layers))) =
            (self.int(".nextn_predict_layers"), self.int(".block_count"))
        {
            if nextn > layers {
                return Err(self.fail(
                    offset,
                    ".nextn_predict_layers",
                    format!("is {nextn}, more than the {layers} layers"),
                ));
            }
        }
        if let Some((offset, Value::Str(kind))) = self.h.get(&self.key(ROPE_SCALING_TYPE)) {
            if !ROPE_SCALING_TYPES.contains(&kind.as_str()) {
                return Err(self.fail(
                    *offset,
                    ROPE_SCALING_TYPE,
                    format!(
                        "is {kind:?}; llama.cpp knows {}",
                        ROPE_SCALING_TYPES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Grouped-query attention: the key/value heads must divide the heads, layer by
    /// layer (`ggml_can_mul_mat`; a 0 divisor is a division by zero). Layers without
    /// key/value heads are attention-free in hybrid architectures, so only llama refuses
    /// them.
    fn heads_divide(&self, llama: bool) -> Result<(), FormatError> {
        let (Some((_, heads)), Some((offset, kv))) = (
            self.ints(".attention.head_count"),
            self.ints(".attention.head_count_kv"),
        ) else {
            return Ok(());
        };
        let layer = |v: &[i128], i: usize| v.get(i).or(v.first()).copied().unwrap_or(0);
        for i in 0..heads.len().max(kv.len()) {
            let (h, k) = (layer(&heads, i), layer(&kv, i));
            let refused = match k {
                0 => llama && h > 0,
                k => h > 0 && h % k != 0,
            };
            if refused {
                return Err(self.fail(
                    offset,
                    ".attention.head_count_kv",
                    format!("is {k} (layer {i}); it must divide the {h} attention heads"),
                ));
            }
        }
        Ok(())
    }

    /// The head width (key_length, else embedding_length / head_count) and the rotary
    /// width within it: the rope op asserts `n_dims % 2 == 0 && n_dims <= ne0`.
    fn head_width(&self, llama: bool) -> Result<(), FormatError> {
        let heads = self
            .ints(".attention.head_count")
            .and_then(|(_, v)| v.first().copied())
            .filter(|&h| h > 0);
        let embd = self.int(".embedding_length");
        let key = self.int(".attention.key_length");
        if llama {
            if let (Some((_, k)), Some((offset, v))) = (key, self.int(".attention.value_length")) {
                if k != v {
                    return Err(self.fail(
                        offset,
                        ".attention.value_length",
                        format!("is {v} but the key length is {k}; a llama model needs them equal"),
                    ));
                }
            }
        }
        let width = match (key, embd, heads) {
            (Some((_, k)), _, _) => Some(k),
            (None, Some((offset, e)), Some(h)) => {
                if llama && e % h != 0 {
                    return Err(self.fail(
                        offset,
                        ".embedding_length",
                        format!("is {e}, not a multiple of the {h} attention heads"),
                    ));
                }
                Some(e / h)
            }
            _ => None,
        };
        let rot = self.int(".rope.dimension_count");
        let Some((offset, n_rot)) = rot.or(if llama { width.map(|w| (0, w)) } else { None }) else {
            return Ok(());
        };
        let suffix = ".rope.dimension_count";
        if n_rot < 2 || n_rot % 2 != 0 {
            let what = if rot.is_some() {
                format!("is {n_rot}")
            } else {
                format!("is not given, and the head width is {n_rot}")
            };
            return Err(self.fail(
                offset,
                suffix,
                format!("{what}; the rotary width must be even and at least 2"),
            ));
        }
        if let Some(w) = width.filter(|&w| n_rot > w) {
            return Err(self.fail(
                offset,
                suffix,
                format!("is {n_rot}, wider than the {w}-wide attention heads"),
            ));
        }
        Ok(())
    }

    fn floats(&self) -> Result<(), FormatError> {
        for suffix in [
            ".attention.layer_norm_rms_epsilon",
            ".attention.layer_norm_epsilon",
            ".rope.freq_base",
        ] {
            if let Some((offset, v)) = self.float(suffix) {
                // ops.cpp: GGML_ASSERT(eps >= 0.0f), which NaN fails too.
                if !(v.is_finite() && v > 0.0) {
                    return Err(self.fail(
                        offset,
                        suffix,
                        format!("is {v}; it must be a finite number above 0"),
                    ));
                }
            }
        }
        if let Some((offset, v)) = self.float(".rope.scaling.factor") {
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.fail(
                    offset,
                    ".rope.scaling.factor",
                    format!("is {v}; it must be 0 (none) or a finite number above 0"),
                ));
            }
        }
        Ok(())
    }

    /// Mixture of experts, as `llama-model.cpp` asserts at load.
    fn experts(&self) -> Result<(), FormatError> {
        self.in_range(".expert_count", 0, MAX_EXPERTS)?;
        let experts = self.int(".expert_count").map_or(0, |(_, n)| n);
        let used = self.ints(".expert_used_count");
        let used_max = used
            .as_ref()
            .and_then(|(_, v)| v.iter().max().copied())
            .unwrap_or(0);
        let groups = self.int(".expert_group_count").map_or(0, |(_, n)| n);
        let group_used = self.int(".expert_group_used_count").map_or(0, |(_, n)| n);
        let offset = used.as_ref().map_or(0, |(o, _)| *o);
        let problem = if experts == 0 {
            (used_max != 0 || groups != 0).then(|| {
                format!("is {used_max} (with {groups} expert groups), but the model has no experts")
            })
        } else if used.as_ref().is_some_and(|(_, v)| v.iter().any(|&u| u < 0)) {
            Some("is negative".to_string())
        } else if !(1..=experts).contains(&used_max) {
            Some(format!(
                "is {used_max}; it must be between 1 and the {experts} experts"
            ))
        } else if groups >= experts && groups > 0 {
            Some(format!(
                "goes with {groups} expert groups, not fewer than the {experts} experts"
            ))
        } else if groups > 1 && (experts % groups != 0 || !(1..groups).contains(&group_used)) {
            Some(format!(
                "goes with {groups} expert groups of which {group_used} are used, for {experts} \
                 experts; the groups must divide the experts and 0 < used < groups"
            ))
        } else {
            None
        };
        match problem {
            Some(p) => Err(self.fail(offset, ".expert_used_count", p)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(pairs: &[(&str, Value)]) -> Result<(), FormatError> {
        let mut h = Hparams::default();
        for (suffix, v) in [
            (".block_count", Value::Int(2)),
            (".context_length", Value::Int(128)),
            (".embedding_length", Value::Int(64)),
            (".attention.head_count", Value::Int(8)),
            (".attention.head_count_kv", Value::Int(4)),
            (".attention.layer_norm_rms_epsilon", Value::Float(1e-5)),
        ] {
            h.insert(&format!("llama{suffix}"), 0, v);
        }
        for (suffix, v) in pairs {
            h.insert(&format!("llama{suffix}"), 0, v.clone());
        }
        h.check(Some("llama"))
    }

    fn refused(pairs: &[(&str, Value)], needle: &str) {
        let err = llama(pairs).expect_err(needle);
        assert!(err.problem.contains(needle), "{needle}: {err}");
    }

    #[test]
    fn plausible_hyperparameters_pass() {
        llama(&[]).unwrap();
        llama(&[
            (".attention.head_count", Value::Ints(vec![8, 8])),
            (".rope.dimension_count", Value::Int(8)),
            (".rope.freq_base", Value::Float(10000.0)),
            (".rope.scaling.factor", Value::Float(0.0)),
            (".expert_count", Value::Int(8)),
            (".expert_used_count", Value::Int(2)),
        ])
        .unwrap();
    }

    #[test]
    fn every_aborting_value_is_refused() {
        use Value::{Float, Int, Ints, Str};
        for n in [0, 513, 65536] {
            refused(&[(".block_count", Int(n))], "llama.block_count is");
        }
        for eps in [-1.0, -1e-30, f64::NAN, 0.0, f64::INFINITY] {
            refused(
                &[(".attention.layer_norm_rms_epsilon", Float(eps))],
                "must be a finite number above 0",
            );
        }
        refused(
            &[(".context_length", Int(1 << 31))],
            "between 1 and 2147483647",
        );
        refused(&[(".context_length", Int(0))], "llama.context_length is 0");
        refused(&[(".embedding_length", Int(0))], "embedding_length is 0");
        refused(&[(".embedding_length", Int(60))], "not a multiple of the 8");
        refused(&[(".attention.head_count", Int(0))], "head_count is 0");
        refused(&[(".attention.head_count_kv", Int(3))], "must divide the 8");
        refused(
            &[(".attention.head_count_kv", Int(0))],
            "head_count_kv is 0",
        );
        refused(
            &[(".attention.head_count_kv", Ints(vec![4, 2]))],
            "varies between layers",
        );
        refused(&[(".attention.head_count", Int(-1))], "head_count is -1");
        refused(&[(".embedding_length", Int(56))], "the head width is 7");
        refused(&[(".rope.dimension_count", Int(3))], "must be even");
        refused(
            &[(".rope.dimension_count", Int(16))],
            "wider than the 8-wide",
        );
        refused(
            &[
                (".attention.key_length", Int(8)),
                (".attention.value_length", Int(16)),
            ],
            "a llama model needs them equal",
        );
        refused(&[(".rope.freq_base", Float(-1.0))], "freq_base is -1");
        refused(
            &[(".rope.scaling.factor", Float(f64::NAN))],
            "scaling.factor",
        );
        refused(&[(".expert_count", Int(2048))], "expert_count is 2048");
        refused(
            &[(".expert_used_count", Int(2))],
            "the model has no experts",
        );
        refused(
            &[(".expert_count", Int(4)), (".expert_used_count", Int(5))],
            "between 1 and the 4 experts",
        );
        refused(
            &[(".nextn_predict_layers", Int(3))],
            "more than the 2 layers",
        );
        let mut h = Hparams::default();
        h.insert("llama.rope.scaling.type", 0, Str("bogus".into()));
        assert!(h.check(Some("llama")).is_err());
    }

    #[test]
    fn hybrid_architectures_may_have_layers_without_attention() {
        let mut h = Hparams::default();
        h.insert("lfm2.attention.head_count", 0, Value::Int(8));
        h.insert(
            "lfm2.attention.head_count_kv",
            0,
            Value::Ints(vec![0, 4, 0, 8]),
        );
        h.check(Some("lfm2")).unwrap();
        let mut h = Hparams::default();
        h.insert("mamba.attention.head_count", 0, Value::Int(0));
        h.insert("mamba.attention.head_count_kv", 0, Value::Int(0));
        h.check(Some("mamba")).unwrap();
        // Where there are heads, the key/value heads still divide them.
        let mut h = Hparams::default();
        h.insert("lfm2.attention.head_count", 0, Value::Int(8));
        h.insert("lfm2.attention.head_count_kv", 0, Value::Ints(vec![0, 3]));
        assert!(h.check(Some("lfm2")).is_err());
    }

    #[test]
    fn vocabularies_need_unique_tokens_and_byte_fallback() {
        let scan = |tokens: &[&str]| {
            let mut t = TokenScan::new(7);
            for tok in tokens {
                t.add(tok.as_bytes().to_vec());
            }
            t
        };
        let mut h = Hparams {
            tokens: Some(scan(&["<s>", "a", "a"])),
            ..Hparams::default()
        };
        let err = h.check(None).unwrap_err();
        assert!(err.problem.contains("lists the token \"a\" twice"), "{err}");
        assert_eq!(err.offset, 7);
        // Empty tokens are renamed, so two of them are not duplicates...
        h.tokens = Some(scan(&["", "", "b"]));
        h.check(None).unwrap();
        // ... unless a real token has the renamed text.
        h.tokens = Some(scan(&["", "[EMPTY_0]"]));
        assert!(h.check(None).is_err());
        h.tokens = Some(scan(&["<s>", "a"]));
        h.check(None).unwrap();
        h.insert(TOKENIZER_MODEL, 0, Value::Str("llama".into()));
        let err = h.check(None).unwrap_err();
        assert!(err.problem.contains("lacks the byte token <0x00>"), "{err}");
        // llama.cpp looks byte tokens up in upper case: lower-case ones do not count.
        let lower: Vec<String> = (0..=255).map(|b| format!("<0x{b:02x}>")).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        h.tokens = Some(scan(&lower));
        assert!(h.check(None).is_err());
        let mut all: Vec<String> = (0..=255).map(|b| format!("<0x{b:02X}>")).collect();
        all.push("<s>".into());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        h.tokens = Some(scan(&all));
        h.check(None).unwrap();
    }
}
