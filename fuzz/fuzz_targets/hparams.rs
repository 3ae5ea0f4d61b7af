//! Fuzzes the hyperparameter and vocabulary checks (`runanywhere_formats::hparams`): a
//! well-formed GGUF header whose llama metadata takes values (and types) chosen by the
//! fuzzer, so that every input reaches the checks instead of failing the header walk.
//! They must never panic, and a file they accept must keep its values inside the ranges
//! that llama.cpp asserts on.
//!
//! ```sh
//! cd fuzz && cargo +nightly fuzz run hparams
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use runanywhere_formats::gguf::testing::{gguf, Value};
use runanywhere_formats::verify_bytes;

/// The keys the checks read, as the fuzzer's first byte of each entry picks them.
const KEYS: [&str; 20] = [
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.rope.dimension_count",
    "llama.expert_count",
    "llama.expert_used_count",
    "llama.expert_group_count",
    "llama.expert_group_used_count",
    "llama.nextn_predict_layers",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.rope.freq_base",
    "llama.rope.scaling.factor",
    "llama.rope.scaling.type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.model",
];

fuzz_target!(|data: &[u8]| {
    // Each entry: key index, GGUF type, 8 value bytes (as many as the type takes).
    let mut kvs: Vec<(&str, Value<'_>)> = vec![("general.architecture", Value::Str("llama"))];
    let mut seen = std::collections::HashSet::new();
    for chunk in data.chunks_exact(10) {
        let key = KEYS[usize::from(chunk[0]) % KEYS.len()];
        if !seen.insert(key) {
            continue;
        }
        let ty = u32::from(chunk[1] % 13);
        let bytes = match ty {
            0 | 1 | 7 => chunk[2..3].to_vec(),
            2 | 3 => chunk[2..4].to_vec(),
            4..=6 => chunk[2..6].to_vec(),
            8 => {
                // A short string: its length, then up to 8 bytes.
                let n = usize::from(chunk[2] % 8);
                let mut b = (n as u64).to_le_bytes().to_vec();
                b.extend_from_slice(&chunk[2..2 + n]);
                b
            }
            9 => {
                // An array of u32 per-layer values (1 or 2 elements).
                let n = 1 + usize::from(chunk[2] & 1);
                let mut b = 4u32.to_le_bytes().to_vec();
                b.extend_from_slice(&(n as u64).to_le_bytes());
                for i in 0..n {
                    b.extend_from_slice(&u32::from(chunk[3 + i]).to_le_bytes());
                }
                b
            }
            _ => chunk[2..10].to_vec(),
        };
        kvs.push((key, Value::Raw(ty, bytes)));
    }
    kvs.push(("tokenizer.ggml.tokens", Value::StrArray(&["<s>", "</s>", "a"])));
    let file = gguf(3, &kvs, &[], 0);
    let v = verify_bytes(&file, "m.gguf");
    if v.is_ok() {
        assert_eq!(v.size, file.len() as u64);
    }
});
