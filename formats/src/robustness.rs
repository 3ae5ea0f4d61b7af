//! The checks on thousands of damaged inputs generated here: every truncation of small
//! valid files, random bit flips, overwritten lengths, inserted and deleted bytes, and
//! random bytes. Nothing may panic, and a truncated file must always be refused (for
//! the formats whose checks see the end of the file: ONNX messages can end early).

use crate::{gguf, llama2c, onnx, pte, safetensors, verify_bytes};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid files of every format, with the file name to verify them under.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    use gguf::testing::{gguf, TensorSpec, Value};
    let rich = gguf(
        3,
        &[
            ("general.architecture", Value::Str("llama")),
            ("general.file_type", Value::U32(1)),
            ("llama.context_length", Value::U32(64)),
            ("llama.block_count", Value::U32(1)),
            ("llama.embedding_length", Value::U32(8)),
            ("llama.attention.head_count", Value::U32(2)),
            ("tokenizer.ggml.tokens", Value::StrArray(&["<s>", "a", "b"])),
        ],
        &[TensorSpec {
            name: "w",
            dims: &[8, 2],
            ty: 1,
            offset: 0,
        }],
        32,
    );
    vec![
        ("tiny.gguf", gguf::testing::tiny()),
        ("rich.gguf", rich),
        (
            "model.safetensors",
            safetensors::testing::file(&[("a", "F16", &[4, 2]), ("b", "U8", &[5])]),
        ),
        (
            "model.onnx",
            onnx::testing::model(&[
                onnx::testing::tensor("w", &[2, 2], None),
                onnx::testing::tensor("e", &[4], Some(("e.bin", 0, 16))),
            ]),
        ),
        (
            "tiny.bin",
            llama2c::testing::checkpoint([8, 16, 1, 2, 1, 16, 8]),
        ),
        (
            "model.pte",
            pte::testing::program(&["forward", "get_vocab_size"], 48),
        ),
    ]
}

/// Applies one random mutation.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    if b.is_empty() {
        b.push(0);
    }
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(b.len());
            b[i] = [0x00, 0xff, 0x7f, 0x80, 0x09, 0x08][rng.below(6)];
        }
        2 => {
            // Overwrite 8 bytes with a length that lies.
            let v: u64 = [u64::MAX, 1 << 40, 0, input.len() as u64, u64::MAX / 13][rng.below(5)];
            let i = rng.below(b.len());
            for (k, byte) in v.to_le_bytes().iter().enumerate() {
                if let Some(slot) = b.get_mut(i + k) {
                    *slot = *byte;
                }
            }
        }
        3 => {
            let i = rng.below(b.len());
            let n = rng.below(16).min(b.len() - i);
            b.drain(i..i + n);
        }
        4 => {
            let i = rng.below(b.len() + 1);
            let junk: Vec<u8> = (0..rng.below(16) + 1).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
        }
        _ => {
            let i = rng.below(b.len());
            let n = rng.below(32).min(b.len() - i);
            let chunk = b[i..i + n].to_vec();
            let at = rng.below(b.len() + 1);
            b.splice(at..at, chunk);
        }
    }
    b
}

#[test]
fn damaged_inputs_never_panic_and_truncations_are_refused() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0usize;
    for (name, bytes) in samples() {
        let whole = verify_bytes(&bytes, name);
        assert!(whole.is_ok(), "{name}: {:?}", whole.problem);
        for cut in 0..bytes.len() {
            let v = verify_bytes(&bytes[..cut], name);
            checked += 1;
            // A llama2.c file is also valid without its trailing freq_cis tables.
            let other_size = llama2c::expected_size(&bytes).map(|s| s[1]);
            if !name.ends_with(".onnx") && other_size != Some(cut as u64) {
                assert!(
                    v.problem.is_some(),
                    "{name} cut at {cut} of {} passed",
                    bytes.len()
                );
            }
        }
        for _ in 0..1500 {
            let damaged = mutate(&mut rng, &bytes);
            // Under its own name and under every other format's.
            for other in ["m.gguf", "m.safetensors", "m.onnx", "m.bin", name] {
                let _ = verify_bytes(&damaged, other);
                checked += 1;
            }
        }
    }
    for _ in 0..2000 {
        let len = rng.below(600);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let prefix: &[u8] = match rng.below(4) {
            0 => b"GGUF\x03\0\0\0",
            1 => &[0x08, 0x07, 0x3a],
            2 => &[16, 0, 0, 0, 0, 0, 0, 0, b'{'],
            _ => &[],
        };
        bytes.splice(0..0, prefix.iter().copied());
        for name in ["r.gguf", "r.safetensors", "r.onnx", "r.bin", "r"] {
            let v = verify_bytes(&bytes, name);
            checked += 1;
            // Random bytes after a magic are not a model.
            assert!(
                v.problem.is_some() || bytes.len() < 2,
                "{name}: {bytes:?} passed"
            );
        }
    }
    assert!(checked > 40_000, "{checked}");
}

/// Every hyperparameter key the checks read, with values and GGUF types at and around
/// the edges llama.cpp asserts on: no combination panics, and a file that passes has a
/// value llama.cpp accepts (checked here for the keys with a plain range).
#[test]
fn hyperparameter_values_at_the_edges_never_panic() {
    use gguf::testing::{gguf, Value};
    const KEYS: [(&str, Option<(i128, i128)>); 12] = [
        ("llama.block_count", Some((1, 512))),
        ("llama.context_length", Some((1, i32::MAX as i128))),
        ("llama.embedding_length", Some((1, 1 << 20))),
        ("llama.attention.head_count", Some((1, 1 << 16))),
        ("llama.attention.head_count_kv", Some((1, 1 << 16))),
        ("llama.attention.key_length", None),
        ("llama.rope.dimension_count", None),
        ("llama.expert_count", Some((0, 1024))),
        ("llama.expert_used_count", None),
        ("llama.attention.layer_norm_rms_epsilon", None),
        ("llama.rope.freq_base", None),
        ("tokenizer.ggml.bos_token_id", None),
    ];
    let ints: [i64; 12] = [0, 1, 2, 3, 7, 8, 512, 513, 1 << 31, -1, i64::MAX, i64::MIN];
    let floats = [0.0f32, -1.0, -1e-30, 1e-5, f32::NAN, f32::INFINITY];
    let mut checked = 0;
    for (key, range) in KEYS {
        let mut values: Vec<(Value<'_>, Option<i128>)> = Vec::new();
        for v in ints {
            values.push((
                Value::Raw(4, (v as u32).to_le_bytes().to_vec()),
                Some(i128::from(v as u32)),
            ));
            values.push((
                Value::Raw(5, (v as i32).to_le_bytes().to_vec()),
                Some(i128::from(v as i32)),
            ));
            values.push((
                Value::Raw(11, v.to_le_bytes().to_vec()),
                Some(i128::from(v)),
            ));
            let mut array = 4u32.to_le_bytes().to_vec();
            array.extend_from_slice(&2u64.to_le_bytes());
            array.extend_from_slice(&(v as u32).to_le_bytes());
            array.extend_from_slice(&8u32.to_le_bytes());
            values.push((Value::Raw(9, array), None));
        }
        for f in floats {
            values.push((Value::Raw(6, f.to_le_bytes().to_vec()), None));
        }
        for (value, int) in values {
            let file = gguf(
                3,
                &[
                    ("general.architecture", Value::Str("llama")),
                    ("llama.block_count", Value::U32(2)),
                    ("llama.embedding_length", Value::U32(64)),
                    ("llama.attention.head_count", Value::U32(8)),
                    (
                        "tokenizer.ggml.tokens",
                        Value::StrArray(&["<s>", "</s>", "a"]),
                    ),
                    (key, value),
                ],
                &[],
                0,
            );
            let v = verify_bytes(&file, "m.gguf");
            checked += 1;
            // A duplicate key is refused by the header walk itself; otherwise a passing
            // file holds a value inside the range.
            if let (true, Some((lo, hi)), Some(int)) = (v.is_ok(), range, int) {
                assert!((lo..=hi).contains(&int), "{key} = {int} passed");
            }
        }
    }
    assert!(checked > 500, "{checked}");
}
